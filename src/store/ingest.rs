//! Ingest of content that arrives from elsewhere (the mirror's upstream
//! fetches): bytes go to a writer for the blob's final path, hashed as they
//! are written; readers tail them meanwhile (the writer's own file, or a
//! local spool where the backend has none); only a `Verified` ingest (digest
//! and size checked) can be committed, and until then nothing is visible at
//! the blob's path; `abort` leaves nothing behind.

use std::sync::Arc;

use bytes::Bytes;

use crate::oci::{Digest, DigestHasher, RepoName};

use super::backend::{RandomRead, Writer};
use super::error::{StoreError, StoreResult};
use super::spool::Spool;
use super::{layout, Store};

/// A blob being written; not visible in the store until committed.
pub struct Ingest {
    repo: RepoName,
    writer: Box<dyn Writer>,
    /// The copy readers tail, where the writer has no file of its own.
    spool: Option<Spool>,
    hasher: DigestHasher,
    size: u64,
}

impl Ingest {
    /// Writes and hashes one chunk.
    pub async fn write(&mut self, bytes: Bytes) -> StoreResult<()> {
        let len = bytes.len() as u64;
        let hash = async { self.hasher.update(&bytes) };
        let spool = async {
            match self.spool.as_mut() {
                Some(s) => s.write(bytes.clone()).await,
                None => Ok(()),
            }
        };
        let (written, spooled, ()) = futures::join!(self.writer.write(bytes.clone()), spool, hash);
        written?;
        spooled?;
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
    /// returns it with a reader over the bytes as they arrive.
    pub async fn begin_ingest(&self, repo: &RepoName, expected: &Digest) -> StoreResult<(Ingest, Arc<dyn RandomRead>)> {
        let writer = self.backend.writer(&layout::blob_data(expected)).await?;
        let (reader, spool) = match writer.tail() {
            Some(tail) => (tail, None),
            None => match Spool::create(&self.spool_dir).await {
                Ok(spool) => (spool.reader(), Some(spool)),
                Err(e) => {
                    writer.cancel().await;
                    return Err(e);
                }
            },
        };
        let hasher = expected.algorithm().hasher();
        Ok((Ingest { repo: repo.clone(), writer, spool, hasher, size: 0 }, reader))
    }

    /// Commits verified content to its place in `blobs/` and links it into
    /// the ingest's repository. The blob is leased from before it appears
    /// until the link that keeps it is written.
    pub async fn commit_ingest(&self, verified: Verified) -> StoreResult<()> {
        let Verified { ingest, digest } = verified;
        let _lease = self.lease(&digest).await;
        ingest.writer.commit().await?;
        self.link_blob_held(&ingest.repo, &digest, ingest.size).await
    }

    /// Discards an ingest and what it wrote.
    pub async fn abort_ingest(&self, ingest: Ingest) {
        ingest.writer.cancel().await;
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
        let temp = dir.path().join(".berth/tmp");
        assert_eq!(std::fs::read_dir(temp).unwrap().count(), 0, "aborted ingests leave no files");
    }
}
