//! The `berth` command line: configuration layering and checks, and a clean
//! stop on SIGTERM.

mod common;

use std::process::Command;
use std::time::Duration;

use common::procs::{berth, free_port, http, Proc};

fn berth_cmd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
    c.env_remove("RUST_LOG");
    c
}

#[test]
fn config_check_prints_merged_config_with_env_over_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b.toml");
    std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:7000\"\nworkers = 3\n").unwrap();
    let out = berth_cmd()
        .args(["config", "check", "--config"])
        .arg(&file)
        .env("BERTH_SERVER__LISTEN", "127.0.0.1:7001")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("listen = \"127.0.0.1:7001\""), "env wins over the file:\n{text}");
    assert!(text.contains("workers = 3"), "file wins over defaults:\n{text}");
    assert!(text.contains("[storage.delete]"), "{text}");
}

#[test]
fn config_check_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b.toml");
    std::fs::write(&file, "[storage]\nrooot = \"/x\"\n").unwrap();
    let out = berth_cmd().args(["config", "check", "--config"]).arg(&file).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rooot"), "{err}");
    let out = berth_cmd().args(["config", "check"]).env("BERTH_SERVER__WORKERS", "many").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("workers"));
}

#[test]
fn flags_win_over_environment() {
    let dir = tempfile::tempdir().unwrap();
    let flag_addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = berth_cmd();
    cmd.args(["serve", "--listen", &flag_addr, "--data"])
        .arg(dir.path().join("flag-data"))
        .env("BERTH_SERVER__LISTEN", "127.0.0.1:1")
        .env("BERTH_STORAGE__ROOT", dir.path().join("env-data"));
    let mut p = Proc::spawn("berth", &mut cmd, dir.path().join("berth.log"));
    p.wait_http(&flag_addr);
    assert!(dir.path().join("flag-data").is_dir());
    assert!(!dir.path().join("env-data").exists());
    p.stop();
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, addr) = berth(&dir.path().join("data"), dir.path(), &[]);
    let pid = p.pid();
    assert!(Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
    let status = p.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "exit status {status}");
    assert!(http("GET", &addr, "/v2/").is_err(), "still serving after SIGTERM");
}

#[test]
fn no_mirror_is_a_plain_registry_and_mirror_flags_add_upstreams() {
    let dir = tempfile::tempdir().unwrap();
    // Default: library/ is protected, pushes there are refused.
    let (p, addr) = berth(&dir.path().join("a"), dir.path(), &[]);
    assert_eq!(http("POST", &addr, "/v2/library/x/blobs/uploads/").unwrap().0, 403);
    p.stop();
    // --no-mirror: no upstream, no protected prefix.
    let (p, addr) = berth(&dir.path().join("b"), dir.path(), &["--no-mirror"]);
    assert_eq!(http("POST", &addr, "/v2/library/x/blobs/uploads/").unwrap().0, 202);
    assert_eq!(http("GET", &addr, "/v2/alpine/manifests/1").unwrap().0, 404, "unknown locally, nothing asked upstream");
    p.stop();
    // --mirror HOST=URL adds an upstream: routing by host prefix reaches it (here: nothing listens, 502).
    let dead = format!("127.0.0.1:{}", free_port());
    let (p, addr) = berth(&dir.path().join("c"), dir.path(), &["--mirror", &format!("quay.io=http://{dead}")]);
    let (status, _, body) = http("GET", &addr, "/v2/quay.io/org/img/manifests/1").unwrap();
    assert_eq!(status, 502);
    assert!(String::from_utf8_lossy(&body).contains("quay.io"));
    p.stop();
    let out = berth_cmd().args(["serve", "--mirror", "nonsense"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("HOST=URL"));
}

#[test]
fn gc_on_a_directory_no_server_holds_runs_here() {
    let dir = tempfile::tempdir().unwrap();
    let out = berth_cmd().args(["gc", "--dry-run", "--data"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("would remove 0 manifests and 0 blobs"), "{text}");
    assert!(dir.path().join(".berth/index.redb").is_file(), "the index was built for the run");
}
