//! The object-storage backend against a real S3 server (SeaweedFS): the
//! backend conformance suite, and `berth check-storage` as a user runs it.
//! (The core, mirror and lifecycle suites run over it too: the `*_s3` test
//! targets.)

mod common;

use std::process::Command;
use std::sync::Arc;

use common::s3::Weed;

#[actix_rt::test]
async fn seaweedfs_passes_the_backend_conformance_suite() {
    let weed = Weed::start();
    weed.bucket("conformance");
    let backend: Arc<dyn berth::store::Backend> =
        Arc::new(berth::store::object::s3(&weed.config("conformance", "some/prefix")).unwrap());
    let outcomes = berth::store::conformance::run(backend.clone(), ".berth/conformance").await;
    berth::store::conformance::assert_all_pass(&outcomes);
    assert!(backend.list("").await.unwrap().iter().all(|n| n != "some"), "the suite removed what it wrote");
}

/// `berth check-storage` with the shipped example (config/examples/s3.toml),
/// pointed at the test's server by environment variables, as a deployment
/// would: the access key from `AWS_ACCESS_KEY_ID`, the secret from its file.
#[test]
fn check_storage_reports_each_check_against_the_configured_bucket() {
    let weed = Weed::start();
    weed.bucket("registry");
    let work = tempfile::tempdir().unwrap();
    let s3 = weed.config("registry", "");
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/s3.toml");
    let check = |secret: &str| {
        let secret_file = work.path().join("secret");
        std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["check-storage", "--config"])
            .arg(&example)
            .env("BERTH_STORAGE__ROOT", work.path().join("state"))
            .env("BERTH_STORAGE__S3__ENDPOINT", &s3.endpoint)
            .env("BERTH_STORAGE__S3__SECRET_KEY_FILE", &secret_file)
            .env("AWS_ACCESS_KEY_ID", &s3.access_key)
            .output()
            .unwrap()
    };
    let ok = check(&s3.secret_key);
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{out}{}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(out.lines().filter(|l| l.starts_with("ok")).count(), 9, "{out}");
    // Wrong credentials: every check fails, one line each, and the command says so.
    let bad = check("not-the-secret");
    let out = String::from_utf8_lossy(&bad.stdout);
    assert!(!bad.status.success());
    assert!(out.lines().all(|l| l.starts_with("FAILED")), "{out}");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("storage checks failed"));
}
