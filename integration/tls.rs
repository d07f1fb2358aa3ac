//! Native TLS with real clients on loopback: skopeo with `--cert-dir`,
//! curl over HTTP/2 and HTTP/1.1, dockerd with `/etc/docker/certs.d`, a
//! certificate swapped on disk and picked up without a restart, a broken
//! swap that keeps the old one, and client certificates (mTLS).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::certs::Ca;
use common::images::busybox_layout;
use common::procs::{free_port, require, run, Dockerd, Proc};

/// berth serving HTTPS on localhost with `extra` TOML under `[server.tls]`.
fn tls_berth(work: &Path, cert: &Path, key: &Path, extra: &str) -> (Proc, String) {
    let port = free_port();
    let cfg = work.join(format!("berth-{port}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[server.tls]\ncertificate = \"{}\"\nkey = \"{}\"\n{extra}\n[mirror]\nenabled = false\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let addr = format!("localhost:{port}");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--config"])
        .arg(&cfg)
        .arg("--data")
        .arg(work.join(format!("data-{port}")))
        .env("RUST_LOG", "info");
    let mut p = Proc::spawn("berth", &mut cmd, work.join(format!("berth-{port}.log")));
    p.wait_until("listening", Duration::from_secs(30), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    (p, addr)
}

/// `curl` of `https://addr/v2/`, trusting `ca`; returns (HTTP version, status) or the failure.
fn curl(addr: &str, ca: &Path, extra: &[&str]) -> Result<(String, u16), String> {
    require("curl");
    let out: Output = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(extra)
        .arg(format!("https://{addr}/v2/"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)));
    }
    let (version, code) = text.split_once(' ').unwrap();
    Ok((version.to_string(), code.parse().unwrap()))
}

/// A directory as skopeo's `--cert-dir` and docker's `certs.d/<host:port>` want it.
fn cert_dir(dir: &Path, ca: &Ca, client: Option<(&Path, &Path)>) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(ca.cert(), dir.join("ca.crt")).unwrap();
    if let Some((crt, key)) = client {
        std::fs::copy(crt, dir.join("client.cert")).unwrap();
        std::fs::copy(key, dir.join("client.key")).unwrap();
    }
    dir.to_path_buf()
}

/// Replaces `dest` by `src` at once (as renewals do), with a new modification time.
fn swap(src: &Path, dest: &Path) {
    let tmp = dest.with_extension("swap");
    std::fs::copy(src, &tmp).unwrap();
    std::fs::rename(&tmp, dest).unwrap();
}

/// Removes a `/etc/docker/certs.d/<host:port>` directory when dropped.
struct CertsD(PathBuf);

impl Drop for CertsD {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn https_with_http2_skopeo_docker_and_a_certificate_swapped_on_disk() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (ca, other_ca) = (Ca::new(&w.join("pki"), "ca"), Ca::new(&w.join("pki"), "other-ca"));
    let (crt, key) = ca.issue("server", "server");
    // berth reads the files it is configured with; the test swaps what they hold.
    let (live_crt, live_key) = (w.join("live.crt"), w.join("live.key"));
    std::fs::copy(&crt, &live_crt).unwrap();
    std::fs::copy(&key, &live_key).unwrap();
    let (mut b, addr) = tls_berth(w, &live_crt, &live_key, "");

    // HTTP/2 by ALPN, and HTTP/1.1.
    assert_eq!(curl(&addr, &ca.cert(), &["--http2"]).unwrap(), ("2".to_string(), 200));
    assert_eq!(curl(&addr, &ca.cert(), &["--http1.1"]).unwrap(), ("1.1".to_string(), 200));
    assert!(curl(&addr, &other_ca.cert(), &[]).is_err(), "a client that does not trust the CA refuses it");

    // skopeo pushes and pulls with --cert-dir; without it, verification fails.
    let layout = busybox_layout(w);
    require("skopeo");
    let certs = cert_dir(&w.join("skopeo-certs"), &ca, None);
    let dest = format!("docker://{addr}/team/busybox:1");
    let src = layout.reference("single");
    let copy =
        |extra: &[&str]| Command::new("skopeo").arg("copy").args(extra).args([src.as_str(), &dest]).output().unwrap();
    assert!(!copy(&[]).status.success(), "pushed without trusting the CA");
    let out = copy(&["--dest-cert-dir", certs.to_str().unwrap()]);
    assert!(out.status.success(), "skopeo --dest-cert-dir: {}", String::from_utf8_lossy(&out.stderr));
    run(Command::new("skopeo").args(["inspect", "--raw", "--cert-dir", certs.to_str().unwrap(), &dest]));

    // dockerd trusts a registry's CA from /etc/docker/certs.d/<host:port>/ca.crt.
    let _certs_d = CertsD(cert_dir(&Path::new("/etc/docker/certs.d").join(&addr), &ca, None));
    let d = Dockerd::start(&w.join("docker"), "{}");
    d.docker(&["pull", &format!("{addr}/team/busybox:1")]);
    drop(d);

    // A renewed certificate (from another CA, to tell them apart) is served without a restart.
    let (crt2, key2) = other_ca.issue("server2", "server");
    swap(&key2, &live_key);
    swap(&crt2, &live_crt);
    b.wait_until("serving the new certificate", Duration::from_secs(30), || curl(&addr, &other_ca.cert(), &[]).is_ok());
    assert!(curl(&addr, &ca.cert(), &[]).is_err(), "the old certificate is no longer served");

    // A swap that does not load (a key that is not the certificate's) keeps the served one.
    swap(&key, &live_key);
    let log = b.log.clone();
    b.wait_until("refusing the mismatched pair", Duration::from_secs(30), || {
        std::fs::read_to_string(&log).unwrap().contains("do not load")
    });
    assert_eq!(curl(&addr, &other_ca.cert(), &["--http2"]).unwrap(), ("2".to_string(), 200));

    // `berth gc` reaches the running server over TLS.
    let data = w.join(format!("data-{}", addr.rsplit(':').next().unwrap()));
    let out = run(Command::new(env!("CARGO_BIN_EXE_berth")).args(["gc", "--dry-run", "--data"]).arg(&data));
    assert!(out.contains("would remove 0 manifests"), "{out}");
    b.stop();
}

#[test]
fn client_certificates_are_required_when_a_client_ca_is_set() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let ca = Ca::new(&w.join("pki"), "ca");
    let clients = Ca::new(&w.join("pki"), "clients");
    let stranger = Ca::new(&w.join("pki"), "stranger");
    let (crt, key) = ca.issue("server", "server");
    let (client_crt, client_key) = clients.issue("client", "client");
    let (bad_crt, bad_key) = stranger.issue("intruder", "client");
    let (b, addr) = tls_berth(w, &crt, &key, &format!("client_ca = \"{}\"", clients.cert().display()));

    assert!(curl(&addr, &ca.cert(), &[]).is_err(), "no client certificate");
    let with =
        |c: &Path, k: &Path| curl(&addr, &ca.cert(), &["--cert", c.to_str().unwrap(), "--key", k.to_str().unwrap()]);
    assert!(with(&bad_crt, &bad_key).is_err(), "a client certificate from another CA");
    assert_eq!(with(&client_crt, &client_key).unwrap().1, 200);

    // skopeo presents client.cert/client.key from its --cert-dir.
    let layout = busybox_layout(w);
    let certs = cert_dir(&w.join("skopeo-certs"), &ca, Some((&client_crt, &client_key)));
    run(Command::new("skopeo").args([
        "copy",
        "--dest-cert-dir",
        certs.to_str().unwrap(),
        &layout.reference("single"),
        &format!("docker://{addr}/team/busybox:1"),
    ]));
    b.stop();
}

/// The cipher berth picks: AES-128-GCM even when the client lists AES-256-GCM
/// first (OpenSSL's and Go's default order), over TLS 1.3 and 1.2, so a blob
/// download costs both ends fewer AES rounds (BENCHMARKS.md, TLS rows).
#[test]
fn the_server_prefers_aes_128_gcm_over_the_clients_order() {
    require("openssl");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let ca = Ca::new(&w.join("pki"), "ca");
    let (crt, key) = ca.issue("server", "server");
    let (b, addr) = tls_berth(w, &crt, &key, "");
    let cipher = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(["s_client", "-connect", &addr, "-CAfile"])
            .arg(ca.cert())
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = text.lines().find(|l| l.contains("Cipher is")).unwrap_or_else(|| panic!("{text}"));
        line.rsplit(' ').next().unwrap().to_string()
    };
    let tls13 = cipher(&["-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256"]);
    assert_eq!(tls13, "TLS_AES_128_GCM_SHA256");
    let tls12 = cipher(&["-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256"]);
    assert!(tls12.contains("AES128-GCM"), "{tls12}");
    // A client that offers only AES-256 still gets it.
    assert_eq!(cipher(&["-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384"]), "TLS_AES_256_GCM_SHA384");
    b.stop();
}
