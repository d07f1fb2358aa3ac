//! What mirrored content is being used: the hot path records a use in memory
//! (one map insert); `flush` writes what gathered to the index in one
//! transaction, so each object costs at most one index write per flush
//! (housekeeping flushes once a minute, and before every eviction pass).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::oci::RepoName;
use crate::store::index::{use_key, UseKind};

/// Unix seconds now.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[derive(Default)]
pub struct Uses {
    pending: Mutex<HashMap<String, u64>>,
}

impl Uses {
    /// Records that `key` (a tag, or a digest) of `kind` in mirrored `repo` was served now.
    pub fn record(&self, kind: UseKind, repo: &RepoName, key: &str) {
        let k = use_key(kind, repo, key);
        self.pending.lock().unwrap().insert(k, now_secs());
    }

    /// Everything recorded since the last call.
    pub fn take(&self) -> Vec<(String, u64)> {
        std::mem::take(&mut *self.pending.lock().unwrap()).into_iter().collect()
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
