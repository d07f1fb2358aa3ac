//! Reads of mirrored repositories. Manifests by digest and blobs are
//! immutable: once stored they are served from the store. A tag is served
//! from the store while younger than its upstream's `tag_ttl`, then
//! revalidated with a HEAD and fetched again only if its digest changed; when
//! the upstream is down or rate limiting, the stored copy is served stale.

use std::time::{Duration, Instant};

use crate::mirror::{Mirror, MirrorError};
use crate::oci::{Digest, ManifestInfo, Reference, Tag};

use super::blobs::{resolve_range, BlobRead};
use super::range::RangeRequest;
use super::{Manifest, MirroredRepo, Registry, RegistryError, RegistryResult};

/// After a failed revalidation, how long the stale copy is served before
/// the upstream is asked again (so a dead upstream costs one timeout per
/// tag per interval, not one per request).
const STALE_RETRY: Duration = Duration::from_secs(10);

/// A mirror error as the client should see it: an upstream 404 is the
/// registry's own "unknown".
fn not_found_as(e: MirrorError, unknown: impl FnOnce() -> RegistryError) -> RegistryError {
    match e {
        MirrorError::NotFound { .. } => unknown(),
        other => RegistryError::Mirror(other),
    }
}

impl Registry {
    fn mirror(&self) -> &Mirror {
        self.mirror.as_ref().expect("mirrored routes exist only with a mirror")
    }

    async fn tag_is_fresh(&self, m: &MirroredRepo, tag: &Tag) -> bool {
        match self.fresh_tags.get(&(m.storage.clone(), tag.clone())).await {
            Some(at) => at.elapsed() < m.upstream.tag_ttl,
            None => false,
        }
    }

    async fn mark_tag_fresh(&self, m: &MirroredRepo, tag: &Tag, for_at_most: Option<Duration>) {
        let now = Instant::now();
        // Backdate the validation so that it lapses after `for_at_most`.
        let at = match for_at_most {
            Some(d) if d < m.upstream.tag_ttl => now.checked_sub(m.upstream.tag_ttl - d).unwrap_or(now),
            _ => now,
        };
        self.fresh_tags.insert((m.storage.clone(), tag.clone()), at).await;
    }

    /// Fetches `reference` upstream and stores it (tagging it for a tag);
    /// concurrent requests for the same reference share one upstream GET.
    async fn fetch_and_store_manifest(&self, m: &MirroredRepo, reference: &Reference) -> RegistryResult<Manifest> {
        let key = (m.storage.clone(), reference.to_string());
        let result = self
            .manifest_fetches
            .try_get_with(key.clone(), async {
                let fetched = self.mirror().fetch_manifest(&m.upstream, &m.remote, reference).await?;
                let info = ManifestInfo::parse_stored(&fetched.bytes)
                    .map_err(|e| m.upstream.protocol(format!("upstream manifest: {}", e.message)))?;
                let media_type = info.media_type.clone();
                let tag = match reference {
                    Reference::Tag(t) => Some(t),
                    Reference::Digest(_) => None,
                };
                self.save_manifest(&m.storage, &fetched.digest, fetched.bytes.clone(), info, tag)
                    .await
                    .map_err(|e| MirrorError::Store(e.to_string()))?;
                Ok::<_, MirrorError>(Manifest { digest: fetched.digest, media_type, bytes: fetched.bytes })
            })
            .await;
        // The entry only joins requests that arrive while the fetch runs; the
        // next request after it must ask upstream again (a tag may move).
        self.manifest_fetches.invalidate(&key).await;
        result.map_err(|e| not_found_as((*e).clone(), || RegistryError::ManifestUnknown(reference.to_string())))
    }

    pub(super) async fn mirrored_manifest(&self, m: &MirroredRepo, reference: &Reference) -> RegistryResult<Manifest> {
        let tag = match reference {
            Reference::Digest(d) => {
                if self.has_manifest(&m.storage, d).await? {
                    tracing::info!(repo = %m.storage, %reference, cache = "hit", "mirrored manifest");
                    return self.local_manifest(&m.storage, reference).await;
                }
                tracing::info!(repo = %m.storage, %reference, cache = "miss", "mirrored manifest");
                return self.fetch_and_store_manifest(m, reference).await;
            }
            Reference::Tag(t) => t,
        };
        let cached = match self.local_manifest(&m.storage, reference).await {
            Ok(found) => Some(found),
            Err(RegistryError::ManifestUnknown(_)) => None,
            Err(e) => return Err(e),
        };
        let Some(cached) = cached else {
            tracing::info!(repo = %m.storage, %reference, cache = "miss", "mirrored manifest");
            let fetched = self.fetch_and_store_manifest(m, reference).await?;
            self.mark_tag_fresh(m, tag, None).await;
            return Ok(fetched);
        };
        if self.tag_is_fresh(m, tag).await {
            tracing::info!(repo = %m.storage, %reference, cache = "hit", "mirrored manifest");
            return Ok(cached);
        }
        match self.mirror().head_manifest(&m.upstream, &m.remote, reference).await {
            Ok(Some(upstream)) if upstream == cached.digest => {
                tracing::info!(repo = %m.storage, %reference, cache = "revalidated", "mirrored manifest");
                self.mark_tag_fresh(m, tag, None).await;
                Ok(cached)
            }
            Ok(_) => {
                tracing::info!(repo = %m.storage, %reference, cache = "changed", "mirrored manifest");
                let fetched = self.fetch_and_store_manifest(m, reference).await?;
                self.mark_tag_fresh(m, tag, None).await;
                Ok(fetched)
            }
            Err(e) if e.is_unavailable() => {
                tracing::info!(repo = %m.storage, %reference, cache = "stale", "mirrored manifest");
                tracing::debug!(repo = %m.storage, %reference, error = %e, "upstream unavailable; serving the cached tag");
                self.mark_tag_fresh(m, tag, Some(STALE_RETRY)).await;
                Ok(cached)
            }
            Err(e) => Err(not_found_as(e, || RegistryError::ManifestUnknown(reference.to_string()))),
        }
    }

    /// Links a blob the store already holds (pushed elsewhere, or mirrored
    /// for another repository) into a mirrored repository, after the
    /// upstream confirms that repository has it: no bytes are transferred,
    /// and no repository reads a blob it does not really contain.
    async fn adopt_stored_blob(&self, m: &MirroredRepo, d: &Digest) -> RegistryResult<Option<u64>> {
        let Some(size) = self.store.blob_size(d).await? else { return Ok(None) };
        let upstream_size = self
            .mirror()
            .head_blob(&m.upstream, &m.remote, d)
            .await
            .map_err(|e| not_found_as(e, || RegistryError::BlobUnknown(d.clone())))?;
        if upstream_size != size {
            return Err(RegistryError::Mirror(MirrorError::SizeMismatch {
                host: m.upstream.host.clone(),
                expected: size,
                actual: upstream_size,
            }));
        }
        self.store.link_blob(&m.storage, d).await?;
        tracing::info!(repo = %m.storage, digest = %d, cache = "shared", "mirrored blob");
        Ok(Some(size))
    }

    pub(super) async fn mirrored_blob_size(&self, m: &MirroredRepo, d: &Digest) -> RegistryResult<u64> {
        if let Some(size) = self.linked_size(&m.storage, d).await? {
            return Ok(size);
        }
        match self.mirror().inflight_blob(d) {
            Some(fetch) => {
                if let Ok(Some(size)) = fetch.size().await {
                    return Ok(size);
                }
            }
            // A fetch links its blob before it leaves the in-flight map, so
            // one that finished since the first look is found by a second.
            None => {
                if let Some(size) = self.linked_size(&m.storage, d).await? {
                    return Ok(size);
                }
            }
        }
        // Pull clients GET blobs; a HEAD on an implicitly routed name is a
        // pushing client's existence check, which the upstream must not answer.
        if m.implicit {
            return Err(RegistryError::BlobUnknown(d.clone()));
        }
        if let Some(size) = self.adopt_stored_blob(m, d).await? {
            return Ok(size);
        }
        self.mirror()
            .head_blob(&m.upstream, &m.remote, d)
            .await
            .map_err(|e| not_found_as(e, || RegistryError::BlobUnknown(d.clone())))
    }

    pub(super) async fn mirrored_open_blob(
        &self,
        m: &MirroredRepo,
        d: &Digest,
        range: Option<RangeRequest>,
    ) -> RegistryResult<BlobRead> {
        if let Some(size) = self.linked_size(&m.storage, d).await? {
            tracing::info!(repo = %m.storage, digest = %d, cache = "hit", "mirrored blob");
            return self.open_stored_blob(d, size, range).await;
        }
        if self.mirror().inflight_blob(d).is_none() {
            // Second look: see `mirrored_blob_size`.
            if let Some(size) = self.linked_size(&m.storage, d).await? {
                tracing::info!(repo = %m.storage, digest = %d, cache = "hit", "mirrored blob");
                return self.open_stored_blob(d, size, range).await;
            }
            if let Some(size) = self.adopt_stored_blob(m, d).await? {
                return self.open_stored_blob(d, size, range).await;
            }
        }
        tracing::info!(repo = %m.storage, digest = %d, cache = "miss", "mirrored blob");
        let fetch = self.mirror().fetch_blob(m.upstream.clone(), &m.remote, &m.storage, d);
        let size =
            fetch.size().await.map_err(|e| not_found_as(e, || RegistryError::BlobUnknown(d.clone())))?.ok_or_else(
                || RegistryError::Mirror(m.upstream.protocol("blob response without Content-Length".into())),
            )?;
        let range = resolve_range(range, size)?;
        let body = match range {
            Some(r) => fetch.tail(r.start, Some(r.end + 1)),
            None => fetch.tail(0, Some(size)),
        };
        Ok(BlobRead { size, range, body })
    }
}
