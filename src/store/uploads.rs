//! Upload sessions: the store's one upload interface. Sessions are counted
//! per client address here; how a session keeps its bytes is an
//! `UploadKind`, chosen once per backend: appended files (`upload_files`) or
//! parts under a record on object storage (`upload_parts`). Either way only
//! verified, complete content ever becomes a blob.

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
pub(super) struct Session {
    pub(super) size: u64,
    pub(super) hasher: Option<DigestHasher>,
    /// When a request last touched the session (what `purge` measures).
    pub(super) last_active: Instant,
}

/// A session, and its size as of its last complete chunk: a status read
/// answers from that at once instead of queueing behind a chunk in flight
/// (a stalled PATCH may hold the session for its whole `body_timeout`).
pub(super) struct SessionCell {
    state: tokio::sync::Mutex<Session>,
    committed: std::sync::atomic::AtomicU64,
}

impl SessionCell {
    pub(super) async fn lock(&self) -> tokio::sync::MutexGuard<'_, Session> {
        self.state.lock().await
    }

    pub(super) fn committed(&self) -> u64 {
        self.committed.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(super) fn commit(&self, s: &Session) {
        self.committed.store(s.size, std::sync::atomic::Ordering::Release);
    }
}

pub(super) type SessionRef = Arc<SessionCell>;

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

    pub(super) fn get(&self, repo: &RepoName, id: &str) -> Option<SessionRef> {
        self.table.lock().unwrap().entries.get(&(repo.clone(), id.to_string())).map(|e| e.session.clone())
    }

    /// Registers a session; refused when `owner` holds its cap already.
    pub(super) fn insert(
        &self,
        repo: &RepoName,
        id: &str,
        owner: Option<IpAddr>,
        s: Session,
    ) -> StoreResult<SessionRef> {
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
    pub(super) fn idle(&self, max_age: Duration) -> Vec<(RepoName, String)> {
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

    pub(super) fn contains(&self, repo: &RepoName, id: &str) -> bool {
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
pub(super) fn gone(id: &str) -> impl FnOnce(StoreError) -> StoreError + '_ {
    move |e| if e.is_not_found() { StoreError::UploadUnknown(id.to_string()) } else { e }
}

/// A request body, as an upload reads it.
pub(super) type Body<'a> = futures::stream::LocalBoxStream<'a, Result<Bytes, BodyError>>;

/// How upload sessions keep their bytes: one implementation per kind of
/// backend, chosen once when the store is made (`UploadKind::for_backend`):
/// files appended in place (`upload_files`) or parts under a record on object
/// storage (`upload_parts`). The store's upload methods call only this.
#[async_trait::async_trait(?Send)]
pub(super) trait UploadKind: Send + Sync {
    /// Makes a new session's storage (its directory exists).
    async fn create(&self, store: &Store, repo: &RepoName, id: &str) -> StoreResult<()>;
    /// Bytes the session holds; `UploadUnknown` when there is none.
    async fn size(&self, store: &Store, repo: &RepoName, id: &str) -> StoreResult<u64>;
    /// Appends a chunk (see `Store::append_upload`); returns the new size.
    async fn append(
        &self,
        store: &Store,
        repo: &RepoName,
        id: &str,
        start: Option<u64>,
        declared: Option<u64>,
        body: Body<'_>,
    ) -> StoreResult<u64>;
    /// Appends the last chunk, verifies, and makes the blob (see `Store::finish_upload`).
    async fn finish(
        &self,
        store: &Store,
        repo: &RepoName,
        id: &str,
        start: Option<u64>,
        body: Body<'_>,
        expected: &Digest,
    ) -> StoreResult<u64>;
    /// Sessions this process measures in memory that sat idle past `max_age`.
    fn idle(&self, sessions: &Sessions, max_age: Duration) -> Vec<(RepoName, String)>;
    /// Whether this process measures the session in memory (not by its storage).
    fn held_here(&self, sessions: &Sessions, repo: &RepoName, id: &str) -> bool;
}

/// The implementation for `backend`.
pub(super) fn kind_for(backend: &dyn super::Backend) -> Box<dyn UploadKind> {
    if backend.appends() {
        Box::new(super::upload_files::FileUploads)
    } else {
        Box::new(super::upload_parts::PartUploads)
    }
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
            self.upload_kind.create(self, repo, &id).await
        }
        .await;
        if let Err(e) = created {
            self.uploads.remove(repo, &id);
            let _ = self.backend.delete(&layout::upload_dir(repo, &id)).await;
            return Err(e);
        }
        Ok(UploadStatus { id, size: 0 })
    }

    /// Where the upload stands.
    pub async fn upload_status(&self, repo: &RepoName, id: &str) -> StoreResult<UploadStatus> {
        let size = self.upload_kind.size(self, repo, &checked(id)?).await?;
        Ok(UploadStatus { id: id.to_string(), size })
    }

    /// Appends a chunk. `start` (from `Content-Range`) must equal the bytes
    /// held; `declared` (its length) must equal what arrives. On any failure
    /// the upload is put back exactly as it was before the chunk.
    pub async fn append_upload<'a, S>(
        &self,
        repo: &RepoName,
        id: &str,
        start: Option<u64>,
        declared: Option<u64>,
        body: S,
    ) -> StoreResult<UploadStatus>
    where
        S: Stream<Item = Result<Bytes, BodyError>> + 'a,
    {
        let size = self.upload_kind.append(self, repo, &checked(id)?, start, declared, Box::pin(body)).await?;
        Ok(UploadStatus { id: id.to_string(), size })
    }

    /// Appends the final chunk (may be empty), verifies the digest, and
    /// commits the blob into the store and links it into `repo`. On a digest
    /// mismatch the upload is discarded.
    pub async fn finish_upload<'a, S>(
        &self,
        repo: &RepoName,
        id: &str,
        start: Option<u64>,
        body: S,
        expected: &Digest,
    ) -> StoreResult<u64>
    where
        S: Stream<Item = Result<Bytes, BodyError>> + 'a,
    {
        let id = checked(id)?;
        let size = self.upload_kind.finish(self, repo, &id, start, Box::pin(body), expected).await?;
        self.uploads.remove(repo, &id);
        Ok(size)
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
        self.upload_kind.size(self, repo, &checked(id)?).await?;
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
        let idle = self.upload_kind.idle(&self.uploads, max_age);
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
                let held_here = || self.upload_kind.held_here(&self.uploads, &repo, &id);
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
