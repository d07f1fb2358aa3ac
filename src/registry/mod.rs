//! The façade every API handler calls: one method per registry operation.
//! It resolves each repository to local or mirrored (`routing`), applies the
//! registry's rules (what a manifest must reference, who may push where,
//! whether deletes are allowed), asks the `mirror` when the store lacks
//! something, and keeps the metadata caches in step with every write.

mod blobs;
mod error;
mod manifests;
mod mirrored;
mod range;
mod referrers;
pub mod routing;

use std::sync::Arc;
use std::time::Instant;

use moka::future::Cache;

pub use blobs::{BlobRead, UploadStart};
pub use error::{RegistryError, RegistryResult};
pub use manifests::{Manifest, PushedManifest};
pub use range::{ByteRange, RangeRequest};
pub use referrers::Referrer;

use crate::cache::Caches;
use crate::config::Config;
use crate::mirror::{Mirror, MirrorError, Upstream};
use crate::oci::{RepoName, Tag};
use crate::store::Store;
use routing::{storage_name, Resolution, Routing};

/// Where reads of a repository are served from.
pub enum Route {
    /// A repository of pushed content (or any repository when mirroring is off).
    Local(RepoName),
    /// An upstream repository, cached in the store under `storage`.
    Mirrored(MirroredRepo),
}

pub struct MirroredRepo {
    pub upstream: Arc<Upstream>,
    /// The repository's name upstream (`library/alpine`).
    pub remote: String,
    /// Where the store keeps it (`docker.io/library/alpine`).
    pub storage: RepoName,
    /// Routed to the default upstream only because nothing is pushed under
    /// the name yet (no host prefix, no `?ns=`): the name may be about to
    /// receive its first push, so existence checks (HEAD) answer from the
    /// store and never fail because of the upstream.
    pub implicit: bool,
}

impl Route {
    /// The repository in the store that serves this route.
    pub fn storage(&self) -> &RepoName {
        match self {
            Route::Local(n) => n,
            Route::Mirrored(m) => &m.storage,
        }
    }
}

pub struct Registry {
    store: Arc<Store>,
    caches: Caches,
    routing: Routing,
    mirror: Option<Mirror>,
    /// Whether a repository name holds pushed content (local first).
    local_repos: Cache<RepoName, bool>,
    /// When a mirrored tag was last fetched or revalidated upstream.
    fresh_tags: Cache<(RepoName, Tag), Instant>,
    /// Coalesces concurrent upstream fetches of one manifest.
    manifest_fetches: Cache<(RepoName, String), Manifest>,
    delete_enabled: bool,
    max_manifest_size: u64,
}

impl Registry {
    pub fn new(cfg: &Config) -> Self {
        Self::with_store(cfg, Store::filesystem(&cfg.storage.root))
    }

    pub fn with_store(cfg: &Config, store: Store) -> Self {
        let store = Arc::new(store);
        let mirror = cfg.mirror.enabled.then(|| Mirror::new(&cfg.mirror, store.clone(), cfg.storage.max_manifest_size));
        Self {
            store,
            caches: Caches::new(&cfg.cache),
            routing: Routing::new(&cfg.mirror),
            mirror,
            local_repos: Cache::builder().max_capacity(cfg.cache.tags).time_to_live(cfg.cache.tag_ttl).build(),
            fresh_tags: Cache::new(cfg.cache.tags),
            manifest_fetches: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(std::time::Duration::from_secs(1))
                .build(),
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

    async fn is_local(&self, name: &RepoName) -> RegistryResult<bool> {
        if let Some(local) = self.local_repos.get(name).await {
            return Ok(local);
        }
        let local = self.store.repository_exists(name).await?;
        self.local_repos.insert(name.clone(), local).await;
        Ok(local)
    }

    /// Where reads of `name` are served from: `?ns=` and host-prefixed names
    /// are mirrored; other names are local if they hold pushed content, and
    /// otherwise mirrored from the default upstream.
    pub async fn route(&self, name: &RepoName, ns: Option<&str>) -> RegistryResult<Route> {
        let (host, remote, implicit) = match self.routing.resolve(name, ns) {
            Resolution::Local => return Ok(Route::Local(name.clone())),
            Resolution::Default { .. } if self.is_local(name).await? => return Ok(Route::Local(name.clone())),
            Resolution::Explicit { host, remote } => (host, remote, false),
            Resolution::Default { host, remote } => (host, remote, true),
        };
        let upstream = self.mirror.as_ref().and_then(|m| m.upstream(&host)).ok_or_else(|| {
            RegistryError::Mirror(MirrorError::Protocol { host: host.clone(), reason: "no such upstream".into() })
        })?;
        let storage = storage_name(&host, &remote);
        Ok(Route::Mirrored(MirroredRepo { upstream, remote, storage, implicit }))
    }

    /// Refuses writes (pushes, deletes, upload calls) into mirrored and protected names.
    pub fn check_writable(&self, name: &RepoName, ns: Option<&str>) -> RegistryResult<()> {
        self.routing.check_push(name, ns).map_err(|r| RegistryError::Denied(r.0))
    }

    /// As `check_writable`, for a request that creates content: from now on
    /// the name is a local repository (reads stop going upstream at once).
    pub async fn check_push(&self, name: &RepoName, ns: Option<&str>) -> RegistryResult<()> {
        self.check_writable(name, ns)?;
        self.local_repos.insert(name.clone(), true).await;
        Ok(())
    }

    /// Tags of the repository `route` serves, sorted, after `last`, at most
    /// `n`; and whether more follow. Mirrored repositories list what is cached.
    pub async fn list_tags(
        &self,
        route: &Route,
        n: Option<usize>,
        last: Option<&str>,
    ) -> RegistryResult<(Vec<String>, bool)> {
        let repo = route.storage();
        if !self.store.repository_exists(repo).await? {
            return Err(RegistryError::NameUnknown(repo.to_string()));
        }
        Ok(paginate(self.store.list_tags(repo).await?, n, last))
    }

    /// Repository names, sorted, after `last`, at most `n`; and whether more
    /// follow. Mirrored repositories appear under their storage names.
    pub async fn catalog(&self, n: Option<usize>, last: Option<&str>) -> RegistryResult<(Vec<String>, bool)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagination_uses_last_and_n() {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(paginate(v(&["a", "b", "c"]), Some(2), None), (v(&["a", "b"]), true));
        assert_eq!(paginate(v(&["a", "b", "c"]), Some(2), Some("b")), (v(&["c"]), false));
        assert_eq!(paginate(v(&["a", "b"]), Some(0), None), (v(&[]), false));
        assert_eq!(paginate(v(&["a", "b"]), None, None), (v(&["a", "b"]), false));
    }
}
