//! Blob reads (local or mirrored), deletes, and uploads into local repositories.

use bytes::Bytes;
use futures::Stream;

use crate::oci::{Digest, RepoName};
use crate::store::{ByteStream, StoreError, UploadStatus};

use super::range::{ByteRange, RangeRequest};
use super::{Registry, RegistryError, RegistryResult, Route};

/// A blob opened for reading.
pub struct BlobRead {
    pub size: u64,
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
        let key = (repo.clone(), d.clone());
        if let Some(size) = self.caches.blobs.get(&key).await {
            return Ok(size);
        }
        let size = self.store.linked_blob_size(repo, d).await?.ok_or_else(|| RegistryError::BlobUnknown(d.clone()))?;
        self.caches.blobs.insert(key, size).await;
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
            Some(r) => self.store.open_blob(d, r.start, Some(r.end - r.start + 1)).await,
            None => self.store.open_blob(d, 0, None).await,
        };
        let body = body.map_err(|e| match e {
            StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                RegistryError::BlobUnknown(d.clone())
            }
            other => other.into(),
        })?;
        Ok(BlobRead { size, range, body })
    }

    /// Size of a blob readable through `route`.
    #[tracing::instrument(level = "debug", skip(self, route), fields(repo = %route.storage(), digest = %d))]
    pub async fn stat_blob(&self, route: &Route, d: &Digest) -> RegistryResult<u64> {
        match route {
            Route::Local(repo) => self.local_blob_size(repo, d).await,
            Route::Mirrored(m) => self.mirrored_blob_size(m, d).await,
        }
    }

    /// Opens a blob readable through `route`, whole or a byte range of it.
    pub async fn open_blob(&self, route: &Route, d: &Digest, range: Option<RangeRequest>) -> RegistryResult<BlobRead> {
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
        let existed = self.store.unlink_blob(repo, d).await?;
        self.caches.blobs.invalidate(&(repo.clone(), d.clone())).await;
        if existed {
            Ok(())
        } else {
            Err(RegistryError::BlobUnknown(d.clone()))
        }
    }

    /// Starts an upload, or mounts `mount` from repository `from` when that
    /// repository links it (the blob then becomes readable in `repo` at once).
    pub async fn start_upload(
        &self,
        repo: &RepoName,
        mount: Option<(Digest, Option<RepoName>)>,
    ) -> RegistryResult<UploadStart> {
        if let Some((d, Some(from))) = mount {
            // A mirrored source (`library/busybox` that docker pulled through
            // this mirror) is mounted from where the store keeps it.
            let from = self.route(&from, None).await?.storage().clone();
            if self.store.linked_blob_size(&from, &d).await?.is_some() {
                self.store.link_blob(repo, &d).await?;
                return Ok(UploadStart::Mounted(d));
            }
        }
        Ok(UploadStart::Session(self.store.start_upload(repo).await?))
    }

    pub async fn upload_status(&self, repo: &RepoName, id: &str) -> RegistryResult<UploadStatus> {
        Ok(self.store.upload_status(repo, id).await?)
    }

    pub async fn append_upload<S, E>(
        &self,
        repo: &RepoName,
        id: &str,
        start: Option<u64>,
        declared: Option<u64>,
        body: S,
    ) -> RegistryResult<UploadStatus>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        Ok(self.store.append_upload(repo, id, start, declared, body).await?)
    }

    /// Completes an upload with its last bytes; the blob is stored only if it
    /// matches `digest`.
    pub async fn finish_upload<S, E>(
        &self,
        repo: &RepoName,
        id: &str,
        start: Option<u64>,
        body: S,
        digest: &Digest,
    ) -> RegistryResult<()>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        self.store.finish_upload(repo, id, start, body, digest).await?;
        self.caches.blobs.invalidate(&(repo.clone(), digest.clone())).await;
        Ok(())
    }

    /// Monolithic upload: one request carries the whole blob.
    pub async fn upload_blob<S, E>(&self, repo: &RepoName, body: S, digest: &Digest) -> RegistryResult<()>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let session = self.store.start_upload(repo).await?;
        self.finish_upload(repo, &session.id, None, body, digest).await
    }

    pub async fn cancel_upload(&self, repo: &RepoName, id: &str) -> RegistryResult<()> {
        Ok(self.store.cancel_upload(repo, id).await?)
    }
}
