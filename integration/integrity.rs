//! Integrity under faults and races, end to end against berth in process:
//! a real full disk (a tmpfs filled to the last byte), DELETEs racing reads
//! and tag PUTs (made deterministic by a backend that pauses), and the upload
//! housekeeping that keeps abandoned sessions from piling up.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::faults::{PausingBackend, SmallDisk};
use common::*;

/// A private registry (mirroring off) whose cached reads expire at once, so
/// every read after a write goes to the disk.
fn private(c: &mut Config) {
    c.mirror.enabled = false;
    c.cache.tag_ttl = Duration::from_millis(1);
}

/// Every tag resolves to the manifest it pointed at, read from the disk.
async fn assert_tags(c: &Client, repo: &str, want: &[(&str, &[u8])]) {
    for (tag, manifest) in want {
        let r = c.get(&format!("/v2/{repo}/manifests/{tag}")).await;
        assert_eq!((r.status, r.body.as_ref()), (200, *manifest), "{repo}:{tag}");
        let d = Digest::sha256_of(manifest);
        let r = c.get(&format!("/v2/{repo}/manifests/{d}")).await;
        assert_eq!((r.status, r.body.as_ref()), (200, *manifest), "{repo}@{d}");
    }
}

#[actix_rt::test]
async fn a_full_disk_refuses_writes_cleanly_and_every_tag_survives() {
    let disk = SmallDisk::new("8m");
    let data = tempfile::TempDir::new_in(&disk.mount).unwrap();
    let s = TestServer::start_in(data, private).await;
    let c = s.client();
    let (v1, _) = c.push_image("team/app", "v1", b"first layer").await;
    let r = c.put_manifest("team/app", "also-v1", OCI_MANIFEST, &v1).await;
    assert_eq!(r.status, 201);
    let (v2, _) = c.push_image("team/app", "v2", b"second layer").await;
    let loc = c.req("POST", "/v2/team/app/blobs/uploads/", &[], "").await.header("location").unwrap().to_string();
    let r = c.req("PATCH", &loc, &[], "chunk one").await;
    assert_eq!(r.status, 202);

    let filler = disk.fill();

    // A tag moved to another stored manifest, a new tag, a new manifest: each
    // is refused with 507 and a message that says why, and nothing changes.
    let r = c.put_manifest("team/app", "v1", OCI_MANIFEST, &v2).await;
    assert_eq!((r.status, r.code().as_str()), (507, "STORAGE_FULL"), "{:?}", r.body);
    assert!(r.json()["errors"][0]["message"].as_str().unwrap().contains("full"));
    assert_eq!(c.put_manifest("team/app", "v3", OCI_MANIFEST, &v2).await.status, 507);
    let config = Digest::sha256_of(b"{}");
    let layer = Digest::sha256_of(b"first layer");
    let mut other: serde_json::Value = serde_json::from_slice(&image_manifest(&config, 2, &layer, 11)).unwrap();
    other["annotations"] = serde_json::json!({"new": "manifest"});
    let other = serde_json::to_vec(&other).unwrap();
    assert_eq!(c.put_manifest("team/app", "new", OCI_MANIFEST, &other).await.status, 507);
    // A tag that already points where it is pushed needs no write: accepted.
    assert_eq!(c.put_manifest("team/app", "v1", OCI_MANIFEST, &v1).await.status, 201);
    // Uploads: a new session, a chunk, a monolithic blob.
    let r = c.req("POST", "/v2/team/app/blobs/uploads/", &[], "").await;
    assert_eq!((r.status, r.code().as_str()), (507, "STORAGE_FULL"));
    let r = c.req("PATCH", &loc, &[], vec![7u8; 64 * 1024]).await;
    assert_eq!((r.status, r.code().as_str()), (507, "STORAGE_FULL"));
    assert_eq!(c.get(&loc).await.header("range"), Some("0-8"), "the session is as it was before the chunk");
    let r = c.req("POST", &format!("/v2/team/app/blobs/uploads/?digest={}", Digest::sha256_of(b"m")), &[], "m").await;
    assert_eq!(r.status, 507);
    // Readiness says so.
    let r = c.get("/readyz").await;
    assert_eq!(r.status, 503);
    assert!(String::from_utf8_lossy(&r.body).contains("full"), "{:?}", r.body);

    // Every tag still resolves, from the disk, to what it was.
    assert_tags(&c, "team/app", &[("v1", &v1), ("also-v1", &v1), ("v2", &v2)]).await;
    assert_eq!(c.get("/v2/team/app/manifests/v3").await.status, 404);
    assert_eq!(c.get("/v2/team/app/manifests/new").await.status, 404);

    // Once space is freed, pushes work again; nothing was left half-written.
    std::fs::remove_file(filler).unwrap();
    assert_eq!(c.get("/readyz").await.status, 200);
    assert_eq!(c.put_manifest("team/app", "v1", OCI_MANIFEST, &v2).await.status, 201);
    assert_eq!(c.put_manifest("team/app", "new", OCI_MANIFEST, &other).await.status, 201);
    let r = c.req("PUT", &format!("{loc}?digest={}", Digest::sha256_of(b"chunk one")), &[], "").await;
    assert_eq!(r.status, 201, "the session resumed: {:?}", r.body);
    // A restarted server (no cache at all) reads the same.
    let dir = s.stop().await;
    let s = TestServer::start_in(dir, private).await;
    let c = s.client();
    assert_tags(&c, "team/app", &[("v1", &v2), ("also-v1", &v1), ("v2", &v2), ("new", &other)]).await;
    let tmp = std::fs::read_dir(s.path(".berth/tmp")).unwrap().count();
    assert_eq!(tmp, 0, "no temp file left behind");
    s.stop().await;
}

#[actix_rt::test]
async fn a_delete_racing_a_read_leaves_nothing_readable() {
    let dir = tempfile::tempdir().unwrap();
    let backend = PausingBackend::new(dir.path());
    let s = TestServer::start_with_backend(dir, backend.clone(), |c| c.mirror.enabled = false).await;
    let c = s.client();
    let (_, m) = c.push_image("team/app", "v1", b"layer").await;
    let layer = Digest::sha256_of(b"layer");

    for (kind, path, link) in [
        ("blob", format!("/v2/team/app/blobs/{layer}"), "_layers/"),
        ("manifest", format!("/v2/team/app/manifests/{m}"), "_manifests/revisions/"),
    ] {
        // A write to the repository first, so that no earlier read is cached.
        c.push_blob("team/app", kind.as_bytes()).await;
        // The read loads the link, and is held there ...
        let armed = backend.arm("get", link);
        let reader = s.client();
        let read = actix_rt::spawn({
            let path = path.clone();
            async move { reader.get(&path).await.status }
        });
        armed.reached().await;
        // ... while the DELETE runs and answers.
        let r = c.req("DELETE", &path, &[], "").await;
        assert_eq!(r.status, 202, "{kind}");
        armed.release();
        read.await.unwrap();
        // From now on nothing returns the deleted content.
        for _ in 0..3 {
            assert_eq!(c.get(&path).await.status, 404, "{kind} read after its DELETE answered");
        }
    }
    s.stop().await;
}

#[actix_rt::test]
async fn a_tag_put_that_answered_is_never_undone_by_a_racing_delete() {
    let dir = tempfile::tempdir().unwrap();
    let backend = PausingBackend::new(dir.path());
    let s = TestServer::start_with_backend(dir, backend.clone(), |c| c.mirror.enabled = false).await;
    let c = s.client();
    let (old, old_d) = c.push_image("team/app", "latest", b"old layer").await;
    let (new, _) = c.push_image("team/app", "next", b"new layer").await;
    assert_ne!(old, new);

    // DELETE of the old manifest reads where `latest` points (the old one) and is held.
    let armed = backend.arm("get", "_manifests/tags/latest/current/link");
    let deleter = s.client();
    let old_path = format!("/v2/team/app/manifests/{old_d}");
    let delete = actix_rt::spawn(async move { deleter.req("DELETE", &old_path, &[], "").await.status });
    armed.reached().await;
    // Meanwhile a push moves `latest` to the new manifest.
    let pusher = s.client();
    let new_body = new.clone();
    let mut put =
        actix_rt::spawn(async move { pusher.put_manifest("team/app", "latest", OCI_MANIFEST, &new_body).await.status });
    // Give the PUT its chance to finish while the DELETE is held (it must not be lost either way).
    let early = tokio::time::timeout(Duration::from_millis(300), &mut put).await.ok();
    armed.release();
    assert_eq!(delete.await.unwrap(), 202);
    let put_status = match early {
        Some(status) => status.unwrap(),
        None => put.await.unwrap(),
    };
    assert_eq!(put_status, 201);
    let r = c.get("/v2/team/app/manifests/latest").await;
    assert_eq!((r.status, r.body.as_ref()), (200, &new[..]), "the tag the PUT answered 201 for is kept");
    assert_eq!(c.get(&format!("/v2/team/app/manifests/{old_d}")).await.status, 404);
    s.stop().await;
}

#[actix_rt::test]
async fn abandoned_uploads_are_purged_after_max_age() {
    let s = TestServer::start_with(|c| {
        c.mirror.enabled = false;
        c.uploads.max_age = Duration::from_secs(1);
        c.uploads.max_per_client = 5000;
    })
    .await;
    let c = s.client();
    let uploads = s.path("docker/registry/v2/repositories/team/app/_uploads");
    for i in 0..2000 {
        let r = c.req("POST", "/v2/team/app/blobs/uploads/", &[], "").await;
        assert_eq!(r.status, 202, "upload {i}");
    }
    // A failed monolithic upload leaves no session at all.
    let r = c.req("POST", &format!("/v2/team/mono/blobs/uploads/?digest={}", Digest::sha256_of(b"x")), &[], "y").await;
    assert_eq!(r.status, 400);
    let mono = s.path("docker/registry/v2/repositories/team/mono/_uploads");
    assert_eq!(std::fs::read_dir(&mono).map_or(0, |d| d.count()), 0);
    // The purge runs every fraction of max_age; wait for it (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while std::fs::read_dir(&uploads).unwrap().count() > 0 {
        assert!(std::time::Instant::now() < deadline, "abandoned uploads were not purged");
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    // A session in use is not purged from under its client.
    let loc = c.req("POST", "/v2/team/app/blobs/uploads/", &[], "").await.header("location").unwrap().to_string();
    assert_eq!(c.req("PATCH", &loc, &[], "a").await.status, 202);
    let r = c.req("PUT", &format!("{loc}?digest={}", Digest::sha256_of(b"ab")), &[], "b").await;
    assert_eq!(r.status, 201);
    s.stop().await;
}

#[actix_rt::test]
async fn open_uploads_per_client_are_capped() {
    let s = TestServer::start_with(|c| {
        c.mirror.enabled = false;
        c.uploads.max_per_client = 3;
    })
    .await;
    let c = s.client();
    let mut sessions = vec![];
    for _ in 0..3 {
        let r = c.req("POST", "/v2/team/app/blobs/uploads/", &[], "").await;
        assert_eq!(r.status, 202);
        sessions.push(r.header("location").unwrap().to_string());
    }
    let r = c.req("POST", "/v2/team/other/blobs/uploads/", &[], "").await;
    assert_eq!((r.status, r.code().as_str()), (429, "TOOMANYREQUESTS"));
    let r = c.req("POST", &format!("/v2/team/app/blobs/uploads/?digest={}", Digest::sha256_of(b"m")), &[], "m").await;
    assert_eq!(r.status, 429, "a monolithic upload is a session too");
    // Finishing and cancelling free places.
    assert_eq!(c.req("DELETE", &sessions[0], &[], "").await.status, 204);
    let r = c.req("PUT", &format!("{}?digest={}", sessions[1], Digest::sha256_of(b"z")), &[], "z").await;
    assert_eq!(r.status, 201);
    assert_eq!(c.req("POST", "/v2/team/app/blobs/uploads/", &[], "").await.status, 202);
    assert_eq!(c.push_blob("team/app", b"monolithic").await, Digest::sha256_of(b"monolithic"));
    s.stop().await;
}

#[actix_rt::test]
async fn client_mistakes_are_4xx_with_the_spec_code() {
    let s = TestServer::start_with(|c| c.mirror.enabled = false).await;
    let c = s.client();
    c.push_image("team/app", "v1", b"0123456789").await;
    let layer = Digest::sha256_of(b"0123456789");
    let long = ["a".repeat(100), "b".repeat(100), "c".repeat(100)].join("/");
    let (q0, q0_specific) = (format!("{OCI_MANIFEST};q=0"), format!("*/*, {OCI_MANIFEST};q=0"));
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("GET", format!("/v2/{long}/manifests/latest"), vec![], 400, "NAME_INVALID"),
        ("GET", format!("/v2/{long}/manifests/latest?ns=docker.io"), vec![], 400, "NAME_INVALID"),
        ("POST", format!("/v2/{long}/blobs/uploads/"), vec![], 400, "NAME_INVALID"),
        ("GET", "/v2/team/app/tags/list?n=1&n=2".into(), vec![], 400, "QUERY_INVALID"),
        ("GET", "/v2/_catalog?n=x".into(), vec![], 400, "PAGINATION_NUMBER_INVALID"),
        ("GET", format!("/v2/team/app/blobs/{layer}"), vec![("Range", "bytes=50-60")], 416, "RANGE_INVALID"),
        ("GET", "/v2/team/app/manifests/v1".into(), vec![("Accept", q0.as_str())], 404, "MANIFEST_UNKNOWN"),
        ("GET", "/v2/team/app/manifests/v1".into(), vec![("Accept", q0_specific.as_str())], 404, "MANIFEST_UNKNOWN"),
        ("PATCH", "/v2/team/app/manifests/v1".into(), vec![], 405, "UNSUPPORTED"),
    ];
    for (method, path, headers, status, code) in cases {
        let r = c.req(method, &path, &headers, "").await;
        assert_eq!((r.status, r.code().as_str()), (status, code), "{method} {}", &path[..path.len().min(80)]);
    }
    let r = c.req("GET", &format!("/v2/team/app/blobs/{layer}"), &[("Range", "bytes=50-60")], "").await;
    assert_eq!(r.header("content-range"), Some("bytes */10"));
    // A manifest larger than the limit, sent chunked with no Content-Length: 413 once the limit is passed.
    let chunks = vec![Bytes::from(vec![b' '; 3 * 1024 * 1024]); 2];
    let r = c.req_chunked("PUT", "/v2/team/app/manifests/big", &[("Content-Type", OCI_MANIFEST)], chunks).await;
    assert_eq!((r.status, r.code().as_str()), (413, "TOO_LARGE"));
    // The server is still serving.
    assert_eq!(c.get("/v2/team/app/manifests/v1").await.status, 200);
    s.stop().await;
}

#[actix_rt::test]
async fn a_stalled_request_body_ends_with_408() {
    let s = TestServer::start_with(|c| {
        c.mirror.enabled = false;
        c.server.body_timeout = Duration::from_millis(500);
    })
    .await;
    let c = s.client();
    let loc = c.req("POST", "/v2/team/app/blobs/uploads/", &[], "").await.header("location").unwrap().to_string();
    let addr = s.base.trim_start_matches("http://").to_string();
    for (method, path) in [("PATCH", loc.as_str()), ("PUT", "/v2/team/app/manifests/v1")] {
        // Headers announce a body, then one byte comes, then nothing.
        let started = std::time::Instant::now();
        let reply = actix_rt::task::spawn_blocking({
            let (addr, method, path) = (addr.clone(), method.to_string(), path.to_string());
            move || stalled_request(&addr, &method, &path)
        })
        .await
        .unwrap();
        assert!(reply.starts_with("HTTP/1.1 408"), "{method}: {reply}");
        assert!(reply.contains("REQUEST_TIMEOUT"), "{reply}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    assert_eq!(c.get(&loc).await.header("range"), Some("0-0"), "the stalled chunk was rolled back");
    s.stop().await;
}

/// Sends request headers announcing 1000 body bytes, then one byte, then
/// waits for the answer.
fn stalled_request(addr: &str, method: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        sock,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {OCI_MANIFEST}\r\nContent-Length: 1000\r\n\r\nx"
    )
    .unwrap();
    let mut reply = Vec::new();
    let _ = sock.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}
