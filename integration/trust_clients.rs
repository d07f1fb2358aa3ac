//! The signature policy with real clients: Distribution 2.8 is the upstream,
//! holding a signed and an unsigned busybox (a two-platform index each) and
//! the signed one's cosign signature (made here with OpenSSL, pushed as
//! cosign pushes it); berth mirrors it with `enforce`. skopeo, containerd
//! and dockerd pull the signed image and are refused the unsigned one, and no
//! layer of the unsigned one crosses the upstream link.

mod common;

use std::path::Path;
use std::process::Command;

use common::images::{busybox_layout, Layout};
use common::procs::{berth, distribution, http, require, run, Containerd, Dockerd};
use common::signing::{push_sbom_with_tag_schema, push_signature, SigningKey};

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
