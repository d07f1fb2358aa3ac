//! The signature policy with real clients: Distribution 2.8 is the upstream,
//! holding a signed and an unsigned busybox (a two-platform index each) and
//! the signed one's cosign signature (made here with OpenSSL, pushed as
//! cosign pushes it); berth mirrors it with `enforce`. skopeo, containerd
//! and dockerd pull the signed image and are refused the unsigned one, and no
//! layer of the unsigned one crosses the upstream link.

mod common;

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use common::images::{busybox_layout, Layout};
use common::procs::{berth, distribution, http, require, run, Containerd, Dockerd};
use common::signing::{payload, signature_tag, SigningKey, SIMPLE_SIGNING};
use common::{Client, Digest, OCI_INDEX, OCI_MANIFEST};

/// Pushes cosign's signature of `signed` (in `repo` of the registry at `addr`) made with `key`.
async fn push_signature(addr: &str, repo: &str, signed: &Digest, key: &SigningKey) {
    let c = Client::new(&format!("http://{addr}"));
    let p = payload(&format!("docker.io/{repo}"), signed);
    let payload_digest = c.push_blob_two_step(repo, &p).await;
    c.push_blob_two_step(repo, b"{}").await;
    let sig = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest::sha256_of(b"{}").to_string(), "size": 2},
        "layers": [{"mediaType": SIMPLE_SIGNING, "digest": payload_digest.to_string(), "size": p.len(),
                    "annotations": {"dev.cosignproject.cosign/signature":
                        base64::engine::general_purpose::STANDARD.encode(key.sign(&p))}}]
    }))
    .unwrap();
    let r = c.put_manifest(repo, &signature_tag(signed), OCI_MANIFEST, &sig).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
}

/// Pushes an SBOM artifact whose subject is `subject`, and (Distribution 2.8
/// has no referrers API) the referrers tag schema's index that lists it, as
/// oras and cosign do against such registries.
async fn push_sbom_with_tag_schema(addr: &str, repo: &str, subject: &Digest) -> Digest {
    let c = Client::new(&format!("http://{addr}"));
    let body = b"{\"spdxVersion\":\"SPDX-2.3\"}";
    let layer = c.push_blob_two_step(repo, body).await;
    let empty = c.push_blob_two_step(repo, b"{}").await;
    let subject_size = c.req("HEAD", &format!("/v2/{repo}/manifests/{subject}"), &[("Accept", OCI_INDEX)], "").await;
    let size: u64 = subject_size.header("content-length").unwrap().parse().unwrap();
    let sbom = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/spdx+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.to_string(), "size": 2},
        "layers": [{"mediaType": "application/spdx+json", "digest": layer.to_string(), "size": body.len()}],
        "subject": {"mediaType": OCI_INDEX, "digest": subject.to_string(), "size": size}
    }))
    .unwrap();
    let d = Digest::sha256_of(&sbom);
    assert_eq!(c.put_manifest(repo, &d.to_string(), OCI_MANIFEST, &sbom).await.status, 201);
    let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": d.to_string(), "size": sbom.len(), "artifactType": "application/spdx+json"}]}))
    .unwrap();
    let tag = subject.to_string().replacen(':', "-", 1);
    assert_eq!(c.put_manifest(repo, &tag, OCI_INDEX, &index).await.status, 201);
    d
}

fn blobs_requested(upstream_log: &Path, repo: &str) -> usize {
    let log = std::fs::read_to_string(upstream_log).unwrap();
    log.lines().filter(|l| l.contains(&format!("GET /v2/{repo}/blobs/"))).count()
}

#[actix_rt::test]
async fn skopeo_containerd_and_dockerd_pull_signed_images_and_are_refused_unsigned_ones() {
    for tool in ["skopeo", "docker-registry", "containerd", "dockerd", "openssl"] {
        require(tool);
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let layout = busybox_layout(w);
    let (_upstream, up) = distribution(&w.join("upstream-data"), w, "");
    for repo in ["library/signed", "library/unsigned"] {
        run(Command::new("skopeo").args([
            "copy",
            "--all",
            "--dest-tls-verify=false",
            &layout.reference("multi"),
            &format!("docker://{up}/{repo}:latest"),
        ]));
    }
    let key = SigningKey::new(w, "release", "ec");
    push_signature(&up, "library/signed", &layout.digest("multi"), &key).await;
    let sbom = push_sbom_with_tag_schema(&up, "library/signed", &layout.digest("multi")).await;

    // The README's signature policy example, as shown, with this test's key.
    let example = common::readme_toml("# berth.toml: only signed official images");
    let cfg = w.join("berth.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[mirror.upstreams]]\nhost = \"docker.io\"\nurl = \"http://{up}\"\n\n{}",
            example.replace("/etc/berth/keys/release.pub", &key.public.display().to_string())
        ),
    )
    .unwrap();
    let (b, addr) = berth(&w.join("berth-data"), w, &["--config", cfg.to_str().unwrap()]);

    // The SBOM, listed through berth from the upstream's referrers tag schema.
    let (status, _, body) =
        http("GET", &addr, &format!("/v2/library/signed/referrers/{}", layout.digest("multi"))).unwrap();
    assert_eq!(status, 200);
    let listed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(listed["manifests"][0]["digest"], sbom.to_string(), "{listed}");
    assert_eq!(listed["manifests"][0]["artifactType"], "application/spdx+json");

    // skopeo
    let out = Layout { dir: w.join("pulled") };
    run(Command::new("skopeo").args([
        "copy",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{addr}/library/signed:latest"),
        &out.reference("signed"),
    ]));
    assert_eq!(out.digest("signed"), layout.digest("multi"));
    let refused = Command::new("skopeo")
        .args([
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{addr}/library/unsigned:latest"),
            &out.reference("x"),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("signature policy mirror.verify[0]"),
        "{:?} {stderr}",
        refused.status
    );

    // containerd (hosts.toml, ?ns=docker.io)
    let hosts = w.join("certs.d");
    std::fs::create_dir_all(hosts.join("docker.io")).unwrap();
    std::fs::write(
        hosts.join("docker.io/hosts.toml"),
        format!("server = \"https://registry-1.docker.io\"\n\n[host.\"http://{addr}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"),
    )
    .unwrap();
    let c = Containerd::start(&w.join("containerd"));
    let pull = |image: &str| {
        Command::new("ctr")
            .arg("-a")
            .arg(&c.sock)
            .args(["-n", "berth-test", "images", "pull", "--snapshotter", "native", "--hosts-dir"])
            .arg(&hosts)
            .arg(image)
            .output()
            .unwrap()
    };
    let ok = pull("docker.io/library/signed:latest");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let no = pull("docker.io/library/unsigned:latest");
    assert!(!no.status.success(), "containerd was refused the unsigned image");
    drop(c);

    // dockerd (registry-mirrors; Docker Hub itself is unreachable here)
    let d = Dockerd::start(
        &w.join("docker"),
        &format!(r#"{{"registry-mirrors": ["http://{addr}"], "insecure-registries": ["{addr}"]}}"#),
    );
    d.docker(&["pull", "signed:latest"]);
    let refused = d.docker_try(&["pull", "unsigned:latest"], "");
    assert!(!refused.status.success(), "dockerd was refused the unsigned image");
    drop(d);

    // Nothing of the unsigned image's layers crossed the link; the signed one's did.
    let upstream_log = std::fs::read_dir(w)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name().unwrap().to_string_lossy().starts_with("registry-")
                && p.extension().is_some_and(|e| e == "log")
        })
        .unwrap();
    assert!(blobs_requested(&upstream_log, "library/signed") > 0, "the upstream log records blob GETs");
    assert_eq!(blobs_requested(&upstream_log, "library/unsigned"), 0);
    let (status, _, body) = http("GET", &addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    let metrics = String::from_utf8_lossy(&body);
    assert!(
        metrics
            .contains(r#"berth_signature_decisions_total{outcome="refused",repository="docker.io/library/unsigned"}"#),
        "{metrics}"
    );
    b.stop();
}
