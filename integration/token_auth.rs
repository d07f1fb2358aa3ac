//! Token authentication (registry:2's `auth.token`): Distribution 2.8 and
//! berth, started from one `config.yml`, answer the same tokens the same
//! way (status and challenge, field by field), and skopeo pushes and pulls
//! through berth with tokens from a token server.

mod common;

use std::path::Path;
use std::process::Command;

use common::procs::{distribution, free_port, run, Proc};
use common::tokens::{claims, push_blob, request, Issuer, Realm, Signer, ISSUER, SERVICE};
use common::Digest;

/// A challenge with the actions of each scope sorted: Distribution lists a
/// scope's actions in its map's order, which varies from run to run
/// (`pull,push` or `push,pull`); berth always writes `pull,push`.
fn scope_sorted(challenge: &str) -> String {
    let Some((head, rest)) = challenge.split_once("scope=\"") else { return challenge.to_string() };
    let (scope, tail) = rest.split_once('"').unwrap_or((rest, ""));
    let scopes: Vec<String> = scope
        .split(' ')
        .map(|s| match s.rsplit_once(':') {
            Some((resource, actions)) => {
                let mut a: Vec<&str> = actions.split(',').collect();
                a.sort_unstable();
                format!("{resource}:{}", a.join(","))
            }
            None => s.to_string(),
        })
        .collect();
    format!("{head}scope=\"{}\"{tail}", scopes.join(" "))
}

/// berth started from registry:2's `config.yml` (the same `auth.token` section).
fn berth_from_yaml(w: &Path, auth_yaml: &str) -> (Proc, String) {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let yaml = format!(
        "version: 0.1\nhttp:\n  addr: {addr}\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n{auth_yaml}",
        w.join("berth-data").display()
    );
    let cfg = w.join(format!("berth-{port}.yml"));
    std::fs::write(&cfg, yaml).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.args(["serve", "--config"]).arg(&cfg).env("RUST_LOG", "info");
    let mut p = Proc::spawn("berth", &mut cmd, w.join(format!("berth-{port}.log")));
    p.wait_http(&addr);
    (p, addr)
}

#[test]
fn distribution_and_berth_take_and_refuse_the_same_tokens_the_same_way() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let issuer = Issuer::new(&w.join("pki"));
    let yaml = issuer.yaml("http://127.0.0.1:9/token");
    let (_dist, dist) = distribution(&w.join("dist-data"), w, &yaml);
    let (_berth, berth) = berth_from_yaml(w, &yaml);

    let (config, layer) = (b"{}".to_vec(), b"a layer".to_vec());
    let manifest =
        common::image_manifest(&Digest::sha256_of(&config), config.len(), &Digest::sha256_of(&layer), layer.len());
    let md = Digest::sha256_of(&manifest);
    // A certificate for a stranger's key, signed by nobody the registries trust.
    common::certs::Ca::new(&w.join("pki"), "stranger");
    let es = &issuer.es256;
    let push = es.grant(&[("repository", "team/app", &["pull", "push"])]);
    let pull = es.grant(&[("repository", "team/app", &["pull"])]);
    let manifest_path = "/v2/team/app/manifests/v1";
    let by_digest = format!("/v2/team/app/manifests/{md}");
    type Step<'a> = (&'a str, &'a str, String, Option<String>, Vec<u8>);
    let steps: Vec<Step> = vec![
        ("no token", "GET", "/v2/".into(), None, vec![]),
        ("a token with no access, /v2/", "GET", "/v2/".into(), Some(es.grant(&[])), vec![]),
        ("no token, a pull", "GET", manifest_path.into(), None, vec![]),
        ("a Basic header is no token", "GET", manifest_path.into(), Some("Basic YWxpY2U6cGFzcw==".into()), vec![]),
        ("pull only, on a push", "POST", "/v2/team/app/blobs/uploads/".into(), Some(pull.clone()), vec![]),
        (
            "push only (no pull), on a push",
            "POST",
            "/v2/team/app/blobs/uploads/".into(),
            Some(es.grant(&[("repository", "team/app", &["push"])])),
            vec![],
        ),
        ("the manifest", "PUT", manifest_path.into(), Some(push.clone()), manifest.clone()),
        ("pull", "GET", manifest_path.into(), Some(pull.clone()), vec![]),
        ("pull, HEAD", "HEAD", manifest_path.into(), Some(pull.clone()), vec![]),
        (
            "\"*\" grants every action",
            "GET",
            manifest_path.into(),
            Some(es.grant(&[("repository", "team/app", &["*"])])),
            vec![],
        ),
        (
            "RS256, by kid",
            "GET",
            manifest_path.into(),
            Some(issuer.rs256.grant(&[("repository", "team/app", &["pull"])])),
            vec![],
        ),
        (
            "ES256, by x5c chain",
            "GET",
            manifest_path.into(),
            Some(issuer.x5c.grant(&[("repository", "team/app", &["pull"])])),
            vec![],
        ),
        (
            "wrong issuer",
            "GET",
            manifest_path.into(),
            Some(es.sign(&claims("evil", SERVICE, 300, &[("repository", "team/app", &["pull"])]))),
            vec![],
        ),
        (
            "wrong audience",
            "GET",
            manifest_path.into(),
            Some(es.sign(&claims(ISSUER, "another-registry", 300, &[("repository", "team/app", &["pull"])]))),
            vec![],
        ),
        (
            "expired",
            "GET",
            manifest_path.into(),
            Some(es.sign(&claims(ISSUER, SERVICE, -120, &[("repository", "team/app", &["pull"])]))),
            vec![],
        ),
        (
            "scope for another repository",
            "GET",
            manifest_path.into(),
            Some(es.grant(&[("repository", "team/other", &["pull"])])),
            vec![],
        ),
        (
            "signed by a key not in the bundle",
            "GET",
            manifest_path.into(),
            Some(Signer::es256_x5c(&w.join("pki/stranger.key"), &w.join("pki/stranger.crt")).grant(&[(
                "repository",
                "team/app",
                &["pull"],
            )])),
            vec![],
        ),
        ("the catalog without its scope", "GET", "/v2/_catalog".into(), Some(pull.clone()), vec![]),
        ("the catalog", "GET", "/v2/_catalog".into(), Some(es.grant(&[("registry", "catalog", &["*"])])), vec![]),
        ("delete with pull only", "DELETE", by_digest.clone(), Some(pull.clone()), vec![]),
        ("delete", "DELETE", by_digest.clone(), Some(es.grant(&[("repository", "team/app", &["delete"])])), vec![]),
    ];
    // The blobs first, with the push token (the same on both).
    for addr in [&dist, &berth] {
        assert_eq!(push_blob(addr, "", "team/app", &push, &config), 201, "{addr}");
        assert_eq!(push_blob(addr, "", "team/app", &push, &layer), 201, "{addr}");
    }
    let mut answers = Vec::new();
    for (what, method, path, token, body) in &steps {
        let token = token.as_deref();
        let d = request(&dist, method, path, token, body);
        let b = request(&berth, method, path, token, body);
        answers.push(format!("{what}: {} {}", d.0, scope_sorted(&d.1)));
        assert_eq!((b.0, scope_sorted(&b.1)), (d.0, scope_sorted(&d.1)), "{what}: berth answered unlike Distribution");
    }
    // The matrix covered acceptance and each refusal.
    let all = answers.join("\n");
    for expect in [
        "pull: 200",
        "the manifest: 201",
        "RS256, by kid: 200",
        "ES256, by x5c chain: 200",
        "expired: 401",
        "error=\"invalid_token\"",
        "error=\"insufficient_scope\"",
        "scope=\"repository:team/app:pull,push\"",
        "the catalog: 200",
        "delete: 202",
    ] {
        assert!(all.contains(expect), "{expect} not among:\n{all}");
    }
}

#[test]
fn skopeo_pushes_and_pulls_with_a_token_servers_tokens_and_a_pull_only_grant_cannot_push() {
    common::procs::require("skopeo");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let issuer = Issuer::new(&w.join("pki"));
    let realm =
        Realm::start(Signer::es256_kid(&w.join("pki/token-ca.key"), &w.join("pki/token-ca.crt")), &["pull", "push"]);
    // This README's example, with the test's realm and bundle.
    let example = common::readme_toml("# berth.toml: tokens from the company's token server");
    let toml = example
        .replace("https://auth.example.com/token", &realm.url)
        .replace("registry.example.com", SERVICE)
        .replace("auth.example.com", ISSUER)
        .replace("/etc/berth/token-signers.pem", issuer.bundle.to_str().unwrap());
    std::fs::write(w.join("berth.toml"), toml).unwrap();
    let (_berth, addr) =
        common::procs::berth(&w.join("berth-data"), w, &["--config", w.join("berth.toml").to_str().unwrap()]);
    let layout = common::images::busybox_layout(w);
    let image = format!("docker://{addr}/team/app:v1");
    run(Command::new("skopeo").args(["copy", "--dest-tls-verify=false", &layout.reference("single"), &image]));
    let raw = run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", &image]));
    assert!(raw.contains("schemaVersion"), "{raw}");
    let asked = realm.asked.lock().unwrap().clone();
    assert!(
        asked.iter().any(|s| s == "repository:team/app:pull,push"),
        "the challenge's scope reached the realm: {asked:?}"
    );
    // A realm that grants only pulls: the push is refused, the pull still works.
    let readers = Realm::start(Signer::es256_kid(&w.join("pki/token-ca.key"), &w.join("pki/token-ca.crt")), &["pull"]);
    drop(_berth);
    let (_berth, addr) = berth_from_yaml(w, &issuer.yaml(&readers.url));
    let out = Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false", &layout.reference("single"), &format!("docker://{addr}/team/app:v2")])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a pull-only token pushed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("401") || err.to_lowercase().contains("unauthorized") || err.contains("authentication required"),
        "{err}"
    );
    run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{addr}/team/app:v1"),
    ]));
}

/// A token's grant names a repository however the token server spelled it,
/// and a request reaches it however the client spells it: every spelling of
/// Docker Hub's `library/alpine` in a grant lets every spelling of a request
/// through (the upstream here is dead: past access control, the answer is
/// the mirror's error, not a 401), and a grant for another repository lets
/// none through.
#[test]
fn a_grant_covers_its_repository_in_every_spelling() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let issuer = Issuer::new(&w.join("pki"));
    let toml = format!(
        "[auth.token]\nrealm = \"http://127.0.0.1:9/token\"\nservice = \"{SERVICE}\"\nissuer = \"{ISSUER}\"\nrootcertbundle = {:?}\n",
        issuer.bundle
    );
    std::fs::write(w.join("berth.toml"), toml).unwrap();
    let dead = format!("http://127.0.0.1:{}", common::procs::free_port());
    let (_berth, addr) = common::procs::berth(
        &w.join("data"),
        w,
        &["--config", w.join("berth.toml").to_str().unwrap(), "--mirror", &format!("docker.io={dead}")],
    );
    let requests = [
        "/v2/alpine/manifests/1",
        "/v2/library/alpine/manifests/1",
        "/v2/docker.io/library/alpine/manifests/1",
        "/v2/alpine/manifests/1?ns=docker.io",
        "/v2/index.docker.io/library/alpine/manifests/1",
    ];
    for grant in ["alpine", "library/alpine", "docker.io/library/alpine", "index.docker.io/library/alpine"] {
        let token = issuer.es256.grant(&[("repository", grant, &["pull"])]);
        for path in requests {
            let (status, challenge, _) = request(&addr, "GET", path, Some(&token), b"");
            assert_ne!(status, 401, "a grant for {grant} refused {path}: {challenge}");
        }
    }
    let other = issuer.es256.grant(&[("repository", "library/busybox", &["pull"])]);
    for path in requests {
        let (status, challenge, _) = request(&addr, "GET", path, Some(&other), b"");
        assert_eq!(status, 401, "a grant for library/busybox let {path} through");
        assert!(challenge.contains("insufficient_scope"), "{challenge}");
    }
}
