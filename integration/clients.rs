//! Real clients against the real berth binary, all on loopback: skopeo,
//! dockerd, containerd's ctr, and CNCF Distribution 2.8 (Debian's
//! `docker-registry`) sharing a data directory with berth in both directions.
//! Test images are built offline from busybox-static with umoci.

mod common;

use std::process::Command;

use common::images::{busybox_layout, Layout};
use common::procs::{berth, distribution, http, require, run, Containerd, Dockerd};
use common::Digest;

fn skopeo(args: &[&str]) -> String {
    require("skopeo");
    run(Command::new("skopeo").args(args))
}

/// Copies `tag` (all platforms) from the layout to `docker://addr/repo:tag`.
fn push(layout: &Layout, tag: &str, addr: &str, repo: &str) {
    skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &layout.reference(tag),
        &format!("docker://{addr}/{repo}:{tag}"),
    ]);
}

/// Copies `docker://addr/repo:tag` (all platforms) into a fresh layout; returns the pulled digest.
fn pull(work: &std::path::Path, addr: &str, repo: &str, tag: &str) -> Digest {
    let out = Layout { dir: work.join(format!("pulled-{}-{}", repo.replace('/', "_"), tag)) };
    skopeo(&["copy", "--all", "--src-tls-verify=false", &format!("docker://{addr}/{repo}:{tag}"), &out.reference(tag)]);
    out.digest(tag)
}

/// The digest the registry reports for a tag via HEAD, checking the headers
/// docker and containerd resolve tags with.
fn head_digest(addr: &str, repo: &str, tag: &str) -> Digest {
    let (status, headers, _) = http("HEAD", addr, &format!("/v2/{repo}/manifests/{tag}")).unwrap();
    assert_eq!(status, 200, "HEAD {repo}:{tag}");
    let get = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let len: usize = get("content-length").expect("HEAD has Content-Length").parse().unwrap();
    assert!(len > 0);
    get("docker-content-digest").expect("HEAD has Docker-Content-Digest").parse().unwrap()
}

#[test]
fn skopeo_copies_single_and_multi_arch_images_with_digests_preserved() {
    let work = tempfile::tempdir().unwrap();
    let layout = busybox_layout(work.path());
    let data = work.path().join("data");
    let (server, addr) = berth(&data, work.path(), &[]);
    for tag in ["single", "multi"] {
        push(&layout, tag, &addr, "team/busybox");
        assert_eq!(head_digest(&addr, "team/busybox", tag), layout.digest(tag));
        assert_eq!(pull(work.path(), &addr, "team/busybox", tag), layout.digest(tag), "{tag} round trip");
    }
    let tags = skopeo(&["list-tags", "--tls-verify=false", &format!("docker://{addr}/team/busybox")]);
    assert!(tags.contains("single") && tags.contains("multi"), "{tags}");
    // Both platform manifests of the index were pushed and are served by digest.
    let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{addr}/team/busybox:multi")]);
    assert_eq!(Digest::sha256_of(raw.as_bytes()), layout.digest("multi"));
    for arch in ["single", "arm"] {
        let d = layout.digest(arch);
        let (status, _, _) = http("HEAD", &addr, &format!("/v2/team/busybox/manifests/{d}")).unwrap();
        assert_eq!(status, 200);
    }
    server.stop();
}

#[test]
fn docker_pushes_and_pulls_through_a_private_dockerd() {
    let work = tempfile::tempdir().unwrap();
    let layout = busybox_layout(work.path());
    let (server, addr) = berth(&work.path().join("data"), work.path(), &[]);
    let archive = work.path().join("busybox.tar");
    skopeo(&[
        "copy",
        &layout.reference("single"),
        &format!("docker-archive:{}:berth-test/busybox:latest", archive.display()),
    ]);

    let d = Dockerd::start(&work.path().join("docker"), &format!(r#"{{"insecure-registries": ["{addr}"]}}"#));
    d.docker(&["load", "-i", archive.to_str().unwrap()]);
    let image = format!("{addr}/team/dockerbox:1");
    d.docker(&["tag", "berth-test/busybox:latest", &image]);
    let out = d.docker(&["push", &image]);
    let pushed: Digest = out
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("no digest in docker push output: {out}"))
        .parse()
        .unwrap();
    assert_eq!(head_digest(&addr, "team/dockerbox", "1"), pushed);

    d.docker(&["rmi", &image, "berth-test/busybox:latest"]);
    d.docker(&["pull", &image]);
    let repo_digests = d.docker(&["image", "inspect", "--format", "{{json .RepoDigests}}", &image]);
    assert!(repo_digests.contains(&pushed.to_string()), "{repo_digests} lacks {pushed}");
    drop(d);
    server.stop();
}

#[test]
fn containerd_pushes_and_pulls_with_plain_http() {
    let work = tempfile::tempdir().unwrap();
    let layout = busybox_layout(work.path());
    let (server, addr) = berth(&work.path().join("data"), work.path(), &[]);
    push(&layout, "single", &addr, "team/busybox");

    let c = Containerd::start(&work.path().join("containerd"));
    let src = format!("{addr}/team/busybox:single");
    c.ctr(&["images", "pull", "--plain-http", "--snapshotter", "native", &src]);
    let dst = format!("{addr}/team/from-ctr:1");
    c.ctr(&["images", "tag", &src, &dst]);
    c.ctr(&["images", "push", "--plain-http", &dst]);
    assert_eq!(head_digest(&addr, "team/from-ctr", "1"), layout.digest("single"));

    c.ctr(&["images", "rm", &src, &dst]);
    c.ctr(&["images", "pull", "--plain-http", "--snapshotter", "native", &dst]);
    let listed = c.ctr(&["images", "ls"]);
    assert!(listed.contains(&layout.digest("single").to_string()), "{listed}");
    drop(c);
    server.stop();
}

#[test]
fn registry2_data_is_served_by_berth_and_back() {
    let work = tempfile::tempdir().unwrap();
    let layout = busybox_layout(work.path());

    // registry:2 writes, berth serves the same directory.
    let data = work.path().join("from-registry2");
    let (r2, r2_addr) = distribution(&data, work.path(), "");
    push(&layout, "multi", &r2_addr, "lib/busybox");
    push(&layout, "single", &r2_addr, "lib/busybox");
    r2.stop();
    let (b, addr) = berth(&data, work.path(), &[]);
    for tag in ["single", "multi"] {
        assert_eq!(head_digest(&addr, "lib/busybox", tag), layout.digest(tag));
        assert_eq!(pull(work.path(), &addr, "lib/busybox", tag), layout.digest(tag));
    }
    let (status, _, body) = http("GET", &addr, "/v2/_catalog").unwrap();
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("lib/busybox"));
    b.stop();

    // berth writes, registry:2 serves the same directory.
    let data = work.path().join("from-berth");
    let (b, addr) = berth(&data, work.path(), &[]);
    push(&layout, "multi", &addr, "team/busybox");
    b.stop();
    let (r2, r2_addr) = distribution(&data, work.path(), "");
    assert_eq!(head_digest(&r2_addr, "team/busybox", "multi"), layout.digest("multi"));
    assert_eq!(pull(work.path(), &r2_addr, "team/busybox", "multi"), layout.digest("multi"));
    let tags = skopeo(&["list-tags", "--tls-verify=false", &format!("docker://{r2_addr}/team/busybox")]);
    assert!(tags.contains("multi"), "{tags}");
    r2.stop();
}
