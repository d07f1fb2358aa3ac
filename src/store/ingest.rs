//! Ingest of content that arrives from elsewhere (the mirror's upstream
//! fetches): bytes are appended to an upload file and hashed as they are
//! written; readers may tail the file meanwhile; only a `Verified` ingest
//! (digest and size checked) can be committed; `abort` leaves nothing behind.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::oci::{Digest, DigestHasher, RepoName};

use super::backend::{Appender, RandomRead};
use super::error::{StoreError, StoreResult};
use super::uploads::write_hashed;
use super::{layout, Store};

/// A blob being written; not visible in the store until committed.
pub struct Ingest {
    repo: RepoName,
    id: String,
    appender: Box<dyn Appender>,
    hasher: DigestHasher,
    size: u64,
    _active: ActiveMark,
}

/// Marks an ingest's directory as being written for as long as the ingest
/// lives, however it ends (commit, abort, or a task that panicked), so the
/// upload purge never removes a live ingest and always removes a dead one.
struct ActiveMark {
    set: Arc<Mutex<HashSet<String>>>,
    dir: String,
}

impl Drop for ActiveMark {
    fn drop(&mut self) {
        self.set.lock().unwrap().remove(&self.dir);
    }
}

impl Ingest {
    /// Appends and hashes one chunk.
    pub async fn write(&mut self, bytes: Bytes) -> StoreResult<()> {
        let len = bytes.len() as u64;
        write_hashed(self.appender.as_mut(), Some(&mut self.hasher), bytes).await?;
        self.size += len;
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Checks what was written against the expected digest (and size, if
    /// known). Only a `Verified` ingest can be committed, so the check is made
    /// once and cannot be skipped; on a mismatch the ingest comes back for `abort_ingest`.
    // `Verified` holds the same ingest, so boxing the error would not shrink the result.
    #[allow(clippy::result_large_err)]
    pub fn verify(self, expected: &Digest, size: Option<u64>) -> Result<Verified, (Ingest, StoreError)> {
        if let Some(size) = size.filter(|&s| s != self.size) {
            let actual = self.size;
            return Err((self, StoreError::SizeMismatch { expected: size, actual }));
        }
        let actual = self.hasher.clone().finish();
        if &actual != expected {
            return Err((self, StoreError::DigestMismatch { expected: expected.clone(), actual }));
        }
        Ok(Verified { ingest: self, digest: actual })
    }
}

/// An ingest whose content matched the digest it was expected to have.
pub struct Verified {
    ingest: Ingest,
    digest: Digest,
}

impl Verified {
    pub fn size(&self) -> u64 {
        self.ingest.size
    }
}

impl Store {
    /// Starts an ingest into `repo` for content expected to hash to `expected`;
    /// returns it with a reader over the growing file.
    pub async fn begin_ingest(&self, repo: &RepoName, expected: &Digest) -> StoreResult<(Ingest, Arc<dyn RandomRead>)> {
        let id = uuid::Uuid::new_v4().to_string();
        let dir = layout::upload_dir(repo, &id);
        self.ingests.lock().unwrap().insert(dir.clone());
        let active = ActiveMark { set: self.ingests.clone(), dir: dir.clone() };
        let opened = async {
            self.create_upload_dir(repo, &id).await?;
            let path = layout::upload_data(repo, &id);
            let appender = self.backend.appender(&path, 0).await?;
            let reader = self.backend.open_random(&path).await?;
            Ok::<_, StoreError>((appender, reader))
        }
        .await;
        let (appender, reader) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                let _ = self.backend.delete(&dir).await;
                return Err(e);
            }
        };
        let hasher = expected.algorithm().hasher();
        let ingest = Ingest { repo: repo.clone(), id, appender, hasher, size: 0, _active: active };
        Ok((ingest, reader))
    }

    /// Syncs verified content, moves it into `blobs/` and links it into the
    /// ingest's repository.
    pub async fn commit_ingest(&self, verified: Verified) -> StoreResult<()> {
        let Verified { mut ingest, digest } = verified;
        let committed = match ingest.appender.sync().await {
            Ok(()) => self.promote(&ingest.repo, &ingest.id, &digest).await,
            Err(e) => Err(e),
        };
        if committed.is_err() {
            let _ = self.backend.delete(&layout::upload_dir(&ingest.repo, &ingest.id)).await;
        }
        committed
    }

    /// Discards an ingest and its file.
    pub async fn abort_ingest(&self, ingest: Ingest) {
        let dir = layout::upload_dir(&ingest.repo, &ingest.id);
        if let Err(e) = self.backend.delete(&dir).await {
            tracing::warn!(error = %e, dir, "could not remove an aborted ingest");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn verified_ingest_commits_and_readers_see_bytes_before_and_after() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::filesystem(dir.path()).unwrap();
        let repo: RepoName = "docker.io/library/x".parse().unwrap();
        let d = Digest::sha256_of(b"hello world");
        let (mut ingest, reader) = store.begin_ingest(&repo, &d).await.unwrap();
        ingest.write(Bytes::from_static(b"hello ")).await.unwrap();
        assert_eq!(reader.read_at(0, 5).await.unwrap().as_ref(), b"hello");
        ingest.write(Bytes::from_static(b"world")).await.unwrap();
        let verified = ingest.verify(&d, Some(11)).map_err(|(_, e)| e).unwrap();
        store.commit_ingest(verified).await.unwrap();
        assert_eq!(reader.read_at(6, 5).await.unwrap().as_ref(), b"world", "the handle survives the rename");
        assert_eq!(store.linked_blob_size(&repo, &d).await.unwrap(), Some(11));
        let all: Vec<_> = store.open_blob(&d, 0, None).await.unwrap().collect().await;
        assert_eq!(all.into_iter().map(Result::unwrap).collect::<Vec<_>>().concat(), b"hello world");
    }

    #[tokio::test]
    async fn corrupt_or_short_ingest_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::filesystem(dir.path()).unwrap();
        let repo: RepoName = "r".parse().unwrap();
        let d = Digest::sha256_of(b"good");
        let (mut ingest, _) = store.begin_ingest(&repo, &d).await.unwrap();
        ingest.write(Bytes::from_static(b"evil")).await.unwrap();
        let (ingest, e) = ingest.verify(&d, Some(4)).err().unwrap();
        assert!(matches!(e, StoreError::DigestMismatch { .. }));
        store.abort_ingest(ingest).await;
        let (mut ingest, _) = store.begin_ingest(&repo, &d).await.unwrap();
        ingest.write(Bytes::from_static(b"go")).await.unwrap();
        let (ingest, e) = ingest.verify(&d, Some(4)).err().unwrap();
        assert!(matches!(e, StoreError::SizeMismatch { .. }));
        store.abort_ingest(ingest).await;
        assert_eq!(store.blob_size(&d).await.unwrap(), None);
        assert_eq!(store.linked_blob_size(&repo, &d).await.unwrap(), None);
        let uploads = dir.path().join(layout::repository(&repo)).join("_uploads");
        assert_eq!(std::fs::read_dir(uploads).unwrap().count(), 0, "aborted ingests leave no files");
    }
}
