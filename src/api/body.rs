//! Request bodies as the store reads them: a stall longer than
//! `server.body_timeout` between two chunks ends the body with
//! `BodyError::TimedOut` (408), so a client that sends headers and then
//! nothing does not hold its connection (and an upload) for ever.

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::store::BodyError;

/// `payload` with a deadline on every chunk.
pub fn timed<S, E>(payload: S, timeout: Duration) -> impl Stream<Item = Result<Bytes, BodyError>>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    futures::stream::unfold(Some(payload), move |state| async move {
        let mut payload = state?;
        match tokio::time::timeout(timeout, payload.next()).await {
            Err(_) => Some((Err(BodyError::TimedOut(timeout)), None)),
            Ok(None) => None,
            Ok(Some(Ok(bytes))) => Some((Ok(bytes), Some(payload))),
            Ok(Some(Err(e))) => Some((Err(BodyError::Broken(e.to_string())), None)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_times_out_and_ends() {
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Bytes, std::io::Error>>();
        tx.unbounded_send(Ok(Bytes::from_static(b"ab"))).unwrap();
        let mut body = Box::pin(timed(rx, Duration::from_secs(5)));
        assert_eq!(body.next().await.unwrap().unwrap(), Bytes::from_static(b"ab"));
        // Nothing more arrives: the paused clock jumps to the deadline.
        assert!(matches!(body.next().await, Some(Err(BodyError::TimedOut(_)))));
        assert!(body.next().await.is_none());
        drop(tx);
    }

    #[tokio::test]
    async fn a_complete_body_passes_through() {
        let parts = vec![Ok::<_, std::io::Error>(Bytes::from_static(b"a")), Ok(Bytes::from_static(b"b"))];
        let got: Vec<_> = timed(futures::stream::iter(parts), Duration::from_secs(1)).collect().await;
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(Result::is_ok));
    }
}
