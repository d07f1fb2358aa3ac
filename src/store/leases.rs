//! Which blobs' data may be deleted right now. An operation about to make a
//! blob's data part of the registry takes a lease on its digest for as long
//! as it needs the data to stay: an upload or a mirror fetch committing it and
//! writing the link, a mount or an adoption linking it, a mirrored download
//! checking its link and opening the file (an open file keeps its bytes on
//! POSIX). Deleting data (eviction, GC) first claims the digest: the claim is
//! refused while any lease is held, and leases asked for during a deletion
//! wait until it is over (then the data is simply not there). So a deletion
//! never pulls data from under an operation that decided to use it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::oci::Digest;

enum State {
    Leased(usize),
    Deleting,
}

#[derive(Default)]
pub struct Leases {
    state: Mutex<HashMap<Digest, State>>,
    changed: Notify,
}

/// Held while an operation needs a blob's data to stay.
pub struct Lease {
    leases: Arc<Leases>,
    digest: Digest,
}

/// Held while a blob's data is being deleted.
pub struct Deletion {
    leases: Arc<Leases>,
    digest: Digest,
}

impl Leases {
    /// Takes a lease on `d`, waiting while its data is being deleted.
    pub async fn lease(self: &Arc<Self>, d: &Digest) -> Lease {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.state.lock().unwrap();
                match state.get_mut(d) {
                    Some(State::Deleting) => {}
                    Some(State::Leased(n)) => {
                        *n += 1;
                        return Lease { leases: self.clone(), digest: d.clone() };
                    }
                    None => {
                        state.insert(d.clone(), State::Leased(1));
                        return Lease { leases: self.clone(), digest: d.clone() };
                    }
                }
            }
            notified.await;
        }
    }

    /// Claims `d` for deleting its data; `None` while anything holds a lease on it.
    pub fn try_delete(self: &Arc<Self>, d: &Digest) -> Option<Deletion> {
        let mut state = self.state.lock().unwrap();
        if state.contains_key(d) {
            return None;
        }
        state.insert(d.clone(), State::Deleting);
        Some(Deletion { leases: self.clone(), digest: d.clone() })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut state = self.leases.state.lock().unwrap();
        if let Some(State::Leased(n)) = state.get_mut(&self.digest) {
            *n -= 1;
            if *n == 0 {
                state.remove(&self.digest);
            }
        }
    }
}

impl Drop for Deletion {
    fn drop(&mut self) {
        self.leases.state.lock().unwrap().remove(&self.digest);
        self.leases.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[tokio::test]
    async fn leases_and_deletions_exclude_each_other() {
        let leases = Arc::new(Leases::default());
        let d = Digest::sha256_of(b"x");
        let held = leases.lease(&d).await;
        let also = leases.lease(&d).await;
        assert!(leases.try_delete(&d).is_none(), "leased: not deletable");
        drop(held);
        assert!(leases.try_delete(&d).is_none(), "still one lease");
        drop(also);
        let deleting = leases.try_delete(&d).unwrap();
        assert!(leases.try_delete(&d).is_none(), "one deletion at a time");
        // A lease asked for during the deletion waits for its end.
        let mut waiting = Box::pin(leases.lease(&d));
        assert!(waiting.as_mut().now_or_never().is_none());
        drop(deleting);
        let _lease = waiting.await;
        assert!(leases.try_delete(&Digest::sha256_of(b"other")).is_some(), "other digests are independent");
    }
}
