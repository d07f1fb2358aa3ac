//! Access control end to end: htpasswd users, the default policy (mirrored
//! content is everyone's to pull, pushed content needs a user), rules, the
//! challenge, what listings show, mounts, and a reloaded htpasswd file.

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::mirroring::{layer, mirror, pull};
use common::upstream::{Auth, FakeUpstream};
use common::*;

use berth::config::ChallengeScheme;

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// berth mirroring `up` with users alice/wonderland and bob/builder and the rules given (TOML).
async fn server(up: &FakeUpstream, rules: &str) -> (TestServer, tempfile::TempDir) {
    server_with(up, rules, ChallengeScheme::Token).await
}

async fn server_with(up: &FakeUpstream, rules: &str, scheme: ChallengeScheme) -> (TestServer, tempfile::TempDir) {
    server_tweaked(up, rules, scheme, |_| {}).await
}

async fn server_tweaked(
    up: &FakeUpstream,
    rules: &str,
    scheme: ChallengeScheme,
    tweak: impl FnOnce(&mut Config),
) -> (TestServer, tempfile::TempDir) {
    let users = tempfile::tempdir().unwrap();
    let path = users.path().join("htpasswd");
    let lines =
        [berth::htpasswd::line("alice", "wonderland", 4).unwrap(), berth::htpasswd::line("bob", "builder", 4).unwrap()];
    std::fs::write(&path, lines.join("\n")).unwrap();
    let rules: Vec<berth::config::AccessRule> = if rules.is_empty() {
        vec![]
    } else {
        let parsed: toml::Value = toml::from_str(rules).unwrap();
        parsed["rules"].clone().try_into().unwrap()
    };
    let s = mirror(up, None, move |c| {
        c.auth.htpasswd = Some(berth::config::HtpasswdConfig { path, realm: "berth test".into() });
        c.auth.rules = rules;
        c.auth.challenge = scheme;
        tweak(c);
    })
    .await;
    (s, users)
}

/// Pushes a one-layer image as `auth` (an Authorization value); returns the manifest status.
async fn push_as(c: &Client, auth: &str, repo: &str, tag: &str, content: &[u8]) -> u16 {
    let h = [("Authorization", auth)];
    for blob in [b"{}".as_slice(), content] {
        let d = Digest::sha256_of(blob);
        let r = c.req("POST", &format!("/v2/{repo}/blobs/uploads/?digest={d}"), &h, blob.to_vec()).await;
        if r.status != 201 {
            return r.status;
        }
    }
    let m = image_manifest(&Digest::sha256_of(b"{}"), 2, &Digest::sha256_of(content), content.len());
    c.req("PUT", &format!("/v2/{repo}/manifests/{tag}"), &[("Authorization", auth), ("Content-Type", OCI_MANIFEST)], m)
        .await
        .status
}

#[actix_rt::test]
async fn mirrored_content_is_public_and_pushed_content_needs_a_user() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let image = up.add_image("library/alpine", "3.20", &[layer(1000, 1)]);
    let (s, _users) = server(&up, "").await;
    let c = s.client();
    let (alice, bob) = (basic("alice", "wonderland"), basic("bob", "builder"));

    // The version check asks anonymous callers to log in (docker login learns the scheme there).
    let r = c.get("/v2/").await;
    assert_eq!((r.status, r.code().as_str()), (401, "UNAUTHORIZED"));
    let host = s.base.trim_start_matches("http://");
    let challenge = format!(r#"Bearer realm="http://{host}/v2/token",service="{host}""#);
    assert_eq!(r.header("www-authenticate"), Some(challenge.as_str()));
    assert_eq!(c.req("GET", "/v2/", &[("Authorization", &alice)], "").await.status, 200);
    // A wrong password, an unknown user, and a malformed header: 401 with the challenge.
    for bad in [basic("alice", "nope"), basic("nobody", "x"), "Basic !!!".to_string(), "Bearer abc".to_string()] {
        let r = c.req("GET", "/v2/alpine/manifests/3.20", &[("Authorization", &bad)], "").await;
        assert_eq!((r.status, r.code().as_str()), (401, "UNAUTHORIZED"), "{bad}");
        assert!(r.header("www-authenticate").is_some());
    }

    // Anonymous pulls of mirrored content work (registry-mirrors sends no credentials).
    pull(&c, "alpine", "3.20", &image).await;
    // Pushing needs a user; then the pushed image is private.
    let r = c.req("POST", "/v2/team/app/blobs/uploads/", &[], "").await;
    assert_eq!((r.status, r.header("www-authenticate")), (401, Some(challenge.as_str())));
    assert_eq!(push_as(&c, &alice, "team/app", "v1", b"private layer").await, 201);
    assert_eq!(c.get("/v2/team/app/manifests/v1").await.status, 401);
    assert_eq!(c.req("GET", "/v2/team/app/manifests/v1", &[("Authorization", &bob)], "").await.status, 200);
    assert_eq!(c.req("DELETE", "/v2/team/app/manifests/v1", &[], "").await.status, 401);

    // Listings show what the caller may pull.
    let repos = |r: Resp| {
        r.json()["repositories"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    assert_eq!(repos(c.get("/v2/_catalog").await), vec!["docker.io/library/alpine"]);
    assert_eq!(
        repos(c.req("GET", "/v2/_catalog", &[("Authorization", &bob)], "").await),
        vec!["docker.io/library/alpine", "team/app"]
    );
    assert_eq!(c.get("/v2/team/app/tags/list").await.status, 401);
    s.stop().await;
    up.stop().await;
}

/// `GET /v2/token` (with or without a password), `POST /v2/token` (the OAuth2 password grant).
async fn token(c: &Client, query: &str, auth: Option<&str>) -> Result<String, u16> {
    let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
    let r = c.req("GET", &format!("/v2/token?service=berth&{query}"), &headers, "").await;
    match r.status {
        200 => Ok(r.json()["token"].as_str().unwrap().to_string()),
        s => Err(s),
    }
}

#[actix_rt::test]
async fn tokens_carry_the_user_and_anonymous_mirror_pulls_survive_foreign_credentials() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    up.add_image("library/alpine", "3.20", &[layer(500, 2)]);
    let (s, users) = server(&up, "").await;
    let c = s.client();
    let alice = basic("alice", "wonderland");
    assert_eq!(push_as(&c, &alice, "team/app", "v1", b"private layer").await, 201);
    let with = |t: &str| format!("Bearer {t}");

    // No credentials: an anonymous token, good for mirrored content only.
    let anon = token(&c, "scope=repository:library/alpine:pull", None).await.unwrap();
    assert_eq!(c.req("GET", "/v2/alpine/manifests/3.20", &[("Authorization", &with(&anon))], "").await.status, 200);
    let r = c.req("GET", "/v2/team/app/manifests/v1", &[("Authorization", &with(&anon))], "").await;
    assert_eq!((r.status, r.header("www-authenticate").is_some()), (401, true));
    assert_eq!(c.req("GET", "/v2/", &[("Authorization", &with(&anon))], "").await.status, 401);

    // A password: the user's token (what docker login and docker push use).
    let t = token(&c, "account=alice&client_id=docker&offline_token=true", Some(&alice)).await.unwrap();
    assert_eq!(c.req("GET", "/v2/", &[("Authorization", &with(&t))], "").await.status, 200);
    assert_eq!(c.req("GET", "/v2/team/app/manifests/v1", &[("Authorization", &with(&t))], "").await.status, 200);
    // A wrong password logs nobody in...
    assert_eq!(token(&c, "account=alice&client_id=docker", Some(&basic("alice", "nope"))).await, Err(401));
    assert_eq!(token(&c, "scope=repository:team/app:pull,push", Some(&basic("nobody", "x"))).await, Err(401));
    // ...but a pull with credentials berth does not know (dockerd sends its
    // Docker Hub login to mirrors) gets what anonymous gets.
    let hub = token(&c, "scope=repository:library/alpine:pull", Some(&basic("hubuser", "hubpass"))).await.unwrap();
    assert_eq!(c.req("GET", "/v2/alpine/manifests/3.20", &[("Authorization", &with(&hub))], "").await.status, 200);
    assert_eq!(c.req("GET", "/v2/team/app/manifests/v1", &[("Authorization", &with(&hub))], "").await.status, 401);

    // containerd's first try: the OAuth2 password grant.
    let form = "grant_type=password&username=alice&password=wonderland&scope=repository%3Ateam%2Fapp%3Apull&service=berth&client_id=containerd-client";
    let r = c.req("POST", "/v2/token", &[("Content-Type", "application/x-www-form-urlencoded")], form).await;
    assert_eq!(r.status, 200);
    let posted = r.json()["access_token"].as_str().unwrap().to_string();
    assert_eq!(c.req("GET", "/v2/team/app/manifests/v1", &[("Authorization", &with(&posted))], "").await.status, 200);
    let wrong = form.replace("wonderland", "nope").replace("%3Apull", "%3Apull%2Cpush");
    assert_eq!(c.req("POST", "/v2/token", &[], wrong).await.status, 401);

    // Forged, truncated and garbage tokens are refused.
    let (claims, _) = t.split_once('.').unwrap();
    for bad in [format!("{claims}.AAAA"), t[..t.len() - 2].to_string(), "x".into(), String::new()] {
        let r = c.req("GET", "/v2/team/app/manifests/v1", &[("Authorization", &with(&bad))], "").await;
        assert_eq!((r.status, r.code().as_str()), (401, "UNAUTHORIZED"), "{bad}");
    }

    // A changed password ends the user's tokens at once.
    let path = users.path().join("htpasswd");
    let content = std::fs::read_to_string(&path).unwrap();
    let first = content.lines().next().unwrap().to_string();
    std::fs::write(&path, content.replace(&first, &berth::htpasswd::line("alice", "new password", 4).unwrap()))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.req("GET", "/v2/", &[("Authorization", &with(&t))], "").await.status != 401 {
        assert!(Instant::now() < deadline, "the old token still works");
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
    s.stop().await;
    up.stop().await;
}

#[actix_rt::test]
async fn the_basic_challenge_is_registry_2s() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let (s, _users) = server_with(&up, "", ChallengeScheme::Basic).await;
    let c = s.client();
    let r = c.get("/v2/").await;
    assert_eq!((r.status, r.header("www-authenticate")), (401, Some(r#"Basic realm="berth test""#)));
    assert_eq!(c.req("GET", "/v2/", &[("Authorization", &basic("bob", "builder"))], "").await.status, 200);
    s.stop().await;
    up.stop().await;
}

#[actix_rt::test]
async fn rules_decide_per_repository_and_mounts_need_pull_on_from() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let rules = r#"
        [[rules]]
        repositories = ["public/*"]
        pull = ["anonymous"]
        push = ["alice"]
        delete = ["alice"]
        [[rules]]
        repositories = ["secret/*"]
        pull = ["alice"]
        push = ["alice"]
        delete = []
    "#;
    let (s, _users) = server(&up, rules).await;
    let c = s.client();
    let (alice, bob) = (basic("alice", "wonderland"), basic("bob", "builder"));
    assert_eq!(push_as(&c, &alice, "public/tool", "1", b"tool").await, 201);
    assert_eq!(c.get("/v2/public/tool/manifests/1").await.status, 200, "public: anonymous pulls");
    let r = c
        .req("PUT", "/v2/public/tool/manifests/2", &[("Authorization", &bob), ("Content-Type", OCI_MANIFEST)], "{}")
        .await;
    assert_eq!((r.status, r.code().as_str()), (403, "DENIED"), "logged in, not allowed: 403");
    assert!(r.json()["errors"][0]["message"].as_str().unwrap().contains("bob may not push to public/tool"));
    assert_eq!(push_as(&c, &alice, "secret/app", "1", b"the secret layer").await, 201);
    assert_eq!(c.req("GET", "/v2/secret/app/manifests/1", &[("Authorization", &bob)], "").await.status, 403);
    let r = c.req("DELETE", "/v2/secret/app/manifests/1", &[("Authorization", &alice)], "").await;
    assert_eq!(r.status, 403, "nobody may delete there");

    // bob may not pull secret/app, so he may not mount from it either: an upload session instead.
    let d = Digest::sha256_of(b"the secret layer");
    let r = c
        .req("POST", &format!("/v2/bob/app/blobs/uploads/?mount={d}&from=secret/app"), &[("Authorization", &bob)], "")
        .await;
    assert_eq!(r.status, 202);
    assert_eq!(c.req("GET", &format!("/v2/bob/app/blobs/{d}"), &[("Authorization", &bob)], "").await.status, 404);
    let r = c
        .req(
            "POST",
            &format!("/v2/alice/app/blobs/uploads/?mount={d}&from=secret/app"),
            &[("Authorization", &alice)],
            "",
        )
        .await;
    assert_eq!(r.status, 201, "alice may");
    // bob's catalog has no secret/app.
    let r = c.req("GET", "/v2/_catalog", &[("Authorization", &bob)], "").await;
    assert!(!r.json()["repositories"].to_string().contains("secret/app"));
    s.stop().await;
    up.stop().await;
}

#[actix_rt::test]
async fn a_changed_htpasswd_file_is_picked_up() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let (s, users) = server(&up, "").await;
    let c = s.client();
    let carol = basic("carol", "c4rol");
    assert_eq!(c.req("GET", "/v2/", &[("Authorization", &carol)], "").await.status, 401);
    let path = users.path().join("htpasswd");
    let mut content = std::fs::read_to_string(&path).unwrap();
    content.push('\n');
    content.push_str(&berth::htpasswd::line("carol", "c4rol", 4).unwrap());
    std::fs::write(&path, content).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.req("GET", "/v2/", &[("Authorization", &carol)], "").await.status != 200 {
        assert!(Instant::now() < deadline, "the new user never got in");
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
    s.stop().await;
    up.stop().await;
}

/// The bypass issue 18 names: an upstream that needs berth's own login, and a
/// rule closing one of its repositories. Every way a client can spell that
/// repository, on every read endpoint, gets the same answer, whichever way
/// the rule spells it.
#[actix_rt::test]
async fn a_rule_holds_for_every_spelling_of_its_repository() {
    let up = FakeUpstream::start(Auth::Basic { user: "berth".into(), password: "upstream-secret".into() }).await;
    let image = up.add_image("library/busybox", "latest", &[layer(700, 5)]);
    let open = up.add_image("library/alpine", "3.20", &[layer(300, 6)]);
    let alice = basic("alice", "wonderland");
    let spellings = [
        ("docker.io/library/busybox", ""),
        ("library/busybox", ""),
        ("busybox", ""),
        ("busybox", "ns=docker.io"),
        ("library/busybox", "ns=docker.io"),
        ("index.docker.io/library/busybox", ""),
        ("registry-1.docker.io/library/busybox", ""),
    ];
    let endpoints = [
        "manifests/latest".to_string(),
        format!("manifests/{}", image.digest),
        format!("blobs/{}", image.layers[0]),
        format!("blobs/{}", image.config),
        "tags/list".to_string(),
        format!("referrers/{}", image.digest),
    ];
    for rule in ["docker.io/library/bus*", "library/bus*", "bus*", "index.docker.io/library/busybox"] {
        let rules = format!("[[rules]]\nrepositories = [\"{rule}\"]\npull = [\"alice\"]\n");
        let (s, _users) = server_tweaked(&up, &rules, ChallengeScheme::Token, |c| {
            let hub = c.mirror.upstreams.iter_mut().find(|u| u.host == "docker.io").unwrap();
            hub.username = Some("berth".into());
            hub.password = Some("upstream-secret".into());
        })
        .await;
        let c = s.client();
        for (name, query) in spellings {
            for endpoint in &endpoints {
                let path = format!("/v2/{name}/{endpoint}{}{query}", if query.is_empty() { "" } else { "?" });
                let head = endpoint.starts_with("manifests") || endpoint.starts_with("blobs");
                for method in if head { &["GET", "HEAD"][..] } else { &["GET"][..] } {
                    let r = c.req(method, &path, &[], "").await;
                    assert_eq!(r.status, 401, "anonymous {method} {path} under rule {rule}");
                    let r = c.req(method, &path, &[("Authorization", &basic("bob", "builder"))], "").await;
                    assert_eq!(r.status, 403, "bob {method} {path} under rule {rule}");
                }
                let r = c.req("GET", &path, &[("Authorization", &alice)], "").await;
                assert_eq!(r.status, 200, "alice GET {path} under rule {rule}: {:?}", r.body);
            }
        }
        let bob = basic("bob", "builder");
        // Listings show the repository once, by its canonical name, to whom the rule lets pull it.
        for (path, what) in [("/v2/_catalog", "docker.io/library/busybox"), ("/v1/search?q=busy", "library/busybox")] {
            let r = c.req("GET", path, &[("Authorization", &alice)], "").await;
            assert!(r.status == 200 && r.text().contains(what), "alice {path} under rule {rule}: {}", r.text());
            let r = c.req("GET", path, &[("Authorization", &bob)], "").await;
            assert!(r.status == 200 && !r.text().contains("busybox"), "bob {path} under rule {rule}: {}", r.text());
        }
        // The web page: the list, and the repository's own page.
        let page = "/ui/repo?name=docker.io/library/busybox";
        let r = c.req("GET", "/ui/?q=busy", &[("Authorization", &alice)], "").await;
        assert!(r.text().contains("docker.io/library/busybox"), "alice's list under rule {rule}");
        let r = c.req("GET", "/ui/?q=busy", &[("Authorization", &bob)], "").await;
        assert!(r.status == 200 && !r.text().contains("library/busybox"), "bob's list under rule {rule}");
        assert_eq!(c.req("GET", page, &[("Authorization", &alice)], "").await.status, 200, "rule {rule}");
        assert_eq!(c.req("GET", page, &[("Authorization", &bob)], "").await.status, 404, "rule {rule}");
        for (name, query) in spellings {
            // A mount needs pull on `from`, however it is spelled: bob gets an
            // upload session instead (202), alice the blob (201).
            if query.is_empty() {
                let mount = format!("/v2/team/app/blobs/uploads/?mount={}&from={name}", image.layers[0]);
                let r = c.req("POST", &mount, &[("Authorization", &bob)], "").await;
                assert_eq!(r.status, 202, "bob mounting from {name} under rule {rule}");
                let r = c.req("POST", &mount, &[("Authorization", &alice)], "").await;
                assert_eq!(r.status, 201, "alice mounting from {name} under rule {rule}: {:?}", r.body);
                c.req("DELETE", &format!("/v2/team/app/blobs/{}", image.layers[0]), &[("Authorization", &alice)], "")
                    .await;
            }
            // Mirrored content takes no upload in any spelling, from anyone.
            let sep = if query.is_empty() { "" } else { "?" };
            let r = c
                .req("POST", &format!("/v2/{name}/blobs/uploads/{sep}{query}"), &[("Authorization", &alice)], "")
                .await;
            assert_eq!((r.status, r.code().as_str()), (403, "DENIED"), "alice uploading to {name}?{query}");
        }
        // What the rule does not name stays everyone's to pull.
        pull(&c, "alpine", "3.20", &open).await;
        s.stop().await;
    }

    // A registry berth does not mirror is nobody's here: 404, and no request
    // goes upstream; a name Docker Hub could not have is the client's mistake.
    let (s, _users) = server(&up, "").await;
    let c = s.client();
    let before = up.api_requests();
    let r = c.req("GET", "/v2/busybox/manifests/latest?ns=ghcr.io", &[("Authorization", &alice)], "").await;
    assert_eq!((r.status, r.code().as_str()), (404, "NAME_UNKNOWN"));
    let r = c.req("GET", "/v2/quay.io/org/app/manifests/latest", &[("Authorization", &alice)], "").await;
    assert_eq!((r.status, r.code().as_str()), (404, "NAME_UNKNOWN"));
    // Nor is it a source to mount from: an upload session instead, as for any mount that cannot be made.
    let mount = format!("/v2/team/app/blobs/uploads/?mount={}&from=quay.io/org/app", image.layers[0]);
    assert_eq!(c.req("POST", &mount, &[("Authorization", &alice)], "").await.status, 202);
    let long = "a".repeat(250);
    let r = c.req("GET", &format!("/v2/{long}/manifests/latest"), &[("Authorization", &alice)], "").await;
    assert_eq!((r.status, r.code().as_str()), (400, "NAME_INVALID"));
    assert_eq!(up.api_requests(), before, "nothing asked upstream");
    s.stop().await;
    up.stop().await;
}
