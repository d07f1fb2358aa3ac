//! The façade every API handler calls: one method per registry operation.
//! It asks `namespace` what each name is and whether the request may do what
//! it asks, applies the registry's rules (what a manifest must reference,
//! whether deletes are allowed), asks the `mirror` when the store lacks
//! something, and keeps the metadata caches in step with every write.
//!
//! `Registry` is the serving part. It shares `Core` (store, caches, locks,
//! metrics, the manifest walk) with the two other parts, each owning one
//! concern: `Lifecycle` (expiry, the cap, GC, uses, the upload purge) and
//! `Browsing` (the catalog, summaries and everything the web page reads).
//! The background loops that drive them start in one place (`crate::background`).

pub mod access;
pub mod admission;
mod blobs;
pub mod browse;
pub mod cache;
mod core;
mod error;
pub mod expiry;
pub mod gc;
pub mod identity;
mod immutable;
pub mod import;
pub mod lifecycle;
mod manifests;
mod mirrored;
pub mod namespace;
mod peering;
pub mod quota;
mod range;
mod referrers;
pub mod retention;
pub mod trust;
pub mod uses;
pub mod validation;

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
pub use browse::Browsing;
use cache::{Caches, RepoLocks};
pub use identity::RepoId;
pub use lifecycle::Lifecycle;
use namespace::{Decision, Facts, Namespace};

/// Where a request on a repository is served from.
pub enum Route {
    /// A repository of pushed content (or any repository when mirroring is off).
    Local(RepoName),
    /// An upstream repository, cached in the store under `storage`.
    Mirrored(MirroredRepo),
}

impl MirroredRepo {
    /// Its one identity (`docker.io/library/alpine`).
    pub fn id(&self) -> RepoId {
        RepoId::Mirrored { host: self.upstream.host.clone(), remote: self.remote.clone() }
    }
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
    /// The repository's identity.
    pub fn id(&self) -> RepoId {
        match self {
            Route::Local(n) => RepoId::Local(n.clone()),
            Route::Mirrored(m) => m.id(),
        }
    }

    /// The repository in the store that serves this route.
    pub fn storage(&self) -> &RepoName {
        match self {
            Route::Local(n) => n,
            Route::Mirrored(m) => &m.storage,
        }
    }
}

pub struct Registry {
    core: Arc<core::Core>,
    namespace: Namespace,
    access: Arc<Access>,
    mirror: Option<Arc<Mirror>>,
    /// When a mirrored tag was last fetched or revalidated upstream.
    fresh_tags: Cache<(RepoName, Tag), Instant>,
    /// The signature policy.
    trust: Arc<trust::Trust>,
    /// The admission webhook, if configured.
    admission: Option<Arc<admission::Admission>>,
    /// Checks of pushed manifests beyond the spec's.
    validation: validation::Validation,
    /// When a mirrored subject's referrers were last listed upstream.
    fresh_referrers: Cache<(RepoName, crate::oci::Digest), Instant>,
    /// Coalesces concurrent upstream fetches of one manifest.
    manifest_fetches: Cache<(RepoName, String), Manifest>,
    delete_enabled: bool,
    /// Read-only mode (`storage.read_only`, toggled by `berth readonly`).
    read_only: std::sync::atomic::AtomicBool,
    max_manifest_size: u64,
    /// Which tags may not move (`[[immutable]]`).
    immutable: immutable::Immutable,
    /// Which pushed tags go (`[[retention]]`).
    retention: retention::Retention,
    /// Byte limits on pushed repositories (`[[quota]]`).
    quotas: quota::Quotas,
    /// `storage.redirect`, when on: blob GETs go to the storage itself.
    redirect: Option<crate::config::RedirectConfig>,
    lifecycle: Arc<Lifecycle>,
    browsing: Browsing,
    /// Where a bundle sent over the network is staged (the data directory's
    /// temp directory: what a crash leaves there goes at the next start).
    staging: std::path::PathBuf,
}

impl Registry {
    /// The registry over `store`; an error when a configured pattern (an
    /// access rule's, a pin's) does not resolve to repositories.
    pub fn with_store(cfg: &Config, store: Store) -> Result<Self, String> {
        let namespace = Namespace::new(&cfg.mirror);
        let access = Arc::new(Access::new(&cfg.auth, &namespace)?);
        let pins = expiry::Pins::new(&cfg.mirror.pin, &namespace)?;
        let trust = Arc::new(trust::Trust::new(&cfg.mirror.verify, &namespace)?);
        let admission = admission::Admission::new(cfg.mirror.admission.as_ref(), &namespace)?.map(Arc::new);
        let validation = validation::Validation::new(&cfg.validation)?;
        let immutable = immutable::Immutable::new(&cfg.immutable, &namespace)?;
        let retention = retention::Retention::new(&cfg.retention, &namespace)?;
        let quotas = quota::Quotas::new(&cfg.quota, &namespace)?;
        let store = Arc::new(store);
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let mirror = cfg
            .mirror
            .enabled
            .then(|| Arc::new(Mirror::new(&cfg.mirror, store.clone(), cfg.storage.max_manifest_size, metrics.clone())));
        let catalog = Arc::new(browse::Catalog::default());
        let events = crate::events::Notifier::open(&cfg.notifications, &cfg.storage.root, metrics.clone())?;
        let core = Arc::new(core::Core {
            events,
            caches: Caches::new(&cfg.cache, store.shared()),
            store,
            locks: RepoLocks::default(),
            metrics,
            catalog: catalog.clone(),
        });
        let lifecycle = Arc::new(Lifecycle::new(cfg, core.clone(), mirror.clone(), pins));
        let browsing =
            Browsing::new(core.clone(), access.clone(), mirror.clone(), lifecycle.clone(), catalog, trust.clone());
        Ok(Self {
            core,
            namespace,
            access,
            mirror,
            fresh_tags: Cache::new(cfg.cache.tags),
            trust,
            admission,
            validation,
            fresh_referrers: Cache::new(cfg.cache.tags),
            manifest_fetches: Cache::builder().max_capacity(10_000).time_to_live(Duration::from_secs(1)).build(),
            delete_enabled: cfg.storage.delete.enabled,
            read_only: cfg.storage.read_only.into(),
            max_manifest_size: cfg.storage.max_manifest_size,
            redirect: cfg.storage.redirect.enabled.then(|| cfg.storage.redirect.clone()),
            immutable,
            retention,
            quotas,
            lifecycle,
            browsing,
            staging: cfg.storage.root.join(crate::store::layout::TMP_DIR),
        })
    }

    /// The lifecycle part: expiry, the cap, GC, uses, the upload purge.
    pub fn lifecycle(&self) -> &Arc<Lifecycle> {
        &self.lifecycle
    }

    /// The browsing part: the catalog and what the web page reads.
    pub fn browsing(&self) -> &Browsing {
        &self.browsing
    }

    /// Notifications (inert without endpoints).
    pub fn events(&self) -> &crate::events::Notifier {
        &self.core.events
    }

    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.core.metrics
    }

    /// Sets the metrics read at scrape time, and returns the text exposition.
    pub async fn render_metrics(&self) -> Vec<u8> {
        let m = &self.core.metrics;
        m.uploads_open.set(self.core.store.open_uploads() as i64);
        let (fetches, readers) = self.mirror.as_ref().map_or((0, 0), |m| m.inflight_counts());
        m.fetches_in_flight.set(fetches as i64);
        m.fetch_clients.set(readers as i64);
        match self.lifecycle.store_bytes().await {
            Ok((mirrored, pushed)) => {
                m.store_bytes.with_label_values(&["mirrored"]).set(mirrored as i64);
                m.store_bytes.with_label_values(&["pushed"]).set(pushed as i64);
            }
            Err(e) => tracing::warn!(error = %e, "cannot count the store's bytes for the metrics"),
        }
        match self.quota_usage_counted().await {
            Ok(usage) => {
                for u in usage {
                    m.quota_used.with_label_values(&[u.quota.as_str()]).set(u.used as i64);
                    m.quota_limit.with_label_values(&[u.quota.as_str()]).set(u.max as i64);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot count the quotas' use for the metrics"),
        }
        m.render()
    }

    pub fn max_manifest_size(&self) -> u64 {
        self.max_manifest_size
    }

    fn check_delete(&self) -> RegistryResult<()> {
        self.check_writes()?;
        if self.delete_enabled {
            Ok(())
        } else {
            Err(RegistryError::DeleteDisabled)
        }
    }

    /// `ReadOnly` while the registry is in read-only mode (registry:2's
    /// `storage.maintenance.readonly`): every push and delete is refused,
    /// reads (and the mirror filling its cache on them) go on.
    pub fn check_writes(&self) -> RegistryResult<()> {
        match self.read_only.load(std::sync::atomic::Ordering::Relaxed) {
            true => Err(RegistryError::ReadOnly),
            false => Ok(()),
        }
    }

    /// Turns read-only mode on or off, without a restart; whether it was on.
    pub fn set_read_only(&self, on: bool) -> bool {
        let was = self.read_only.swap(on, std::sync::atomic::Ordering::Relaxed);
        if was != on {
            tracing::info!(
                read_only = on,
                "read-only mode {}",
                if on { "on: pushes and deletes are refused" } else { "off" }
            );
        }
        was
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the repository `name` holds pushed content (cached).
    async fn is_local(&self, name: &RepoName) -> RegistryResult<bool> {
        let gens = &self.core.caches.generations;
        if let Some(local) = self.core.caches.local.get(gens, name, &()).await {
            return Ok(local);
        }
        let read_at = gens.current(name);
        let local = self.core.store.holds_content(name).await?;
        // A name that holds content stays local for good; one that does not
        // may be pushed to through another replica at any moment, so over
        // shared storage only the lasting answer is kept.
        if local || !self.core.store.shared() {
            self.core.caches.local.insert(name, (), local, read_at).await;
        }
        Ok(local)
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
                facts.mirrored = self.core.store.holds_content(&mirror.storage()).await?;
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
        let tags = self.core.store.list_tags(repo).await?;
        if tags.is_empty() && !self.core.store.holds_content(repo).await? {
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
        if self.access.may_list(caller) != Verdict::Allow {
            return Err(RegistryError::Unauthorized("the catalog".into()));
        }
        let mut names: Vec<String> = self
            .browsing
            .repository_names()
            .await?
            .into_iter()
            .filter(|id| self.access.lists(caller, id))
            .map(|id| id.to_string())
            .collect();
        names.sort();
        names.dedup();
        Ok(paginate(names, n, last))
    }

    /// The caller a verified external token makes (see `access::Access::token_caller`).
    pub fn token_caller(&self, claims: crate::jwt::Claims, key: &str) -> Caller {
        self.access.token_caller(claims, key)
    }

    /// Whether a caller may use the registry at all without logging in
    /// (`GET /v2/`: with authentication on, an anonymous caller is asked to,
    /// so that `docker login` learns the challenge).
    pub fn base_allows(&self, caller: &Caller) -> bool {
        !self.access.enabled() || caller.user().is_some()
    }

    /// Whether `caller` may delete tags of `name` from the page (deletes
    /// are enabled, the repository holds pushed content, the policy allows).
    pub fn may_delete(&self, caller: &Caller, name: &str) -> bool {
        let entry = self.browsing.known(name);
        self.delete_enabled
            && entry.is_some_and(|id| {
                !id.is_mirrored() && self.access.decide(caller, Action::Delete, &id) == Verdict::Allow
            })
    }

    /// Deletes tag `tag` of `name` for `caller`, as `DELETE /v2/<name>/manifests/<tag>` would.
    pub async fn delete_tag(&self, caller: &Caller, name: &str, tag: &str) -> RegistryResult<()> {
        let unknown = || RegistryError::ManifestUnknown(format!("{name}:{tag}"));
        let repo_name: RepoName = name.parse().map_err(|_| unknown())?;
        let tag: Tag = tag.parse().map_err(|_| unknown())?;
        let repo = self.writable(&repo_name, None, Action::Delete, caller).await?;
        self.delete_manifest(&repo, &crate::oci::Reference::Tag(tag.clone())).await?;
        // The web page's delete: an event as the API's, its request the page's.
        let mut event = crate::events::Event::new(
            "delete",
            crate::events::Target::deleted(repo.as_str(), None, Some(tag.as_str())),
        );
        event.request.method = "POST".into();
        if let Some(user) = caller.user() {
            event.actor.name = user.to_string();
        }
        self.core.events.emit(event);
        Ok(())
    }

    /// Ready when the store answers a listing and can take a write.
    pub async fn check_ready(&self) -> RegistryResult<()> {
        // One probe file written, synced, read back and removed: never a walk of the tree.
        self.core.store.check_writable().await?;
        Ok(())
    }

    /// What berth last heard from each upstream, by host (sorted).
    pub fn upstream_health(&self) -> Vec<(String, crate::mirror::Health)> {
        let Some(mirror) = &self.mirror else { return vec![] };
        let mut hosts: Vec<&str> = mirror.hosts().collect();
        hosts.sort();
        hosts.into_iter().filter_map(|h| mirror.upstream(h).map(|u| (h.to_string(), u.health()))).collect()
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
    lines.extend(trust::Trust::new(&cfg.mirror.verify, &namespace)?.describe());
    validation::Validation::new(&cfg.validation)?;
    lines.extend(immutable::Immutable::new(&cfg.immutable, &namespace)?.describe());
    lines.extend(retention::Retention::new(&cfg.retention, &namespace)?.describe());
    lines.extend(quota::Quotas::new(&cfg.quota, &namespace)?.describe());
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
