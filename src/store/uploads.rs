//! Upload sessions. Bytes are appended to `_uploads/<id>/data` and hashed as
//! they arrive; on finish the digest is checked, the file synced and renamed
//! into `blobs/`, so only verified, complete content ever becomes a blob.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::oci::{Algorithm, Digest, DigestHasher, RepoName};

use super::backend::Appender;
use super::error::{StoreError, StoreResult};
use super::{layout, Store};

/// Where an upload stands: its id and how many bytes it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadStatus {
    pub id: String,
    pub size: u64,
}

/// In-memory state of an upload: the running hash of the bytes so far.
/// `hasher` is `None` for a session found only on disk (after a restart, or
/// started by registry:2); its digest is then computed from the file at finish.
struct Session {
    size: u64,
    hasher: Option<DigestHasher>,
}

type SessionRef = Arc<tokio::sync::Mutex<Session>>;

#[derive(Default)]
pub(super) struct Sessions(Mutex<HashMap<String, SessionRef>>);

impl Sessions {
    fn key(repo: &RepoName, id: &str) -> String {
        format!("{repo}\n{id}")
    }

    fn get(&self, repo: &RepoName, id: &str) -> Option<SessionRef> {
        self.0.lock().unwrap().get(&Self::key(repo, id)).cloned()
    }

    fn insert(&self, repo: &RepoName, id: &str, s: Session) -> SessionRef {
        let r = Arc::new(tokio::sync::Mutex::new(s));
        self.0.lock().unwrap().entry(Self::key(repo, id)).or_insert(r).clone()
    }

    fn remove(&self, repo: &RepoName, id: &str) {
        self.0.lock().unwrap().remove(&Self::key(repo, id));
    }
}

/// Upload ids are UUIDs; anything else cannot name an upload (and never
/// reaches a path).
fn valid_id(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok()
}

/// Request bodies are written in chunks of up to this size (see `batch`).
const WRITE_BATCH: usize = 1024 * 1024;

/// Appends one chunk and feeds it to `hasher`: the hash runs here while the
/// write runs on the backend's blocking path.
pub(super) async fn write_hashed(
    w: &mut dyn Appender,
    hasher: Option<&mut DigestHasher>,
    bytes: Bytes,
) -> StoreResult<()> {
    let hash = async {
        if let Some(h) = hasher {
            h.update(&bytes);
        }
    };
    futures::join!(w.write(bytes.clone()), hash).0
}

/// Appends a body to the appender, hashing as it goes; returns bytes written.
async fn pump<S, E>(w: &mut Box<dyn Appender>, hasher: &mut Option<DigestHasher>, body: S) -> StoreResult<u64>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let mut body = std::pin::pin!(super::batch::gather(body, WRITE_BATCH));
    let mut n = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| StoreError::Body(e.to_string()))?;
        n += chunk.len() as u64;
        write_hashed(w.as_mut(), hasher.as_mut(), chunk).await?;
    }
    Ok(n)
}

impl Store {
    /// Starts a new upload session in `repo`.
    pub async fn start_upload(&self, repo: &RepoName) -> StoreResult<UploadStatus> {
        let id = self.create_upload_dir(repo).await?;
        self.backend.appender(&layout::upload_data(repo, &id), 0).await?.sync().await?;
        self.uploads.insert(repo, &id, Session { size: 0, hasher: Some(Algorithm::Sha256.hasher()) });
        Ok(UploadStatus { id, size: 0 })
    }

    async fn session(&self, repo: &RepoName, id: &str) -> StoreResult<SessionRef> {
        if !valid_id(id) {
            return Err(StoreError::UploadUnknown(id.to_string()));
        }
        if let Some(s) = self.uploads.get(repo, id) {
            return Ok(s);
        }
        let size = self
            .backend
            .stat(&layout::upload_data(repo, id))
            .await?
            .ok_or_else(|| StoreError::UploadUnknown(id.to_string()))?;
        let hasher = (size == 0).then(|| Algorithm::Sha256.hasher());
        Ok(self.uploads.insert(repo, id, Session { size, hasher }))
    }

    /// Where the upload stands.
    pub async fn upload_status(&self, repo: &RepoName, id: &str) -> StoreResult<UploadStatus> {
        let s = self.session(repo, id).await?;
        let size = s.lock().await.size;
        Ok(UploadStatus { id: id.to_string(), size })
    }

    /// Appends a chunk. `start` (from `Content-Range`) must equal the bytes
    /// held; `declared` (its length) must equal what arrives. On any failure
    /// the upload is put back exactly as it was before the chunk.
    pub async fn append_upload<S, E>(
        &self,
        repo: &RepoName,
        id: &str,
        start: Option<u64>,
        declared: Option<u64>,
        body: S,
    ) -> StoreResult<UploadStatus>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let s = self.session(repo, id).await?;
        let mut s = s.lock().await;
        if let Some(start) = start {
            if start != s.size {
                return Err(StoreError::ChunkOutOfOrder { start, size: s.size });
            }
        }
        let path = layout::upload_data(repo, id);
        let mut hasher = s.hasher.clone();
        let mut w = self.backend.appender(&path, s.size).await?;
        let written = pump(&mut w, &mut hasher, body).await.and_then(|n| match declared {
            Some(d) if d != n => Err(StoreError::SizeMismatch { expected: d, actual: n }),
            _ => Ok(n),
        });
        match written {
            Ok(n) => {
                s.size += n;
                s.hasher = hasher;
                Ok(UploadStatus { id: id.to_string(), size: s.size })
            }
            Err(e) => {
                drop(w);
                // Roll back to the last good offset so the client can retry the chunk.
                self.backend.appender(&path, s.size).await?.sync().await?;
                Err(e)
            }
        }
    }

    /// Appends the final chunk (may be empty), verifies the digest, and
    /// commits the blob into the store and links it into `repo`. On a digest
    /// mismatch the upload is discarded.
    pub async fn finish_upload<S, E>(
        &self,
        repo: &RepoName,
        id: &str,
        start: Option<u64>,
        body: S,
        expected: &Digest,
    ) -> StoreResult<u64>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        {
            // Nothing received yet (POST then one PUT, or monolithic POST): the
            // digest's algorithm is known before the first byte, so hash with it.
            let s = self.session(repo, id).await?;
            let mut s = s.lock().await;
            if s.size == 0 && s.hasher.as_ref().map(|h| h.algorithm()) != Some(expected.algorithm()) {
                s.hasher = Some(expected.algorithm().hasher());
            }
        }
        let status = self.append_upload(repo, id, start, None, body).await?;
        let s = self.session(repo, id).await?;
        let mut s = s.lock().await;
        let path = layout::upload_data(repo, id);
        let actual = match s.hasher.take() {
            Some(h) if h.algorithm() == expected.algorithm() => h.finish(),
            // Only for a session resumed from disk, or chunks sent before a
            // non-sha256 digest was named (the protocol names the algorithm at
            // the final PUT): hash the file once here.
            _ => self.hash_file(&path, expected.algorithm()).await?,
        };
        if &actual != expected {
            drop(s);
            self.cancel_upload(repo, id).await?;
            return Err(StoreError::DigestMismatch { expected: expected.clone(), actual });
        }
        self.backend.appender(&path, status.size).await?.sync().await?;
        drop(s);
        self.uploads.remove(repo, id);
        self.promote(repo, id, expected).await?;
        Ok(status.size)
    }

    /// Moves a verified, synced upload file into `blobs/`, links it into
    /// `repo` and removes the upload directory.
    pub(super) async fn promote(&self, repo: &RepoName, id: &str, d: &Digest) -> StoreResult<()> {
        self.backend.commit(&layout::upload_data(repo, id), &layout::blob_data(d)).await?;
        self.link_blob(repo, d).await?;
        self.backend.delete(&layout::upload_dir(repo, id)).await
    }

    /// Creates an upload directory registry:2 would recognise (and purge if
    /// abandoned); returns its id.
    pub(super) async fn create_upload_dir(&self, repo: &RepoName) -> StoreResult<String> {
        let id = uuid::Uuid::new_v4().to_string();
        let started = humantime::format_rfc3339(std::time::SystemTime::now()).to_string();
        self.backend.put(&layout::upload_started_at(repo, &id), started.as_bytes()).await?;
        Ok(id)
    }

    /// Discards an upload and its bytes.
    pub async fn cancel_upload(&self, repo: &RepoName, id: &str) -> StoreResult<()> {
        self.session(repo, id).await?;
        self.uploads.remove(repo, id);
        self.backend.delete(&layout::upload_dir(repo, id)).await
    }

    async fn hash_file(&self, path: &str, algorithm: Algorithm) -> StoreResult<Digest> {
        let mut h = algorithm.hasher();
        let mut r = self.backend.reader(path, 0, None).await?;
        while let Some(chunk) = r.next().await {
            h.update(&chunk.map_err(StoreError::io(path))?);
        }
        Ok(h.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;

    fn body(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
        stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p))).collect::<Vec<_>>())
    }

    #[tokio::test]
    async fn chunked_upload_commits_verified_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::filesystem(dir.path());
        let repo: RepoName = "a/b".parse().unwrap();
        let up = store.start_upload(&repo).await.unwrap();
        store.append_upload(&repo, &up.id, Some(0), Some(6), body(&[b"hel", b"lo "])).await.unwrap();
        let err = store.append_upload(&repo, &up.id, Some(0), None, body(&[b"x"])).await.unwrap_err();
        assert!(matches!(err, StoreError::ChunkOutOfOrder { start: 0, size: 6 }));
        let d = Digest::sha256_of(b"hello world");
        assert_eq!(store.finish_upload(&repo, &up.id, None, body(&[b"world"]), &d).await.unwrap(), 11);
        assert_eq!(store.linked_blob_size(&repo, &d).await.unwrap(), Some(11));
        assert!(matches!(store.upload_status(&repo, &up.id).await, Err(StoreError::UploadUnknown(_))));
    }

    #[tokio::test]
    async fn wrong_digest_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::filesystem(dir.path());
        let repo: RepoName = "a".parse().unwrap();
        let up = store.start_upload(&repo).await.unwrap();
        let wrong = Digest::sha256_of(b"other");
        let err = store.finish_upload(&repo, &up.id, None, body(&[b"data"]), &wrong).await.unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }));
        assert_eq!(store.blob_size(&wrong).await.unwrap(), None);
        assert_eq!(store.blob_size(&Digest::sha256_of(b"data")).await.unwrap(), None);
    }

    #[tokio::test]
    async fn short_chunk_rolls_back_and_sha512_and_resume_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::filesystem(dir.path());
        let repo: RepoName = "a".parse().unwrap();
        let up = store.start_upload(&repo).await.unwrap();
        store.append_upload(&repo, &up.id, Some(0), None, body(&[b"abc"])).await.unwrap();
        let err = store.append_upload(&repo, &up.id, Some(3), Some(10), body(&[b"xyz"])).await.unwrap_err();
        assert!(matches!(err, StoreError::SizeMismatch { expected: 10, actual: 3 }));
        assert_eq!(store.upload_status(&repo, &up.id).await.unwrap().size, 3);
        // A fresh Store over the same directory finds the session on disk.
        let store = Store::filesystem(dir.path());
        let d = Digest::of(Algorithm::Sha512, b"abcdef");
        store.finish_upload(&repo, &up.id, None, body(&[b"def"]), &d).await.unwrap();
        assert_eq!(store.linked_blob_size(&repo, &d).await.unwrap(), Some(6));
    }

    #[tokio::test]
    async fn ids_that_are_not_uuids_are_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::filesystem(dir.path());
        let repo: RepoName = "a".parse().unwrap();
        assert!(matches!(store.upload_status(&repo, "../../x").await, Err(StoreError::UploadUnknown(_))));
    }
}
