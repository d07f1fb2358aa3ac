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

/// Two replicas' stores over one in-memory bucket; the first (the one whose
/// lifecycle turn deletes data) pauses where the test says.
mod shared_lifecycle {
    use std::sync::Arc;

    use berth::oci::{Digest, RepoName};
    use berth::store::index::Index;
    use berth::store::object::ObjectBackend;
    use berth::store::{layout, Backend, Store};
    use bytes::Bytes;

    use crate::common::faults::PausingBackend;

    struct Replicas {
        deleter: Arc<Store>,
        pausing: Arc<PausingBackend>,
        linker: Arc<Store>,
        bucket: Arc<dyn Backend>,
        _dirs: (tempfile::TempDir, tempfile::TempDir),
    }

    fn replicas() -> Replicas {
        let memory: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let bucket: Arc<dyn Backend> = Arc::new(ObjectBackend::new(memory, "registry"));
        let pausing = PausingBackend::over(bucket.clone());
        let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let index = |d: &tempfile::TempDir| Index::open(&d.path().join("index.redb")).unwrap();
        Replicas {
            deleter: Arc::new(Store::new(pausing.clone(), index(&dirs.0), 100)),
            pausing,
            linker: Arc::new(Store::new(bucket.clone(), index(&dirs.1), 100)),
            bucket,
            _dirs: dirs,
        }
    }

    /// A manifest stored in a mirrored repository and removed again: data
    /// nothing links, which an eviction pass deletes.
    async fn unlinked_manifest(r: &Replicas) -> (Digest, Bytes) {
        let body =
            Bytes::from_static(br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#);
        let d = Digest::sha256_of(&body);
        let repo = layout::mirror_repository("docker.io", "library/old");
        r.linker.put_manifest(&repo, &d, body.clone(), None).await.unwrap();
        r.linker.delete_manifest(&repo, &d).await.unwrap().unwrap();
        (d, body)
    }

    async fn data_present(r: &Replicas, d: &Digest) -> bool {
        r.bucket.stat(&layout::blob_data(d)).await.unwrap().is_some()
    }

    /// The deleter's turn, and its deletion of `d`'s data running until it
    /// is paused after its first `op` on a path containing `part`.
    async fn pause_deletion(
        r: &Replicas,
        d: &Digest,
        op: &'static str,
        part: &str,
    ) -> (
        berth::store::shared::Turn,
        crate::common::faults::Armed,
        actix_rt::task::JoinHandle<berth::store::StoreResult<(usize, u64)>>,
    ) {
        let turn = r.deleter.lifecycle_turn(std::time::Duration::ZERO).await.unwrap().expect("the turn is free");
        let paused = r.pausing.arm(op, part);
        let (deleter, d) = (r.deleter.clone(), d.clone());
        let delete = actix_rt::spawn(async move { deleter.delete_unreferenced_blobs(&[d]).await });
        paused.reached().await;
        (turn, paused, delete)
    }

    /// Waits (bounded) until the linker's link at `path` is in the bucket:
    /// written, while the linker itself waits on the tombstone.
    async fn wait_stored(r: &Replicas, path: &str) {
        for _ in 0..200 {
            if r.bucket.stat(path).await.unwrap().is_some() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the link {path} was never written");
    }

    /// The linker writes its link after the deleter's tombstone and before its
    /// second walk of the links: the walk sees the link and the data stays.
    #[actix_rt::test]
    async fn a_blob_linked_before_the_deleters_recheck_keeps_its_data() {
        let r = replicas();
        let (d, _) = unlinked_manifest(&r).await;
        let (turn, stoned, delete) = pause_deletion(&r, &d, "put", ".berth/doomed/").await;
        let repo: RepoName = "team/app".parse().unwrap();
        let link = {
            let (linker, d, repo) = (r.linker.clone(), d.clone(), repo.clone());
            // Waits on the tombstone until the deleter is done with it.
            actix_rt::spawn(async move { linker.link_existing(&repo, &d).await })
        };
        // The link is written before the deleter goes on.
        wait_stored(&r, &layout::layer_link(&repo, &d)).await;
        stoned.release();
        assert_eq!(delete.await.unwrap().unwrap(), (0, 0), "the new link kept the data");
        assert!(link.await.unwrap().unwrap(), "the linker was told the blob is there");
        assert!(data_present(&r, &d).await);
        assert!(r.bucket.list(".berth/doomed").await.unwrap().is_empty(), "tombstones lifted");
        r.deleter.end_turn(turn).await.unwrap();
    }

    /// The linker writes its link after the deleter's second walk: it finds
    /// the tombstone, waits for it, finds the data gone, and takes its link
    /// back (a mount then falls back to an upload); a manifest put by then
    /// puts its own bytes back.
    #[actix_rt::test]
    async fn a_blob_linked_after_the_recheck_is_told_and_a_manifest_is_put_back() {
        let r = replicas();
        let (d, body) = unlinked_manifest(&r).await;
        for link_kind in ["mount", "manifest"] {
            if !data_present(&r, &d).await {
                r.bucket.put(&layout::blob_data(&d), body.clone()).await.unwrap();
            }
            let (turn, walked, delete) = pause_deletion(&r, &d, "walk", "repositories").await;
            let repo: RepoName = format!("team/{link_kind}").parse().unwrap();
            let link = {
                let (linker, d, repo, body) = (r.linker.clone(), d.clone(), repo.clone(), body.clone());
                actix_rt::spawn(async move {
                    match link_kind {
                        "mount" => linker.link_existing(&repo, &d).await.map(|linked| linked.then_some(())),
                        _ => linker.put_manifest(&repo, &d, body, None).await.map(Some),
                    }
                })
            };
            let path = match link_kind {
                "mount" => layout::layer_link(&repo, &d),
                _ => layout::revision_link(&repo, &d),
            };
            wait_stored(&r, &path).await;
            walked.release();
            assert_eq!(delete.await.unwrap().unwrap().0, 1, "{link_kind}: the walk came first: the data went");
            let linked = link.await.unwrap().unwrap();
            match link_kind {
                "mount" => {
                    assert_eq!(linked, None, "the mount is told the blob is not there");
                    assert!(r.bucket.stat(&path).await.unwrap().is_none(), "and its link is gone");
                    assert!(!data_present(&r, &d).await);
                }
                _ => {
                    assert_eq!(linked, Some(()));
                    assert_eq!(r.bucket.get(&layout::blob_data(&d)).await.unwrap(), Some(body.clone()), "put back");
                    r.linker.delete_manifest(&repo, &d).await.unwrap();
                }
            }
            r.deleter.end_turn(turn).await.unwrap();
        }
    }

    /// One turn at a time over the bucket; uses one replica publishes are in
    /// the snapshot the next turn leaves, and their batch is gone.
    #[actix_rt::test]
    async fn one_replica_at_a_time_takes_a_turn_and_uses_travel_through_the_bucket() {
        let r = replicas();
        let zero = std::time::Duration::ZERO;
        let turn = r.deleter.lifecycle_turn(zero).await.unwrap().expect("the turn is free");
        assert!(r.linker.lifecycle_turn(zero).await.unwrap().is_none(), "the turn is taken");
        r.linker.publish_uses(&[("t\t_mirror/docker.io/library/alpine\t3.20".into(), 1_700_000_000)]).await.unwrap();
        r.deleter.end_turn(turn).await.unwrap();
        let next = r.linker.lifecycle_turn(zero).await.unwrap().expect("an ended turn leaves the lease free");
        assert_eq!(r.bucket.list(".berth/uses").await.unwrap().len(), 1, "the batch waits for this turn");
        r.linker.end_turn(next).await.unwrap();
        assert!(r.bucket.list(".berth/uses").await.unwrap().is_empty(), "merged batches go");
        let snapshot = r.bucket.get(".berth/lifecycle/uses").await.unwrap().unwrap();
        assert_eq!(String::from_utf8_lossy(&snapshot), "1700000000\tt\t_mirror/docker.io/library/alpine\t3.20\n");
    }
}

/// GCS has no server here: the backend is built from a service account key
/// file, and its presigned URL (what `storage.redirect` hands out) is checked
/// against Google's V4 signing algorithm by recomputing the string to sign
/// and verifying the signature with the key's public half.
#[actix_rt::test]
async fn gcs_presigned_urls_are_v4_signatures_by_the_keyfile() {
    use ring::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
    use sha2::Digest as _;
    let work = tempfile::tempdir().unwrap();
    let key = work.path().join("sa.key");
    common::procs::run(
        Command::new("openssl")
            .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
            .arg(&key),
    );
    let spki =
        Command::new("openssl").args(["pkey", "-pubout", "-outform", "DER", "-in"]).arg(&key).output().unwrap().stdout;
    let email = "berth@project.iam.gserviceaccount.com";
    let keyfile = work.path().join("sa.json");
    let sa = serde_json::json!({"type": "service_account", "project_id": "project", "private_key_id": "k1",
        "private_key": std::fs::read_to_string(&key).unwrap(), "client_email": email, "client_id": "1",
        "token_uri": "http://127.0.0.1:9/token"});
    std::fs::write(&keyfile, sa.to_string()).unwrap();
    let cfg =
        berth::config::GcsConfig { bucket: "my-registry".into(), keyfile: Some(keyfile), prefix: "registry".into() };
    let backend = berth::store::object::gcs(&cfg).unwrap();
    use berth::store::Backend;
    let path = "docker/registry/v2/blobs/sha256/ab/abcd/data";
    let url = backend.presigned_get(path, std::time::Duration::from_secs(600)).await.unwrap().unwrap();
    let (base, query) = url.split_once('?').unwrap();
    assert_eq!(base, format!("https://storage.googleapis.com/my-registry/registry/{path}"));
    let mut params: Vec<(String, String)> = query
        .split('&')
        .map(|p| p.split_once('=').unwrap())
        .map(|(k, v)| (k.to_string(), percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned()))
        .collect();
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap();
    assert_eq!(param("X-Goog-Algorithm"), "GOOG4-RSA-SHA256");
    assert_eq!(param("X-Goog-Expires"), "600");
    assert_eq!(param("X-Goog-SignedHeaders"), "host");
    let date = param("X-Goog-Date");
    let scope = format!("{}/auto/storage/goog4_request", &date[..8]);
    assert_eq!(param("X-Goog-Credential"), format!("{email}/{scope}"));
    let signature = hex::decode(param("X-Goog-Signature")).unwrap();
    // Google's V4 canonical request: the query without the signature, sorted, RFC 3986-encoded.
    params.retain(|(k, _)| k != "X-Goog-Signature");
    params.sort();
    const UNRESERVED: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    let canonical_query: Vec<String> =
        params.iter().map(|(k, v)| format!("{}={}", k, percent_encoding::utf8_percent_encode(v, UNRESERVED))).collect();
    let canonical = format!(
        "GET\n/my-registry/registry/{path}\n{}\nhost:storage.googleapis.com\n\nhost\nUNSIGNED-PAYLOAD",
        canonical_query.join("&")
    );
    let to_sign =
        format!("GOOG4-RSA-SHA256\n{date}\n{scope}\n{}", hex::encode(sha2::Sha256::digest(canonical.as_bytes())));
    let info = spki::SubjectPublicKeyInfoRef::try_from(spki.as_slice()).unwrap();
    let public = info.subject_public_key.as_bytes().unwrap();
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public)
        .verify(to_sign.as_bytes(), &signature)
        .expect("the URL's signature is the keyfile's over Google's V4 string to sign");
}
