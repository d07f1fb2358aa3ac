//! Mirrored content leaves the store here, by two rules, in one pass that
//! housekeeping runs every `mirror.eviction_interval`:
//!
//! - **Expiry.** In each mirrored repository, tags not served within the
//!   upstream's TTL go first; then the manifests that no remaining tag, no
//!   kept index and no recent use keeps; then the blob links that no remaining
//!   manifest references and no recent use keeps. Every pull refreshes what it
//!   touches (`uses`), so a popular image never expires.
//! - **The cap.** When the bytes held only by mirrored content pass
//!   `mirror.max_size`, the least recently used mirrored manifests (and then
//!   blob links) go, one at a time, until the total is back under 90% of it.
//!
//! Pinned images are exempt from both. Blob data goes only when no repository
//! links it any more (the index says so) and no operation holds a lease on it
//! (`store::leases`): data that pushed content uses is never touched, and no
//! upload, fetch, mount or download loses data it is about to use. Tags and
//! manifests are removed under the repository's write lock, bumping its
//! generation, so no cached read serves what was evicted.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use crate::oci::{Digest, RepoName, Tag};
use crate::store::index::UseKind;

use super::identity::{glob, RepoId, RepoPattern};
use super::namespace::Namespace;
use super::uses::now_secs;
use super::{Lifecycle, RegistryResult};

/// What one pass removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EvictionReport {
    pub tags: usize,
    pub manifests: usize,
    pub blob_links: usize,
    pub blobs: usize,
    pub bytes_freed: u64,
    /// Bytes held only by mirrored content after the pass.
    pub mirror_bytes: u64,
    pub millis: u128,
}

/// `mirror.pin`: images that never leave. Each pin is a repository
/// pattern (resolved into the identity space like an access rule's, so
/// `alpine:3.20` and `docker.io/library/alpine:3.20` are one pin) and, after
/// a colon, an optional tag pattern.
pub struct Pins(Vec<(RepoPattern, Option<String>)>);

impl Pins {
    pub fn new(patterns: &[String], namespace: &Namespace) -> Result<Self, String> {
        let mut pins = Vec::new();
        // With mirroring off (`--no-mirror`) nothing expires: pins hold nothing.
        if !namespace.mirroring() {
            return Ok(Pins(pins));
        }
        for p in patterns {
            // `host:port/name` has a colon too; a tag never contains '/'.
            let (repo, tag) = match p.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
                Some((r, t)) => (r, Some(t.to_string())),
                None => (p.as_str(), None),
            };
            let mirrored: Vec<RepoPattern> = namespace
                .resolve_pattern(repo)
                .map_err(|e| format!("mirror.pin {p:?}: {e}"))?
                .into_iter()
                .filter(|r| matches!(r, RepoPattern::Mirrored { .. }))
                .collect();
            if mirrored.is_empty() {
                return Err(format!("mirror.pin {p:?} names no mirrored repository (pushed content never expires)"));
            }
            pins.extend(mirrored.into_iter().map(|r| (r, tag.clone())));
        }
        Ok(Pins(pins))
    }

    /// Whether tag `tag` of `repo` is pinned (`None`: whether every tag of the repository is).
    pub fn pinned(&self, repo: &RepoId, tag: Option<&str>) -> bool {
        self.0.iter().any(|(r, t)| {
            r.matches(repo)
                && match t {
                    Some(t) => tag.is_some_and(|tag| glob(t, tag)),
                    None => true,
                }
        })
    }

    /// Whether any pin names `repo` or one of its tags.
    pub fn touches(&self, repo: &RepoId) -> bool {
        self.0.iter().any(|(r, _)| r.matches(repo))
    }

    /// Each pin in canonical form (what `berth config check` prints).
    pub fn describe(&self) -> Vec<String> {
        self.0.iter().map(|(r, t)| t.as_ref().map_or_else(|| r.to_string(), |t| format!("{r}:{t}"))).collect()
    }
}

/// One mirrored repository as an eviction pass sees it.
struct Repo {
    id: RepoId,
    storage: RepoName,
    ttl: Duration,
}

impl Repo {
    /// The `evict` event of a tag, a manifest or (`blob`) a blob link of this repository.
    fn evicted(&self, tag: Option<&str>, digest: Option<&Digest>, blob: bool) -> crate::events::Event {
        let mut target = crate::events::Target::deleted(&self.id.to_string(), digest, tag);
        if blob {
            target.media_type = "application/octet-stream".into();
        }
        let upstream = match &self.id {
            RepoId::Mirrored { host, .. } => host.as_str(),
            RepoId::Local(_) => "",
        };
        crate::events::Event::new("evict", target).mirrored(upstream)
    }
}

impl Lifecycle {
    /// Writes the uses gathered since the last flush to the index (on
    /// shared storage, to the storage, for whichever replica takes the next
    /// lifecycle turn).
    pub async fn flush_uses(&self) -> RegistryResult<()> {
        let uses = self.uses.take();
        if self.core.store.shared() {
            return Ok(self.core.store.publish_uses(&uses).await?);
        }
        Ok(self.core.store.indexed(move |index| index.record_uses(&uses)).await?)
    }

    fn mirrored_repos(&self) -> Vec<(String, Duration)> {
        let Some(mirror) = &self.mirror else { return vec![] };
        mirror.hosts().map(|h| (h.to_string(), mirror.upstream(h).and_then(|u| u.ttl).unwrap_or(self.ttl))).collect()
    }

    /// One pass of expiry and the cap. Does nothing until the index covers
    /// the whole tree (a first start indexes it in the background).
    pub async fn evict(&self) -> RegistryResult<EvictionReport> {
        let mut report = EvictionReport::default();
        // Pushed content's pulls are recorded too: flushed with or without a mirror.
        self.flush_uses().await?;
        if self.mirror.is_none() {
            return Ok(report);
        }
        let started = std::time::Instant::now();
        // On shared storage, one replica's pass at a time (the others skip theirs).
        let turn = match self.core.store.shared() {
            true => match self.core.store.lifecycle_turn(Duration::ZERO).await? {
                Some(turn) => Some(turn),
                None => return Ok(report),
            },
            false => None,
        };
        if !self.core.store.indexed(|index| index.is_indexed()).await? {
            return Ok(report);
        }
        let now = now_secs();
        let mut repos = Vec::new();
        for (host, ttl) in self.mirrored_repos() {
            for remote in self.core.store.list_mirrored_content(&host).await? {
                let Some(id) = RepoId::listed_mirrored(&host, &remote) else { continue };
                repos.push(Repo { storage: id.storage(), id, ttl });
            }
        }
        // What the repositories' expiry frees is deleted together at the end
        // (one index write for all of it, not one per repository).
        // Blobs a lease kept from an earlier pass's deletion come first.
        let (mut candidates, mut gone_uses) = (self.core.store.deferred_deletions().await?, Vec::new());
        for repo in &repos {
            let cutoff = now.saturating_sub(repo.ttl.as_secs());
            self.expire_repo(repo, cutoff, &mut report, &mut candidates, &mut gone_uses).await?;
        }
        self.core.store.indexed(move |index| index.forget_uses(&gone_uses)).await?;
        self.delete_blob_data(candidates, &mut report).await?;
        report.mirror_bytes = self.store_bytes_now().await?.0;
        if let Some(max) = self.max_size {
            if report.mirror_bytes > max {
                self.shrink_to(&repos, max / 10 * 9, &mut report).await?;
            }
        }
        if let Some(turn) = turn {
            self.core.store.end_turn_logged(turn).await;
        }
        report.millis = started.elapsed().as_millis();
        let m = &self.core.metrics;
        m.eviction_passes.inc();
        for (object, n) in [
            ("tag", report.tags),
            ("manifest", report.manifests),
            ("blob_link", report.blob_links),
            ("blob", report.blobs),
        ] {
            m.evicted.with_label_values(&[object]).inc_by(n as u64);
        }
        m.evicted_bytes.inc_by(report.bytes_freed);
        self.last_runs.lock().unwrap().eviction = Some((std::time::SystemTime::now(), report.clone()));
        Ok(report)
    }

    /// Bytes of blob data held only by mirrored repositories, and by the rest
    /// (pushed ones, alone or with mirrored ones), by the index.
    pub(super) async fn store_bytes_now(&self) -> RegistryResult<(u64, u64)> {
        let blobs = self.core.store.indexed(|index| index.blobs()).await?;
        let mut bytes = (0, 0);
        for (_, size, refs) in blobs {
            if refs.pushed.is_empty() && !refs.mirrored.is_empty() {
                bytes.0 += size;
            } else if !refs.is_empty() {
                bytes.1 += size;
            }
        }
        Ok(bytes)
    }

    /// Last uses of `kind` in `repo`; objects with none recorded (indexed
    /// from disk, or stored before uses were kept) count as used now.
    async fn last_uses(&self, kind: UseKind, repo: &RepoName, keys: &[String]) -> RegistryResult<HashMap<String, u64>> {
        let r = repo.clone();
        let mut uses: HashMap<String, u64> =
            self.core.store.indexed(move |index| index.uses(kind, &r)).await?.into_iter().collect();
        let now = now_secs();
        for key in keys {
            if !uses.contains_key(key) {
                self.uses.record(kind, repo, key);
                uses.insert(key.clone(), now);
            }
        }
        Ok(uses)
    }

    /// Expires what `repo` no longer keeps; the blobs it unlinked and the
    /// uses to forget are added to `candidates` and `gone_uses`.
    async fn expire_repo(
        &self,
        repo: &Repo,
        cutoff: u64,
        report: &mut EvictionReport,
        candidates: &mut Vec<Digest>,
        gone_uses: &mut Vec<String>,
    ) -> RegistryResult<()> {
        let r = &repo.storage;
        if self.pins.pinned(&repo.id, None) {
            return Ok(());
        }
        let _writing = self.core.locks.lock(r).await;
        let changed_before = report.tags + report.manifests + report.blob_links;
        // Tags.
        let tags: Vec<String> = self.core.store.list_tags(r).await?;
        let tag_uses = self.last_uses(UseKind::Tag, r, &tags).await?;
        let mut kept_tags = Vec::new();
        for tag in &tags {
            let Ok(t) = tag.parse::<Tag>() else { continue };
            let pinned = self.pins.pinned(&repo.id, Some(tag));
            if pinned || tag_uses.get(tag).is_some_and(|&at| at >= cutoff) {
                kept_tags.push(t);
            } else if self.core.store.delete_tag(r, &t).await? {
                report.tags += 1;
                self.core.events.emit(repo.evicted(Some(tag), None, false));
            }
        }
        // Manifests: roots are what remaining tags point at and what was used lately.
        let manifests = self.core.store.list_manifests(r).await?;
        let keys: Vec<String> = manifests.iter().map(ToString::to_string).collect();
        let manifest_uses = self.last_uses(UseKind::Manifest, r, &keys).await?;
        let mut roots: Vec<Digest> = Vec::new();
        for t in &kept_tags {
            if let Some(d) = self.core.store.resolve_tag(r, t).await? {
                roots.push(d);
            }
        }
        roots.extend(
            manifests.iter().filter(|m| manifest_uses.get(&m.to_string()).is_some_and(|&at| at >= cutoff)).cloned(),
        );
        let kept = self.core.reach(roots).await;
        for m in manifests.iter().filter(|m| !kept.manifests.contains_key(*m)) {
            if self.core.store.delete_manifest(r, m).await?.is_some() {
                report.manifests += 1;
                self.core.events.emit(repo.evicted(None, Some(m), false));
                candidates.push(m.clone());
                gone_uses.push(crate::store::index::use_key(UseKind::Manifest, r, &m.to_string()));
            }
        }
        // Blob links no kept manifest references and no recent use keeps.
        let links = self.core.store.list_layer_links(r).await?;
        let keys: Vec<String> = links.iter().map(ToString::to_string).collect();
        let blob_uses = self.last_uses(UseKind::Blob, r, &keys).await?;
        let expired: Vec<Digest> = links
            .iter()
            .filter(|b| !kept.blobs.contains_key(*b) && blob_uses.get(&b.to_string()).is_none_or(|&at| at < cutoff))
            .cloned()
            .collect();
        for b in self.core.store.unlink_blobs(r, &expired).await? {
            report.blob_links += 1;
            self.core.events.emit(repo.evicted(None, Some(&b), true));
            gone_uses.push(crate::store::index::use_key(UseKind::Blob, r, &b.to_string()));
            candidates.push(b);
        }
        for tag in tags.iter().filter(|t| !kept_tags.iter().any(|k| k.as_str() == t.as_str())) {
            gone_uses.push(crate::store::index::use_key(UseKind::Tag, r, tag));
        }
        // Cached reads of the repository stop counting only if something went.
        if report.tags + report.manifests + report.blob_links > changed_before {
            if kept_tags.is_empty() && kept.manifests.is_empty() {
                self.core.store.remove_emptied_mirror(r).await?;
            }
            self.core.written(r);
        }
        Ok(())
    }

    /// Deletes the data of blobs nothing links any more (and nothing leases).
    async fn delete_blob_data(&self, candidates: Vec<Digest>, report: &mut EvictionReport) -> RegistryResult<()> {
        let (blobs, freed) = self.core.store.delete_unreferenced_blobs(&candidates).await?;
        report.blobs += blobs;
        report.bytes_freed += freed;
        Ok(())
    }

    /// Evicts least recently used mirrored manifests (then lone blob links)
    /// until the mirror's bytes are at most `target`.
    async fn shrink_to(&self, repos: &[Repo], target: u64, report: &mut EvictionReport) -> RegistryResult<()> {
        // (last use, repo index, digest, is a manifest)
        let mut units: BTreeMap<(u64, usize, String), bool> = BTreeMap::new();
        for (i, repo) in repos.iter().enumerate() {
            if self.pins.pinned(&repo.id, None) {
                continue;
            }
            let r = &repo.storage;
            let pinned_targets = self.pinned_manifests(repo).await?;
            let manifests = self.core.store.list_manifests(r).await?;
            let keys: Vec<String> = manifests.iter().map(ToString::to_string).collect();
            for (key, at) in self.last_uses(UseKind::Manifest, r, &keys).await? {
                if keys.contains(&key) && !pinned_targets.contains(&key) {
                    units.insert((at, i, key), true);
                }
            }
            // Blob links no manifest of the repository references are units of their own;
            // the others leave with their manifests.
            let referenced: HashSet<String> =
                self.core.reach(manifests.iter().cloned()).await.blobs.keys().map(ToString::to_string).collect();
            let links: Vec<String> = self
                .core
                .store
                .list_layer_links(r)
                .await?
                .iter()
                .map(ToString::to_string)
                .filter(|l| !referenced.contains(l))
                .collect();
            for (key, at) in self.last_uses(UseKind::Blob, r, &links).await? {
                if links.contains(&key) {
                    units.insert((at, i, key), false);
                }
            }
        }
        // The data of what goes is deleted together at the end (on shared
        // storage each deletion walks the bucket's links once, `store::shared`);
        // until then, what a unit frees is what the index says nothing links any more.
        let (mut all_candidates, mut counted, mut touched) = (Vec::new(), HashSet::new(), BTreeSet::new());
        for ((_, i, key), is_manifest) in units {
            if report.mirror_bytes <= target {
                break;
            }
            let repo = &repos[i];
            let r = &repo.storage;
            let Ok(d) = key.parse::<Digest>() else { continue };
            let mut candidates = Vec::new();
            {
                let _writing = self.core.locks.lock(r).await;
                if is_manifest {
                    let Some(removed_tags) = self.core.store.delete_manifest(r, &d).await? else { continue };
                    report.tags += removed_tags.len();
                    report.manifests += 1;
                    for t in &removed_tags {
                        self.core.events.emit(repo.evicted(Some(t.as_str()), None, false));
                    }
                    self.core.events.emit(repo.evicted(None, Some(&d), false));
                    candidates.push(d.clone());
                    // Blob links of this repository that no remaining manifest references.
                    let remaining = self.core.reach(self.core.store.list_manifests(r).await?).await;
                    let blobs: Vec<Digest> = self
                        .core
                        .reach([d.clone()])
                        .await
                        .blobs
                        .into_keys()
                        .filter(|b| !remaining.blobs.contains_key(b))
                        .collect();
                    let gone = self.core.store.unlink_blobs(r, &blobs).await?;
                    report.blob_links += gone.len();
                    gone.iter().for_each(|b| self.core.events.emit(repo.evicted(None, Some(b), true)));
                    candidates.extend(gone);
                } else {
                    let gone = self.core.store.unlink_blobs(r, std::slice::from_ref(&d)).await?;
                    report.blob_links += gone.len();
                    gone.iter().for_each(|b| self.core.events.emit(repo.evicted(None, Some(b), true)));
                    candidates.extend(gone);
                }
                self.core.written(r);
                touched.insert(i);
            }
            let lookup = candidates.clone();
            let unlinked: Vec<(Digest, bool, Option<u64>)> = self
                .core
                .store
                .indexed(move |index| {
                    lookup.iter().map(|d| Ok((d.clone(), index.refs(d)?.is_empty(), index.size(d)?))).collect()
                })
                .await?;
            for (d, nothing_links, size) in unlinked {
                if nothing_links && counted.insert(d) {
                    report.mirror_bytes = report.mirror_bytes.saturating_sub(size.unwrap_or(0));
                }
            }
            all_candidates.extend(candidates);
        }
        for i in touched {
            let r = &repos[i].storage;
            let _writing = self.core.locks.lock(r).await;
            self.core.store.remove_emptied_mirror(r).await?;
        }
        self.delete_blob_data(all_candidates, report).await?;
        report.mirror_bytes = self.store_bytes_now().await?.0;
        Ok(())
    }

    /// The manifests (digests) that pinned tags of `repo` keep: what they
    /// point at and, through indexes, everything below.
    async fn pinned_manifests(&self, repo: &Repo) -> RegistryResult<HashSet<String>> {
        let mut roots = Vec::new();
        for tag in self.core.store.list_tags(&repo.storage).await? {
            if !self.pins.pinned(&repo.id, Some(&tag)) {
                continue;
            }
            let Ok(t) = tag.parse::<Tag>() else { continue };
            if let Some(d) = self.core.store.resolve_tag(&repo.storage, &t).await? {
                roots.push(d);
            }
        }
        Ok(self.core.reach(roots).await.manifests.into_keys().map(|d| d.to_string()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_match_tags_repositories_and_patterns() {
        let mut cfg = crate::config::MirrorConfig::default();
        cfg.upstreams.push(crate::config::UpstreamConfig::new("ghcr.io", "https://ghcr.io"));
        cfg.upstreams.push(crate::config::UpstreamConfig::new("registry.corp:5000", "https://registry.corp:5000"));
        let ns = Namespace::new(&cfg);
        let pins = Pins::new(
            &[
                "alpine:3.20".into(),
                "docker.io/library/busybox".into(),
                "ghcr.io/owner/*".into(),
                "registry.corp:5000/team/app:v*".into(),
            ],
            &ns,
        )
        .unwrap();
        let id = |host: &str, remote: &str| RepoId::Mirrored { host: host.into(), remote: remote.parse().unwrap() };
        assert!(pins.pinned(&id("docker.io", "library/alpine"), Some("3.20")));
        assert!(!pins.pinned(&id("docker.io", "library/alpine"), Some("3.19")));
        assert!(!pins.pinned(&id("docker.io", "library/alpine"), None), "one tag does not pin the repository");
        assert!(pins.touches(&id("docker.io", "library/alpine")), "but it touches it");
        assert!(pins.pinned(&id("docker.io", "library/busybox"), None));
        assert!(pins.pinned(&id("docker.io", "library/busybox"), Some("latest")));
        assert!(pins.pinned(&id("ghcr.io", "owner/a/b"), Some("x")));
        assert!(!pins.pinned(&id("ghcr.io", "other/a"), Some("x")));
        assert!(pins.pinned(&id("registry.corp:5000", "team/app"), Some("v1")));
        assert!(!pins.pinned(&id("registry.corp:5000", "team/app"), Some("latest")));
        assert!(!pins.touches(&RepoId::Local("library/alpine".parse().unwrap())));
        assert_eq!(pins.describe()[0], "docker.io/library/alpine:3.20");
        assert!(Pins::new(&["quay.io/x/y".into()], &ns).is_err(), "a registry berth does not mirror");
    }
}
