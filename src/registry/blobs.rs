//! Blob reads (local or mirrored), deletes, and uploads into local repositories.

use std::net::IpAddr;

use bytes::Bytes;
use futures::Stream;

use crate::oci::{Digest, RepoName};
use crate::store::{BodyError, ByteStream, UploadStatus};

use super::range::{ByteRange, RangeRequest};
use super::{Action, Registry, RegistryError, RegistryResult, Route};

/// A blob opened for reading.
pub struct BlobRead {
    /// The blob's size; `None` only while an upstream that sent no
    /// Content-Length is still streaming it (the body is then sent chunked).
    pub size: Option<u64>,
    pub range: Option<ByteRange>,
    pub body: ByteStream,
}

/// Outcome of starting an upload: a mounted blob, or a session to continue.
pub enum UploadStart {
    Mounted(Digest),
    Session(UploadStatus),
}

/// Resolves an optional range against a size.
pub(super) fn resolve_range(range: Option<RangeRequest>, size: u64) -> RegistryResult<Option<ByteRange>> {
    match range {
        None => Ok(None),
        Some(r) => r.resolve(size).map(Some).ok_or(RegistryError::RangeNotSatisfiable { size }),
    }
}

impl Registry {
    /// Size of a blob `repo` links (from the cache when it can).
    pub(super) async fn local_blob_size(&self, repo: &RepoName, d: &Digest) -> RegistryResult<u64> {
        let gens = &self.core.caches.generations;
        if let Some(size) = self.core.caches.blobs.get(gens, repo, d).await {
            return Ok(size);
        }
        let read_at = gens.current(repo);
        let size =
            self.core.store.linked_blob_size(repo, d).await?.ok_or_else(|| RegistryError::BlobUnknown(d.clone()))?;
        self.core.caches.blobs.insert(repo, d.clone(), size, read_at).await;
        Ok(size)
    }

    /// The size of `d` if `repo` links it; `None` if not.
    pub(super) async fn linked_size(&self, repo: &RepoName, d: &Digest) -> RegistryResult<Option<u64>> {
        match self.local_blob_size(repo, d).await {
            Ok(size) => Ok(Some(size)),
            Err(RegistryError::BlobUnknown(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens a blob the store holds, whole or a range of it.
    pub(super) async fn open_stored_blob(
        &self,
        d: &Digest,
        size: u64,
        range: Option<RangeRequest>,
    ) -> RegistryResult<BlobRead> {
        let range = resolve_range(range, size)?;
        let body = match range {
            Some(r) => self.core.store.open_blob(d, r.start, Some(r.end - r.start + 1)).await,
            None => self.core.store.open_blob(d, 0, None).await,
        };
        let body = body.map_err(|e| if e.is_not_found() { RegistryError::BlobUnknown(d.clone()) } else { e.into() })?;
        Ok(BlobRead { size: Some(size), range, body })
    }

    /// Size of a blob readable through `route`.
    #[tracing::instrument(level = "debug", skip(self, route), fields(repo = %route.storage(), digest = %d))]
    pub async fn stat_blob(&self, route: &Route, d: &Digest) -> RegistryResult<u64> {
        self.admit_blob(route, d).await?;
        match route {
            Route::Local(repo) => self.local_blob_size(repo, d).await,
            Route::Mirrored(m) => self.mirrored_blob_size(m, d).await,
        }
    }

    /// Opens a blob readable through `route`, whole or a byte range of it,
    /// if the signature policy lets it be served.
    pub async fn open_blob(&self, route: &Route, d: &Digest, range: Option<RangeRequest>) -> RegistryResult<BlobRead> {
        self.admit_blob(route, d).await?;
        self.read_blob(route, d, range).await
    }

    /// Where the client may GET the blob from the storage itself
    /// (`storage.redirect`), once the same checks as `open_blob` passed; `None`
    /// when redirects are off, the backend makes no URLs, or the blob is not
    /// stored whole for `route` yet (a mirrored blob still being fetched is
    /// served by its fetch, verified as it streams).
    pub async fn redirect_blob(&self, route: &Route, d: &Digest) -> RegistryResult<Option<String>> {
        let Some(r) = &self.redirect else { return Ok(None) };
        self.admit_blob(route, d).await?;
        let linked = match route {
            Route::Local(repo) => self.linked_size(repo, d).await?,
            Route::Mirrored(m) => match self.mirror.as_ref().is_some_and(|mi| mi.inflight_blob(d).is_some()) {
                true => None,
                false => self.linked_size(&m.storage, d).await?,
            },
        };
        if linked.is_none() {
            return Ok(None);
        }
        let url = self.core.store.blob_url(d, r.expiry, &r.base_url).await?;
        if url.is_some() {
            if let Route::Mirrored(m) = route {
                self.lifecycle.uses.record(crate::store::index::UseKind::Blob, &m.storage, d);
            }
            self.core.metrics.blob_redirects.inc();
        }
        Ok(url)
    }

    /// As `open_blob`, without asking the signature policy.
    pub(super) async fn read_blob(
        &self,
        route: &Route,
        d: &Digest,
        range: Option<RangeRequest>,
    ) -> RegistryResult<BlobRead> {
        match route {
            Route::Local(repo) => {
                let size = self.local_blob_size(repo, d).await?;
                self.open_stored_blob(d, size, range).await
            }
            Route::Mirrored(m) => self.mirrored_open_blob(m, d, range).await,
        }
    }

    /// Unlinks a blob from `repo` (its data stays until garbage collection).
    pub async fn delete_blob(&self, repo: &RepoName, d: &Digest) -> RegistryResult<()> {
        self.check_delete()?;
        let _writing = self.core.locks.lock(repo).await;
        let existed = self.core.store.unlink_blob(repo, d).await;
        self.core.written(repo);
        if existed? {
            Ok(())
        } else {
            Err(RegistryError::BlobUnknown(d.clone()))
        }
    }

    /// Starts an upload for the client at `owner`, or mounts `mount` from
    /// repository `from` when the client may pull it there and it links the
    /// blob (the blob then becomes readable in `repo` at once).
    pub async fn start_upload(
        &self,
        repo: &RepoName,
        mount: Option<(Digest, Option<RepoName>)>,
        owner: Option<IpAddr>,
        caller: &super::Caller,
    ) -> RegistryResult<UploadStart> {
        if let Some((d, Some(from))) = mount {
            // A mirrored source (`library/busybox` that docker pulled through
            // this mirror) is mounted from where the store keeps it. A mount
            // needs pull on `from`; without it, or when `from` is no
            // repository here, an upload session instead (the spec's 202).
            let from = match self.route(&from, None, Action::Pull, caller).await {
                Ok(route) => Some(route.storage().clone()),
                Err(e) if e.is_server_fault() => return Err(e),
                Err(_) => None,
            };
            if let Some(from) = from {
                let before = self.quota_refs(&d).await?;
                if let Some(size) = self.core.store.linked_blob_size(&from, &d).await? {
                    if self.core.store.link_existing(repo, &d).await? {
                        self.core.written(repo);
                        self.quota_after_link(repo, &d, size, before).await?;
                        return Ok(UploadStart::Mounted(d));
                    }
                }
            }
        }
        Ok(UploadStart::Session(self.core.store.start_upload(repo, owner).await?))
    }

    pub async fn upload_status(&self, repo: &RepoName, id: &str) -> RegistryResult<UploadStatus> {
        Ok(self.core.store.upload_status(repo, id).await?)
    }

    pub async fn append_upload<S>(
        &self,
        repo: &RepoName,
        id: &str,
        start: Option<u64>,
        declared: Option<u64>,
        body: S,
    ) -> RegistryResult<UploadStatus>
    where
        S: Stream<Item = Result<Bytes, BodyError>>,
    {
        Ok(self.core.store.append_upload(repo, id, start, declared, body).await?)
    }

    /// Completes an upload with its last bytes; the blob is stored only if it
    /// matches `digest`. From then on `repo` holds pushed content.
    pub async fn finish_upload<S>(
        &self,
        repo: &RepoName,
        id: &str,
        start: Option<u64>,
        body: S,
        digest: &Digest,
    ) -> RegistryResult<()>
    where
        S: Stream<Item = Result<Bytes, BodyError>>,
    {
        let before = self.quota_refs(digest).await?;
        let finished = self.core.store.finish_upload(repo, id, start, body, digest).await;
        self.core.written(repo);
        finished?;
        if before.is_some() {
            let size = self.core.store.blob_size(digest).await?.unwrap_or(0);
            self.quota_after_link(repo, digest, size, before).await?;
        }
        Ok(())
    }

    /// Monolithic upload: one request carries the whole blob. A failure
    /// leaves no session behind (the client never learnt its id).
    pub async fn upload_blob<S>(
        &self,
        repo: &RepoName,
        body: S,
        digest: &Digest,
        owner: Option<IpAddr>,
    ) -> RegistryResult<()>
    where
        S: Stream<Item = Result<Bytes, BodyError>>,
    {
        let session = self.core.store.start_upload(repo, owner).await?;
        let result = self.finish_upload(repo, &session.id, None, body, digest).await;
        if result.is_err() {
            match self.core.store.cancel_upload(repo, &session.id).await {
                Ok(()) | Err(crate::store::StoreError::UploadUnknown(_)) => {}
                Err(e) => tracing::warn!(error = %e, "could not remove a failed monolithic upload"),
            }
        }
        result
    }

    pub async fn cancel_upload(&self, repo: &RepoName, id: &str) -> RegistryResult<()> {
        Ok(self.core.store.cancel_upload(repo, id).await?)
    }
}
