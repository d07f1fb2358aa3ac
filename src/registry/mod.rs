//! The façade every API handler calls: one method per registry operation.
//! It asks `namespace` what each name is and whether the request may do what
//! it asks, applies the registry's rules (what a manifest must reference,
//! whether deletes are allowed), asks the `mirror` when the store lacks
//! something, and keeps the metadata caches in step with every write.

pub mod access;
mod blobs;
pub mod browse;
pub mod cache;
mod error;
pub mod expiry;
pub mod gc;
pub mod identity;
mod manifests;
mod mirrored;
pub mod namespace;
mod range;
mod referrers;
pub mod uses;

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;

pub use blobs::{BlobRead, UploadStart};
pub use error::{RegistryError, RegistryResult};
pub use manifests::{Manifest, PushedManifest};
pub use namespace::Action;
pub use range::{ByteRange, RangeRequest};
pub use referrers::Referrer;

use crate::config::Config;
use crate::mirror::{Mirror, MirrorError, Upstream};
use crate::oci::{RepoName, Tag};
use crate::store::Store;
pub use access::Caller;
use access::{Access, Verdict};
use cache::{Caches, RepoLocks};
pub use identity::RepoId;
use namespace::{Decision, Facts, Namespace};

/// Where a request on a repository is served from.
pub enum Route {
    /// A repository of pushed content (or any repository when mirroring is off).
    Local(RepoName),
    /// An upstream repository, cached in the store under `storage`.
    Mirrored(MirroredRepo),
}

pub struct MirroredRepo {
    pub upstream: Arc<Upstream>,
    /// The repository's name upstream (`library/alpine`).
    pub remote: RepoName,
    /// Where the store keeps it (`_mirror/docker.io/library/alpine`).
    pub storage: RepoName,
    /// See `namespace::Decision::Mirrored`.
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
    locks: RepoLocks,
    namespace: Namespace,
    mirror: Option<Mirror>,
    /// When a mirrored tag was last fetched or revalidated upstream.
    fresh_tags: Cache<(RepoName, Tag), Instant>,
    /// Coalesces concurrent upstream fetches of one manifest.
    manifest_fetches: Cache<(RepoName, String), Manifest>,
    delete_enabled: bool,
    max_manifest_size: u64,
    upload_max_age: Duration,
    /// Uses of mirrored content not yet written to the index.
    uses: uses::Uses,
    pins: expiry::Pins,
    /// `mirror.ttl`, `mirror.max_size` (bytes), `mirror.eviction_interval`.
    ttl: Duration,
    max_size: Option<u64>,
    eviction_interval: Duration,
    /// While a garbage collection runs: what manifests pushed meanwhile reference.
    gc_live: std::sync::Mutex<Option<std::collections::HashSet<crate::oci::Digest>>>,
    /// One garbage collection at a time.
    gc_running: Arc<tokio::sync::Mutex<()>>,
    gc: crate::config::GcConfig,
    access: Access,
    metrics: Arc<crate::metrics::Metrics>,
    /// Store bytes (mirrored, pushed) and when they were counted: a scrape
    /// reads the index at most once a minute.
    store_bytes: std::sync::Mutex<Option<(Instant, (u64, u64))>>,
    /// Repository names and summaries for the web page.
    catalog: browse::Catalog,
    /// The mirror's traffic over time, for the web page's charts.
    traffic: crate::traffic::Traffic,
    /// The last eviction pass and garbage collection, and what they freed.
    last_runs: std::sync::Mutex<browse::LastRuns>,
}

impl Registry {
    /// The registry over `store`; an error when a configured pattern (an
    /// access rule's, a pin's) does not resolve to repositories.
    pub fn with_store(cfg: &Config, store: Store) -> Result<Self, String> {
        let namespace = Namespace::new(&cfg.mirror);
        let access = Access::new(&cfg.auth, &namespace)?;
        let pins = expiry::Pins::new(&cfg.mirror.pin, &namespace)?;
        let store = Arc::new(store);
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let mirror = cfg
            .mirror
            .enabled
            .then(|| Mirror::new(&cfg.mirror, store.clone(), cfg.storage.max_manifest_size, metrics.clone()));
        Ok(Self {
            caches: Caches::new(&cfg.cache, store.shared()),
            store,
            locks: RepoLocks::default(),
            namespace,
            mirror,
            fresh_tags: Cache::new(cfg.cache.tags),
            manifest_fetches: Cache::builder().max_capacity(10_000).time_to_live(Duration::from_secs(1)).build(),
            delete_enabled: cfg.storage.delete.enabled,
            max_manifest_size: cfg.storage.max_manifest_size,
            upload_max_age: cfg.uploads.max_age,
            uses: Default::default(),
            pins,
            ttl: cfg.mirror.ttl,
            max_size: cfg.mirror.max_size.map(|b| b.as_u64()),
            eviction_interval: cfg.mirror.eviction_interval,
            gc_live: Default::default(),
            gc_running: Default::default(),
            gc: cfg.gc.clone(),
            access,
            metrics,
            store_bytes: Default::default(),
            catalog: Default::default(),
            traffic: Default::default(),
            last_runs: Default::default(),
        })
    }

    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    /// Sets the metrics read at scrape time, and returns the text exposition.
    pub async fn render_metrics(&self) -> Vec<u8> {
        let m = &self.metrics;
        m.uploads_open.set(self.store.open_uploads() as i64);
        let (fetches, readers) = self.mirror.as_ref().map_or((0, 0), Mirror::inflight_counts);
        m.fetches_in_flight.set(fetches as i64);
        m.fetch_clients.set(readers as i64);
        match self.store_bytes().await {
            Ok((mirrored, pushed)) => {
                m.store_bytes.with_label_values(&["mirrored"]).set(mirrored as i64);
                m.store_bytes.with_label_values(&["pushed"]).set(pushed as i64);
            }
            Err(e) => tracing::warn!(error = %e, "cannot count the store's bytes for the metrics"),
        }
        m.render()
    }

    /// Bytes of blob data (mirrored only, the rest) by the index, counted at
    /// most once a minute (a scrape must not read a large index each time).
    async fn store_bytes(&self) -> RegistryResult<(u64, u64)> {
        const FRESH: Duration = Duration::from_secs(60);
        if let Some((at, bytes)) = *self.store_bytes.lock().unwrap() {
            if at.elapsed() < FRESH {
                return Ok(bytes);
            }
        }
        let bytes = self.store_bytes_now().await?;
        *self.store_bytes.lock().unwrap() = Some((Instant::now(), bytes));
        Ok(bytes)
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

    /// Whether the repository `name` holds pushed content (cached).
    async fn is_local(&self, name: &RepoName) -> RegistryResult<bool> {
        let gens = &self.caches.generations;
        if let Some(local) = self.caches.local.get(gens, name, &()).await {
            return Ok(local);
        }
        let read_at = gens.current(name);
        let local = self.store.holds_content(name).await?;
        // A name that holds content stays local for good; one that does not
        // may be pushed to through another replica at any moment, so over
        // shared storage only the lasting answer is kept.
        if local || !self.store.shared() {
            self.caches.local.insert(name, (), local, read_at).await;
        }
        Ok(local)
    }

    /// Records a write to `repo`: cached reads of it made before stop counting.
    fn written(&self, repo: &RepoName) {
        self.caches.generations.bump(repo);
        self.catalog.written(repo);
    }

    /// Where a request to do `action` on `name` (with containerd's `?ns=`)
    /// is served, or `Denied` with the reason: the name-space policy resolves
    /// the name, with the store facts it needs, into the one repository
    /// identity that access control and everything after take.
    pub async fn route(
        &self,
        name: &RepoName,
        ns: Option<&str>,
        action: Action,
        caller: &Caller,
    ) -> RegistryResult<Route> {
        let class = self.namespace.classify(name, ns)?;
        let (need_local, need_mirrored) = Namespace::needs_facts(&class, action);
        let mut facts = Facts::default();
        if need_local {
            facts.local = self.is_local(name).await?;
        }
        if need_mirrored && !facts.local {
            if let Some(mirror) = Namespace::default_mirror(&class) {
                facts.mirrored = self.store.holds_content(&mirror.storage()).await?;
            }
        }
        let (id, implicit) = match self.namespace.decide(name, &class, action, facts) {
            Decision::Serve { id, implicit } => (id, implicit),
            Decision::Denied(why) => return Err(RegistryError::Denied(why)),
            Decision::Unknown(why) => return Err(RegistryError::NotHere(why)),
            Decision::Invalid(why) => {
                return Err(crate::oci::ParseError::new(crate::oci::OciCode::NameInvalid, why).into())
            }
        };
        self.authorize(caller, action, &id)?;
        self.serve_route(id, implicit)
    }

    /// Whether `caller` may do `action` on `repo`, by the access policy.
    fn authorize(&self, caller: &Caller, action: Action, repo: &RepoId) -> RegistryResult<()> {
        match self.access.decide(caller, action, repo) {
            Verdict::Allow => Ok(()),
            Verdict::Unauthorized => Err(RegistryError::Unauthorized(repo.to_string())),
            Verdict::Denied(why) => Err(RegistryError::Denied(why)),
        }
    }

    /// How repository `id` is served: from the store, or through its upstream.
    fn serve_route(&self, id: RepoId, implicit: bool) -> RegistryResult<Route> {
        match id {
            RepoId::Local(name) => Ok(Route::Local(name)),
            RepoId::Mirrored { host, remote } => {
                let upstream = self.mirror.as_ref().and_then(|m| m.upstream(&host)).ok_or_else(|| {
                    RegistryError::Mirror(MirrorError::Protocol {
                        host: host.clone(),
                        reason: "no such upstream".into(),
                    })
                })?;
                let storage = crate::store::layout::mirror_repository(&host, remote.as_str());
                Ok(Route::Mirrored(MirroredRepo { upstream, remote, storage, implicit }))
            }
        }
    }

    /// As `route` for a write: the local repository it writes, or `Denied`.
    pub async fn writable(
        &self,
        name: &RepoName,
        ns: Option<&str>,
        action: Action,
        caller: &Caller,
    ) -> RegistryResult<RepoName> {
        match self.route(name, ns, action, caller).await? {
            Route::Local(repo) => Ok(repo),
            Route::Mirrored(m) => Err(RegistryError::Denied(format!("{name} is mirrored from {}", m.upstream.host))),
        }
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
        let tags = self.store.list_tags(repo).await?;
        if tags.is_empty() && !self.store.holds_content(repo).await? {
            return Err(RegistryError::NameUnknown(repo.to_string()));
        }
        Ok(paginate(tags, n, last))
    }

    /// Repository names, sorted, after `last`, at most `n`; and whether more
    /// follow. Mirrored repositories appear under the name that pulls them
    /// (`docker.io/library/alpine`) when there is one.
    /// Only what `caller` may pull is listed.
    pub async fn catalog(
        &self,
        n: Option<usize>,
        last: Option<&str>,
        caller: &Caller,
    ) -> RegistryResult<(Vec<String>, bool)> {
        let mut names: Vec<String> = self
            .repository_names()
            .await?
            .into_iter()
            .filter(|id| self.may_pull(caller, id))
            .map(|id| id.to_string())
            .collect();
        names.sort();
        names.dedup();
        Ok(paginate(names, n, last))
    }

    /// Whether a caller may use the registry at all without logging in
    /// (`GET /v2/`: with authentication on, an anonymous caller is asked to,
    /// so that `docker login` learns the challenge).
    pub fn base_allows(&self, caller: &Caller) -> bool {
        !self.access.enabled() || matches!(caller, Caller::User(_))
    }

    /// Ready when the store answers a listing and can take a write.
    pub async fn check_ready(&self) -> RegistryResult<()> {
        // One probe file written, synced, read back and removed: never a walk of the tree.
        self.store.check_writable().await?;
        Ok(())
    }

    /// What berth last heard from each upstream, by host (sorted).
    pub fn upstream_health(&self) -> Vec<(String, crate::mirror::Health)> {
        let Some(mirror) = &self.mirror else { return vec![] };
        let mut hosts: Vec<&str> = mirror.hosts().collect();
        hosts.sort();
        hosts.into_iter().filter_map(|h| mirror.upstream(h).map(|u| (h.to_string(), u.health()))).collect()
    }

    /// Work at startup: temp files a crash left behind, and mirrored content
    /// where berth kept it before `_mirror/`.
    pub async fn recover(&self) -> RegistryResult<()> {
        let removed = self.store.recover().await?;
        if removed > 0 {
            tracing::info!(removed, "removed temporary files left by an earlier crash");
        }
        if let Some(mirror) = &self.mirror {
            for host in mirror.hosts() {
                if self.store.migrate_legacy_mirror(host).await? {
                    tracing::info!(host, "moved mirrored content under _mirror/");
                }
            }
        }
        Ok(())
    }

    /// Purges upload sessions idle longer than `uploads.max_age` and mirror
    /// ingests that nothing writes (both also after a crash).
    pub async fn purge_uploads(&self) -> RegistryResult<crate::store::PurgeReport> {
        Ok(self.store.purge_uploads(self.upload_max_age).await?)
    }

    /// `gc.grace`: what a run keeps as too recent to judge.
    pub fn gc_grace(&self) -> Duration {
        self.gc.grace
    }

    /// The scheduled garbage collection (`gc.schedule`), if any: its interval and options.
    pub fn gc_schedule(&self) -> Option<(Duration, gc::GcOptions)> {
        let opts = gc::GcOptions { dry_run: false, delete_untagged: self.gc.delete_untagged, grace: self.gc.grace };
        self.gc.schedule.map(|every| (every, opts))
    }

    /// How often expiry and the cap are enforced.
    pub fn eviction_interval(&self) -> Duration {
        self.eviction_interval
    }

    /// Indexes a data directory that has no complete index yet (registry:2's,
    /// or an older berth's), while the server serves.
    pub async fn index_tree(&self) -> RegistryResult<()> {
        if self.store.shared() {
            // Other replicas write too: each lifecycle turn rebuilds the index (`store::shared`).
            return Ok(());
        }
        let started = Instant::now();
        if self.store.indexed(|index| index.is_indexed()).await? {
            // What a crash left the index saying about links and data that are gone.
            let dropped = self.store.reconcile_index().await?;
            if dropped > 0 {
                tracing::info!(dropped, took = ?started.elapsed(), "index entries of links or data that are gone dropped");
            }
            return Ok(());
        }
        let found = self.store.index_tree().await?;
        tracing::info!(references = found, took = ?started.elapsed(), "indexed the data directory");
        Ok(())
    }

    /// How often `purge_uploads` should run.
    pub fn purge_interval(&self) -> Duration {
        (self.upload_max_age / 24).clamp(Duration::from_millis(500), Duration::from_secs(3600))
    }
}

/// The configured repository patterns (access rules, pins) in canonical
/// form, one line each, as the registry resolves them; an error when one
/// does not resolve (what `berth config check` prints).
pub fn describe_patterns(cfg: &Config) -> Result<Vec<String>, String> {
    let namespace = Namespace::new(&cfg.mirror);
    let mut lines = Access::new(&cfg.auth, &namespace)?.describe();
    let pins = expiry::Pins::new(&cfg.mirror.pin, &namespace)?;
    lines.extend(pins.describe().into_iter().map(|p| format!("mirror.pin {p}")));
    Ok(lines)
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
