//! Air-gapped bundles (README: "Air-gapped bundles"): `berth export` from a
//! berth in front of two Distribution 2.8 registries (Docker Hub's busybox, a
//! two-platform index with its cosign signature and an SBOM; a ghcr.io tool),
//! `berth import` into a berth whose upstreams do not exist, and real
//! clients pulling through it by their upstream names.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::images::busybox_layout;
use common::procs::{berth, distribution, http, require, run, Containerd, Dockerd};
use common::signing::{push_sbom_with_tag_schema, push_signature, signature_tag, SigningKey};

fn berth_cmd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth")).args(args).output().unwrap()
}

fn said(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn ok(args: &[&str]) -> String {
    let out = berth_cmd(args);
    assert!(out.status.success(), "berth {args:?}: {}", said(&out));
    said(&out)
}

fn index_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path.join("index.json")).unwrap()).unwrap()
}

fn blob_files(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir.join("blobs/sha256")).unwrap().map(|e| e.unwrap().path()).collect()
}

#[actix_rt::test]
async fn an_exported_bundle_imported_offline_serves_dockerd_and_containerd_every_platform() {
    for tool in ["skopeo", "umoci", "docker-registry", "containerd", "dockerd", "openssl"] {
        require(tool);
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let layout = busybox_layout(w);
    layout.add_busybox("v2", "amd64", "v2");
    let (hub_proc, hub) = distribution(&w.join("hub-data"), w, "");
    let (ghcr_proc, ghcr) = distribution(&w.join("ghcr-data"), w, "");
    let copy = |from: String, to: String| {
        run(Command::new("skopeo").args(["copy", "--all", "--dest-tls-verify=false", &from, &to]));
    };
    copy(layout.reference("multi"), format!("docker://{hub}/library/busybox:latest"));
    copy(layout.reference("v2"), format!("docker://{hub}/library/busybox:v2"));
    copy(layout.reference("single"), format!("docker://{ghcr}/org/tool:1"));
    let multi = layout.digest("multi");
    let key = SigningKey::new(w, "release", "ec");
    push_signature(&hub, "library/busybox", &multi, &key).await;
    let sbom = push_sbom_with_tag_schema(&hub, "library/busybox", &multi).await;

    // The connected berth, with a pin.
    let online_cfg = w.join("online.toml");
    std::fs::write(
        &online_cfg,
        format!(
            "[mirror]\npin = [\"docker.io/library/busybox:latest\"]\n\n\
             [[mirror.upstreams]]\nhost = \"docker.io\"\nurl = \"http://{hub}\"\n\n\
             [[mirror.upstreams]]\nhost = \"ghcr.io\"\nurl = \"http://{ghcr}\"\n"
        ),
    )
    .unwrap();
    let (online_proc, online) = berth(&w.join("online-data"), w, &["--config", online_cfg.to_str().unwrap()]);
    let server = format!("http://{online}");
    let bundle = w.join("bundle.tar");
    let text =
        ok(&["export", "-o", bundle.to_str().unwrap(), "--server", &server, "busybox:latest", "ghcr.io/org/tool:1"]);
    assert!(text.contains("exported 2 images"), "{text}");
    assert!(!w.join("bundle.tar.partial").exists(), "the staging directory is gone");

    // A plain OCI layout to skopeo: the tool image, and busybox's every platform.
    let check = w.join("check");
    run(Command::new("skopeo").args([
        "copy",
        "--all",
        &format!("oci-archive:{}:docker.io/library/busybox:latest", bundle.display()),
        &format!("oci:{}:busybox", check.display()),
    ]));
    let copied = index_json(&check);
    assert_eq!(copied["manifests"][0]["digest"], multi.to_string());

    // The same, made again from pins and an upstream: the same images.
    let by_rules = w.join("by-rules");
    let args = ["export", "-o", by_rules.to_str().unwrap(), "--server", &server, "--pinned", "--upstream", "ghcr.io"];
    ok(&[&args[..], &["--config", online_cfg.to_str().unwrap()]].concat());
    let named: Vec<String> = index_json(&by_rules)["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["annotations"]["io.berth.image"].as_str().map(String::from))
        .collect();
    for image in ["docker.io/library/busybox:latest", "ghcr.io/org/tool:1"] {
        assert!(named.iter().any(|n| n == image), "{image} in {named:?}");
    }
    assert!(
        named.iter().any(|n| n.ends_with(&signature_tag(&multi))),
        "cosign's signature tag travels with the image: {named:?}"
    );

    // A second OCI tool reads the layout's names and unpacks an image from it.
    let listed = run(Command::new("umoci").args(["ls", "--layout", by_rules.to_str().unwrap()]));
    assert!(listed.lines().any(|l| l.trim() == "ghcr.io/org/tool:1"), "{listed}");
    let unpacked = w.join("unpacked");
    run(Command::new("umoci").args([
        "raw",
        "unpack",
        "--rootless",
        "--image",
        &format!("{}:ghcr.io/org/tool:1", by_rules.display()),
        unpacked.to_str().unwrap(),
    ]));
    assert!(std::fs::read_dir(&unpacked).unwrap().next().is_some(), "the image's files came out");

    // Resumable: a blob deleted and another corrupted are fetched again; the rest kept.
    let mut files = blob_files(&by_rules);
    files.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    let (small, big) = (files[0].clone(), files.last().unwrap().clone());
    std::fs::remove_file(&small).unwrap();
    std::fs::write(&big, b"not the blob").unwrap();
    std::fs::remove_file(by_rules.join("index.json")).unwrap();
    let text = ok(&[&args[..], &["--config", online_cfg.to_str().unwrap()]].concat());
    assert!(text.contains("resumed") && !text.contains(" 0 resumed"), "{text}");
    run(Command::new("skopeo").args([
        "copy",
        "--all",
        &format!("oci:{}:docker.io/library/busybox:latest", by_rules.display()),
        &format!("oci:{}:again", check.display()),
    ]));

    // The air-gapped berth: its upstreams do not answer.
    let offline_cfg = w.join("offline.toml");
    std::fs::write(
        &offline_cfg,
        "[[mirror.upstreams]]\nhost = \"docker.io\"\nurl = \"http://127.0.0.1:9\"\n\n\
         [[mirror.upstreams]]\nhost = \"ghcr.io\"\nurl = \"http://127.0.0.1:9\"\n",
    )
    .unwrap();
    drop((online_proc, hub_proc, ghcr_proc));
    let offline_data = w.join("offline-data");
    let (_offline_proc, offline) = berth(&offline_data, w, &["--config", offline_cfg.to_str().unwrap()]);
    let text = ok(&["import", "--data", offline_data.to_str().unwrap(), bundle.to_str().unwrap()]);
    assert!(text.contains("imported 2 images"), "{text}");
    // The signature and the SBOM came along.
    let (status, _, _) =
        http("GET", &offline, &format!("/v2/library/busybox/manifests/{}", signature_tag(&multi))).unwrap();
    assert_eq!(status, 200, "the signature tag");
    let (status, _, body) = http("GET", &offline, &format!("/v2/library/busybox/referrers/{multi}")).unwrap();
    assert_eq!(status, 200);
    let listed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(listed["manifests"].as_array().unwrap().iter().any(|m| m["digest"] == sbom.to_string()), "{listed}");

    let d = Dockerd::start(
        &w.join("docker"),
        &format!(r#"{{"registry-mirrors": ["http://{offline}"], "insecure-registries": ["{offline}"]}}"#),
    );
    d.docker(&["pull", "busybox:latest"]);
    let hosts = w.join("certs.d");
    for host in ["docker.io", "ghcr.io"] {
        std::fs::create_dir_all(hosts.join(host)).unwrap();
        std::fs::write(
            hosts.join(host).join("hosts.toml"),
            format!("server = \"https://{host}\"\n\n[host.\"http://{offline}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"),
        )
        .unwrap();
    }
    let c = Containerd::start(&w.join("containerd"));
    let pull = |image: &str| {
        let h = hosts.to_str().unwrap();
        c.ctr(&["images", "pull", "--all-platforms", "--snapshotter", "native", "--hosts-dir", h, image]);
    };
    pull("docker.io/library/busybox:latest");
    pull("ghcr.io/org/tool:1");
    let listed = c.ctr(&["images", "ls"]);
    assert!(listed.contains(&multi.to_string()) && listed.contains(&layout.digest("single").to_string()), "{listed}");

    // Week two, incremental: the same list and busybox:v2; only what v2 adds is written,
    // and the bundle needs week one imported.
    let week2 = w.join("week2");
    let (_online2, online2) = {
        // The connected side again (its upstreams back).
        let (hub2, hub2_addr) = distribution(&w.join("hub-data"), w, "");
        let cfg = std::fs::read_to_string(&online_cfg).unwrap().replace(&hub, &hub2_addr);
        std::fs::write(&online_cfg, cfg).unwrap();
        let (b, addr) = berth(&w.join("online-data"), w, &["--config", online_cfg.to_str().unwrap()]);
        ((b, hub2), addr)
    };
    let text = ok(&[
        "export",
        "-o",
        week2.to_str().unwrap(),
        "--server",
        &format!("http://{online2}"),
        "--since",
        bundle.to_str().unwrap(),
        "busybox:latest",
        "busybox:v2",
    ]);
    assert!(text.contains("left to the earlier bundle") && !text.contains(" 0 left"), "{text}");
    let fresh = w.join("fresh-data");
    let out = berth_cmd(&["import", "--data", fresh.to_str().unwrap(), week2.to_str().unwrap()]);
    assert!(!out.status.success(), "an incremental bundle without its base");
    assert!(said(&out).contains("import the bundle this one was made --since first"), "{}", said(&out));
    ok(&["import", "--data", offline_data.to_str().unwrap(), week2.to_str().unwrap()]);
    // A corrupt blob is refused, and nothing of its image becomes visible.
    let mut files = blob_files(&by_rules);
    files.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    let layer = files.last().unwrap();
    let mut bytes = std::fs::read(layer).unwrap();
    bytes[100] ^= 1;
    std::fs::write(layer, &bytes).unwrap();
    let corrupt = w.join("corrupt-data");
    let out = berth_cmd(&["import", "--data", corrupt.to_str().unwrap(), by_rules.to_str().unwrap()]);
    assert!(!out.status.success() && said(&out).contains("is corrupt"), "{}", said(&out));
    let tags = corrupt.join("docker/registry/v2/repositories/_mirror/docker.io/library/busybox/_manifests/tags");
    assert!(!tags.exists(), "no tag of an image whose blob did not verify");
    d.docker(&["pull", "busybox:v2"]);
    drop(c);
    drop(d);
}

#[actix_rt::test]
async fn a_bundle_sent_over_the_network_needs_push_rights_where_it_lands() {
    let up = common::upstream::FakeUpstream::start(common::upstream::Auth::Anonymous).await;
    let image = up.add_image("library/app", "1", &[common::mirroring::layer(1 << 20, 3)]);
    let up_url = up.url.clone();
    let result = actix_rt::task::spawn_blocking(move || {
        let work = tempfile::tempdir().unwrap();
        let w = work.path();
        let online_cfg = w.join("online.toml");
        std::fs::write(&online_cfg, format!("[[mirror.upstreams]]\nhost = \"docker.io\"\nurl = \"{up_url}\"\n"))
            .unwrap();
        let (_online_proc, online) = berth(&w.join("online-data"), w, &["--config", online_cfg.to_str().unwrap()]);
        let bundle = w.join("bundle.tar");
        ok(&["export", "-o", bundle.to_str().unwrap(), "--server", &format!("http://{online}"), "app:1"]);
        let bundle = bundle.to_str().unwrap();

        // Without authentication on, a server takes no bundle from the network.
        let out = berth_cmd(&["import", "--server", &format!("http://{online}"), bundle]);
        assert!(!out.status.success() && said(&out).contains("needs authentication on"), "{}", said(&out));

        // A berth with users: ops may push into Docker Hub's official names, dev may not (the rule
        // spelled with Docker Hub's alias; the bundle names docker.io/library/app: one repository).
        let users = w.join("htpasswd");
        common::procs::add_user(&users, "ops", "ops-password");
        common::procs::add_user(&users, "dev", "dev-password");
        let cfg = w.join("site.toml");
        std::fs::write(
            &cfg,
            format!(
                "[auth.htpasswd]\npath = \"{}\"\n\n[[auth.rules]]\nrepositories = [\"index.docker.io/library/*\"]\n\
                 pull = [\"anonymous\"]\npush = [\"ops\"]\n\n\
                 [[mirror.upstreams]]\nhost = \"docker.io\"\nurl = \"http://127.0.0.1:9\"\n",
                users.display()
            ),
        )
        .unwrap();
        let (_site_proc, site) = berth(&w.join("site-data"), w, &["--config", cfg.to_str().unwrap()]);
        let server = format!("http://{site}");
        let manifest = |site: &str| {
            let (status, _, body) = http("GET", site, "/v2/app/manifests/1").unwrap();
            (status, body)
        };
        let out = berth_cmd(&["import", "--server", &server, bundle]);
        assert!(!out.status.success() && said(&out).contains("401"), "anonymous: {}", said(&out));
        let out = berth_cmd(&["import", "--server", &server, "--user", "dev:dev-password", bundle]);
        assert!(
            !out.status.success() && said(&out).contains("dev may not push to docker.io/library/app"),
            "{}",
            said(&out)
        );
        assert!(manifest(&site).0 >= 500, "nothing of a refused import is served");
        // In read-only mode a user's import is refused as a push is.
        let data = w.join("site-data");
        ok(&["readonly", "on", "--data", data.to_str().unwrap()]);
        let out = berth_cmd(&["import", "--server", &server, "--user", "ops:ops-password", bundle]);
        assert!(!out.status.success() && said(&out).contains("read-only"), "{}", said(&out));
        ok(&["readonly", "off", "--data", data.to_str().unwrap()]);
        let text = ok(&["import", "--server", &server, "--user", "ops:ops-password", bundle]);
        assert!(text.contains("imported 1 images"), "{text}");
        // A directory bundle goes too (packed into one tar on the way).
        let dir = w.join("bundle-dir");
        ok(&["export", "-o", dir.to_str().unwrap(), "--server", &format!("http://{online}"), "app:1"]);
        let text = ok(&["import", "--server", &server, "--user", "ops:ops-password", dir.to_str().unwrap()]);
        assert!(text.contains("imported 1 images") && text.contains("2 already here"), "{text}");
        let leftovers: Vec<_> = std::fs::read_dir(w.join("site-data/.berth/tmp")).unwrap().collect();
        assert!(leftovers.is_empty(), "the staged bundle is gone: {leftovers:?}");
        (manifest(&site), work)
    })
    .await
    .unwrap();
    assert_eq!(result.0, (200, image.manifest.to_vec()), "the imported image is served with no upstream");
    up.stop().await;
}
