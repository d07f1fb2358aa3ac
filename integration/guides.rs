//! The README's guides, run as written: every ```sh block that starts with
//! `# guide: <name>`, in README order, after `integration/guides/prelude.sh`
//! (a private mount namespace with scratch copies of /etc/docker,
//! /etc/containerd, /etc/containers and /etc/hosts, private daemons, a
//! `systemctl` for them). `myhost:5000` becomes berth's address; Docker Hub
//! is a local Distribution holding busybox.

mod common;

use std::path::Path;
use std::process::Command;

use common::procs::{add_user, berth, require, upstream_with_busybox};

/// The guide blocks of `readme`: (name, script), in order.
fn guides(readme: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "```sh" {
            continue;
        }
        let block: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
        if let Some(name) = block.first().and_then(|l| l.strip_prefix("# guide: ")) {
            out.push((name.trim().to_string(), block[1..].join("\n")));
        }
    }
    out
}

#[test]
fn the_readme_guides_run_as_written() {
    for tool in ["dockerd", "containerd", "ctr", "podman", "skopeo", "docker-registry", "unshare", "curl"] {
        require(tool);
    }
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let guides = guides(&readme);
    let names: Vec<&str> = guides.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["docker", "push", "containerd", "containerd-push", "podman", "metrics"]);

    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (_upstream, up) = upstream_with_busybox(w);
    // Docker Hub's busybox is multi-platform: the layout's two-platform index.
    let layout = common::images::Layout { dir: w.join("layout") };
    common::procs::run(Command::new("skopeo").args([
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &layout.reference("multi"),
        &format!("docker://{up}/library/busybox:latest"),
    ]));
    let users = w.join("htpasswd");
    add_user(&users, "alice", "wonderland");
    let cfg = w.join("berth.toml");
    std::fs::write(&cfg, format!("[auth.htpasswd]\npath = \"{}\"\n", users.display())).unwrap();
    let (b, addr) =
        berth(&w.join("data"), w, &["--config", cfg.to_str().unwrap(), "--mirror", &format!("docker.io=http://{up}")]);
    let port = addr.rsplit(':').next().unwrap();

    let mut script = include_str!("guides/prelude.sh").to_string();
    for (name, block) in &guides {
        script.push_str(&format!(
            "\necho '== guide: {name}'\n{}\n",
            block.replace("myhost:5000", &format!("myhost:{port}"))
        ));
    }
    let path = w.join("guides.sh");
    std::fs::write(&path, &script).unwrap();
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "bash"])
        .arg(&path)
        .env("W", w)
        .env("PASSWORD", "wonderland")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the guides failed:\n{stdout}\n{stderr}");
    // What the guides did, seen from berth's side.
    for name in &names {
        assert!(stdout.contains(&format!("== guide: {name}")), "{stdout}");
    }
    assert!(stdout.contains("berth_served_bytes_total{content=\"mirrored\",kind=\"blob\"}"), "{stdout}");
    assert!(w.join("data/docker/registry/v2/repositories/team/busybox/_manifests/tags/1").is_dir(), "pushed");
    let ctr_tag = w.join("data/docker/registry/v2/repositories/team/busybox/_manifests/tags/ctr/current/link");
    let pushed = std::fs::read_to_string(ctr_tag).expect("ctr pushed team/busybox:ctr");
    assert_eq!(pushed, layout.digest("multi").to_string(), "the whole index, every platform");
    assert!(
        w.join("data/docker/registry/v2/repositories/_mirror/docker.io/library/busybox/_manifests/tags/latest")
            .is_dir(),
        "mirrored"
    );
    // Nothing of this machine's configuration changed.
    assert!(!Path::new("/etc/containerd/certs.d/docker.io/hosts.toml").exists());
    assert!(!Path::new("/etc/containers/registries.conf.d/berth.conf").exists());
    b.stop();
}
