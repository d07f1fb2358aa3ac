//! Upload sessions on backends that append in place (a local directory):
//! bytes are appended to `_uploads/<id>/data` and hashed as they arrive, the
//! running hash kept in memory (`uploads::Sessions`); on finish the digest is
//! checked, the file synced and renamed into `blobs/`, so only verified,
//! complete content ever becomes a blob.

use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::oci::{Algorithm, Digest, RepoName};

use super::error::{StoreError, StoreResult};
use super::uploads::{gone, pump, Body, Session, SessionRef, Sessions, UploadKind};
use super::{layout, Store};

/// Appended upload files (see the module comment).
pub(super) struct FileUploads;

#[async_trait::async_trait(?Send)]
impl UploadKind for FileUploads {
    async fn create(&self, store: &Store, repo: &RepoName, id: &str) -> StoreResult<()> {
        store.backend.appender(&layout::upload_data(repo, id), 0).await?.sync().await
    }

    async fn size(&self, store: &Store, repo: &RepoName, id: &str) -> StoreResult<u64> {
        Ok(session(store, repo, id).await?.committed())
    }

    async fn append(
        &self,
        store: &Store,
        repo: &RepoName,
        id: &str,
        start: Option<u64>,
        declared: Option<u64>,
        body: Body<'_>,
    ) -> StoreResult<u64> {
        let cell = session(store, repo, id).await?;
        let mut s = cell.lock().await;
        s.last_active = Instant::now();
        if let Some(start) = start {
            if start != s.size {
                return Err(StoreError::ChunkOutOfOrder { start, size: s.size });
            }
        }
        let path = layout::upload_data(repo, id);
        let mut hasher = s.hasher.clone();
        let mut w = store.backend.appender(&path, s.size).await.map_err(gone(id))?;
        let room = store.max_blob_size.saturating_sub(s.size);
        let write = async |chunk| w.write(chunk).await;
        let written = pump(write, &mut hasher, body, room, store.max_blob_size).await.and_then(|n| match declared {
            Some(d) if d != n => Err(StoreError::SizeMismatch { expected: d, actual: n }),
            _ => Ok(n),
        });
        match written {
            Ok(n) => {
                s.size += n;
                s.hasher = hasher;
                s.last_active = Instant::now();
                cell.commit(&s);
                Ok(s.size)
            }
            Err(e) => {
                drop(w);
                // Roll back to the last good offset so the client can retry the chunk.
                store.backend.appender(&path, s.size).await.map_err(gone(id))?.sync().await?;
                Err(e)
            }
        }
    }

    async fn finish(
        &self,
        store: &Store,
        repo: &RepoName,
        id: &str,
        start: Option<u64>,
        body: Body<'_>,
        expected: &Digest,
    ) -> StoreResult<u64> {
        {
            // Nothing received yet (POST then one PUT, or monolithic POST): the
            // digest's algorithm is known before the first byte, so hash with it.
            let s = session(store, repo, id).await?;
            let mut s = s.lock().await;
            if s.size == 0 && s.hasher.as_ref().map(|h| h.algorithm()) != Some(expected.algorithm()) {
                s.hasher = Some(expected.algorithm().hasher());
            }
        }
        let size = self.append(store, repo, id, start, None, body).await?;
        let s = session(store, repo, id).await?;
        let mut s = s.lock().await;
        let path = layout::upload_data(repo, id);
        let actual = match s.hasher.take() {
            Some(h) if h.algorithm() == expected.algorithm() => h.finish(),
            // Only for a session resumed from disk, or chunks sent before a
            // non-sha256 digest was named (the protocol names the algorithm at
            // the final PUT): hash the file once here.
            _ => hash_file(store, &path, expected.algorithm()).await?,
        };
        if &actual != expected {
            drop(s);
            store.cancel_upload(repo, id).await?;
            return Err(StoreError::DigestMismatch { expected: expected.clone(), actual });
        }
        store.backend.appender(&path, size).await.map_err(gone(id))?.sync().await?;
        store.promote(repo, id, expected).await?;
        Ok(size)
    }

    fn idle(&self, sessions: &Sessions, max_age: Duration) -> Vec<(RepoName, String)> {
        sessions.idle(max_age)
    }

    fn held_here(&self, sessions: &Sessions, repo: &RepoName, id: &str) -> bool {
        sessions.contains(repo, id)
    }
}

/// The session `id` of `repo`: in memory, or found on disk (after a restart,
/// or started by registry:2), its hash then computed from the file at finish.
async fn session(store: &Store, repo: &RepoName, id: &str) -> StoreResult<SessionRef> {
    if let Some(s) = store.uploads.get(repo, id) {
        return Ok(s);
    }
    let size = store
        .backend
        .stat(&layout::upload_data(repo, id))
        .await?
        .ok_or_else(|| StoreError::UploadUnknown(id.to_string()))?;
    let hasher = (size == 0).then(|| Algorithm::Sha256.hasher());
    store.uploads.insert(repo, id, None, Session { size, hasher, last_active: Instant::now() })
}

async fn hash_file(store: &Store, path: &str, algorithm: Algorithm) -> StoreResult<Digest> {
    let mut h = algorithm.hasher();
    let mut r = store.backend.reader(path, 0, None).await.map_err(gone(path))?;
    while let Some(chunk) = r.next().await {
        h.update(&chunk.map_err(StoreError::io(path))?);
    }
    Ok(h.finish())
}
