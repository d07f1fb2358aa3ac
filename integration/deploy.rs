//! The Docker image and docker-compose.yml, built and started for real on a
//! private dockerd. Base images cannot be pulled here, so `debian:bookworm-slim`
//! is assembled offline (`docker import` of a root filesystem with the
//! binary's shared libraries and a static busybox for the build stage's
//! `RUN`), and the Dockerfile's build stage is replaced by one that copies the
//! berth binary in; the runtime stage is built exactly as written. The compose
//! stack then mirrors a Distribution upstream, a pull goes through it, and the
//! volume keeps the content across a restart.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::procs::{free_port, require, run, upstream_with_busybox, Dockerd};

fn copy_with_parents(file: &Path, root: &Path) {
    let dest = root.join(file.strip_prefix("/").unwrap());
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::copy(file, &dest).unwrap();
}

/// A root filesystem with the shared libraries `binary` needs, and busybox as `/bin/sh` and `mkdir`.
fn base_rootfs(binary: &Path, root: &Path) {
    let ldd = run(Command::new("ldd").arg(binary));
    for lib in ldd.split_whitespace().filter(|w| w.starts_with('/')) {
        copy_with_parents(Path::new(lib), root);
    }
    copy_with_parents(Path::new("/bin/busybox"), root);
    for applet in ["sh", "mkdir"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::create_dir_all(root.join("tmp")).unwrap();
}

/// The repository's Dockerfile with its build stage replaced (no Rust image offline).
fn offline_dockerfile(dockerfile: &str) -> String {
    let runtime = dockerfile.find("\nFROM debian:bookworm-slim\n").expect("the runtime stage");
    assert!(dockerfile[..runtime].contains("RUN mkdir -p /out/var/lib/registry"), "the build stage changed shape");
    format!(
        "FROM debian:bookworm-slim AS build\nCOPY berth /src/target/release/berth\nRUN mkdir -p /out/var/lib/registry\n{}",
        &dockerfile[runtime..]
    )
}

/// docker-compose.yml as shipped, on the host's network (the test dockerd has no
/// bridge) and mirroring `upstream`, with a quick health check.
fn test_compose(compose: &str, port: u16, upstream: &str) -> String {
    let edits = [
        ("    ports:\n      - \"5000:5000\"\n", "    network_mode: host\n    healthcheck:\n      interval: 1s\n".to_string()),
        (
            "      REGISTRY_STORAGE_DELETE_ENABLED: \"true\"\n",
            format!(
                "      REGISTRY_STORAGE_DELETE_ENABLED: \"true\"\n      REGISTRY_HTTP_ADDR: 127.0.0.1:{port}\n      REGISTRY_PROXY_REMOTEURL: http://{upstream}\n"
            ),
        ),
    ];
    let mut out = compose.to_string();
    for (from, to) in edits {
        assert!(out.contains(from), "docker-compose.yml changed shape: {from:?}");
        out = out.replace(from, &to);
    }
    out
}

#[test]
fn the_image_builds_and_the_compose_stack_serves_a_mirror_with_a_persistent_volume() {
    require("docker-compose");
    require("busybox");
    require("skopeo");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_berth"));

    // An upstream holding busybox.
    let (upstream_proc, upstream) = upstream_with_busybox(w);

    let d = Dockerd::start(&w.join("docker"), "{}");
    // The offline base image, then the image from the Dockerfile.
    let rootfs = w.join("rootfs");
    base_rootfs(&binary, &rootfs);
    let tar = w.join("rootfs.tar");
    run(Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg("."));
    d.docker(&["import", tar.to_str().unwrap(), "debian:bookworm-slim"]);
    let ctx = w.join("context");
    std::fs::create_dir_all(ctx.join("config")).unwrap();
    // Stripped: the image then holds a few MB per layer, not a debug build's hundreds.
    run(Command::new("strip").arg("-o").arg(ctx.join("berth")).arg(&binary));
    for f in ["registry2.yml", "berth.toml"] {
        std::fs::copy(repo.join("config").join(f), ctx.join("config").join(f)).unwrap();
    }
    let dockerfile = std::fs::read_to_string(repo.join("Dockerfile")).unwrap();
    std::fs::write(ctx.join("Dockerfile"), offline_dockerfile(&dockerfile)).unwrap();
    let client_config = d.proc.log.with_file_name("client-config");
    let build = Command::new("docker")
        .env("DOCKER_CONFIG", &client_config)
        .env("DOCKER_BUILDKIT", "0")
        .args(["-H", &d.host, "build", "-t", "berth", ctx.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "docker build: {}{}",
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );
    assert_eq!(d.docker(&["inspect", "--format", "{{.Config.User}}", "berth"]).trim(), "65532:65532");

    // The compose stack, as shipped but for the network, the port and the upstream.
    let project = w.join("project");
    std::fs::create_dir_all(project.join("config")).unwrap();
    std::fs::copy(repo.join("config/registry2.yml"), project.join("config/registry2.yml")).unwrap();
    let port = free_port();
    let compose = std::fs::read_to_string(repo.join("docker-compose.yml")).unwrap();
    std::fs::write(project.join("docker-compose.yml"), test_compose(&compose, port, &upstream)).unwrap();
    let compose_cmd = |args: &[&str]| {
        let mut c = Command::new("docker-compose");
        c.current_dir(&project)
            .env("DOCKER_HOST", &d.host)
            .env("DOCKER_CONFIG", &client_config)
            .args(["-p", "berthtest"])
            .args(args);
        c
    };
    run(&mut compose_cmd(&["up", "-d", "--no-build"]));
    let container = run(&mut compose_cmd(&["ps", "-q", "berth"])).trim().to_string();
    let mut healthy = String::new();
    for _ in 0..600 {
        healthy = d.docker(&["inspect", "--format", "{{.State.Health.Status}}", &container]).trim().to_string();
        if healthy == "healthy" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(healthy, "healthy", "{}", run(&mut compose_cmd(&["logs"])));

    // A pull through the mirror, then again after a restart with the upstream gone: from the volume.
    let image = format!("127.0.0.1:{port}/library/busybox:latest");
    d.docker(&["pull", &image]);
    d.docker(&["rmi", &image]);
    drop(upstream_proc);
    run(&mut compose_cmd(&["restart"]));
    for _ in 0..600 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    d.docker(&["pull", &image]);
    run(&mut compose_cmd(&["down", "-v"]));
    drop(d);
}
