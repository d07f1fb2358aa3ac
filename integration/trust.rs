//! Trust on the mirror path: the signature policy (`[[mirror.verify]]`)
//! against signatures in cosign's format made here with OpenSSL, served by
//! a fake upstream that counts what crosses it.

mod common;

use std::time::Duration;

use common::mirroring::{layer, mirror, pull};
use common::signing::{payload, SigningKey};
use common::upstream::{Auth, FakeUpstream, Image};
use common::*;

use berth::config::{VerifyMode, VerifyRule, VerifyScope};

fn rule(repositories: &[&str], keys: &[&SigningKey], mode: VerifyMode, scope: VerifyScope) -> VerifyRule {
    VerifyRule {
        repositories: repositories.iter().map(|s| s.to_string()).collect(),
        keys: keys.iter().map(|k| k.public.clone()).collect(),
        mode,
        scope,
    }
}

/// Signs `image` of `repo` with `key` under cosign's `.sig` tag.
fn sign(up: &FakeUpstream, repo: &str, image: &Digest, key: &SigningKey) {
    let p = payload(&format!("docker.io/{repo}"), image);
    up.add_signature_tag(repo, image, &[(&p, &key.sign(&p))]);
}

/// Asserts a refused GET of `image` through berth, with `why` in the message,
/// and that none of its blobs crossed the upstream link.
async fn refused(c: &Client, up: &FakeUpstream, name: &str, image: &Image, why: &str) {
    let r = c.get(&format!("/v2/{name}/manifests/{}", image.digest)).await;
    assert_eq!((r.status, r.code().as_str()), (403, "DENIED"), "{name}: {:?}", r.body);
    let message = r.json()["errors"][0]["message"].as_str().unwrap().to_string();
    assert!(message.contains("mirror.verify[0]") && message.contains(why), "{name}: {message}");
    let r = c.req("HEAD", &format!("/v2/{name}/manifests/{}", image.digest), &[], "").await;
    assert_eq!(r.status, 403, "{name}: a HEAD is refused too");
    for l in &image.layers {
        assert_eq!(c.get(&format!("/v2/{name}/blobs/{l}")).await.status, 403, "{name}: its layer is refused too");
        assert_eq!(up.count("GET", &format!("/blobs/{l}")), 0, "{name}: no layer crossed the link");
    }
}

#[actix_rt::test]
async fn enforce_serves_signed_images_and_refuses_the_rest_before_a_byte() {
    let keys = tempfile::tempdir().unwrap();
    let (ec, ed, rsa, stranger) = (
        SigningKey::new(keys.path(), "ec", "ec"),
        SigningKey::new(keys.path(), "ed", "ed25519"),
        SigningKey::new(keys.path(), "rsa", "rsa"),
        SigningKey::new(keys.path(), "stranger", "ec"),
    );
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let add = |repo: &str, seed: u8| up.add_image(repo, "1", &[layer(3000, seed), layer(2000, seed + 1)]);

    let signed = add("library/signed", 1);
    sign(&up, "library/signed", &signed.digest, &ec);
    let by_rsa = add("library/by-rsa", 3);
    sign(&up, "library/by-rsa", &by_rsa.digest, &rsa);
    // OCI 1.1: a signature referrer, by the Ed25519 key.
    let referred = add("library/referred", 5);
    let p = payload("docker.io/library/referred", &referred.digest);
    up.add_signature_referrer("library/referred", &referred.digest, &[(&p, &ed.sign(&p))]);
    // An index signed, its platforms not on their own.
    let amd = add("library/multi", 7);
    let arm = up.add_image("library/multi", "arm", &[layer(1000, 9)]);
    let index = up.add_index("library/multi", "1", &[(&amd, "linux/amd64"), (&arm, "linux/arm64")]);
    sign(&up, "library/multi", &index, &ec);

    let unsigned = add("library/unsigned", 11);
    let other_key = add("library/other-key", 13);
    sign(&up, "library/other-key", &other_key.digest, &stranger);
    // The right key over a payload that names another image.
    let wrong_digest = add("library/wrong-digest", 15);
    let p = payload("docker.io/library/wrong-digest", &signed.digest);
    up.add_signature_tag("library/wrong-digest", &wrong_digest.digest, &[(&p, &ec.sign(&p))]);
    // A signature made over another payload than the one stored.
    let wrong_payload = add("library/wrong-payload", 17);
    let p = payload("docker.io/library/wrong-payload", &wrong_payload.digest);
    let mut other = p.clone();
    other.push(b' ');
    up.add_signature_tag("library/wrong-payload", &wrong_payload.digest, &[(&p, &ec.sign(&other))]);
    // A signature manifest without the signature annotation.
    let malformed = add("library/malformed", 19);
    let tag = common::signing::signature_tag(&malformed.digest);
    let p = payload("docker.io/library/malformed", &malformed.digest);
    up.add_signature_tag("library/malformed", &malformed.digest, &[(&p, &ec.sign(&p))]);
    let body = String::from_utf8(up.state().manifests[&("library/malformed".to_string(), tag.clone())].1.to_vec())
        .unwrap()
        .replace("dev.cosignproject.cosign/signature", "something-else");
    up.put_raw_manifest("library/malformed", &tag, body.as_bytes());

    let r = rule(&["docker.io/library/*"], &[&ec, &ed, &rsa], VerifyMode::Enforce, VerifyScope::Mirrored);
    let s = mirror(&up, None, move |c| c.mirror.verify = vec![r]).await;
    let c = s.client();

    pull(&c, "signed", "1", &signed).await;
    pull(&c, "by-rsa", "1", &by_rsa).await;
    pull(&c, "referred", "1", &referred).await;
    let r = c.get("/v2/multi/manifests/1").await;
    assert_eq!(r.status, 200, "the signed index: {:?}", r.body);
    pull(&c, "multi", &amd.digest.to_string(), &amd).await;
    pull(&c, "multi", &arm.digest.to_string(), &arm).await;

    refused(&c, &up, "unsigned", &unsigned, "no signature found").await;
    refused(&c, &up, "other-key", &other_key, "not signed by any trusted key").await;
    refused(&c, &up, "wrong-digest", &wrong_digest, &format!("the payload signs {}", signed.digest)).await;
    refused(&c, &up, "wrong-payload", &wrong_payload, "not signed by any trusted key").await;
    refused(&c, &up, "malformed", &malformed, "has no dev.cosignproject.cosign/signature annotation").await;
    let r = c.get("/v2/unsigned/manifests/1").await;
    assert_eq!(r.status, 403, "by tag as by digest");
    // The signed image's very bytes in another repository, without a
    // signature there: a signature counts where cosign looks for it.
    let copy = add("library/copy", 1);
    assert_eq!(copy.digest, signed.digest);
    let r = c.get(&format!("/v2/copy/manifests/{}", copy.digest)).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_eq!(c.get(&format!("/v2/copy/blobs/{}", copy.layers[0])).await.status, 403);

    // The signatures themselves are served, for clients that verify.
    let sig_tag = format!("/v2/signed/manifests/{}", common::signing::signature_tag(&signed.digest));
    let r = c.get(&sig_tag).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let payload_digest = r.json()["layers"][0]["digest"].as_str().unwrap().to_string();
    assert_eq!(c.get(&format!("/v2/signed/blobs/{payload_digest}")).await.status, 200);

    // Outside the rule's repositories, nothing is asked.
    let team = up.add_image("team/app", "1", &[layer(100, 21)]);
    pull(&c, "docker.io/team/app", "1", &team).await;

    let metrics = c.get("/metrics").await.text();
    for line in [
        r#"berth_signature_decisions_total{outcome="signed",repository="docker.io/library/signed"}"#,
        r#"berth_signature_decisions_total{outcome="refused",repository="docker.io/library/unsigned"}"#,
    ] {
        assert!(metrics.contains(line), "{line} in /metrics");
    }

    // A client that kept the manifests asks a restarted berth for blobs
    // only: the stored manifests vouch for them (an index for its platforms).
    let dir = s.stop().await;
    let (url, r) =
        (up.url.clone(), rule(&["docker.io/library/*"], &[&ec, &ed, &rsa], VerifyMode::Enforce, VerifyScope::Mirrored));
    let s = TestServer::start_in(dir, move |c| {
        c.mirror.set_upstream("docker.io", &url);
        c.mirror.verify = vec![r];
    })
    .await;
    let c = s.client();
    for (name, l) in [("signed", &signed.layers[0]), ("multi", &arm.layers[0]), ("referred", &referred.layers[1])] {
        let (status, got, _) = c.get_hashed(&format!("/v2/{name}/blobs/{l}")).await.unwrap();
        assert_eq!((status, &got), (200, l), "{name}");
    }
    assert_eq!(c.get(&format!("/v2/unsigned/blobs/{}", unsigned.layers[0])).await.status, 403);
    s.stop().await;
}

#[actix_rt::test]
async fn warn_serves_unsigned_images_and_counts_them() {
    let keys = tempfile::tempdir().unwrap();
    let ec = SigningKey::new(keys.path(), "ec", "ec");
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let unsigned = up.add_image("library/unsigned", "1", &[layer(3000, 1)]);
    let r = rule(&["docker.io/library/*"], &[&ec], VerifyMode::Warn, VerifyScope::Mirrored);
    let s = mirror(&up, None, move |c| c.mirror.verify = vec![r]).await;
    let c = s.client();
    pull(&c, "unsigned", "1", &unsigned).await;
    let metrics = c.get("/metrics").await.text();
    let line = r#"berth_signature_decisions_total{outcome="warned",repository="docker.io/library/unsigned"}"#;
    assert!(metrics.contains(line), "{metrics}");
    // The web page shows the repository's latest decision.
    let page = c.get("/ui/repo?name=docker.io/library/unsigned").await;
    assert_eq!(page.status, 200);
    let html = scraper::Html::parse_document(&page.text());
    let shown: Vec<String> = html
        .select(&scraper::Selector::parse("#signature.warned").unwrap())
        .map(|e| e.text().collect::<String>())
        .collect();
    assert_eq!(shown.len(), 1, "{}", page.text());
    assert!(shown[0].contains("no signature found"), "{shown:?}");
    s.stop().await;
}

/// A changed key file re-judges: what the old key refused, the new one admits.
#[actix_rt::test]
async fn a_key_file_change_re_judges() {
    let keys = tempfile::tempdir().unwrap();
    let (a, b) = (SigningKey::new(keys.path(), "a", "ec"), SigningKey::new(keys.path(), "b", "ed25519"));
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let image = up.add_image("library/app", "1", &[layer(3000, 1)]);
    sign(&up, "library/app", &image.digest, &b);
    let trusted = keys.path().join("trusted.pub");
    std::fs::copy(&a.public, &trusted).unwrap();
    let mut r = rule(&["docker.io/library/*"], &[&a], VerifyMode::Enforce, VerifyScope::Mirrored);
    r.keys = vec![trusted.clone()];
    let s = mirror(&up, None, move |c| c.mirror.verify = vec![r]).await;
    let c = s.client();
    assert_eq!(c.get("/v2/app/manifests/1").await.status, 403);
    std::fs::copy(&b.public, &trusted).unwrap();
    // The ring looks at its files every 2 s: poll until the verdict changes.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = c.get("/v2/app/manifests/1").await.status;
        if status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still {status} after the key file changed");
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    s.stop().await;
}

/// `scope = "pushed"`: pushed images are held to the rule; a signature
/// pushed afterwards admits the image at once.
#[actix_rt::test]
async fn pushed_content_is_held_to_a_pushed_rule() {
    let keys = tempfile::tempdir().unwrap();
    let ec = SigningKey::new(keys.path(), "ec", "ec");
    let r = rule(&["team/*"], &[&ec], VerifyMode::Enforce, VerifyScope::Pushed);
    let s = TestServer::start_with(move |c| {
        c.mirror.enabled = false;
        c.mirror.verify = vec![r];
    })
    .await;
    let c = s.client();
    let (_, d) = c.push_image("team/app", "v1", b"layer").await;
    let r = c.get("/v2/team/app/manifests/v1").await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_eq!(c.get("/v2/other/manifests/v1").await.status, 404, "outside the rule: nothing asked");

    // Push the signature as cosign does: the payload blob, then the `.sig` manifest.
    let p = payload("localhost/team/app", &d);
    let payload_digest = c.push_blob("team/app", &p).await;
    c.push_blob("team/app", b"{}").await;
    let sig = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest::sha256_of(b"{}").to_string(), "size": 2},
        "layers": [{"mediaType": common::signing::SIMPLE_SIGNING, "digest": payload_digest.to_string(), "size": p.len(),
                    "annotations": {"dev.cosignproject.cosign/signature": base64_encode(&ec.sign(&p))}}]
    }))
    .unwrap();
    let r = c.put_manifest("team/app", &common::signing::signature_tag(&d), OCI_MANIFEST, &sig).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = c.get("/v2/team/app/manifests/v1").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    s.stop().await;
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A fake scanner behind the admission hook: answers as `mode` says and
/// records each question.
struct Scanner {
    url: String,
    state: std::sync::Arc<std::sync::Mutex<ScannerState>>,
    handle: actix_web::dev::ServerHandle,
}

#[derive(Default)]
struct ScannerState {
    /// "allow", "deny", "hang" or "fail" (HTTP 500).
    mode: String,
    questions: Vec<serde_json::Value>,
    tokens: Vec<Option<String>>,
}

impl Scanner {
    fn start() -> Scanner {
        use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
        let state =
            std::sync::Arc::new(std::sync::Mutex::new(ScannerState { mode: "allow".into(), ..Default::default() }));
        let data = web::Data::from(state.clone());
        async fn check(
            req: HttpRequest,
            body: web::Json<serde_json::Value>,
            state: web::Data<std::sync::Mutex<ScannerState>>,
        ) -> HttpResponse {
            let mode = {
                let mut s = state.lock().unwrap();
                s.questions.push(body.into_inner());
                s.tokens.push(req.headers().get("authorization").map(|v| v.to_str().unwrap().to_string()));
                s.mode.clone()
            };
            match mode.as_str() {
                "allow" => HttpResponse::Ok().json(serde_json::json!({"allow": true, "reason": "clean"})),
                "deny" => {
                    HttpResponse::Ok().json(serde_json::json!({"allow": false, "reason": "CVE-2099-0001 in layer 1"}))
                }
                "hang" => futures::future::pending().await,
                _ => HttpResponse::InternalServerError().finish(),
            }
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/check", listener.local_addr().unwrap());
        let server = HttpServer::new(move || App::new().app_data(data.clone()).route("/check", web::post().to(check)))
            .workers(1)
            .shutdown_timeout(0)
            .listen(listener)
            .unwrap()
            .run();
        let handle = server.handle();
        actix_rt::spawn(server);
        Scanner { url, state, handle }
    }

    fn set(&self, mode: &str) {
        self.state.lock().unwrap().mode = mode.into();
    }

    fn asked(&self) -> usize {
        self.state.lock().unwrap().questions.len()
    }
}

/// The README's `[mirror.admission]` example, as loaded, pointed at `url`
/// (with a shorter timeout and this test's token).
fn hook(url: &str, failure: berth::config::AdmissionFailure) -> berth::config::AdmissionConfig {
    let example = readme_toml("# berth.toml: ask a scanner");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("berth.toml");
    std::fs::write(&file, example).unwrap();
    let mut a = Config::load(Some(&file), vec![]).unwrap().mirror.admission.expect("an admission section");
    assert_eq!((a.failure, a.timeout), (berth::config::AdmissionFailure::Closed, Duration::from_secs(5)));
    a.url = url.into();
    a.timeout = Duration::from_millis(500);
    a.failure = failure;
    a.token = Some("hook-secret".into());
    a
}

#[actix_rt::test]
async fn the_admission_hook_allows_denies_revokes_and_fails_as_configured() {
    use berth::config::AdmissionFailure;
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let clean = up.add_image("library/clean", "1", &[layer(3000, 1)]);
    let bad = up.add_image("library/bad", "1", &[layer(3000, 2)]);
    let slow = up.add_image("library/slow", "1", &[layer(3000, 3)]);
    let scanner = Scanner::start();
    let h = hook(&scanner.url, AdmissionFailure::Closed);
    let s = mirror(&up, None, move |c| c.mirror.admission = Some(h)).await;
    let c = s.client();

    pull(&c, "clean", "1", &clean).await;
    {
        let st = scanner.state.lock().unwrap();
        assert_eq!(st.questions.len(), 1, "one question for one image");
        let q = &st.questions[0];
        assert_eq!(q["repository"], "docker.io/library/clean");
        assert_eq!(q["digest"], clean.digest.to_string());
        assert_eq!(q["layers"][0]["digest"], clean.layers[0].to_string());
        assert_eq!(q["layers"][0]["size"], 3000);
        assert!(q["signature"].is_null(), "no signature rule");
        assert_eq!(st.tokens[0].as_deref(), Some("Bearer hook-secret"));
    }
    pull(&c, "clean", "1", &clean).await;
    assert_eq!(scanner.asked(), 1, "the answer is cached");

    scanner.set("deny");
    let r = c.get("/v2/bad/manifests/1").await;
    assert_eq!((r.status, r.code().as_str()), (403, "DENIED"), "{:?}", r.body);
    assert!(r.text().contains("CVE-2099-0001"), "the hook's reason: {}", r.text());
    assert_eq!(c.get(&format!("/v2/bad/blobs/{}", bad.layers[0])).await.status, 403);
    assert_eq!(up.count("GET", &format!("/blobs/{}", bad.layers[0])), 0, "no layer crossed the link");

    // The hook revokes its answer on `clean`: asked again, it now denies.
    let forget = serde_json::json!({"digest": clean.digest.to_string()}).to_string();
    let r = c
        .req(
            "POST",
            "/_berth/admission/forget",
            &[("Authorization", "Bearer guess"), ("Content-Type", "application/json")],
            forget.clone(),
        )
        .await;
    assert_eq!(r.status, 403, "a wrong token revokes nothing");
    let r = c
        .req(
            "POST",
            "/_berth/admission/forget",
            &[("Authorization", "Bearer hook-secret"), ("Content-Type", "application/json")],
            forget,
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(c.get("/v2/clean/manifests/1").await.status, 403, "revoked");
    assert_eq!(c.get(&format!("/v2/clean/blobs/{}", clean.layers[0])).await.status, 403, "its blobs too");

    // A hook that does not answer in time, or answers 500: refused, 503 (closed).
    scanner.set("hang");
    let started = std::time::Instant::now();
    let r = c.get("/v2/slow/manifests/1").await;
    assert_eq!((r.status, r.code().as_str()), (503, "UNAVAILABLE"), "{:?}", r.body);
    assert!(r.text().contains("did not answer"), "{}", r.text());
    assert!(started.elapsed() < Duration::from_secs(5), "cut off at the timeout");
    scanner.set("fail");
    assert_eq!(c.get("/v2/slow/manifests/1").await.status, 503, "a failure is not cached");
    scanner.set("allow");
    pull(&c, "slow", "1", &slow).await;
    s.stop().await;

    // A hook that is gone, with failure = "open": served, and counted.
    scanner.handle.stop(false).await;
    let h = hook(&scanner.url, AdmissionFailure::Open);
    let s = mirror(&up, None, move |c| c.mirror.admission = Some(h)).await;
    let c = s.client();
    pull(&c, "bad", "1", &bad).await;
    let metrics = c.get("/metrics").await.text();
    assert!(metrics.contains(r#"berth_admission_decisions_total{outcome="failed_open"}"#), "{metrics}");
    s.stop().await;
}

/// `berth verify IMAGE` prints the verdict and its reason.
#[actix_rt::test]
async fn berth_verify_prints_the_verdict_and_the_reason() {
    let keys = tempfile::tempdir().unwrap();
    let ec = SigningKey::new(keys.path(), "ec", "ec");
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let signed = up.add_image("library/signed", "1", &[layer(100, 1)]);
    sign(&up, "library/signed", &signed.digest, &ec);
    up.add_image("library/unsigned", "1", &[layer(100, 2)]);
    let r = rule(
        &["docker.io/library/signed", "docker.io/library/unsigned"],
        &[&ec],
        VerifyMode::Enforce,
        VerifyScope::Mirrored,
    );
    let s = mirror(&up, None, move |c| c.mirror.verify = vec![r]).await;
    // The command runs off this thread: the server under test runs on it.
    let verify = |image: &str| {
        let (base, image) = (s.base.clone(), image.to_string());
        actix_rt::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
                .args(["verify", "--server", &base, &image])
                .output()
                .unwrap()
        })
    };
    let out = verify("signed:1").await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("docker.io/library/signed@{}: signed by {}", signed.digest, ec.public.display())),
        "{stdout}"
    );
    let out = verify("docker.io/library/unsigned:1").await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(stdout.contains(": unsigned: no signature found") && stdout.contains("mirror.verify[0]"), "{stdout}");
    let out = verify("team/app:1").await.unwrap();
    assert!(!out.status.success(), "an image that is not there is an error");
    s.stop().await;
}

/// A signature rule holds for its repository however the rule and the
/// request spell it (the identity is resolved once, for both).
#[actix_rt::test]
async fn a_signature_rule_holds_under_every_spelling() {
    let keys = tempfile::tempdir().unwrap();
    let ec = SigningKey::new(keys.path(), "ec", "ec");
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let image = up.add_image("library/busybox", "1", &[layer(100, 1)]);
    up.add_image("library/other", "1", &[layer(100, 2)]);
    for written in ["busybox", "library/busybox", "docker.io/library/busybox", "index.docker.io/library/busybox"] {
        let r = rule(&[written], &[&ec], VerifyMode::Enforce, VerifyScope::Mirrored);
        let s = mirror(&up, None, move |c| c.mirror.verify = vec![r]).await;
        let c = s.client();
        for asked in [
            "/v2/busybox/manifests/1",
            "/v2/library/busybox/manifests/1",
            "/v2/docker.io/library/busybox/manifests/1",
            "/v2/library/busybox/manifests/1?ns=docker.io",
            "/v2/busybox/manifests/1?ns=docker.io",
            "/v2/index.docker.io/library/busybox/manifests/1",
        ] {
            let r = c.get(asked).await;
            assert_eq!(r.status, 403, "rule {written:?}, asked {asked}: {:?}", r.body);
        }
        let r = c.get(&format!("/v2/busybox/blobs/{}", image.layers[0])).await;
        assert_eq!(r.status, 403, "rule {written:?}: its blobs too");
        assert_eq!(c.get("/v2/other/manifests/1").await.status, 200, "rule {written:?} covers only busybox");
        s.stop().await;
    }
}
