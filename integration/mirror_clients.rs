//! The mirror with real clients, all on loopback: CNCF Distribution 2.8
//! (Debian's `docker-registry`, htpasswd-protected) is the upstream seeded
//! with a busybox image; skopeo, containerd (`--hosts-dir`, which sends
//! `?ns=docker.io`) and dockerd (`registry-mirrors`, which sends no `ns`) pull
//! `docker.io/library/busybox` through berth. The real Docker Hub is
//! unreachable here, so success can only come through berth.

mod common;

use std::path::Path;
use std::process::Command;

use common::images::{busybox_layout, Layout};
use common::procs::{berth, distribution, http, require, run, Containerd, Dockerd, Proc};
use common::Digest;

const USER: &str = "berth";
const PASSWORD: &str = "upstream-secret";

/// Distribution 2.8 behind htpasswd, seeded with `library/busybox:latest`
/// (a two-platform index) from the offline-built layout.
fn seeded_upstream(work: &Path, layout: &Layout) -> (Proc, String) {
    let htpasswd = work.join("htpasswd");
    std::fs::write(&htpasswd, format!("{USER}:{}\n", bcrypt::hash(PASSWORD, 5).unwrap())).unwrap();
    let auth = format!("auth:\n  htpasswd:\n    realm: upstream\n    path: {}\n", htpasswd.display());
    let (proc, addr) = distribution(&work.join("upstream-data"), work, &auth);
    require("skopeo");
    run(Command::new("skopeo").args([
        "copy",
        "--all",
        "--dest-tls-verify=false",
        "--dest-creds",
        &format!("{USER}:{PASSWORD}"),
        &layout.reference("multi"),
        &format!("docker://{addr}/library/busybox:latest"),
    ]));
    (proc, addr)
}

/// berth mirroring docker.io from `upstream` with the upstream's credentials.
fn mirroring_berth(work: &Path, upstream: &str) -> (Proc, String) {
    let cfg = work.join("berth.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[mirror.upstreams]]\nhost = \"docker.io\"\nurl = \"http://{upstream}\"\nusername = \"{USER}\"\npassword = \"{PASSWORD}\"\n"
        ),
    )
    .unwrap();
    berth(&work.join("berth-data"), work, &["--config", cfg.to_str().unwrap()])
}

fn link_exists(data: &Path, repo: &str, d: &str) -> bool {
    let hex = d.trim_start_matches("sha256:");
    data.join(format!("docker/registry/v2/repositories/{repo}/_layers/sha256/{hex}/link")).is_file()
}

#[test]
fn skopeo_pulls_through_berth_from_an_htpasswd_protected_distribution() {
    let work = tempfile::tempdir().unwrap();
    let layout = busybox_layout(work.path());
    let (_upstream, up_addr) = seeded_upstream(work.path(), &layout);
    let (b, addr) = mirroring_berth(work.path(), &up_addr);

    let out = Layout { dir: work.path().join("pulled") };
    for name in ["library/busybox", "busybox", "docker.io/library/busybox"] {
        run(Command::new("skopeo").args([
            "copy",
            "--all",
            "--src-tls-verify=false",
            &format!("docker://{addr}/{name}:latest"),
            &out.reference("latest"),
        ]));
        assert_eq!(out.digest("latest"), layout.digest("multi"), "{name}: digest preserved through the mirror");
    }
    let (status, _, body) = http("GET", &addr, "/v2/busybox/tags/list").unwrap();
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("latest"));
    b.stop();
}

#[test]
fn containerd_pulls_docker_hub_images_through_a_hosts_toml_mirror() {
    let work = tempfile::tempdir().unwrap();
    let layout = busybox_layout(work.path());
    let (_upstream, up_addr) = seeded_upstream(work.path(), &layout);
    let (b, addr) = mirroring_berth(work.path(), &up_addr);

    let hosts = work.path().join("certs.d");
    std::fs::create_dir_all(hosts.join("docker.io")).unwrap();
    std::fs::write(
        hosts.join("docker.io/hosts.toml"),
        format!("server = \"https://registry-1.docker.io\"\n\n[host.\"http://{addr}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"),
    )
    .unwrap();
    let c = Containerd::start(&work.path().join("containerd"));
    c.ctr(&[
        "images",
        "pull",
        "--snapshotter",
        "native",
        "--hosts-dir",
        hosts.to_str().unwrap(),
        "docker.io/library/busybox:latest",
    ]);
    let listed = c.ctr(&["images", "ls"]);
    assert!(listed.contains(&layout.digest("multi").to_string()), "{listed}");
    // containerd named the upstream with ?ns=docker.io; berth stored it under that host, in the mirror's part of the tree.
    let data = work.path().join("berth-data");
    let amd64 = layout.digest("single").to_string();
    let rev = data.join(format!(
        "docker/registry/v2/repositories/_mirror/docker.io/library/busybox/_manifests/revisions/sha256/{}/link",
        amd64.trim_start_matches("sha256:")
    ));
    assert!(rev.is_file(), "the amd64 manifest was mirrored");
    drop(c);
    b.stop();
}

#[test]
fn dockerd_pulls_through_registry_mirrors_and_a_pushed_image_shares_its_layers() {
    let work = tempfile::tempdir().unwrap();
    let layout = busybox_layout(work.path());
    // An upstream whose busybox was pushed by docker itself, as Docker Hub's
    // images are: docker's layer compression is deterministic, so a layer it
    // pushes again has the same digest and can be shared.
    let (_upstream, up_addr) = distribution(&work.path().join("upstream-data"), work.path(), "");
    let archive = work.path().join("busybox.tar");
    run(Command::new("skopeo").args([
        "copy",
        &layout.reference("single"),
        &format!("docker-archive:{}:seed/busybox:latest", archive.display()),
    ]));
    let (b, addr) =
        berth(&work.path().join("berth-data"), work.path(), &["--mirror", &format!("docker.io=http://{up_addr}")]);
    let d = Dockerd::start(
        &work.path().join("docker"),
        &format!(r#"{{"registry-mirrors": ["http://{addr}"], "insecure-registries": ["{addr}", "{up_addr}"]}}"#),
    );
    d.docker(&["load", "-i", archive.to_str().unwrap()]);
    d.docker(&["tag", "seed/busybox:latest", &format!("{up_addr}/library/busybox:latest")]);
    d.docker(&["push", &format!("{up_addr}/library/busybox:latest")]);
    d.docker(&["rmi", "seed/busybox:latest", &format!("{up_addr}/library/busybox:latest")]);

    // Docker Hub is unreachable: this pull can only succeed through berth.
    d.docker(&["pull", "busybox:latest"]);
    let mirrored_tag = work.path().join(
        "berth-data/docker/registry/v2/repositories/_mirror/docker.io/library/busybox/_manifests/tags/latest/current/link",
    );
    assert!(mirrored_tag.is_file(), "pulled through the mirror");

    // Push the image as a private one: its layers are the mirrored ones.
    let private = format!("{addr}/team/mybusybox:1");
    d.docker(&["tag", "busybox:latest", &private]);
    d.docker(&["push", &private]);
    let (status, _, body) = http("GET", &addr, "/v2/team/mybusybox/manifests/1").unwrap();
    assert_eq!(status, 200);
    let manifest: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let data = work.path().join("berth-data");
    let layers = manifest["layers"].as_array().unwrap();
    assert!(!layers.is_empty());
    for l in layers {
        let l = l["digest"].as_str().unwrap();
        assert!(link_exists(&data, "team/mybusybox", l), "pushed image links {l}");
        assert!(link_exists(&data, "_mirror/docker.io/library/busybox", l), "mirrored image links the same {l}");
        let parsed: Digest = l.parse().unwrap();
        let blob = data.join(format!("docker/registry/v2/blobs/sha256/{}/{}/data", &parsed.hex()[..2], parsed.hex()));
        assert!(blob.is_file(), "one blob file serves both");
    }
    // `docker search` finds both, pushed and mirrored, from the catalog.
    let out = d.docker(&["search", "--no-trunc", "--format", "{{.Name}}", &format!("{addr}/busybox")]);
    let names: Vec<&str> = out.lines().collect();
    assert_eq!(names, ["docker.io/library/busybox", "team/mybusybox"], "{out}");
    drop(d);
    b.stop();
}
