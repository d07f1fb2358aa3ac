//! The `berth` command line: configuration layering and checks, and a clean
//! stop on SIGTERM.

mod common;

use std::process::Command;
use std::time::Duration;

use common::procs::{berth, free_port, http, http_with, Proc};

/// The log of the (one) berth that `berth()` started with `dir` as its log directory.
fn berth_log(dir: &std::path::Path) -> String {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("berth-"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .unwrap()
}

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

#[test]
fn a_weak_htpasswd_hash_stops_the_server_with_the_line_named() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("htpasswd");
    // Line 2 is MD5 (`htpasswd -m`), which berth refuses.
    let good = berth::htpasswd::line("alice", "x", 4).unwrap();
    std::fs::write(&users, format!("{good}\nbob:$apr1$Vq0bQ3kG$KsS2Kb9r6RWMxvVqRKrM1.\n")).unwrap();
    let out = berth_cmd()
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port()), "--data"])
        .arg(dir.path().join("data"))
        .env("BERTH_AUTH__HTPASSWD__PATH", &users)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2 (user bob)") && err.contains("bcrypt"), "{err}");
    // `berth config check` refuses what `serve` refuses.
    let out = berth_cmd().args(["config", "check"]).env("BERTH_AUTH__HTPASSWD__PATH", &users).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("line 2 (user bob)"), "{err}");
}

/// `berth config check` checks what `serve` will: files that are missing or
/// unreadable are named.
#[test]
fn config_check_checks_what_serve_checks() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    for (key, value, says) in [
        ("BERTH_AUTH__HTPASSWD__PATH", missing.join("htpasswd"), "auth.htpasswd"),
        ("BERTH_SERVER__TLS__CERTIFICATE", missing.join("tls.crt"), "server.tls"),
    ] {
        let mut cmd = berth_cmd();
        cmd.args(["config", "check"]).env(key, &value);
        if key.contains("TLS") {
            cmd.env("BERTH_SERVER__TLS__KEY", missing.join("tls.key"));
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "{key}: {err}");
    }
}

/// Without a terminal, `berth htpasswd USER` says to use --stdin.
#[test]
fn htpasswd_without_a_terminal_says_to_use_stdin() {
    use std::os::unix::process::CommandExt;
    let mut cmd = berth_cmd();
    // A session of its own: no controlling terminal even when the tests run in one.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let out = cmd
        .args(["htpasswd", "alice"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .env_remove("TERM")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--stdin"), "{err}");
}

/// The startup log says whether TLS and authentication are on and what is
/// mirrored, one line each.
#[test]
fn the_startup_log_says_tls_auth_and_upstreams() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = berth(&dir.path().join("data"), dir.path(), &["--mirror", "ghcr.io=http://127.0.0.1:9"]);
    p.stop();
    let log = berth_log(dir.path());
    for line in [
        "TLS: off",
        "authentication: off",
        "mirroring: docker.io (https://registry-1.docker.io), ghcr.io (http://127.0.0.1:9)",
    ] {
        assert!(log.contains(line), "{line}: {log}");
    }
}

/// Upstream passwords, htpasswd passwords, Authorization headers and tokens
/// never reach the log (at debug level) or `berth config check`.
#[test]
fn secrets_stay_out_of_logs_and_config_check() {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let dir = tempfile::tempdir().unwrap();
    // An upstream that wants the password, so berth sends it.
    let up_users = dir.path().join("upstream-htpasswd");
    std::fs::write(&up_users, format!("hub:{}\n", bcrypt::hash("Upstream-Secret-42", 4).unwrap())).unwrap();
    let auth = format!("auth:\n  htpasswd:\n    realm: up\n    path: {}\n", up_users.display());
    let (_up, up_addr) = common::procs::distribution(&dir.path().join("up"), dir.path(), &auth);
    let users = dir.path().join("htpasswd");
    std::fs::write(&users, berth::htpasswd::line("alice", "Alice-Pass-77", 4).unwrap()).unwrap();
    let cfg = dir.path().join("berth.toml");
    std::fs::write(
        &cfg,
        format!(
            "[auth.htpasswd]\npath = \"{}\"\n[[mirror.upstreams]]\nhost = \"docker.io\"\nurl = \"http://{up_addr}\"\nusername = \"hub\"\npassword = \"Upstream-Secret-42\"\n",
            users.display()
        ),
    )
    .unwrap();
    let (p, addr) =
        common::procs::berth_with(&dir.path().join("data"), dir.path(), &["--config", cfg.to_str().unwrap()], |c| {
            c.env("RUST_LOG", "debug");
        });
    let log = p.log.clone();
    let with = |auth: &str, path: &str| http_with("GET", &addr, path, &[("Authorization", auth)]).unwrap();
    assert_eq!(with(&format!("Basic {}", b64("alice:Wrong-Pass-13")), "/v2/").0, 401);
    let (status, _, body) = with(&format!("Basic {}", b64("alice:Alice-Pass-77")), "/v2/token?scope=repository:x:pull");
    assert_eq!(status, 200);
    let token = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["token"].as_str().unwrap().to_string();
    // A pull through the mirror: berth logs in upstream (the image does not exist there).
    assert_eq!(with(&format!("Bearer {token}"), "/v2/library/nothing/manifests/1").0, 404);
    assert_eq!(with("Basic !!!not-base64", "/v2/").0, 401);
    p.stop();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("failed login"), "the failed login is logged:\n{text}");
    for secret in [
        "Upstream-Secret-42",
        "Alice-Pass-77",
        "Wrong-Pass-13",
        &b64("alice:Alice-Pass-77"),
        &b64("hub:Upstream-Secret-42"),
        &token,
    ] {
        assert!(!text.contains(secret), "{secret} is in the log");
    }

    let out = berth_cmd().args(["config", "check", "--config"]).arg(&cfg).output().unwrap();
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(shown.contains("password = \"***\"") && !shown.contains("Upstream-Secret-42"), "{shown}");
}

/// What the configuration's sources leave unread is said, not dropped:
/// `REGISTRY_*` variables without registry:2's `config.yml`, in `config
/// check` and at startup; and `--mirror` beside a `config.yml` without a
/// `proxy` section mirrors (the file's "no proxy" does not silently win).
#[test]
fn unread_settings_are_named_and_the_mirror_flag_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let out = berth_cmd().args(["config", "check"]).env("REGISTRY_HTTP_ADDR", ":5000").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("# warning: a REGISTRY_* variable is set") && text.contains("ignored: REGISTRY_HTTP_ADDR"),
        "{text}"
    );

    let (mut b, _) = common::procs::berth_with(&dir.path().join("data"), dir.path(), &[], |cmd| {
        cmd.env("REGISTRY_STORAGE_DELETE_ENABLED", "true");
    });
    let log = b.log.clone();
    b.wait_until("the warning at startup", Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("ignored: REGISTRY_STORAGE_DELETE_ENABLED"))
    });
    b.stop();

    let (upstream_proc, upstream) = common::procs::upstream_with_busybox(dir.path());
    let port = free_port();
    let yml = dir.path().join("config.yml");
    let data = dir.path().join("r2-data");
    std::fs::write(
        &yml,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            data.display()
        ),
    )
    .unwrap();
    let mut cmd = berth_cmd();
    cmd.args(["serve", "--config"]).arg(&yml).args(["--mirror", &format!("docker.io=http://{upstream}")]);
    let mut p = Proc::spawn("berth", &mut cmd, dir.path().join("r2.log"));
    let addr = format!("127.0.0.1:{port}");
    p.wait_http(&addr);
    let (status, _, body) = http("GET", &addr, "/v2/busybox/manifests/latest").unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    p.stop();
    drop(upstream_proc);
}

/// A client probing for TLS on the plain-HTTP port (docker and skopeo do on
/// every operation) is said once, plainly, at INFO; no ERROR per probe.
#[test]
fn tls_probes_on_a_plain_port_are_said_once_not_logged_as_errors() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let (p, addr) = berth(&dir.path().join("data"), dir.path(), &["--no-mirror"]);
    for _ in 0..3 {
        // The first bytes of a TLS ClientHello.
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]).unwrap();
        let _ = s.read_to_end(&mut Vec::new());
    }
    assert_eq!(http("GET", &addr, "/v2/").unwrap().0, 200, "still serving");
    p.stop();
    let log = berth_log(dir.path());
    assert_eq!(log.matches("something other than HTTP/1 on this plain-HTTP port").count(), 1, "{log}");
    assert!(!log.contains("ERROR"), "{log}");
}

/// registry:2's own config.yml (the image's default) starts clean, and its
/// `log.fields` are on every line, text or JSON.
#[test]
fn registry2_s_default_config_starts_clean_with_its_log_fields() {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/registry2.yml");
    for json in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = common::procs::berth_with(
            &dir.path().join("data"),
            dir.path(),
            &["--config", file.to_str().unwrap()],
            |c| {
                if json {
                    c.env("BERTH_LOG__FORMAT", "json");
                }
            },
        );
        p.stop();
        let log = berth_log(dir.path());
        assert!(!log.contains("does not support") && !log.contains("WARN"), "{log}");
        let listening = log.lines().find(|l| l.contains("berth listening")).unwrap();
        match json {
            false => assert!(listening.starts_with("service=\"registry\" "), "{listening}"),
            true => {
                let v: serde_json::Value = serde_json::from_str(listening).unwrap();
                assert_eq!(v["service"], "registry", "{listening}");
            }
        }
    }
}

/// Read-only mode, as registry:2's maintenance mode answers (405, `Allow:
/// GET, HEAD`), from the configuration and switched by `berth readonly`
/// while the server runs; reads go on.
#[test]
fn read_only_mode_refuses_writes_and_is_switched_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (p, addr) = berth(&data, dir.path(), &["--no-mirror"]);
    let readonly = |state: Option<&str>| {
        let mut cmd = berth_cmd();
        cmd.args(["readonly", "--data"]).arg(&data);
        cmd.args(state);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(readonly(None).contains("read-only mode is off"));
    let (status, _) =
        common::procs::send("POST", &addr, "/v2/team/app/blobs/uploads/", "application/octet-stream", b"").unwrap();
    assert_eq!(status, 202);

    assert!(readonly(Some("on")).contains("read-only mode is on"));
    let (status, headers, body) = http_with("POST", &addr, "/v2/team/app/blobs/uploads/", &[]).unwrap();
    assert_eq!(status, 405);
    assert!(headers.iter().any(|(k, v)| k == "allow" && v == "GET, HEAD"), "{headers:?}");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["errors"][0]["code"], "UNSUPPORTED");
    assert!(v["errors"][0]["message"].as_str().unwrap().contains("read-only"));
    for (method, path) in [
        ("PUT", "/v2/team/app/manifests/v1"),
        ("DELETE", "/v2/team/app/manifests/v1"),
        ("DELETE", "/v2/team/app/blobs/sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
    ] {
        assert_eq!(http(method, &addr, path).unwrap().0, 405, "{method} {path}");
    }
    assert_eq!(http("GET", &addr, "/v2/").unwrap().0, 200, "reads go on");
    assert_eq!(http("GET", &addr, "/v2/team/app/tags/list").unwrap().0, 404, "and answer as before");

    assert!(readonly(Some("off")).contains("read-only mode is off"));
    let (status, _) =
        common::procs::send("POST", &addr, "/v2/team/app/blobs/uploads/", "application/octet-stream", b"").unwrap();
    assert_eq!(status, 202);
    p.stop();

    // From the configuration (registry:2's maintenance key is translated to it).
    let (p, addr) = common::procs::berth_with(&data, dir.path(), &["--no-mirror"], |c| {
        c.env("BERTH_STORAGE__READ_ONLY", "true");
    });
    assert_eq!(http("POST", &addr, "/v2/team/app/blobs/uploads/").unwrap().0, 405);
    assert!(readonly(None).contains("read-only mode is on"));
    p.stop();
}

/// A registry:2 key berth does not honour is named at startup, by `berth
/// config check`, and in `/readyz`'s body (where operators look later).
#[test]
fn ignored_registry2_keys_are_named_in_readyz_too() {
    let dir = tempfile::tempdir().unwrap();
    let yml = dir.path().join("config.yml");
    std::fs::write(
        &yml,
        "version: 0.1\nvalidation:\n  manifests:\n    indexes:\n      platforms: list\nstorage:\n  filesystem:\n    rootdirectory: /tmp/x\n",
    )
    .unwrap();
    let out = berth_cmd().args(["config", "check", "--config"]).arg(&yml).output().unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("validation.manifests.indexes.platforms"), "{shown}");
    let (p, addr) = berth(&dir.path().join("data"), dir.path(), &["--config", yml.to_str().unwrap()]);
    let (status, _, body) = http("GET", &addr, "/readyz").unwrap();
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(
            "configuration: registry:2 keys berth does not support (ignored): validation.manifests.indexes.platforms"
        ),
        "{body}"
    );
    p.stop();
}
