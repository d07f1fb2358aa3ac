//! Leases kept in the storage itself, for work that one replica of several
//! sharing a bucket should do at a time (an upstream fetch of a cold blob).
//! A lease is a small object created only if absent (`PutIf::Absent`), so
//! exactly one replica wins it; its holder renews it (a conditional replace
//! on the version it wrote) and deletes it when done. A holder that dies
//! stops renewing: once the lease has expired, another replica takes it over
//! with a conditional replace, so again exactly one does.
//!
//! Expiry compares wall clocks of different replicas: the TTL is long enough
//! (tens of seconds) that ordinary clock skew does not matter, and a wrong
//! guess costs a second upstream fetch, never a wrong byte.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::backend::{Backend, PutIf};
use super::error::StoreResult;

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    holder: String,
    /// Milliseconds since the Unix epoch after which the lease is free.
    expires_ms: u64,
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The content of a lease object held by `holder` for `ttl` from now (also
/// a tombstone's, `shared`: a mark that stands until it expires).
pub(super) fn record(holder: &str, ttl: Duration) -> Bytes {
    let r = Record { holder: holder.to_string(), expires_ms: now_ms() + ttl.as_millis() as u64 };
    Bytes::from(serde_json::to_vec(&r).expect("a lease serialises"))
}

/// Whether a lease object's content has not expired yet.
pub(super) fn is_live(content: &[u8]) -> bool {
    serde_json::from_slice::<Record>(content).is_ok_and(|r| r.expires_ms > now_ms())
}

/// What trying to take a lease found.
pub enum Attempt {
    /// This replica holds it until the guard is dropped.
    Won(LeaseGuard),
    /// Another replica holds it, live.
    Held,
}

/// A held lease: renewed in the background, deleted when dropped.
pub struct LeaseGuard {
    renewal: tokio::task::JoinHandle<()>,
    backend: Arc<dyn Backend>,
    path: String,
}

impl LeaseGuard {
    /// Releases the lease now (dropping the guard releases it in the background).
    pub async fn release(mut self) -> StoreResult<()> {
        self.renewal.abort();
        let path = std::mem::take(&mut self.path);
        self.backend.delete_files(vec![path]).await
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.renewal.abort();
        if self.path.is_empty() {
            return;
        }
        let (backend, path) = (self.backend.clone(), std::mem::take(&mut self.path));
        // A lease left behind (no runtime to release it on) only delays others until it expires.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = backend.delete_files(vec![path.clone()]).await {
                    tracing::warn!(path, error = %e, "could not release a lease");
                }
            });
        }
    }
}

/// Tries once to take the lease `name` for `ttl` as `holder`: free, or
/// expired and taken over.
pub async fn try_acquire(backend: &Arc<dyn Backend>, name: &str, holder: &str, ttl: Duration) -> StoreResult<Attempt> {
    let path = super::layout::lease(name);
    if backend.put_if(&path, record(holder, ttl), PutIf::Absent).await? {
        return Ok(Attempt::Won(guard(backend, path, holder, ttl)));
    }
    let Some((bytes, version)) = backend.get_versioned(&path).await? else {
        // Released between the two looks: the next attempt may win it.
        return Ok(Attempt::Held);
    };
    if is_live(&bytes) {
        return Ok(Attempt::Held);
    }
    // Expired (its holder died or stalled) or unreadable: take it over, if no one else did first.
    if backend.put_if(&path, record(holder, ttl), PutIf::Unchanged(version)).await? {
        return Ok(Attempt::Won(guard(backend, path, holder, ttl)));
    }
    Ok(Attempt::Held)
}

fn guard(backend: &Arc<dyn Backend>, path: String, holder: &str, ttl: Duration) -> LeaseGuard {
    let (b, p, h) = (backend.clone(), path.clone(), holder.to_string());
    let renewal = tokio::spawn(async move {
        loop {
            tokio::time::sleep(ttl / 3).await;
            // Replace only what this holder wrote last: a lease taken over meanwhile stays the taker's.
            let Ok(Some((bytes, version))) = b.get_versioned(&p).await else { return };
            if !serde_json::from_slice::<Record>(&bytes).is_ok_and(|r| r.holder == h) {
                return;
            }
            if !matches!(b.put_if(&p, record(&h, ttl), PutIf::Unchanged(version)).await, Ok(true)) {
                return;
            }
        }
    });
    LeaseGuard { renewal, backend: backend.clone(), path }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket() -> Arc<dyn Backend> {
        Arc::new(super::super::object::ObjectBackend::new(Arc::new(object_store::memory::InMemory::new()), "p"))
    }

    #[tokio::test]
    async fn one_holder_at_a_time_and_a_dead_holders_lease_is_taken_over_once() {
        let b = bucket();
        let ttl = Duration::from_secs(30);
        let Attempt::Won(held) = try_acquire(&b, "fetch-x", "a", ttl).await.unwrap() else { panic!("a free lease") };
        assert!(matches!(try_acquire(&b, "fetch-x", "b", ttl).await.unwrap(), Attempt::Held));
        drop(held);
        // Released (the delete runs on the runtime): then b wins it.
        let mut won = None;
        for _ in 0..100 {
            if let Attempt::Won(g) = try_acquire(&b, "fetch-x", "b", ttl).await.unwrap() {
                won = Some(g);
                break;
            }
            tokio::task::yield_now().await;
        }
        let won = won.expect("the released lease was free");
        // A holder that died: its lease expired; exactly one of two takers gets it.
        std::mem::forget(won);
        let path = crate::store::layout::lease("fetch-x");
        b.put(&path, record("dead", Duration::ZERO)).await.unwrap();
        let (x, y) = futures::join!(try_acquire(&b, "fetch-x", "c", ttl), try_acquire(&b, "fetch-x", "d", ttl));
        let wins = [x.unwrap(), y.unwrap()].iter().filter(|a| matches!(a, Attempt::Won(_))).count();
        assert_eq!(wins, 1);
    }
}
