//! Chained mirrors (edge → central → upstreams), all on loopback: two CNCF
//! Distribution 2.8 registries stand for Docker Hub (busybox) and ghcr.io
//! (a tool image); a central berth mirrors both; an edge berth mirrors both
//! hosts through the central one (`chain = true`: each request names its
//! host with `?ns=`, as the README's "Chained mirrors" example). dockerd
//! (`registry-mirrors`, no `ns`), containerd (`hosts.toml`, `?ns=ghcr.io`)
//! and skopeo (a host-prefixed name) pull through the edge; the images
//! land in both mirrors under their own hosts.

mod common;

use std::path::Path;
use std::process::Command;

use common::images::busybox_layout;
use common::procs::{berth, distribution, run, Containerd, Dockerd};

fn mirrored(data: &Path, host: &str, repo: &str, tag: &str) -> bool {
    data.join(format!("docker/registry/v2/repositories/_mirror/{host}/{repo}/_manifests/tags/{tag}/current/link"))
        .is_file()
}

#[test]
fn dockerd_containerd_and_skopeo_pull_through_an_edge_of_a_central_mirror() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let layout = busybox_layout(w);
    let (_hub, hub) = distribution(&w.join("hub-data"), w, "");
    let (_ghcr, ghcr) = distribution(&w.join("ghcr-data"), w, "");
    let seed = |from: &str, to: String| {
        run(Command::new("skopeo").args(["copy", "--all", "--dest-tls-verify=false", from, &to]));
    };
    seed(&layout.reference("multi"), format!("docker://{hub}/library/busybox:latest"));
    seed(&layout.reference("single"), format!("docker://{ghcr}/org/tool:1"));

    let central_cfg = w.join("central.toml");
    std::fs::write(
        &central_cfg,
        format!(
            "[[mirror.upstreams]]\nhost = \"docker.io\"\nurl = \"http://{hub}\"\n\n\
             [[mirror.upstreams]]\nhost = \"ghcr.io\"\nurl = \"http://{ghcr}\"\n"
        ),
    )
    .unwrap();
    let (_central, central) = berth(&w.join("central-data"), w, &["--config", central_cfg.to_str().unwrap()]);
    let example = common::readme_toml("# edge.toml: every pull through the central mirror");
    let edge_cfg = w.join("edge.toml");
    std::fs::write(&edge_cfg, example.replace("central.example:5000", &central)).unwrap();
    let (_edge, edge) = berth(&w.join("edge-data"), w, &["--config", edge_cfg.to_str().unwrap()]);

    // dockerd: registry-mirrors, Docker Hub names, no ns.
    let d = Dockerd::start(
        &w.join("docker"),
        &format!(r#"{{"registry-mirrors": ["http://{edge}"], "insecure-registries": ["{edge}"]}}"#),
    );
    d.docker(&["pull", "busybox:latest"]);
    for data in ["edge-data", "central-data"] {
        assert!(mirrored(&w.join(data), "docker.io", "library/busybox", "latest"), "{data}");
    }
    drop(d);

    // containerd: hosts.toml for ghcr.io pointing at the edge (it sends ?ns=ghcr.io).
    let hosts = w.join("certs.d");
    for host in ["docker.io", "ghcr.io"] {
        std::fs::create_dir_all(hosts.join(host)).unwrap();
        std::fs::write(
            hosts.join(host).join("hosts.toml"),
            format!(
                "server = \"https://{host}\"\n\n[host.\"http://{edge}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
            ),
        )
        .unwrap();
    }
    let c = Containerd::start(&w.join("containerd"));
    let pull = |image: &str| {
        c.ctr(&[
            "images",
            "pull",
            "--all-platforms",
            "--snapshotter",
            "native",
            "--hosts-dir",
            hosts.to_str().unwrap(),
            image,
        ]);
    };
    pull("ghcr.io/org/tool:1");
    pull("docker.io/library/busybox:latest");
    let listed = c.ctr(&["images", "ls"]);
    assert!(listed.contains(&layout.digest("single").to_string()), "{listed}");
    assert!(listed.contains(&layout.digest("multi").to_string()), "{listed}");
    for data in ["edge-data", "central-data"] {
        assert!(mirrored(&w.join(data), "ghcr.io", "org/tool", "1"), "{data}: ghcr.io's name passed along");
        assert!(!w.join(data).join("docker/registry/v2/repositories/_mirror/docker.io/org").exists(), "{data}");
    }
    drop(c);

    // skopeo: a host-prefixed name through the edge, every platform.
    let out = w.join("out");
    run(Command::new("skopeo").args([
        "copy",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{edge}/ghcr.io/org/tool:1"),
        &format!("oci:{}:tool", out.display()),
    ]));
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], layout.digest("single").to_string());
}
