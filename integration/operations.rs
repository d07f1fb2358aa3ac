//! What an operator relies on: readiness that follows the data directory (a
//! read-only remount, for real) and reports upstreams without failing on them.

mod common;

use std::process::Command;

use common::mirroring::{layer, mirror, pull};
use common::upstream::{Auth, FakeUpstream};
use common::TestServer;

fn mount(args: &[&str], dir: &std::path::Path) {
    let out = Command::new("mount").args(args).arg(dir).arg(dir).output().unwrap();
    assert!(out.status.success(), "mount {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Makes `dir` read-only for every path under it (a read-only bind mount over
/// itself: what a remount would do, without waiting for open files to close).
fn read_only(dir: &std::path::Path) {
    mount(&["--bind"], dir);
    let out = Command::new("mount").args(["-o", "remount,bind,ro"]).arg(dir).output().unwrap();
    assert!(out.status.success(), "read-only: {}", String::from_utf8_lossy(&out.stderr));
}

fn read_write(dir: &std::path::Path) {
    assert!(Command::new("umount").arg(dir).status().unwrap().success());
}

#[actix_rt::test]
async fn readiness_follows_the_data_directory_and_reports_upstreams() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let image = up.add_image("library/busybox", "1", &[layer(1000, 1)]);
    let s = mirror(&up, None, |_| {}).await;
    let c = s.client();
    let text = |r: &common::Resp| String::from_utf8_lossy(&r.body).to_string();

    let r = c.get("/readyz").await;
    assert_eq!((r.status, text(&r).as_str()), (200, "ready\nupstream docker.io: not contacted yet\n"));
    pull(&c, "busybox", "1", &image).await;
    let r = c.get("/readyz").await;
    assert!(text(&r).starts_with("ready\nupstream docker.io: ok (answered "), "{}", text(&r));

    // An upstream that is down is reported, and berth stays ready: it serves what it holds.
    up.state().fail_with = Some((503, None));
    assert_eq!(c.get("/v2/other/manifests/1").await.status, 503);
    let r = c.get("/readyz").await;
    assert_eq!(r.status, 200);
    assert!(text(&r).contains("upstream docker.io: failing (") && text(&r).contains("HTTP 503"), "{}", text(&r));
    up.state().fail_with = None;

    // The data directory goes read-only: not ready, and why; back to read-write: ready again.
    read_only(s.data());
    let r = c.get("/readyz").await;
    let body = text(&r);
    read_write(s.data());
    assert_eq!(r.status, 503, "{body}");
    assert!(body.starts_with("not ready: ") && body.contains("read-only"), "{body}");
    assert_eq!(c.get("/readyz").await.status, 200);
    s.stop().await;
    up.stop().await;
}

#[actix_rt::test]
async fn search_answers_from_the_catalog_in_docker_search_s_shape() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let image = up.add_image("library/busybox", "1", &[layer(1000, 1)]);
    let s = mirror(&up, None, |_| {}).await;
    let c = s.client();
    for repo in ["team/busybox-tools", "team/app", "other/BusyBoxish"] {
        c.push_image(&repo.to_lowercase(), "1", b"layer").await;
    }
    pull(&c, "busybox", "1", &image).await;
    let r = c.get("/v1/search?q=BUSYBOX").await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["query"], "BUSYBOX");
    assert_eq!(v["num_results"], 3);
    let names: Vec<&str> = v["results"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["docker.io/library/busybox", "other/busyboxish", "team/busybox-tools"]);
    assert_eq!(v["results"][0]["description"], "");
    // Pages of n.
    let v = c.get("/v1/search?q=busybox&n=2&page=2").await.json();
    assert_eq!((v["num_pages"].as_u64(), v["page"].as_u64(), v["page_size"].as_u64()), (Some(2), Some(2), Some(2)));
    assert_eq!(v["results"].as_array().unwrap().len(), 1);
    assert_eq!(c.get("/v1/search").await.json()["num_results"], 4, "no term: everything");
    let r = c.get("/v1/search?q=x&n=zero").await;
    assert_eq!((r.status, r.code().as_str()), (400, "PAGINATION_NUMBER_INVALID"));
    let r = c.get("/v1/search?q=a&q=b").await;
    assert_eq!((r.status, r.code().as_str()), (400, "QUERY_INVALID"), "a malformed query gets an OCI error");
    assert_eq!(c.get("/v1/_ping").await.status, 200);
    s.stop().await;
    up.stop().await;
}

#[actix_rt::test]
async fn search_shows_only_what_the_caller_may_pull() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(&htpasswd, berth::htpasswd::line("alice", "secret", 4).unwrap() + "\n").unwrap();
    let s = TestServer::start_with(|c| {
        c.mirror.enabled = false;
        c.auth.htpasswd = Some(berth::config::HtpasswdConfig { path: htpasswd.clone(), realm: "berth".into() });
    })
    .await;
    let c = s.client();
    let alice = ("Authorization", "Basic YWxpY2U6c2VjcmV0");
    let config = c
        .req(
            "POST",
            &format!("/v2/team/app/blobs/uploads/?digest={}", berth::oci::Digest::sha256_of(b"{}")),
            &[alice],
            "{}",
        )
        .await;
    assert_eq!(config.status, 201);
    let v = c.req("GET", "/v1/search?q=team", &[alice], "").await.json();
    assert_eq!(v["num_results"], 0, "a repository with only a blob is not in the catalog: {v}");
    let m = common::image_manifest(&berth::oci::Digest::sha256_of(b"{}"), 2, &berth::oci::Digest::sha256_of(b"{}"), 2);
    let r =
        c.req("PUT", "/v2/team/app/manifests/1", &[alice, ("Content-Type", common::upstream::OCI_MANIFEST)], m).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let v = c.req("GET", "/v1/search?q=team", &[alice], "").await.json();
    assert_eq!(v["num_results"], 1);
    let v = c.get("/v1/search?q=team").await.json();
    assert_eq!(v["num_results"], 0, "anonymous may not pull pushed content");
    let r = c.req("GET", "/v1/search?q=team", &[("Authorization", "Basic YWxpY2U6d3Jvbmc=")], "").await;
    assert_eq!(r.status, 401);
    s.stop().await;
}

#[actix_rt::test]
async fn under_the_rate_limit_floor_cached_tags_are_not_revalidated_until_the_window_passes() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let image = up.add_image("library/busybox", "1", &[layer(1000, 1)]);
    let fresh = up.add_image("library/alpine", "1", &[layer(1000, 2)]);
    // 5 pulls per 2-second window; berth keeps 3 of them.
    up.state().ratelimit = Some((5, 5, 2));
    let s = mirror(&up, None, |c| {
        common::mirroring::set_ttl(c, std::time::Duration::ZERO);
        c.mirror.upstreams[0].ratelimit_floor = 3;
    })
    .await;
    let c = s.client();
    let get = |name: &'static str| {
        let c = &c;
        async move {
            c.req("GET", &format!("/v2/{name}/manifests/1"), &[("Accept", common::upstream::OCI_MANIFEST)], "").await
        }
    };
    pull(&c, "busybox", "1", &image).await; // a GET: 4 left
                                            // Each pull of a cached tag revalidates (a HEAD, free) while the budget holds.
    let heads = up.count("HEAD", "/manifests/");
    let r = get("busybox").await;
    assert_eq!((r.status, r.header("x-berth-stale")), (200, None));
    assert_eq!(up.count("HEAD", "/manifests/"), heads + 1);
    // Spend the budget elsewhere (as other clients of the same account would): 2 left.
    up.state().ratelimit = Some((5, 2, 2));
    let r = get("busybox").await; // this HEAD reports 2 < 3
    assert_eq!(r.status, 200);
    let before = up.api_requests();
    let window_start = std::time::Instant::now();
    let r = get("busybox").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, image.manifest, "the cached tag");
    let why = r.header("x-berth-stale").unwrap_or_default().to_string();
    assert!(why.contains("rate-limit budget") && why.contains("2 of 5"), "{why}");
    assert_eq!(up.api_requests(), before, "no upstream request for a cached tag under the floor");
    // A cold pull still goes through.
    pull(&c, "alpine", "1", &fresh).await;
    assert!(up.api_requests() > before);
    let m = String::from_utf8(c.get("/metrics").await.body.to_vec()).unwrap();
    assert!(m.contains(r#"berth_upstream_budget_skips_total{upstream="docker.io"} 1"#), "{m}");
    assert!(m.contains(r#"berth_upstream_ratelimit_remaining{credential="anonymous",upstream="docker.io"} 1"#), "{m}");
    // The window passes and the upstream's budget is back: revalidation resumes.
    up.state().ratelimit = Some((5, 5, 2));
    let mut last = get("busybox").await;
    while last.header("x-berth-stale").is_some() {
        assert!(window_start.elapsed() < std::time::Duration::from_secs(30), "revalidation never resumed");
        actix_rt::time::sleep(std::time::Duration::from_millis(100)).await;
        last = get("busybox").await;
    }
    assert!(window_start.elapsed() >= std::time::Duration::from_secs(1), "not before the window passed");
    let heads = up.count("HEAD", "/manifests/");
    assert_eq!(get("busybox").await.header("x-berth-stale"), None);
    assert_eq!(up.count("HEAD", "/manifests/"), heads + 1, "revalidated again");
    s.stop().await;
    up.stop().await;
}

/// `[health]` (registry:2's `health` checks): a file that takes the instance
/// out of rotation, a TCP and an HTTP dependency with failure thresholds,
/// each named in `/readyz`'s body while it fails.
#[actix_rt::test]
async fn readiness_follows_the_configured_health_checks() {
    let work = tempfile::tempdir().unwrap();
    let down = work.path().join("down");
    // A dependency that answers, and an address nothing listens on.
    let up = FakeUpstream::start(Auth::Anonymous).await;
    up.add_image("library/app", "1", &[layer(10, 1)]);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let (file, up_url, tcp_addr) = (down.clone(), up.url.clone(), up.url.trim_start_matches("http://").to_string());
    let s = TestServer::start_with(move |c| {
        c.mirror.enabled = false;
        c.health.files = vec![file];
        c.health.tcp =
            vec![berth::config::TcpCheck { addr: tcp_addr, timeout: std::time::Duration::from_secs(1), threshold: 1 }];
        c.health.http = vec![berth::config::HttpCheck {
            uri: format!("{up_url}/v2/library/app/manifests/1"),
            headers: Default::default(),
            status: 200,
            timeout: std::time::Duration::from_secs(1),
            threshold: 2,
        }];
    })
    .await;
    let c = s.client();
    assert_eq!(c.get("/readyz").await.status, 200);
    std::fs::write(&down, b"").unwrap();
    let r = c.get("/readyz").await;
    assert_eq!(r.status, 503);
    assert!(r.text().contains(&format!("health file {} exists", down.display())), "{}", r.text());
    std::fs::remove_file(&down).unwrap();
    assert_eq!(c.get("/readyz").await.status, 200, "back in rotation");

    // The HTTP dependency fails: tolerated once (threshold 2), then named.
    up.state().fail_with = Some((500, None));
    assert_eq!(c.get("/readyz").await.status, 200, "one failure is under the threshold");
    let r = c.get("/readyz").await;
    assert_eq!(r.status, 503);
    assert!(r.text().contains("answered HTTP 500, not 200"), "{}", r.text());
    up.state().fail_with = None;
    assert_eq!(c.get("/readyz").await.status, 200, "a success resets the count");
    s.stop().await;

    // A TCP dependency nothing listens on.
    let s = TestServer::start_with(move |c| {
        c.mirror.enabled = false;
        c.health.tcp = vec![berth::config::TcpCheck {
            addr: closed_addr,
            timeout: std::time::Duration::from_secs(1),
            threshold: 1,
        }];
    })
    .await;
    let r = s.client().get("/readyz").await;
    assert_eq!(r.status, 503);
    assert!(r.text().contains("does not accept connections"), "{}", r.text());
    s.stop().await;
    up.stop().await;
}
