//! The mirror's traffic over time, for the web page's charts: what the
//! metrics counters grew by, minute by minute for the last 24 hours and hour
//! by hour for the last 30 days. Read from the same counters `/metrics`
//! exposes (`Metrics::totals`), so a chart adds up to what a scrape says
//! since the server started. Kept in memory: a restart starts the charts
//! afresh, as it does the counters.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

/// Counter totals (or their growth over a span).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Bytes of manifests and blobs served from mirrored content.
    pub served_mirrored: u64,
    /// Bytes of manifests and blobs served from pushed content.
    pub served_pushed: u64,
    /// Bytes received from each upstream.
    pub fetched: BTreeMap<String, u64>,
    /// Mirror lookups answered without a download (`hit`, `revalidated`,
    /// `stale`, `shared`, `joined`).
    pub lookups_cached: u64,
    /// Mirror lookups that downloaded (`miss`, `changed`).
    pub lookups_fetched: u64,
}

impl Totals {
    pub fn fetched_total(&self) -> u64 {
        self.fetched.values().sum()
    }

    /// Served from the mirror, less what was fetched for it.
    pub fn saved(&self) -> u64 {
        self.served_mirrored.saturating_sub(self.fetched_total())
    }

    /// The share of mirror lookups answered without a download.
    pub fn hit_ratio(&self) -> Option<f64> {
        let all = self.lookups_cached + self.lookups_fetched;
        (all > 0).then(|| self.lookups_cached as f64 / all as f64)
    }

    /// `self - before`, counter by counter (counters only grow).
    fn since(&self, before: &Totals) -> Totals {
        Totals {
            served_mirrored: self.served_mirrored.saturating_sub(before.served_mirrored),
            served_pushed: self.served_pushed.saturating_sub(before.served_pushed),
            fetched: self
                .fetched
                .iter()
                .map(|(u, n)| (u.clone(), n.saturating_sub(before.fetched.get(u).copied().unwrap_or(0))))
                .collect(),
            lookups_cached: self.lookups_cached.saturating_sub(before.lookups_cached),
            lookups_fetched: self.lookups_fetched.saturating_sub(before.lookups_fetched),
        }
    }

    fn add(&mut self, other: &Totals) {
        self.served_mirrored += other.served_mirrored;
        self.served_pushed += other.served_pushed;
        for (u, n) in &other.fetched {
            *self.fetched.entry(u.clone()).or_insert(0) += n;
        }
        self.lookups_cached += other.lookups_cached;
        self.lookups_fetched += other.lookups_fetched;
    }
}

const MINUTES: usize = 24 * 60;
const HOURS: usize = 30 * 24;

#[derive(Default)]
struct Series {
    /// The totals at the last sample.
    last: Totals,
    /// (minute since the epoch, growth in it), oldest first.
    minutes: VecDeque<(u64, Totals)>,
    /// (hour since the epoch, growth in it), oldest first.
    hours: VecDeque<(u64, Totals)>,
}

#[derive(Default)]
pub struct Traffic {
    series: Mutex<Series>,
}

fn push(ring: &mut VecDeque<(u64, Totals)>, at: u64, growth: &Totals, keep: usize) {
    match ring.back_mut() {
        Some((t, sum)) if *t == at => sum.add(growth),
        _ => ring.push_back((at, growth.clone())),
    }
    while ring.front().is_some_and(|(t, _)| *t + keep as u64 <= at) {
        ring.pop_front();
    }
}

/// One bar of a chart: a span and what happened in it.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// Start of the span, seconds since the epoch.
    pub start: u64,
    pub totals: Totals,
}

impl Traffic {
    /// Records what the counters grew by since the last sample, at `now` (seconds since the epoch).
    pub fn sample(&self, now: u64, totals: Totals) {
        let mut s = self.series.lock().unwrap();
        let growth = totals.since(&s.last);
        s.last = totals;
        push(&mut s.minutes, now / 60, &growth, MINUTES);
        push(&mut s.hours, now / 3600, &growth, HOURS);
    }

    /// `n` buckets of `span` seconds ending with the one that holds `now`,
    /// from the minute series (spans of whole minutes, at most a day back)
    /// or the hour series (whole hours); the growth not sampled yet (`now_totals`
    /// less the last sample) goes in the last bucket.
    pub fn buckets(&self, now: u64, span: u64, n: usize, now_totals: &Totals) -> Vec<Bucket> {
        let s = self.series.lock().unwrap();
        let first = (now / span + 1).saturating_sub(n as u64) * span;
        let mut out: Vec<Bucket> =
            (0..n as u64).map(|i| Bucket { start: first + i * span, totals: Totals::default() }).collect();
        let (ring, unit) = if span.is_multiple_of(3600) && span >= 3600 { (&s.hours, 3600) } else { (&s.minutes, 60) };
        for (t, growth) in ring {
            let at = t * unit;
            if at >= first {
                if let Some(b) = out.get_mut(((at - first) / span) as usize) {
                    b.totals.add(growth);
                }
            }
        }
        if let Some(b) = out.last_mut() {
            b.totals.add(&now_totals.since(&s.last));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(mirrored: u64, fetched: u64) -> Totals {
        Totals {
            served_mirrored: mirrored,
            fetched: [("docker.io".to_string(), fetched)].into(),
            lookups_cached: mirrored / 10,
            lookups_fetched: fetched / 10,
            ..Default::default()
        }
    }

    #[test]
    fn buckets_add_up_to_the_counters() {
        let t = Traffic::default();
        let day = 86_400 * 20_000;
        t.sample(day + 60, totals(100, 50));
        t.sample(day + 3_700, totals(300, 60));
        t.sample(day + 7_300, totals(1_000, 60));
        let now = totals(1_500, 80);
        let hourly = t.buckets(day + 7_400, 3_600, 24, &now);
        assert_eq!(hourly.len(), 24);
        let sum = hourly.iter().fold(Totals::default(), |mut a, b| {
            a.add(&b.totals);
            a
        });
        assert_eq!(sum, now, "every byte in one bar, none twice");
        let last3: Vec<u64> = hourly[21..].iter().map(|b| b.totals.served_mirrored).collect();
        assert_eq!(last3, [100, 200, 1_200]);
        // By the minute: the last hour only.
        let minutes = t.buckets(day + 7_400, 60, 60, &now);
        assert_eq!(minutes.iter().map(|b| b.totals.served_mirrored).sum::<u64>(), 700 + 500);
    }

    #[test]
    fn old_samples_leave_the_rings() {
        let t = Traffic::default();
        t.sample(0, totals(10, 0));
        t.sample(2 * 86_400, totals(20, 0));
        let s = t.series.lock().unwrap();
        assert_eq!(s.minutes.len(), 1, "a day later the first minute is gone");
        assert_eq!(s.hours.len(), 2, "the hours keep a month");
    }

    #[test]
    fn ratios_and_savings() {
        let t = totals(1_000, 300);
        assert_eq!(t.saved(), 700);
        assert_eq!(t.hit_ratio(), Some(100.0 / 130.0));
        assert_eq!(Totals::default().hit_ratio(), None);
    }
}
