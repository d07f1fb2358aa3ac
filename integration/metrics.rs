//! `/metrics` after a scripted sequence: a push, a cold and a warm pull, a
//! held fetch, an upstream failure, an open upload, a garbage collection and
//! an eviction; every counter moves by what happened, and the per-client
//! counters add up to the totals.

mod common;

use std::time::{Duration, Instant};

use common::mirroring::{layer, mirror, pull, set_ttl, wait_for_file};
use common::upstream::{Auth, FakeUpstream};
use common::*;
use futures::StreamExt;

/// The samples of a scrape: (name, labels as `k="v"` strings, value).
struct Scrape(Vec<(String, Vec<String>, f64)>);

impl Scrape {
    async fn take(c: &Client) -> Scrape {
        let r = c.get("/metrics").await;
        assert_eq!(r.status, 200);
        assert!(r.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
        let text = String::from_utf8(r.body.to_vec()).unwrap();
        let mut out = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, l.trim_end_matches('}').split(',').map(str::to_string).collect()),
                None => (series, vec![]),
            };
            out.push((name.to_string(), labels, value.parse().unwrap()));
        }
        Scrape(out)
    }

    /// The sum of `name` over the series that have all of `labels`.
    fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.0
            .iter()
            .filter(|(n, l, _)| n == name && labels.iter().all(|want| l.iter().any(|have| have == want)))
            .map(|(_, _, v)| v)
            .sum()
    }
}

#[actix_rt::test]
async fn every_metric_moves_as_it_should() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let busybox = up.add_image("library/busybox", "1", &[layer(100_000, 1)]);
    let held = up.add_image("library/held", "1", &[layer(2 * 1024 * 1024, 2)]);
    up.add_image("library/gone", "1", &[layer(1000, 3)]);
    let s = mirror(&up, None, |c| {
        c.mirror.ttl = Duration::from_secs(4);
        c.mirror.eviction_interval = Duration::from_millis(100);
        set_ttl(c, Duration::from_secs(3600));
        c.metrics.teams.insert("ci".into(), vec!["127.0.0.0/8".into()]);
    })
    .await;
    let c = s.client();

    // A push, and a pull of what was pushed.
    let (pushed, _) = c.push_image("team/app", "v1", &layer(10_000, 4)).await;
    let r = c.get("/v2/team/app/manifests/v1").await;
    assert_eq!(r.body.as_ref(), &pushed[..]);
    // A cold pull, then (once the fetched blobs are stored) a warm one.
    pull(&c, "busybox", "1", &busybox).await;
    let blob_files: Vec<_> = std::iter::once(&busybox.config)
        .chain(&busybox.layers)
        .map(|d| s.path(&format!("docker/registry/v2/blobs/sha256/{}/{}/data", &d.hex()[..2], d.hex())))
        .collect();
    for f in &blob_files {
        wait_for_file(f).await;
    }
    // ... and linked: a fetch links its blob before it leaves the in-flight map.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while Scrape::take(&c).await.sum("berth_mirror_fetches_in_flight", &[]) != 0.0 {
        assert!(std::time::Instant::now() < deadline, "fetches never ended");
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    pull(&c, "busybox", "1", &busybox).await;
    let m = Scrape::take(&c).await;
    let manifest = busybox.manifest.len() as f64;
    let blobs: f64 = blob_files.iter().map(|f| std::fs::metadata(f).unwrap().len() as f64).sum();
    assert_eq!(m.sum("berth_served_bytes_total", &[r#"content="mirrored""#, r#"kind="manifest""#]), 2.0 * manifest);
    assert_eq!(m.sum("berth_served_bytes_total", &[r#"content="mirrored""#, r#"kind="blob""#]), 2.0 * blobs);
    assert_eq!(m.sum("berth_served_bytes_total", &[r#"content="pushed""#, r#"kind="manifest""#]), pushed.len() as f64);
    assert_eq!(m.sum("berth_upstream_fetched_bytes_total", &[r#"upstream="docker.io""#]), manifest + blobs);
    // Bandwidth saved: mirrored bytes served minus bytes fetched = one pull.
    let saved = m.sum("berth_served_bytes_total", &[r#"content="mirrored""#])
        - m.sum("berth_upstream_fetched_bytes_total", &[]);
    assert_eq!(saved, manifest + blobs);
    let lookups = |kind: &str, result: &str| {
        m.sum("berth_mirror_lookups_total", &[&format!(r#"kind="{kind}""#), &format!(r#"result="{result}""#)])
    };
    assert_eq!((lookups("manifest", "miss"), lookups("manifest", "hit")), (1.0, 1.0));
    assert_eq!((lookups("blob", "miss"), lookups("blob", "hit")), (2.0, 2.0));
    // A stored blob linked into another repository is one lookup, `shared`.
    let twin = up.add_image("library/twin", "1", &[layer(100_000, 1)]);
    let (status, got, _) = c.get_hashed(&format!("/v2/twin/blobs/{}", twin.layers[0])).await.unwrap();
    assert_eq!((status, &got), (200, &busybox.layers[0]));
    let m = Scrape::take(&c).await;
    let lookups = |kind: &str, result: &str| {
        m.sum("berth_mirror_lookups_total", &[&format!(r#"kind="{kind}""#), &format!(r#"result="{result}""#)])
    };
    assert_eq!((lookups("blob", "shared"), lookups("blob", "hit"), lookups("blob", "miss")), (1.0, 2.0, 2.0));
    let manifest_gets = [r#"endpoint="manifest""#, r#"method="GET""#];
    assert_eq!(m.sum("berth_http_requests_total", &[manifest_gets[0], manifest_gets[1], r#"status="200""#]), 3.0);
    assert_eq!(m.sum("berth_http_request_duration_seconds_count", &manifest_gets), 3.0);
    assert_eq!(
        m.sum("berth_http_requests_total", &[r#"endpoint="uploads""#, r#"method="POST""#, r#"status="201""#]),
        2.0
    );
    assert!(m.sum("berth_store_bytes", &[r#"content="mirrored""#]) >= manifest + blobs);
    assert!(m.sum("berth_store_bytes", &[r#"content="pushed""#]) >= 10_000.0);
    assert_eq!(m.sum("berth_upstream_errors_total", &[]), 0.0);

    // A fetch held half-way: one in flight, one client reading it.
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    up.state().gate = Some(gate.clone());
    let mut resp = c.get_streaming(&format!("/v2/held/blobs/{}", held.layers[0])).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert!(!resp.next().await.unwrap().unwrap().is_empty());
    let m = Scrape::take(&c).await;
    assert_eq!(m.sum("berth_mirror_fetches_in_flight", &[]), 1.0);
    assert_eq!(m.sum("berth_mirror_fetch_clients", &[]), 1.0);
    gate.add_permits(1000);
    while let Some(chunk) = resp.next().await {
        chunk.unwrap();
    }
    up.state().gate = None;

    // The upstream fails; an upload is left open.
    up.state().fail_with = Some((503, None));
    let r = c.get("/v2/gone/manifests/1").await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    up.state().fail_with = None;
    let r = c.req("POST", "/v2/team/app/blobs/uploads/", &[], "").await;
    assert_eq!(r.status, 202);
    let m = Scrape::take(&c).await;
    assert_eq!(m.sum("berth_upstream_errors_total", &[r#"upstream="docker.io""#, r#"kind="status""#]), 1.0);
    assert_eq!(m.sum("berth_uploads_open", &[]), 1.0);
    // The held fetch leaves once its blob is stored (after its client had every byte).
    let deadline = Instant::now() + Duration::from_secs(60);
    while Scrape::take(&c).await.sum("berth_mirror_fetches_in_flight", &[]) != 0.0 {
        assert!(Instant::now() < deadline, "the fetch never ended");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }

    // Garbage collection of the deleted push.
    let digest = r_digest(&c, "team/app", "v1").await;
    assert_eq!(c.req("DELETE", &format!("/v2/team/app/manifests/{digest}"), &[], "").await.status, 202);
    let token = std::fs::read_to_string(s.path(".berth/admin.token")).unwrap();
    let r = c.req("POST", "/_berth/gc?grace=0s", &[("X-Berth-Admin-Token", &token)], "").await;
    assert_eq!(r.status, 200);
    let m = Scrape::take(&c).await;
    assert_eq!(m.sum("berth_gc_runs_total", &[]), 1.0);
    assert!(m.sum("berth_gc_blobs_deleted_total", &[]) >= 2.0, "the layer and the config");
    assert!(m.sum("berth_gc_freed_bytes_total", &[]) >= 10_000.0);

    // Eviction: busybox and held are unused for longer than the TTL.
    let deadline = Instant::now() + Duration::from_secs(60);
    let m = loop {
        let m = Scrape::take(&c).await;
        if m.sum("berth_evicted_total", &[r#"object="blob""#]) >= 3.0 {
            break m;
        }
        assert!(Instant::now() < deadline, "nothing was evicted");
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(m.sum("berth_evicted_total", &[r#"object="tag""#]) >= 1.0);
    assert!(m.sum("berth_evicted_bytes_total", &[]) >= blobs);
    assert!(m.sum("berth_eviction_passes_total", &[]) >= 1.0);

    // Every byte is counted against a client, and this test's client is team `ci`.
    let served = m.sum("berth_served_bytes_total", &[]);
    assert_eq!(m.sum("berth_client_served_bytes_total", &[]), served);
    assert_eq!(m.sum("berth_client_served_bytes_total", &[r#"client="ci""#]), served);
    let fetched = m.sum("berth_upstream_fetched_bytes_total", &[]);
    assert_eq!(m.sum("berth_client_fetched_bytes_total", &[]), fetched);
    assert_eq!(m.sum("berth_client_fetched_bytes_total", &[r#"client="ci""#]), fetched);
    assert!(fetched >= manifest + blobs + 2.0 * 1024.0 * 1024.0);
    s.stop().await;
    up.stop().await;
}

async fn r_digest(c: &Client, repo: &str, tag: &str) -> String {
    let r = c.req("HEAD", &format!("/v2/{repo}/manifests/{tag}"), &[], "").await;
    r.header("docker-content-digest").unwrap().to_string()
}

#[actix_rt::test]
async fn bytes_streamed_without_a_length_are_counted_as_they_go() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let image = up.add_image("library/chunked", "1", &[layer(700_000, 7)]);
    up.state().no_content_length = true;
    let s = mirror(&up, None, |_| {}).await;
    let c = s.client();
    let d = &image.layers[0];
    let (status, got, size) = c.get_hashed(&format!("/v2/chunked/blobs/{d}")).await.unwrap();
    assert_eq!((status, &got, size), (200, d, 700_000));
    let m = Scrape::take(&c).await;
    assert_eq!(m.sum("berth_served_bytes_total", &[r#"content="mirrored""#, r#"kind="blob""#]), 700_000.0);
    assert_eq!(m.sum("berth_client_served_bytes_total", &[]), 700_000.0);
    assert_eq!(m.sum("berth_upstream_fetched_bytes_total", &[]), 700_000.0);
    s.stop().await;
    up.stop().await;
}

#[actix_rt::test]
async fn metrics_can_be_turned_off() {
    let s = TestServer::start_with(|c| {
        c.mirror.enabled = false;
        c.metrics.enabled = false;
    })
    .await;
    assert_eq!(s.client().get("/metrics").await.status, 404);
    s.stop().await;
}
