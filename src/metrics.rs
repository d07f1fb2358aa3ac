//! Prometheus metrics: one `Metrics` per server (tests run several servers in
//! one process, so nothing here is global). Counters are bumped where things
//! happen; values that are cheaper to read than to track (open uploads,
//! in-flight fetches, store bytes) are read when `/metrics` is scraped.
//!
//! Label values are bounded: endpoints and kinds are fixed sets, upstreams
//! come from the config, and clients are htpasswd users, configured teams or
//! `other` (never a raw address).

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::RwLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Label handles resolved once. `with_label_values` hashes every label
/// string and validates the count on each call; the paths that count on
/// every request (the request counter and latency, bytes served per chunk)
/// look their children up here by a small key instead: fixed labels by the
/// address of their `&'static str`, the client by its name.
struct Handles<K, V>(RwLock<HashMap<K, V>>);

impl<K: Eq + Hash, V> Default for Handles<K, V> {
    fn default() -> Self {
        Handles(RwLock::default())
    }
}

impl<K: Eq + Hash, V> Handles<K, V> {
    /// Runs `f` on the handles of `key`, made by `make` the first time.
    fn with<Q, R>(&self, key: &Q, make: impl FnOnce() -> (K, V), f: impl FnOnce(&V) -> R) -> R
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(v) = self.0.read().unwrap_or_else(|e| e.into_inner()).get(key) {
            return f(v);
        }
        let (k, v) = make();
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        f(map.entry(k).or_insert(v))
    }
}

/// A `&'static str` label by its address and length (equal keys, equal text).
fn addr(s: &'static str) -> (usize, usize) {
    (s.as_ptr() as usize, s.len())
}

/// The client label of requests from no user and no configured team.
pub const OTHER_CLIENT: &str = "other";

/// The client label of work berth does on its own (scheduled warm-up).
pub const SERVER_CLIENT: &str = "berth";

/// A static label by where it lives: (pointer, length).
type LabelKey = (usize, usize);

pub struct Metrics {
    registry: Registry,
    /// (endpoint, method, status) → the request counter and latency histogram.
    request_handles: Handles<(LabelKey, LabelKey, u16), (IntCounter, Histogram)>,
    /// (mirrored, kind) → the served-bytes counter.
    served_handles: Handles<(bool, LabelKey), IntCounter>,
    /// client → its served-bytes counter.
    client_served_handles: Handles<String, IntCounter>,
    /// Requests by endpoint, method and status.
    pub requests: IntCounterVec,
    /// Seconds from a request's arrival to its response head, by endpoint and method.
    pub latency: HistogramVec,
    /// Bytes of blob and manifest responses to clients, by content (`pushed`, `mirrored`) and kind.
    pub served_bytes: IntCounterVec,
    /// Bytes received from each upstream (blob and manifest bodies).
    pub upstream_bytes: IntCounterVec,
    /// Mirror lookups by upstream, kind (`manifest`, `blob`) and result:
    /// `hit`, `miss`, `revalidated` (a tag's HEAD matched), `changed` (it did
    /// not: fetched again), `stale` (upstream unavailable: the copy served),
    /// `shared` (a blob the store held for other content, linked after the
    /// upstream confirmed it), `joined` (a blob fetch already in flight
    /// served it: coalesced, no second download).
    pub mirror_lookups: IntCounterVec,
    /// Upstream failures by upstream and kind (`unreachable`, `timeout`, …).
    pub upstream_errors: IntCounterVec,
    /// Docker Hub's `ratelimit-limit` / `ratelimit-remaining`, by upstream and credential.
    pub ratelimit_limit: IntGaugeVec,
    pub ratelimit_remaining: IntGaugeVec,
    /// Tag revalidations skipped to save an upstream's rate-limit budget.
    pub budget_skips: IntCounterVec,
    /// Signature policy decisions on served manifests, by repository and
    /// outcome (`signed`, `warned`: unsigned but served, `refused`).
    pub signature_decisions: IntCounterVec,
    /// Answers of the admission hook (`allowed`, `denied`, `failed_open`, `failed_closed`).
    pub admission_decisions: IntCounterVec,
    /// Notification events delivered to each endpoint, delivery attempts
    /// that failed, and events waiting for it (registry:2's
    /// `registry_notifications_*`, by endpoint name).
    pub notifications_sent: IntCounterVec,
    pub notifications_failed: IntCounterVec,
    pub notifications_pending: IntGaugeVec,
    /// Each `[[quota]]`'s use and limit, in bytes (read at scrape time).
    pub quota_used: IntGaugeVec,
    pub quota_limit: IntGaugeVec,
    /// Blob GETs answered with a redirect to the storage (`storage.redirect`).
    pub blob_redirects: IntCounter,
    /// Bytes served to and fetched upstream for each client.
    pub client_served_bytes: IntCounterVec,
    pub client_fetched_bytes: IntCounterVec,
    /// Eviction passes, what they removed and the bytes they freed.
    pub eviction_passes: IntCounter,
    pub evicted: IntCounterVec,
    pub evicted_bytes: IntCounter,
    /// Garbage collections, the blobs they deleted and the bytes they freed.
    pub gc_runs: IntCounter,
    pub gc_blobs: IntCounter,
    pub gc_bytes: IntCounter,
    // Read at scrape time (see `Registry::refresh_metrics`).
    pub uploads_open: IntGauge,
    pub fetches_in_flight: IntGauge,
    pub requests_in_progress: IntGauge,
    pub fetch_waits: IntCounter,
    pub peer_bytes: IntCounter,
    pub peer_failures: IntCounter,
    pub fetch_clients: IntGauge,
    pub store_bytes: IntGaugeVec,
}

/// Each sample of `counters`: its labels (name → value) and its count.
fn samples(counters: &IntCounterVec) -> Vec<(BTreeMap<String, String>, u64)> {
    use prometheus::core::Collector;
    let families = counters.collect();
    families
        .iter()
        .flat_map(|f| f.get_metric())
        .map(|m| {
            let labels = m.get_label().iter().map(|l| (l.name().to_string(), l.value().to_string())).collect();
            (labels, m.get_counter().get_value() as u64)
        })
        .collect()
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric");
    registry.register(Box::new(c.clone())).expect("registered once");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid metric");
    registry.register(Box::new(g.clone())).expect("registered once");
    g
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let latency = HistogramVec::new(
            HistogramOpts::new("berth_http_request_duration_seconds", "Time to the response head, by endpoint")
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["endpoint", "method"],
        )
        .expect("a valid metric");
        r.register(Box::new(latency.clone())).expect("registered once");
        let single = |name: &str, help: &str| counter(&r, name, help, &[]).with_label_values(&[] as &[&str]);
        let one = |name: &str, help: &str| gauge(&r, name, help, &[]).with_label_values(&[] as &[&str]);
        Metrics {
            request_handles: Handles::default(),
            served_handles: Handles::default(),
            client_served_handles: Handles::default(),
            requests: counter(&r, "berth_http_requests_total", "Requests answered", &["endpoint", "method", "status"]),
            latency,
            served_bytes: counter(
                &r,
                "berth_served_bytes_total",
                "Bytes of blob and manifest responses, by pushed or mirrored content",
                &["content", "kind"],
            ),
            upstream_bytes: counter(
                &r,
                "berth_upstream_fetched_bytes_total",
                "Bytes received from each upstream",
                &["upstream"],
            ),
            mirror_lookups: counter(
                &r,
                "berth_mirror_lookups_total",
                "Mirrored manifest and blob lookups by result",
                &["upstream", "kind", "result"],
            ),
            upstream_errors: counter(
                &r,
                "berth_upstream_errors_total",
                "Upstream failures by kind",
                &["upstream", "kind"],
            ),
            ratelimit_limit: gauge(
                &r,
                "berth_upstream_ratelimit_limit",
                "The pull limit an upstream last reported (ratelimit-limit)",
                &["upstream", "credential"],
            ),
            ratelimit_remaining: gauge(
                &r,
                "berth_upstream_ratelimit_remaining",
                "The pulls an upstream last reported left (ratelimit-remaining)",
                &["upstream", "credential"],
            ),
            blob_redirects: {
                let c = IntCounter::new(
                    "berth_blob_redirects_total",
                    "Blob GETs answered with a redirect to the storage, whose bytes did not pass through berth",
                )
                .expect("a valid metric");
                r.register(Box::new(c.clone())).expect("registered once");
                c
            },
            quota_used: gauge(
                &r,
                "berth_quota_used_bytes",
                "Bytes a quota's repositories hold (each blob once)",
                &["quota"],
            ),
            quota_limit: gauge(&r, "berth_quota_limit_bytes", "A quota's limit in bytes", &["quota"]),
            notifications_sent: counter(
                &r,
                "berth_notifications_sent_total",
                "Notification events an endpoint accepted",
                &["endpoint"],
            ),
            notifications_failed: counter(
                &r,
                "berth_notifications_failed_total",
                "Deliveries of notification events that failed (each retried)",
                &["endpoint"],
            ),
            notifications_pending: gauge(
                &r,
                "berth_notifications_pending",
                "Notification events queued on disk for an endpoint, not yet delivered",
                &["endpoint"],
            ),
            admission_decisions: counter(
                &r,
                "berth_admission_decisions_total",
                "Questions to the admission hook, by outcome (allowed, denied, failed_open, failed_closed)",
                &["outcome"],
            ),
            signature_decisions: counter(
                &r,
                "berth_signature_decisions_total",
                "Manifests a signature rule covers, served signed, served unsigned (warn) or refused (enforce)",
                &["repository", "outcome"],
            ),
            budget_skips: counter(
                &r,
                "berth_upstream_budget_skips_total",
                "Tag revalidations skipped because the upstream's rate-limit budget is under the floor",
                &["upstream"],
            ),
            client_served_bytes: counter(
                &r,
                "berth_client_served_bytes_total",
                "Bytes of blob and manifest responses, by client (user, team or other)",
                &["client"],
            ),
            client_fetched_bytes: counter(
                &r,
                "berth_client_fetched_bytes_total",
                "Bytes fetched upstream for each client's requests",
                &["client"],
            ),
            eviction_passes: single("berth_eviction_passes_total", "Eviction passes run"),
            evicted: counter(&r, "berth_evicted_total", "Mirrored objects evicted", &["object"]),
            evicted_bytes: single("berth_evicted_bytes_total", "Bytes of blob data eviction freed"),
            gc_runs: single("berth_gc_runs_total", "Garbage collections run by the server"),
            gc_blobs: single("berth_gc_blobs_deleted_total", "Blobs garbage collection deleted"),
            gc_bytes: single("berth_gc_freed_bytes_total", "Bytes garbage collection freed"),
            uploads_open: one("berth_uploads_open", "Upload sessions open"),
            fetches_in_flight: one("berth_mirror_fetches_in_flight", "Upstream blob fetches in flight"),
            fetch_waits: single(
                "berth_mirror_fetch_waits_total",
                "Cold blob fetches left to another replica sharing the storage (which held the fetch lease)",
            ),
            peer_bytes: single(
                "berth_peer_received_bytes_total",
                "Bytes of blobs and manifests sibling mirrors sent (verified) instead of the upstream",
            ),
            peer_failures: single(
                "berth_peer_failures_total",
                "Sibling mirrors skipped for a while: no answer in time, a failed transfer, or bytes that did not verify",
            ),
            requests_in_progress: one(
                "berth_http_requests_in_progress",
                "Requests not yet answered (waiting for storage, an upstream or a fetch to verify)",
            ),
            fetch_clients: one("berth_mirror_fetch_clients", "Client responses reading an in-flight fetch"),
            store_bytes: gauge(
                &r,
                "berth_store_bytes",
                "Bytes of blob data: mirrored (only mirrored repositories link it), pushed (the rest)",
                &["content"],
            ),
            registry: r,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding to a Vec fails only on a metric family that is not valid, which `new` rules out.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }

    /// The counters the web page charts (`traffic`), summed over their other labels.
    pub fn totals(&self) -> crate::traffic::Totals {
        let mut t = crate::traffic::Totals::default();
        for (labels, v) in samples(&self.served_bytes) {
            match labels.get("content").map(String::as_str) {
                Some("mirrored") => t.served_mirrored += v,
                _ => t.served_pushed += v,
            }
        }
        for (mut labels, v) in samples(&self.upstream_bytes) {
            *t.fetched.entry(labels.remove("upstream").unwrap_or_default()).or_insert(0) += v;
        }
        for (labels, v) in samples(&self.mirror_lookups) {
            match labels.get("result").map(String::as_str) {
                Some("miss" | "changed") => t.lookups_fetched += v,
                _ => t.lookups_cached += v,
            }
        }
        t
    }

    /// Upstream failures since the start: upstream → kind → count.
    pub fn upstream_errors(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for (mut labels, v) in samples(&self.upstream_errors) {
            let (Some(upstream), Some(kind)) = (labels.remove("upstream"), labels.remove("kind")) else { continue };
            *out.entry(upstream).or_default().entry(kind).or_insert(0) += v;
        }
        out
    }

    /// Counts a request answered by `endpoint` with `status`, and its time to the response head.
    pub fn request(&self, endpoint: &'static str, method: &'static str, status: u16, seconds: f64) {
        self.request_handles.with(
            &(addr(endpoint), addr(method), status),
            || {
                let code = status.to_string();
                let handles = (
                    self.requests.with_label_values(&[endpoint, method, code.as_str()]),
                    self.latency.with_label_values(&[endpoint, method]),
                );
                ((addr(endpoint), addr(method), status), handles)
            },
            |(count, latency)| {
                count.inc();
                latency.observe(seconds);
            },
        )
    }

    /// Counts bytes served to `client`.
    pub fn served(&self, client: &str, mirrored: bool, kind: &'static str, bytes: u64) {
        let content = if mirrored { "mirrored" } else { "pushed" };
        self.served_handles.with(
            &(mirrored, addr(kind)),
            || ((mirrored, addr(kind)), self.served_bytes.with_label_values(&[content, kind])),
            |c| c.inc_by(bytes),
        );
        self.client_served_handles.with(
            client,
            || (client.to_string(), self.client_served_bytes.with_label_values(&[client])),
            |c| c.inc_by(bytes),
        );
    }

    /// Counts bytes received from `upstream` for `client`.
    pub fn fetched(&self, upstream: &str, client: &str, bytes: u64) {
        self.upstream_bytes.with_label_values(&[upstream]).inc_by(bytes);
        self.client_fetched_bytes.with_label_values(&[client]).inc_by(bytes);
    }

    pub fn lookup(&self, upstream: &str, kind: &str, result: &str) {
        self.mirror_lookups.with_label_values(&[upstream, kind, result]).inc();
    }
}

/// Configured teams: a client address in one of a team's networks is counted as that team.
#[derive(Debug, Clone, Default)]
pub struct Teams(Vec<(String, ipnet::IpNet)>);

impl Teams {
    /// From `name → networks` (CIDR, or a bare address); the first team listing an address wins.
    pub fn new(teams: &std::collections::BTreeMap<String, Vec<String>>) -> Result<Self, String> {
        let mut out = Vec::new();
        for (name, nets) in teams {
            for net in nets {
                let parsed = crate::config::parse_network(net).map_err(|e| format!("metrics.teams.{name}: {e}"))?;
                out.push((name.clone(), parsed));
            }
        }
        // The most specific network first, so a /24 inside a /8 of another team wins.
        out.sort_by_key(|(_, net)| std::cmp::Reverse(net.prefix_len()));
        Ok(Teams(out))
    }

    /// The client label: the authenticated user, else the address's team, else `other`.
    pub fn label(&self, user: Option<&str>, addr: Option<IpAddr>) -> String {
        if let Some(u) = user {
            return u.to_string();
        }
        let addr = addr.map(|a| match a {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
            v4 => v4,
        });
        addr.and_then(|a| self.0.iter().find(|(_, net)| net.contains(&a)).map(|(name, _)| name.clone()))
            .unwrap_or_else(|| OTHER_CLIENT.to_string())
    }
}

tokio::task_local! {
    /// The client a request is served for, so that upstream bytes fetched on
    /// its behalf (in tasks it starts) are counted against it.
    pub static CLIENT: std::sync::Arc<str>;
}

/// The client of the request being served (`berth` outside of one).
pub fn current_client() -> std::sync::Arc<str> {
    CLIENT.try_with(|c| c.clone()).unwrap_or_else(|_| SERVER_CLIENT.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_users_then_teams_then_other() {
        let mut cfg = std::collections::BTreeMap::new();
        cfg.insert("ci".to_string(), vec!["10.0.0.0/8".to_string()]);
        cfg.insert("build-farm".to_string(), vec!["10.1.2.0/24".to_string(), "192.168.1.7".to_string()]);
        let teams = Teams::new(&cfg).unwrap();
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(teams.label(Some("alice"), ip("10.0.0.1")), "alice");
        assert_eq!(teams.label(None, ip("10.9.9.9")), "ci");
        assert_eq!(teams.label(None, ip("10.1.2.3")), "build-farm", "the narrower network wins");
        assert_eq!(teams.label(None, ip("192.168.1.7")), "build-farm");
        assert_eq!(teams.label(None, ip("::ffff:10.0.0.1")), "ci", "IPv4 mapped into IPv6");
        assert_eq!(teams.label(None, ip("192.168.1.8")), "other");
        assert_eq!(teams.label(None, None), "other");
        cfg.insert("bad".to_string(), vec!["10.0.0.0/33".to_string()]);
        assert!(Teams::new(&cfg).unwrap_err().contains("metrics.teams.bad"));
    }

    #[test]
    fn renders_the_text_format() {
        let m = Metrics::new();
        m.served("alice", true, "blob", 10);
        m.fetched("docker.io", "alice", 4);
        let text = String::from_utf8(m.render()).unwrap();
        assert!(text.contains(r#"berth_served_bytes_total{content="mirrored",kind="blob"} 10"#), "{text}");
        assert!(text.contains(r#"berth_upstream_fetched_bytes_total{upstream="docker.io"} 4"#));
        assert!(text.contains(r#"berth_client_fetched_bytes_total{client="alice"} 4"#));
    }

    /// The handles looked up once count into the same series as the labels would.
    #[test]
    fn cached_handles_count_each_series_apart() {
        let m = Metrics::new();
        m.request("manifest", "GET", 200, 0.001);
        m.request("manifest", "GET", 200, 0.002);
        m.request("manifest", "GET", 404, 0.001);
        m.request("blob", "HEAD", 200, 0.001);
        m.served("alice", false, "manifest", 5);
        m.served("alice", false, "manifest", 5);
        m.served("bob", true, "blob", 7);
        let text = String::from_utf8(m.render()).unwrap();
        for line in [
            r#"berth_http_requests_total{endpoint="manifest",method="GET",status="200"} 2"#,
            r#"berth_http_requests_total{endpoint="manifest",method="GET",status="404"} 1"#,
            r#"berth_http_requests_total{endpoint="blob",method="HEAD",status="200"} 1"#,
            r#"berth_http_request_duration_seconds_count{endpoint="manifest",method="GET"} 3"#,
            r#"berth_served_bytes_total{content="pushed",kind="manifest"} 10"#,
            r#"berth_served_bytes_total{content="mirrored",kind="blob"} 7"#,
            r#"berth_client_served_bytes_total{client="alice"} 10"#,
            r#"berth_client_served_bytes_total{client="bob"} 7"#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
