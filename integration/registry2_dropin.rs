//! berth as a drop-in for registry:2: the tutorial's `config.yml` (the
//! registry:2 image's own) with the docker-compose environment of the
//! tutorials (`REGISTRY_AUTH=htpasswd`, `REGISTRY_HTTP_TLS_*`,
//! `REGISTRY_STORAGE_DELETE_ENABLED`, …) starts berth, and docker login,
//! push, pull and delete work against it through a private dockerd.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::certs::Ca;
use common::images::busybox_layout;
use common::procs::{add_user, free_port, run, Dockerd, Proc};

/// The registry:2 image's own `/etc/docker/registry/config.yml`.
const IMAGE_CONFIG: &str = include_str!("../config/registry2.yml");

/// Removes a `/etc/docker/certs.d/<host:port>` directory when dropped.
struct CertsD(PathBuf);

impl Drop for CertsD {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start(w: &Path, env: &[(&str, String)], port: u16) -> Proc {
    let cfg = w.join("config.yml");
    std::fs::write(&cfg, IMAGE_CONFIG).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.args(["serve", "--config"]).arg(&cfg).env("RUST_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut p = Proc::spawn("berth", &mut cmd, w.join(format!("berth-{port}.log")));
    p.wait_until("listening", Duration::from_secs(30), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    p
}

#[test]
fn the_tutorial_compose_setup_works_with_only_the_image_changed() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let ca = Ca::new(&w.join("pki"), "ca");
    let (crt, key) = ca.issue("domain", "server");
    std::fs::create_dir_all(w.join("auth")).unwrap();
    add_user(&w.join("auth/htpasswd"), "testuser", "testpassword");
    let port = free_port();
    let addr = format!("localhost:{port}");
    let env = [
        ("REGISTRY_AUTH", "htpasswd".to_string()),
        ("REGISTRY_AUTH_HTPASSWD_REALM", "Registry Realm".to_string()),
        ("REGISTRY_AUTH_HTPASSWD_PATH", w.join("auth/htpasswd").display().to_string()),
        ("REGISTRY_HTTP_TLS_CERTIFICATE", crt.display().to_string()),
        ("REGISTRY_HTTP_TLS_KEY", key.display().to_string()),
        ("REGISTRY_STORAGE_DELETE_ENABLED", "true".to_string()),
        ("REGISTRY_HTTP_ADDR", format!("127.0.0.1:{port}")),
        ("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", w.join("data").display().to_string()),
    ];
    let mut b = start(w, &env, port);

    // What `berth config check` says each key became, and the one warning at startup.
    let cfg = w.join("config.yml");
    let mut check = Command::new(env!("CARGO_BIN_EXE_berth"));
    check.args(["config", "check", "--config"]).arg(&cfg);
    for (k, v) in &env {
        check.env(k, v);
    }
    let shown = run(&mut check);
    assert!(shown.contains("#   auth.htpasswd.path -> auth.htpasswd.path"), "{shown}");
    assert!(shown.contains("#   log.fields.service -> log.fields.service (on every log line)"), "{shown}");
    assert!(!shown.contains("NOT SUPPORTED"), "the tutorial's file has nothing berth ignores: {shown}");
    assert!(shown.contains("[server.tls]") && shown.contains("enabled = true"), "{shown}");
    let log = b.log.clone();
    b.wait_until("the startup lines", Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("mirroring: off"))
    });
    let started = std::fs::read_to_string(&log).unwrap();
    assert!(!started.contains("does not support"), "no warning: {started}");
    assert!(started.lines().all(|l| l.starts_with("service=\"registry\" ")), "log.fields on every line: {started}");

    // docker login, push, pull, delete through a private dockerd that trusts the CA.
    let certs_d = Path::new("/etc/docker/certs.d").join(&addr);
    std::fs::create_dir_all(&certs_d).unwrap();
    std::fs::copy(ca.cert(), certs_d.join("ca.crt")).unwrap();
    let _certs_d = CertsD(certs_d);
    let layout = busybox_layout(w);
    let archive = w.join("busybox.tar");
    run(Command::new("skopeo").args([
        "copy",
        &layout.reference("single"),
        &format!("docker-archive:{}:seed/busybox:latest", archive.display()),
    ]));
    let d = Dockerd::start(&w.join("docker"), "{}");
    d.docker(&["load", "-i", archive.to_str().unwrap()]);
    let image = format!("{addr}/my-ubuntu:latest");
    d.docker(&["tag", "seed/busybox:latest", &image]);
    let out = d.docker_try(&["push", &image], "");
    assert!(!out.status.success(), "pushed without logging in");
    let out = d.docker_try(&["login", &addr, "-u", "testuser", "--password-stdin"], "testpassword\n");
    assert!(out.status.success(), "docker login: {}", String::from_utf8_lossy(&out.stderr));
    d.docker(&["push", &image]);
    d.docker(&["rmi", &image, "seed/busybox:latest"]);
    d.docker(&["pull", &image]);
    // The header from http.headers is on every response.
    let out = run(Command::new("curl")
        .args(["-sS", "-D", "-", "-o", "/dev/null", "--cacert"])
        .arg(ca.cert())
        .arg(format!("https://{addr}/v2/")));
    assert!(out.to_ascii_lowercase().contains("x-content-type-options: nosniff"), "{out}");
    // Delete (REGISTRY_STORAGE_DELETE_ENABLED): by digest, with the login.
    let digest = run(Command::new("curl")
        .args([
            "-sSf",
            "-I",
            "-u",
            "testuser:testpassword",
            "-H",
            "Accept: application/vnd.docker.distribution.manifest.v2+json",
            "--cacert",
        ])
        .arg(ca.cert())
        .arg(format!("https://{addr}/v2/my-ubuntu/manifests/latest")))
    .lines()
    .find_map(|l| l.to_ascii_lowercase().strip_prefix("docker-content-digest: ").map(|d| d.trim().to_string()))
    .expect("a digest header");
    let status = run(Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "DELETE",
            "-u",
            "testuser:testpassword",
            "--cacert",
        ])
        .arg(ca.cert())
        .arg(format!("https://{addr}/v2/my-ubuntu/manifests/{digest}")));
    assert_eq!(status, "202");
    d.docker(&["rmi", &image]);
    let out = d.docker_try(&["pull", &image], "");
    assert!(!out.status.success(), "pulled a deleted image");
    assert!(w.join("data/docker/registry/v2/repositories/my-ubuntu").is_dir(), "the data is where the variable says");
    drop(d);
    b.stop();
}
