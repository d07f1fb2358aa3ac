//! The referrers API: manifests in a repository whose `subject` is a given
//! digest. registry:2's layout has no referrers index, so the repository's
//! revisions are scanned; parsed manifests come from the cache.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::oci::Digest;

use super::{Registry, RegistryResult, Route};

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
    /// Manifests in `repo` that refer to `subject`, optionally only those of
    /// `artifact_type`, ordered by digest.
    pub async fn referrers(
        &self,
        route: &Route,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> RegistryResult<Vec<Referrer>> {
        let mut out = Vec::new();
        for d in self.store.list_manifests(route.storage()).await? {
            let m = match self.load_manifest(&d).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(digest = %d, error = %e, "skipping unreadable manifest in referrers scan");
                    continue;
                }
            };
            if m.info.subject.as_ref() != Some(subject) {
                continue;
            }
            if artifact_type.is_some() && m.info.artifact_type.as_deref() != artifact_type {
                continue;
            }
            out.push(Referrer {
                media_type: m.info.media_type.clone(),
                digest: d.to_string(),
                size: m.bytes.len() as u64,
                artifact_type: m.info.artifact_type.clone(),
                annotations: m.info.annotations.clone(),
            });
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }
}
