//! The in-memory metadata caches (moka), sized from `[cache]`, and what keeps
//! them honest: every write to a repository bumps its generation, and a
//! cached entry counts only while its repository's generation is the one it
//! was read under. A read that loaded a link before a DELETE and caches it
//! after the DELETE therefore caches nothing anyone will see (read-your-delete),
//! without locks on the read path. Writes to one repository are also ordered
//! by a per-repository lock (`RepoLocks`), so a DELETE never undoes a tag PUT
//! that answered first.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use bytes::Bytes;
use moka::future::Cache;

use super::manifests::ManifestHead;
use crate::config::CacheConfig;
use crate::oci::{Digest, ManifestInfo, RepoName, Tag};

/// A manifest's bytes and what was parsed from them. Immutable by digest.
#[derive(Debug)]
pub struct CachedManifest {
    pub bytes: Bytes,
    pub info: ManifestInfo,
    /// The response's header values, made once per cached manifest rather
    /// than formatted on every GET.
    pub head: Arc<ManifestHead>,
}

impl CachedManifest {
    pub fn new(digest: &Digest, bytes: Bytes, info: ManifestInfo) -> Self {
        let head = Arc::new(ManifestHead::new(digest, &info.media_type));
        CachedManifest { bytes, info, head }
    }
}

impl crate::oci::reach::Parsed for CachedManifest {
    fn manifest(&self) -> &ManifestInfo {
        &self.info
    }
}

/// Per-repository write generations. A repository never written since start
/// is at generation 0; every write moves it to a new, never reused number.
#[derive(Default)]
pub struct Generations {
    next: AtomicU64,
    by_repo: RwLock<HashMap<RepoName, u64>>,
}

impl Generations {
    pub fn current(&self, repo: &RepoName) -> u64 {
        self.by_repo.read().unwrap().get(repo).copied().unwrap_or(0)
    }

    /// Marks a write to `repo`: entries read before it stop counting.
    pub fn bump(&self, repo: &RepoName) {
        let g = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.by_repo.write().unwrap().insert(repo.clone(), g);
    }
}

/// A cache of per-repository facts, valid only at the generation they were read at.
pub struct RepoCache<K, V> {
    inner: Cache<(RepoName, K), (u64, V)>,
}

impl<K, V> RepoCache<K, V>
where
    K: Hash + Eq + Send + Sync + Clone + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn new(inner: Cache<(RepoName, K), (u64, V)>) -> Self {
        Self { inner }
    }

    pub async fn get(&self, gens: &Generations, repo: &RepoName, key: &K) -> Option<V> {
        let (g, v) = self.inner.get(&(repo.clone(), key.clone())).await?;
        (g == gens.current(repo)).then_some(v)
    }

    /// Caches `value`, read from the store at generation `read_at` (taken
    /// before the read began).
    pub async fn insert(&self, repo: &RepoName, key: K, value: V, read_at: u64) {
        self.inner.insert((repo.clone(), key), (read_at, value)).await;
    }

    pub async fn invalidate(&self, repo: &RepoName, key: &K) {
        self.inner.invalidate(&(repo.clone(), key.clone())).await;
    }
}

pub struct Caches {
    pub generations: Generations,
    /// (repository, tag) → manifest digest.
    pub tags: RepoCache<Tag, Digest>,
    /// (repository, blob digest) → size, for blobs the repository links.
    pub blobs: RepoCache<Digest, u64>,
    /// (repository, manifest digest) present in the repository.
    pub revisions: RepoCache<Digest, ()>,
    /// Repository → whether it holds pushed content (local first).
    pub local: RepoCache<(), bool>,
    /// Manifest digest → bytes and parsed info, weighed by size. Content
    /// addressed: which repository may read it is the revisions' business.
    pub manifests: Cache<Digest, Arc<CachedManifest>>,
    /// `cache.tag_ttl`: how long a mutable fact is trusted on shared storage.
    tag_ttl: std::time::Duration,
}

impl Caches {
    /// `shared`: other replicas write the same storage, so what they change
    /// (a deleted link) is seen here within `tag_ttl`, as tags are.
    pub fn new(cfg: &CacheConfig, shared: bool) -> Self {
        fn links<V: Clone + Send + Sync + 'static>(cfg: &CacheConfig, shared: bool) -> RepoCache<Digest, V> {
            let b = Cache::builder().max_capacity(cfg.links);
            RepoCache::new(if shared { b.time_to_live(cfg.tag_ttl).build() } else { b.build() })
        }
        Self {
            generations: Generations::default(),
            tags: RepoCache::new(Cache::builder().max_capacity(cfg.tags).time_to_live(cfg.tag_ttl).build()),
            blobs: links(cfg, shared),
            revisions: links(cfg, shared),
            local: RepoCache::new(Cache::builder().max_capacity(cfg.tags).time_to_live(cfg.tag_ttl).build()),
            manifests: Cache::builder()
                .max_capacity(cfg.manifest_bytes)
                .weigher(|_, m: &Arc<CachedManifest>| m.bytes.len().try_into().unwrap_or(u32::MAX))
                .build(),
            tag_ttl: cfg.tag_ttl,
        }
    }

    pub fn tag_ttl(&self) -> std::time::Duration {
        self.tag_ttl
    }
}

/// One async lock per repository for writes (tag and manifest PUTs, deletes,
/// links), so that writes to one repository happen one after another.
#[derive(Default)]
pub struct RepoLocks {
    locks: Mutex<HashMap<RepoName, Weak<tokio::sync::Mutex<()>>>>,
}

/// Held while a repository is written.
pub type RepoGuard = tokio::sync::OwnedMutexGuard<()>;

impl RepoLocks {
    pub async fn lock(&self, repo: &RepoName) -> RepoGuard {
        let lock = {
            let mut locks = self.locks.lock().unwrap();
            if locks.len() > 1024 && locks.len().is_power_of_two() {
                locks.retain(|_, w| w.strong_count() > 0);
            }
            match locks.get(repo).and_then(Weak::upgrade) {
                Some(l) => l,
                None => {
                    let l = Arc::new(tokio::sync::Mutex::new(()));
                    locks.insert(repo.clone(), Arc::downgrade(&l));
                    l
                }
            }
        };
        lock.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_entry_read_before_a_write_is_not_served_after_it() {
        let caches = Caches::new(&CacheConfig::default(), false);
        let repo: RepoName = "a".parse().unwrap();
        let d = Digest::sha256_of(b"x");
        // A read takes the generation, reads the store (slowly) ...
        let read_at = caches.generations.current(&repo);
        // ... a delete lands meanwhile ...
        caches.generations.bump(&repo);
        // ... and the read caches what it saw before the delete.
        caches.blobs.insert(&repo, d.clone(), 1, read_at).await;
        assert_eq!(caches.blobs.get(&caches.generations, &repo, &d).await, None);
        let now = caches.generations.current(&repo);
        caches.blobs.insert(&repo, d.clone(), 1, now).await;
        assert_eq!(caches.blobs.get(&caches.generations, &repo, &d).await, Some(1));
        // Another repository's writes do not touch it.
        caches.generations.bump(&"b".parse().unwrap());
        assert_eq!(caches.blobs.get(&caches.generations, &repo, &d).await, Some(1));
    }

    #[tokio::test]
    async fn writes_to_one_repository_wait_for_each_other() {
        let locks = RepoLocks::default();
        let a: RepoName = "a".parse().unwrap();
        let held = locks.lock(&a).await;
        let other = locks.lock(&"b".parse().unwrap()).await;
        use futures::FutureExt;
        assert!(locks.lock(&a).now_or_never().is_none(), "a second writer waits");
        drop(held);
        drop(other);
        let _again = locks.lock(&a).await;
    }
}
