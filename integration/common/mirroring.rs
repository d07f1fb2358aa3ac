//! Helpers for mirror tests: berth in front of fake upstreams, test layers,
//! and a pull that checks every byte.

use std::time::Duration;

use bytes::Bytes;

use super::upstream::{FakeUpstream, Image, OCI_MANIFEST};
use super::{Client, Config, TestServer};

/// berth mirroring `docker.io` (and `ghcr.io`, if given) from fake upstreams.
pub async fn mirror(docker: &FakeUpstream, ghcr: Option<&FakeUpstream>, tweak: impl FnOnce(&mut Config)) -> TestServer {
    let (docker_url, ghcr_url) = (docker.url.clone(), ghcr.map(|g| g.url.clone()));
    TestServer::start_with(move |c| {
        c.mirror.set_upstream("docker.io", &docker_url);
        if let Some(u) = ghcr_url {
            c.mirror.set_upstream("ghcr.io", &u);
        }
        for u in &mut c.mirror.upstreams {
            u.response_timeout = Duration::from_secs(5);
            u.read_timeout = Duration::from_secs(5);
        }
        tweak(c);
    })
    .await
}

/// Waits until the fetch that served a client has also made its blob durable
/// (clients are released once bytes are verified; fsync and rename follow).
pub async fn wait_for_file(path: &std::path::Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(std::time::Instant::now() < deadline, "{} never appeared", path.display());
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn set_ttl(c: &mut Config, ttl: Duration) {
    for u in &mut c.mirror.upstreams {
        u.tag_ttl = ttl;
    }
}

pub fn layer(n: usize, seed: u8) -> Bytes {
    Bytes::from((0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect::<Vec<u8>>())
}

pub async fn pull(c: &Client, name: &str, tag: &str, image: &Image) {
    let r = c.req("GET", &format!("/v2/{name}/manifests/{tag}"), &[("Accept", OCI_MANIFEST)], "").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body, image.manifest);
    assert_eq!(r.header("docker-content-digest"), Some(image.digest.to_string().as_str()));
    for d in std::iter::once(&image.config).chain(&image.layers) {
        let (status, got, _) = c.get_hashed(&format!("/v2/{name}/blobs/{d}")).await.unwrap();
        assert_eq!((status, &got), (200, d));
    }
}
