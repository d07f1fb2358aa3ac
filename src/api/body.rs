//! Request bodies as the store reads them: a stall longer than
//! `server.body_timeout` between two chunks ends the body with
//! `BodyError::TimedOut` (408), so a client that sends headers and then
//! nothing does not hold its connection (and an upload) for ever; and a body
//! that arrives slower than `server.body_min_rate` over a whole window
//! (`RATE_WINDOW`) ends with `BodyError::TooSlow` (408), so one byte a
//! second does not hold it for hours either.

use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::store::BodyError;

/// The span over which a body's rate is judged: long enough for a real
/// client's hiccups, short enough that a trickle is cut within seconds.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);

/// How a body may arrive.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Longest silence between two chunks.
    pub stall: Duration,
    /// Fewest bytes a second, averaged over each `RATE_WINDOW` (0: no minimum).
    pub min_rate: u64,
}

struct Progress<S> {
    payload: S,
    window_start: Instant,
    window_bytes: u64,
}

/// `payload` with a deadline on every chunk and a minimum rate.
pub fn timed<S, E>(payload: S, pace: Pace) -> impl Stream<Item = Result<Bytes, BodyError>>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let start = Progress { payload, window_start: Instant::now(), window_bytes: 0 };
    futures::stream::unfold(Some(start), move |state| async move {
        let mut p = state?;
        match tokio::time::timeout(pace.stall, p.payload.next()).await {
            Err(_) => Some((Err(BodyError::TimedOut(pace.stall)), None)),
            Ok(None) => None,
            Ok(Some(Ok(bytes))) => {
                p.window_bytes += bytes.len() as u64;
                let elapsed = p.window_start.elapsed();
                if elapsed >= RATE_WINDOW {
                    if p.window_bytes < pace.min_rate.saturating_mul(elapsed.as_secs()) {
                        return Some((Err(BodyError::TooSlow(pace.min_rate)), None));
                    }
                    (p.window_start, p.window_bytes) = (Instant::now(), 0);
                }
                Some((Ok(bytes), Some(p)))
            }
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
        let mut body = Box::pin(timed(rx, Pace { stall: Duration::from_secs(5), min_rate: 0 }));
        assert_eq!(body.next().await.unwrap().unwrap(), Bytes::from_static(b"ab"));
        // Nothing more arrives: the paused clock jumps to the deadline.
        assert!(matches!(body.next().await, Some(Err(BodyError::TimedOut(_)))));
        assert!(body.next().await.is_none());
        drop(tx);
    }

    #[tokio::test]
    async fn a_complete_body_passes_through() {
        let parts = vec![Ok::<_, std::io::Error>(Bytes::from_static(b"a")), Ok(Bytes::from_static(b"b"))];
        let pace = Pace { stall: Duration::from_secs(1), min_rate: 1 << 20 };
        let got: Vec<_> = timed(futures::stream::iter(parts), pace).collect().await;
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(Result::is_ok));
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_is_cut_after_a_window_and_a_steady_body_is_not() {
        // One byte a second: never silent for the 5 s stall, far under 100 bytes/s.
        let trickle = futures::stream::unfold(0u32, |i| async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Some((Ok::<_, std::io::Error>(Bytes::from_static(b"x")), i + 1))
        });
        let pace = Pace { stall: Duration::from_secs(5), min_rate: 100 };
        let got: Vec<_> = timed(Box::pin(trickle), pace).collect().await;
        assert!(matches!(got.last(), Some(Err(BodyError::TooSlow(100)))));
        assert!(got.len() <= 11, "cut after the first window, not later: {} chunks", got.len());

        // 200 bytes a second for 30 s passes.
        let steady = futures::stream::unfold(0u32, |i| async move {
            if i == 30 {
                return None;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            Some((Ok::<_, std::io::Error>(Bytes::from(vec![0u8; 200])), i + 1))
        });
        let got: Vec<_> = timed(Box::pin(steady), pace).collect().await;
        assert_eq!(got.len(), 30);
        assert!(got.iter().all(Result::is_ok));
    }
}
