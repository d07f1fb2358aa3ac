//! The notification queue on disk (`<root>/.berth/events.redb`): every
//! event, numbered, until each endpoint has taken it, and each endpoint's
//! place. An event is written once whatever the number of endpoints; an
//! endpoint's place moves only after its receiver accepted what it was sent,
//! so a crash between the two sends the last envelope again (at least once)
//! and a clean stop sends nothing twice.
//!
//! Calls block on disk: the notifier runs them on the blocking pool.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

/// Sequence number → the event's JSON.
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// Endpoint name → the sequence number of the last event it took.
const CURSORS: TableDefinition<&str, u64> = TableDefinition::new("cursors");
/// `next`: the number the next event gets (kept apart from the events, which
/// are pruned, so a number is never given twice).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub struct Queue {
    db: Database,
}

type Result<T> = std::result::Result<T, String>;

fn fail(e: impl std::fmt::Display) -> String {
    format!("notification queue: {e}")
}

impl Queue {
    pub fn open(path: &Path) -> Result<Queue> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        // A queue is read once, front to back: a small cache (redb's default is 1 GiB).
        let db = redb::Builder::new().set_cache_size(16 * 1024 * 1024).create(path).map_err(fail)?;
        let tx = db.begin_write().map_err(fail)?;
        tx.open_table(EVENTS).map_err(fail)?;
        tx.open_table(CURSORS).map_err(fail)?;
        tx.open_table(META).map_err(fail)?;
        tx.commit().map_err(fail)?;
        Ok(Queue { db })
    }

    /// Appends `events` in order, durably; the number of the last one.
    pub fn append(&self, events: &[Vec<u8>]) -> Result<u64> {
        let tx = self.db.begin_write().map_err(fail)?;
        let last = {
            let mut meta = tx.open_table(META).map_err(fail)?;
            let mut table = tx.open_table(EVENTS).map_err(fail)?;
            let mut next = meta.get("next").map_err(fail)?.map_or(1, |v| v.value());
            for e in events {
                table.insert(next, e.as_slice()).map_err(fail)?;
                next += 1;
            }
            meta.insert("next", next).map_err(fail)?;
            next - 1
        };
        tx.commit().map_err(fail)?;
        Ok(last)
    }

    /// The number of the last event written (0: none ever).
    pub fn last(&self) -> Result<u64> {
        let tx = self.db.begin_read().map_err(fail)?;
        let meta = tx.open_table(META).map_err(fail)?;
        Ok(meta.get("next").map_err(fail)?.map_or(1, |v| v.value()) - 1)
    }

    /// Where `endpoint` is: the last event it took. An endpoint new to this
    /// queue starts at the end (it is not sent what happened before it was configured).
    pub fn cursor(&self, endpoint: &str) -> Result<u64> {
        let found = {
            let tx = self.db.begin_read().map_err(fail)?;
            let cursors = tx.open_table(CURSORS).map_err(fail)?;
            let v = cursors.get(endpoint).map_err(fail)?.map(|v| v.value());
            v
        };
        match found {
            Some(at) => Ok(at),
            None => {
                let tx = self.db.begin_write().map_err(fail)?;
                let last = {
                    let meta = tx.open_table(META).map_err(fail)?;
                    let last = meta.get("next").map_err(fail)?.map_or(1, |v| v.value()) - 1;
                    tx.open_table(CURSORS).map_err(fail)?.insert(endpoint, last).map_err(fail)?;
                    last
                };
                tx.commit().map_err(fail)?;
                Ok(last)
            }
        }
    }

    /// Up to `max` events after `after`, in order.
    pub fn after(&self, after: u64, max: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        let tx = self.db.begin_read().map_err(fail)?;
        let table = tx.open_table(EVENTS).map_err(fail)?;
        let mut out = Vec::new();
        for row in table.range(after + 1..).map_err(fail)?.take(max) {
            let (k, v) = row.map_err(fail)?;
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Records that `endpoint` took every event up to `to`, and drops the
    /// events that every endpoint in `live` has taken.
    pub fn advance(&self, endpoint: &str, to: u64, live: &[String]) -> Result<()> {
        let tx = self.db.begin_write().map_err(fail)?;
        {
            let mut cursors = tx.open_table(CURSORS).map_err(fail)?;
            cursors.insert(endpoint, to).map_err(fail)?;
            let mut done = to;
            for name in live {
                // An endpoint that has not started yet starts at the end: it holds nothing back.
                if let Some(at) = cursors.get(name.as_str()).map_err(fail)? {
                    done = done.min(at.value());
                }
            }
            let mut table = tx.open_table(EVENTS).map_err(fail)?;
            table.retain_in(..=done, |_, _| false).map_err(fail)?;
        }
        tx.commit().map_err(fail)?;
        Ok(())
    }

    /// Events not yet taken by `endpoint`.
    pub fn pending(&self, endpoint_at: u64) -> Result<u64> {
        Ok(self.last()?.saturating_sub(endpoint_at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_wait_for_every_endpoint_and_numbers_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.redb");
        let live = vec!["a".to_string(), "b".to_string()];
        {
            let q = Queue::open(&path).unwrap();
            assert_eq!(q.cursor("a").unwrap(), 0);
            assert_eq!(q.cursor("b").unwrap(), 0);
            assert_eq!(q.append(&[b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]).unwrap(), 3);
            assert_eq!(q.after(0, 2).unwrap().iter().map(|e| e.0).collect::<Vec<_>>(), vec![1, 2]);
            q.advance("a", 3, &live).unwrap();
            assert_eq!(q.after(0, 10).unwrap().len(), 3, "b has not taken them");
            q.advance("b", 2, &live).unwrap();
            assert_eq!(q.after(0, 10).unwrap(), vec![(3, b"3".to_vec())]);
        }
        // Reopened (a restart): places and events are where they were.
        let q = Queue::open(&path).unwrap();
        assert_eq!((q.cursor("a").unwrap(), q.cursor("b").unwrap()), (3, 2));
        q.advance("b", 3, &live).unwrap();
        assert!(q.after(0, 10).unwrap().is_empty());
        assert_eq!(q.append(&[b"4".to_vec()]).unwrap(), 4, "numbers go on after the queue emptied");
        assert_eq!(q.cursor("c").unwrap(), 4, "a new endpoint starts at the end");
        assert_eq!(q.pending(q.cursor("a").unwrap()).unwrap(), 1);
    }
}
