//! Reads of mirrored repositories. Manifests by digest and blobs are
//! immutable: once stored they are served from the store. A tag is served
//! from the store while younger than its upstream's `tag_ttl`, then
//! revalidated with a HEAD and fetched again only if its digest changed; when
//! the upstream is down or rate limiting, the stored copy is served stale
//! (a tag never stored here: a sibling's copy, when a sibling has one).

use crate::events::{Event, Target};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::mirror::{Fetch, Mirror, MirrorError};
use crate::oci::{Digest, ManifestInfo, Reference, Tag};
use crate::store::index::UseKind;

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
    /// Logs and counts a lookup of mirrored content: `hit`, `miss`,
    /// `revalidated`, `changed` or `stale`.
    fn looked_up(&self, m: &MirroredRepo, what: &dyn std::fmt::Display, kind: &'static str, result: &'static str) {
        tracing::info!(repo = %m.storage, reference = %what, cache = result, "mirrored {kind}");
        self.core.metrics.lookup(&m.upstream.host, kind, result);
    }

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
                let fetched = self.mirror().fetch_manifest(&m.upstream, m.remote.as_str(), reference).await?;
                let info = ManifestInfo::parse_stored(&fetched.bytes)
                    .map_err(|e| m.upstream.protocol(format!("upstream manifest: {}", e.message)))?;
                let media_type = info.media_type.clone();
                let tag = match reference {
                    Reference::Tag(t) => Some(t),
                    Reference::Digest(_) => None,
                };
                let _writing = self.core.locks.lock(&m.storage).await;
                let head = self
                    .save_manifest(&m.storage, &fetched.digest, fetched.bytes.clone(), info, tag)
                    .await
                    .map_err(|e| match e {
                        RegistryError::Store(s) => MirrorError::from(s),
                        other => MirrorError::Protocol { host: m.upstream.host.clone(), reason: other.to_string() },
                    })?;
                self.core.events.emit(
                    Event::new(
                        "fetch",
                        Target::manifest(
                            &m.id().to_string(),
                            &fetched.digest,
                            &media_type,
                            fetched.bytes.len() as u64,
                            reference.tag(),
                        ),
                    )
                    .mirrored(&m.upstream.host),
                );
                Ok::<_, MirrorError>(Manifest {
                    digest: fetched.digest,
                    media_type,
                    bytes: fetched.bytes,
                    stale: None,
                    head,
                })
            })
            .await;
        // The entry only joins requests that arrive while the fetch runs; the
        // next request after it must ask upstream again (a tag may move).
        self.manifest_fetches.invalidate(&key).await;
        result.map_err(|e| not_found_as((*e).clone(), || RegistryError::ManifestUnknown(reference.to_string())))
    }

    /// The stored copy of `reference`, if the store has all of it (a link
    /// whose data registry:2's garbage collection removed is no copy).
    async fn stored_manifest(&self, m: &MirroredRepo, reference: &Reference) -> RegistryResult<Option<Manifest>> {
        match self.local_manifest(&m.storage, reference).await {
            Ok(found) => Ok(Some(found)),
            Err(RegistryError::ManifestUnknown(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn mirrored_manifest(&self, m: &MirroredRepo, reference: &Reference) -> RegistryResult<Manifest> {
        let served = self.mirrored_manifest_inner(m, reference).await?;
        // Every pull refreshes what it used (expiry keeps what is used).
        if let Reference::Tag(t) = reference {
            self.lifecycle.uses.record(UseKind::Tag, &m.storage, t.as_str());
        }
        self.lifecycle.uses.record(UseKind::Manifest, &m.storage, &served.digest);
        Ok(served)
    }

    async fn mirrored_manifest_inner(&self, m: &MirroredRepo, reference: &Reference) -> RegistryResult<Manifest> {
        let cached = self.stored_manifest(m, reference).await?;
        let tag = match reference {
            Reference::Digest(_) => {
                if let Some(found) = cached {
                    self.looked_up(m, reference, "manifest", "hit");
                    return Ok(found);
                }
                self.looked_up(m, reference, "manifest", "miss");
                return self.fetch_and_store_manifest(m, reference).await;
            }
            Reference::Tag(t) => t,
        };
        let Some(cached) = cached else {
            self.looked_up(m, reference, "manifest", "miss");
            let fetched = match self.fetch_and_store_manifest(m, reference).await {
                Err(RegistryError::Mirror(e)) if e.is_unavailable() => return self.stale_from_peers(m, tag, e).await,
                fetched => fetched?,
            };
            self.mark_tag_fresh(m, tag, None).await;
            return Ok(fetched);
        };
        if self.tag_is_fresh(m, tag).await {
            self.looked_up(m, reference, "manifest", "hit");
            return Ok(cached);
        }
        // Under the upstream's rate-limit floor, a tag we hold is not worth a
        // revalidation that may cost a pull: served as it is until the window passes.
        if let Some(why) = m.upstream.saving_budget() {
            self.looked_up(m, reference, "manifest", "budget");
            self.core.metrics.budget_skips.with_label_values(&[m.upstream.host.as_str()]).inc();
            tracing::info!(repo = %m.storage, %reference, "{why}; served the cached tag unrevalidated");
            return Ok(Manifest { stale: Some(why), ..cached });
        }
        let revalidated = match self.mirror().head_manifest(&m.upstream, m.remote.as_str(), reference).await {
            Ok(Some(upstream)) if upstream == cached.digest => {
                self.looked_up(m, reference, "manifest", "revalidated");
                Ok(cached.clone())
            }
            Ok(_) => {
                self.looked_up(m, reference, "manifest", "changed");
                self.fetch_and_store_manifest(m, reference).await
            }
            Err(e) => Err(not_found_as(e, || RegistryError::ManifestUnknown(reference.to_string()))),
        };
        match revalidated {
            Ok(found) => {
                self.mark_tag_fresh(m, tag, None).await;
                Ok(found)
            }
            // Any step may meet an upstream that is down or rate limiting (the
            // HEAD, the GET after a changed HEAD, their token requests): the
            // copy we have is served until the upstream answers again.
            Err(RegistryError::Mirror(e)) if e.is_unavailable() => {
                self.looked_up(m, reference, "manifest", "stale");
                tracing::debug!(repo = %m.storage, %reference, error = %e, "upstream unavailable; serving the cached tag");
                self.mark_tag_fresh(m, tag, Some(STALE_RETRY)).await;
                Ok(Manifest { stale: Some(format!("upstream unavailable: {e}")), ..cached })
            }
            Err(e) => Err(e),
        }
    }

    /// Tag `tag`, never stored here, while the upstream is down (`down`):
    /// what a sibling holds for it, stored and served as stale, or `down`
    /// itself when no sibling has it.
    async fn stale_from_peers(&self, m: &MirroredRepo, tag: &Tag, down: MirrorError) -> RegistryResult<Manifest> {
        let Some(fetched) = self.mirror().tag_from_peers(&m.upstream, m.remote.as_str(), tag.as_str()).await else {
            return Err(RegistryError::Mirror(down));
        };
        let info = match ManifestInfo::parse_stored(&fetched.bytes) {
            Ok(info) => info,
            Err(e) => {
                tracing::warn!(repo = %m.storage, %tag, error = %e.message, "a sibling's manifest for the tag does not parse");
                return Err(RegistryError::Mirror(down));
            }
        };
        let media_type = info.media_type.clone();
        let head = {
            let _writing = self.core.locks.lock(&m.storage).await;
            self.save_manifest(&m.storage, &fetched.digest, fetched.bytes.clone(), info, Some(tag)).await?
        };
        self.looked_up(m, tag, "manifest", "stale");
        tracing::info!(repo = %m.storage, %tag, digest = %fetched.digest, error = %down, "upstream unavailable; the tag as a sibling has it");
        self.mark_tag_fresh(m, tag, Some(STALE_RETRY)).await;
        Ok(Manifest {
            digest: fetched.digest,
            media_type,
            bytes: fetched.bytes,
            stale: Some(format!("upstream unavailable: {down}; the tag as a sibling mirror has it")),
            head,
        })
    }

    /// Asks the upstream whether `m`'s repository has blob `d`, of `size`
    /// bytes when the size is known: what lets a repository read a blob that
    /// was stored (or is being fetched) for another one.
    async fn confirm_upstream_has(&self, m: &MirroredRepo, d: &Digest, size: Option<u64>) -> RegistryResult<u64> {
        let upstream_size = self
            .mirror()
            .head_blob(&m.upstream, m.remote.as_str(), d)
            .await
            .map_err(|e| not_found_as(e, || RegistryError::BlobUnknown(d.clone())))?;
        match size {
            Some(size) if size != upstream_size => Err(RegistryError::Mirror(MirrorError::SizeMismatch {
                host: m.upstream.host.clone(),
                expected: size,
                actual: upstream_size,
            })),
            _ => Ok(upstream_size),
        }
    }

    /// Links a blob the store already holds (pushed elsewhere, or mirrored
    /// for another repository) into a mirrored repository, after the
    /// upstream confirms that repository has it: no bytes are transferred,
    /// and no repository reads a blob it does not really contain.
    async fn adopt_stored_blob(&self, m: &MirroredRepo, d: &Digest) -> RegistryResult<Option<u64>> {
        let Some(size) = self.core.store.blob_size(d).await? else { return Ok(None) };
        self.confirm_upstream_has(m, d, Some(size)).await?;
        if !self.core.store.link_existing(&m.storage, d).await? {
            return Ok(None);
        }
        Ok(Some(size))
    }

    /// The fetch of `d` for `m`: the one in flight (joined only once the
    /// upstream confirms `m`'s repository has the blob, when it is another
    /// repository's fetch), or a new one.
    async fn join_fetch(&self, m: &MirroredRepo, d: &Digest) -> RegistryResult<(Arc<Fetch>, bool)> {
        let (fetch, joined) = self.mirror().fetch_blob(m.upstream.clone(), m.remote.as_str(), &m.storage, d);
        if !joined && self.core.events.enabled() {
            // The fetch's event once its bytes verified and were stored.
            let (core, fetch, d) = (self.core.clone(), fetch.clone(), d.clone());
            let (repository, host) = (m.id().to_string(), m.upstream.host.clone());
            actix_web::rt::spawn(async move {
                if let Ok((size, _)) = fetch.verified().await {
                    core.events.emit(Event::new("fetch", Target::blob(&repository, &d, size)).mirrored(&host));
                }
            });
        }
        if joined && (fetch.host != m.upstream.host || fetch.remote != m.remote.as_str()) {
            self.confirm_upstream_has(m, d, None).await?;
            if !fetch.also_link(m.storage.clone()) {
                self.core.store.link_existing(&m.storage, d).await?;
            }
        }
        Ok((fetch, joined))
    }

    /// A blob stored for `m` (a `hit`), or adopted into it from elsewhere in
    /// the store (`shared`): its size and which, for the one lookup count the
    /// caller makes.
    async fn stored_blob(&self, m: &MirroredRepo, d: &Digest) -> RegistryResult<Option<(u64, &'static str)>> {
        if let Some(size) = self.linked_size(&m.storage, d).await? {
            return Ok(Some((size, "hit")));
        }
        if self.mirror().inflight_blob(d).is_some() {
            return Ok(None);
        }
        // A fetch links its blob before it leaves the in-flight map, so one
        // that finished since the first look is found by a second.
        if let Some(size) = self.linked_size(&m.storage, d).await? {
            return Ok(Some((size, "hit")));
        }
        Ok(self.adopt_stored_blob(m, d).await?.map(|size| (size, "shared")))
    }

    pub(super) async fn mirrored_blob_size(&self, m: &MirroredRepo, d: &Digest) -> RegistryResult<u64> {
        let size = self.mirrored_blob_size_inner(m, d).await?;
        self.lifecycle.uses.record(UseKind::Blob, &m.storage, d);
        Ok(size)
    }

    async fn mirrored_blob_size_inner(&self, m: &MirroredRepo, d: &Digest) -> RegistryResult<u64> {
        if let Some(size) = self.linked_size(&m.storage, d).await? {
            return Ok(size);
        }
        // Pull clients GET blobs; a HEAD on an implicitly routed name is a
        // pushing client's existence check, which the upstream must not answer.
        if m.implicit {
            if let Some(fetch) =
                self.mirror().inflight_blob(d).filter(|f| f.host == m.upstream.host && f.remote == m.remote.as_str())
            {
                return Ok(fetch.verified().await.map_err(RegistryError::Mirror)?.0);
            }
            return match self.linked_size(&m.storage, d).await? {
                Some(size) => Ok(size),
                None => Err(RegistryError::BlobUnknown(d.clone())),
            };
        }
        if let Some((size, result)) = self.stored_blob(m, d).await? {
            // The first sight of a stored blob counts (as before: existence
            // checks of linked blobs do not).
            if result == "shared" {
                self.looked_up(m, d, "blob", result);
            }
            return Ok(size);
        }
        // A size from a fetch is told only once the bytes are verified.
        if let Some(fetch) = self.mirror().inflight_blob(d) {
            if fetch.host == m.upstream.host && fetch.remote == m.remote.as_str() {
                return Ok(fetch.verified().await.map_err(RegistryError::Mirror)?.0);
            }
        }
        self.confirm_upstream_has(m, d, None).await
    }

    pub(super) async fn mirrored_open_blob(
        &self,
        m: &MirroredRepo,
        d: &Digest,
        range: Option<RangeRequest>,
    ) -> RegistryResult<BlobRead> {
        self.lifecycle.uses.record(UseKind::Blob, &m.storage, d);
        {
            // Held from the link check until the file is open (an open file
            // keeps its bytes): eviction cannot delete the data in between.
            let _lease = self.core.store.lease(d).await;
            if let Some((size, result)) = self.stored_blob(m, d).await? {
                self.looked_up(m, d, "blob", result);
                return self.open_stored_blob(d, size, range).await;
            }
        }
        let (fetch, joined) = self.join_fetch(m, d).await?;
        self.looked_up(m, d, "blob", if joined { "joined" } else { "miss" });
        let fetch_error = |e| not_found_as(e, || RegistryError::BlobUnknown(d.clone()));
        if range.is_some() {
            // A range is a complete response to its client, which cannot check
            // it: it is served only from verified bytes.
            let (size, file) = fetch.verified().await.map_err(fetch_error)?;
            let range = resolve_range(range, size)?.expect("a range was asked for");
            let body = crate::store::read_range(file, range.start, range.end + 1);
            return Ok(BlobRead { size: Some(size), range: Some(range), body });
        }
        let size = fetch.size().await.map_err(fetch_error)?;
        Ok(BlobRead { size, range: None, body: fetch.tail() })
    }
}
