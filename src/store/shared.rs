//! Lifecycle work on storage several replicas share (a bucket). Each replica
//! keeps a local index of what it wrote itself; expiry, the cap and garbage
//! collection need all of it, and run on one replica at a time (its *turn*,
//! held by the `lifecycle` lease in the bucket). So:
//!
//! - **References and sizes** are rebuilt from one walk of the bucket when a
//!   turn begins: a link names its digest in its path and a data object
//!   carries its size, so no object is read.
//! - **Uses** that each replica records go to the bucket as batches
//!   (`.berth/uses/`) at every eviction interval; a turn merges them into
//!   the snapshot the previous turn left (`.berth/lifecycle/uses`) and writes
//!   that back, so the last pull through any replica keeps an image.
//! - **Deleting data** while other replicas link blobs: the turn first writes
//!   a tombstone per blob (`.berth/doomed/<alg>-<hex>`), then walks the links
//!   again and keeps every blob that a link written since the turn began
//!   names, or that a manifest stored since then references. Only then does
//!   the data go, and the tombstones after it. A replica that links a blob
//!   checks, after writing the link, that no live tombstone names it and that
//!   the data is there (`confirm_data`). The turn's second walk sees a link
//!   written before it; a link written after it finds the tombstone (and
//!   waits for it to go) or the data gone. Either way no link is
//!   acknowledged over data that is gone.
//!
//! The in-process leases (`leases`) still order the work of one replica.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::oci::manifest::ManifestInfo;
use crate::oci::Digest;

use super::bucket_lease::{self, Attempt, LeaseGuard};
use super::error::{StoreError, StoreResult};
use super::index::RefKind;
use super::{layout, Store};

/// The lifecycle lease lasts this long unless renewed (every third of it).
const TURN_LEASE_TTL: Duration = Duration::from_secs(30);
/// A tombstone older than this is void: its turn died. Linkers wait at most
/// this long; a turn deletes nothing whose tombstones are older than
/// `DOOM_WINDOW`, so no live tombstone ever stands for deleted data.
const DOOM_TTL: Duration = Duration::from_secs(300);
const DOOM_WINDOW: Duration = Duration::from_secs(240);
/// Links written this little before a turn began also count as new (the
/// storage's timestamps may be whole seconds).
const CLOCK_SLACK: Duration = Duration::from_secs(2);
/// How long a linker waits for a tombstone to go before it gives up (503).
const CONFIRM_WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

/// This replica's turn at lifecycle work: the lease, held until `end_turn`
/// (or dropped, which releases it and keeps the uses batches for the next).
pub struct Turn {
    lease: LeaseGuard,
    /// Use batches merged into the index this turn (deleted when it ends).
    batches: Vec<String>,
}

/// Uses as one text object: a line per use, `seconds<TAB>key`.
fn encode_uses(uses: &[(String, u64)]) -> Bytes {
    let mut out = String::new();
    for (key, at) in uses {
        out.push_str(&format!("{at}\t{key}\n"));
    }
    Bytes::from(out)
}

fn decode_uses(bytes: &[u8], into: &mut HashMap<String, u64>) {
    for line in String::from_utf8_lossy(bytes).lines() {
        if let Some((at, key)) = line.split_once('\t') {
            if let Ok(at) = at.parse::<u64>() {
                let e = into.entry(key.to_string()).or_default();
                *e = (*e).max(at);
            }
        }
    }
}

impl Store {
    /// Takes this replica's turn at lifecycle work, waiting up to `wait` for
    /// another replica's to end (`None` if it did not), and brings the index
    /// to what the storage holds: references, sizes, and every replica's uses.
    pub async fn lifecycle_turn(&self, wait: Duration) -> StoreResult<Option<Turn>> {
        let deadline = Instant::now() + wait;
        let lease = loop {
            match bucket_lease::try_acquire(&self.backend, "lifecycle", &self.instance, TURN_LEASE_TTL).await? {
                Attempt::Won(lease) => break lease,
                Attempt::Held if Instant::now() >= deadline => return Ok(None),
                Attempt::Held => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        };
        let since = self.storage_now().await?;
        *self.turn_since.lock().unwrap() = Some(since);
        self.refresh_index().await?;
        let batches = self.merge_uses().await?;
        Ok(Some(Turn { lease, batches }))
    }

    /// Ends a turn: the uses it merged (less what it forgot) become the
    /// snapshot the next turn starts from, and their batches go.
    pub async fn end_turn(&self, turn: Turn) -> StoreResult<()> {
        *self.turn_since.lock().unwrap() = None;
        let uses = self.indexed(|index| index.all_uses()).await?;
        self.backend.put(layout::USES_SNAPSHOT, encode_uses(&uses)).await?;
        self.backend.delete_files(turn.batches).await?;
        turn.lease.release().await
    }

    /// `end_turn` for work that is done whatever happens to the snapshot: a
    /// failure is logged (the next turn merges the same batches again).
    pub async fn end_turn_logged(&self, turn: Turn) {
        if let Err(e) = self.end_turn(turn).await {
            tracing::warn!(error = %e, "could not save the uses snapshot at the end of a lifecycle turn");
        }
    }

    /// Writes uses this replica recorded to the storage, for whichever
    /// replica takes the next turn.
    pub async fn publish_uses(&self, uses: &[(String, u64)]) -> StoreResult<()> {
        if uses.is_empty() {
            return Ok(());
        }
        let name =
            layout::uses_batch(&self.instance, bucket_lease::now_ms(), &uuid::Uuid::new_v4().simple().to_string());
        self.backend.put(&name, encode_uses(uses)).await
    }

    /// The storage's clock now (what it dates links by).
    async fn storage_now(&self) -> StoreResult<SystemTime> {
        self.backend.put(layout::CLOCK, Bytes::from(self.instance.clone())).await?;
        Ok(self.backend.modified(layout::CLOCK).await?.unwrap_or_else(SystemTime::now))
    }

    /// Replaces the index's references and sizes with a walk of the storage.
    async fn refresh_index(&self) -> StoreResult<()> {
        let mut sizes = HashMap::new();
        for alg in ["sha256", "sha512"] {
            for f in self.backend.walk(&layout::blobs_root(alg)).await? {
                if let Some(d) = layout::parse_blob_data(&f.path) {
                    sizes.insert(d, f.size);
                }
            }
        }
        let found: Vec<_> = self
            .backend
            .walk(&layout::repositories_root())
            .await?
            .into_iter()
            .filter_map(|f| layout::parse_link(&f.path))
            .map(|(kind, repo, d)| {
                let size = sizes.get(&d).copied();
                (d, kind, repo, size)
            })
            .collect();
        self.indexed(move |index| index.replace_found(&found)).await
    }

    /// Puts the snapshot and every batch of uses into the index; returns the batches.
    async fn merge_uses(&self) -> StoreResult<Vec<String>> {
        let mut uses = HashMap::new();
        if let Some(snapshot) = self.backend.get(layout::USES_SNAPSHOT).await? {
            decode_uses(&snapshot, &mut uses);
        }
        let mut batches = Vec::new();
        for name in self.backend.list(layout::USES_DIR).await? {
            let path = format!("{}/{name}", layout::USES_DIR);
            if let Some(batch) = self.backend.get(&path).await? {
                decode_uses(&batch, &mut uses);
                batches.push(path);
            }
        }
        let uses: Vec<(String, u64)> = uses.into_iter().collect();
        self.indexed(move |index| index.replace_uses(&uses)).await?;
        Ok(batches)
    }

    /// Marks `ds` for deletion on shared storage, then keeps those that a
    /// link or manifest written since the turn began uses; returns the rest,
    /// whose data may go now. `lift` removes the tombstones afterwards.
    pub(super) async fn doom(&self, ds: &[Digest]) -> StoreResult<Vec<Digest>> {
        if ds.is_empty() {
            return Ok(vec![]);
        }
        let started = Instant::now();
        // A tombstone is a lease record nobody renews.
        let record = bucket_lease::record(&self.instance, DOOM_TTL);
        futures::stream::iter(ds)
            .map(|d| {
                let (path, record) = (layout::tombstone(d), record.clone());
                async move { self.backend.put(&path, record).await }
            })
            .buffer_unordered(16)
            .try_collect::<()>()
            .await?;
        // Without a turn nothing is known to be old: every link keeps its blob.
        let since = self.turn_since.lock().unwrap().map_or(SystemTime::UNIX_EPOCH, |t| t - CLOCK_SLACK);
        let doomed: HashSet<&Digest> = ds.iter().collect();
        let (mut keep, mut read): (HashSet<Digest>, HashSet<Digest>) = Default::default();
        for f in self.backend.walk(&layout::repositories_root()).await? {
            let Some((kind, _, d)) = layout::parse_link(&f.path) else { continue };
            if f.modified < since {
                continue;
            }
            if doomed.contains(&d) {
                keep.insert(d.clone());
            }
            // A manifest stored since (in any repository: read once): what it references stays too.
            if kind == RefKind::Manifest && read.insert(d.clone()) {
                let Some(bytes) = self.read_blob_bytes(&d).await? else { continue };
                let Ok(info) = ManifestInfo::parse_stored(&bytes) else { continue };
                keep.extend(info.references().filter(|r| doomed.contains(*r)).cloned());
            }
        }
        if started.elapsed() > DOOM_WINDOW {
            tracing::warn!(blobs = ds.len(), "the recheck of links took too long; deleting no data this time");
            return Ok(vec![]);
        }
        Ok(ds.iter().filter(|d| !keep.contains(*d)).cloned().collect())
    }

    /// Removes the tombstones of `ds` (their data is deleted, or kept).
    pub(super) async fn lift(&self, ds: &[Digest]) -> StoreResult<()> {
        self.backend.delete_files(ds.iter().map(layout::tombstone).collect()).await
    }

    /// After linking `ds` on shared storage: waits while a turn has them
    /// doomed, then returns those whose data is gone (a link to them answers
    /// nothing). Nothing to check on storage no one else writes.
    pub async fn confirm_data(&self, ds: &[Digest]) -> StoreResult<Vec<Digest>> {
        if !self.shared() || ds.is_empty() {
            return Ok(vec![]);
        }
        let deadline = Instant::now() + CONFIRM_WAIT;
        let mut pending: Vec<&Digest> = ds.iter().collect();
        while !pending.is_empty() {
            let stones: Vec<Option<Bytes>> = futures::stream::iter(&pending)
                .map(|d| {
                    let path = layout::tombstone(d);
                    async move { self.backend.get(&path).await }
                })
                .buffered(16)
                .try_collect()
                .await?;
            pending = pending
                .into_iter()
                .zip(&stones)
                .filter(|(_, s)| s.as_deref().is_some_and(bucket_lease::is_live))
                .map(|(d, _)| d)
                .collect();
            if let Some(d) = pending.first() {
                if Instant::now() >= deadline {
                    return Err(StoreError::LifecycleRace((*d).clone()));
                }
                tokio::time::sleep(POLL).await;
            }
        }
        let present = self.backend.stat_many(ds.iter().map(layout::blob_data).collect()).await?;
        Ok(ds.iter().zip(present).filter(|(_, p)| p.is_none()).map(|(d, _)| d.clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uses_round_trip_and_merge_by_latest() {
        let mut merged = HashMap::new();
        decode_uses(&encode_uses(&[("t\t_mirror/a/b\tv1".into(), 10), ("b\tx\tsha256:00".into(), 5)]), &mut merged);
        decode_uses(&encode_uses(&[("t\t_mirror/a/b\tv1".into(), 7)]), &mut merged);
        assert_eq!(merged.get("t\t_mirror/a/b\tv1"), Some(&10));
        assert_eq!(merged.get("b\tx\tsha256:00"), Some(&5));
    }
}
