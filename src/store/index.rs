//! berth's bookkeeping beside the registry:2 tree, in one redb file
//! (`<root>/.berth/index.redb`; redb: a pure-Rust embedded store with ACID
//! transactions over copy-on-write B-trees, crash-safe without a journal of
//! our own). It answers what the tree can only answer by a scan:
//!
//! - which repositories link each blob (`_layers` links as `L:<repo>`,
//!   manifest revisions as `M:<repo>`), so "is this blob used by pushed
//!   content" is a lookup;
//! - each blob's size, for the mirror's share of the disk;
//! - when each mirrored tag, manifest and blob was last served.
//!
//! The tree stays the truth. A reference is added before its link is
//! written and removed after its link is deleted, so after a crash the index
//! can only over-count (a blob kept a little longer), never under-count (a
//! blob deleted while a link still needs it). A data directory without an
//! index (registry:2's, or one from before this file) is indexed in the
//! background while the server serves; until then nothing is evicted.
//!
//! Calls block on disk: the `Store` runs them on the blocking pool.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use redb::{Database, MultimapTableDefinition, ReadableDatabase, ReadableTable, TableDefinition};

use crate::oci::{Digest, Edges, RepoName};

use super::error::{StoreError, StoreResult};

/// Blob digest → `L:<repo>` (a layer link) or `M:<repo>` (a manifest revision).
const REFS: MultimapTableDefinition<&str, &str> = MultimapTableDefinition::new("refs");
/// Blob digest → size in bytes.
const SIZES: TableDefinition<&str, u64> = TableDefinition::new("sizes");
/// `<kind>\t<repo>\t<key>` → unix seconds of the last use (kinds: `t` tag, `m` manifest, `b` blob).
const USES: TableDefinition<&str, u64> = TableDefinition::new("uses");
/// Blob digest → unix seconds: unlinked blobs whose data a deletion could
/// not claim (an operation held a lease). Each pass retries them, so data a
/// lease protected once is not left behind for good.
const DEFERRED: TableDefinition<&str, u64> = TableDefinition::new("deferred");
/// Manifest digest → what it references (`oci::Edges`, encoded): a pure
/// function of the manifest's bytes, so it is never stale; GC marks from it
/// instead of reading every manifest. Written when a manifest is stored, or
/// when a GC first reads one; dropped with the manifest's data.
const EDGES: TableDefinition<&str, &[u8]> = TableDefinition::new("edges");
/// Facts about the index itself.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// `META` key set once the tree has been indexed completely (value: format version).
const INDEXED: &str = "indexed";
const FORMAT: u64 = 1;

/// How a repository uses a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    /// A `_layers` link: the blob is readable in the repository.
    Layer,
    /// A `_manifests/revisions` link: the blob is a manifest of the repository.
    Manifest,
}

impl RefKind {
    fn value(self, repo: &RepoName) -> String {
        match self {
            RefKind::Layer => format!("L:{repo}"),
            RefKind::Manifest => format!("M:{repo}"),
        }
    }
}

/// What a mirrored use is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UseKind {
    Tag,
    Manifest,
    Blob,
}

impl UseKind {
    pub fn letter(self) -> char {
        match self {
            UseKind::Tag => 't',
            UseKind::Manifest => 'm',
            UseKind::Blob => 'b',
        }
    }
}

/// The key a use is recorded under.
pub fn use_key(kind: UseKind, repo: &RepoName, key: &str) -> String {
    format!("{}\t{repo}\t{key}", kind.letter())
}

fn use_prefix(kind: UseKind, repo: &RepoName) -> String {
    format!("{}\t{repo}\t", kind.letter())
}

/// One blob's references, as the index has them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlobRefs {
    /// Repositories of pushed content that link it (layer or manifest).
    pub pushed: Vec<String>,
    /// Mirrored repositories (`_mirror/…`) that link it.
    pub mirrored: Vec<String>,
}

impl BlobRefs {
    pub fn is_empty(&self) -> bool {
        self.pushed.is_empty() && self.mirrored.is_empty()
    }

    /// Adds a `REFS` value (`L:<repo>` or `M:<repo>`).
    fn add(&mut self, value: &str) {
        let repo = value.split_once(':').map_or("", |(_, r)| r).to_string();
        if repo.starts_with(super::layout::MIRROR_DIR) {
            self.mirrored.push(repo);
        } else {
            self.pushed.push(repo);
        }
    }
}

pub struct Index {
    path: PathBuf,
    /// `None` after an i/o error: redb must be reopened before it is used again.
    db: Mutex<Option<Database>>,
    /// Bumped after every write that takes references away or replaces them
    /// wholesale (never by `add_ref`/`add_manifest`): a running count of what
    /// the references add up to (a quota's use) stays right while this stays
    /// the same, and is counted again from the index when it moves.
    rewrites: AtomicU64,
}

fn index_error(e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::Io(source) => StoreError::Io { path: "index".into(), source },
        other => StoreError::Index(other.to_string()),
    }
}

impl Index {
    /// Opens (or creates) the index at `path`. Another process holding it
    /// (a second berth on the same data directory) is an error; a process
    /// that is just stopping is waited for briefly.
    pub fn open(path: &Path) -> StoreResult<Index> {
        Self::open_waiting(path, Duration::from_secs(3))
    }

    /// As `open`, waiting at most `wait` for another holder to let go.
    pub fn open_waiting(path: &Path, wait: Duration) -> StoreResult<Index> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(StoreError::io(dir.display().to_string()))?;
        }
        let db = Self::open_db(path, wait)?;
        Ok(Index { path: path.to_path_buf(), db: Mutex::new(Some(db)), rewrites: AtomicU64::new(0) })
    }

    fn open_db(path: &Path, wait: Duration) -> StoreResult<Database> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            match Database::create(path) {
                Ok(db) => return Ok(db),
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                    return Err(StoreError::InUse(path.display().to_string()))
                }
                Err(e) => return Err(index_error(e)),
            }
        }
    }

    /// Runs `op` on the database, reopening it first if an earlier i/o
    /// error (a full disk) closed it.
    fn with<T>(&self, op: impl FnOnce(&Database) -> Result<T, redb::Error>) -> StoreResult<T> {
        let mut guard = self.db.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(Self::open_db(&self.path, Duration::from_secs(3))?);
        }
        let result = op(guard.as_ref().expect("opened above"));
        if let Err(redb::Error::Io(_) | redb::Error::PreviousIo) = &result {
            *guard = None;
        }
        result.map_err(index_error)
    }

    /// `with` for a write that takes references away or replaces them: bumps
    /// `rewrites` after it (failed or not: a count taken meanwhile is redone).
    fn rewrite<T>(&self, op: impl FnOnce(&Database) -> Result<T, redb::Error>) -> StoreResult<T> {
        let result = self.with(op);
        self.rewrites.fetch_add(1, Ordering::SeqCst);
        result
    }

    /// How many writes took references away or replaced them so far (read
    /// before a count of the index: a count is current while this is unchanged).
    pub fn rewrites(&self) -> u64 {
        self.rewrites.load(Ordering::SeqCst)
    }

    /// Records that `repo` links `d` (before the link is written).
    pub fn add_ref(&self, d: &Digest, kind: RefKind, repo: &RepoName, size: Option<u64>) -> StoreResult<()> {
        let (key, value) = (d.to_string(), kind.value(repo));
        self.with(|db| {
            let txn = db.begin_write()?;
            txn.open_multimap_table(REFS)?.insert(key.as_str(), value.as_str())?;
            if let Some(size) = size {
                txn.open_table(SIZES)?.insert(key.as_str(), size)?;
            }
            txn.commit()?;
            Ok(())
        })
    }

    /// Records that `repo` has manifest `d` (before its revision link is
    /// written), with what it references.
    /// A manifest pushed again (a tag moved back, a re-push) is already
    /// recorded: no write, so no fsync and no page a full disk cannot give.
    pub fn add_manifest(&self, d: &Digest, repo: &RepoName, size: u64, edges: &Edges) -> StoreResult<()> {
        let (key, value, edges) = (d.to_string(), RefKind::Manifest.value(repo), edges.encode());
        self.with(|db| {
            let read = db.begin_read()?;
            let recorded = match (readable_multimap(&read, REFS)?, readable(&read, EDGES)?) {
                (Some(refs), Some(known)) => {
                    refs.get(key.as_str())?.any(|v| v.is_ok_and(|v| v.value() == value))
                        && known.get(key.as_str())?.is_some()
                }
                _ => false,
            };
            if recorded {
                return Ok(());
            }
            drop(read);
            let txn = db.begin_write()?;
            txn.open_multimap_table(REFS)?.insert(key.as_str(), value.as_str())?;
            txn.open_table(SIZES)?.insert(key.as_str(), size)?;
            txn.open_table(EDGES)?.insert(key.as_str(), edges.as_slice())?;
            txn.commit()?;
            Ok(())
        })
    }

    /// What each of `ds` references, where known, in one read.
    pub fn edges_many(&self, ds: &[Digest]) -> StoreResult<Vec<Option<Edges>>> {
        self.with(|db| {
            let txn = db.begin_read()?;
            let Some(table) = readable(&txn, EDGES)? else { return Ok(vec![None; ds.len()]) };
            let mut out = Vec::with_capacity(ds.len());
            for d in ds {
                out.push(table.get(d.to_string().as_str())?.and_then(|v| Edges::decode(v.value())));
            }
            Ok(out)
        })
    }

    /// Records what manifests reference (learnt by reading them), in one transaction.
    pub fn record_edges(&self, found: &[(Digest, Edges)]) -> StoreResult<()> {
        if found.is_empty() {
            return Ok(());
        }
        self.with(|db| {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(EDGES)?;
                for (d, edges) in found {
                    table.insert(d.to_string().as_str(), edges.encode().as_slice())?;
                }
            }
            txn.commit()?;
            Ok(())
        })
    }

    /// Records that `repo` no longer links `d` (after the link was deleted).
    pub fn remove_ref(&self, d: &Digest, kind: RefKind, repo: &RepoName) -> StoreResult<()> {
        let (key, value) = (d.to_string(), kind.value(repo));
        self.rewrite(|db| {
            let txn = db.begin_write()?;
            txn.open_multimap_table(REFS)?.remove(key.as_str(), value.as_str())?;
            txn.commit()?;
            Ok(())
        })
    }

    /// Records that links were deleted, in one transaction.
    pub fn remove_refs(&self, gone: &[(Digest, RefKind, RepoName)]) -> StoreResult<()> {
        if gone.is_empty() {
            return Ok(());
        }
        self.rewrite(|db| {
            let txn = db.begin_write()?;
            {
                let mut refs = txn.open_multimap_table(REFS)?;
                for (d, kind, repo) in gone {
                    refs.remove(d.to_string().as_str(), kind.value(repo).as_str())?;
                }
            }
            txn.commit()?;
            Ok(())
        })
    }

    /// The references of several blobs, in one read.
    pub fn refs_many(&self, ds: &[Digest]) -> StoreResult<Vec<BlobRefs>> {
        self.with(|db| {
            let txn = db.begin_read()?;
            let Some(table) = readable_multimap(&txn, REFS)? else { return Ok(vec![BlobRefs::default(); ds.len()]) };
            let mut out = Vec::with_capacity(ds.len());
            for d in ds {
                let mut refs = BlobRefs::default();
                for value in table.get(d.to_string().as_str())? {
                    refs.add(value?.value());
                }
                out.push(refs);
            }
            Ok(out)
        })
    }

    /// Every repository that links `d`.
    pub fn refs(&self, d: &Digest) -> StoreResult<BlobRefs> {
        let key = d.to_string();
        self.with(|db| {
            let txn = db.begin_read()?;
            let Some(table) = readable_multimap(&txn, REFS)? else { return Ok(BlobRefs::default()) };
            let mut refs = BlobRefs::default();
            for value in table.get(key.as_str())? {
                refs.add(value?.value());
            }
            Ok(refs)
        })
    }

    /// The size recorded for `d`.
    pub fn size(&self, d: &Digest) -> StoreResult<Option<u64>> {
        let key = d.to_string();
        self.with(|db| {
            let txn = db.begin_read()?;
            let Some(table) = readable(&txn, SIZES)? else { return Ok(None) };
            Ok(table.get(key.as_str())?.map(|v| v.value()))
        })
    }

    /// Forgets a blob whose data is about to be deleted.
    pub fn forget_blob(&self, d: &Digest) -> StoreResult<()> {
        self.forget_blobs(std::slice::from_ref(d))
    }

    /// Forgets blobs whose data is about to be deleted, in one transaction.
    pub fn forget_blobs(&self, ds: &[Digest]) -> StoreResult<()> {
        if ds.is_empty() {
            return Ok(());
        }
        self.rewrite(|db| {
            let txn = db.begin_write()?;
            {
                let mut refs = txn.open_multimap_table(REFS)?;
                let mut sizes = txn.open_table(SIZES)?;
                let mut deferred = txn.open_table(DEFERRED)?;
                let mut edges = txn.open_table(EDGES)?;
                for d in ds {
                    let key = d.to_string();
                    refs.remove_all(key.as_str())?;
                    sizes.remove(key.as_str())?;
                    deferred.remove(key.as_str())?;
                    edges.remove(key.as_str())?;
                }
            }
            txn.commit()?;
            Ok(())
        })
    }

    /// Every blob with its size and whether only mirrored repositories link
    /// it (what counts against `mirror.max_size`).
    pub fn blobs(&self) -> StoreResult<Vec<(Digest, u64, BlobRefs)>> {
        self.with(|db| {
            let txn = db.begin_read()?;
            let (sizes, refs) = match (txn.open_table(SIZES), txn.open_multimap_table(REFS)) {
                (Ok(s), Ok(r)) => (s, r),
                _ => return Ok(vec![]),
            };
            let mut out = Vec::new();
            for entry in sizes.iter()? {
                let (k, v) = entry?;
                let Ok(d) = k.value().parse::<Digest>() else { continue };
                let mut blob = BlobRefs::default();
                for value in refs.get(k.value())? {
                    blob.add(value?.value());
                }
                out.push((d, v.value(), blob));
            }
            Ok(out)
        })
    }

    /// Every reference: (blob, kind, repository).
    pub fn all_refs(&self) -> StoreResult<Vec<(Digest, RefKind, RepoName)>> {
        self.with(|db| {
            let txn = db.begin_read()?;
            let Some(table) = readable_multimap(&txn, REFS)? else { return Ok(vec![]) };
            let mut out = Vec::new();
            for entry in table.range::<&str>(..)? {
                let (k, values) = entry?;
                let Ok(d) = k.value().parse::<Digest>() else { continue };
                for v in values {
                    let v = v?;
                    let (kind, repo) = match v.value().split_once(':') {
                        Some(("L", r)) => (RefKind::Layer, r),
                        Some(("M", r)) => (RefKind::Manifest, r),
                        _ => continue,
                    };
                    out.push((d.clone(), kind, RepoName::storage(repo.to_string())));
                }
            }
            Ok(out)
        })
    }

    /// Records uses (key from `use_key`, unix seconds) in one transaction.
    pub fn record_uses(&self, uses: &[(String, u64)]) -> StoreResult<()> {
        if uses.is_empty() {
            return Ok(());
        }
        self.with(|db| {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(USES)?;
                for (key, at) in uses {
                    let newer = table.get(key.as_str())?.is_none_or(|old| old.value() < *at);
                    if newer {
                        table.insert(key.as_str(), *at)?;
                    }
                }
            }
            txn.commit()?;
            Ok(())
        })
    }

    /// The last uses of `kind` in `repo`: key → unix seconds.
    pub fn uses(&self, kind: UseKind, repo: &RepoName) -> StoreResult<Vec<(String, u64)>> {
        let prefix = use_prefix(kind, repo);
        self.with(|db| {
            let txn = db.begin_read()?;
            let Some(table) = readable(&txn, USES)? else { return Ok(vec![]) };
            let mut out = Vec::new();
            for entry in table.range(prefix.as_str()..)? {
                let (k, v) = entry?;
                let Some(key) = k.value().strip_prefix(prefix.as_str()) else { break };
                out.push((key.to_string(), v.value()));
            }
            Ok(out)
        })
    }

    /// The recorded last use of one key (`use_key`), if any.
    pub fn use_at(&self, key: &str) -> StoreResult<Option<u64>> {
        self.with(|db| {
            let txn = db.begin_read()?;
            let Some(table) = readable(&txn, USES)? else { return Ok(None) };
            Ok(table.get(key)?.map(|v| v.value()))
        })
    }

    /// Forgets the uses of objects that were evicted.
    pub fn forget_uses(&self, keys: &[String]) -> StoreResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        self.with(|db| {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(USES)?;
                for key in keys {
                    table.remove(key.as_str())?;
                }
            }
            txn.commit()?;
            Ok(())
        })
    }

    /// Records (`defer`) or clears blobs whose deletion is to be retried.
    pub fn set_deferred(&self, defer: &[Digest], clear: &[Digest], at: u64) -> StoreResult<()> {
        if defer.is_empty() && clear.is_empty() {
            return Ok(());
        }
        self.with(|db| {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(DEFERRED)?;
                for d in clear {
                    table.remove(d.to_string().as_str())?;
                }
                for d in defer {
                    table.insert(d.to_string().as_str(), at)?;
                }
            }
            txn.commit()?;
            Ok(())
        })
    }

    /// Blobs whose deletion was deferred.
    pub fn deferred(&self) -> StoreResult<Vec<Digest>> {
        self.with(|db| {
            let txn = db.begin_read()?;
            let Some(table) = readable(&txn, DEFERRED)? else { return Ok(vec![]) };
            let mut out = Vec::new();
            for entry in table.iter()? {
                if let Ok(d) = entry?.0.value().parse::<Digest>() {
                    out.push(d);
                }
            }
            Ok(out)
        })
    }

    pub fn is_indexed(&self) -> StoreResult<bool> {
        self.with(|db| {
            let txn = db.begin_read()?;
            let Some(table) = readable(&txn, META)? else { return Ok(false) };
            Ok(table.get(INDEXED)?.is_some_and(|v| v.value() == FORMAT))
        })
    }

    /// Replaces every reference and size with what a walk of shared storage
    /// found, and marks the tree indexed: on storage other replicas write,
    /// the walk is the truth and this index only its copy for one pass.
    pub fn replace_found(&self, found: &[(Digest, RefKind, RepoName, Option<u64>)]) -> StoreResult<()> {
        self.rewrite(|db| {
            let txn = db.begin_write()?;
            txn.delete_multimap_table(REFS)?;
            txn.delete_table(SIZES)?;
            insert_found(&txn, found, true)?;
            txn.commit()?;
            Ok(())
        })
    }

    /// Every recorded use (key from `use_key`, unix seconds).
    pub fn all_uses(&self) -> StoreResult<Vec<(String, u64)>> {
        self.with(|db| {
            let txn = db.begin_read()?;
            let Some(table) = readable(&txn, USES)? else { return Ok(vec![]) };
            let mut out = Vec::new();
            for entry in table.iter()? {
                let (k, v) = entry?;
                out.push((k.value().to_string(), v.value()));
            }
            Ok(out)
        })
    }

    /// Replaces every recorded use with `uses`.
    pub fn replace_uses(&self, uses: &[(String, u64)]) -> StoreResult<()> {
        self.with(|db| {
            let txn = db.begin_write()?;
            txn.delete_table(USES)?;
            {
                let mut table = txn.open_table(USES)?;
                for (key, at) in uses {
                    table.insert(key.as_str(), *at)?;
                }
            }
            txn.commit()?;
            Ok(())
        })
    }

    /// Adds what a walk of the tree found (references and sizes) and, when
    /// `complete`, marks the tree as indexed.
    pub fn add_found(&self, found: &[(Digest, RefKind, RepoName, Option<u64>)], complete: bool) -> StoreResult<()> {
        self.rewrite(|db| {
            let txn = db.begin_write()?;
            insert_found(&txn, found, complete)?;
            txn.commit()?;
            Ok(())
        })
    }
}

/// A table of a read transaction; `None` if nothing was ever written to it.
fn readable<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &redb::ReadTransaction,
    table: TableDefinition<K, V>,
) -> Result<Option<redb::ReadOnlyTable<K, V>>, redb::Error> {
    match txn.open_table(table) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `readable` for a multimap table.
fn readable_multimap<K: redb::Key + 'static, V: redb::Key + 'static>(
    txn: &redb::ReadTransaction,
    table: MultimapTableDefinition<K, V>,
) -> Result<Option<redb::ReadOnlyMultimapTable<K, V>>, redb::Error> {
    match txn.open_multimap_table(table) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Inserts found references and sizes in `txn`; marks the tree indexed when `complete`.
fn insert_found(
    txn: &redb::WriteTransaction,
    found: &[(Digest, RefKind, RepoName, Option<u64>)],
    complete: bool,
) -> Result<(), redb::Error> {
    let mut refs = txn.open_multimap_table(REFS)?;
    let mut sizes = txn.open_table(SIZES)?;
    for (d, kind, repo, size) in found {
        let key = d.to_string();
        refs.insert(key.as_str(), kind.value(repo).as_str())?;
        if let Some(size) = size {
            sizes.insert(key.as_str(), *size)?;
        }
    }
    if complete {
        txn.open_table(META)?.insert(INDEXED, FORMAT)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Digest {
        Digest::sha256_of(s.as_bytes())
    }

    #[test]
    fn references_sizes_and_uses_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".berth/index.redb");
        let pushed: RepoName = "team/app".parse().unwrap();
        let mirrored = super::super::layout::mirror_repository("docker.io", "library/alpine");
        {
            let index = Index::open(&path).unwrap();
            assert!(index.refs(&d("a")).unwrap().is_empty());
            index.add_ref(&d("a"), RefKind::Layer, &pushed, Some(10)).unwrap();
            index.add_ref(&d("a"), RefKind::Layer, &mirrored, None).unwrap();
            index.add_ref(&d("b"), RefKind::Manifest, &mirrored, Some(3)).unwrap();
            index.remove_ref(&d("a"), RefKind::Layer, &pushed).unwrap();
            let key = use_key(UseKind::Tag, &mirrored, "3.20");
            index.record_uses(&[(key.clone(), 100)]).unwrap();
            index.record_uses(&[(key, 50)]).unwrap();
            assert!(!index.is_indexed().unwrap());
            index.add_found(&[], true).unwrap();
        }
        let index = Index::open(&path).unwrap();
        assert!(index.is_indexed().unwrap());
        let a = index.refs(&d("a")).unwrap();
        assert_eq!((a.pushed.len(), a.mirrored.len()), (0, 1));
        assert_eq!(index.size(&d("a")).unwrap(), Some(10));
        assert_eq!(
            index.uses(UseKind::Tag, &mirrored).unwrap(),
            vec![("3.20".to_string(), 100)],
            "uses only move forward"
        );
        assert!(index.uses(UseKind::Manifest, &mirrored).unwrap().is_empty());
        let blobs = index.blobs().unwrap();
        assert_eq!(blobs.len(), 2);
        index.forget_blob(&d("a")).unwrap();
        assert!(index.refs(&d("a")).unwrap().is_empty());
        assert_eq!(index.size(&d("a")).unwrap(), None);
    }

    #[test]
    fn what_manifests_reference_is_kept_until_their_data_goes() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index.redb")).unwrap();
        let repo: RepoName = "team/app".parse().unwrap();
        assert_eq!(index.edges_many(&[d("m")]).unwrap(), vec![None], "nothing recorded yet");
        let image = Edges { blobs: vec![(d("layer"), 4)], manifests: vec![] };
        let index_of = Edges { blobs: vec![], manifests: vec![(d("m"), 9)] };
        index.add_manifest(&d("m"), &repo, 9, &image).unwrap();
        index.record_edges(&[(d("i"), index_of.clone())]).unwrap();
        assert_eq!(index.edges_many(&[d("i"), d("m"), d("x")]).unwrap(), vec![Some(index_of), Some(image), None]);
        assert_eq!((index.refs(&d("m")).unwrap().pushed.len(), index.size(&d("m")).unwrap()), (1, Some(9)));
        index.forget_blobs(&[d("m")]).unwrap();
        assert_eq!(index.edges_many(&[d("m")]).unwrap(), vec![None]);
    }

    #[test]
    fn a_second_process_on_the_same_index_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.redb");
        let _held = Index::open(&path).unwrap();
        let started = std::time::Instant::now();
        let e = Index::open(&path).err().unwrap();
        assert!(e.to_string().contains("another berth"), "{e}");
        assert!(started.elapsed() >= Duration::from_secs(2), "a stopping server is waited for");
    }
}
