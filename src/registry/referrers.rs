//! The referrers API: manifests in a repository whose `subject` is a given
//! digest (the scan is `Core::referrers`). For a mirrored repository the
//! upstream's list (its referrers API, or the referrers tag schema) is asked
//! first, at most once per `tag_ttl`, and every manifest it names is mirrored
//! by digest like any other (verified, kept, expired by the same rules); the
//! answer is then the scan of what the store holds, so what was fetched once
//! is listed with the upstream down too (marked stale).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::oci::{Digest, Reference, RepoName};

use super::{MirroredRepo, Registry, RegistryError, RegistryResult, Route};

/// Most referrers of one subject mirrored from an upstream's list (a list is
/// the upstream's to make; a subject with thousands is not served whole).
const MAX_MIRRORED_REFERRERS: usize = 256;

/// After the upstream could not be asked, how long the stored list is served
/// before asking again.
const STALE_RETRY: Duration = Duration::from_secs(10);

/// The referrers of a subject, and why they may be out of date.
pub struct Referrers {
    pub manifests: Vec<Referrer>,
    /// Set when a mirrored list was served without the upstream's (why).
    pub stale: Option<String>,
}

/// One entry of the referrers index (an OCI descriptor).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Referrer {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Registry {
    /// Manifests in the repository `route` serves that refer to `subject`,
    /// optionally only those of `artifact_type`, ordered by digest.
    pub async fn referrers(
        &self,
        route: &Route,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> RegistryResult<Referrers> {
        let stale = match route {
            Route::Local(_) => None,
            Route::Mirrored(m) => self.mirror_referrers(m, subject).await?,
        };
        let manifests = self.core.referrers(route.storage(), subject, artifact_type).await?;
        Ok(Referrers { manifests, stale })
    }

    /// Brings the store's copy of the upstream's referrers of `subject` up to
    /// date (unless it was within `tag_ttl`); `Some(why)` when the upstream
    /// could not be asked and the stored copy stands in.
    async fn mirror_referrers(&self, m: &MirroredRepo, subject: &Digest) -> RegistryResult<Option<String>> {
        let key = (m.storage.clone(), subject.clone());
        if self.fresh_referrers.get(&key).await.is_some_and(|at| at.elapsed() < m.upstream.tag_ttl) {
            return Ok(None);
        }
        let mirror = self.mirror.as_ref().expect("mirrored routes exist only with a mirror");
        let listed = match mirror.fetch_referrers(&m.upstream, m.remote.as_str(), subject).await {
            Ok(listed) => listed,
            Err(e) if e.is_unavailable() => return Ok(Some(self.referrers_stale(m, key, &e.to_string()).await)),
            Err(e) => return Err(RegistryError::Mirror(e)),
        };
        if listed.len() > MAX_MIRRORED_REFERRERS {
            tracing::warn!(repo = %m.storage, %subject, listed = listed.len(), "mirroring only the first {MAX_MIRRORED_REFERRERS} referrers");
        }
        for d in listed.into_iter().take(MAX_MIRRORED_REFERRERS) {
            match self.mirrored_manifest(m, &Reference::Digest(d.clone())).await {
                Ok(_) => {}
                // Listed but not there (the upstream's list is out of date).
                Err(RegistryError::ManifestUnknown(_)) => {
                    tracing::warn!(repo = %m.storage, %subject, referrer = %d, "an upstream referrer is missing");
                }
                Err(RegistryError::Mirror(e)) if e.is_unavailable() => {
                    return Ok(Some(self.referrers_stale(m, key, &e.to_string()).await));
                }
                Err(e) => return Err(e),
            }
        }
        self.fresh_referrers.insert(key, Instant::now()).await;
        Ok(None)
    }

    /// Records a failed ask: the stored list is served, and the upstream
    /// asked again after `STALE_RETRY` (the entry is backdated to lapse then).
    async fn referrers_stale(&self, m: &MirroredRepo, key: (RepoName, Digest), error: &str) -> String {
        tracing::debug!(repo = %key.0, subject = %key.1, error, "upstream unavailable; serving the stored referrers");
        let now = Instant::now();
        let at = now.checked_sub(m.upstream.tag_ttl.saturating_sub(STALE_RETRY)).unwrap_or(now);
        self.fresh_referrers.insert(key, at).await;
        format!("upstream unavailable: {error}")
    }
}
