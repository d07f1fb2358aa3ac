//! The object-storage backend against a real Azure Blob Storage server
//! (Azurite): the backend conformance suite, presigned (SAS) URLs, and
//! `berth check-storage` with the README's example. (The core, mirror and
//! lifecycle suites run over it too: the `*_azure` test targets.)

mod common;

use std::process::Command;
use std::sync::Arc;

use common::azure::Azurite;

#[actix_rt::test]
async fn azurite_passes_the_backend_conformance_suite() {
    let azurite = Azurite::start();
    azurite.container("conformance");
    let backend: Arc<dyn berth::store::Backend> =
        Arc::new(berth::store::object::azure(&azurite.config("conformance", "some/prefix")).unwrap());
    let outcomes = berth::store::conformance::run(backend.clone(), ".berth/conformance").await;
    berth::store::conformance::assert_all_pass(&outcomes);
    assert!(backend.list("").await.unwrap().iter().all(|n| n != "some"), "the suite removed what it wrote");
    // A presigned URL (a SAS) reads the object without the key.
    backend.put("probe", bytes::Bytes::from_static(b"signed")).await.unwrap();
    let url = backend.presigned_get("probe", std::time::Duration::from_secs(60)).await.unwrap().unwrap();
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let (status, _, body) = common::procs::http("GET", host, path).unwrap();
    assert_eq!((status, body.as_slice()), (200, &b"signed"[..]), "{url}");
    backend.delete("probe").await.unwrap();
}

#[test]
fn check_storage_passes_with_the_readmes_azure_example() {
    let azurite = Azurite::start();
    azurite.container("registry");
    let work = tempfile::tempdir().unwrap();
    let example = common::readme_toml("# berth.toml: the registry in an Azure Blob Storage container");
    let toml = example
        .replace("https://myaccount.blob.core.windows.net", &azurite.endpoint)
        .replace("\"myaccount\"", &format!("{:?}", common::azure::ACCOUNT))
        .replace("/run/secrets/azure-account-key", work.path().join("key").to_str().unwrap());
    std::fs::write(work.path().join("key"), format!("{}\n", common::azure::KEY)).unwrap();
    std::fs::write(work.path().join("berth.toml"), toml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["check-storage", "--config"])
        .arg(work.path().join("berth.toml"))
        .env("BERTH_STORAGE__ROOT", work.path().join("state"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.lines().filter(|l| l.starts_with("ok")).count(), 9, "{stdout}");
}

/// Two replicas over one Azurite container, as a load balancer spreads
/// clients: an image pushed half through each pulls whole through either,
/// one blob pushed through both at once is stored once, and cold pulls of
/// one mirrored image spread over both fetch each blob from the upstream once.
#[actix_rt::test]
async fn two_replicas_over_one_container_behave_as_one_registry() {
    use common::mirroring::{layer, pull};
    use common::upstream::{Auth, FakeUpstream};
    use common::{image_manifest, Client, Digest};
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let img = up.add_image("library/shared", "1", &[layer(3 * 1024 * 1024, 7)]);
    let url = up.url.clone();
    let (azurite, work, a, b) = actix_rt::task::spawn_blocking(move || {
        let azurite = Azurite::start();
        azurite.container("reg");
        let work = tempfile::tempdir().unwrap();
        let cfg = azurite.config("reg", "registry");
        let start = |name: &str| {
            common::procs::berth_with(
                &work.path().join(name),
                work.path(),
                &["--mirror", &format!("docker.io={url}")],
                |cmd| {
                    cmd.env("BERTH_STORAGE__AZURE__ACCOUNT_NAME", &cfg.account_name)
                        .env("BERTH_STORAGE__AZURE__ACCOUNT_KEY", &cfg.account_key)
                        .env("BERTH_STORAGE__AZURE__CONTAINER", &cfg.container)
                        .env("BERTH_STORAGE__AZURE__ENDPOINT", &cfg.endpoint)
                        .env("BERTH_STORAGE__AZURE__PREFIX", &cfg.prefix)
                        .env("BERTH_CACHE__TAG_TTL", "1s");
                },
            )
        };
        let (a, b) = (start("a"), start("b"));
        (azurite, work, a, b)
    })
    .await
    .unwrap();
    let (ca, cb) = (Client::new(&format!("http://{}", a.1)), Client::new(&format!("http://{}", b.1)));
    // Half through each.
    let content = vec![42u8; 2 * 1024 * 1024];
    let config = ca.push_blob("team/app", b"{}").await;
    let layer_d = cb.push_blob("team/app", &content).await;
    let m = image_manifest(&config, 2, &layer_d, content.len());
    assert_eq!(ca.put_manifest("team/app", "v1", common::OCI_MANIFEST, &m).await.status, 201);
    let got = cb.get("/v2/team/app/manifests/v1").await;
    assert_eq!((got.status, got.body.as_ref()), (200, m.as_slice()));
    assert_eq!(cb.get(&format!("/v2/team/app/blobs/{layer_d}")).await.body.as_ref(), content.as_slice());
    // One 12 MiB blob (two multipart parts) through both at once.
    let big: Vec<u8> = (0..12 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let (da, db) = futures::join!(ca.push_blob("team/big", &big), cb.push_blob("team/big", &big));
    assert_eq!(da, db);
    assert_eq!(Digest::sha256_of(&ca.get(&format!("/v2/team/big/blobs/{da}")).await.body), da);
    // Cold pulls of one mirrored image over both replicas.
    futures::join!(pull(&ca, "shared", "1", &img), pull(&cb, "shared", "1", &img), pull(&ca, "shared", "1", &img));
    pull(&cb, "shared", "1", &img).await;
    let fetched = up.count("GET", &format!("/blobs/{}", img.layers[0]));
    assert!(fetched <= 2, "the layer was fetched {fetched} times for four pulls over two replicas");
    drop((a, b));
    up.stop().await;
    drop((azurite, work));
}
