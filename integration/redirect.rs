//! Blob downloads by redirect (`storage.redirect`): berth on SeaweedFS
//! answers blob GETs with a 307 to a presigned URL, and skopeo, containerd
//! and dockerd pull through it with the bytes coming from SeaweedFS (berth's
//! served-bytes counter stays at zero for blobs while its redirect counter
//! grows); a client the access rules refuse gets no URL.

mod common;

use std::process::Command;

use common::images::busybox_layout;
use common::procs::{add_user, berth_with, http, http_with, run, Containerd, Dockerd};
use common::s3::{Weed, ACCESS_KEY, SECRET_KEY};
use common::Digest;

fn metric(addr: &str, line_prefix: &str) -> u64 {
    let (_, _, body) = http("GET", addr, "/metrics").unwrap();
    String::from_utf8(body)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(line_prefix).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

#[test]
fn clients_pull_blobs_from_the_bucket_and_a_refused_client_gets_no_url() {
    common::procs::require("skopeo");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let weed = Weed::start();
    weed.bucket("reg");
    let layout = busybox_layout(w);
    add_user(&w.join("htpasswd"), "ci", "secret");
    // The README's example, over the test's bucket and users.
    let example = common::readme_toml("# berth.toml: blob downloads straight from the bucket");
    let toml = format!(
        "{example}\n[auth.htpasswd]\npath = {:?}\n\n[[auth.rules]]\nrepositories = [\"public/*\"]\npull = [\"anonymous\"]\npush = [\"ci\"]\ndelete = []\n",
        w.join("htpasswd")
    )
    .replace("https://s3.example.com", &weed.endpoint)
    .replace("\"registry\"", "\"reg\"");
    std::fs::write(w.join("berth.toml"), &toml).unwrap();
    let (_berth, addr) =
        berth_with(&w.join("state"), w, &["--config", w.join("berth.toml").to_str().unwrap()], |cmd| {
            cmd.env("BERTH_STORAGE__S3__ACCESS_KEY", ACCESS_KEY).env("BERTH_STORAGE__S3__SECRET_KEY", SECRET_KEY);
        });
    for repo in ["public/busybox:1", "private/app:1"] {
        run(Command::new("skopeo").args([
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            "ci:secret",
            &layout.reference("single"),
            &format!("docker://{addr}/{repo}"),
        ]));
    }
    let served_blob_bytes = |addr: &str| metric(addr, "berth_served_bytes_total{content=\"pushed\",kind=\"blob\"} ");
    let redirects = |addr: &str| metric(addr, "berth_blob_redirects_total ");
    assert_eq!(redirects(&addr), 0);

    // A GET is a 307 to SeaweedFS, whose bytes are the blob's.
    let manifest: serde_json::Value = serde_json::from_str(&run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{addr}/public/busybox:1"),
    ])))
    .unwrap();
    let layer: Digest = manifest["layers"][0]["digest"].as_str().unwrap().parse().unwrap();
    let (status, headers, body) = http("GET", &addr, &format!("/v2/public/busybox/blobs/{layer}")).unwrap();
    assert_eq!(status, 307, "a blob GET served by berth itself ({} bytes)", body.len());
    let location = headers.iter().find(|(k, _)| k == "location").map(|(_, v)| v.clone()).unwrap();
    let weed_host = weed.endpoint.trim_start_matches("http://");
    assert!(location.starts_with(&weed.endpoint) && location.contains("X-Amz-Signature"), "{location}");
    let path = &location[weed.endpoint.len()..];
    let (status, _, bytes) = http("GET", weed_host, path).unwrap();
    assert_eq!(status, 200);
    assert_eq!(Digest::sha256_of(&bytes), layer, "the bucket's bytes are the blob's");
    // A HEAD is answered by berth itself.
    assert_eq!(http("HEAD", &addr, &format!("/v2/public/busybox/blobs/{layer}")).unwrap().0, 200);

    // A client the rules refuse gets a 401 and no URL; with the password, a URL.
    let (status, headers, _) = http("GET", &addr, &format!("/v2/private/app/blobs/{layer}")).unwrap();
    assert_eq!(status, 401);
    assert!(headers.iter().all(|(k, _)| k != "location"), "{headers:?}");
    let basic = format!("Basic {}", base64_of("ci:secret"));
    let (status, _, _) =
        http_with("GET", &addr, &format!("/v2/private/app/blobs/{layer}"), &[("Authorization", &basic)]).unwrap();
    assert_eq!(status, 307);

    // skopeo, containerd and dockerd pull through it; every blob came from the bucket.
    let before = redirects(&addr);
    run(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{addr}/public/busybox:1"),
        &format!("oci:{}:pulled", w.join("out").display()),
    ]));
    let c = Containerd::start(&w.join("containerd"));
    c.ctr(&["images", "pull", "--plain-http", "--snapshotter", "native", &format!("{addr}/public/busybox:1")]);
    drop(c);
    let d = Dockerd::start(&w.join("docker"), &format!(r#"{{"insecure-registries": ["{addr}"]}}"#));
    d.docker(&["pull", &format!("{addr}/public/busybox:1")]);
    drop(d);
    // Each client fetched the config and the layer: six redirects at least.
    assert!(redirects(&addr) >= before + 6, "redirects: {} after {before}", redirects(&addr));
    assert_eq!(served_blob_bytes(&addr), 0, "no blob byte passed through berth");
}

fn base64_of(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}
