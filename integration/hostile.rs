//! Everything a hostile client might send, at once, against berth with
//! authentication on: path traversal in names, references and upload ids
//! (`..`, `%2e%2e`, encoded slashes, backslashes, NUL), names and tags over
//! the spec's limits, malformed `Authorization` headers and wrong passwords,
//! truncated, oversized and lying bodies, malformed and deeply nested
//! manifests, manifests naming what is not there (a manifest cannot name its
//! own digest), a flood of upload sessions and 250 slow connections.
//!
//! Each bad request must get a 4xx with an OCI error body (or, where the
//! HTTP parser itself refuses the bytes, a bare 4xx); a normal client must be
//! served within a second throughout; and afterwards every image pushed
//! before must pull with the right digests, and nothing may exist outside
//! the data directory's own trees.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;

const PASSWORD: &str = "correct horse";

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// Sends `head` and `body` on a fresh connection (closing our side when
/// `close` is set) and returns the status and body of the answer (status 0:
/// the connection closed without one).
fn send(addr: &str, head: &str, body: &[u8], close: bool) -> (u16, String) {
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = sock.write_all(head.as_bytes());
    let _ = sock.write_all(body);
    if close {
        let _ = sock.shutdown(Shutdown::Write);
    }
    let mut raw = Vec::new();
    let _ = sock.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// One bad request: what to send, and what must come back.
struct Case {
    what: &'static str,
    request: String,
    body: Vec<u8>,
    /// Close our sending side after the body (a truncated body).
    close: bool,
    /// Refused by the HTTP parser before berth sees it: a bare 4xx is right.
    parser: bool,
}

fn case(what: &'static str, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Case {
    let mut request = format!("{method} {target} HTTP/1.1\r\nHost: berth\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    Case { what, request, body: body.to_vec(), close: false, parser: false }
}

fn nested(depth: usize) -> Vec<u8> {
    let mut v = b"{\"schemaVersion\":2,\"x\":".to_vec();
    v.extend(std::iter::repeat_n(b'[', depth));
    v.extend(std::iter::repeat_n(b']', depth));
    v.push(b'}');
    v
}

fn cases(upload: &str, layer: &Digest) -> Vec<Case> {
    let alice = basic("alice", PASSWORD);
    let a = [("Authorization", alice.as_str())];
    let json = [("Authorization", alice.as_str()), ("Content-Type", OCI_MANIFEST)];
    let d = layer.to_string();
    let long_name = ["n".repeat(100), "n".repeat(100), "n".repeat(60)].join("/");
    let long_tag = "t".repeat(129);
    let missing = Digest::sha256_of(b"not stored anywhere");
    let dangling = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": missing.to_string(), "size": 10}]
    }))
    .unwrap();
    let huge_header = "x".repeat(40 * 1024);
    let mut v = vec![
        // Traversal in names.
        case("dot-dot name", "GET", "/v2/../../etc/passwd/manifests/latest", &a, b""),
        case("encoded dot-dot name", "GET", "/v2/%2e%2e/%2e%2e/etc/manifests/latest", &a, b""),
        case("encoded slashes", "GET", "/v2/team%2f..%2f..%2fx/manifests/latest", &a, b""),
        case("encoded backslash", "GET", "/v2/team%5c..%5cx/manifests/latest", &a, b""),
        case("encoded NUL in a name", "GET", "/v2/team/app%00/manifests/latest", &a, b""),
        case("dot-dot push", "PUT", "/v2/team/../../x/manifests/latest", &json, b"{}"),
        case("underscore name", "GET", "/v2/_mirror/docker.io/library/alpine/manifests/3.20", &a, b""),
        // Traversal in references and digests.
        case("dot-dot tag", "GET", "/v2/team/app/manifests/..", &a, b""),
        case("encoded traversal tag", "PUT", "/v2/team/app/manifests/..%2f..%2f..%2fetc%2fpasswd", &json, b"{}"),
        case("traversal digest", "GET", "/v2/team/app/blobs/sha256:..%2f..%2f..%2fetc%2fpasswd", &a, b""),
        case("short digest", "GET", "/v2/team/app/blobs/sha256:abc", &a, b""),
        case("uppercase digest", "GET", &format!("/v2/team/app/blobs/{}", d.to_uppercase()), &a, b""),
        // Traversal in upload ids.
        case("dot-dot upload id", "PATCH", "/v2/team/app/blobs/uploads/..%2f..%2f..%2ftmp%2fberth-owned", &a, b"x"),
        case("dot-dot upload put", "PUT", &format!("/v2/team/app/blobs/uploads/%2e%2e?digest={d}"), &a, b""),
        case("upload id with NUL", "DELETE", "/v2/team/app/blobs/uploads/abc%00def", &a, b""),
        case("upload id with backslash", "GET", "/v2/team/app/blobs/uploads/..%5c..%5cx", &a, b""),
        // Over the spec's limits.
        case("name over 255", "GET", &format!("/v2/{long_name}/manifests/latest"), &a, b""),
        case("tag over 128", "PUT", &format!("/v2/team/app/manifests/{long_tag}"), &json, b"{}"),
        case("URI over the limit", "GET", &format!("/v2/team/app/tags/list?last={}", "z".repeat(9000)), &a, b""),
        case("header over the limit", "GET", "/v2/", &[("X-Junk", &huge_header)], b""),
        // Credentials.
        case("no credentials", "GET", "/v2/team/app/manifests/v1", &[], b""),
        case("wrong password", "GET", "/v2/team/app/manifests/v1", &[("Authorization", &basic("alice", "x"))], b""),
        case("unknown user", "GET", "/v2/", &[("Authorization", &basic("mallory", PASSWORD))], b""),
        case("Basic without credentials", "GET", "/v2/", &[("Authorization", "Basic")], b""),
        case("Basic, not base64", "GET", "/v2/", &[("Authorization", "Basic !!!!")], b""),
        case("Basic without a colon", "GET", "/v2/", &[("Authorization", "Basic YWxpY2U=")], b""),
        case(
            "forged bearer",
            "GET",
            "/v2/",
            &[("Authorization", "Bearer eyJzdWIiOiJhbGljZSIsImV4cCI6OTk5OTk5OTk5OTl9.AAAA")],
            b"",
        ),
        case("other scheme", "GET", "/v2/", &[("Authorization", "Digest username=alice")], b""),
        case(
            "token, wrong password",
            "GET",
            "/v2/token?scope=repository:team/app:push",
            &[("Authorization", &basic("alice", "x"))],
            b"",
        ),
        // Bodies.
        case("manifest, not JSON", "PUT", "/v2/team/app/manifests/bad", &json, b"{not json"),
        case("manifest nested 100000 deep", "PUT", "/v2/team/app/manifests/deep", &json, &nested(100_000)),
        case("manifest of 5 MiB", "PUT", "/v2/team/app/manifests/big", &json, &vec![b' '; 5 << 20]),
        case(
            "index naming a manifest that is not there",
            "PUT",
            "/v2/team/app/manifests/dangling",
            &[("Authorization", alice.as_str()), ("Content-Type", OCI_INDEX)],
            &dangling,
        ),
        case("schema 1", "PUT", "/v2/team/app/manifests/s1", &json, br#"{"schemaVersion":1,"name":"team/app"}"#),
        case(
            "blob with a wrong digest",
            "POST",
            &format!("/v2/team/app/blobs/uploads/?digest={missing}"),
            &a,
            b"other bytes",
        ),
        case(
            "blob over the size limit",
            "POST",
            &format!("/v2/team/app/blobs/uploads/?digest={missing}"),
            &[("Authorization", alice.as_str()), ("Content-Length", "2097152")],
            b"",
        ),
        case(
            "chunk out of order",
            "PATCH",
            upload,
            &[("Authorization", alice.as_str()), ("Content-Range", "100-199")],
            &[1u8; 100],
        ),
        case(
            "chunk whose range lies",
            "PATCH",
            upload,
            &[("Authorization", alice.as_str()), ("Content-Range", "0-9")],
            &[1u8; 20],
        ),
        case(
            "Content-Range beyond u64",
            "PATCH",
            upload,
            &[("Authorization", alice.as_str()), ("Content-Range", "0-18446744073709551615")],
            b"x",
        ),
        case("query given twice", "GET", "/v2/team/app/tags/list?n=1&n=2", &a, b""),
        case("negative page size", "GET", "/v2/_catalog?n=-1", &a, b""),
        case(
            "range past the end",
            "GET",
            &format!("/v2/team/app/blobs/{d}"),
            &[("Authorization", alice.as_str()), ("Range", "bytes=999999999-")],
            b"",
        ),
    ];
    // A body shorter than its Content-Length, then the client stops sending.
    let mut truncated = case(
        "truncated manifest",
        "PUT",
        "/v2/team/app/manifests/cut",
        &[("Authorization", alice.as_str()), ("Content-Type", OCI_MANIFEST), ("Content-Length", "1000")],
        b"{\"schemaVersion\":2,",
    );
    truncated.close = true;
    v.push(truncated);
    let mut truncated_blob = case(
        "truncated chunk",
        "PATCH",
        upload,
        &[("Authorization", alice.as_str()), ("Content-Length", "5000")],
        &[2u8; 100],
    );
    truncated_blob.close = true;
    v.push(truncated_blob);
    // Bytes the HTTP parser refuses before berth sees them.
    for (what, target) in
        [("raw backslash", "/v2/team\\app/manifests/latest"), ("raw NUL", "/v2/team/app\0/manifests/latest")]
    {
        let mut c = case(what, "GET", target, &a, b"");
        c.parser = true;
        v.push(c);
    }
    let mut lying = case(
        "Content-Length that is not a number",
        "PUT",
        "/v2/team/app/manifests/x",
        &[("Content-Length", "12abc")],
        b"{}",
    );
    lying.parser = true;
    v.push(lying);
    v
}

/// Pushes a two-layer image as alice; returns its manifest, digest and blobs.
async fn push(c: &Client, repo: &str, tag: &str, seed: u8) -> (Vec<u8>, Digest, Vec<(Digest, Vec<u8>)>) {
    let alice = basic("alice", PASSWORD);
    let blobs: Vec<Vec<u8>> = vec![format!("{{\"seed\":{seed}}}").into_bytes(), vec![seed; 300_000]];
    let mut out = vec![];
    for b in &blobs {
        let d = Digest::sha256_of(b);
        let r = c
            .req("POST", &format!("/v2/{repo}/blobs/uploads/?digest={d}"), &[("Authorization", &alice)], b.clone())
            .await;
        assert_eq!(r.status, 201);
        out.push((d, b.clone()));
    }
    let m = image_manifest(&out[0].0, blobs[0].len(), &out[1].0, blobs[1].len());
    let r = c
        .req(
            "PUT",
            &format!("/v2/{repo}/manifests/{tag}"),
            &[("Authorization", &alice), ("Content-Type", OCI_MANIFEST)],
            m.clone(),
        )
        .await;
    assert_eq!(r.status, 201);
    let d = Digest::sha256_of(&m);
    (m, d, out)
}

/// 250 connections that hold on: 200 send their headers a byte at a time,
/// 50 trickle an upload body. They are kept going until `stop`.
fn slow_flood(addr: String, stop: Arc<AtomicBool>, upload: String) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let head = b"GET /v2/ HTTP/1.1\r\nHost: berth\r\nX-Slow: ";
        let mut slow: Vec<(TcpStream, usize)> = vec![];
        for i in 0..250 {
            let Ok(mut s) = TcpStream::connect(&addr) else { continue };
            if i >= 200 {
                let _ = write!(s, "PATCH {upload} HTTP/1.1\r\nHost: berth\r\nContent-Length: 100000000\r\n\r\n");
            }
            slow.push((s, 0));
        }
        let opened = slow.len();
        while !stop.load(Ordering::Relaxed) {
            for (i, (s, n)) in slow.iter_mut().enumerate() {
                let byte = if i < 200 { head[*n % head.len()] } else { b'z' };
                let _ = s.write(&[byte]);
                *n += 1;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        opened
    })
}

#[actix_rt::test]
async fn hostile_input_gets_4xx_harms_nothing_and_others_are_served() {
    let users = tempfile::tempdir().unwrap();
    let htpasswd = users.path().join("htpasswd");
    std::fs::write(&htpasswd, berth::htpasswd::line("alice", PASSWORD, 4).unwrap()).unwrap();
    let s = TestServer::start_with(move |c| {
        c.mirror.enabled = false;
        c.auth.htpasswd = Some(berth::config::HtpasswdConfig { path: htpasswd, realm: "hostile".into() });
        c.uploads.max_per_client = 40;
        c.uploads.max_blob_size = bytesize::ByteSize::mib(1);
    })
    .await;
    let c = s.client();
    let addr = s.base.trim_start_matches("http://").to_string();
    let alice = basic("alice", PASSWORD);
    let images = vec![
        push(&c, "team/app", "v1", 1).await,
        push(&c, "team/app", "v2", 2).await,
        push(&c, "other/tool", "1.0", 3).await,
    ];
    let upload = c
        .req("POST", "/v2/team/app/blobs/uploads/", &[("Authorization", &alice)], "")
        .await
        .header("location")
        .unwrap()
        .to_string();

    // The slow flood starts, and a normal client is timed all along.
    let stop = Arc::new(AtomicBool::new(false));
    let flood = slow_flood(addr.clone(), stop.clone(), upload.clone());
    let probe = {
        let (c, stop, alice) = (s.client(), stop.clone(), alice.clone());
        let path = format!("/v2/team/app/manifests/{}", images[0].1);
        actix_rt::spawn(async move {
            let (mut worst, mut n) = (Duration::ZERO, 0);
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let r = c.req("GET", &path, &[("Authorization", &alice)], "").await;
                assert_eq!(r.status, 200);
                worst = worst.max(started.elapsed());
                n += 1;
                actix_rt::time::sleep(Duration::from_millis(50)).await;
            }
            (worst, n)
        })
    };

    // Every bad input.
    let all = cases(&upload, &images[0].2[1].0);
    let total = all.len();
    let a = addr.clone();
    let results = actix_rt::task::spawn_blocking(move || {
        all.into_iter().map(|k| (k.what, k.parser, send(&a, &k.request, &k.body, k.close))).collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for (what, parser, (status, body)) in &results {
        assert!((400..500).contains(status), "{what}: answered {status} {body}");
        if !parser {
            let v: serde_json::Value = serde_json::from_str(body)
                .unwrap_or_else(|e| panic!("{what}: {status} without an OCI body ({e}): {body:?}"));
            assert!(v["errors"][0]["code"].as_str().is_some_and(|c| !c.is_empty()), "{what}: {body}");
        }
    }

    // A flood of upload sessions from one address: 429 at the cap, never a 5xx.
    let mut codes = std::collections::BTreeMap::new();
    for _ in 0..100 {
        let r = c.req("POST", "/v2/team/app/blobs/uploads/", &[("Authorization", &alice)], "").await;
        *codes.entry(r.status).or_insert(0) += 1;
    }
    assert_eq!(codes.keys().copied().collect::<Vec<_>>(), vec![202, 429], "{codes:?}");

    stop.store(true, Ordering::Relaxed);
    let (worst, probes) = probe.await.unwrap();
    let opened = actix_rt::task::spawn_blocking(move || flood.join().unwrap()).await.unwrap();
    assert_eq!(opened, 250, "the slow connections were all accepted");
    assert!(probes >= 5, "the normal client was probed {probes} times");
    assert!(worst < Duration::from_secs(1), "a normal client waited {worst:?} during the attack");
    eprintln!("{total} bad inputs answered 4xx; {probes} probes, slowest {worst:?}");

    // Everything pushed before pulls, with the right digests.
    for (manifest, d, blobs) in &images {
        let r = c.req("GET", &format!("/v2/team/app/manifests/{d}"), &[("Authorization", &alice)], "").await;
        let r = if r.status == 200 {
            r
        } else {
            c.req("GET", &format!("/v2/other/tool/manifests/{d}"), &[("Authorization", &alice)], "").await
        };
        assert_eq!((r.status, &r.body[..]), (200, &manifest[..]));
        assert_eq!(Digest::sha256_of(&r.body), *d);
        for (bd, bytes) in blobs {
            let repo = if manifest == &images[2].0 { "other/tool" } else { "team/app" };
            let r = c.req("GET", &format!("/v2/{repo}/blobs/{bd}"), &[("Authorization", &alice)], "").await;
            assert_eq!(r.status, 200);
            assert_eq!(Digest::sha256_of(&r.body), *bd);
            assert_eq!(r.body.len(), bytes.len());
        }
    }
    for (tag, i) in [("v1", 0), ("v2", 1)] {
        let r = c.req("GET", &format!("/v2/team/app/manifests/{tag}"), &[("Authorization", &alice)], "").await;
        assert_eq!(Digest::sha256_of(&r.body), images[i].1, "tag {tag}");
    }
    // No tag came from the attack, and nothing was written outside the data directory's trees.
    let r = c.req("GET", "/v2/team/app/tags/list", &[("Authorization", &alice)], "").await;
    assert_eq!(r.json()["tags"], serde_json::json!(["v1", "v2"]));
    assert!(!std::path::Path::new("/tmp/berth-owned").exists());
    let top: Vec<String> =
        std::fs::read_dir(s.data()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    let mut top = top;
    top.sort();
    assert_eq!(top, [".berth", "docker"]);
    let repos: Vec<String> = std::fs::read_dir(s.path("docker/registry/v2/repositories"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut repos = repos;
    repos.sort();
    assert_eq!(repos, ["other", "team"]);
    s.stop().await;
}
