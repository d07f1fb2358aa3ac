//! End-to-end tests of the pull-through mirror: berth in front of a fake
//! upstream that counts requests, requires auth, and fails on demand.

use crate::common;

use std::time::Duration;

use common::mirroring::{layer, mirror, pull, set_ttl};
use common::upstream::{Auth, FakeUpstream};
use common::*;
use futures::StreamExt;

#[actix_rt::test]
async fn cold_then_warm_pull_with_token_auth() {
    let up = FakeUpstream::start(Auth::Token { realm: None }).await;
    let image = up.add_image("library/alpine", "3.20", &[layer(300_000, 1), layer(1000, 2)]);
    let s = mirror(&up, None, |_| {}).await;
    let c = s.client();

    pull(&c, "library/alpine", "3.20", &image).await;
    assert_eq!(up.count("GET", "/blobs/"), 3, "each blob fetched once");
    assert_eq!(up.count("GET", "/manifests/"), 1);
    assert!(!up.token_requests().is_empty());
    let before = up.api_requests();

    // Warm, and by the short name docker sends as `alpine`: nothing goes upstream.
    pull(&c, "library/alpine", "3.20", &image).await;
    pull(&c, "alpine", "3.20", &image).await;
    let r = c.req("HEAD", "/v2/alpine/manifests/3.20", &[], "").await;
    assert_eq!(r.header("docker-content-digest"), Some(image.digest.to_string().as_str()));
    assert_eq!(up.api_requests(), before, "a warm pull inside the tag TTL makes no upstream request");
    assert_eq!(up.count("GET", "/token"), 1, "the token is cached");

    // Stored under the upstream's host in the mirror's own part of the tree, in
    // registry:2's layout; listed in the catalog under the name that pulls it.
    let v2 = "docker/registry/v2/repositories/_mirror/docker.io/library/alpine/_manifests/tags/3.20/current/link";
    assert_eq!(s.read(v2).await.unwrap(), image.digest.to_string().as_bytes());
    let r = c.get("/v2/alpine/tags/list").await;
    assert_eq!(r.json()["tags"], serde_json::json!(["3.20"]));
    assert!(c.get("/v2/_catalog").await.json()["repositories"].to_string().contains("docker.io/library/alpine"));
    s.stop().await;
    up.stop().await;
}

#[actix_rt::test]
async fn concurrent_cold_gets_make_one_upstream_request() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let big = layer(64 * 1024 * 1024, 7);
    let image = up.add_image("library/big", "1", &[big]);
    let s = mirror(&up, None, |_| {}).await;
    let d = image.layers[0].clone();
    let path = format!("/v2/library/big/blobs/{d}");
    let clients: Vec<Client> = (0..32).map(|_| s.client()).collect();
    let results = futures::future::join_all(clients.iter().map(|c| c.get_hashed(&path))).await;
    for r in results {
        assert_eq!(r.unwrap(), (200, d.clone(), 64 * 1024 * 1024));
    }
    assert_eq!(up.count("GET", "/blobs/"), 1, "32 concurrent cold GETs, one upstream fetch");
    s.stop().await;
    up.stop().await;
}

#[actix_rt::test]
async fn tag_ttl_revalidates_with_head_and_refetches_only_on_change() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let v1 = up.add_image("library/app", "latest", &[layer(1000, 1)]);
    // A zero TTL makes every tag request a revalidation, without waiting.
    let s = mirror(&up, None, |c| set_ttl(c, Duration::ZERO)).await;
    let c = s.client();
    pull(&c, "app", "latest", &v1).await;
    assert_eq!((up.count("HEAD", "/manifests/"), up.count("GET", "/manifests/")), (0, 1));

    pull(&c, "app", "latest", &v1).await;
    assert_eq!(up.count("HEAD", "/manifests/"), 1, "expired tag: one HEAD");
    assert_eq!(up.count("GET", "/manifests/"), 1, "unchanged: no GET");

    let v2 = up.add_image("library/app", "latest", &[layer(2000, 2)]);
    pull(&c, "app", "latest", &v2).await;
    assert_eq!(up.count("HEAD", "/manifests/"), 2);
    assert_eq!(up.count("GET", "/manifests/"), 2, "changed: fetched again");
    s.stop().await;

    // Inside the TTL: no upstream request at all.
    let s = mirror(&up, None, |c| set_ttl(c, Duration::from_secs(3600))).await;
    let c = s.client();
    pull(&c, "app", "latest", &v2).await;
    let before = up.api_requests();
    pull(&c, "app", "latest", &v2).await;
    assert_eq!(up.api_requests(), before);
    s.stop().await;
    up.stop().await;
}

#[actix_rt::test]
async fn stopped_or_failing_upstream_serves_the_cached_tag() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let image = up.add_image("library/app", "1", &[layer(5000, 3)]);
    let s = mirror(&up, None, |c| set_ttl(c, Duration::ZERO)).await;
    let c = s.client();
    pull(&c, "app", "1", &image).await;

    // Rate limited: the cached tag is served; an uncached one gets 429 with Retry-After.
    up.state().fail_with = Some((429, Some("120".into())));
    pull(&c, "app", "1", &image).await;
    let r = c.get("/v2/app/manifests/other").await;
    assert_eq!((r.status, r.code().as_str()), (429, "TOOMANYREQUESTS"));
    assert_eq!(r.header("retry-after"), Some("120"));

    // 5xx: the same.
    up.state().fail_with = Some((500, None));
    let s2 = mirror(&up, None, |c| set_ttl(c, Duration::ZERO)).await;
    let r = s2.client().get("/v2/app/manifests/1").await;
    assert_eq!(r.status, 502, "nothing cached in this berth: a clear error");
    assert!(r.json()["errors"][0]["message"].as_str().unwrap().contains("docker.io"));
    s2.stop().await;

    // Stopped: the cached tag still pulls, an uncached one fails clearly.
    up.state().fail_with = None;
    up.stop().await;
    pull(&c, "app", "1", &image).await;
    let r = c.get("/v2/app/manifests/never-cached").await;
    assert_eq!(r.status, 502, "{:?}", r.body);

    // A berth started while every upstream is down serves its cache.
    let dir = s.stop().await;
    let url = up.url.clone();
    let s = TestServer::start_in(dir, move |c| {
        c.mirror.set_upstream("docker.io", &url);
        set_ttl(c, Duration::ZERO);
    })
    .await;
    pull(&s.client(), "app", "1", &image).await;
    s.stop().await;
}

#[actix_rt::test]
async fn upstream_that_never_answers_is_cut_off_by_timeouts() {
    // Accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let s = TestServer::start_with(|c| {
        c.mirror.set_upstream("docker.io", &url);
        c.mirror.upstreams[0].response_timeout = Duration::from_millis(300);
    })
    .await;
    let started = std::time::Instant::now();
    let r = s.client().get("/v2/app/manifests/1").await;
    assert_eq!((r.status, r.code().as_str()), (504, "UPSTREAM_TIMEOUT"));
    assert!(started.elapsed() < Duration::from_secs(5), "the request did not hang");
    s.stop().await;
    drop(silent);
}

#[actix_rt::test]
async fn blob_is_stored_even_when_the_first_client_disconnects() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let image = up.add_image("library/app", "1", &[layer(4 * 1024 * 1024, 5)]);
    let d = image.layers[0].clone();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    up.state().gate = Some(gate.clone());
    let s = mirror(&up, None, |_| {}).await;
    let c = s.client();
    let path = format!("/v2/app/blobs/{d}");

    let mut resp = c.get_streaming(&path).await;
    assert_eq!(resp.status().as_u16(), 200);
    let first = resp.next().await.unwrap().unwrap();
    assert!(!first.is_empty(), "bytes stream before the blob is complete");
    drop(resp);

    gate.add_permits(1000);
    // A later request is served (joining the fetch or from the store) with no new upstream request.
    assert_eq!(c.get_hashed(&path).await.unwrap(), (200, d.clone(), 4 * 1024 * 1024));
    assert_eq!(up.count("GET", "/blobs/"), 1);
    let data = berth::store::layout::blob_data(&d);
    s.wait_for(&data).await;
    assert_eq!(s.size(&data).await, Some(4 * 1024 * 1024));
    s.stop().await;
    up.stop().await;
}

#[actix_rt::test]
async fn head_and_range_on_uncached_blobs() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let content = layer(1_000_000, 6);
    let image = up.add_image("library/app", "1", std::slice::from_ref(&content));
    let d = image.layers[0].clone();
    let s = mirror(&up, None, |_| {}).await;
    let c = s.client();
    let r = c.req("HEAD", &format!("/v2/docker.io/app/blobs/{d}"), &[], "").await;
    assert_eq!((r.status, r.header("content-length")), (200, Some("1000000")));
    let r = c.req("HEAD", &format!("/v2/app/blobs/{d}?ns=docker.io"), &[], "").await;
    assert_eq!(r.status, 200);
    assert_eq!((up.count("HEAD", "/blobs/"), up.count("GET", "/blobs/")), (2, 0), "HEAD does not download");
    // Without a host or ns the name may be about to receive its first push:
    // its HEAD is a push client's existence check, answered from the store.
    let r = c.req("HEAD", &format!("/v2/app/blobs/{d}"), &[], "").await;
    assert_eq!(r.status, 404);
    assert_eq!(up.count("HEAD", "/blobs/"), 2);

    let r = c.req("GET", &format!("/v2/app/blobs/{d}"), &[("Range", "bytes=500000-500009")], "").await;
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 500000-500009/1000000"));
    assert_eq!(r.body, content.slice(500_000..500_010));
    let r = c.req("GET", &format!("/v2/app/blobs/{d}"), &[("Range", "bytes=-3")], "").await;
    assert_eq!(r.body, content.slice(999_997..));
    s.stop().await;
    up.stop().await;
}

#[actix_rt::test]
async fn pushing_a_new_name_works_while_the_upstream_is_down() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    up.state().fail_with = Some((503, None));
    let s = mirror(&up, None, |_| {}).await;
    let c = s.client();
    // What skopeo and containerd do first: existence checks in the target repository.
    let layer_d = Digest::sha256_of(b"new layer");
    assert_eq!(c.req("HEAD", &format!("/v2/team/new/blobs/{layer_d}"), &[], "").await.status, 404);
    let m = image_manifest(&Digest::sha256_of(b"{}"), 2, &layer_d, 9);
    let r = c.req("HEAD", &format!("/v2/team/new/manifests/{}", Digest::sha256_of(&m)), &[], "").await;
    assert_eq!(r.status, 404);
    let (pushed, _) = c.push_image("team/new", "1", b"new layer").await;
    assert_eq!(c.get("/v2/team/new/manifests/1").await.body.as_ref(), &pushed[..]);
    s.stop().await;
    up.stop().await;
}

#[actix_rt::test]
async fn upstream_404s_are_registry_errors() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let s = mirror(&up, None, |_| {}).await;
    let c = s.client();
    let r = c.get("/v2/app/manifests/nope").await;
    assert_eq!((r.status, r.code().as_str()), (404, "MANIFEST_UNKNOWN"));
    let r = c.get(&format!("/v2/app/blobs/{}", Digest::sha256_of(b"nothing"))).await;
    assert_eq!((r.status, r.code().as_str()), (404, "BLOB_UNKNOWN"));
    s.stop().await;
    up.stop().await;
}

#[actix_rt::test]
async fn routing_by_ns_and_host_prefix_and_local_first() {
    let docker = FakeUpstream::start(Auth::Anonymous).await;
    let ghcr = FakeUpstream::start(Auth::Anonymous).await;
    let from_docker = docker.add_image("team/app", "1", &[layer(100, 1)]);
    let from_ghcr = ghcr.add_image("owner/img", "1", &[layer(100, 2)]);
    let s = mirror(&docker, Some(&ghcr), |_| {}).await;
    let c = s.client();

    pull(&c, "ghcr.io/owner/img", "1", &from_ghcr).await;
    let r = c.req("GET", "/v2/owner/img/manifests/1?ns=ghcr.io", &[], "").await;
    assert_eq!(r.body, from_ghcr.manifest, "?ns= picks the upstream");
    pull(&c, "team/app", "1", &from_docker).await;
    let r = c.req("GET", "/v2/team/app/manifests/1?ns=docker.io", &[], "").await;
    assert_eq!(r.body, from_docker.manifest);
    assert_eq!(docker.count("GET", "/v2/owner/"), 0);

    // Pushes into mirrored or protected names are refused with a reason.
    for path in
        ["/v2/ghcr.io/owner/img/blobs/uploads/", "/v2/library/alpine/blobs/uploads/", "/v2/x/blobs/uploads/?ns=ghcr.io"]
    {
        let r = c.req("POST", path, &[], "").await;
        assert_eq!((r.status, r.code().as_str()), (403, "DENIED"), "{path}");
        assert!(!r.json()["errors"][0]["message"].as_str().unwrap().is_empty());
    }

    // A blob pulled through the mirror (once stored) mounts into a pushed repository by its pull name.
    let d = &from_docker.layers[0];
    s.wait_for(&format!("docker/registry/v2/repositories/_mirror/docker.io/team/app/_layers/sha256/{}/link", d.hex()))
        .await;
    let r = c.req("POST", &format!("/v2/mine/copy/blobs/uploads/?mount={d}&from=team/app"), &[], "").await;
    assert_eq!(r.status, 201);

    // Mirrored content cannot be deleted through its pull name, and the
    // attempt does not make the name local: reads still go upstream.
    let r = c.req("DELETE", "/v2/team/app/manifests/1", &[], "").await;
    assert_eq!((r.status, r.code().as_str()), (403, "DENIED"));
    assert_eq!(c.get("/v2/team/app/manifests/1").await.body, from_docker.manifest);

    // A pushed repository is local: served from the store, never sent upstream.
    let before = docker.api_requests();
    let (m, _) = c.push_image("mine/app", "1", b"private layer").await;
    assert_eq!(c.get("/v2/mine/app/manifests/1").await.body.as_ref(), &m[..]);
    assert_eq!(c.get("/v2/mine/app/manifests/nope").await.status, 404);
    assert_eq!(docker.api_requests(), before);
    s.stop().await;
    docker.stop().await;
    ghcr.stop().await;
}

#[actix_rt::test]
async fn a_layer_shared_by_a_pushed_and_a_mirrored_image_is_stored_once() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let shared = layer(2 * 1024 * 1024, 9);
    let image = up.add_image("library/base", "1", std::slice::from_ref(&shared));
    let s = mirror(&up, None, |_| {}).await;
    let c = s.client();
    c.push_blob("team/app", &shared).await;
    pull(&c, "base", "1", &image).await;
    assert_eq!(up.count("GET", &image.layers[0].to_string()), 0, "the stored layer is not downloaded again");
    assert_eq!(up.count("HEAD", &image.layers[0].to_string()), 1, "the upstream confirmed it has the layer");
    let blobs = "docker/registry/v2/blobs/sha256";
    let mut count = 0;
    for prefix in s.entries(blobs).await {
        for hex in s.entries(&format!("{blobs}/{prefix}")).await {
            count += usize::from(s.size(&format!("{blobs}/{prefix}/{hex}/data")).await == Some(shared.len() as u64));
        }
    }
    assert_eq!(count, 1);
    s.stop().await;
    up.stop().await;
}

#[actix_rt::test]
async fn basic_auth_upstream() {
    let up = FakeUpstream::start(Auth::Basic { user: "u".into(), password: "p".into() }).await;
    let image = up.add_image("library/app", "1", &[layer(100, 1)]);
    let s = mirror(&up, None, |c| {
        c.mirror.upstreams[0].username = Some("u".into());
        c.mirror.upstreams[0].password = Some("p".into());
    })
    .await;
    pull(&s.client(), "app", "1", &image).await;
    s.stop().await;

    let s = mirror(&up, None, |_| {}).await;
    let r = s.client().get("/v2/app/manifests/1").await;
    assert_eq!(r.status, 502, "without credentials: {:?}", r.body);
    assert!(r.json()["errors"][0]["message"].as_str().unwrap().contains("basic"));
    s.stop().await;
    up.stop().await;
}

/// An upstream's login from a docker credential helper (registry:2's
/// `proxy.exec`): asked with the host, its answer used for its lifetime.
#[actix_rt::test]
async fn upstream_credentials_from_a_credential_helper() {
    let up = FakeUpstream::start(Auth::Basic { user: "robot".into(), password: "from-the-vault".into() }).await;
    let image = up.add_image("library/app", "1", &[layer(100, 1)]);
    let dir = tempfile::tempdir().unwrap();
    let (helper, asked) = (dir.path().join("docker-credential-vault"), dir.path().join("asked"));
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nread host\necho \"$1 $host\" >> {}\nprintf '{{\"Username\":\"robot\",\"Secret\":\"from-the-vault\"}}'\n",
            asked.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = helper.to_str().unwrap().to_string();
    let s = mirror(&up, None, move |c| c.mirror.upstreams[0].credential_helper = Some(path)).await;
    pull(&s.client(), "app", "1", &image).await;
    pull(&s.client(), "app", "1", &image).await;
    assert_eq!(std::fs::read_to_string(&asked).unwrap(), "get docker.io\n", "asked once, with the host");

    // A helper that fails: a clear error, nothing of its output in it.
    std::fs::write(&helper, "#!/bin/sh\necho 'secret-ish noise'\nexit 1\n").unwrap();
    up.add_image("library/other", "1", &[layer(100, 2)]);
    let path = helper.to_str().unwrap().to_string();
    let s2 = mirror(&up, None, move |c| c.mirror.upstreams[0].credential_helper = Some(path)).await;
    let r = s2.client().get("/v2/other/manifests/1").await;
    assert_eq!(r.status, 502, "{:?}", r.body);
    let message = r.json()["errors"][0]["message"].as_str().unwrap().to_string();
    assert!(message.contains("credential helper") && !message.contains("noise"), "{message}");
    s2.stop().await;
    s.stop().await;
    up.stop().await;
}

#[actix_rt::test]
async fn credentials_are_not_sent_to_a_realm_on_another_host() {
    let up = FakeUpstream::start(Auth::Token { realm: None }).await;
    // The realm names 127.0.0.2: another host than the upstream's 127.0.0.1.
    let foreign = up.foreign_url.clone();
    up.state().auth = Auth::Token { realm: Some(format!("{foreign}/token")) };
    let image = up.add_image("library/app", "1", &[layer(100, 1)]);
    let s = mirror(&up, None, |c| {
        c.mirror.upstreams[0].username = Some("u".into());
        c.mirror.upstreams[0].password = Some("secret".into());
    })
    .await;
    let r = s.client().get("/v2/app/manifests/1").await;
    let tokens = up.token_requests();
    assert!(!tokens.is_empty(), "the token endpoint was asked ({} {:?})", r.status, r.body);
    assert!(tokens.iter().all(|t| t.authorization.is_none()), "no credentials to a foreign realm");
    drop(image);
    s.stop().await;

    // On the upstream's own host, the credentials go along.
    up.state().auth = Auth::Token { realm: None };
    let s = mirror(&up, None, |c| {
        c.mirror.upstreams[0].username = Some("u".into());
        c.mirror.upstreams[0].password = Some("secret".into());
    })
    .await;
    assert_eq!(s.client().get("/v2/app/manifests/1").await.status, 200);
    assert!(up.token_requests().last().unwrap().authorization.as_deref().unwrap_or("").starts_with("Basic "));
    s.stop().await;
    up.stop().await;
}

#[actix_rt::test]
async fn a_revoked_token_is_replaced_once() {
    let up = FakeUpstream::start(Auth::Token { realm: None }).await;
    let a = up.add_image("library/a", "1", &[layer(100, 1)]);
    let s = mirror(&up, None, |c| set_ttl(c, Duration::ZERO)).await;
    let c = s.client();
    pull(&c, "a", "1", &a).await;
    assert_eq!(up.count("GET", "/token"), 1);
    up.state().valid_tokens.clear();
    pull(&c, "a", "1", &a).await;
    assert_eq!(up.count("GET", "/token"), 2, "a 401 after the cached token fetched one fresh token");
    s.stop().await;
    up.stop().await;
}

/// The referrers of a mirrored image: the upstream's (its referrers API, or
/// the referrers tag schema where it has none), mirrored and filtered like
/// local ones, and still listed once the upstream is gone.
#[actix_rt::test]
async fn mirrored_referrers_are_listed_filtered_and_kept_offline() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let image = up.add_image("library/app", "1", &[layer(100, 1)]);
    let (sig, _) = up.add_artifact("library/app", &image.digest, "application/vnd.example.sig", b"signature");
    let (sbom, _) = up.add_artifact("library/app", &image.digest, "application/spdx+json", b"sbom");
    let s = mirror(&up, None, |c| set_ttl(c, Duration::ZERO)).await;
    let c = s.client();
    let listed = |r: &Resp| -> Vec<(String, String)> {
        assert_eq!(r.status, 200, "{:?}", r.body);
        let v = r.json();
        v["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["digest"].as_str().unwrap().to_string(), m["artifactType"].as_str().unwrap().to_string()))
            .collect()
    };
    let mut both = vec![
        (sig.to_string(), "application/vnd.example.sig".to_string()),
        (sbom.to_string(), "application/spdx+json".to_string()),
    ];
    both.sort();
    let r = c.get(&format!("/v2/app/referrers/{}", image.digest)).await;
    assert_eq!(listed(&r), both);
    assert_eq!(r.header("x-berth-stale"), None);
    let only_sig = format!("/v2/app/referrers/{}?artifactType=application/vnd.example.sig", image.digest);
    let r = c.get(&only_sig).await;
    assert_eq!(listed(&r), vec![(sig.to_string(), "application/vnd.example.sig".to_string())]);
    assert_eq!(r.header("oci-filters-applied"), Some("artifactType"));

    // An upstream without the referrers API (404): the referrers tag schema.
    up.state().referrers_api = false;
    let other = up.add_image("library/app", "2", &[layer(100, 2)]);
    let old_style = up.add_artifact("library/app", &other.digest, "application/vnd.example.sig", b"old style");
    up.add_referrers_tag("library/app", &other.digest, std::slice::from_ref(&old_style));
    let r = c.get(&format!("/v2/app/referrers/{}", other.digest)).await;
    assert_eq!(listed(&r), vec![(old_style.0.to_string(), "application/vnd.example.sig".to_string())]);

    // The upstream gone: what was listed is still listed (stale), and pulls.
    up.stop().await;
    let r = c.get(&format!("/v2/app/referrers/{}", image.digest)).await;
    assert_eq!(listed(&r), both);
    assert!(r.header("x-berth-stale").is_some_and(|w| w.contains("unavailable")), "{:?}", r.header("x-berth-stale"));
    assert_eq!(listed(&c.get(&only_sig).await).len(), 1);
    let r = c.get(&format!("/v2/app/manifests/{sig}")).await;
    assert_eq!(r.status, 200, "the referrer itself was mirrored");
    s.stop().await;
}
