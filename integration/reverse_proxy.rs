//! berth behind nginx, as the registry:2 tutorials deploy it: nginx ends TLS
//! and passes `X-Forwarded-Proto` / `X-Forwarded-Host`; the token realm names
//! the address the client used, uploads stream through (no request
//! buffering), and skopeo pushes and pulls with a login through the proxy.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::certs::Ca;
use common::images::busybox_layout;
use common::procs::{add_user, berth, free_port, require, run, Proc};

/// The README's nginx block (its first ```nginx block), as a user copies it.
fn readme_nginx_block() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme.find("```nginx\n").expect("the README's nginx block") + "```nginx\n".len();
    let len = readme[start..].find("```").unwrap();
    readme[start..start + len].to_string()
}

/// nginx ending TLS on `port`, with the README's block for `berth` at `upstream`.
fn nginx_conf(w: &Path, port: u16, upstream: &str, crt: &Path, key: &Path) -> String {
    let w = w.display();
    format!(
        "daemon off;
master_process off;
worker_processes 1;
pid {w}/nginx.pid;
error_log {w}/nginx-error.log;
events {{}}
http {{
  access_log {w}/nginx-access.log;
  client_body_temp_path {w}/nginx-body;
  proxy_temp_path {w}/nginx-proxy;
  fastcgi_temp_path {w}/nginx-fastcgi;
  uwsgi_temp_path {w}/nginx-uwsgi;
  scgi_temp_path {w}/nginx-scgi;
  server {{
    listen 127.0.0.1:{port} ssl;
    server_name localhost;
    ssl_certificate {crt};
    ssl_certificate_key {key};
{block}  }}
}}
",
        crt = crt.display(),
        key = key.display(),
        block = readme_nginx_block().replace("127.0.0.1:5000", upstream).replace('\n', "\n    ")
    )
}

#[test]
fn behind_nginx_the_realm_and_uploads_follow_the_client_s_address() {
    require("nginx");
    require("skopeo");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let ca = Ca::new(&w.join("pki"), "ca");
    let (crt, key) = ca.issue("proxy", "server");
    let users = w.join("htpasswd");
    add_user(&users, "alice", "wonderland");
    let cfg = w.join("berth.toml");
    let toml = format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n[auth.htpasswd]\npath = \"{}\"\n\
         [[auth.rules]]\nrepositories = [\"public/*\"]\npull = [\"anonymous\"]\npush = [\"*\"]\ndelete = [\"*\"]\n\
         [metrics.teams]\nlab = [\"127.0.0.2\"]\n[mirror]\nenabled = false\n",
        users.display()
    );
    std::fs::write(&cfg, toml).unwrap();
    let (b, berth_addr) = berth(&w.join("data"), w, &["--config", cfg.to_str().unwrap()]);
    let port = free_port();
    let conf = w.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(w, port, &berth_addr, &crt, &key)).unwrap();
    let mut nginx =
        Proc::spawn("nginx", Command::new("nginx").arg("-c").arg(&conf).arg("-p").arg(w), w.join("nginx.log"));
    nginx.wait_until("nginx listening", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let addr = format!("localhost:{port}");

    // The challenge names the address the client used, over https, not berth's own.
    let head = run(Command::new("curl")
        .args(["-sS", "-D", "-", "-o", "/dev/null", "--cacert"])
        .arg(ca.cert())
        .arg(format!("https://{addr}/v2/")));
    let expected = format!(r#"www-authenticate: Bearer realm="https://{addr}/v2/token",service="{addr}""#);
    assert!(head.to_ascii_lowercase().contains(&expected.to_ascii_lowercase()), "{head}");

    // skopeo logs in through the realm, pushes (chunked uploads, relative Locations) and pulls back.
    let certs = w.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(ca.cert(), certs.join("ca.crt")).unwrap();
    let layout = busybox_layout(w);
    let dest = format!("docker://{addr}/team/busybox:1");
    let certs = certs.to_str().unwrap();
    let push = |dest: &str| {
        run(Command::new("skopeo").args([
            "copy",
            "--dest-cert-dir",
            certs,
            "--dest-creds",
            "alice:wonderland",
            &layout.reference("single"),
            dest,
        ]))
    };
    push(&dest);
    let pulled = w.join("pulled");
    run(Command::new("skopeo").args([
        "copy",
        "--src-cert-dir",
        certs,
        "--src-creds",
        "alice:wonderland",
        &dest,
        &format!("oci:{}:x", pulled.display()),
    ]));
    let raw = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--cert-dir",
        certs,
        "--creds",
        "alice:wonderland",
        &dest,
    ]));
    assert!(raw.contains("schemaVersion"), "{raw}");
    // Without credentials, the pushed image is private through the proxy too.
    let out = Command::new("skopeo").args(["inspect", "--raw", "--cert-dir", certs, &dest]).output().unwrap();
    assert!(!out.status.success());

    // The client address is the one nginx forwards (berth trusts nginx's), not nginx's own.
    let public = format!("docker://{addr}/public/busybox:1");
    push(&public);
    let status = run(Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--interface", "127.0.0.2", "--cacert"])
        .arg(ca.cert())
        .args(["-H", "Accept: application/vnd.oci.image.manifest.v1+json"])
        .arg(format!("https://{addr}/v2/public/busybox/manifests/1")));
    assert_eq!(status, "200");
    let (_, _, metrics) = common::procs::http("GET", &berth_addr, "/metrics").unwrap();
    let metrics = String::from_utf8(metrics).unwrap();
    let lab = metrics.lines().find(|l| l.starts_with(r#"berth_client_served_bytes_total{client="lab"}"#));
    assert!(lab.is_some_and(|l| !l.ends_with(" 0")), "{metrics}");
    nginx.stop();
    b.stop();
}
