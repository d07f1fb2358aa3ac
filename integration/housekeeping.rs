//! Housekeeping for pushed images: immutable tags through real clients
//! (skopeo, dockerd, containerd), with the messages their users see; and the
//! pulls of pushed content recorded, as the web page shows them.

mod common;

use std::process::Command;

use common::images::busybox_layout;
use common::procs::{berth, http, http_with, require, Containerd, Dockerd};

fn skopeo_try(args: &[&str]) -> std::process::Output {
    require("skopeo");
    Command::new("skopeo").args(args).output().unwrap()
}

fn said(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn an_immutable_tag_refuses_a_move_through_skopeo_docker_and_containerd() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let layout = busybox_layout(w);
    std::fs::write(w.join("berth.toml"), common::readme_toml("# berth.toml: releases never move")).unwrap();
    let (_server, addr) = berth(&w.join("data"), w, &["--config", w.join("berth.toml").to_str().unwrap()]);
    let push = |tag: &str, to: &str| {
        skopeo_try(&[
            "copy",
            "--all",
            "--dest-tls-verify=false",
            &layout.reference(tag),
            &format!("docker://{addr}/team/app:{to}"),
        ])
    };
    // A first push, and the same manifest again: both fine.
    assert!(push("single", "v1").status.success());
    assert!(push("single", "v1").status.success(), "pushing the same manifest again");
    // Another manifest to the same tag: refused, and skopeo's user reads why.
    let moved = push("multi", "v1");
    assert!(!moved.status.success());
    let text = said(&moved);
    assert!(text.contains("tag v1 of team/app is immutable by immutable[0]"), "{text}");
    // Exceptions and other tags move freely.
    assert!(push("single", "v2-rc1").status.success() && push("multi", "v2-rc1").status.success());
    assert!(push("single", "latest").status.success() && push("multi", "latest").status.success());
    // Deletes: the tag, and the manifest it names, are refused with 403 DENIED.
    let v1 = layout.digest("single");
    for path in ["/v2/team/app/manifests/v1".to_string(), format!("/v2/team/app/manifests/{v1}")] {
        let (status, _, body) = http("DELETE", &addr, &path).unwrap();
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.contains("DENIED") && body.contains("does not allow deletes"), "{body}");
    }
    // dockerd: another image (docker's own manifest) pushed over v1.
    let archive = w.join("busybox.tar");
    let out = skopeo_try(&[
        "copy",
        &layout.reference("single"),
        &format!("docker-archive:{}:other/busybox:1", archive.display()),
    ]);
    assert!(out.status.success(), "{}", said(&out));
    let d = Dockerd::start(&w.join("docker"), &format!(r#"{{"insecure-registries": ["{addr}"]}}"#));
    d.docker(&["load", "-i", archive.to_str().unwrap()]);
    d.docker(&["tag", "other/busybox:1", &format!("{addr}/team/app:v1")]);
    let out = d.docker_try(&["push", &format!("{addr}/team/app:v1")], "");
    assert!(!out.status.success(), "docker moved an immutable tag");
    let text = said(&out);
    assert!(text.contains("denied") && text.contains("immutable"), "{text}");
    drop(d);
    // containerd: the multi-platform index pushed over v1.
    let c = Containerd::start(&w.join("containerd"));
    let src = format!("{addr}/team/app:latest");
    c.ctr(&["images", "pull", "--plain-http", "--all-platforms", "--snapshotter", "native", &src]);
    c.ctr(&["images", "tag", &src, &format!("{addr}/team/app:v1")]);
    let out = c.ctr_try(&["images", "push", "--plain-http", &format!("{addr}/team/app:v1")]);
    assert!(!out.status.success(), "containerd moved an immutable tag");
    let text = said(&out);
    assert!(text.contains("immutable") || text.contains("403"), "{text}");
    drop(c);
    // v1 still names what it was first pushed as.
    let (_, headers, _) = http_with("HEAD", &addr, "/v2/team/app/manifests/v1", &[]).unwrap();
    let digest = headers.iter().find(|(k, _)| k == "docker-content-digest").map(|(_, v)| v.clone());
    assert_eq!(digest, Some(v1.to_string()));
}

/// Right after a delete, most of what it freed is younger than `gc.grace`:
/// the dry run says so, and what `--grace 0s` would add.
#[test]
fn a_dry_run_says_what_gc_grace_held_back() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let (server, addr) = berth(&data, work.path(), &["--no-mirror"]);
    let (config, layer) = (b"{}".to_vec(), b"a layer".to_vec());
    for blob in [&config, &layer] {
        let d = common::Digest::sha256_of(blob);
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        use std::io::{Read, Write};
        write!(
            s,
            "POST /v2/team/app/blobs/uploads/?digest={d} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
            blob.len()
        )
        .unwrap();
        s.write_all(blob).unwrap();
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        assert!(reply.starts_with("HTTP/1.1 201") || reply.starts_with("HTTP/1.0 201"), "{reply}");
    }
    let manifest = common::image_manifest(
        &common::Digest::sha256_of(&config),
        config.len(),
        &common::Digest::sha256_of(&layer),
        layer.len(),
    );
    let md = common::Digest::sha256_of(&manifest);
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    {
        use std::io::{Read, Write};
        write!(
            s,
            "PUT /v2/team/app/manifests/{md} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n",
            common::OCI_MANIFEST,
            manifest.len()
        )
        .unwrap();
        s.write_all(&manifest).unwrap();
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        assert!(reply.contains(" 201 "), "{reply}");
    }
    assert_eq!(http("DELETE", &addr, &format!("/v2/team/app/manifests/{md}")).unwrap().0, 202);
    server.stop();
    let gc = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["gc", "--dry-run"])
            .args(extra)
            .arg("--data")
            .arg(&data)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", said(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let text = gc(&[]);
    assert!(text.contains("would remove 0 manifests and 1 blobs"), "{text}");
    assert!(
        text.contains("held back: 2 blobs") && text.contains("written within gc.grace (10m; --grace 0s includes them)"),
        "{text}"
    );
    let text = gc(&["--grace", "0s"]);
    assert!(text.contains("would remove 0 manifests and 3 blobs") && !text.contains("held back"), "{text}");
}
