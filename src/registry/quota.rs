//! Byte quotas on pushed repositories (`[[quota]]`): the one owner of "may
//! this push take more space". A quota names repositories (patterns over the
//! one identity, e.g. a team's `team/*`) and a limit; its usage is the size of
//! every blob (layers, configs, manifests) any of its repositories links,
//! each counted once however many of them share it. A blob upload or a
//! manifest push that would take a quota past its limit is refused with 403
//! `DENIED` ("quota exceeded: used X of Y") and leaves nothing linked.
//!
//! Usage is a running count in memory: counted from the index (one pass over
//! its blobs) at the first check, after anything took references away or
//! replaced them (a delete, GC, eviction, a lifecycle turn's rebuild; the
//! index's `rewrites`), and before any refusal; between those, each link a
//! check lets through adds its size. Races can only make it count a blob
//! twice, never miss one, and a refusal is always confirmed by a full count,
//! so a push is refused only by the index's truth. Nothing is kept on disk
//! that a crash could skew. (BENCHMARKS.md: the cost per check.)
//!
//! On storage several replicas share, each replica's index holds the bucket
//! as of its last lifecycle turn plus what it linked since: a quota is
//! enforced per replica on that view.

use bytesize::ByteSize;
use serde::Serialize;

use crate::config::QuotaRule;
use crate::oci::{Digest, RepoName};
use crate::store::index::BlobRefs;

use super::identity::{RepoId, RepoPattern};
use super::namespace::Namespace;

struct Quota {
    patterns: Vec<RepoPattern>,
    max: u64,
    name: String,
}

#[derive(Default)]
pub struct Quotas {
    quotas: Vec<Quota>,
    /// The running count (`None` until the first check).
    count: tokio::sync::Mutex<Option<Count>>,
}

/// Each quota's use (in `quotas`' order) as of the index's `rewrites` = the
/// value here, plus what was linked since. One lock for reading and adding,
/// so two links cannot both fit in the room for one.
struct Count {
    rewrites: u64,
    used: Vec<u64>,
}

/// One quota's limit and use (`berth usage`, `/metrics`).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Usage {
    pub quota: String,
    pub repositories: Vec<String>,
    pub used: u64,
    pub max: u64,
}

impl Quotas {
    pub fn new(cfg: &[QuotaRule], namespace: &Namespace) -> Result<Quotas, String> {
        let mut quotas = Vec::new();
        for (i, q) in cfg.iter().enumerate() {
            let mut patterns = Vec::new();
            for p in &q.repositories {
                patterns.extend(namespace.resolve_pattern(p).map_err(|e| format!("quota[{i}]: {e}"))?);
            }
            if patterns.is_empty() {
                return Err(format!("quota[{i}]: repositories is empty"));
            }
            quotas.push(Quota { patterns, max: q.max_size.as_u64(), name: format!("quota[{i}]") });
        }
        Ok(Quotas { quotas, count: Default::default() })
    }

    pub fn is_empty(&self) -> bool {
        self.quotas.is_empty()
    }

    fn covers(q: &Quota, repo: &str) -> bool {
        let Ok(name) = repo.parse::<RepoName>() else { return false };
        let id = RepoId::Local(name);
        q.patterns.iter().any(|p| p.matches(&id))
    }

    /// Each quota's use, from the index's blobs (each blob once per quota).
    pub fn usage(&self, blobs: &[(Digest, u64, BlobRefs)]) -> Vec<Usage> {
        self.quotas
            .iter()
            .map(|q| Usage {
                quota: q.name.clone(),
                repositories: q.patterns.iter().map(ToString::to_string).collect(),
                used: blobs
                    .iter()
                    .filter(|(_, _, refs)| refs.pushed.iter().any(|r| Self::covers(q, r)))
                    .map(|(_, size, _)| size)
                    .sum(),
                max: q.max,
            })
            .collect()
    }

    /// Each quota with its use from `used` (in the quotas' order).
    fn usage_of(&self, used: &[u64]) -> Vec<Usage> {
        self.quotas
            .iter()
            .zip(used)
            .map(|(q, u)| Usage {
                quota: q.name.clone(),
                repositories: q.patterns.iter().map(ToString::to_string).collect(),
                used: *u,
                max: q.max,
            })
            .collect()
    }

    /// Why adding `extra` bytes to `repo` is refused, given the use now
    /// (`None`: it fits every quota that covers `repo`).
    pub fn refuses(&self, usage: &[Usage], repo: &RepoName, extra: u64) -> Option<String> {
        self.quotas.iter().zip(usage).find_map(|(q, u)| {
            (Self::covers(q, repo.as_str()) && u.used + extra > q.max).then(|| {
                format!(
                    "quota exceeded: used {} of {} ({} covers {}; this push needs {} more)",
                    ByteSize::b(u.used),
                    ByteSize::b(q.max),
                    q.name,
                    u.repositories.join(", "),
                    ByteSize::b(extra)
                )
            })
        })
    }

    /// Each quota in canonical form (what `berth config check` prints).
    pub fn describe(&self) -> Vec<String> {
        self.quotas
            .iter()
            .map(|q| {
                let patterns: Vec<String> = q.patterns.iter().map(ToString::to_string).collect();
                format!("{} covers: {}; at most {}", q.name, patterns.join(", "), ByteSize::b(q.max))
            })
            .collect()
    }
}

impl super::Registry {
    /// Each quota's use now, counted from the index (`berth usage`); the
    /// running count starts again from it.
    pub async fn quota_usage(&self) -> super::RegistryResult<Vec<Usage>> {
        if self.quotas.is_empty() {
            return Ok(Vec::new());
        }
        let mut count = self.quotas.count.lock().await;
        Ok(self.quotas.usage_of(self.recount(&mut count).await?))
    }

    /// Each quota's use by the running count (`/metrics`, the web page).
    pub async fn quota_usage_counted(&self) -> super::RegistryResult<Vec<Usage>> {
        if self.quotas.is_empty() {
            return Ok(Vec::new());
        }
        let mut count = self.quotas.count.lock().await;
        let (used, _) = self.current(&mut count).await?;
        Ok(self.quotas.usage_of(used))
    }

    /// Counts every quota's use from the index into `count`.
    async fn recount<'a>(&self, count: &'a mut Option<Count>) -> super::RegistryResult<&'a [u64]> {
        let (rewrites, blobs) = self.core.store.indexed(|index| Ok((index.rewrites(), index.blobs()?))).await?;
        let used = self.quotas.usage(&blobs).into_iter().map(|u| u.used).collect();
        Ok(&count.insert(Count { rewrites, used }).used)
    }

    /// The running count, counted again first if references were taken away
    /// or replaced since (`true`: it was, so it includes every link made so far).
    async fn current<'a>(&self, count: &'a mut Option<Count>) -> super::RegistryResult<(&'a mut [u64], bool)> {
        let rewrites = self.core.store.indexed(|index| Ok(index.rewrites())).await?;
        let fresh = count.as_ref().is_none_or(|c| c.rewrites != rewrites);
        if fresh {
            self.recount(count).await?;
        }
        Ok((&mut count.as_mut().expect("counted above").used, fresh))
    }

    /// The pushed repositories that link `d` now (taken before a link, for `quota_after_link`).
    pub(super) async fn quota_refs(&self, d: &Digest) -> super::RegistryResult<Option<Vec<String>>> {
        if self.quotas.is_empty() {
            return Ok(None);
        }
        let digest = d.clone();
        Ok(Some(self.core.store.indexed(move |index| index.refs(&digest)).await?.pushed))
    }

    /// After `d` (of `size` bytes) was linked into `repo`: if that took a
    /// quota past its limit (the blob was not counted in it before: `before`
    /// were its repositories then), the link is undone and the push refused.
    ///
    /// The running count gains `size` in each quota that did not count `d`
    /// yet. A count that raced with this link can only have counted it twice
    /// (over, never under), so a refusal is confirmed by counting again.
    pub(super) async fn quota_after_link(
        &self,
        repo: &RepoName,
        d: &Digest,
        size: u64,
        before: Option<Vec<String>>,
    ) -> super::RegistryResult<()> {
        let Some(before) = before else { return Ok(()) };
        if before.iter().any(|r| r == repo.as_str()) {
            return Ok(());
        }
        let new_in = |q: &Quota| Quotas::covers(q, repo.as_str()) && !before.iter().any(|r| Quotas::covers(q, r));
        let mut count = self.quotas.count.lock().await;
        let (used, fresh) = self.current(&mut count).await?;
        if !fresh {
            // Counted before this link: it adds to each quota it is new in.
            for (q, u) in self.quotas.quotas.iter().zip(used.iter_mut()) {
                if new_in(q) {
                    *u += size;
                }
            }
        }
        let over = |used: &[u64]| self.quotas.quotas.iter().zip(used).any(|(q, u)| new_in(q) && *u > q.max);
        if !over(used) || (!fresh && !over(self.recount(&mut count).await?)) {
            return Ok(());
        }
        let usage = self.quotas.usage_of(count.as_ref().expect("counted above").used.as_slice());
        let before_use: Vec<Usage> =
            usage.iter().map(|x| Usage { used: x.used.saturating_sub(size), ..x.clone() }).collect();
        let why = self.quotas.refuses(&before_use, repo, size).unwrap_or_else(|| "quota exceeded".into());
        drop(count);
        let _writing = self.core.locks.lock(repo).await;
        // The unlink moves the index's `rewrites`: the next check counts again.
        self.core.store.unlink_blob(repo, d).await?;
        self.core.written(repo);
        Err(super::RegistryError::Denied(why))
    }

    /// Before a manifest of `size` bytes is stored in `repo`: refused if it
    /// would take a quota past its limit; otherwise the running count gains it.
    pub(super) async fn quota_for_manifest(&self, repo: &RepoName, d: &Digest, size: u64) -> super::RegistryResult<()> {
        let Some(before) = self.quota_refs(d).await? else { return Ok(()) };
        let new_in = |q: &Quota| Quotas::covers(q, repo.as_str()) && !before.iter().any(|r| Quotas::covers(q, r));
        let fits = |used: &[u64]| self.quotas.quotas.iter().zip(used).all(|(q, u)| !new_in(q) || u + size <= q.max);
        let mut count = self.quotas.count.lock().await;
        let (used, fresh) = self.current(&mut count).await?;
        if !fits(used) && (fresh || !fits(self.recount(&mut count).await?)) {
            let usage = self.quotas.usage_of(count.as_ref().expect("counted above").used.as_slice());
            let why = self.quotas.refuses(&usage, repo, size).unwrap_or_else(|| "quota exceeded".into());
            return Err(super::RegistryError::Denied(why));
        }
        // Stored next: counted now (a failed store only over-counts until the next count).
        let used = &mut count.as_mut().expect("counted above").used;
        for (q, u) in self.quotas.quotas.iter().zip(used.iter_mut()) {
            if new_in(q) {
                *u += size;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_blobs_count_once_per_quota_and_the_limit_refuses() {
        let cfg = vec![QuotaRule { repositories: vec!["team/*".into()], max_size: ByteSize::b(100) }];
        let q = Quotas::new(&cfg, &Namespace::new(&crate::config::MirrorConfig::default())).unwrap();
        let d = |i: u8| format!("sha256:{}", hex::encode([i; 32])).parse::<Digest>().unwrap();
        let refs =
            |repos: &[&str]| BlobRefs { pushed: repos.iter().map(|s| s.to_string()).collect(), mirrored: vec![] };
        let blobs = vec![
            (d(1), 40, refs(&["team/a", "team/b"])),
            (d(2), 30, refs(&["team/b"])),
            (d(3), 1000, refs(&["other/x"])),
        ];
        let usage = q.usage(&blobs);
        assert_eq!(usage[0].used, 70, "the shared blob once");
        let team: RepoName = "team/c".parse().unwrap();
        assert_eq!(q.refuses(&usage, &team, 30), None);
        let why = q.refuses(&usage, &team, 31).unwrap();
        assert!(why.starts_with("quota exceeded: used 70 B of 100 B"), "{why}");
        assert_eq!(q.refuses(&usage, &"other/x".parse().unwrap(), 10_000), None);
    }
}
