//! The cache lifecycle end to end: mirrored content expires when unused and
//! stays while pulled, pins hold, the disk cap holds under a stream of cold
//! pulls, pushed content is never touched, and eviction never fails a pull.

use crate::common;

use std::time::{Duration, Instant};

use common::mirroring::{layer, mirror, pull, set_ttl};
use common::upstream::{Auth, FakeUpstream, Image};
use common::*;

/// Expiry and the cap checked every 100 ms, with the given TTL.
fn lifecycle(c: &mut Config, ttl: Duration) {
    c.mirror.ttl = ttl;
    c.mirror.eviction_interval = Duration::from_millis(100);
    set_ttl(c, Duration::from_secs(3600));
}

fn blob_file(d: &Digest) -> String {
    berth::store::layout::blob_data(d)
}

fn mirrored(repo: &str) -> String {
    format!("docker/registry/v2/repositories/_mirror/docker.io/{repo}")
}

/// Polls (bounded) until `done`. The bound is generous: each eviction pass
/// fsyncs the index, and right after a build a fresh machine's disk may take
/// seconds per fsync while it writes back the build.
async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !done().await {
        assert!(Instant::now() < deadline, "{what} did not happen");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

fn all_blobs(img: &Image) -> Vec<Digest> {
    std::iter::once(img.digest.clone())
        .chain(std::iter::once(img.config.clone()))
        .chain(img.layers.iter().cloned())
        .collect()
}

#[actix_rt::test]
async fn unused_mirrored_content_expires_and_pulled_content_stays() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let shared = layer(20_000, 9);
    let busy = up.add_image("library/busy", "1", &[layer(10_000, 1)]);
    let idle = up.add_image("library/idle", "1", &[layer(10_000, 2), shared.clone()]);
    let s = mirror(&up, None, |c| lifecycle(c, Duration::from_secs(2))).await;
    let c = s.client();
    let (pushed, _) = c.push_image("team/app", "v1", &shared).await;
    pull(&c, "busy", "1", &busy).await;
    pull(&c, "idle", "1", &idle).await;
    let idle_layer = blob_file(&idle.layers[0]);
    s.wait_for(&idle_layer).await;

    // `busy` is pulled over and over while `idle` is left alone.
    let started = Instant::now();
    while s.has(&idle_layer).await {
        assert!(started.elapsed() < Duration::from_secs(90), "unused content never expired");
        pull(&c, "busy", "1", &busy).await;
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
    // idle: tag, manifest and its own layer are gone; the layer a pushed image shares stays.
    eventually("the idle repository emptied", async || {
        s.entries(&mirrored("library/idle/_manifests/tags/1")).await.is_empty()
            && s.entries(&mirrored("library/idle/_manifests/revisions/sha256")).await.is_empty()
    })
    .await;
    assert!(!s.has(&blob_file(&idle.digest)).await, "the manifest's data went too");
    // An emptied repository is gone: from the listings and from the tree.
    eventually("the emptied repository's directories removed", async || {
        s.entries(&mirrored("library/idle")).await.is_empty()
    })
    .await;
    let catalog = c.get("/v2/_catalog").await.json();
    assert_eq!(catalog["repositories"], serde_json::json!(["docker.io/library/busy", "team/app"]));
    assert_eq!(c.get("/v1/search?q=idle").await.json()["num_results"], 0);
    assert!(s.has(&blob_file(&Digest::sha256_of(&shared))).await, "pushed content keeps its layer");
    assert_eq!(c.get("/v2/team/app/manifests/v1").await.body.as_ref(), &pushed[..]);
    // busy, pulled all along, is all there.
    for d in all_blobs(&busy) {
        s.wait_for(&blob_file(&d)).await;
    }
    // An expired image is simply fetched again.
    let before = up.count("GET", "/manifests/");
    pull(&c, "idle", "1", &idle).await;
    assert_eq!(up.count("GET", "/manifests/"), before + 1);
    s.stop().await;
    up.stop().await;
}

#[actix_rt::test]
async fn pinned_images_survive_any_ttl_and_the_cap() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let pinned = up.add_image("library/alpine", "3.20", &[layer(300_000, 1)]);
    let other_tag = up.add_image("library/alpine", "3.19", &[layer(300_000, 2)]);
    let whole = up.add_image("library/busybox", "1", &[layer(300_000, 3)]);
    let s = mirror(&up, None, |c| {
        lifecycle(c, Duration::from_millis(500));
        c.mirror.max_size = Some(bytesize::ByteSize::kib(100));
        c.mirror.pin = vec!["docker.io/library/alpine:3.20".into(), "docker.io/library/busybox".into()];
    })
    .await;
    let c = s.client();
    pull(&c, "alpine", "3.20", &pinned).await;
    pull(&c, "alpine", "3.19", &other_tag).await;
    pull(&c, "busybox", "1", &whole).await;
    // Clients are served once bytes are verified; the files land just after.
    for d in all_blobs(&pinned).iter().chain(&all_blobs(&whole)) {
        s.wait_for(&blob_file(d)).await;
    }
    // The unpinned tag goes (expired, and over the cap); the pinned ones stay whatever the cap says.
    eventually("the unpinned tag expired", async || !s.has(&blob_file(&other_tag.layers[0])).await).await;
    for d in all_blobs(&pinned).iter().chain(&all_blobs(&whole)) {
        assert!(s.has(&blob_file(d)).await, "{d} is pinned");
    }
    let before = up.api_requests();
    pull(&c, "alpine", "3.20", &pinned).await;
    pull(&c, "busybox", "1", &whole).await;
    assert_eq!(up.api_requests(), before, "pinned images are served from the store");
    s.stop().await;
    up.stop().await;
}

/// Bytes of blob data in the storage that are not in `pushed`.
async fn mirror_only_bytes(s: &TestServer, pushed: &[Digest]) -> u64 {
    let root = "docker/registry/v2/blobs/sha256";
    let mut total = 0;
    for prefix in s.entries(root).await {
        for name in s.entries(&format!("{root}/{prefix}")).await {
            if pushed.iter().any(|d| d.hex() == name) {
                continue;
            }
            total += s.size(&format!("{root}/{prefix}/{name}/data")).await.unwrap_or(0);
        }
    }
    total
}

#[actix_rt::test]
async fn the_cap_holds_under_a_stream_of_cold_pulls() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let shared = layer(200_000, 99);
    let images: Vec<Image> = (0..8)
        .map(|i| up.add_image(&format!("library/img{i}"), "1", &[layer(250_000, i as u8), shared.clone()]))
        .collect();
    let cap = 1024 * 1024;
    let s = mirror(&up, None, |c| {
        lifecycle(c, Duration::from_secs(3600));
        c.mirror.max_size = Some(bytesize::ByteSize::b(cap));
    })
    .await;
    let c = s.client();
    let (pushed_manifest, pushed_d) = c.push_image("team/app", "v1", &shared).await;
    let pushed = vec![pushed_d.clone(), Digest::sha256_of(b"{}"), Digest::sha256_of(&shared)];
    // Eight cold pulls of ~450 KiB each: 3.6 MiB through a 1 MiB cap.
    for (i, img) in images.iter().enumerate() {
        pull(&c, &format!("img{i}"), "1", img).await;
        eventually("the cap held", async || mirror_only_bytes(&s, &pushed).await <= cap).await;
    }
    // The most recent pull is whole; the oldest went.
    for d in all_blobs(images.last().unwrap()) {
        if !pushed.contains(&d) {
            s.wait_for(&blob_file(&d)).await;
        }
    }
    assert!(!s.has(&blob_file(&images[0].layers[0])).await, "the least recently used image went");
    // Pushed content, and the layer it shares with every mirrored image, untouched.
    assert_eq!(c.get("/v2/team/app/manifests/v1").await.body.as_ref(), &pushed_manifest[..]);
    for d in &pushed {
        assert!(s.has(&blob_file(d)).await);
    }
    s.stop().await;
    up.stop().await;
}

#[actix_rt::test]
async fn eviction_concurrent_with_pulls_never_fails_a_pull() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let images: Vec<Image> = (0..4)
        .map(|i| up.add_image(&format!("library/img{i}"), "1", &[layer(200_000, i as u8), layer(50_000, 50 + i as u8)]))
        .collect();
    // A cap smaller than one image: every pass evicts what it can.
    let s = mirror(&up, None, |c| {
        lifecycle(c, Duration::from_secs(3600));
        c.mirror.max_size = Some(bytesize::ByteSize::kib(64));
        c.mirror.eviction_interval = Duration::from_millis(10);
    })
    .await;
    let pulls = (0..4).map(|i| {
        let (c, img) = (s.client(), &images[i]);
        async move {
            for _ in 0..15 {
                pull(&c, &format!("img{i}"), "1", img).await;
            }
        }
    });
    futures::future::join_all(pulls).await;
    // The passes did evict (under a 64 KiB cap no image's 200 KB layer stays),
    // while every pull above got every byte.
    let layers: Vec<String> = images.iter().map(|img| blob_file(&img.layers[0])).collect();
    eventually("eviction of every big layer", async || {
        for f in &layers {
            if s.read(f).await.is_some() {
                return false;
            }
        }
        true
    })
    .await;
    s.stop().await;
    up.stop().await;
}

#[actix_rt::test]
async fn uses_recorded_before_a_clean_stop_survive_the_restart() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let image = up.add_image("library/app", "1", &[layer(1000, 1)]);
    let url = up.url.clone();
    actix_rt::task::spawn_blocking(move || {
        use berth::store::index::{Index, UseKind};
        let work = tempfile::tempdir().unwrap();
        let data = work.path().join("data");
        // No eviction pass (which would flush) after the one at startup.
        let (b, addr) =
            common::procs::berth_with(&data, work.path(), &["--mirror", &format!("docker.io={url}")], |cmd| {
                cmd.env("BERTH_MIRROR__EVICTION_INTERVAL", "1h");
            });
        let (status, _, _) = common::procs::http("GET", &addr, "/v2/app/manifests/1").unwrap();
        assert_eq!(status, 200);
        b.stop();
        let index = Index::open(&berth::store::index_path(&data)).unwrap();
        let repo = berth::store::layout::mirror_repository("docker.io", "library/app");
        let tags = index.uses(UseKind::Tag, &repo).unwrap();
        assert_eq!(tags.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(), vec!["1"], "flushed at the stop");
        let manifests = index.uses(UseKind::Manifest, &repo).unwrap();
        assert_eq!(manifests[0].0, image.digest.to_string());
    })
    .await
    .unwrap();
    up.stop().await;
}
