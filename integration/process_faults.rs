//! Faults made for real against the berth binary: a flood of connections
//! that send headers and then nothing, under the 1024 open-files soft limit
//! systemd gives services; and SIGKILL in the middle of pushes and mirror
//! fetches, then a restart.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::mirroring::layer;
use common::procs::{berth_with, http};
use common::upstream::{Auth, FakeUpstream};
use common::Digest;

/// Starts the child with the open-files soft limit systemd gives services (1024).
fn systemd_like_limits(cmd: &mut std::process::Command) {
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            lim.rlim_cur = 1024;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Gives this process (and the servers it starts) a hard open-files limit of
/// at least `n` (root may raise it), and takes the soft limit up to it: the
/// test holds the client end of every connection itself.
fn allow_open_files(n: u64) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_max < n {
            let raised = libc::rlimit { rlim_cur: n, rlim_max: n };
            libc::setrlimit(libc::RLIMIT_NOFILE, &raised);
        }
    }
    let soft = berth::limits::raise_open_files_limit();
    assert!(soft >= n, "the test needs {n} open files and the hard limit allows {soft}");
}

/// A connection that sent request headers announcing a body, then nothing.
fn stalled(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(s, "PUT /v2/team/app/manifests/x HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 1000\r\n\r\n").unwrap();
    s
}

/// How long a plain `GET /v2/` takes on a new connection.
fn time_base(addr: &str) -> Duration {
    let started = Instant::now();
    let (status, _, _) = http("GET", addr, "/v2/").expect("GET /v2/");
    assert_eq!(status, 200);
    started.elapsed()
}

#[test]
fn a_thousand_stalled_connections_leave_a_normal_client_served() {
    // This process holds the client ends of the connections.
    allow_open_files(4096);
    let work = tempfile::tempdir().unwrap();
    let (b, addr) = berth_with(&work.path().join("data"), work.path(), &["--no-mirror"], systemd_like_limits);
    let held: Vec<TcpStream> = (0..1100).map(|_| stalled(&addr)).collect();
    let took = time_base(&addr);
    assert!(took < Duration::from_secs(1), "a normal client waited {took:?} behind 1100 stalled connections");
    drop(held);
    b.stop();
}

#[test]
fn a_flood_is_refused_at_the_door_while_connections_already_in_are_served() {
    allow_open_files(4096);
    let work = tempfile::tempdir().unwrap();
    let (b, addr) = berth_with(&work.path().join("data"), work.path(), &["--no-mirror"], |cmd| {
        cmd.env("BERTH_SERVER__MAX_CONNECTIONS", "40").env("BERTH_SERVER__BODY_TIMEOUT", "2s");
    });
    // A client already in, on a keep-alive connection.
    let mut inside = TcpStream::connect(&addr).unwrap();
    inside.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let ask = |s: &mut TcpStream| {
        write!(s, "GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200")
    };
    assert!(ask(&mut inside));
    // The flood: far more stalled connections than the cap.
    let flood: Vec<TcpStream> = (0..200).map(|_| stalled(&addr)).collect();
    let started = Instant::now();
    assert!(ask(&mut inside), "the connection already in is still served");
    assert!(started.elapsed() < Duration::from_secs(1));
    // berth took in no more than its cap; the rest wait outside, in the kernel's backlog.
    let sockets = open_sockets(b.pid());
    assert!(sockets <= 40 + 8, "berth holds {sockets} sockets with max_connections = 40");
    // The stalled bodies time out (408) and the door opens again.
    let started = Instant::now();
    let took = time_base(&addr);
    assert!(started.elapsed() < Duration::from_secs(20), "new connections were served again ({took:?})");
    drop(flood);
    b.stop();
}

/// Sockets the process holds open (client connections and its listener).
fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

/// Files in berth's temp directory (where mirror fetches write until verified).
fn temp_files(data: &Path) -> usize {
    std::fs::read_dir(data.join(".berth/tmp")).map_or(0, |d| d.count())
}

fn uploads_in(data: &Path, repo: &str) -> usize {
    let dir = data.join(format!("docker/registry/v2/repositories/{repo}/_uploads"));
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

#[actix_rt::test]
async fn sigkill_mid_push_and_mid_fetch_leaves_nothing_after_a_restart() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let big = layer(8 * 1024 * 1024, 3);
    let image = up.add_image("library/big", "1", std::slice::from_ref(&big));
    let d = image.layers[0].clone();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    up.state().gate = Some(gate.clone());
    let url = up.url.clone();
    // The processes and sockets block: off this thread, which serves the fake upstream.
    actix_rt::task::spawn_blocking(move || kill_and_restart(&url, &d, &gate)).await.unwrap();
    up.stop().await;
}

fn kill_and_restart(upstream: &str, d: &Digest, gate: &tokio::sync::Semaphore) {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let mirror = format!("docker.io={upstream}");
    let start = |max_age: &'static str| {
        berth_with(&data, work.path(), &["--mirror", &mirror], move |cmd| {
            cmd.env("BERTH_UPLOADS__MAX_AGE", max_age);
        })
    };

    for round in 0..3 {
        let (b, addr) = start("1day");
        // A push in the middle of a chunk: headers for 4 MiB, 1 MiB sent.
        let (status, headers, _) = http("POST", &addr, "/v2/team/app/blobs/uploads/").unwrap();
        assert_eq!(status, 202);
        let loc = headers.iter().find(|(k, _)| k == "location").unwrap().1.clone();
        let mut push = TcpStream::connect(&addr).unwrap();
        write!(push, "PATCH {loc} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 4194304\r\n\r\n").unwrap();
        push.write_all(&vec![1u8; 1024 * 1024]).unwrap();
        // A mirror fetch in the middle of its body (the upstream holds the rest).
        let mut pull = TcpStream::connect(&addr).unwrap();
        write!(pull, "GET /v2/big/blobs/{d} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut first = [0u8; 1024];
        let n = pull.read(&mut first).unwrap();
        let head = String::from_utf8_lossy(&first[..n]).into_owned();
        assert!(head.starts_with("HTTP/1.1 200"), "round {round}: the fetch started: {head}");
        // Wait (bounded) until both are on disk, then kill.
        let deadline = Instant::now() + Duration::from_secs(60);
        while temp_files(&data) == 0 || uploads_in(&data, "team/app") == 0 {
            assert!(Instant::now() < deadline, "round {round}: writes never reached the disk");
            std::thread::sleep(Duration::from_millis(20));
        }
        b.kill();
    }
    // Each restart removed the fetch the kill before it cut off; the last one is still there.
    assert_eq!(temp_files(&data), 1, "one fetch cut off since the last start");
    assert_eq!(uploads_in(&data, "team/app"), 3, "three pushes cut off");
    // What a crash during a small write leaves: a temp file beside the tree.
    std::fs::write(data.join(".berth/tmp/0123.crashed-write"), b"half").unwrap();

    let (b, addr) = start("3s");
    // Mirror downloads cannot be resumed: gone at startup. So is the temp file.
    let deadline = Instant::now() + Duration::from_secs(60);
    while temp_files(&data) > 0 {
        assert!(Instant::now() < deadline, "crash leftovers were not removed at startup");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Client sessions could be resumed, so they are kept until max_age.
    assert_eq!(uploads_in(&data, "team/app"), 3);
    let blob = data.join(format!("docker/registry/v2/blobs/sha256/{}/{}/data", &d.hex()[..2], d.hex()));
    assert!(!blob.exists(), "no partial blob is visible");
    let link = data
        .join(format!("docker/registry/v2/repositories/_mirror/docker.io/library/big/_layers/sha256/{}/link", d.hex()));
    assert!(!link.exists(), "no link names a blob whose data never landed");
    // The blob is fetched whole now.
    gate.add_permits(10_000);
    let (status, _, body) = http("GET", &addr, &format!("/v2/big/blobs/{d}")).unwrap();
    assert_eq!((status, &Digest::sha256_of(&body)), (200, d));
    let deadline = Instant::now() + Duration::from_secs(30);
    while uploads_in(&data, "team/app") > 0 {
        assert!(Instant::now() < deadline, "sessions cut off by the crash were not purged after max_age");
        std::thread::sleep(Duration::from_millis(100));
    }
    b.stop();
}
