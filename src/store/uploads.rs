//! Upload sessions. Bytes are appended to `_uploads/<id>/data` and hashed as
//! they arrive; on finish the digest is checked, the file synced and renamed
//! into `blobs/`, so only verified, complete content ever becomes a blob.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::oci::{Algorithm, Digest, DigestHasher, RepoName};

use super::error::{BodyError, StoreError, StoreResult};
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
    /// When a request last touched the session (what `purge` measures).
    last_active: Instant,
}

/// A session, and its size as of its last complete chunk: a status read
/// answers from that at once instead of queueing behind a chunk in flight
/// (a stalled PATCH may hold the session for its whole `body_timeout`).
struct SessionCell {
    state: tokio::sync::Mutex<Session>,
    committed: std::sync::atomic::AtomicU64,
}

impl SessionCell {
    async fn lock(&self) -> tokio::sync::MutexGuard<'_, Session> {
        self.state.lock().await
    }

    fn committed(&self) -> u64 {
        self.committed.load(std::sync::atomic::Ordering::Acquire)
    }

    fn commit(&self, s: &Session) {
        self.committed.store(s.size, std::sync::atomic::Ordering::Release);
    }
}

type SessionRef = Arc<SessionCell>;

struct Entry {
    /// The client address that opened the session (counted against its cap);
    /// `None` for sessions found on disk.
    owner: Option<IpAddr>,
    session: SessionRef,
}

#[derive(Default)]
struct Table {
    entries: HashMap<(RepoName, String), Entry>,
    per_owner: HashMap<IpAddr, usize>,
}

/// The open upload sessions, and how many each client address holds.
pub(super) struct Sessions {
    table: Mutex<Table>,
    /// Most sessions one client address may hold open at once.
    max_per_client: usize,
}

impl Sessions {
    pub(super) fn new(max_per_client: usize) -> Self {
        Self { table: Mutex::new(Table::default()), max_per_client }
    }

    fn get(&self, repo: &RepoName, id: &str) -> Option<SessionRef> {
        self.table.lock().unwrap().entries.get(&(repo.clone(), id.to_string())).map(|e| e.session.clone())
    }

    /// Registers a session; refused when `owner` holds its cap already.
    fn insert(&self, repo: &RepoName, id: &str, owner: Option<IpAddr>, s: Session) -> StoreResult<SessionRef> {
        let mut t = self.table.lock().unwrap();
        if let Some(e) = t.entries.get(&(repo.clone(), id.to_string())) {
            return Ok(e.session.clone());
        }
        if let Some(ip) = owner {
            let n = t.per_owner.entry(ip).or_default();
            if *n >= self.max_per_client {
                return Err(StoreError::TooManyUploads { limit: self.max_per_client });
            }
            *n += 1;
        }
        let committed = std::sync::atomic::AtomicU64::new(s.size);
        let session = Arc::new(SessionCell { state: tokio::sync::Mutex::new(s), committed });
        t.entries.insert((repo.clone(), id.to_string()), Entry { owner, session: session.clone() });
        Ok(session)
    }

    fn remove(&self, repo: &RepoName, id: &str) {
        let mut t = self.table.lock().unwrap();
        if let Some(Entry { owner: Some(ip), .. }) = t.entries.remove(&(repo.clone(), id.to_string())) {
            if let Some(n) = t.per_owner.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    t.per_owner.remove(&ip);
                }
            }
        }
    }

    /// Sessions idle for longer than `max_age` that no request holds now.
    fn idle(&self, max_age: Duration) -> Vec<(RepoName, String)> {
        let t = self.table.lock().unwrap();
        t.entries
            .iter()
            .filter(|(_, e)| e.session.state.try_lock().is_ok_and(|s| s.last_active.elapsed() > max_age))
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn len(&self) -> usize {
        self.table.lock().unwrap().entries.len()
    }

    fn contains(&self, repo: &RepoName, id: &str) -> bool {
        self.table.lock().unwrap().entries.contains_key(&(repo.clone(), id.to_string()))
    }
}

/// What one purge removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PurgeReport {
    /// Client upload sessions idle longer than the maximum age.
    pub sessions: usize,
    /// Mirror ingests no fetch is writing (cut off by a crash).
    pub ingests: usize,
}

/// Upload ids are UUIDs; anything else cannot name an upload (and never
/// reaches a path).
fn valid_id(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok()
}

/// `id` if it can name an upload, else `UploadUnknown`.
fn checked(id: &str) -> StoreResult<String> {
    if valid_id(id) {
        Ok(id.to_string())
    } else {
        Err(StoreError::UploadUnknown(id.to_string()))
    }
}

/// Request bodies are written in chunks of up to this size (see `batch`).
const WRITE_BATCH: usize = 1024 * 1024;

/// Writes a body through `write` in batches, feeding each to `hasher` while
/// the write runs; returns bytes written. More than `room` bytes is
/// `TooLarge { limit }`.
pub(super) async fn pump<S>(
    mut write: impl AsyncFnMut(Bytes) -> StoreResult<()>,
    hasher: &mut Option<DigestHasher>,
    body: S,
    room: u64,
    limit: u64,
) -> StoreResult<u64>
where
    S: Stream<Item = Result<Bytes, BodyError>>,
{
    let mut body = std::pin::pin!(super::batch::gather(body, WRITE_BATCH));
    let mut n = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        n += chunk.len() as u64;
        if n > room {
            return Err(StoreError::TooLarge { limit });
        }
        let hash = async {
            if let Some(h) = hasher.as_mut() {
                h.update(&chunk);
            }
        };
        futures::join!(write(chunk.clone()), hash).0?;
    }
    Ok(n)
}

/// An upload whose directory is gone (purged, cancelled) is unknown, not an i/o fault.
fn gone(id: &str) -> impl FnOnce(StoreError) -> StoreError + '_ {
    move |e| if e.is_not_found() { StoreError::UploadUnknown(id.to_string()) } else { e }
}

impl Store {
    /// Starts a new upload session in `repo` for the client at `owner`
    /// (refused with `TooManyUploads` when that address holds its cap).
    pub async fn start_upload(&self, repo: &RepoName, owner: Option<IpAddr>) -> StoreResult<UploadStatus> {
        let id = uuid::Uuid::new_v4().to_string();
        let fresh = Session { size: 0, hasher: Some(Algorithm::Sha256.hasher()), last_active: Instant::now() };
        self.uploads.insert(repo, &id, owner, fresh)?;
        let created = async {
            self.create_upload_dir(repo, &id).await?;
            if self.backend.appends() {
                self.backend.appender(&layout::upload_data(repo, &id), 0).await?.sync().await
            } else {
                self.parts_start(repo, &id).await
            }
        }
        .await;
        if let Err(e) = created {
            self.uploads.remove(repo, &id);
            let _ = self.backend.delete(&layout::upload_dir(repo, &id)).await;
            return Err(e);
        }
        Ok(UploadStatus { id, size: 0 })
    }

    async fn session(&self, repo: &RepoName, id: &str) -> StoreResult<SessionRef> {
        checked(id)?;
        if let Some(s) = self.uploads.get(repo, id) {
            return Ok(s);
        }
        let size = self
            .backend
            .stat(&layout::upload_data(repo, id))
            .await?
            .ok_or_else(|| StoreError::UploadUnknown(id.to_string()))?;
        let hasher = (size == 0).then(|| Algorithm::Sha256.hasher());
        self.uploads.insert(repo, id, None, Session { size, hasher, last_active: Instant::now() })
    }

    /// Where the upload stands.
    pub async fn upload_status(&self, repo: &RepoName, id: &str) -> StoreResult<UploadStatus> {
        if !self.backend.appends() {
            let size = self.parts_size(repo, &checked(id)?).await?;
            return Ok(UploadStatus { id: id.to_string(), size });
        }
        let size = self.session(repo, id).await?.committed();
        Ok(UploadStatus { id: id.to_string(), size })
    }

    /// Appends a chunk. `start` (from `Content-Range`) must equal the bytes
    /// held; `declared` (its length) must equal what arrives. On any failure
    /// the upload is put back exactly as it was before the chunk.
    pub async fn append_upload<S>(
        &self,
        repo: &RepoName,
        id: &str,
        start: Option<u64>,
        declared: Option<u64>,
        body: S,
    ) -> StoreResult<UploadStatus>
    where
        S: Stream<Item = Result<Bytes, BodyError>>,
    {
        if !self.backend.appends() {
            let size = self.parts_append(repo, &checked(id)?, start, declared, body, None).await?;
            return Ok(UploadStatus { id: id.to_string(), size });
        }
        let cell = self.session(repo, id).await?;
        let mut s = cell.lock().await;
        s.last_active = Instant::now();
        if let Some(start) = start {
            if start != s.size {
                return Err(StoreError::ChunkOutOfOrder { start, size: s.size });
            }
        }
        let path = layout::upload_data(repo, id);
        let mut hasher = s.hasher.clone();
        let mut w = self.backend.appender(&path, s.size).await.map_err(gone(id))?;
        let room = self.max_blob_size.saturating_sub(s.size);
        let write = async |chunk| w.write(chunk).await;
        let written = pump(write, &mut hasher, body, room, self.max_blob_size).await.and_then(|n| match declared {
            Some(d) if d != n => Err(StoreError::SizeMismatch { expected: d, actual: n }),
            _ => Ok(n),
        });
        match written {
            Ok(n) => {
                s.size += n;
                s.hasher = hasher;
                s.last_active = Instant::now();
                cell.commit(&s);
                Ok(UploadStatus { id: id.to_string(), size: s.size })
            }
            Err(e) => {
                drop(w);
                // Roll back to the last good offset so the client can retry the chunk.
                self.backend.appender(&path, s.size).await.map_err(gone(id))?.sync().await?;
                Err(e)
            }
        }
    }

    /// Appends the final chunk (may be empty), verifies the digest, and
    /// commits the blob into the store and links it into `repo`. On a digest
    /// mismatch the upload is discarded.
    pub async fn finish_upload<S>(
        &self,
        repo: &RepoName,
        id: &str,
        start: Option<u64>,
        body: S,
        expected: &Digest,
    ) -> StoreResult<u64>
    where
        S: Stream<Item = Result<Bytes, BodyError>>,
    {
        if !self.backend.appends() {
            let id = checked(id)?;
            let size = match self.parts_finish_whole(repo, &id, start, body, expected).await? {
                Ok(size) => size,
                Err(body) => {
                    self.parts_append(repo, &id, start, None, body, Some(expected.algorithm())).await?;
                    self.parts_finish(repo, &id, expected).await?
                }
            };
            self.uploads.remove(repo, &id);
            return Ok(size);
        }
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
        self.backend.appender(&path, status.size).await.map_err(gone(id))?.sync().await?;
        self.promote(repo, id, expected).await?;
        drop(s);
        self.uploads.remove(repo, id);
        Ok(status.size)
    }

    /// Moves a verified, synced upload file into `blobs/`, links it into
    /// `repo` and removes the upload directory.
    /// The blob is leased throughout: no deletion runs between finding the
    /// data in place (another copy was there) and the link that keeps it.
    pub(super) async fn promote(&self, repo: &RepoName, id: &str, d: &Digest) -> StoreResult<()> {
        let _lease = self.lease(d).await;
        self.backend.move_into(&layout::upload_data(repo, id), &layout::blob_data(d)).await?;
        let size = self.blob_size(d).await?.ok_or_else(|| StoreError::BlobUnknown(d.clone()))?;
        self.link_blob_held(repo, d, size).await?;
        self.backend.delete(&layout::upload_dir(repo, id)).await
    }

    /// Creates an upload directory registry:2 would recognise (and purge if
    /// abandoned).
    pub(super) async fn create_upload_dir(&self, repo: &RepoName, id: &str) -> StoreResult<()> {
        let started = humantime::format_rfc3339(SystemTime::now()).to_string();
        self.backend.put(&layout::upload_started_at(repo, id), Bytes::from(started)).await
    }

    /// Upload sessions open now (those this process has seen).
    pub fn open_uploads(&self) -> usize {
        self.uploads.len()
    }

    /// Discards an upload and its bytes.
    pub async fn cancel_upload(&self, repo: &RepoName, id: &str) -> StoreResult<()> {
        if self.backend.appends() {
            self.session(repo, id).await?;
        } else {
            self.parts_size(repo, &checked(id)?).await?;
        }
        self.uploads.remove(repo, id);
        self.backend.delete(&layout::upload_dir(repo, id)).await
    }

    /// Removes upload sessions idle for longer than `max_age` (in memory, or
    /// on disk by their last write: sessions from before a restart, or
    /// registry:2's), and mirror ingests that no fetch is writing. Sessions a
    /// request holds right now are left alone.
    pub async fn purge_uploads(&self, max_age: Duration) -> StoreResult<PurgeReport> {
        let mut report = PurgeReport::default();
        // One directory that cannot be removed (a permission, an i/o error) does not stop the rest.
        let remove = |dir: String| async move {
            match self.backend.delete(&dir).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(dir, error = %e, "could not purge an upload");
                    false
                }
            }
        };
        // Sessions whose state is in the bucket are measured by their record (below).
        let idle = if self.backend.appends() { self.uploads.idle(max_age) } else { vec![] };
        for (repo, id) in idle {
            self.uploads.remove(&repo, &id);
            report.sessions += usize::from(remove(layout::upload_dir(&repo, &id)).await);
        }
        let cutoff = SystemTime::now().checked_sub(max_age).unwrap_or(SystemTime::UNIX_EPOCH);
        for (repo, ids) in self.upload_dirs().await? {
            let mirrored = repo.as_str().starts_with(layout::MIRROR_DIR);
            for id in ids {
                let dir = layout::upload_dir(&repo, &id);
                if mirrored {
                    // Mirror fetches once wrote here (they now write beside the
                    // tree): what is left is a crashed fetch's.
                    report.ingests += usize::from(remove(dir).await);
                    continue;
                }
                // A session this process holds in memory is measured above; one whose
                // state is in a shared bucket by its record (every replica's chunks count).
                let held_here = || self.backend.appends() && self.uploads.contains(&repo, &id);
                if !valid_id(&id) || held_here() {
                    continue;
                }
                let last = self.upload_last_write(&repo, &id).await?;
                // Looked at again: a request may have resumed the session meanwhile.
                if last.is_some_and(|t| t < cutoff) && !held_here() {
                    self.uploads.remove(&repo, &id);
                    report.sessions += usize::from(remove(dir).await);
                }
            }
        }
        Ok(report)
    }

    /// When an upload last took bytes: its data file, its record (bucket
    /// sessions), or else its directory.
    async fn upload_last_write(&self, repo: &RepoName, id: &str) -> StoreResult<Option<SystemTime>> {
        if let Some(t) = self.backend.modified(&layout::upload_data(repo, id)).await? {
            return Ok(Some(t));
        }
        if let Some(t) = self.parts_modified(repo, id).await? {
            return Ok(Some(t));
        }
        self.backend.modified(&layout::upload_dir(repo, id)).await
    }

    /// Every repository (pushed and mirrored) with upload directories, and their ids.
    async fn upload_dirs(&self) -> StoreResult<Vec<(RepoName, Vec<String>)>> {
        let root = layout::repositories_root();
        let mut found = Vec::new();
        let mut pending = vec![String::new()];
        while let Some(name) = pending.pop() {
            let dir = if name.is_empty() { root.clone() } else { format!("{root}/{name}") };
            for child in self.backend.list(&dir).await? {
                let nested = if name.is_empty() { child.clone() } else { format!("{name}/{child}") };
                if child == "_uploads" && !name.is_empty() {
                    let repo = RepoName::storage(name.clone());
                    found.push((repo.clone(), self.backend.list(&layout::uploads_dir(&repo)).await?));
                } else if !child.starts_with('_') || (name.is_empty() && child == layout::MIRROR_DIR) {
                    pending.push(nested);
                }
            }
        }
        Ok(found)
    }

    async fn hash_file(&self, path: &str, algorithm: Algorithm) -> StoreResult<Digest> {
        let mut h = algorithm.hasher();
        let mut r = self.backend.reader(path, 0, None).await.map_err(gone(path))?;
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

    fn body(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, BodyError>> {
        stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p))).collect::<Vec<_>>())
    }

    #[tokio::test]
    async fn chunked_upload_commits_verified_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::filesystem(dir.path()).unwrap();
        let repo: RepoName = "a/b".parse().unwrap();
        let up = store.start_upload(&repo, None).await.unwrap();
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
        let store = Store::filesystem(dir.path()).unwrap();
        let repo: RepoName = "a".parse().unwrap();
        let up = store.start_upload(&repo, None).await.unwrap();
        let wrong = Digest::sha256_of(b"other");
        let err = store.finish_upload(&repo, &up.id, None, body(&[b"data"]), &wrong).await.unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }));
        assert_eq!(store.blob_size(&wrong).await.unwrap(), None);
        assert_eq!(store.blob_size(&Digest::sha256_of(b"data")).await.unwrap(), None);
    }

    #[tokio::test]
    async fn short_chunk_rolls_back_and_sha512_and_resume_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::filesystem(dir.path()).unwrap();
        let repo: RepoName = "a".parse().unwrap();
        let up = store.start_upload(&repo, None).await.unwrap();
        store.append_upload(&repo, &up.id, Some(0), None, body(&[b"abc"])).await.unwrap();
        let err = store.append_upload(&repo, &up.id, Some(3), Some(10), body(&[b"xyz"])).await.unwrap_err();
        assert!(matches!(err, StoreError::SizeMismatch { expected: 10, actual: 3 }));
        assert_eq!(store.upload_status(&repo, &up.id).await.unwrap().size, 3);
        // A fresh Store over the same directory finds the session on disk.
        drop(store);
        let store = Store::filesystem(dir.path()).unwrap();
        let d = Digest::of(Algorithm::Sha512, b"abcdef");
        store.finish_upload(&repo, &up.id, None, body(&[b"def"]), &d).await.unwrap();
        assert_eq!(store.linked_blob_size(&repo, &d).await.unwrap(), Some(6));
    }

    #[tokio::test]
    async fn each_client_address_has_a_cap_on_open_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let index = super::super::index::Index::open(&super::super::index_path(dir.path())).unwrap();
        let store = Store::new(std::sync::Arc::new(super::super::fs::FsBackend::new(dir.path())), index, 2);
        let repo: RepoName = "a".parse().unwrap();
        let (me, other): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = store.start_upload(&repo, Some(me)).await.unwrap();
        store.start_upload(&repo, Some(me)).await.unwrap();
        let err = store.start_upload(&repo, Some(me)).await.unwrap_err();
        assert!(matches!(err, StoreError::TooManyUploads { limit: 2 }));
        store.start_upload(&repo, Some(other)).await.unwrap();
        // Finishing or cancelling a session frees its place.
        store.cancel_upload(&repo, &first.id).await.unwrap();
        store.start_upload(&repo, Some(me)).await.unwrap();
        let uploads = dir.path().join(layout::uploads_dir(&repo));
        assert_eq!(std::fs::read_dir(uploads).unwrap().count(), 3, "a refused session leaves no directory");
    }

    #[tokio::test]
    async fn idle_sessions_and_dead_ingests_are_purged() {
        let dir = tempfile::tempdir().unwrap();
        let repo: RepoName = "team/app".parse().unwrap();
        // A session from before a restart: on disk only, last written an hour ago.
        let old = Store::filesystem(dir.path()).unwrap().start_upload(&repo, None).await.unwrap();
        let store = Store::filesystem(dir.path()).unwrap();
        let idle = store.start_upload(&repo, None).await.unwrap();
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        let data = dir.path().join(layout::upload_data(&repo, &old.id));
        std::fs::File::options().write(true).open(&data).unwrap().set_modified(hour_ago).unwrap();
        // A mirror ingest cut off by a crash, and one being written now.
        let mirrored = layout::mirror_repository("docker.io", "library/x");
        std::fs::create_dir_all(dir.path().join(layout::upload_dir(&mirrored, "dead"))).unwrap();
        let x = Digest::sha256_of(b"x");
        let (mut live, _) = store.begin_ingest(&mirrored, &x).await.unwrap();
        live.write(Bytes::from_static(b"x")).await.unwrap();

        let report = store.purge_uploads(Duration::from_secs(60)).await.unwrap();
        assert_eq!(report, PurgeReport { sessions: 1, ingests: 1 });
        assert!(!data.exists());
        assert_eq!(store.upload_status(&repo, &idle.id).await.unwrap().size, 0, "active within max_age: kept");
        let left = std::fs::read_dir(dir.path().join(layout::uploads_dir(&mirrored))).unwrap().count();
        assert_eq!(left, 0, "the dead ingest is removed");
        // A live ingest writes beside the tree, where no purge looks: it commits after the purge.
        store.commit_ingest(live.verify(&x, Some(1)).map_err(|(_, e)| e).unwrap()).await.unwrap();
        assert_eq!(store.linked_blob_size(&mirrored, &x).await.unwrap(), Some(1));

        // Past max_age, the in-memory session goes too.
        let report = store.purge_uploads(Duration::ZERO).await.unwrap();
        assert_eq!(report.sessions, 1);
        assert!(matches!(store.upload_status(&repo, &idle.id).await, Err(StoreError::UploadUnknown(_))));
    }

    #[tokio::test]
    async fn ids_that_are_not_uuids_are_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::filesystem(dir.path()).unwrap();
        let repo: RepoName = "a".parse().unwrap();
        assert!(matches!(store.upload_status(&repo, "../../x").await, Err(StoreError::UploadUnknown(_))));
    }
}
