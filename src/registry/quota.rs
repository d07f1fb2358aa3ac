//! Byte quotas on pushed repositories (`[[quota]]`): the one owner of "may
//! this push take more space". A quota names repositories (patterns over the
//! one identity, e.g. a team's `team/*`) and a limit; its usage is the size of
//! every blob (layers, configs, manifests) any of its repositories links,
//! each counted once however many of them share it. A blob upload or a
//! manifest push that would take a quota past its limit is refused with 403
//! `DENIED` ("quota exceeded: used X of Y") and leaves nothing linked.
//!
//! Usage is computed from the index (one pass over its blobs), not kept as a
//! running count that a crash or another replica could skew: always right,
//! at a cost that grows with the store (measured in BENCHMARKS.md).

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
        Ok(Quotas { quotas })
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
    /// Each quota's use now (`berth usage`, `/metrics`).
    pub async fn quota_usage(&self) -> super::RegistryResult<Vec<Usage>> {
        if self.quotas.is_empty() {
            return Ok(Vec::new());
        }
        let blobs = self.core.store.indexed(|index| index.blobs()).await?;
        Ok(self.quotas.usage(&blobs))
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
        let usage = self.quota_usage().await?;
        let over = self.quotas.quotas.iter().zip(&usage).find(|(q, u)| {
            Quotas::covers(q, repo.as_str()) && u.used > q.max && !before.iter().any(|r| Quotas::covers(q, r))
        });
        let Some((_, u)) = over else { return Ok(()) };
        let before_use: Vec<Usage> =
            usage.iter().map(|x| Usage { used: x.used.saturating_sub(size), ..x.clone() }).collect();
        let why =
            self.quotas.refuses(&before_use, repo, size).unwrap_or_else(|| format!("quota exceeded: {}", u.quota));
        let _writing = self.core.locks.lock(repo).await;
        self.core.store.unlink_blob(repo, d).await?;
        self.core.written(repo);
        Err(super::RegistryError::Denied(why))
    }

    /// Before a manifest of `size` bytes is stored in `repo`: refused if it
    /// would take a quota past its limit.
    pub(super) async fn quota_for_manifest(&self, repo: &RepoName, d: &Digest, size: u64) -> super::RegistryResult<()> {
        let Some(before) = self.quota_refs(d).await? else { return Ok(()) };
        let usage = self.quota_usage().await?;
        let counted = |q: &Quota| before.iter().any(|r| Quotas::covers(q, r));
        let fits = self
            .quotas
            .quotas
            .iter()
            .zip(&usage)
            .all(|(q, u)| !Quotas::covers(q, repo.as_str()) || counted(q) || u.used + size <= q.max);
        match fits {
            true => Ok(()),
            false => Err(super::RegistryError::Denied(
                self.quotas.refuses(&usage, repo, size).unwrap_or_else(|| "quota exceeded".into()),
            )),
        }
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
