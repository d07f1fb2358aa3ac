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
        let stall_deadline = Instant::now() + pace.stall;
        loop {
            // The wait ends at the stall deadline, or (with a minimum rate) at
            // the window's end, where the rate is judged whether or not any
            // byte came: a body that sends nothing is too slow as well.
            let window_end = p.window_start + RATE_WINDOW;
            let wait_until = if pace.min_rate > 0 { stall_deadline.min(window_end) } else { stall_deadline };
            match tokio::time::timeout_at(wait_until, p.payload.next()).await {
                Err(_) if Instant::now() >= stall_deadline => {
                    return Some((Err(BodyError::TimedOut(pace.stall)), None));
                }
                Err(_) => {
                    if !p.judge_window(pace.min_rate) {
                        return Some((Err(BodyError::TooSlow(pace.min_rate)), None));
                    }
                }
                Ok(None) => return None,
                Ok(Some(Ok(bytes))) => {
                    p.window_bytes += bytes.len() as u64;
                    if p.window_start.elapsed() >= RATE_WINDOW && !p.judge_window(pace.min_rate) {
                        return Some((Err(BodyError::TooSlow(pace.min_rate)), None));
                    }
                    return Some((Ok(bytes), Some(p)));
                }
                Ok(Some(Err(e))) => return Some((Err(BodyError::Broken(e.to_string())), None)),
            }
        }
    })
}

impl<S> Progress<S> {
    /// At a window's end: whether its bytes met the rate (then a new window starts).
    fn judge_window(&mut self, min_rate: u64) -> bool {
        let elapsed = self.window_start.elapsed();
        if self.window_bytes < min_rate.saturating_mul(elapsed.as_secs()) {
            return false;
        }
        (self.window_start, self.window_bytes) = (Instant::now(), 0);
        true
    }
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

    #[tokio::test(start_paused = true)]
    async fn a_silent_body_is_cut_by_the_rate_before_the_stall() {
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Bytes, std::io::Error>>();
        let started = Instant::now();
        let mut body = Box::pin(timed(rx, Pace { stall: Duration::from_secs(60), min_rate: 100 }));
        assert!(matches!(body.next().await, Some(Err(BodyError::TooSlow(100)))));
        assert_eq!(started.elapsed(), RATE_WINDOW, "at the first window's end, not the 60 s stall");
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
