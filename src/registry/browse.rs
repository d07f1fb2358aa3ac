//! What the web page (`ui`) reads: the repositories a caller may pull, with
//! a summary of each; a repository's tags; one tag's details. Read through
//! the same policy as the API (`access`), and with no walk of the whole tree
//! per request: the names come from `Catalog` (walked once in the
//! background, then kept current by every write, `Registry::written`), and a
//! repository's summary is computed when a page shows it and cached until
//! its next write (the repository's write generation).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime};

use futures::{StreamExt, TryStreamExt};

use crate::oci::{Descriptor, Digest, ManifestInfo, RepoName, Tag};
use crate::store::index::UseKind;

use super::access::Access;
use super::access::Verdict;
use super::cache::CachedManifest;
use super::core::Core;
use super::identity::RepoId;
use super::namespace::Action;
use super::{Caller, Lifecycle, Referrer, RegistryError, RegistryResult};
use crate::mirror::Mirror;

/// Whose content a repository holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Pushed,
    /// Mirrored from this upstream host.
    Mirrored(String),
}

/// One repository, as the list shows it.
#[derive(Debug, Clone)]
pub struct RepoRow {
    /// The name that pulls it (`team/app`, `docker.io/library/alpine`).
    pub name: String,
    pub kind: Kind,
    pub tags: usize,
    /// Compressed bytes of everything its tags reference, each blob once.
    pub bytes: u64,
    /// When a tag was last pushed (fetched, for mirrored content).
    pub last_push: Option<SystemTime>,
    /// When a tag was last pulled.
    pub last_pull: Option<SystemTime>,
    pub pinned: bool,
}

/// One image (a manifest with a config and layers).
#[derive(Debug, Clone)]
pub struct ImageDetails {
    pub digest: Digest,
    pub platform: Option<String>,
    pub config: Option<Descriptor>,
    pub layers: Vec<Descriptor>,
    /// `created` from the image configuration.
    pub created: Option<String>,
}

/// One tag, as the repository page lists it.
#[derive(Debug, Clone)]
pub struct TagRow {
    pub tag: String,
    pub digest: Digest,
    pub media_type: String,
    /// Compressed bytes of the manifest and what it references (every platform).
    pub bytes: u64,
    pub platforms: Vec<String>,
    pub created: Option<String>,
}

/// One tag with everything the tag page shows.
#[derive(Debug, Clone)]
pub struct TagDetails {
    pub row: TagRow,
    /// One image, or one per platform of an index.
    pub images: Vec<ImageDetails>,
    pub referrers: Vec<Referrer>,
}

/// A page of a longer list.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// How many there are in all (matching the search).
    pub total: usize,
    /// 1-based.
    pub page: usize,
    pub pages: usize,
}

/// How old the names may grow on shared storage before a page walks them again.
const REWALK_SHARED: std::time::Duration = std::time::Duration::from_secs(300);

/// Rows per page of every list.
pub const PAGE_SIZE: usize = 50;

fn page_of<T>(all: Vec<T>, page: usize) -> Page<T> {
    let total = all.len();
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let page = page.clamp(1, pages);
    let items = all.into_iter().skip((page - 1) * PAGE_SIZE).take(PAGE_SIZE).collect();
    Page { items, total, page, pages }
}

/// When the last eviction pass and garbage collection ran, and what they freed.
#[derive(Debug, Clone, Default)]
pub struct LastRuns {
    pub eviction: Option<(SystemTime, super::expiry::EvictionReport)>,
    pub gc: Option<(SystemTime, super::gc::GcReport)>,
}

/// One upstream, as the mirror's page shows it.
#[derive(Debug, Clone)]
pub struct UpstreamRow {
    pub host: String,
    pub fetched: u64,
    pub last_ok: Option<SystemTime>,
    pub last_error: Option<(SystemTime, String)>,
    /// Failures since the start, by kind (`unreachable`, `timeout`, …).
    pub errors: BTreeMap<String, u64>,
}

/// Everything the mirror's page shows.
#[derive(Debug, Clone)]
pub struct MirrorOverview {
    pub enabled: bool,
    /// Since the server started (what `/metrics` says).
    pub totals: crate::traffic::Totals,
    /// The last 24 hours, by the hour; the last 30 days, by the day.
    pub hourly: Vec<crate::traffic::Bucket>,
    pub daily: Vec<crate::traffic::Bucket>,
    pub upstreams: Vec<UpstreamRow>,
    /// Bytes of blob data only mirrored content uses, and the rest.
    pub mirror_bytes: u64,
    pub other_bytes: u64,
    pub max_size: Option<u64>,
    pub evicted_bytes: u64,
    pub gc_bytes: u64,
    pub last_runs: LastRuns,
}

/// A computed summary: the repository's generation then, and when.
type Summary = (u64, Instant, Arc<RepoRow>);

/// The repositories the store holds, by canonical name (the name that pulls
/// them: `team/app`, `docker.io/library/alpine`).
#[derive(Default)]
pub struct Catalog {
    names: RwLock<BTreeMap<String, RepoId>>,
    /// Summaries, each valid at the repository's generation it was computed at.
    summaries: Mutex<HashMap<RepoName, Summary>>,
    /// When the names were last walked (`None`: not yet).
    walked: Mutex<Option<Instant>>,
}

impl Kind {
    pub fn of(id: &RepoId) -> Kind {
        match id.host() {
            Some(host) => Kind::Mirrored(host.to_string()),
            None => Kind::Pushed,
        }
    }
}

impl Catalog {
    /// Notes that `storage` was written (it exists, or its summary changed).
    /// Every push and fetch passes here: a name already known takes only the read lock.
    pub fn written(&self, storage: &RepoName) {
        let id = RepoId::from_storage(storage);
        let name = id.to_string();
        if self.names.read().unwrap().contains_key(&name) {
            return;
        }
        self.names.write().unwrap().entry(name).or_insert(id);
    }
}

/// The browsing part of the registry: the catalog of repository names,
/// their summaries, a repository's tags, one tag's details and the mirror's
/// overview, read through the same access policy as the API.
pub struct Browsing {
    core: Arc<Core>,
    access: Arc<Access>,
    mirror: Option<Arc<Mirror>>,
    /// Pins, uses and the last runs are the lifecycle's; the page shows them.
    lifecycle: Arc<Lifecycle>,
    catalog: Arc<Catalog>,
    /// The signature policy's latest decisions, shown per repository.
    trust: Arc<super::trust::Trust>,
    /// The mirror's traffic over time, for the web page's charts.
    traffic: crate::traffic::Traffic,
}

impl Browsing {
    pub(super) fn new(
        core: Arc<Core>,
        access: Arc<Access>,
        mirror: Option<Arc<Mirror>>,
        lifecycle: Arc<Lifecycle>,
        catalog: Arc<Catalog>,
        trust: Arc<super::trust::Trust>,
    ) -> Self {
        Self { core, access, mirror, lifecycle, catalog, trust, traffic: Default::default() }
    }

    /// The signature policy's latest decision on an image of `name`
    /// (`caller` may pull it), if it made one.
    pub async fn signature_decision(&self, caller: &Caller, name: &str) -> Option<super::trust::Decision> {
        let id = self.route(caller, name).await.ok()?;
        self.trust.latest(&id)
    }

    /// The repository that pulls as `name`, if the catalog knows it.
    pub(super) fn known(&self, name: &str) -> Option<RepoId> {
        self.catalog.names.read().unwrap().get(name).cloned()
    }

    /// What berth last heard from each upstream, by host (sorted).
    pub fn upstream_health(&self) -> Vec<(String, crate::mirror::Health)> {
        let Some(mirror) = &self.mirror else { return vec![] };
        let mut hosts: Vec<&str> = mirror.hosts().collect();
        hosts.sort();
        hosts.into_iter().filter_map(|h| mirror.upstream(h).map(|u| (h.to_string(), u.health()))).collect()
    }

    /// Walks the repository names into the catalog (at startup, and again
    /// every few minutes on shared storage, where other replicas add names).
    pub async fn walk_catalog(&self) -> RegistryResult<()> {
        let names = self.repository_names().await?.into_iter().map(|id| (id.to_string(), id)).collect();
        *self.catalog.names.write().unwrap() = names;
        *self.catalog.walked.lock().unwrap() = Some(Instant::now());
        Ok(())
    }

    /// Every repository in the store (a walk of the tree).
    pub(super) async fn repository_names(&self) -> RegistryResult<Vec<RepoId>> {
        let mut names = Vec::new();
        names.extend(self.core.store.list_repositories().await?.iter().filter_map(|n| RepoId::listed_local(n)));
        if let Some(mirror) = &self.mirror {
            for host in mirror.hosts() {
                let listed = self.core.store.list_mirrored(host).await?;
                names.extend(listed.iter().filter_map(|remote| RepoId::listed_mirrored(host, remote)));
            }
        }
        Ok(names)
    }

    /// Whether `caller` may pull `repo`, by the access policy.
    /// Whether `caller` may see pushed repository `name` (pull it) on the page.
    pub fn visible(&self, caller: &Caller, name: &str) -> bool {
        RepoId::listed_local(name).is_some_and(|id| self.may_pull(caller, &id))
    }

    pub(super) fn may_pull(&self, caller: &Caller, repo: &RepoId) -> bool {
        self.access.decide(caller, Action::Pull, repo) == Verdict::Allow
    }

    /// The repositories `caller` may pull whose name contains `search`
    /// (case-insensitive), of `kind` if given; one page, by name.
    pub async fn repositories(
        &self,
        caller: &Caller,
        search: &str,
        kind: Option<&Kind>,
        page: usize,
    ) -> RegistryResult<Page<Arc<RepoRow>>> {
        // Walked once; on shared storage again now and then, for what other replicas added.
        let walked = *self.catalog.walked.lock().unwrap();
        if walked.is_none_or(|at| self.core.store.shared() && at.elapsed() > REWALK_SHARED) {
            self.walk_catalog().await?;
        }
        let term = search.to_lowercase();
        let matching: Vec<RepoId> = self
            .catalog
            .names
            .read()
            .unwrap()
            .iter()
            .filter(|(name, id)| kind.is_none_or(|want| *want == Kind::of(id)) && name.contains(&term))
            .filter(|(_, id)| self.may_pull(caller, id))
            .map(|(_, id)| id.clone())
            .collect();
        let Page { items, total, page, pages } = page_of(matching, page);
        // Summaries not cached yet read storage: several at once.
        let rows = futures::stream::iter(items)
            .map(|id| async move {
                let storage = id.storage();
                let summary = self.summary(&id).await?;
                // Pulls do not change the summary: their time is looked up each time.
                let last_pull = self.last_pull(&storage).await?;
                Ok::<_, RegistryError>(Arc::new(RepoRow { last_pull, ..(*summary).clone() }))
            })
            .buffered(8)
            .try_collect()
            .await?;
        Ok(Page { items: rows, total, page, pages })
    }

    /// When a tag of `storage` was last served (recorded uses, flushed or not).
    async fn last_pull(&self, storage: &RepoName) -> RegistryResult<Option<SystemTime>> {
        let r = storage.clone();
        let flushed = self.core.store.indexed(move |index| index.uses(UseKind::Tag, &r)).await?;
        let pending = self.lifecycle.uses.latest_pending(&crate::store::index::use_key(UseKind::Tag, storage, ""));
        let latest = flushed.iter().map(|(_, at)| *at).chain(pending).max();
        Ok(latest.map(|s| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s)))
    }

    /// Names in the catalog by kind: (pushed, mirrored per host), for what `caller` may pull.
    pub fn catalog_counts(&self, caller: &Caller) -> (usize, BTreeMap<String, usize>) {
        let names = self.catalog.names.read().unwrap();
        let (mut pushed, mut mirrored) = (0, BTreeMap::new());
        for id in names.values().filter(|id| self.may_pull(caller, id)) {
            match Kind::of(id) {
                Kind::Pushed => pushed += 1,
                Kind::Mirrored(host) => *mirrored.entry(host).or_insert(0) += 1,
            }
        }
        (pushed, mirrored)
    }

    /// A repository's summary, from the cache while the repository was not
    /// written since (and, on shared storage, for `cache.tag_ttl` at most).
    async fn summary(&self, id: &RepoId) -> RegistryResult<Arc<RepoRow>> {
        let storage = &id.storage();
        let generation = self.core.caches.generations.current(storage);
        let fresh_for = self.core.caches.tag_ttl();
        if let Some((g, at, row)) = self.catalog.summaries.lock().unwrap().get(storage) {
            if *g == generation && (!self.core.store.shared() || at.elapsed() < fresh_for) {
                return Ok(row.clone());
            }
        }
        let tags = self.core.store.list_tags(storage).await?;
        let (mut roots, mut last_push) = (Vec::new(), None);
        for t in &tags {
            let Ok(tag) = t.parse::<Tag>() else { continue };
            let Some(d) = self.core.store.resolve_tag(storage, &tag).await? else { continue };
            last_push = last_push.max(self.core.store.tag_modified(storage, &tag).await?);
            roots.push(d);
        }
        let bytes = self.reach_bytes(roots).await;
        let row = Arc::new(RepoRow {
            name: id.to_string(),
            kind: Kind::of(id),
            tags: tags.len(),
            bytes,
            last_push,
            last_pull: None,
            pinned: self.lifecycle.pins.touches(id),
        });
        if tags.is_empty() && !self.core.store.holds_content(storage).await? {
            // Gone (deleted, or evicted): out of the catalog.
            self.catalog.names.write().unwrap().remove(&id.to_string());
        }
        self.catalog.summaries.lock().unwrap().insert(storage.clone(), (generation, Instant::now(), row.clone()));
        Ok(row)
    }

    /// Bytes of what `roots` keep alive: each manifest and blob once.
    async fn reach_bytes(&self, roots: Vec<Digest>) -> u64 {
        let reach = self.core.reach(roots).await;
        let manifests: u64 = reach.manifests.values().flatten().map(|m| m.bytes.len() as u64).sum();
        manifests + reach.blobs.values().sum::<u64>()
    }

    /// The route for browsing `name`, if `caller` may pull it: never an
    /// upstream request (the page shows what is stored).
    async fn route(&self, caller: &Caller, name: &str) -> RegistryResult<RepoId> {
        match self.known(name) {
            Some(id) if self.may_pull(caller, &id) => Ok(id),
            _ => Err(RegistryError::NameUnknown(name.to_string())),
        }
    }

    /// The tags of `name` (`caller` may pull it), one page, with their rows.
    pub async fn tags(&self, caller: &Caller, name: &str, page: usize) -> RegistryResult<Page<TagRow>> {
        let storage = self.route(caller, name).await?.storage();
        let tags = self.core.store.list_tags(&storage).await?;
        let Page { items, total, page, pages } = page_of(tags, page);
        let mut rows = Vec::with_capacity(items.len());
        for t in items {
            if let Some((row, _)) = self.tag_details(&storage, &t).await? {
                rows.push(row);
            }
        }
        Ok(Page { items: rows, total, page, pages })
    }

    /// Tag `t` of `storage`: its row and its images (`None` if it is not there).
    async fn tag_details(&self, storage: &RepoName, t: &str) -> RegistryResult<Option<(TagRow, Vec<ImageDetails>)>> {
        let Ok(tag) = t.parse::<Tag>() else { return Ok(None) };
        let Some(digest) = self.core.store.resolve_tag(storage, &tag).await? else { return Ok(None) };
        let manifest = self.core.load_manifest(&digest).await?;
        let images = self.images(&digest, &manifest).await;
        let row = TagRow {
            tag: t.to_string(),
            media_type: manifest.info.media_type.clone(),
            bytes: self.reach_bytes(vec![digest.clone()]).await,
            platforms: images.iter().filter_map(|i| i.platform.clone()).collect(),
            created: images.iter().find_map(|i| i.created.clone()),
            digest,
        };
        Ok(Some((row, images)))
    }

    /// The images of `manifest` (digest `d`): itself, or each platform of an index.
    async fn images(&self, d: &Digest, manifest: &CachedManifest) -> Vec<ImageDetails> {
        if !manifest.info.is_index() {
            return vec![self.image(d.clone(), None, Some(&manifest.info)).await];
        }
        let mut out = Vec::with_capacity(manifest.info.manifests.len());
        for entry in &manifest.info.manifests {
            let child = self.core.load_manifest(&entry.digest).await.ok();
            let platform = entry.platform.as_ref().map(ToString::to_string);
            out.push(self.image(entry.digest.clone(), platform, child.as_ref().map(|m| &m.info)).await);
        }
        out
    }

    /// One image (`None`: unreadable), with `created` read from its configuration (a small blob).
    async fn image(&self, digest: Digest, platform: Option<String>, info: Option<&ManifestInfo>) -> ImageDetails {
        let config = info.and_then(|i| i.config.clone());
        let created = match &config {
            Some(c) if c.size <= 1 << 20 => {
                self.core.store.read_blob_bytes(&c.digest).await.ok().flatten().and_then(|b| {
                    serde_json::from_slice::<serde_json::Value>(&b).ok()?.get("created")?.as_str().map(str::to_string)
                })
            }
            _ => None,
        };
        ImageDetails { digest, platform, config, layers: info.map(|i| i.layers.clone()).unwrap_or_default(), created }
    }

    /// Records the traffic counters' growth since the last call (every minute).
    pub fn sample_traffic(&self) {
        self.traffic.sample(super::uses::now_secs(), self.core.metrics.totals());
    }

    /// The mirror at a glance.
    pub async fn mirror_overview(&self) -> RegistryResult<MirrorOverview> {
        let totals = self.core.metrics.totals();
        let now = super::uses::now_secs();
        let errors = self.core.metrics.upstream_errors();
        let upstreams = self
            .upstream_health()
            .into_iter()
            .map(|(host, h)| UpstreamRow {
                fetched: totals.fetched.get(&host).copied().unwrap_or(0),
                errors: errors.get(&host).cloned().unwrap_or_default(),
                last_ok: h.last_ok,
                last_error: h.last_error,
                host,
            })
            .collect();
        let (mirror_bytes, other_bytes) = self.lifecycle.store_bytes().await?;
        Ok(MirrorOverview {
            enabled: self.mirror.is_some(),
            hourly: self.traffic.buckets(now, 3600, 24, &totals),
            daily: self.traffic.buckets(now, 86_400, 30, &totals),
            totals,
            upstreams,
            mirror_bytes,
            other_bytes,
            max_size: self.lifecycle.max_size,
            evicted_bytes: self.core.metrics.evicted_bytes.get(),
            gc_bytes: self.core.metrics.gc_bytes.get(),
            last_runs: self.lifecycle.last_runs(),
        })
    }

    /// Everything the tag page shows of `name:tag`.
    pub async fn tag(&self, caller: &Caller, name: &str, tag: &str) -> RegistryResult<TagDetails> {
        let id = self.route(caller, name).await?;
        let (row, images) = self
            .tag_details(&id.storage(), tag)
            .await?
            .ok_or_else(|| RegistryError::ManifestUnknown(format!("{name}:{tag}")))?;
        // The page shows what is stored: never an upstream request.
        let referrers = self.core.referrers(&id.storage(), &row.digest, None).await?;
        Ok(TagDetails { row, images, referrers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_names_become_pull_names() {
        let team: RepoName = "team/app".parse().unwrap();
        let id = RepoId::from_storage(&team);
        assert_eq!((id.to_string(), Kind::of(&id)), ("team/app".to_string(), Kind::Pushed));
        let m = crate::store::layout::mirror_repository("docker.io", "library/alpine");
        let id = RepoId::from_storage(&m);
        assert_eq!(
            (id.to_string(), Kind::of(&id)),
            ("docker.io/library/alpine".to_string(), Kind::Mirrored("docker.io".into()))
        );
    }

    #[test]
    fn pages_are_clamped() {
        let p = page_of((0..120).collect::<Vec<_>>(), 9);
        assert_eq!((p.page, p.pages, p.total, p.items.len()), (3, 3, 120, 20));
        let empty = page_of(Vec::<u8>::new(), 1);
        assert_eq!((empty.page, empty.pages), (1, 1));
    }
}
