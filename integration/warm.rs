//! Prefetch: `berth warm` fills a running server's mirror through its own
//! pull path (the platforms asked for, every blob verified), so a later pull
//! makes no upstream request; `mirror.warm` does the same at startup.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::mirroring::{layer, mirror, pull};
use common::upstream::{Auth, FakeUpstream};
use common::*;

async fn berth_warm(args: Vec<String>) -> Output {
    actix_rt::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_berth")).arg("warm").args(args).output().unwrap()
    })
    .await
    .unwrap()
}

fn blob_file(s: &TestServer, d: &Digest) -> std::path::PathBuf {
    s.path(&format!("docker/registry/v2/blobs/sha256/{}/{}/data", &d.hex()[..2], d.hex()))
}

#[actix_rt::test]
async fn berth_warm_fills_the_cache_so_a_later_pull_makes_no_upstream_request() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let busybox = up.add_image("library/busybox", "1", &[layer(300_000, 1), layer(1000, 2)]);
    let amd64 = up.add_image("library/multi", "amd64", &[layer(20_000, 3)]);
    let arm64 = up.add_image("library/multi", "arm64", &[layer(20_000, 4)]);
    up.add_index("library/multi", "1", &[(&amd64, "linux/amd64"), (&arm64, "linux/arm64")]);
    let s = mirror(&up, None, |_| {}).await;
    let server = s.base.clone();

    let out = berth_warm(vec![
        "--server".into(),
        server.clone(),
        "busybox:1".into(),
        "docker.io/library/multi:1".into(),
        "--platform".into(),
        "linux/arm64".into(),
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("warmed 2 of 2 images: 3 manifests, 5 blobs"), "{stdout}");
    // Only the platform asked for.
    assert_eq!(up.count("GET", &format!("/blobs/{}", amd64.layers[0])), 0);
    assert_eq!(up.count("GET", &format!("/blobs/{}", arm64.layers[0])), 1);
    for d in std::iter::once(&busybox.config).chain(&busybox.layers) {
        common::mirroring::wait_for_file(&blob_file(&s, d)).await;
    }
    // A client's pull now is served from the store.
    let before = up.api_requests();
    pull(&s.client(), "busybox", "1", &busybox).await;
    pull(&s.client(), "multi", "arm64", &arm64).await;
    assert_eq!(up.api_requests(), before + 1, "only the tag multi:arm64, never fetched by warm, went upstream");
    assert_eq!(up.count("GET", "/blobs/"), 5, "no blob was fetched twice");

    // An image that does not exist fails the command, naming it; the others are still warmed.
    let out = berth_warm(vec!["--server".into(), server.clone(), "nothere:1".into(), "busybox:1".into()]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("docker.io/library/nothere:1") && stderr.contains("404"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("warmed 1 of 2 images"));

    // A registry this mirror does not mirror is not Docker Hub's under another
    // name: the command fails, saying so, and nothing is fetched or listed.
    up.add_image("org/app", "v1", &[layer(500, 9)]);
    let before = up.api_requests();
    let out = berth_warm(vec!["--server".into(), server, "ghcr.io/org/app:v1".into()]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ghcr.io/org/app:v1") && stderr.contains("NAME_UNKNOWN"), "{stderr}");
    assert_eq!(up.api_requests(), before, "nothing asked of the default upstream");
    let catalog = s.client().get("/v2/_catalog").await.json();
    assert!(!catalog.to_string().contains("org/app"), "{catalog}");
    s.stop().await;
    up.stop().await;
}

#[actix_rt::test]
async fn mirror_warm_is_applied_at_startup() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let busybox = up.add_image("library/busybox", "1", &[layer(50_000, 1)]);
    let s = mirror(&up, None, |c| c.mirror.warm = vec!["docker.io/library/busybox:1".into()]).await;
    // No client pulls: the server warms itself.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !blob_file(&s, &busybox.layers[0]).exists() {
        assert!(Instant::now() < deadline, "mirror.warm never fetched the image");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    let tag =
        s.path("docker/registry/v2/repositories/_mirror/docker.io/library/busybox/_manifests/tags/1/current/link");
    assert!(tag.exists());
    s.stop().await;
    up.stop().await;
}
