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

/// A registry:2 `config.yml` with every key issue 21 named (and the usual
/// others a deployment carries): `berth config check` accounts for each
/// without one "NOT SUPPORTED", and the server it starts does what they say:
/// the prefix, token auth, notifications (filtered, with references), the
/// health file, the headers, and read-only mode switched on while it runs.
#[test]
fn a_config_yml_with_every_key_starts_clean_and_each_works() {
    use common::tokens::{push_blob, request, Issuer};
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let issuer = Issuer::new(&w.join("pki"));
    let recv = common::receiver::Receiver::start();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let data = w.join("data");
    let down = w.join("maintenance");
    let yaml = format!(
        r#"version: 0.1
log:
  level: info
  formatter: text
  fields:
    service: registry
    environment: test
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {data}
    maxthreads: 100
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: true
      age: 168h
      interval: 24h
      dryrun: false
    readonly:
      enabled: false
  redirect:
    disable: false
  tag:
    concurrencylimit: 8
http:
  addr: {addr}
  prefix: /registry/
  secret: a-secret
  relativeurls: false
  draintimeout: 5s
  headers:
    X-Content-Type-Options: [nosniff]
  debug:
    addr: 127.0.0.1:5001
    prometheus:
      enabled: true
      path: /metrics
  http2:
    disabled: false
{auth}notifications:
  events:
    includereferences: true
  endpoints:
    - name: deploy-bot
      disabled: false
      url: {hook}
      headers:
        Authorization: [Bearer hook-token]
      timeout: 2s
      threshold: 3
      backoff: 200ms
      ignoredmediatypes:
        - application/octet-stream
      ignore:
        actions:
          - pull
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
  file:
    - file: {down}
      interval: 10s
validation:
  manifests:
    urls:
      allow:
        - ^https?://([^/]+\.)*example\.com/
redis:
  addr: localhost:6379
reporting:
  bugsnag:
    apikey: none
compatibility:
  schema1:
    enabled: false
proxy:
  remoteurl: http://127.0.0.1:9
  exec:
    command: /bin/false
    lifetime: 1h
  ttl: 168h
"#,
        data = data.display(),
        auth = issuer.yaml("https://auth.example.com/token"),
        hook = recv.url("/events"),
        down = down.display(),
    );
    let cfg = w.join("config.yml");
    std::fs::write(&cfg, &yaml).unwrap();
    let check =
        Command::new(env!("CARGO_BIN_EXE_berth")).args(["config", "check", "--config"]).arg(&cfg).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
    assert!(check.status.success(), "{said}");
    assert!(!said.contains("NOT SUPPORTED") && !said.contains("does not support"), "{said}");
    for key in [
        "notifications.endpoints",
        "auth.token.rootcertbundle",
        "http.prefix",
        "proxy.exec.command",
        "storage.redirect.disable",
    ] {
        assert!(said.contains(key), "config check does not account for {key}:\n{said}");
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.args(["serve", "--config"]).arg(&cfg).env("RUST_LOG", "info");
    let mut p = Proc::spawn("berth", &mut cmd, w.join("berth.log"));
    p.wait_until("listening", Duration::from_secs(30), || std::net::TcpStream::connect(&addr).is_ok());
    let log = std::fs::read_to_string(w.join("berth.log")).unwrap();
    assert!(!log.contains("WARN"), "a warning at startup:\n{log}");

    // The prefix, token auth and the headers.
    let (status, challenge, _) = request(&addr, "GET", "/registry/v2/", None, b"");
    assert_eq!(status, 401);
    assert!(challenge.starts_with("Bearer realm=\"https://auth.example.com/token\""), "{challenge}");
    assert_eq!(request(&addr, "GET", "/v2/", None, b"").0, 404, "the API answers only under the prefix");
    let (_, headers, _) = common::procs::http("GET", &addr, "/registry/v2/").unwrap();
    assert!(headers.iter().any(|(k, v)| k == "x-content-type-options" && v == "nosniff"), "{headers:?}");
    // A push by token: the manifest's event arrives (blobs and pulls are ignored), with its references.
    let push = issuer.es256.grant(&[("repository", "team/app", &["pull", "push"])]);
    let (config, layer) = (b"{}".to_vec(), b"a layer".to_vec());
    for blob in [&config, &layer] {
        assert_eq!(push_blob(&addr, "/registry", "team/app", &push, blob), 201);
    }
    let manifest = common::image_manifest(
        &common::Digest::sha256_of(&config),
        config.len(),
        &common::Digest::sha256_of(&layer),
        layer.len(),
    );
    assert_eq!(request(&addr, "PUT", "/registry/v2/team/app/manifests/v1", Some(&push), &manifest).0, 201);
    assert_eq!(request(&addr, "GET", "/registry/v2/team/app/manifests/v1", Some(&push), b"").0, 200);
    let events = recv.wait("/events", "the manifest push's event", |e| e.iter().any(|e| e["action"] == "push"));
    assert!(
        events.iter().all(|e| e["action"] == "push" && e["target"]["mediaType"] != "application/octet-stream"),
        "{events:#?}"
    );
    assert_eq!(events[0]["target"]["references"].as_array().map(Vec::len), Some(2), "{events:#?}");
    assert_eq!(events[0]["actor"]["name"], "alice");
    assert!(recv.authorizations().iter().all(|a| a == "Bearer hook-token"));
    // The health file takes the instance out of rotation.
    assert_eq!(common::procs::http("GET", &addr, "/readyz").unwrap().0, 200);
    std::fs::write(&down, "").unwrap();
    assert_eq!(common::procs::http("GET", &addr, "/readyz").unwrap().0, 503);
    std::fs::remove_file(&down).unwrap();
    // Read-only, switched on while serving: a push answers 405 as registry:2's.
    run(Command::new(env!("CARGO_BIN_EXE_berth")).args(["readonly", "on", "--data"]).arg(&data));
    let (status, _, _) = request(&addr, "PUT", "/registry/v2/team/app/manifests/v2", Some(&push), &manifest);
    assert_eq!(status, 405);
    p.stop();
}
