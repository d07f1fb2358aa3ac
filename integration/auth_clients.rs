//! Access control with real clients on loopback: a private dockerd that
//! pulls anonymously through `registry-mirrors` while `docker login` + push +
//! pull of a private image work against the same berth, and skopeo with
//! `--creds`. The htpasswd file is written by `berth htpasswd --stdin`.

mod common;

use base64::Engine as _;
use std::path::Path;
use std::process::{Command, Output};

use common::images::busybox_layout;
use common::procs::{add_user, berth, distribution, http, require, run, Containerd, Dockerd};

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// berth with htpasswd users, mirroring docker.io from `upstream`.
fn protected_berth(work: &Path, upstream: &str, extra: &str) -> (common::procs::Proc, String) {
    let users = work.join("htpasswd");
    add_user(&users, "alice", "wonderland");
    let cfg = work.join("berth.toml");
    std::fs::write(
        &cfg,
        format!(
            "[auth.htpasswd]\npath = \"{}\"\nrealm = \"berth test\"\n{extra}\n[[mirror.upstreams]]\nhost = \"docker.io\"\nurl = \"http://{upstream}\"\n",
            users.display()
        ),
    )
    .unwrap();
    berth(&work.join("berth-data"), work, &["--config", cfg.to_str().unwrap()])
}

#[test]
fn dockerd_pulls_anonymously_through_the_mirror_and_logs_in_to_push_and_pull_private_images() {
    let work = tempfile::tempdir().unwrap();
    let layout = busybox_layout(work.path());
    let (_upstream, up_addr) = distribution(&work.path().join("upstream-data"), work.path(), "");
    require("skopeo");
    run(Command::new("skopeo").args([
        "copy",
        "--dest-tls-verify=false",
        &layout.reference("single"),
        &format!("docker://{up_addr}/library/busybox:latest"),
    ]));
    let (b, addr) = protected_berth(work.path(), &up_addr, "");
    let d = Dockerd::start(
        &work.path().join("docker"),
        &format!(r#"{{"registry-mirrors": ["http://{addr}"], "insecure-registries": ["{addr}"]}}"#),
    );

    // registry-mirrors: dockerd sends no credentials, and Docker Hub is
    // unreachable here, so this pull can only succeed anonymously through berth.
    let out = d.docker_try(&["pull", "busybox:latest"], "");
    assert!(out.status.success(), "anonymous pull through the mirror: {}", text(&out));
    // A dockerd logged in to Docker Hub sends that login to its mirrors too;
    // berth does not know the user, and the pull still goes through it.
    let client_config = d.proc.log.with_file_name("client-config");
    std::fs::create_dir_all(&client_config).unwrap();
    let hub = base64::engine::general_purpose::STANDARD.encode("hubuser:hubpassword");
    std::fs::write(
        client_config.join("config.json"),
        format!(r#"{{"auths": {{"https://index.docker.io/v1/": {{"auth": "{hub}"}}}}}}"#),
    )
    .unwrap();
    d.docker(&["rmi", "busybox:latest"]);
    let out = d.docker_try(&["pull", "busybox:latest"], "");
    assert!(out.status.success(), "pull through the mirror with Docker Hub credentials: {}", text(&out));

    // Pushing needs a login; a wrong password does not log in.
    let private = format!("{addr}/team/app:1");
    d.docker(&["tag", "busybox:latest", &private]);
    let out = d.docker_try(&["push", &private], "");
    assert!(!out.status.success(), "pushed without logging in: {}", text(&out));
    let out = d.docker_try(&["login", &addr, "-u", "alice", "--password-stdin"], "white rabbit\n");
    assert!(!out.status.success(), "logged in with a wrong password: {}", text(&out));
    let out = d.docker_try(&["login", &addr, "-u", "alice", "--password-stdin"], "wonderland\n");
    assert!(out.status.success(), "docker login: {}", text(&out));
    d.docker(&["push", &private]);

    // The pushed image is private: it pulls when logged in, and not after logout.
    d.docker(&["rmi", &private]);
    d.docker(&["pull", &private]);
    assert_eq!(http("GET", &addr, "/v2/team/app/manifests/1").unwrap().0, 401);
    d.docker(&["rmi", &private]);
    d.docker(&["logout", &addr]);
    let out = d.docker_try(&["pull", &private], "");
    assert!(!out.status.success(), "pulled a private image logged out: {}", text(&out));
    drop(d);
    b.stop();
}

#[test]
fn skopeo_and_containerd_log_in_with_either_challenge() {
    let work = tempfile::tempdir().unwrap();
    let layout = busybox_layout(work.path());
    let (_upstream, up_addr) = distribution(&work.path().join("upstream-data"), work.path(), "");
    require("skopeo");
    for challenge in ["token", "basic"] {
        let dir = work.path().join(challenge);
        std::fs::create_dir_all(&dir).unwrap();
        let (b, addr) = protected_berth(&dir, &up_addr, &format!("[auth]\nchallenge = \"{challenge}\"\n"));
        let dest = format!("docker://{addr}/team/busybox:1");
        let skopeo = |args: &[&str]| Command::new("skopeo").args(args).output().unwrap();
        let copy = |creds: &str| {
            skopeo(&["copy", "--dest-tls-verify=false", "--dest-creds", creds, &layout.reference("single"), &dest])
        };
        assert!(!copy("alice:wrong").status.success(), "{challenge}: pushed with a wrong password");
        let out = copy("alice:wonderland");
        assert!(out.status.success(), "{challenge}: skopeo copy --dest-creds: {}", text(&out));
        let inspect = |extra: &[&str]| {
            let mut args = vec!["inspect", "--raw", "--tls-verify=false"];
            args.extend_from_slice(extra);
            args.push(&dest);
            skopeo(&args)
        };
        assert!(!inspect(&[]).status.success(), "{challenge}: a private image inspected anonymously");
        let out = inspect(&["--creds", "alice:wonderland"]);
        assert!(out.status.success(), "{challenge}: skopeo inspect --creds: {}", text(&out));

        // containerd, as a Kubernetes node pulls with an image pull secret.
        let c = Containerd::start(&dir.join("containerd"));
        let image = format!("{addr}/team/busybox:1");
        let ctr = |user: Option<&str>| {
            let mut cmd = Command::new("ctr");
            cmd.arg("-a").arg(&c.sock).args(["-n", "berth-test", "images", "pull", "--plain-http"]);
            if let Some(u) = user {
                cmd.args(["--user", u]);
            }
            cmd.arg(&image).output().unwrap()
        };
        assert!(!ctr(None).status.success(), "{challenge}: containerd pulled a private image anonymously");
        let out = ctr(Some("alice:wonderland"));
        assert!(out.status.success(), "{challenge}: ctr pull --user: {}", text(&out));
        drop(c);
        b.stop();
    }
}
