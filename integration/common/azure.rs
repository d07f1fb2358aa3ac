//! A real Azure Blob Storage server for tests: Azurite (`azurite-blob`, from
//! the npm registry; `.ci/run` installs it), one process on a loopback port
//! of its own with a temp data directory. Containers are made with a
//! SharedKey-signed PUT (object_store cannot make them).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use berth::config::AzureConfig;

use super::procs::{free_port, Proc};

/// Azurite's well-known development account and key.
pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The `azurite-blob` binary, on PATH.
pub fn azurite_binary() -> PathBuf {
    super::procs::on_path("azurite-blob").expect("Azurite is missing: run .ci/run (npm install -g azurite)")
}

pub struct Azurite {
    pub proc: Proc,
    /// `http://127.0.0.1:<port>/devstoreaccount1`: the blob service's URL.
    pub endpoint: String,
    addr: String,
    dir: tempfile::TempDir,
}

impl Azurite {
    pub fn start() -> Azurite {
        Self::launch(false)
    }

    fn launch(die_with_thread: bool) -> Azurite {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cmd = Command::new(azurite_binary());
        cmd.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string(), "--silent", "--skipApiVersionCheck"])
            .arg("--location")
            .arg(dir.path());
        if die_with_thread {
            super::procs::die_with_thread(&mut cmd);
        }
        let mut proc = Proc::spawn("azurite", &mut cmd, dir.path().join("azurite.log"));
        let addr = format!("127.0.0.1:{port}");
        proc.wait_until("serving blobs", Duration::from_secs(60), || std::net::TcpStream::connect(&addr).is_ok());
        Azurite { proc, endpoint: format!("http://{addr}/{ACCOUNT}"), addr, dir }
    }

    /// Makes container `name` (created, or there already).
    pub fn container(&self, name: &str) {
        let date = httpdate();
        let version = "2021-08-06";
        let to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{ACCOUNT}/{ACCOUNT}/{name}\nrestype:container"
        );
        let key = base64::engine::general_purpose::STANDARD.decode(KEY).unwrap();
        let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key), to_sign.as_bytes());
        let signature = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
        let mut s = std::net::TcpStream::connect(&self.addr).unwrap();
        write!(
            s,
            "PUT /{ACCOUNT}/{name}?restype=container HTTP/1.0\r\nHost: {}\r\nx-ms-date: {date}\r\nx-ms-version: {version}\r\n\
             Authorization: SharedKey {ACCOUNT}:{signature}\r\nContent-Length: 0\r\n\r\n",
            self.addr
        )
        .unwrap();
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        let status = reply.split_whitespace().nth(1).unwrap_or("");
        assert!(status == "201" || status == "409", "creating container {name}: {reply}");
    }

    /// berth's `storage.azure` for `container`, under `prefix`.
    pub fn config(&self, container: &str, prefix: &str) -> AzureConfig {
        AzureConfig {
            account_name: ACCOUNT.into(),
            account_key: KEY.into(),
            container: container.into(),
            endpoint: self.endpoint.clone(),
            prefix: prefix.into(),
            ..Default::default()
        }
    }
}

/// The current time as an HTTP date (`Mon, 07 Dec 2026 03:16:30 GMT`).
fn httpdate() -> String {
    let out = Command::new("date").args(["-u", "+%a, %d %b %Y %H:%M:%S GMT"]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

static SHARED: OnceLock<Arc<Azurite>> = OnceLock::new();

/// One Azurite for the whole test process (`procs::process_wide`), with the container `berth`.
pub fn shared() -> Arc<Azurite> {
    super::procs::process_wide(&SHARED, || {
        let azurite = Azurite::launch(true);
        azurite.container("berth");
        let (pid, dir) = (azurite.proc.pid(), azurite.dir.path().to_path_buf());
        (azurite, pid, dir)
    })
}
