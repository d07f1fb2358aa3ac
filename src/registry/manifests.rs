//! Manifest operations: resolve, read, push (with reference checks), delete.

use std::sync::Arc;

use actix_web::http::header::HeaderValue;
use bytes::Bytes;

use super::cache::CachedManifest;
use crate::oci::{Digest, ManifestInfo, Reference, RepoName, Tag};
use crate::store::index::UseKind;

use super::{Registry, RegistryError, RegistryResult, Route};

/// A manifest as served: digest, media type and the exact bytes pushed.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
    /// Set when a mirrored tag was served without asking the upstream (why).
    pub stale: Option<String>,
    pub head: Arc<ManifestHead>,
}

/// The header values a manifest GET answers with, ready to send.
#[derive(Debug)]
pub struct ManifestHead {
    /// `None` for a media type that is no valid header value (the API says so).
    pub content_type: Option<HeaderValue>,
    pub digest: HeaderValue,
    pub etag: HeaderValue,
}

impl ManifestHead {
    pub fn new(digest: &Digest, media_type: &str) -> Self {
        let text = digest.to_string();
        ManifestHead {
            content_type: HeaderValue::from_str(media_type).ok(),
            // A digest is `algorithm:hex`: always a valid header value.
            etag: HeaderValue::from_str(&format!("\"{text}\"")).expect("a digest is a header value"),
            digest: HeaderValue::from_str(&text).expect("a digest is a header value"),
        }
    }
}

/// What a push stored.
#[derive(Debug, Clone)]
pub struct PushedManifest {
    pub digest: Digest,
    pub subject: Option<Digest>,
    pub media_type: String,
    /// What it references, for its notification event (only when they list
    /// references: `notifications.include_references`).
    pub references: Vec<crate::events::Reference>,
}

impl Registry {
    pub(super) async fn resolve_tag(&self, repo: &RepoName, tag: &Tag) -> RegistryResult<Digest> {
        let gens = &self.core.caches.generations;
        if let Some(d) = self.core.caches.tags.get(gens, repo, tag).await {
            return Ok(d);
        }
        let read_at = gens.current(repo);
        let d = self
            .core
            .store
            .resolve_tag(repo, tag)
            .await?
            .ok_or_else(|| RegistryError::ManifestUnknown(tag.to_string()))?;
        self.core.caches.tags.insert(repo, tag.clone(), d.clone(), read_at).await;
        Ok(d)
    }

    pub(super) async fn has_manifest(&self, repo: &RepoName, d: &Digest) -> RegistryResult<bool> {
        let gens = &self.core.caches.generations;
        if self.core.caches.revisions.get(gens, repo, d).await.is_some() {
            return Ok(true);
        }
        let read_at = gens.current(repo);
        let found = self.core.store.has_manifest(repo, d).await?;
        if found {
            self.core.caches.revisions.insert(repo, d.clone(), (), read_at).await;
        }
        Ok(found)
    }

    /// The manifest `reference` names in the repository `route` serves, if
    /// the signature policy lets it be served.
    #[tracing::instrument(level = "debug", skip(self, route), fields(repo = %route.storage(), reference = %reference))]
    pub async fn get_manifest(&self, route: &Route, reference: &Reference) -> RegistryResult<Manifest> {
        // Pulls of pushed content are recorded as mirrored ones are (in
        // memory, flushed with the lifecycle pass): the last pull of each tag
        // and manifest, for the web page and retention's `unpulled_for`. A
        // tag's use is recorded before the tag is read, so retention, which
        // checks for uses around each removal, never removes a tag a pull is
        // being served (see `retention`).
        if let (Route::Local(repo), Reference::Tag(t)) = (route, reference) {
            self.lifecycle.uses.record(UseKind::Tag, repo, t.as_str());
        }
        let m = self.read_manifest(route, reference).await?;
        self.admit_manifest(route, &m).await?;
        if let Route::Local(repo) = route {
            self.lifecycle.uses.record(UseKind::Manifest, repo, &m.digest);
        }
        Ok(m)
    }

    /// As `get_manifest`, without asking the signature policy (what the
    /// policy itself reads: signatures).
    pub(super) async fn read_manifest(&self, route: &Route, reference: &Reference) -> RegistryResult<Manifest> {
        match route {
            Route::Local(repo) => self.local_manifest(repo, reference).await,
            Route::Mirrored(m) => self.mirrored_manifest(m, reference).await,
        }
    }

    /// As `get_manifest`, for a HEAD: on an implicitly routed name (see
    /// `MirroredRepo::implicit`) upstream trouble reads as "unknown", so a
    /// pushing client's existence check never fails because of the upstream.
    pub async fn head_manifest(&self, route: &Route, reference: &Reference) -> RegistryResult<Manifest> {
        match (self.get_manifest(route, reference).await, route) {
            (Err(RegistryError::Mirror(e)), Route::Mirrored(m)) if m.implicit => {
                Err(RegistryError::ManifestUnknown(format!("{reference} (upstream: {e})")))
            }
            (result, _) => result,
        }
    }

    /// The manifest `reference` names in `repo`, from the store only.
    pub(super) async fn local_manifest(&self, repo: &RepoName, reference: &Reference) -> RegistryResult<Manifest> {
        let digest = match reference {
            Reference::Tag(t) => self.resolve_tag(repo, t).await?,
            Reference::Digest(d) => d.clone(),
        };
        if !self.has_manifest(repo, &digest).await? {
            return Err(RegistryError::ManifestUnknown(reference.to_string()));
        }
        let m = self.core.load_manifest(&digest).await?;
        Ok(Manifest {
            digest,
            media_type: m.info.media_type.clone(),
            bytes: m.bytes.clone(),
            stale: None,
            head: m.head.clone(),
        })
    }

    /// Writes a manifest (already verified) into `repo`, tags it if asked,
    /// and brings the caches up to date; returns its response head. The
    /// caller holds `repo`'s write lock.
    pub(super) async fn save_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        bytes: Bytes,
        info: ManifestInfo,
        tag: Option<&Tag>,
    ) -> RegistryResult<Arc<ManifestHead>> {
        let saved = self.core.store.put_manifest(repo, digest, bytes.clone(), tag).await;
        self.core.written(repo);
        saved?;
        // A signature (its `.sig` tag, or a referrer) may change a verdict.
        let signs = tag.and_then(crate::trust::cosign::signed_by_tag).or_else(|| info.subject.clone());
        if let Some(signed) = signs {
            self.trust.forget(&signed);
        }
        let now = self.core.caches.generations.current(repo);
        let cached = Arc::new(CachedManifest::new(digest, bytes, info));
        let head = cached.head.clone();
        self.core.caches.manifests.insert(digest.clone(), cached).await;
        self.core.caches.revisions.insert(repo, digest.clone(), (), now).await;
        if let Some(tag) = tag {
            self.core.caches.tags.insert(repo, tag.clone(), digest.clone(), now).await;
        }
        Ok(head)
    }

    /// Stores a pushed manifest after checking it parses, matches a digest
    /// reference, and that every blob and child manifest it names is in `repo`.
    #[tracing::instrument(level = "debug", skip(self, bytes), fields(repo = %repo, reference = %reference))]
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        bytes: Bytes,
    ) -> RegistryResult<PushedManifest> {
        if bytes.len() as u64 > self.max_manifest_size {
            return Err(RegistryError::ManifestTooLarge { limit: self.max_manifest_size });
        }
        let info = ManifestInfo::parse_push(&bytes, content_type)?;
        self.validation.check(&info)?;
        let (digest, tag) = match reference {
            Reference::Digest(expected) => {
                expected
                    .check(&bytes)
                    .map_err(|actual| RegistryError::ManifestDigestMismatch { expected: expected.clone(), actual })?;
                (expected.clone(), None)
            }
            Reference::Tag(t) => (Digest::sha256_of(&bytes), Some(t)),
        };
        // Checked and written under the repository's write lock (no DELETE of
        // a referenced blob slips between the check and the write) and with
        // leases on everything referenced (no garbage collection or eviction
        // deletes it meanwhile; a running GC is told it is live before the
        // leases go).
        self.quota_for_manifest(repo, &digest, bytes.len() as u64).await?;
        let _writing = self.core.locks.lock(repo).await;
        if let (Some(t), false) = (tag, self.immutable.is_empty()) {
            let current = self.core.store.resolve_tag(repo, t).await?.map(|d| d.to_string());
            let id = super::identity::RepoId::Local(repo.clone());
            if let Some(why) = self.immutable.refuses_move(&id, t.as_str(), current.as_deref(), &digest.to_string()) {
                return Err(RegistryError::Denied(why));
            }
        }
        let referenced: Vec<Digest> = std::iter::once(digest.clone()).chain(info.references().cloned()).collect();
        let mut _leases = Vec::with_capacity(referenced.len());
        for d in &referenced {
            _leases.push(self.core.store.lease(d).await);
        }
        for b in info.blobs() {
            if self.linked_size(repo, &b.digest).await?.is_none() {
                return Err(RegistryError::ManifestBlobUnknown(b.digest.clone()));
            }
        }
        for m in info.children() {
            if !self.has_manifest(repo, &m.digest).await? {
                return Err(RegistryError::ManifestBlobUnknown(m.digest.clone()));
            }
        }
        let subject = info.subject.clone();
        let media_type = info.media_type.clone();
        let references = match self.core.events.include_references() {
            true => crate::events::references(&info),
            false => Vec::new(),
        };
        self.save_manifest(repo, &digest, bytes, info, tag).await?;
        self.lifecycle.gc_keep(referenced.iter().cloned());
        // Another replica's lifecycle work may have deleted a referenced blob
        // between the check above and the write (`store::shared`); the
        // manifest itself (first) was confirmed as it was saved.
        if let Some(gone) = self.core.store.confirm_data(&referenced[1..]).await?.into_iter().next() {
            return Err(crate::store::StoreError::LifecycleRace(gone).into());
        }
        Ok(PushedManifest { digest, subject, media_type, references })
    }

    /// Refuses a delete that would remove an immutable tag (the tag itself,
    /// or the manifest it names, which takes its tags with it).
    async fn check_immutable_delete(&self, repo: &RepoName, reference: &Reference) -> RegistryResult<()> {
        if self.immutable.is_empty() {
            return Ok(());
        }
        let id = super::identity::RepoId::Local(repo.clone());
        let tags: Vec<String> = match reference {
            Reference::Tag(t) => vec![t.to_string()],
            Reference::Digest(d) => {
                let mut naming = Vec::new();
                for t in self.core.store.list_tags(repo).await? {
                    let Ok(tag) = t.parse::<Tag>() else { continue };
                    if self.core.store.resolve_tag(repo, &tag).await?.as_ref() == Some(d) {
                        naming.push(t);
                    }
                }
                naming
            }
        };
        match tags.iter().find_map(|t| self.immutable.refuses_delete(&id, t)) {
            Some(why) => Err(RegistryError::Denied(why)),
            None => Ok(()),
        }
    }

    /// Deletes a tag, or a manifest by digest together with the tags that
    /// point at it when the delete runs. Ordered with every other write to
    /// `repo`: a tag PUT that answered before is seen, one that comes after
    /// is kept. Once this returns, no read returns what it removed. The
    /// tags a delete by digest removed with it.
    pub async fn delete_manifest(&self, repo: &RepoName, reference: &Reference) -> RegistryResult<Vec<Tag>> {
        self.check_delete()?;
        let _writing = self.core.locks.lock(repo).await;
        self.check_immutable_delete(repo, reference).await?;
        let result = match reference {
            Reference::Tag(tag) => self.core.store.delete_tag(repo, tag).await.map(|existed| existed.then(Vec::new)),
            Reference::Digest(d) => self.core.store.delete_manifest(repo, d).await,
        };
        // Whatever happened (a failure may have removed part), reads made before stop counting.
        self.core.written(repo);
        result?.ok_or_else(|| RegistryError::ManifestUnknown(reference.to_string()))
    }
}
