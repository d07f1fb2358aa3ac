//! Gathers the small chunks a network body arrives in (a few KiB each) into
//! larger ones, so each write to storage moves more bytes per syscall and per
//! blocking-pool hop. It never waits to fill a chunk: it takes what has
//! already arrived, so bytes still flow as soon as the sender sends them.

use bytes::{Bytes, BytesMut};
use futures::{FutureExt, Stream, StreamExt};

/// Chunks of `stream`, each everything that had arrived (up to about `max` bytes).
pub fn gather<'a, S, E>(stream: S, max: usize) -> impl Stream<Item = Result<Bytes, E>> + 'a
where
    S: Stream<Item = Result<Bytes, E>> + 'a,
    E: 'a,
{
    futures::stream::unfold((Box::pin(stream), false), move |(mut s, ended)| async move {
        if ended {
            return None;
        }
        let first = match s.next().await? {
            Ok(b) => b,
            Err(e) => return Some((Err(e), (s, true))),
        };
        // Copy only when there is something to gather: a lone chunk passes through as is.
        let mut buf: Option<BytesMut> = None;
        let mut len = first.len();
        let mut ended = false;
        while len < max {
            match s.next().now_or_never() {
                Some(Some(Ok(b))) => {
                    let buf = buf.get_or_insert_with(|| BytesMut::from(&first[..]));
                    buf.extend_from_slice(&b);
                    len = buf.len();
                }
                Some(Some(Err(e))) => return Some((Err(e), (s, true))),
                Some(None) => {
                    ended = true;
                    break;
                }
                None => break,
            }
        }
        Some((Ok(buf.map_or(first, BytesMut::freeze)), (s, ended)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_chunks_are_gathered_and_nothing_is_lost() {
        let parts: Vec<Result<Bytes, ()>> = (0..10).map(|i| Ok(Bytes::from(vec![i as u8; 100]))).collect();
        let out: Vec<Bytes> = gather(futures::stream::iter(parts), 350).map(Result::unwrap).collect().await;
        assert_eq!(out.iter().map(Bytes::len).collect::<Vec<_>>(), vec![400, 400, 200]);
        let flat: Vec<u8> = out.concat();
        assert_eq!(flat.len(), 1000);
        assert_eq!(&flat[995..], &[9u8; 5]);
    }

    #[tokio::test]
    async fn a_pending_sender_gets_what_arrived_so_far() {
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Bytes, ()>>();
        tx.unbounded_send(Ok(Bytes::from_static(b"ab"))).unwrap();
        let mut g = Box::pin(gather(rx, 1 << 20));
        assert_eq!(g.next().await.unwrap().unwrap(), Bytes::from_static(b"ab"), "not held back waiting for more");
        tx.unbounded_send(Err(())).unwrap();
        assert!(g.next().await.unwrap().is_err());
        assert!(g.next().await.is_none());
    }
}
