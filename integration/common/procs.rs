//! Real processes for client tests: berth (the built binary), CNCF
//! Distribution (`docker-registry`), dockerd and containerd, each with private
//! directories under one temp dir, on loopback, stopped when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where `tool` is on PATH, if it is.
pub fn on_path(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(tool)).find(|f| f.is_file()))
}

/// Fails the test with a pointer to `.ci/run` when a client tool is missing.
pub fn require(tool: &str) {
    assert!(
        on_path(tool).is_some(),
        "{tool} is not installed; `bash .ci/run` installs the Debian packages the integration tests use"
    );
}

/// A loopback port that was free a moment ago.
///
/// Taken below the kernel's ephemeral range (32768 and up by default): a
/// port the kernel hands out for `:0` is one it may also give, a moment
/// later, to some outgoing connection as its local port, and the server the
/// test then starts on it fails with "address already in use" (SeaweedFS's
/// filer did, once, while another test's cluster was busy). Ports come from
/// a counter shared by the process's tests, offset by the process id, each
/// checked free before it is handed out.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + (std::process::id().wrapping_mul(7_919).wrapping_add(n)) % COUNT) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Runs a command to completion; panics with its output if it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        panic!("{cmd:?} failed ({}):\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    stdout
}

/// Status, headers (names lowercased) and body of a response.
pub type Reply = (u16, Vec<(String, String)>, Vec<u8>);

/// A minimal HTTP/1.0 request.
pub fn http(method: &str, addr: &str, path: &str) -> std::io::Result<Reply> {
    http_with(method, addr, path, &[])
}

/// A minimal HTTP/1.0 request with extra headers.
pub fn http_with(method: &str, addr: &str, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Reply> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    // Real clients name every manifest type; Distribution 2.8 refuses an OCI index for `*/*` alone.
    let accept = berth::oci::MediaType::ALL.join(", ");
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    write!(s, "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: {accept}, */*\r\n{extra}Content-Length: 0\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = raw.get(split + 4..).unwrap_or_default().to_vec();
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok((status, headers, body))
}

/// A request with a body over HTTP/1.0; returns status and body.
pub fn send(method: &str, addr: &str, path: &str, content_type: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(raw.len());
    let status =
        String::from_utf8_lossy(&raw[..split]).split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, raw.get(split + 4..).unwrap_or_default().to_vec()))
}

/// A child process killed (SIGTERM, then SIGKILL) when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc { name: name.to_string(), child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `ready` until it holds, failing early if the process exits.
    pub fn wait_until(&mut self, what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if ready() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status}) before {what}:\n{}", self.name, self.log_text());
            }
            assert!(Instant::now() < deadline, "{} not {what} within {timeout:?}:\n{}", self.name, self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `GET http://addr/v2/` answers.
    pub fn wait_http(&mut self, addr: &str) {
        let addr = addr.to_string();
        self.wait_until("serving /v2/", Duration::from_secs(30), || {
            matches!(http("GET", &addr, "/v2/"), Ok((200 | 401, _, _)))
        });
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit on its own; fails the test after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(Instant::now() < deadline, "{} did not exit within {timeout:?}", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(mut self) {
        self.terminate();
    }

    /// SIGKILL: the process dies wherever it is, as in a crash or an OOM kill.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn terminate(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// The berth binary built by cargo for this test run.
pub fn berth(data: &Path, log_dir: &Path, extra: &[&str]) -> (Proc, String) {
    berth_with(data, log_dir, extra, |_| {})
}

/// As `berth`, with the command adjusted first (environment, limits).
pub fn berth_with(data: &Path, log_dir: &Path, extra: &[&str], tweak: impl FnOnce(&mut Command)) -> (Proc, String) {
    berth_at(&format!("127.0.0.1:{}", free_port()), data, log_dir, extra, tweak)
}

/// As `berth_with`, listening on `addr` (known before the start: siblings name each other).
pub fn berth_at(
    addr: &str,
    data: &Path,
    log_dir: &Path,
    extra: &[&str],
    tweak: impl FnOnce(&mut Command),
) -> (Proc, String) {
    let addr = addr.to_string();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.args(["serve", "--listen", &addr, "--data"]).arg(data).args(extra).env("RUST_LOG", "info");
    tweak(&mut cmd);
    let mut p = Proc::spawn("berth", &mut cmd, log_dir.join(format!("berth-{}.log", free_port())));
    p.wait_http(&addr);
    (p, addr)
}

/// `berth htpasswd USER --stdin` with `password` on stdin, appended to `file`.
pub fn add_user(file: &Path, user: &str, password: &str) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["htpasswd", user, "--stdin", "--cost", "5"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(line.starts_with(&format!("{user}:$2y$05$")), "{line}");
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(file).unwrap();
    f.write_all(line.as_bytes()).unwrap();
}

/// A Distribution "Docker Hub" under `work` holding `library/busybox:latest` (pushed by skopeo).
pub fn upstream_with_busybox(work: &Path) -> (Proc, String) {
    let layout = super::images::busybox_layout(work);
    let (proc, addr) = distribution(&work.join("upstream-data"), work, "");
    run(Command::new("skopeo").args([
        "copy",
        "--dest-tls-verify=false",
        &layout.reference("single"),
        &format!("docker://{addr}/library/busybox:latest"),
    ]));
    (proc, addr)
}

/// CNCF Distribution 2.8 (Debian's `docker-registry`) serving `data`.
pub fn distribution(data: &Path, work: &Path, extra_yaml: &str) -> (Proc, String) {
    let storage =
        format!("storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n", data.display());
    distribution_with(work, &format!("{storage}{extra_yaml}"))
}

/// Distribution 2.8 with its S3 driver on `bucket` of the test's SeaweedFS,
/// under `rootdirectory`.
pub fn distribution_s3(work: &Path, weed: &super::s3::Weed, bucket: &str, rootdirectory: &str) -> (Proc, String) {
    let storage = format!(
        "storage:\n  s3:\n    regionendpoint: {}\n    region: us-east-1\n    bucket: {bucket}\n    rootdirectory: {rootdirectory}\n    accesskey: {}\n    secretkey: {}\n    secure: false\n    v4auth: true\n  delete:\n    enabled: true\n",
        weed.endpoint,
        super::s3::ACCESS_KEY,
        super::s3::SECRET_KEY
    );
    distribution_with(work, &storage)
}

/// Distribution with `storage_yaml` (and anything else) in its configuration.
fn distribution_with(work: &Path, storage_yaml: &str) -> (Proc, String) {
    require("docker-registry");
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = work.join(format!("registry-{}.yml", free_port()));
    std::fs::write(&cfg, format!("version: 0.1\nlog:\n  level: warn\nhttp:\n  addr: {addr}\n{storage_yaml}")).unwrap();
    let mut cmd = Command::new("docker-registry");
    // Its AWS SDK panics at startup when AWS_CA_BUNDLE is set (as it is on these machines).
    cmd.arg("serve").arg(&cfg).env_remove("AWS_CA_BUNDLE");
    let mut p = Proc::spawn("docker-registry", &mut cmd, cfg.with_extension("log"));
    p.wait_http(&addr);
    (p, addr)
}

/// A private dockerd (root, vfs, no networking setup) with its own socket.
pub struct Dockerd {
    pub proc: Proc,
    pub host: String,
    dir: PathBuf,
}

/// Unmounts whatever a daemon left mounted under `dir` (dockerd leaves its
/// network namespace's nsfs mount), deepest first, so that the temp
/// directory can be removed: otherwise each run leaks gigabytes of images.
pub fn unmount_under(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<&str> =
        mounts.lines().filter_map(|l| l.split_whitespace().nth(1)).filter(|m| m.starts_with(&prefix)).collect();
    points.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in points {
        let _ = Command::new("umount").arg("-l").arg(m).status();
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.proc.terminate();
        unmount_under(&self.dir);
    }
}

impl Dockerd {
    pub fn start(dir: &Path, daemon_json: &str) -> Dockerd {
        require("dockerd");
        require("docker");
        std::fs::create_dir_all(dir).unwrap();
        let sock = dir.join("d.sock");
        let cfg = dir.join("daemon.json");
        std::fs::write(&cfg, daemon_json).unwrap();
        let mut cmd = Command::new("dockerd");
        cmd.arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("d.pid"))
            .arg("--config-file")
            .arg(&cfg)
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .args(["--storage-driver=vfs", "--iptables=false", "--ip6tables=false", "--bridge=none"]);
        let mut proc = Proc::spawn("dockerd", &mut cmd, dir.join("dockerd.log"));
        let host = format!("unix://{}", sock.display());
        let h = host.clone();
        proc.wait_until("answering docker version", Duration::from_secs(60), || {
            Command::new("docker").args(["-H", &h, "version"]).output().map(|o| o.status.success()).unwrap_or(false)
        });
        Dockerd { proc, host, dir: dir.to_path_buf() }
    }

    /// `docker args…` with `stdin`, failing or not (the test looks).
    pub fn docker_try(&self, args: &[&str], stdin: &str) -> std::process::Output {
        use std::io::Write;
        let mut child = Command::new("docker")
            .env("DOCKER_CONFIG", self.proc.log.with_file_name("client-config"))
            .args(["-H", &self.host])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    pub fn docker(&self, args: &[&str]) -> String {
        // A private client config: nothing of the machine's ~/.docker is read or written.
        let client_config = self.proc.log.with_file_name("client-config");
        run(Command::new("docker").env("DOCKER_CONFIG", client_config).args(["-H", &self.host]).args(args))
    }
}

/// A private containerd with its own root, state and socket.
pub struct Containerd {
    pub proc: Proc,
    pub sock: PathBuf,
}

impl Containerd {
    pub fn start(dir: &Path) -> Containerd {
        require("containerd");
        require("ctr");
        std::fs::create_dir_all(dir).unwrap();
        let sock = dir.join("c.sock");
        let cfg = dir.join("config.toml");
        std::fs::write(
            &cfg,
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n[debug]\n  address = \"\"\n",
                root = dir.join("root").display(),
                state = dir.join("state").display(),
                sock = sock.display()
            ),
        )
        .unwrap();
        let mut cmd = Command::new("containerd");
        cmd.arg("--config").arg(&cfg);
        let mut proc = Proc::spawn("containerd", &mut cmd, dir.join("containerd.log"));
        let s = sock.clone();
        proc.wait_until("answering ctr version", Duration::from_secs(30), || {
            Command::new("ctr").arg("-a").arg(&s).arg("version").output().map(|o| o.status.success()).unwrap_or(false)
        });
        Containerd { proc, sock }
    }

    pub fn ctr(&self, args: &[&str]) -> String {
        run(&mut self.ctr_command(args))
    }

    /// `ctr` that may fail: its output, for the test to read.
    pub fn ctr_try(&self, args: &[&str]) -> std::process::Output {
        self.ctr_command(args).output().unwrap()
    }

    fn ctr_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("-a").arg(&self.sock).args(["-n", "berth-test"]).args(args);
        cmd
    }
}

/// Kills the child when the thread that forked it ends (`Command::pre_exec`):
/// for a server that lives as long as a thread that never ends.
pub fn die_with_thread(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Servers started once for the whole test process, each with the directory
/// to remove after it: killed at exit.
static AT_EXIT: std::sync::Mutex<Vec<(u32, PathBuf)>> = std::sync::Mutex::new(Vec::new());

extern "C" fn stop_process_wide() {
    for (pid, dir) in AT_EXIT.lock().map(|v| v.clone()).unwrap_or_default() {
        // SAFETY: the pid is our own child's; waiting reaps it before its directory goes.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
            libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// One server for the whole test process, started by `start` on first use
/// (suites that run every test over an object store share one, each server
/// under a prefix of its own). Statics are never dropped, so it is stopped and
/// its data directory removed when the process exits (`atexit`); were the
/// process killed instead, the server still dies with it: `start` runs on a
/// thread that lives as long as the process, and must `die_with_thread`.
/// `start` returns the server, its pid and its directory.
pub fn process_wide<T: Send + Sync + 'static>(
    cell: &'static std::sync::OnceLock<std::sync::Arc<T>>,
    start: fn() -> (T, u32, PathBuf),
) -> std::sync::Arc<T> {
    cell.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // The parent-death signal follows the thread that forked: this one never ends.
            let (server, pid, dir) = start();
            let first = {
                let mut at_exit = AT_EXIT.lock().unwrap();
                at_exit.push((pid, dir));
                at_exit.len() == 1
            };
            if first {
                // SAFETY: registers a plain function, run once at exit.
                unsafe { libc::atexit(stop_process_wide) };
            }
            tx.send(std::sync::Arc::new(server)).unwrap();
            loop {
                std::thread::park();
            }
        });
        rx.recv().expect("a process-wide server started")
    })
    .clone()
}
