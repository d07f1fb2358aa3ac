//! Retention of pushed images (`[[retention]]`): which tags and untagged
//! manifests go, decided in one place over the repository's one identity,
//! run on a schedule, by `berth retention` and as a dry run.
//!
//! Each rule that covers a repository judges each tag: **keep** (among its
//! `keep_last` newest by push time, or matching `keep_tags`), **remove**
//! (every removal criterion it sets holds: beyond `keep_last`, pushed more
//! than `remove_older_than` ago, not pulled for `unpulled_for`), or no
//! opinion. A tag goes when some rule says remove and none says keep (keep
//! rules win), and no immutable rule forbids its delete. Then an untagged
//! manifest older than a rule's `untagged_after` goes, unless a remaining
//! tag reaches it (an index's platforms) or it refers to a manifest that stays
//! (a signature of a kept image). GC then frees the blobs as before.
//!
//! A removal is re-checked under the repository's write lock just before it
//! is made: a tag pushed again or pulled since the judgement stays (the
//! lease/grace discipline GC follows), and is reported as held back.

use std::collections::HashSet;
use std::time::Duration;

use serde::Serialize;

use crate::config::RetentionRule;
use crate::oci::{Digest, RepoName, Tag};
use crate::store::index::UseKind;

use super::identity::{glob, RepoId, RepoPattern};
use super::namespace::Namespace;
use super::uses::now_secs;
use super::{Registry, RegistryResult};

struct Rule {
    patterns: Vec<RepoPattern>,
    cfg: RetentionRule,
    name: String,
}

#[derive(Default)]
pub struct Retention {
    rules: Vec<Rule>,
}

/// What a rule says of one tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Keep,
    Remove,
    Abstain,
}

/// What judging a tag needs: its name, when it was pushed and last pulled (unix seconds).
#[derive(Debug, Clone)]
pub struct TagFacts {
    pub name: String,
    pub pushed: u64,
    pub last_pull: Option<u64>,
}

/// One thing the run removed (or, dry, would remove), and the rule that decided.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Removal {
    pub repository: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub digest: String,
    pub rule: String,
    pub why: String,
}

#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct RetentionReport {
    pub dry_run: bool,
    pub repositories: usize,
    pub tags_scanned: usize,
    pub removals: Vec<Removal>,
    /// What was judged removable but stays, and why (pushed or pulled during
    /// the run, an immutable tag).
    pub held: Vec<String>,
    pub millis: u128,
}

impl Retention {
    pub fn new(cfg: &[RetentionRule], namespace: &Namespace) -> Result<Retention, String> {
        let mut rules = Vec::new();
        for (i, r) in cfg.iter().enumerate() {
            let mut patterns = Vec::new();
            for p in &r.repositories {
                patterns.extend(namespace.resolve_pattern(p).map_err(|e| format!("retention[{i}]: {e}"))?);
            }
            if r.repositories.is_empty() {
                return Err(format!("retention[{i}]: repositories is empty"));
            }
            rules.push(Rule { patterns, cfg: r.clone(), name: format!("retention[{i}]") });
        }
        Ok(Retention { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    fn applicable(&self, repo: &RepoId) -> Vec<&Rule> {
        self.rules.iter().filter(|r| r.patterns.iter().any(|p| p.matches(repo))).collect()
    }

    /// Each rule in canonical form (what `berth config check` prints).
    pub fn describe(&self) -> Vec<String> {
        self.rules
            .iter()
            .map(|r| {
                let patterns: Vec<String> = r.patterns.iter().map(ToString::to_string).collect();
                format!("{} covers: {}", r.name, patterns.join(", "))
            })
            .collect()
    }
}

/// The tags of one repository that go, each with the rule that decided and
/// why, at unix time `now`: pure (unit-tested below).
fn judge(rules: &[&Rule], tags: &[TagFacts], now: u64) -> Vec<(usize, String, String)> {
    // Newest first, by push time (then name, for a stable order).
    let mut order: Vec<usize> = (0..tags.len()).collect();
    order.sort_by(|&a, &b| tags[b].pushed.cmp(&tags[a].pushed).then(tags[a].name.cmp(&tags[b].name)));
    let rank: Vec<usize> = {
        let mut rank = vec![0; tags.len()];
        for (r, &i) in order.iter().enumerate() {
            rank[i] = r;
        }
        rank
    };
    let mut out = Vec::new();
    for (i, t) in tags.iter().enumerate() {
        let mut remove_by = None;
        let mut kept = false;
        for rule in rules {
            let c = &rule.cfg;
            let verdict = if c.keep_last.is_some_and(|n| rank[i] < n) || c.keep_tags.iter().any(|p| glob(p, &t.name)) {
                Verdict::Keep
            } else {
                let mut why = Vec::new();
                let mut criteria = 0;
                let mut all = true;
                if let Some(n) = c.keep_last {
                    criteria += 1;
                    why.push(format!("not among the {n} newest"));
                }
                if let Some(age) = c.remove_older_than {
                    criteria += 1;
                    all &= now.saturating_sub(t.pushed) > age.as_secs();
                    why.push(format!("pushed more than {} ago", humantime::format_duration(age)));
                }
                if let Some(idle) = c.unpulled_for {
                    criteria += 1;
                    let last = t.last_pull.unwrap_or(t.pushed).max(t.pushed);
                    all &= now.saturating_sub(last) > idle.as_secs();
                    why.push(format!("not pulled for {}", humantime::format_duration(idle)));
                }
                match (criteria > 0, all) {
                    (true, true) => {
                        remove_by.get_or_insert((rule.name.clone(), why.join(", ")));
                        Verdict::Remove
                    }
                    _ => Verdict::Abstain,
                }
            };
            kept |= verdict == Verdict::Keep;
        }
        if let (Some((rule, why)), false) = (remove_by, kept) {
            out.push((i, rule, why));
        }
    }
    out
}

impl Registry {
    /// One retention run over every pushed repository a rule covers; with
    /// `dry_run`, what would go, removing nothing.
    pub async fn retention(&self, dry_run: bool) -> RegistryResult<RetentionReport> {
        self.retention_within(dry_run, super::gc::GC_TURN_WAIT).await
    }

    /// `retention`, waiting at most `wait` for another replica's lifecycle
    /// turn on shared storage (then `ReplicaBusy`; the web page's preview
    /// does not keep its viewer waiting).
    pub async fn retention_within(&self, dry_run: bool, wait: std::time::Duration) -> RegistryResult<RetentionReport> {
        let started = std::time::Instant::now();
        let judged_at = now_secs();
        let mut report = RetentionReport { dry_run, ..Default::default() };
        if self.retention.is_empty() {
            return Ok(report);
        }
        // Pulls recorded so far count (the index and what is still in memory).
        self.lifecycle.flush_uses().await?;
        // On shared storage, in this replica's lifecycle turn: the turn merges
        // every replica's published pulls into the index this run reads (a
        // pull through another replica counts once that replica published
        // it, every `mirror.eviction_interval`), and one run at a time.
        let turn = match self.core.store.shared() {
            true => match self.core.store.lifecycle_turn(wait).await? {
                Some(turn) => Some(turn),
                None => return Err(super::RegistryError::ReplicaBusy),
            },
            false => None,
        };
        let result = self.retain_all(dry_run, judged_at, &mut report).await;
        if let Some(turn) = turn {
            self.core.store.end_turn_logged(turn).await;
        }
        result?;
        report.millis = started.elapsed().as_millis();
        Ok(report)
    }

    async fn retain_all(&self, dry_run: bool, judged_at: u64, report: &mut RetentionReport) -> RegistryResult<()> {
        for name in self.core.store.list_pushed_repositories().await? {
            let Ok(repo) = name.parse::<RepoName>() else { continue };
            let id = RepoId::Local(repo.clone());
            let rules = self.retention.applicable(&id);
            if rules.is_empty() {
                continue;
            }
            report.repositories += 1;
            self.retain_repo(&repo, &id, &rules, dry_run, judged_at, report).await?;
        }
        Ok(())
    }

    async fn tag_facts(&self, repo: &RepoName) -> RegistryResult<Vec<(TagFacts, Digest)>> {
        let r = repo.clone();
        let pulls: std::collections::HashMap<String, u64> =
            self.core.store.indexed(move |index| index.uses(UseKind::Tag, &r)).await?.into_iter().collect();
        let mut out = Vec::new();
        for name in self.core.store.list_tags(repo).await? {
            let Ok(tag) = name.parse::<Tag>() else { continue };
            let Some(d) = self.core.store.resolve_tag(repo, &tag).await? else { continue };
            let pushed = self.core.store.tag_modified(repo, &tag).await?.map_or(0, secs);
            let last_pull = pulls.get(&name).copied();
            out.push((TagFacts { name, pushed, last_pull }, d));
        }
        Ok(out)
    }

    async fn retain_repo(
        &self,
        repo: &RepoName,
        id: &RepoId,
        rules: &[&Rule],
        dry_run: bool,
        judged_at: u64,
        report: &mut RetentionReport,
    ) -> RegistryResult<()> {
        let now = now_secs();
        let tags = self.tag_facts(repo).await?;
        report.tags_scanned += tags.len();
        let facts: Vec<TagFacts> = tags.iter().map(|(t, _)| t.clone()).collect();
        let mut gone: HashSet<String> = HashSet::new();
        for (i, rule, why) in judge(rules, &facts, now) {
            let (t, d) = &tags[i];
            if let Some(refused) = self.immutable.refuses_delete(id, &t.name) {
                report.held.push(format!("{id}:{}: {refused}", t.name));
                continue;
            }
            if !dry_run {
                // Pulls protect a tag only where a rule removes by them.
                let watch_pulls = rules.iter().any(|r| r.cfg.unpulled_for.is_some()).then_some(judged_at);
                match self.remove_tag_if_unchanged(repo, t, d, watch_pulls).await? {
                    Ok(()) => {}
                    Err(held) => {
                        report.held.push(format!("{id}:{}: {held}", t.name));
                        continue;
                    }
                }
            }
            gone.insert(t.name.clone());
            report.removals.push(Removal {
                repository: id.to_string(),
                tag: Some(t.name.clone()),
                digest: d.to_string(),
                rule,
                why,
            });
        }
        // Untagged manifests, after the tags that go.
        let Some((rule, after)) = rules.iter().find_map(|r| r.cfg.untagged_after.map(|u| (r.name.clone(), u))) else {
            return Ok(());
        };
        let remaining: Vec<Digest> =
            tags.iter().filter(|(t, _)| !gone.contains(&t.name)).map(|(_, d)| d.clone()).collect();
        let kept = self.core.reach(remaining).await;
        for m in self.core.store.list_manifests(repo).await? {
            if kept.manifests.contains_key(&m) {
                continue;
            }
            let pushed = self.core.store.revision_modified(repo, &m).await?.map_or(now, secs);
            if now.saturating_sub(pushed) <= after.as_secs() {
                continue;
            }
            // A signature or attestation of something that stays, stays.
            if let Ok(info) = self.core.load_manifest(&m).await {
                if info.info.subject.as_ref().is_some_and(|s| kept.manifests.contains_key(s)) {
                    continue;
                }
            }
            if !dry_run {
                let _writing = self.core.locks.lock(repo).await;
                // Tagged since it was judged (a push during the run): it stays.
                if self.tagged(repo, &m).await? {
                    report.held.push(format!("{id}@{m}: tagged during the run"));
                    continue;
                }
                self.core.store.delete_manifest(repo, &m).await?;
                self.core.written(repo);
                self.retention_event(repo, None, &m);
            }
            report.removals.push(Removal {
                repository: id.to_string(),
                tag: None,
                digest: m.to_string(),
                rule: rule.clone(),
                why: format!("untagged for more than {}", humantime::format_duration(after)),
            });
        }
        Ok(())
    }

    /// Removes tag `t` if it still names `d`, was not pushed again and (when
    /// rules remove by pulls: `watch_pulls`, when the run judged) was not
    /// pulled since; otherwise says why it stays. A pull records its use
    /// before it reads the tag: one seen before the delete keeps the tag; one
    /// seen right after it (a pull that read the tag just before it went)
    /// puts it back as it was.
    async fn remove_tag_if_unchanged(
        &self,
        repo: &RepoName,
        t: &TagFacts,
        d: &Digest,
        watch_pulls: Option<u64>,
    ) -> RegistryResult<Result<(), String>> {
        let Ok(tag) = t.name.parse::<Tag>() else { return Ok(Err("not a tag".into())) };
        let key = crate::store::index::use_key(UseKind::Tag, repo, &t.name);
        // In memory, or (a lifecycle pass flushed it meanwhile) in the index.
        let pulled = async || -> RegistryResult<bool> {
            let Some(judged_at) = watch_pulls else { return Ok(false) };
            if self.lifecycle.uses.latest_pending(&key).is_some_and(|at| at >= judged_at) {
                return Ok(true);
            }
            let k = key.clone();
            Ok(self.core.store.indexed(move |index| index.use_at(&k)).await?.is_some_and(|at| at >= judged_at))
        };
        let _writing = self.core.locks.lock(repo).await;
        if self.core.store.resolve_tag(repo, &tag).await?.as_ref() != Some(d)
            || self.core.store.tag_modified(repo, &tag).await?.map_or(0, secs) != t.pushed
        {
            return Ok(Err("pushed again during the run".into()));
        }
        if pulled().await? {
            return Ok(Err("pulled during the run".into()));
        }
        self.core.store.delete_tag(repo, &tag).await?;
        self.core.written(repo);
        if pulled().await? {
            let m = self.core.load_manifest(d).await?;
            self.core.store.put_manifest(repo, d, m.bytes.clone(), Some(&tag)).await?;
            self.core.written(repo);
            return Ok(Err("pulled during the run (put back)".into()));
        }
        self.retention_event(repo, Some(&t.name), d);
        Ok(Ok(()))
    }

    async fn tagged(&self, repo: &RepoName, m: &Digest) -> RegistryResult<bool> {
        for name in self.core.store.list_tags(repo).await? {
            let Ok(tag) = name.parse::<Tag>() else { continue };
            if self.core.store.resolve_tag(repo, &tag).await?.as_ref() == Some(m) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A removal's delete event (and its log line).
    fn retention_event(&self, repo: &RepoName, tag: Option<&str>, d: &Digest) {
        tracing::info!(repository = %repo, tag = tag.unwrap_or(""), digest = %d, "retention removed");
        let target = crate::events::Target::deleted(repo.as_str(), if tag.is_none() { Some(d) } else { None }, tag);
        let mut event = crate::events::Event::new("delete", target);
        event.actor.name = "berth retention".into();
        self.core.events.emit(event);
    }
}

fn secs(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// How often the server runs retention on its own (when rules exist).
pub const INTERVAL: Duration = Duration::from_secs(3600);

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(keep_last: Option<usize>, keep_tags: &[&str], older: Option<u64>, unpulled: Option<u64>) -> Rule {
        Rule {
            patterns: vec![],
            cfg: RetentionRule {
                repositories: vec!["*".into()],
                keep_last,
                keep_tags: keep_tags.iter().map(|s| s.to_string()).collect(),
                remove_older_than: older.map(Duration::from_secs),
                unpulled_for: unpulled.map(Duration::from_secs),
                untagged_after: None,
            },
            name: "retention[0]".into(),
        }
    }

    fn tags(n: usize, now: u64) -> Vec<TagFacts> {
        (0..n)
            .map(|i| TagFacts { name: format!("build-{i}"), pushed: now - 1000 + i as u64, last_pull: None })
            .collect()
    }

    #[test]
    fn the_newest_and_the_kept_patterns_stay() {
        let now = 1_000_000;
        let mut t = tags(20, now);
        t.push(TagFacts { name: "v1.0".into(), pushed: now - 5000, last_pull: None });
        let r = rule(Some(10), &["v*"], None, None);
        let gone: Vec<String> = judge(&[&r], &t, now).into_iter().map(|(i, _, _)| t[i].name.clone()).collect();
        assert_eq!(gone.len(), 10);
        assert!(gone
            .iter()
            .all(|n| n.starts_with("build-") && n.trim_start_matches("build-").parse::<usize>().unwrap() < 10));
    }

    #[test]
    fn every_set_criterion_must_hold_and_keep_rules_win() {
        let now = 10_000_000;
        let old_unpulled = TagFacts { name: "a".into(), pushed: now - 90 * 86400, last_pull: None };
        let old_pulled = TagFacts { name: "b".into(), pushed: now - 90 * 86400, last_pull: Some(now - 3600) };
        let young = TagFacts { name: "c".into(), pushed: now - 3600, last_pull: None };
        let t = vec![old_unpulled, old_pulled, young];
        let r = rule(None, &[], Some(30 * 86400), Some(7 * 86400));
        let gone: Vec<usize> = judge(&[&r], &t, now).into_iter().map(|(i, _, _)| i).collect();
        assert_eq!(gone, vec![0], "old and unpulled only");
        let keep_a = rule(None, &["a"], None, None);
        assert!(judge(&[&r, &keep_a], &t, now).is_empty(), "a keep rule wins");
        let why = &judge(&[&r], &t, now)[0].2;
        assert!(why.contains("pushed more than 30days ago") && why.contains("not pulled for 7days"), "{why}");
    }
}
