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
    let (config, layer) = (post_blob(&addr, "team/app", b"{}"), post_blob(&addr, "team/app", b"a layer"));
    let manifest = common::image_manifest(&config, 2, &layer, 7);
    let md = common::Digest::sha256_of(&manifest);
    assert_eq!(put(&addr, &format!("/v2/team/app/manifests/{md}"), common::OCI_MANIFEST, &manifest), 201);
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

/// Pushes `body` to `path` with `content_type`; the status.
fn put(addr: &str, path: &str, content_type: &str, body: &[u8]) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "PUT {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn post_blob(addr: &str, repo: &str, blob: &[u8]) -> common::Digest {
    let (status, d) = post_blob_try(addr, repo, blob);
    assert_eq!(status, 201);
    d
}

/// A monolithic blob upload: its status and the blob's digest.
fn post_blob_try(addr: &str, repo: &str, blob: &[u8]) -> (u16, common::Digest) {
    use std::io::{Read, Write};
    let d = common::Digest::sha256_of(blob);
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /v2/{repo}/blobs/uploads/?digest={d} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
        blob.len()
    )
    .unwrap();
    s.write_all(blob).unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    (reply.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0), d)
}

/// Sets when a link file was written (the push time retention reads).
fn age(data: &std::path::Path, link: &str, secs_ago: u64) {
    let path = data.join(link);
    let f = std::fs::File::options().write(true).open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(secs_ago)).unwrap();
}

/// A month of CI pushes, an hour apart (the push times set on the tag links:
/// the fake clock), and a release index whose platform manifests are
/// untagged. With the README's rule (keep the 10 newest and `v*`, untagged
/// manifests after an hour) exactly those tags remain and pull, the dry run
/// listed exactly what the real run removed, the release index keeps its
/// platforms, and GC frees the removed manifests.
#[test]
fn a_month_of_ci_tags_is_kept_to_the_ten_newest_and_the_releases() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let data = w.join("data");
    std::fs::write(w.join("berth.toml"), common::readme_toml("# berth.toml: CI images, kept to what matters")).unwrap();
    let (server, addr) = berth(&data, w, &["--no-mirror", "--config", w.join("berth.toml").to_str().unwrap()]);
    let removals_logged = || std::fs::read_to_string(&server.log).unwrap().matches("retention removed").count();
    let repo = "ci/app";
    let (config, layer) = (post_blob(&addr, repo, b"{}"), post_blob(&addr, repo, b"a layer"));
    let manifest = |n: &str| {
        serde_json::json!({"schemaVersion": 2, "mediaType": common::OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.to_string(), "size": 7}],
            "annotations": {"build": n}})
        .to_string()
        .into_bytes()
    };
    const BUILDS: usize = 720;
    let hour = 3600;
    let mut digests = Vec::new();
    for i in 0..BUILDS {
        let tag = format!("build-{i:04}");
        let m = manifest(&tag);
        assert_eq!(put(&addr, &format!("/v2/{repo}/manifests/{tag}"), common::OCI_MANIFEST, &m), 201);
        let d = common::Digest::sha256_of(&m);
        let ago = ((BUILDS - i) * hour) as u64;
        age(&data, &format!("docker/registry/v2/repositories/{repo}/_manifests/tags/{tag}/current/link"), ago);
        age(
            &data,
            &format!("docker/registry/v2/repositories/{repo}/_manifests/revisions/sha256/{}/link", d.hex()),
            ago,
        );
        digests.push(d);
    }
    // A release: an index over two platform manifests pushed by digest, a month old.
    let platforms: Vec<(common::Digest, usize)> = ["amd64", "arm64"]
        .iter()
        .map(|arch| {
            let m = manifest(&format!("release-{arch}"));
            let d = common::Digest::sha256_of(&m);
            assert_eq!(put(&addr, &format!("/v2/{repo}/manifests/{d}"), common::OCI_MANIFEST, &m), 201);
            age(
                &data,
                &format!("docker/registry/v2/repositories/{repo}/_manifests/revisions/sha256/{}/link", d.hex()),
                31 * 86400,
            );
            (d, m.len())
        })
        .collect();
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": common::OCI_INDEX, "manifests": platforms.iter().zip(["amd64", "arm64"]).map(|((d, size), arch)| serde_json::json!({
        "mediaType": common::OCI_MANIFEST, "digest": d.to_string(), "size": size, "platform": {"os": "linux", "architecture": arch}})).collect::<Vec<_>>()})
    .to_string()
    .into_bytes();
    assert_eq!(put(&addr, &format!("/v2/{repo}/manifests/v1.0"), common::OCI_INDEX, &index), 201);
    age(&data, &format!("docker/registry/v2/repositories/{repo}/_manifests/tags/v1.0/current/link"), 31 * 86400);

    let retention = |dry: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.args(["retention", "--json", "--data"]).arg(&data);
        if dry {
            cmd.arg("--dry-run");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", said(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let removals = |r: &serde_json::Value| {
        let mut v: Vec<String> = r["removals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| format!("{} {} {}", x["tag"].as_str().unwrap_or("-"), x["digest"], x["rule"]))
            .collect();
        v.sort();
        v
    };
    let dry = retention(true);
    let planned = removals(&dry);
    // Every build tag but the 10 newest, and then their manifests (untagged, older than an hour).
    assert_eq!(planned.len(), 2 * (BUILDS - 10), "{:#?}", &planned[..5]);
    assert_eq!(
        http("GET", &addr, &format!("/v2/{repo}/manifests/build-0000")).unwrap().0,
        200,
        "a dry run removes nothing"
    );
    assert_eq!(removals_logged(), 0, "a dry run logs (and sends) no removal");
    // The web page shows the same plan, row by row.
    let (status, _, page) = http("GET", &addr, "/ui/housekeeping").unwrap();
    let page = String::from_utf8(page).unwrap();
    assert_eq!(status, 200);
    assert_eq!(page.matches("<tr class=\"removal\">").count(), planned.len(), "the page lists the dry run");
    assert!(page.contains("build-0000") && page.contains("not among the 10 newest"));
    let real = retention(false);
    assert_eq!(removals_logged(), planned.len(), "each removal logged once");
    assert_eq!(removals(&real), planned, "the dry run listed exactly what the real run removed");
    let (_, _, body) = http("GET", &addr, &format!("/v2/{repo}/tags/list")).unwrap();
    let mut tags: Vec<String> = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    tags.sort();
    let mut expected: Vec<String> = (BUILDS - 10..BUILDS).map(|i| format!("build-{i:04}")).collect();
    expected.push("v1.0".into());
    assert_eq!(tags, expected);
    for t in &tags {
        assert_eq!(http("GET", &addr, &format!("/v2/{repo}/manifests/{t}")).unwrap().0, 200, "{t} pulls");
    }
    for (d, _) in &platforms {
        assert_eq!(
            http("GET", &addr, &format!("/v2/{repo}/manifests/{d}")).unwrap().0,
            200,
            "the release's platforms stay"
        );
    }
    assert_eq!(http("GET", &addr, &format!("/v2/{repo}/manifests/{}", digests[0])).unwrap().0, 404);
    // GC frees the removed manifests' blobs (the shared layer and config stay).
    let out =
        Command::new(env!("CARGO_BIN_EXE_berth")).args(["gc", "--grace", "0s", "--data"]).arg(&data).output().unwrap();
    let text = said(&out);
    assert!(text.contains(&format!("removed 0 manifests and {} blobs", BUILDS - 10)), "{text}");
    for (d, _) in &platforms {
        assert_eq!(http("GET", &addr, &format!("/v2/{repo}/manifests/{d}")).unwrap().0, 200);
    }
    assert_eq!(http("GET", &addr, &format!("/v2/{repo}/blobs/{layer}")).unwrap().0, 200);
}

/// A quota over `team/*` just larger than one image: the image pushes to two
/// repositories (its blobs counted once), a bigger one is refused through
/// skopeo and dockerd with "quota exceeded: used X of Y", and its manifest is
/// not there; `berth usage` and `/metrics` say the same use.
#[test]
fn a_quota_counts_shared_blobs_once_and_refuses_past_its_limit() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let layout = busybox_layout(w);
    // The single-platform image's bytes: every blob in its manifest, and the manifest.
    let single: serde_json::Value = serde_json::from_slice(
        &std::fs::read(layout.dir.join("blobs/sha256").join(layout.digest("single").hex())).unwrap(),
    )
    .unwrap();
    let size = |v: &serde_json::Value| v["size"].as_u64().unwrap();
    let image_bytes = size(&single["config"])
        + single["layers"].as_array().unwrap().iter().map(size).sum::<u64>()
        + layout.descriptor("single")["size"].as_u64().unwrap();
    let example = common::readme_toml("# berth.toml: each team within its share");
    let toml = example.replace("max_size = \"50GiB\"", &format!("max_size = {}", image_bytes + 4096));
    std::fs::write(w.join("berth.toml"), toml).unwrap();
    let (_server, addr) =
        berth(&w.join("data"), w, &["--no-mirror", "--config", w.join("berth.toml").to_str().unwrap()]);
    let push = |tag: &str, repo: &str| {
        skopeo_try(&[
            "copy",
            "--all",
            "--dest-tls-verify=false",
            &layout.reference(tag),
            &format!("docker://{addr}/{repo}"),
        ])
    };
    for repo in ["team/a:1", "team/b:1"] {
        let out = push("single", repo);
        assert!(out.status.success(), "{}", said(&out));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_berth")).args(["usage", "--data"]).arg(w.join("data")).output().unwrap();
    let text = said(&out);
    assert!(
        text.contains(&format!("quota[0]: {} of", bytesize::ByteSize::b(image_bytes))),
        "shared blobs once: {text}"
    );
    let (_, _, metrics) = http("GET", &addr, "/metrics").unwrap();
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(metrics.contains(&format!("berth_quota_used_bytes{{quota=\"quota[0]\"}} {image_bytes}")), "{metrics}");
    let (_, _, page) = http("GET", &addr, "/ui/housekeeping").unwrap();
    let page = String::from_utf8(page).unwrap();
    assert!(
        page.contains(&format!("class=\"num used\" data-bytes=\"{image_bytes}\"")),
        "the page shows the use: {page}"
    );
    // The two-platform image does not fit: refused, and said so.
    let out = push("multi", "team/c:1");
    assert!(!out.status.success(), "a push past the quota");
    let text = said(&out);
    assert!(text.contains("quota exceeded: used"), "{text}");
    assert_eq!(http("GET", &addr, "/v2/team/c/manifests/1").unwrap().0, 404, "no manifest half-pushed");
    // The refusal came at the blob that did not fit: the quota is still within its limit.
    let (_, _, metrics) = http("GET", &addr, "/metrics").unwrap();
    let metrics = String::from_utf8(metrics).unwrap();
    let used: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("berth_quota_used_bytes{quota=\"quota[0]\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(used <= image_bytes + 4096, "a refused blob stayed linked: {used} bytes used");
    // dockerd's user reads the same.
    let archive = w.join("busybox.tar");
    let out = skopeo_try(&[
        "copy",
        &layout.reference("multi"),
        &format!("docker-archive:{}:other/busybox:1", archive.display()),
    ]);
    assert!(out.status.success(), "{}", said(&out));
    let d = Dockerd::start(&w.join("docker"), &format!(r#"{{"insecure-registries": ["{addr}"]}}"#));
    d.docker(&["load", "-i", archive.to_str().unwrap()]);
    d.docker(&["tag", "other/busybox:1", &format!("{addr}/team/d:1")]);
    let out = d.docker_try(&["push", &format!("{addr}/team/d:1")], "");
    let text = said(&out);
    assert!(!out.status.success() && text.contains("quota exceeded"), "{text}");
    // Outside the quota, anything goes.
    assert!(push("multi", "other/e:1").status.success());
    // containerd: the two-platform image pulled from there, pushed into the quota: refused.
    let c = Containerd::start(&w.join("containerd"));
    let src = format!("{addr}/other/e:1");
    c.ctr(&["images", "pull", "--plain-http", "--all-platforms", "--snapshotter", "native", &src]);
    c.ctr(&["images", "tag", &src, &format!("{addr}/team/f:1")]);
    let out = c.ctr_try(&["images", "push", "--plain-http", &format!("{addr}/team/f:1")]);
    let text = said(&out);
    assert!(!out.status.success() && (text.contains("quota exceeded") || text.contains("403")), "{text}");
    assert_eq!(http("GET", &addr, "/v2/team/f/manifests/1").unwrap().0, 404);
}

/// The quota's running count: eight clients upload 2,000-byte blobs at once
/// into a 10,000-byte quota; at most five fit and the use never passes the
/// limit. `/metrics` (the running count) says what `berth usage` (a count of
/// the index) says, also right after a delete and after blobs shared with a
/// repository the quota does not cover.
#[test]
fn the_quota_count_follows_concurrent_uploads_and_deletes() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    std::fs::write(w.join("berth.toml"), "[[quota]]\nrepositories = [\"team/*\"]\nmax_size = 10000\n").unwrap();
    let (_server, addr) =
        berth(&w.join("data"), w, &["--no-mirror", "--config", w.join("berth.toml").to_str().unwrap()]);
    let counted = || -> u64 {
        let (_, _, metrics) = http("GET", &addr, "/metrics").unwrap();
        let metrics = String::from_utf8(metrics).unwrap();
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("berth_quota_used_bytes{quota=\"quota[0]\"} "))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    let usage = || -> u64 {
        let out = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["usage", "--json", "--data"])
            .arg(w.join("data"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", said(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0]["used"].as_u64().unwrap()
    };
    let blob = |i: u8| vec![i; 2000];
    // A blob another repository already has counts in full; one the quota has, not again.
    post_blob(&addr, "other/x", &blob(200));
    let results: Vec<(u16, common::Digest)> = std::thread::scope(|s| {
        let (addr, blob) = (&addr, &blob);
        let tasks: Vec<_> = (0..8u8).map(|i| s.spawn(move || post_blob_try(addr, "team/a", &blob(i)))).collect();
        tasks.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let fitted: Vec<&common::Digest> = results.iter().filter(|(s, _)| *s == 201).map(|(_, d)| d).collect();
    assert!(results.iter().all(|(s, _)| *s == 201 || *s == 403), "{results:?}");
    assert!((1..=5).contains(&fitted.len()), "{results:?}");
    assert_eq!(usage(), 2000 * fitted.len() as u64, "what fitted, and nothing refused left linked");
    assert_eq!(counted(), usage());
    // Room made by a delete is seen at once.
    let (status, _, _) = http("DELETE", &addr, &format!("/v2/team/a/blobs/{}", fitted[0])).unwrap();
    assert_eq!(status, 202);
    assert_eq!(counted(), 2000 * (fitted.len() as u64 - 1));
    assert_eq!(counted(), usage());
    // Fill it exactly: a blob the quota already has is free, one more is refused.
    for i in 0..8u8 {
        if counted() + 2000 <= 10000 {
            assert_eq!(post_blob_try(&addr, "team/b", &blob(100 + i)).0, 201);
        }
    }
    assert_eq!(counted(), 10000);
    assert_eq!(post_blob_try(&addr, "team/c", &blob(100)).0, 201, "counted once per quota");
    assert_eq!(post_blob_try(&addr, "team/c", &blob(200)).0, 403, "other/x's blob is new to the quota");
    assert_eq!((counted(), usage()), (10000, 10000));
}

/// Retention while clients push and pull: no tag pushed again during the run,
/// and no tag whose pull succeeded during it, is lost (the judgement is
/// re-checked under the repository's lock before each removal).
#[test]
fn retention_loses_no_tag_pushed_or_pulled_during_its_run() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let data = w.join("data");
    std::fs::write(
        w.join("berth.toml"),
        "[[retention]]\nrepositories = [\"race/*\"]\nremove_older_than = \"1h\"\nunpulled_for = \"1h\"\n",
    )
    .unwrap();
    let (_server, addr) = berth(&data, w, &["--no-mirror", "--config", w.join("berth.toml").to_str().unwrap()]);
    let repo = "race/app";
    let config = post_blob(&addr, repo, b"{}").to_string();
    let manifest = move |n: &str| {
        serde_json::json!({"schemaVersion": 2, "mediaType": common::OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
            "layers": [], "annotations": {"n": n}})
        .to_string()
        .into_bytes()
    };
    const TAGS: usize = 600;
    for i in 0..TAGS {
        let tag = format!("t{i}");
        assert_eq!(put(&addr, &format!("/v2/{repo}/manifests/{tag}"), common::OCI_MANIFEST, &manifest(&tag)), 201);
        age(&data, &format!("docker/registry/v2/repositories/{repo}/_manifests/tags/{tag}/current/link"), 7200);
    }
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients = {
        let (addr, done) = (addr.clone(), done.clone());
        std::thread::spawn(move || {
            let (mut repushed, mut pulled) = (Vec::new(), Vec::new());
            let mut i = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) && i < TAGS {
                let tag = format!("t{i}");
                match i % 3 {
                    0 => {
                        let m = manifest(&format!("{tag}-again"));
                        if put(&addr, &format!("/v2/{repo}/manifests/{tag}"), common::OCI_MANIFEST, &m) == 201 {
                            repushed.push((tag, common::Digest::sha256_of(&m)));
                        }
                    }
                    1 if http("GET", &addr, &format!("/v2/{repo}/manifests/{tag}")).unwrap().0 == 200 => {
                        pulled.push(tag);
                    }
                    _ => {}
                }
                i += 1;
            }
            (repushed, pulled)
        })
    };
    let out =
        Command::new(env!("CARGO_BIN_EXE_berth")).args(["retention", "--json", "--data"]).arg(&data).output().unwrap();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(out.status.success(), "{}", said(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (repushed, pulled) = clients.join().unwrap();
    assert!(!report["removals"].as_array().unwrap().is_empty(), "the run removed old tags");
    assert!(repushed.len() + pulled.len() > 10, "the clients overlapped the run: {} {}", repushed.len(), pulled.len());
    for (tag, d) in &repushed {
        let (status, headers, _) = http("HEAD", &addr, &format!("/v2/{repo}/manifests/{tag}")).unwrap();
        let digest = headers.iter().find(|(k, _)| k == "docker-content-digest").map(|(_, v)| v.clone());
        assert_eq!((status, digest), (200, Some(d.to_string())), "{tag} was pushed again during the run");
    }
    for tag in &pulled {
        assert_eq!(
            http("HEAD", &addr, &format!("/v2/{repo}/manifests/{tag}")).unwrap().0,
            200,
            "{tag} was pulled during the run"
        );
    }
}

/// `berth retention` on a directory no server holds runs here: its delete
/// events are queued on disk and the next server sends them.
#[test]
fn a_local_retention_run_queues_its_delete_events_for_the_next_server() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let data = w.join("data");
    let recv = common::receiver::Receiver::start();
    std::fs::write(
        w.join("berth.toml"),
        format!(
            "[[retention]]\nrepositories = [\"ci/*\"]\nkeep_last = 1\n\n[[notifications.endpoints]]\nname = \"hook\"\nurl = {:?}\n",
            recv.url("/events")
        ),
    )
    .unwrap();
    let config = w.join("berth.toml");
    let (server, addr) = berth(&data, w, &["--no-mirror", "--config", config.to_str().unwrap()]);
    let cfg = post_blob(&addr, "ci/app", b"{}");
    for tag in ["old", "new"] {
        let m = serde_json::json!({"schemaVersion": 2, "mediaType": common::OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg.to_string(), "size": 2},
            "layers": [], "annotations": {"t": tag}})
        .to_string();
        assert_eq!(put(&addr, &format!("/v2/ci/app/manifests/{tag}"), common::OCI_MANIFEST, m.as_bytes()), 201);
        if tag == "old" {
            age(&data, "docker/registry/v2/repositories/ci/app/_manifests/tags/old/current/link", 3600);
        }
    }
    server.stop();
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["retention", "--config"])
        .arg(&config)
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success() && said(&out).contains("removed 1 tags"), "{}", said(&out));
    let (_server, _) = berth(&data, w, &["--no-mirror", "--config", config.to_str().unwrap()]);
    let events = recv.wait("/events", "the local run's delete event", |e| {
        e.iter().any(|e| e["action"] == "delete" && e["target"]["tag"] == "old")
    });
    assert!(events.iter().any(|e| e["actor"]["name"] == "berth retention"), "{events:#?}");
}
