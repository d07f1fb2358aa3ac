//! Garbage collection of pushed content, run inside the serving process
//! (`POST /_berth/gc`, what `berth gc` asks a running server for).

mod common;

use std::path::Path;

use bytes::Bytes;
use common::*;
use serde_json::json;

fn private(c: &mut Config) {
    c.mirror.enabled = false;
}

fn blob_file(data: &Path, d: &Digest) -> std::path::PathBuf {
    data.join(format!("docker/registry/v2/blobs/sha256/{}/{}/data", &d.hex()[..2], d.hex()))
}

/// The admin token the server wrote beside its data (what `berth gc` sends).
fn token(s: &TestServer) -> String {
    std::fs::read_to_string(s.path(".berth/admin.token")).unwrap()
}

/// Runs GC and returns its report (the last line of the stream).
async fn gc(s: &TestServer, c: &Client, query: &str) -> serde_json::Value {
    let token = token(s);
    let r = c.req("POST", &format!("/_berth/gc?{query}"), &[("X-Berth-Admin-Token", &token)], "").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    let last = text.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    assert!(v.get("report").is_some(), "{text}");
    assert!(text.lines().any(|l| l.contains("\"progress\"")), "progress is streamed: {text}");
    v["report"].clone()
}

/// Pushes an image with two layers: its own and `shared`.
async fn push(c: &Client, repo: &str, tag: &str, own: &[u8], shared: &[u8]) -> (Vec<u8>, Digest) {
    let config = c.push_blob(repo, b"{}").await;
    let (a, b) = (c.push_blob(repo, own).await, c.push_blob(repo, shared).await);
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 2},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": a.to_string(), "size": own.len()},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": b.to_string(), "size": shared.len()}]
    }))
    .unwrap();
    let r = c.put_manifest(repo, tag, OCI_MANIFEST, &m).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let d = Digest::sha256_of(&m);
    (m, d)
}

#[actix_rt::test]
async fn gc_after_a_delete_frees_unshared_layers_and_keeps_shared_ones() {
    let s = TestServer::start_with(private).await;
    let c = s.client();
    let (_, a) = push(&c, "team/a", "v1", b"only in a", b"shared layer").await;
    let (b_manifest, _) = push(&c, "team/b", "v1", b"only in b", b"shared layer").await;
    assert_eq!(c.req("DELETE", &format!("/v2/team/a/manifests/{a}"), &[], "").await.status, 202);
    let only_a = Digest::sha256_of(b"only in a");

    // A dry run says what would go and removes nothing.
    let dry = gc(&s, &c, "dry_run=true&grace=0s").await;
    assert_eq!(dry["blobs_removed"], 2, "{dry}");
    assert!(blob_file(s.data(), &only_a).exists());
    // A run with the default grace keeps what was linked moments ago (the
    // layer); the deleted manifest's data, linked nowhere, goes.
    let r = gc(&s, &c, "").await;
    assert_eq!(r["blobs_removed"], 1, "{r}");
    assert!(blob_file(s.data(), &only_a).exists());
    let r = gc(&s, &c, "grace=0s").await;
    assert_eq!((r["blobs_removed"].as_u64(), r["manifests_removed"].as_u64()), (Some(1), Some(0)), "{r}");
    assert!(!blob_file(s.data(), &only_a).exists(), "the deleted manifest's own layer is freed");
    assert!(!blob_file(s.data(), &a).exists(), "the deleted manifest's data is freed");
    assert!(blob_file(s.data(), &Digest::sha256_of(b"shared layer")).exists());
    assert_eq!(c.get(&format!("/v2/team/a/blobs/{only_a}")).await.status, 404);
    let r = c.get("/v2/team/b/manifests/v1").await;
    assert_eq!((r.status, r.body.as_ref()), (200, &b_manifest[..]));
    for l in [b"only in b".as_slice(), b"shared layer", b"{}"] {
        let (status, got, _) = c.get_hashed(&format!("/v2/team/b/blobs/{}", Digest::sha256_of(l))).await.unwrap();
        assert_eq!((status, got), (200, Digest::sha256_of(l)));
    }
    s.stop().await;
}

#[actix_rt::test]
async fn delete_untagged_keeps_everything_a_tag_reaches_through_an_index() {
    let s = TestServer::start_with(private).await;
    let c = s.client();
    let (_, old) = push(&c, "team/app", "latest", b"old layer", b"base").await;
    let (_, new) = push(&c, "team/app", "latest", b"new layer", b"base").await;
    // A tagged index whose platform manifest has no tag of its own.
    let (_, platform) = push(&c, "team/app", "untagged-for-now", b"arm layer", b"base").await;
    assert_eq!(c.req("DELETE", "/v2/team/app/manifests/untagged-for-now", &[], "").await.status, 202);
    let index = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": platform.to_string(), "size": 1, "platform": {"os": "linux", "architecture": "arm64"}}]}))
    .unwrap();
    assert_eq!(c.put_manifest("team/app", "multi", OCI_INDEX, &index).await.status, 201);

    let r = gc(&s, &c, "delete_untagged=true&grace=0s").await;
    assert_eq!(r["manifests_removed"], 1, "only the manifest `latest` no longer points at: {r}");
    assert_eq!(c.get(&format!("/v2/team/app/manifests/{old}")).await.status, 404);
    assert!(!blob_file(s.data(), &Digest::sha256_of(b"old layer")).exists());
    for d in [new, platform.clone(), Digest::sha256_of(b"arm layer"), Digest::sha256_of(b"base")] {
        assert!(blob_file(s.data(), &d).exists(), "{d} is reachable from a tag");
    }
    let r = c.get(&format!("/v2/team/app/manifests/{platform}")).await;
    assert_eq!(r.status, 200, "the platform manifest of a tagged index still pulls");
    s.stop().await;
}

/// GC marks from what the index knows each manifest references: a manifest
/// stored with berth is never read again by a GC, one from before (a tree
/// without that knowledge) is read once and then known. Shown by spoiling
/// the manifests' files on disk after the server that could have cached them
/// stopped: a GC that read them would refuse to sweep.
#[actix_rt::test]
async fn gc_marks_from_the_index_without_reading_manifests() {
    let s = TestServer::start_with(private).await;
    let c = s.client();
    let (_, old) = push(&c, "team/app", "old", b"old layer", b"base").await;
    let dir = s.stop().await;
    // An index from before edges were kept: rebuilt from the tree at start.
    std::fs::remove_file(dir.path().join(".berth/index.redb")).unwrap();
    let s = TestServer::start_in(dir, private).await;
    let c = s.client();
    let r = gc(&s, &c, "grace=0s").await;
    assert_eq!(r["blobs_removed"], 0, "{r}");
    let (_, new) = push(&c, "team/app", "new", b"new layer", b"base").await;
    let (_, gone) = push(&c, "team/app", "gone", b"gone layer", b"base").await;
    assert_eq!(c.req("DELETE", &format!("/v2/team/app/manifests/{gone}"), &[], "").await.status, 202);
    let dir = s.stop().await;

    for d in [&old, &new] {
        std::fs::write(blob_file(dir.path(), d), b"not a manifest any more").unwrap();
    }
    let s = TestServer::start_in(dir, private).await;
    let c = s.client();
    let r = gc(&s, &c, "grace=0s").await;
    assert_eq!(r["blobs_removed"], 2, "the deleted manifest and its own layer: {r}");
    for l in [b"old layer".as_slice(), b"new layer", b"base", b"{}"] {
        assert!(blob_file(s.data(), &Digest::sha256_of(l)).exists(), "what the tags reach is kept");
    }
    assert!(!blob_file(s.data(), &Digest::sha256_of(b"gone layer")).exists());
    s.stop().await;
}

#[actix_rt::test]
async fn gc_concurrent_with_a_loop_of_pushes_loses_nothing() {
    let s = TestServer::start_with(private).await;
    let c = s.client();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Garbage collection over and over, with no grace at all.
    let runner = {
        let (c, stop, token) = (s.client(), stop.clone(), token(&s));
        actix_rt::spawn(async move {
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = c.req("POST", "/_berth/gc?grace=0s", &[("X-Berth-Admin-Token", &token)], "").await;
                assert_eq!(r.status, 200);
                runs += 1;
            }
            runs
        })
    };
    // Pushes: layers, then the manifest. A push told its layer is unknown (GC
    // took it before the manifest came) uploads again, as a client would.
    let mut pushed = Vec::new();
    for i in 0..40u32 {
        let repo = format!("team/app{}", i % 4);
        let own = format!("layer {i}").into_bytes();
        loop {
            let config = c.push_blob(&repo, b"{}").await;
            let layer = c.push_blob(&repo, &own).await;
            let m = image_manifest(&config, 2, &layer, own.len());
            let r = c.put_manifest(&repo, &format!("v{i}"), OCI_MANIFEST, &m).await;
            if r.status == 201 {
                pushed.push((repo.clone(), format!("v{i}"), m, vec![config, layer]));
                break;
            }
            assert_eq!(r.code(), "MANIFEST_BLOB_UNKNOWN", "{:?}", r.body);
        }
        // Some of them are deleted again, so that there is garbage.
        if i % 5 == 0 {
            let d = Digest::sha256_of(&pushed.last().unwrap().2);
            assert_eq!(c.req("DELETE", &format!("/v2/{repo}/manifests/{d}"), &[], "").await.status, 202);
            pushed.pop();
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let runs = runner.await.unwrap();
    assert!(runs >= 2, "garbage collection ran during the pushes ({runs} runs)");
    gc(&s, &c, "grace=0s").await;
    for (repo, tag, m, blobs) in &pushed {
        let r = c.get(&format!("/v2/{repo}/manifests/{tag}")).await;
        assert_eq!((r.status, r.body.as_ref()), (200, &m[..]), "{repo}:{tag}");
        for d in blobs {
            let (status, got, _) = c.get_hashed(&format!("/v2/{repo}/blobs/{d}")).await.unwrap();
            assert_eq!((status, &got), (200, d), "{repo}:{tag} {d}");
        }
    }
    s.stop().await;
}

#[actix_rt::test]
async fn the_admin_endpoint_wants_the_token_and_runs_one_at_a_time() {
    let s = TestServer::start_with(private).await;
    let c = s.client();
    // Loopback is not enough: a reverse proxy on this host is loopback too.
    for headers in [vec![], vec![("X-Berth-Admin-Token", "guess")]] {
        let r = c.req("POST", "/_berth/gc", &headers, "").await;
        assert_eq!((r.status, r.code().as_str()), (403, "DENIED"));
    }
    let token = token(&s);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(s.path(".berth/admin.token")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only the server's user reads the token");
    let h = [("X-Berth-Admin-Token", token.as_str())];
    let (a, b) = (s.client(), s.client());
    let (ra, rb) = futures::join!(a.req("POST", "/_berth/gc", &h, ""), b.req("POST", "/_berth/gc", &h, ""));
    // One runs; the other is refused with 409 BUSY, unless the first had ended already.
    for r in [&ra, &rb] {
        match r.status {
            200 => assert!(String::from_utf8_lossy(&r.body).contains("report"), "{:?}", r.body),
            status => assert_eq!((status, r.code().as_str()), (409, "BUSY")),
        }
    }
    assert!(ra.status == 200 || rb.status == 200, "one of them ran");
    let r = c.req("GET", "/_berth/gc", &[], Bytes::new()).await;
    assert_eq!(r.status, 404, "POST only");
    s.stop().await;
}
