//! The in-memory metadata caches (moka), sized from `[cache]`. Owned by the
//! registry façade, which invalidates them on every write and delete it makes.

use std::sync::Arc;

use bytes::Bytes;
use moka::future::Cache;

use crate::config::CacheConfig;
use crate::oci::{Digest, ManifestInfo, RepoName, Tag};

/// A manifest's bytes and what was parsed from them. Immutable by digest.
#[derive(Debug)]
pub struct CachedManifest {
    pub bytes: Bytes,
    pub info: ManifestInfo,
}

pub struct Caches {
    /// (repository, tag) → manifest digest.
    pub tags: Cache<(RepoName, Tag), Digest>,
    /// (repository, blob digest) → size, for blobs the repository links.
    pub blobs: Cache<(RepoName, Digest), u64>,
    /// (repository, manifest digest) present in the repository.
    pub revisions: Cache<(RepoName, Digest), ()>,
    /// Manifest digest → bytes and parsed info, weighed by size.
    pub manifests: Cache<Digest, Arc<CachedManifest>>,
}

impl Caches {
    pub fn new(cfg: &CacheConfig) -> Self {
        Self {
            tags: Cache::builder().max_capacity(cfg.tags).time_to_live(cfg.tag_ttl).build(),
            blobs: Cache::new(cfg.links),
            revisions: Cache::new(cfg.links),
            manifests: Cache::builder()
                .max_capacity(cfg.manifest_bytes)
                .weigher(|_, m: &Arc<CachedManifest>| m.bytes.len().try_into().unwrap_or(u32::MAX))
                .build(),
        }
    }
}
