//! What content is being used (mirrored, for expiry; pushed, for the web page
//! and retention): the hot path records a use in memory
//! (one map insert, into a map of the calling thread's own, so that workers
//! never wait for each other); `take` gathers them for one index transaction,
//! so each object costs at most one index write per flush (every eviction
//! pass flushes, once a minute by default).
//!
//! A use of something used before (the common case: the same image pulled
//! again) allocates nothing: its key is written into a buffer of the thread's
//! own and looked up as it is (foldhash, not SipHash). That took a pull by
//! tag from 16 % more server CPU than not recording to within this machine's
//! noise (±1 %; BENCHMARKS.md, "Pulls of pushed content").

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::oci::RepoName;
use crate::store::index::UseKind;

/// Unix seconds now.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Enough shards that each worker thread has one to itself.
const SHARDS: usize = 16;

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
    /// The key being recorded, written here first (no allocation to look it up).
    static KEY: RefCell<String> = const { RefCell::new(String::new()) };
}

type Shard = hashbrown::HashMap<String, u64>;

pub struct Uses {
    pending: Vec<Mutex<Shard>>,
    /// Off only to measure what recording costs (`BENCH_NO_USE_TRACKING=1`,
    /// read by `integration/bench/lifecycle.sh`): without uses, expiry sees
    /// everything as unused.
    enabled: bool,
}

impl Default for Uses {
    fn default() -> Self {
        Uses {
            pending: (0..SHARDS).map(|_| Mutex::default()).collect(),
            enabled: std::env::var_os("BENCH_NO_USE_TRACKING").is_none(),
        }
    }
}

impl Uses {
    /// Records that `key` (a tag, or a digest) of `kind` in `repo` was served now.
    pub fn record(&self, kind: UseKind, repo: &RepoName, key: impl std::fmt::Display) {
        if !self.enabled {
            return;
        }
        let now = now_secs();
        KEY.with_borrow_mut(|k| {
            k.clear();
            // Writing to a String cannot fail. The same form as `index::use_key`.
            let _ = write!(k, "{}\t{repo}\t{key}", kind.letter());
            let mut shard = SHARD.with(|&i| self.pending[i].lock().unwrap());
            match shard.get_mut(k.as_str()) {
                Some(at) => *at = now,
                None => {
                    shard.insert(k.clone(), now);
                }
            }
        });
    }

    /// The latest use not flushed yet of any key starting with `prefix`.
    pub fn latest_pending(&self, prefix: &str) -> Option<u64> {
        let latest =
            |s: &Mutex<Shard>| s.lock().unwrap().iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, &at)| at).max();
        self.pending.iter().filter_map(latest).max()
    }

    /// Everything recorded since the last call.
    pub fn take(&self) -> Vec<(String, u64)> {
        let mut all: HashMap<String, u64> = HashMap::new();
        for shard in &self.pending {
            for (k, at) in std::mem::take(&mut *shard.lock().unwrap()) {
                let e = all.entry(k).or_default();
                *e = (*e).max(at);
            }
        }
        all.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_use_is_kept_once_per_flush() {
        let uses = Uses::default();
        let repo = crate::store::layout::mirror_repository("docker.io", "library/alpine");
        for _ in 0..1000 {
            uses.record(UseKind::Tag, &repo, "3.20");
        }
        uses.record(UseKind::Blob, &repo, "sha256:00");
        let taken = uses.take();
        assert_eq!(taken.len(), 2);
        assert!(uses.take().is_empty());
    }
}
