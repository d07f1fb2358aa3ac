//! Garbage collection of pushed content, while the server serves: mark every
//! manifest and blob that a repository's tags and manifests reach (with
//! `delete_untagged`, only what tags reach, through indexes too — unlike
//! Distribution 2.8, which also deletes a tagged index's platform manifests),
//! then sweep the blob data nothing marked. The same outcome as
//! `registry garbage-collect` on the same data directory, with three guards
//! that make it safe to run online:
//!
//! - blobs that mirrored repositories link are the eviction's business and
//!   are kept;
//! - a blob whose newest link is younger than `grace` is kept (an upload
//!   whose manifest is still on its way);
//! - manifests pushed during the run add what they reference to a live set
//!   while holding leases on it, and the sweep claims a digest before it
//!   checks that set: a push either finds the data (and GC then sees it live)
//!   or waits for the deletion and is told the blob is unknown. Nothing a
//!   push was told is stored is lost.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use crate::oci::{Digest, DigestSet, RepoName, Tag};

use super::core::Marks;
use super::{Lifecycle, RegistryError, RegistryResult};

/// Unmarked blobs judged and removed together: one index read and one index
/// write per batch, and the file work of a batch spread over threads.
const SWEEP_BATCH: usize = 2048;

/// How long a run (GC, retention) waits for another replica's lifecycle turn to end.
pub(super) const GC_TURN_WAIT: Duration = Duration::from_secs(300);

/// How a run is made.
#[derive(Debug, Clone, Copy)]
pub struct GcOptions {
    /// Report what would be removed; remove nothing.
    pub dry_run: bool,
    /// Also remove manifests that no tag reaches.
    pub delete_untagged: bool,
    /// Keep blobs linked more recently than this.
    pub grace: Duration,
}

/// Where a run stands (for a progress bar).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "phase", rename_all = "lowercase")]
pub enum GcProgress {
    Marking { repositories: usize, done: usize },
    Sweeping { blobs: usize, scanned: usize, bytes_freed: u64 },
}

/// What a run removed (or, dry, would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub repositories: usize,
    pub manifests_removed: usize,
    pub blobs_scanned: usize,
    pub blobs_removed: usize,
    pub bytes_freed: u64,
    pub millis: u128,
    /// Of `millis`: marking what the repositories reach, then listing the
    /// blob data (the rest is the sweep). Where a slow run spends its time.
    #[serde(default)]
    pub mark_millis: u128,
    #[serde(default)]
    pub list_millis: u128,
    /// What the run held back and why: blobs and manifests written within
    /// `grace` (an upload or push may be about to reference them; their bytes
    /// when a dry run sized them), and blobs only mirrored content uses
    /// (expiry's to remove, not GC's).
    #[serde(default)]
    pub held_by_grace_blobs: usize,
    #[serde(default)]
    pub held_by_grace_bytes: u64,
    #[serde(default)]
    pub held_by_grace_manifests: usize,
    #[serde(default)]
    pub held_mirrored_blobs: usize,
    /// The grace the run used, in seconds.
    #[serde(default)]
    pub grace_secs: u64,
}

/// Held while a garbage collection runs (see `Registry::gc_slot`).
pub struct GcSlot(#[allow(dead_code)] tokio::sync::OwnedMutexGuard<()>);

impl Lifecycle {
    /// Adds what a manifest push references to the live set of a running GC.
    pub(super) fn gc_keep(&self, digests: impl IntoIterator<Item = Digest>) {
        if let Some(live) = self.gc_live.lock().unwrap().as_mut() {
            live.extend(digests);
        }
    }

    fn gc_is_live(&self, d: &Digest) -> bool {
        self.gc_live.lock().unwrap().as_ref().is_some_and(|live| live.contains(d))
    }

    /// The right to run the one garbage collection; `GcRunning` (409) while
    /// another holds it. Taken before a collection is started, so a caller
    /// that streams its progress can refuse a second one with its status.
    pub fn gc_slot(&self) -> RegistryResult<GcSlot> {
        self.gc_running.clone().try_lock_owned().map(GcSlot).map_err(|_| RegistryError::GcRunning)
    }

    /// Runs one garbage collection; another one running at the same time is an error.
    pub async fn gc(&self, opts: GcOptions, progress: &(dyn Fn(GcProgress) + Send + Sync)) -> RegistryResult<GcReport> {
        self.gc_with(self.gc_slot()?, opts, progress).await
    }

    /// Runs the garbage collection `slot` was taken for.
    pub async fn gc_with(
        &self,
        slot: GcSlot,
        opts: GcOptions,
        progress: &(dyn Fn(GcProgress) + Send + Sync),
    ) -> RegistryResult<GcReport> {
        let _running = slot;
        // On shared storage, in this replica's lifecycle turn (an eviction
        // pass elsewhere ends within minutes).
        let turn = match self.core.store.shared() {
            true => match self.core.store.lifecycle_turn(GC_TURN_WAIT).await? {
                Some(turn) => Some(turn),
                None => return Err(RegistryError::ReplicaBusy),
            },
            false => None,
        };
        *self.gc_live.lock().unwrap() = Some(HashSet::new());
        let dry_run = opts.dry_run;
        let result = self.gc_run(opts, progress).await;
        *self.gc_live.lock().unwrap() = None;
        if let Some(turn) = turn {
            self.core.store.end_turn_logged(turn).await;
        }
        if let (Ok(r), false) = (&result, dry_run) {
            self.core.metrics.gc_runs.inc();
            self.core.metrics.gc_blobs.inc_by(r.blobs_removed as u64);
            self.core.metrics.gc_bytes.inc_by(r.bytes_freed);
            self.last_runs.lock().unwrap().gc = Some((SystemTime::now(), r.clone()));
        }
        result
    }

    async fn gc_run(&self, opts: GcOptions, progress: &(dyn Fn(GcProgress) + Send + Sync)) -> RegistryResult<GcReport> {
        let started = Instant::now();
        let mut report = GcReport { dry_run: opts.dry_run, ..Default::default() };
        let repos = self.core.store.list_pushed_repositories().await?;
        report.repositories = repos.len();
        // Digests as 32-byte keys: a million marked blobs stay tens of MB.
        let mut marked = DigestSet::default();
        for (done, name) in repos.iter().enumerate() {
            progress(GcProgress::Marking { repositories: repos.len(), done });
            let repo = RepoName::storage(name.clone());
            self.gc_mark_repo(&repo, opts, &mut marked, &mut report).await?;
        }
        report.mark_millis = started.elapsed().as_millis();
        // Unmarked blobs, judged and removed in batches.
        let (unmarked, total) = self.core.store.list_blob_data(|d| !marked.contains(d)).await?;
        drop(marked);
        report.list_millis = started.elapsed().as_millis() - report.mark_millis;
        let grace_cutoff = SystemTime::now().checked_sub(opts.grace).unwrap_or(SystemTime::UNIX_EPOCH);
        report.grace_secs = opts.grace.as_secs();
        report.blobs_scanned = total;
        let mut scanned = total - unmarked.len();
        for batch in unmarked.chunks(SWEEP_BATCH) {
            progress(GcProgress::Sweeping { blobs: total, scanned, bytes_freed: report.bytes_freed });
            scanned += batch.len();
            let lookup = batch.to_vec();
            let refs = self.core.store.indexed(move |index| index.refs_many(&lookup)).await?;
            let pushed: Vec<(Digest, Vec<String>)> =
                batch.iter().cloned().zip(refs.iter().map(|r| r.pushed.clone())).collect();
            let newest = self.core.store.newest_links(&pushed).await?;
            let sizes = if opts.dry_run { self.core.store.blob_sizes(batch).await? } else { vec![] };
            let mut claimed = Vec::new();
            let mut touched: HashSet<String> = HashSet::new();
            for (i, (d, refs)) in batch.iter().zip(refs).enumerate() {
                // Mirrored content is the eviction's business.
                if !refs.mirrored.is_empty() {
                    report.held_mirrored_blobs += 1;
                    continue;
                }
                if newest[i].is_some_and(|t| t > grace_cutoff) {
                    report.held_by_grace_blobs += 1;
                    report.held_by_grace_bytes += sizes.get(i).copied().flatten().unwrap_or(0);
                    continue;
                }
                if opts.dry_run {
                    report.blobs_removed += 1;
                    report.bytes_freed += sizes[i].unwrap_or(0);
                    continue;
                }
                let Some(claim) = self.core.store.claim_deletion(d) else { continue };
                if self.gc_is_live(d) {
                    continue;
                }
                touched.extend(refs.pushed);
                claimed.push((d.clone(), claim));
            }
            let (removed, freed) = self.core.store.remove_blobs_data(&claimed).await?;
            report.blobs_removed += removed;
            report.bytes_freed += freed;
            drop(claimed);
            for repo in touched {
                self.core.written(&RepoName::storage(repo));
            }
        }
        progress(GcProgress::Sweeping { blobs: total, scanned: total, bytes_freed: report.bytes_freed });
        report.millis = started.elapsed().as_millis();
        Ok(report)
    }

    /// Marks what `repo` keeps; with `delete_untagged`, removes the manifests
    /// no tag reaches first.
    async fn gc_mark_repo(
        &self,
        repo: &RepoName,
        opts: GcOptions,
        marked: &mut DigestSet,
        report: &mut GcReport,
    ) -> RegistryResult<()> {
        let _writing = self.core.locks.lock(repo).await;
        let revisions = self.core.store.list_manifests(repo).await?;
        let mut roots = Vec::new();
        for tag in self.core.store.list_tags(repo).await? {
            let Ok(t) = tag.parse::<Tag>() else { continue };
            if let Some(d) = self.core.store.resolve_tag(repo, &t).await? {
                roots.push(d);
            }
        }
        if !opts.delete_untagged {
            roots.extend(revisions.iter().cloned());
        }
        // A manifest that cannot be read is kept, but what it references
        // cannot be known: a sweep that followed would be a guess, so nothing
        // of this run is swept.
        let mut marks = Marks::new(marked);
        self.core.mark(roots, &mut marks, true).await.map_err(|e| {
            RegistryError::Unreadable(format!("a manifest in {repo} cannot be read ({e}); not collecting"))
        })?;
        let grace_cutoff = SystemTime::now().checked_sub(opts.grace).unwrap_or(SystemTime::UNIX_EPOCH);
        let unreached: Vec<&Digest> = revisions.iter().filter(|m| !marks.reached(m)).collect();
        for m in unreached {
            // A manifest pushed moments ago by digest may be about to get its
            // tag or its index (skopeo pushes platform manifests first).
            if self.core.store.revision_modified(repo, m).await?.is_some_and(|t| t > grace_cutoff) {
                self.core.mark([m.clone()], &mut marks, false).await?;
                report.held_by_grace_manifests += 1;
                continue;
            }
            report.manifests_removed += 1;
            if !opts.dry_run {
                self.core.store.delete_manifest(repo, m).await?;
            }
        }
        if report.manifests_removed > 0 && !opts.dry_run {
            self.core.written(repo);
        }
        Ok(())
    }
}
