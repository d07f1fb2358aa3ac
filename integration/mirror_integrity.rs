//! The mirror's integrity promises, end to end against fake upstreams: no
//! unverified byte reaches a client (bodies, ranges, sizes, joined fetches),
//! the mirror's name space is nobody's to write, stale copies stand in for
//! an upstream that fails at any step, and the remaining protocol gaps.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::mirroring::{layer, mirror, pull, set_ttl, wait_for_file};
use common::upstream::{Auth, FakeUpstream, OCI_MANIFEST};
use common::*;
use futures::StreamExt;

/// Waits (bounded) until no mirror download is being written: no fetch in
/// flight, and a failed fetch has removed its partial file (berth's temp
/// directory, where fetches write until their bytes are verified, is empty).
async fn wait_for_no_ingest(s: &TestServer) {
    let (c, temp) = (s.client(), s.path(".berth/tmp"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&c, "berth_mirror_fetches_in_flight").await > 0.0
        || std::fs::read_dir(&temp).map_or(0, |d| d.count()) > 0
    {
        assert!(Instant::now() < deadline, "the fetch never finished");
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The value of an unlabelled metric on the server's `/metrics`.
async fn metric(c: &Client, name: &str) -> f64 {
    let body = c.get("/metrics").await.body;
    let text = String::from_utf8_lossy(&body);
    let line = text.lines().find(|l| l.split(' ').next() == Some(name)).unwrap_or_else(|| panic!("no {name}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

fn blob_file(s: &TestServer, d: &Digest) -> std::path::PathBuf {
    s.path(&format!("docker/registry/v2/blobs/sha256/{}/{}/data", &d.hex()[..2], d.hex()))
}

#[actix_rt::test]
async fn a_corrupt_upstream_gets_no_byte_to_a_client_as_a_success() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let content = layer(3 * 1024 * 1024, 4);
    let image = up.add_image("library/app", "1", std::slice::from_ref(&content));
    let d = image.layers[0].clone();
    up.state().corrupt.insert(d.to_string());
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    up.state().gate = Some(gate.clone());
    let s = mirror(&up, None, |_| {}).await;
    let c = s.client();
    let path = format!("/v2/app/blobs/{d}");

    // A full GET starts the fetch; the upstream sends its first chunk and holds the rest.
    let mut first = c.get_streaming(&path).await;
    assert_eq!(first.status().as_u16(), 200);
    assert!(!first.next().await.unwrap().unwrap().is_empty(), "bytes stream before the blob is complete");
    // A range already on disk, and a size, asked while the fetch is in flight.
    let (rc, hc) = (s.client(), s.client());
    let range_path = path.clone();
    let range = actix_rt::spawn(async move { rc.req("GET", &range_path, &[("Range", "bytes=0-9")], "").await });
    let d2 = d.clone();
    let head = actix_rt::spawn(async move { hc.req("HEAD", &format!("/v2/docker.io/app/blobs/{d2}"), &[], "").await });
    // Both wait on the fetch (with the scrape itself, three requests in progress) before it may go on.
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&c, "berth_http_requests_in_progress").await < 3.0 {
        assert!(Instant::now() < deadline, "the range and HEAD requests never reached the server");
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    gate.add_permits(1000);

    let range = range.await.unwrap();
    assert!(!(200..300).contains(&range.status), "a range of unverified bytes was answered {}", range.status);
    assert_eq!(range.code(), "UPSTREAM_ERROR");
    let head = head.await.unwrap();
    assert!(!(200..300).contains(&head.status), "an unverified size was answered {}", head.status);
    // The full body stops short of its Content-Length: the client never holds a complete corrupt blob.
    let mut received = 0;
    while let Some(Ok(chunk)) = first.next().await {
        received += chunk.len();
    }
    assert!(received < content.len(), "the corrupt body was delivered whole");
    // The fetch is over (its partial file gone) and nothing was stored.
    wait_for_no_ingest(&s).await;
    assert!(!blob_file(&s, &d).exists(), "corrupt content is not stored");
    // A fresh fetch, seen by HTTP framing: 200 and then cut short.
    let (status, body, complete) = c.get_framed(&path).await;
    assert_eq!(status, 200);
    assert!(!complete && body.len() < content.len(), "{} of {} bytes, complete: {complete}", body.len(), content.len());
    wait_for_no_ingest(&s).await;
    let r = c.req("HEAD", &format!("/v2/docker.io/app/blobs/{d}"), &[], "").await;
    assert_eq!(r.status, 200, "the upstream's own claim, with no bytes, is a size");

    // A good upstream heals it: fetched again, served whole, ranges exact.
    up.state().corrupt.clear();
    assert_eq!(c.get_hashed(&path).await.unwrap(), (200, d.clone(), content.len() as u64));
    let r = c.req("GET", &path, &[("Range", "bytes=1000000-1000009")], "").await;
    assert_eq!((r.status, r.body), (206, content.slice(1_000_000..1_000_010)));
    wait_for_file(&blob_file(&s, &d)).await;
    assert_eq!(up.count("GET", "/blobs/"), 3, "each request after a failed fetch tried again");
    s.stop().await;
    up.stop().await;
}

#[actix_rt::test]
async fn a_range_and_a_size_of_an_in_flight_blob_wait_for_its_verification() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let content = layer(2 * 1024 * 1024, 5);
    let image = up.add_image("library/app", "1", std::slice::from_ref(&content));
    let d = image.layers[0].clone();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    up.state().gate = Some(gate.clone());
    let s = mirror(&up, None, |_| {}).await;
    let c = s.client();
    let mut first = c.get_streaming(&format!("/v2/app/blobs/{d}")).await;
    first.next().await.unwrap().unwrap();
    let rc = s.client();
    let path = format!("/v2/app/blobs/{d}");
    let range = actix_rt::spawn(async move { rc.req("GET", &path, &[("Range", "bytes=-5")], "").await });
    gate.add_permits(1000);
    let range = range.await.unwrap();
    assert_eq!((range.status, &range.body), (206, &content.slice(content.len() - 5..)));
    assert_eq!(
        range.header("content-range"),
        Some(format!("bytes {}-{}/{}", content.len() - 5, content.len() - 1, content.len()).as_str())
    );
    assert_eq!(up.count("GET", "/blobs/"), 1, "the range joined the fetch");
    s.stop().await;
    up.stop().await;
}

#[actix_rt::test]
async fn a_fetch_is_joined_only_by_repositories_the_upstream_confirms() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let shared = layer(1024 * 1024, 6);
    let a = up.add_image("library/a", "1", std::slice::from_ref(&shared));
    up.add_image("team/b", "1", std::slice::from_ref(&shared));
    up.add_image("team/c", "1", &[layer(1000, 7)]);
    let d = a.layers[0].clone();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    up.state().gate = Some(gate.clone());
    let s = mirror(&up, None, |_| {}).await;
    let c = s.client();

    let mut first = c.get_streaming(&format!("/v2/a/blobs/{d}")).await;
    first.next().await.unwrap().unwrap();
    let (bc, cc) = (s.client(), s.client());
    let (pb, pc) = (format!("/v2/team/b/blobs/{d}"), format!("/v2/team/c/blobs/{d}"));
    let b = actix_rt::spawn(async move { bc.get_hashed(&pb).await });
    let c_only = actix_rt::spawn(async move { cc.req("GET", &pc, &[], "").await });
    let not_there = c_only.await.unwrap();
    assert_eq!(not_there.status, 404, "team/c upstream has no such blob");
    assert_eq!(not_there.code(), "BLOB_UNKNOWN");
    gate.add_permits(1000);
    assert_eq!(b.await.unwrap().unwrap(), (200, d.clone(), shared.len() as u64));
    while first.next().await.is_some() {}
    assert_eq!(up.count("GET", "/blobs/"), 1, "fetched once for both repositories");
    // The joining repository got its link once the blob was stored.
    let link =
        s.path(&format!("docker/registry/v2/repositories/_mirror/docker.io/team/b/_layers/sha256/{}/link", d.hex()));
    wait_for_file(&link).await;
    let r = c.req("GET", &format!("/v2/team/c/blobs/{d}"), &[], "").await;
    assert_eq!(r.status, 404, "nor after the blob is stored");
    s.stop().await;
    up.stop().await;
}

#[actix_rt::test]
async fn a_cached_tag_stands_in_for_an_upstream_failing_at_any_step() {
    let up = FakeUpstream::start(Auth::Token { realm: None }).await;
    let v1 = up.add_image("library/app", "1", &[layer(1000, 1)]);
    let other = up.add_image("library/app", "2", &[layer(1000, 2)]);
    let s = mirror(&up, None, |c| set_ttl(c, Duration::ZERO)).await;
    let c = s.client();
    pull(&c, "app", "1", &v1).await;
    pull(&c, "app", "2", &other).await;

    // The tag moved upstream (the HEAD says so), and the GET is rate limited.
    up.add_image("library/app", "1", &[layer(2000, 3)]);
    up.state().fail_manifest_gets = Some((429, Some("60".into())));
    pull(&c, "app", "1", &v1).await;

    // The token endpoint is down when the next revalidation needs a token.
    up.state().fail_manifest_gets = None;
    up.state().valid_tokens.clear();
    up.state().fail_tokens = Some((503, None));
    pull(&c, "app", "2", &other).await;

    // Nothing cached: the token endpoint's 429 reaches the client as such.
    up.state().fail_tokens = Some((429, Some("30".into())));
    let r = c.get("/v2/app/manifests/never-pulled").await;
    assert_eq!((r.status, r.code().as_str()), (429, "TOOMANYREQUESTS"));
    assert_eq!(r.header("retry-after"), Some("30"));
    s.stop().await;
    up.stop().await;
}

#[actix_rt::test]
async fn a_token_is_fetched_once_for_every_request_waiting_on_it() {
    let up = FakeUpstream::start(Auth::Token { realm: None }).await;
    let tags: Vec<String> = (0..6).map(|i| format!("t{i}")).collect();
    for (i, t) in tags.iter().enumerate() {
        up.add_image("library/app", t, &[layer(100, i as u8)]);
    }
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    up.state().token_gate = Some(gate.clone());
    let s = mirror(&up, None, |_| {}).await;
    let gets: Vec<_> = tags
        .iter()
        .map(|t| {
            let (c, path) = (s.client(), format!("/v2/app/manifests/{t}"));
            actix_rt::spawn(async move { c.get(&path).await.status })
        })
        .collect();
    // Every request has met the challenge before any token is handed out.
    let deadline = Instant::now() + Duration::from_secs(30);
    while up.state().seen.iter().filter(|s| s.challenged).count() < tags.len() {
        assert!(Instant::now() < deadline, "the requests never reached the upstream");
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    gate.add_permits(100);
    for g in gets {
        assert_eq!(g.await.unwrap(), 200);
    }
    assert_eq!(up.token_requests().len(), 1, "one token request for one scope");
    s.stop().await;
    up.stop().await;
}

#[actix_rt::test]
async fn a_blob_without_content_length_streams_to_every_waiter_verified() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let content = layer(3 * 1024 * 1024 + 17, 8);
    let image = up.add_image("library/app", "1", std::slice::from_ref(&content));
    let d = image.layers[0].clone();
    up.state().no_content_length = true;
    let s = mirror(&up, None, |_| {}).await;
    let path = format!("/v2/app/blobs/{d}");
    let clients: Vec<Client> = (0..8).map(|_| s.client()).collect();
    let results = futures::future::join_all(clients.iter().map(|c| c.get_hashed(&path))).await;
    for r in results {
        assert_eq!(r.unwrap(), (200, d.clone(), content.len() as u64));
    }
    assert_eq!(up.count("GET", "/blobs/"), 1);
    wait_for_file(&blob_file(&s, &d)).await;
    let r = s.client().req("HEAD", &path, &[], "").await;
    assert_eq!(r.header("content-length"), Some(content.len().to_string().as_str()));

    // Corrupt and without a length: cut short, never stored.
    let bad = layer(2 * 1024 * 1024, 9);
    let image = up.add_image("library/bad", "1", std::slice::from_ref(&bad));
    let bd = image.layers[0].clone();
    up.state().corrupt.insert(bd.to_string());
    // The upstream sends its first chunk and holds the rest: the response has
    // begun (a client reads the fetch) before the end and the digest are known.
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    up.state().gate = Some(gate.clone());
    let c = s.client();
    let bad_path = format!("/v2/bad/blobs/{bd}");
    let get = actix_rt::spawn(async move { c.get_framed(&bad_path).await });
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&s.client(), "berth_mirror_fetch_clients").await < 1.0 {
        assert!(Instant::now() < deadline, "the response never started streaming");
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    gate.add_permits(1000);
    let (status, body, complete) = get.await.unwrap();
    assert_eq!(status, 200, "streamed before the end was known");
    assert!(
        !complete && body.len() < bad.len(),
        "cut short ({} of {} bytes, complete: {complete})",
        body.len(),
        bad.len()
    );
    wait_for_no_ingest(&s).await;
    assert!(!blob_file(&s, &bd).exists());
    s.stop().await;
    up.stop().await;
}

#[actix_rt::test]
async fn manifests_nested_deeper_than_go_clients_accept_are_refused() {
    let deep = |depth: usize| {
        let config = Digest::sha256_of(b"{}");
        let mut m = String::from_utf8(image_manifest(&config, 2, &Digest::sha256_of(b"l"), 1)).unwrap();
        m.pop();
        format!("{m},\"x\":{}{}}}", "[".repeat(depth), "]".repeat(depth))
    };
    // Pushed.
    let s = TestServer::start().await;
    let c = s.client();
    c.push_blob("team/app", b"{}").await;
    c.push_blob("team/app", b"l").await;
    let r = c.put_manifest("team/app", "deep", OCI_MANIFEST, deep(100_000).as_bytes()).await;
    assert_eq!((r.status, r.code().as_str()), (400, "MANIFEST_INVALID"));
    assert_eq!(c.put_manifest("team/app", "ok", OCI_MANIFEST, deep(100).as_bytes()).await.status, 201);
    s.stop().await;

    // Mirrored: an upstream's deep manifest is not stored or served.
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let body = Bytes::from(deep(100_000));
    up.state().manifests.insert(("library/app".into(), "deep".into()), (OCI_MANIFEST.into(), body));
    let s = mirror(&up, None, |_| {}).await;
    let r = s.client().get("/v2/app/manifests/deep").await;
    assert_eq!((r.status, r.code().as_str()), (502, "UPSTREAM_ERROR"));
    assert!(!s.path("docker/registry/v2/repositories/_mirror/docker.io/library/app/_manifests/tags/deep").exists());
    s.stop().await;
    up.stop().await;
}

#[actix_rt::test]
async fn the_mirrors_name_space_is_nobodys_to_write() {
    let docker = FakeUpstream::start(Auth::Anonymous).await;
    let corp = FakeUpstream::start(Auth::Anonymous).await;
    let upstream_x = corp.add_image("x", "latest", &[layer(100, 1)]);
    let redis = docker.add_image("bitnami/redis", "latest", &[layer(100, 2)]);
    let nginx = docker.add_image("library/nginx", "latest", &[layer(100, 3)]);
    let app = docker.add_image("team/app", "1", &[layer(100, 4)]);
    let corp_url = corp.url.clone();
    let s = mirror(&docker, None, move |c| {
        c.mirror.set_upstream("Registry.Corp:5000", &corp_url);
        set_ttl(c, Duration::ZERO);
    })
    .await;
    let c = s.client();

    // A port-bearing upstream: pulled by ?ns=, stored where no client can name it.
    let r = c.get("/v2/x/manifests/latest?ns=registry.corp:5000").await;
    assert_eq!((r.status, &r.body), (200, &upstream_x.manifest));
    // The old storage name is an ordinary repository now; a push there is
    // not the mirror's copy, and cannot become what ?ns= serves.
    let (poison, _) = c.push_image("registry.corp-5000/x", "latest", b"poison").await;
    let r = c
        .req("PUT", "/v2/x/manifests/latest?ns=registry.corp:5000", &[("Content-Type", OCI_MANIFEST)], poison.clone())
        .await;
    assert_eq!((r.status, r.code().as_str()), (403, "DENIED"));
    for path in
        ["/v2/_mirror/registry.corp:5000/x/manifests/latest", "/v2/_mirror/docker.io/library/nginx/blobs/uploads/"]
    {
        let r = c.req("POST", path, &[], "").await;
        assert_eq!((r.status, r.code().as_str()), (400, "NAME_INVALID"), "{path}");
    }
    corp.stop().await;
    let r = c.get("/v2/x/manifests/latest?ns=registry.corp:5000").await;
    assert_eq!((r.status, &r.body), (200, &upstream_x.manifest), "the upstream's copy, even with the upstream down");

    // A cancelled upload, or a push into a nested name, does not make a name local.
    let loc = c.req("POST", "/v2/bitnami/redis/blobs/uploads/", &[], "").await.header("location").unwrap().to_string();
    assert_eq!(c.req("DELETE", &loc, &[], "").await.status, 204);
    let r =
        c.req("POST", &format!("/v2/bitnami/redis/blobs/uploads/?digest={}", Digest::sha256_of(b"a")), &[], "b").await;
    assert_eq!(r.status, 400, "a failed upload");
    c.push_image("nginx/custom", "1", b"custom").await;
    c.push_image("bitnami/redis/custom", "1", b"custom").await;
    pull(&c, "bitnami/redis", "latest", &redis).await;
    pull(&c, "nginx", "latest", &nginx).await;

    // One-component names are Docker Hub's official images: no push shadows them.
    let r = c.req("POST", "/v2/alpine/blobs/uploads/", &[], "").await;
    assert_eq!((r.status, r.code().as_str()), (403, "DENIED"));
    assert!(r.json()["errors"][0]["message"].as_str().unwrap().contains("library/alpine"));
    // Nor does a push shadow a name the mirror holds content for.
    pull(&c, "team/app", "1", &app).await;
    let r = c.req("POST", "/v2/team/app/blobs/uploads/", &[], "").await;
    assert_eq!((r.status, r.code().as_str()), (403, "DENIED"));
    assert!(r.json()["errors"][0]["message"].as_str().unwrap().contains("shadow"));
    pull(&c, "team/app", "1", &app).await;

    // A pushed name stays its owner's when everything in it is deleted: it never
    // falls back to the mirror (which would serve someone else's image under it).
    let (_, mine) = c.push_image("team/mine", "1", b"mine").await;
    assert_eq!(c.req("DELETE", &format!("/v2/team/mine/manifests/{mine}"), &[], "").await.status, 202);
    for blob in [Digest::sha256_of(b"{}"), Digest::sha256_of(b"mine")] {
        assert_eq!(c.req("DELETE", &format!("/v2/team/mine/blobs/{blob}"), &[], "").await.status, 202);
    }
    assert_eq!(c.get("/v2/team/mine/manifests/1").await.code(), "MANIFEST_UNKNOWN");
    assert_eq!(c.get(&format!("/v2/team/mine/blobs/{}", Digest::sha256_of(b"mine"))).await.code(), "BLOB_UNKNOWN");
    assert_eq!(docker.count("GET", "team/mine"), 0, "never asked upstream");

    // Tag lists name the repository as the client asked for it.
    let r = c.get("/v2/team/app/tags/list").await;
    assert_eq!(r.json(), serde_json::json!({"name": "team/app", "tags": ["1"]}));
    let r = c.get("/v2/x/tags/list?ns=registry.corp:5000").await;
    assert_eq!(r.json()["name"], "x");
    // A long (valid) name routed to a mirror is an ordinary miss, not a crash.
    let long = ["a".repeat(120), "b".repeat(120)].join("/");
    assert_eq!(c.get(&format!("/v2/{long}/manifests/latest?ns=docker.io")).await.code(), "MANIFEST_UNKNOWN");
    s.stop().await;
    docker.stop().await;
}

#[actix_rt::test]
async fn mirrored_content_whose_data_registry2_collected_is_fetched_again() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let image = up.add_image("library/app", "1", &[layer(5000, 1)]);
    let s = mirror(&up, None, |c| set_ttl(c, Duration::from_secs(3600))).await;
    pull(&s.client(), "app", "1", &image).await;
    for d in [&image.digest, &image.layers[0]] {
        wait_for_file(&blob_file(&s, d)).await;
    }
    // registry:2's garbage-collect does not see _mirror/ and removes the data its links point to.
    let dir = s.stop().await;
    for d in [&image.digest, &image.layers[0]] {
        std::fs::remove_file(dir.path().join(format!(
            "docker/registry/v2/blobs/sha256/{}/{}/data",
            &d.hex()[..2],
            d.hex()
        )))
        .unwrap();
    }
    let url = up.url.clone();
    let s = TestServer::start_in(dir, move |c| {
        c.mirror.set_upstream("docker.io", &url);
        set_ttl(c, Duration::from_secs(3600));
    })
    .await;
    let c = s.client();
    let r = c.get(&format!("/v2/app/manifests/{}", image.digest)).await;
    assert_eq!((r.status, &r.body), (200, &image.manifest), "by digest");
    pull(&c, "app", "1", &image).await;
    assert_eq!(up.count("GET", &image.layers[0].to_string()), 2, "the layer was fetched again");
    s.stop().await;
    up.stop().await;
}

/// An upstream (or a proxy before it) that ends blob bodies by closing the
/// connection, with neither Content-Length nor chunked encoding: legal
/// HTTP/1.1. The bytes are mirrored and served whole and verified, with and
/// without `Connection: close`, and the tags and manifests still come
/// through the same front.
#[actix_rt::test]
async fn a_blob_body_ended_by_the_connection_closing_is_mirrored() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let image = up.add_image("library/closing", "1", &[layer(3 * 1024 * 1024 + 17, 9), layer(10, 3)]);
    for say_close in [true, false] {
        let front = common::upstream::CloseDelimitedFront::start(&up, say_close);
        let url = front.url.clone();
        let s = TestServer::start_with(move |c| {
            c.mirror.set_upstream("docker.io", &url);
            for u in &mut c.mirror.upstreams {
                u.response_timeout = Duration::from_secs(5);
                u.read_timeout = Duration::from_secs(5);
            }
        })
        .await;
        let c = s.client();
        pull(&c, "closing", "1", &image).await;
        // Served again from the store: the mirrored copy is whole.
        pull(&c, "closing", "1", &image).await;
        drop(front);
        s.stop().await;
    }
    up.stop().await;
}
