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

/// Copies the shared libraries `binary` needs into `root`.
fn libraries(binary: &Path, root: &Path) {
    let ldd = run(Command::new("ldd").arg(binary));
    for lib in ldd.split_whitespace().filter(|w| w.starts_with('/')) {
        copy_with_parents(Path::new(lib), root);
    }
}

/// Busybox in `root`, as each of `applets` in `/bin`, and a `/tmp`.
fn busybox(root: &Path, applets: &[&str]) {
    copy_with_parents(Path::new("/bin/busybox"), root);
    for applet in applets {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::create_dir_all(root.join("tmp")).unwrap();
}

/// Imports `root` as image `name` into `d`, with Dockerfile-style `changes`.
fn import(d: &Dockerd, root: &Path, name: &str, changes: &[&str]) {
    let tar = root.with_extension("tar");
    run(Command::new("tar").arg("-C").arg(root).arg("-cf").arg(&tar).arg("."));
    let mut args = vec!["import"];
    for c in changes {
        args.extend(["--change", c]);
    }
    args.extend([tar.to_str().unwrap(), name]);
    d.docker(&args);
}

/// The repository's Dockerfile with its build stage replaced (no Rust image offline).
fn offline_dockerfile(dockerfile: &str) -> String {
    let runtime = dockerfile.find("\nFROM debian:bookworm-slim\n").expect("the runtime stage");
    assert!(dockerfile[..runtime].contains("RUN mkdir -p /out/var/lib/registry"), "the build stage changed shape");
    format!(
        "FROM debian:bookworm-slim AS build\nCOPY berth /src/target/release/berth\nCOPY ca-certificates.crt /etc/ssl/certs/\nRUN mkdir -p /out/var/lib/registry\n{}",
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

/// The offline base image, then the image from the repository's Dockerfile,
/// tagged `berth`; returns the docker client's private config directory.
fn build_berth_image(d: &Dockerd, w: &Path) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_berth"));
    // The base: the binary's shared libraries, and busybox for the build stage's `RUN mkdir`.
    let rootfs = w.join("rootfs");
    libraries(&binary, &rootfs);
    busybox(&rootfs, &["sh", "mkdir"]);
    import(d, &rootfs, "debian:bookworm-slim", &[]);
    let ctx = w.join("context");
    std::fs::create_dir_all(ctx.join("config")).unwrap();
    // Stripped: the image then holds a few MB per layer, not a debug build's hundreds.
    run(Command::new("strip").arg("-o").arg(ctx.join("berth")).arg(&binary));
    std::fs::copy("/etc/ssl/certs/ca-certificates.crt", ctx.join("ca-certificates.crt")).unwrap();
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
    client_config
}

/// `docker-compose` on `project` against the test's dockerd, as project `name`.
fn compose_command<'a>(
    project: &'a Path,
    d: &'a Dockerd,
    client_config: &'a Path,
    name: &'a str,
) -> impl Fn(&[&str]) -> Command + 'a {
    move |args| {
        let mut c = Command::new("docker-compose");
        c.current_dir(project)
            .env("DOCKER_HOST", &d.host)
            .env("DOCKER_CONFIG", client_config)
            .args(["-p", name])
            .args(args);
        c
    }
}

#[test]
fn the_image_builds_and_the_compose_stack_serves_a_mirror_with_a_persistent_volume() {
    require("docker-compose");
    require("busybox");
    require("skopeo");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));

    // An upstream holding busybox.
    let (upstream_proc, upstream) = upstream_with_busybox(w);

    let d = Dockerd::start(&w.join("docker"), "{}");
    let client_config = build_berth_image(&d, w);
    assert_eq!(d.docker(&["inspect", "--format", "{{.Config.User}}", "berth"]).trim(), "65532:65532");

    // The compose stack, as shipped but for the network, the port and the upstream.
    let project = w.join("project");
    std::fs::create_dir_all(project.join("config")).unwrap();
    std::fs::copy(repo.join("config/registry2.yml"), project.join("config/registry2.yml")).unwrap();
    let port = free_port();
    let compose = std::fs::read_to_string(repo.join("docker-compose.yml")).unwrap();
    std::fs::write(project.join("docker-compose.yml"), test_compose(&compose, port, &upstream)).unwrap();
    let compose_cmd = compose_command(&project, &d, &client_config, "berthtest");
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
    drop(compose_cmd);
    drop(d);
}

/// The offline stand-ins for the example's public images: SeaweedFS's static
/// `weed` (from the test venv) with busybox for the bucket job's shell, and
/// the host's nginx with its libraries.
fn import_example_images(d: &Dockerd, w: &Path) {
    let seaweed = w.join("seaweedfs-rootfs");
    std::fs::create_dir_all(seaweed.join("usr/bin")).unwrap();
    std::fs::copy(common::s3::weed_binary(), seaweed.join("usr/bin/weed")).unwrap();
    busybox(&seaweed, &["sh", "grep", "sleep"]);
    import(d, &seaweed, "chrislusf/seaweedfs:4.48", &[]);
    let nginx = w.join("nginx-rootfs");
    let binary = Path::new("/usr/sbin/nginx");
    copy_with_parents(binary, &nginx);
    libraries(binary, &nginx);
    for dir in ["etc/nginx", "var/log/nginx", "var/lib/nginx", "tmp", "run"] {
        std::fs::create_dir_all(nginx.join(dir)).unwrap();
    }
    std::fs::write(nginx.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n").unwrap();
    std::fs::write(nginx.join("etc/group"), "root:x:0:\nnobody:x:65534:\nnogroup:x:65534:\n").unwrap();
    import(d, &nginx, "nginx:1.27-alpine", &[r#"CMD ["/usr/sbin/nginx", "-g", "daemon off;"]"#]);
}

/// deploy/replicas as shipped, on the host's network: every service on
/// 127.0.0.1, the replicas on ports of their own, nginx on `port`.
fn replicas_test_project(project: &Path, port: u16, replicas: [u16; 2]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/replicas");
    let mut compose = std::fs::read_to_string(dir.join("docker-compose.yml")).unwrap();
    let mut edits: Vec<(String, String)> = vec![
        ("    ports:\n      - \"5000:5000\"\n".into(), String::new()),
        ("\"server\", ".into(), "\"server\", \"-ip=127.0.0.1\", \"-ip.bind=127.0.0.1\", \"-master.telemetry=false\", \"-s3.port.iceberg=0\", \"-s3.port.lance=0\", ".into()),
        ("s3:9333".into(), "127.0.0.1:9333".into()),
        ("http://s3:8333".into(), "http://127.0.0.1:8333".into()),
    ];
    for service in ["s3", "bucket", "berth1", "berth2", "nginx"] {
        edits.push((format!("\n  {service}:\n"), format!("\n  {service}:\n    network_mode: host\n")));
    }
    for (i, p) in replicas.iter().enumerate() {
        let n = i + 1;
        edits.push((
            format!("    environment: *storage\n    volumes:\n      - berth{n}-state"),
            format!("    environment:\n      <<: *storage\n      REGISTRY_HTTP_ADDR: 127.0.0.1:{p}\n    volumes:\n      - berth{n}-state"),
        ));
    }
    for (from, to) in &edits {
        assert!(compose.contains(from.as_str()), "deploy/replicas/docker-compose.yml changed shape: {from:?}");
        compose = compose.replace(from.as_str(), to);
    }
    let mut nginx = std::fs::read_to_string(dir.join("nginx.conf")).unwrap();
    for (from, to) in [
        ("server berth1:5000;".to_string(), format!("server 127.0.0.1:{};", replicas[0])),
        ("server berth2:5000;".to_string(), format!("server 127.0.0.1:{};", replicas[1])),
        ("listen 5000;".to_string(), format!("listen 127.0.0.1:{port};")),
    ] {
        assert!(nginx.contains(&from), "deploy/replicas/nginx.conf changed shape: {from:?}");
        nginx = nginx.replace(&from, &to);
    }
    std::fs::create_dir_all(project).unwrap();
    std::fs::write(project.join("docker-compose.yml"), compose).unwrap();
    std::fs::write(project.join("nginx.conf"), nginx).unwrap();
    std::fs::copy(dir.join("s3.json"), project.join("s3.json")).unwrap();
}

/// `GET url` with curl: (status, body); status 0 when nothing answered.
fn curl(url: &str) -> (u16, String) {
    let out = Command::new("curl").args(["-s", "-w", "\n%{http_code}", url]).output().unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    let (body, status) = out.trim_end().rsplit_once('\n').unwrap_or(("", out.trim()));
    (status.parse().unwrap_or(0), body.to_string())
}

/// Requests a replica answered, by its own metrics.
fn requests_answered(port: u16) -> f64 {
    let (_, metrics) = curl(&format!("http://127.0.0.1:{port}/metrics"));
    metrics
        .lines()
        .filter(|l| l.starts_with("berth_http_requests_total{") && !l.contains("endpoint=\"metrics\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// deploy/replicas: two berth replicas over one SeaweedFS bucket behind
/// nginx. An image pushed with skopeo and pulled by dockerd through nginx
/// lands in the bucket, both replicas serve part of the traffic, and each
/// serves the image whole.
#[test]
fn the_replicas_example_serves_one_registry_from_two_replicas_over_one_bucket() {
    require("docker-compose");
    require("busybox");
    require("skopeo");
    require("nginx");
    require("curl");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let d = Dockerd::start(&w.join("docker"), "{}");
    let client_config = build_berth_image(&d, w);
    import_example_images(&d, w);
    let (port, replicas) = (free_port(), [free_port(), free_port()]);
    let project = w.join("replicas");
    replicas_test_project(&project, port, replicas);
    let compose_cmd = compose_command(&project, &d, &client_config, "berthreplicas");
    run(&mut compose_cmd(&["up", "-d", "--no-build"]));
    let registry = format!("127.0.0.1:{port}");
    let mut answered = (0, String::new());
    for _ in 0..1200 {
        answered = curl(&format!("http://{registry}/v2/"));
        if answered.0 == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(answered.0, 200, "{}", run(&mut compose_cmd(&["logs"])));

    // A push through nginx (its requests spread over both replicas), then a pull by dockerd.
    let layout = common::images::busybox_layout(w);
    let image = format!("{registry}/team/busybox:1");
    run(Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false", &layout.reference("single")])
        .arg(format!("docker://{image}")));
    d.docker(&["pull", &image]);
    // Both replicas took part, and each serves the whole image from the bucket.
    for p in replicas {
        assert!(requests_answered(p) > 0.0, "replica on {p} answered nothing: {}", run(&mut compose_cmd(&["logs"])));
        let direct = format!("docker://127.0.0.1:{p}/team/busybox:1");
        let inspected = run(Command::new("skopeo").args(["inspect", "--tls-verify=false", "--raw", &direct]));
        assert!(inspected.contains("\"layers\""), "{inspected}");
        run(Command::new("skopeo")
            .args(["copy", "--src-tls-verify=false", &direct])
            .arg(format!("oci:{}:copy{p}", w.join("copies").display())));
    }
    run(&mut compose_cmd(&["down", "-v"]));
    drop(compose_cmd);
    drop(d);
}
