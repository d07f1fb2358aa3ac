//! The façade every API handler calls: one method per registry operation.
//! It applies the registry's rules (what a manifest must reference, whether
//! deletes are allowed) over the store, and keeps the metadata caches in step
//! with every write and delete.

mod error;
mod manifests;
mod referrers;

use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;

pub use error::{RegistryError, RegistryResult};
pub use manifests::{Manifest, PushedManifest};
pub use referrers::Referrer;

use crate::cache::Caches;
use crate::config::Config;
use crate::oci::{Digest, RepoName};
use crate::store::{ByteStream, Store, StoreError, UploadStatus};

/// A byte range of a blob, inclusive, as resolved against its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

/// A `Range` request before the blob's size is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// `bytes=start-` or `bytes=start-end`.
    From { start: u64, end: Option<u64> },
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

impl RangeRequest {
    /// Resolves against the blob size; `None` when unsatisfiable (RFC 9110 §14.1.2).
    pub fn resolve(self, size: u64) -> Option<ByteRange> {
        match self {
            RangeRequest::From { start, end } if start < size => Some(ByteRange {
                start,
                end: end.map_or(size - 1, |e| e.min(size - 1)),
            }),
            RangeRequest::Suffix(n) if n > 0 && size > 0 => Some(ByteRange {
                start: size.saturating_sub(n),
                end: size - 1,
            }),
            _ => None,
        }
    }
}

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

pub struct Registry {
    store: Store,
    caches: Caches,
    delete_enabled: bool,
    max_manifest_size: u64,
}

impl Registry {
    pub fn new(cfg: &Config) -> Self {
        Self::with_store(cfg, Store::filesystem(&cfg.storage.root))
    }

    pub fn with_store(cfg: &Config, store: Store) -> Self {
        Self {
            store,
            caches: Caches::new(&cfg.cache),
            delete_enabled: cfg.storage.delete.enabled,
            max_manifest_size: cfg.storage.max_manifest_size,
        }
    }

    pub fn max_manifest_size(&self) -> u64 {
        self.max_manifest_size
    }

    fn check_delete(&self) -> RegistryResult<()> {
        if self.delete_enabled {
            Ok(())
        } else {
            Err(RegistryError::DeleteDisabled)
        }
    }

    /// Size of a blob readable in `repo`.
    #[tracing::instrument(level = "debug", skip(self), fields(repo = %repo, digest = %d))]
    pub async fn stat_blob(&self, repo: &RepoName, d: &Digest) -> RegistryResult<u64> {
        let key = (repo.clone(), d.clone());
        if let Some(size) = self.caches.blobs.get(&key).await {
            return Ok(size);
        }
        let size = self
            .store
            .linked_blob_size(repo, d)
            .await?
            .ok_or_else(|| RegistryError::BlobUnknown(d.clone()))?;
        self.caches.blobs.insert(key, size).await;
        Ok(size)
    }

    /// Opens a blob readable in `repo`, whole or a byte range of it.
    pub async fn open_blob(
        &self,
        repo: &RepoName,
        d: &Digest,
        range: Option<RangeRequest>,
    ) -> RegistryResult<BlobRead> {
        let size = self.stat_blob(repo, d).await?;
        let range = match range {
            None => None,
            Some(r) => Some(
                r.resolve(size)
                    .ok_or(RegistryError::RangeNotSatisfiable { size })?,
            ),
        };
        let body = match range {
            Some(r) => {
                self.store
                    .open_blob(d, r.start, Some(r.end - r.start + 1))
                    .await
            }
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

    /// Unlinks a blob from `repo` (its data stays until garbage collection).
    pub async fn delete_blob(&self, repo: &RepoName, d: &Digest) -> RegistryResult<()> {
        self.check_delete()?;
        let existed = self.store.unlink_blob(repo, d).await?;
        self.caches
            .blobs
            .invalidate(&(repo.clone(), d.clone()))
            .await;
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
        Ok(self
            .store
            .append_upload(repo, id, start, declared, body)
            .await?)
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
        self.store
            .finish_upload(repo, id, start, body, digest)
            .await?;
        self.caches
            .blobs
            .invalidate(&(repo.clone(), digest.clone()))
            .await;
        Ok(())
    }

    /// Monolithic upload: one request carries the whole blob.
    pub async fn upload_blob<S, E>(
        &self,
        repo: &RepoName,
        body: S,
        digest: &Digest,
    ) -> RegistryResult<()>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let session = self.store.start_upload(repo).await?;
        self.finish_upload(repo, &session.id, None, body, digest)
            .await
    }

    pub async fn cancel_upload(&self, repo: &RepoName, id: &str) -> RegistryResult<()> {
        Ok(self.store.cancel_upload(repo, id).await?)
    }

    /// Tags of `repo`, sorted, after `last`, at most `n`; and whether more follow.
    pub async fn list_tags(
        &self,
        repo: &RepoName,
        n: Option<usize>,
        last: Option<&str>,
    ) -> RegistryResult<(Vec<String>, bool)> {
        if !self.store.repository_exists(repo).await? {
            return Err(RegistryError::NameUnknown(repo.to_string()));
        }
        Ok(paginate(self.store.list_tags(repo).await?, n, last))
    }

    /// Repository names, sorted, after `last`, at most `n`; and whether more follow.
    pub async fn catalog(
        &self,
        n: Option<usize>,
        last: Option<&str>,
    ) -> RegistryResult<(Vec<String>, bool)> {
        Ok(paginate(self.store.list_repositories().await?, n, last))
    }
}

/// Keeps entries after `last`, then the first `n` of them.
fn paginate(sorted: Vec<String>, n: Option<usize>, last: Option<&str>) -> (Vec<String>, bool) {
    let mut rest: Vec<String> = match last {
        Some(last) => sorted.into_iter().filter(|s| s.as_str() > last).collect(),
        None => sorted,
    };
    match n {
        Some(0) => (vec![], false),
        Some(n) if rest.len() > n => {
            rest.truncate(n);
            (rest, true)
        }
        _ => (rest, false),
    }
}

/// The registry shared by all workers.
pub type SharedRegistry = Arc<Registry>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_like_rfc9110() {
        let r = |start, end| Some(ByteRange { start, end });
        assert_eq!(
            RangeRequest::From {
                start: 0,
                end: Some(9)
            }
            .resolve(100),
            r(0, 9)
        );
        assert_eq!(
            RangeRequest::From {
                start: 90,
                end: Some(200)
            }
            .resolve(100),
            r(90, 99)
        );
        assert_eq!(
            RangeRequest::From {
                start: 10,
                end: None
            }
            .resolve(100),
            r(10, 99)
        );
        assert_eq!(RangeRequest::Suffix(10).resolve(100), r(90, 99));
        assert_eq!(RangeRequest::Suffix(500).resolve(100), r(0, 99));
        assert_eq!(
            RangeRequest::From {
                start: 100,
                end: None
            }
            .resolve(100),
            None
        );
        assert_eq!(RangeRequest::Suffix(0).resolve(100), None);
    }

    #[test]
    fn pagination_uses_last_and_n() {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            paginate(v(&["a", "b", "c"]), Some(2), None),
            (v(&["a", "b"]), true)
        );
        assert_eq!(
            paginate(v(&["a", "b", "c"]), Some(2), Some("b")),
            (v(&["c"]), false)
        );
        assert_eq!(paginate(v(&["a", "b"]), Some(0), None), (v(&[]), false));
        assert_eq!(
            paginate(v(&["a", "b"]), None, None),
            (v(&["a", "b"]), false)
        );
    }
}
