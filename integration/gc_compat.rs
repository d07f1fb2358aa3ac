//! `berth gc` against CNCF Distribution's `registry garbage-collect` on
//! copies of one data directory (pushes, a moved tag, a deleted manifest, a
//! multi-arch index): the same blobs and manifests are left; with
//! `--delete-untagged` berth leaves exactly what the tags reach (Distribution
//! 2.8 also deletes the platform manifests of a tagged index). And `berth gc`
//! asking a running server to collect.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::images::{busybox_layout, Layout};
use common::procs::{berth, http, require, run};
use common::Digest;

fn push(layout: &Layout, tag: &str, addr: &str, repo: &str, as_tag: &str) {
    require("skopeo");
    run(Command::new("skopeo").args([
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &layout.reference(tag),
        &format!("docker://{addr}/{repo}:{as_tag}"),
    ]));
}

/// Blob digests whose data is present.
fn blobs(data: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let root = data.join("docker/registry/v2/blobs/sha256");
    for prefix in std::fs::read_dir(root).unwrap().flatten() {
        for blob in std::fs::read_dir(prefix.path()).unwrap().flatten() {
            if blob.path().join("data").is_file() {
                out.insert(format!("sha256:{}", blob.file_name().to_string_lossy()));
            }
        }
    }
    out
}

/// (repository, manifest digest) revisions present.
fn revisions(data: &Path) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for repo in ["team/app", "other/app", "gone/app"] {
        let dir = data.join(format!("docker/registry/v2/repositories/{repo}/_manifests/revisions/sha256"));
        for rev in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if rev.path().join("link").is_file() {
                out.insert((repo.to_string(), format!("sha256:{}", rev.file_name().to_string_lossy())));
            }
        }
    }
    out
}

fn copy(from: &Path, to: &Path) {
    run(Command::new("cp").arg("-a").arg(from).arg(to));
}

fn distribution_gc(data: &Path, work: &Path, delete_untagged: bool) {
    require("docker-registry");
    let cfg = work.join(format!("gc-{}.yml", data.file_name().unwrap().to_string_lossy()));
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:0\n",
            data.display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new("docker-registry");
    cmd.arg("garbage-collect").arg(&cfg);
    if delete_untagged {
        cmd.arg("--delete-untagged");
    }
    run(&mut cmd);
}

fn berth_gc(data: &Path, extra: &[&str]) -> String {
    run(Command::new(env!("CARGO_BIN_EXE_berth")).args(["gc", "--grace", "0s", "--data"]).arg(data).args(extra))
}

/// Digests of what `tag`'s manifest references in the layout (config and layers).
fn referenced(layout: &Layout, d: &Digest) -> Vec<String> {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.dir.join(format!("blobs/sha256/{}", d.hex()))).unwrap()).unwrap();
    let mut out = vec![m["config"]["digest"].as_str().unwrap().to_string()];
    out.extend(m["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()));
    out
}

#[test]
fn berth_gc_leaves_what_registry_garbage_collect_leaves() {
    let work = tempfile::tempdir().unwrap();
    let layout = busybox_layout(work.path());
    layout.add_busybox("extra", "amd64", "only in the deleted image");
    let data: PathBuf = work.path().join("data");
    let (b, addr) = berth(&data, work.path(), &["--no-mirror"]);
    push(&layout, "multi", &addr, "team/app", "multi");
    push(&layout, "single", &addr, "team/app", "single");
    // A tag that moved: the arm manifest is left untagged in other/app.
    push(&layout, "arm", &addr, "other/app", "v1");
    push(&layout, "single", &addr, "other/app", "v1");
    // A manifest deleted: its own config and layer are garbage.
    push(&layout, "extra", &addr, "gone/app", "v1");
    let (status, _, _) = http("DELETE", &addr, &format!("/v2/gone/app/manifests/{}", layout.digest("extra"))).unwrap();
    assert_eq!(status, 202);
    b.stop();

    // Without --delete-untagged: the same blobs and manifests remain.
    let (r2, mine) = (work.path().join("r2"), work.path().join("mine"));
    copy(&data, &r2);
    copy(&data, &mine);
    distribution_gc(&r2, work.path(), false);
    let out = berth_gc(&mine, &[]);
    assert!(out.contains("removed"), "{out}");
    assert_eq!(blobs(&mine), blobs(&r2), "berth gc and registry garbage-collect leave the same blobs");
    assert_eq!(revisions(&mine), revisions(&r2));
    let extra = layout.digest("extra").to_string();
    assert!(!blobs(&mine).contains(&extra), "the deleted manifest is collected");
    assert!(blobs(&mine).is_subset(&blobs(&data)) && blobs(&mine).len() < blobs(&data).len());

    // With --delete-untagged: berth leaves exactly what the tags reach.
    let (r2u, mineu) = (work.path().join("r2u"), work.path().join("mineu"));
    copy(&data, &r2u);
    copy(&data, &mineu);
    distribution_gc(&r2u, work.path(), true);
    berth_gc(&mineu, &["--delete-untagged"]);
    let (multi, single, arm) = (layout.digest("multi"), layout.digest("single"), layout.digest("arm"));
    let expected_revisions: BTreeSet<(String, String)> =
        [("team/app", &multi), ("team/app", &single), ("team/app", &arm), ("other/app", &single)]
            .iter()
            .map(|(r, d)| (r.to_string(), d.to_string()))
            .collect();
    assert_eq!(revisions(&mineu), expected_revisions);
    let mut expected_blobs: BTreeSet<String> = [&multi, &single, &arm].iter().map(|d| d.to_string()).collect();
    expected_blobs.extend(referenced(&layout, &single));
    expected_blobs.extend(referenced(&layout, &arm));
    assert_eq!(blobs(&mineu), expected_blobs);
    // Distribution 2.8 removes the index's untagged platform manifest too; berth keeps it.
    assert!(blobs(&r2u).is_subset(&blobs(&mineu)));
    assert!(!revisions(&r2u).contains(&("team/app".to_string(), arm.to_string())), "Distribution drops it");
    let (b, addr) = berth(&mineu, work.path(), &["--no-mirror"]);
    let pulled = work.path().join("pulled");
    run(Command::new("skopeo").args([
        "copy",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{addr}/team/app:multi"),
        &format!("oci:{}:multi", pulled.display()),
    ]));
    b.stop();
}

#[test]
fn berth_gc_asks_the_running_server() {
    let work = tempfile::tempdir().unwrap();
    let layout = busybox_layout(work.path());
    let data = work.path().join("data");
    let (b, addr) = berth(&data, work.path(), &["--no-mirror"]);
    push(&layout, "single", &addr, "gone/app", "v1");
    let (status, _, _) = http("DELETE", &addr, &format!("/v2/gone/app/manifests/{}", layout.digest("single"))).unwrap();
    assert_eq!(status, 202);
    let before = blobs(&data);
    let out = berth_gc(&data, &["--dry-run"]);
    assert!(out.contains("would remove 0 manifests and 3 blobs"), "{out}");
    assert_eq!(blobs(&data), before, "a dry run removes nothing");
    let out = berth_gc(&data, &[]);
    assert!(out.contains("removed 0 manifests and 3 blobs"), "{out}");
    assert!(blobs(&data).is_empty());
    // The server ran it and serves on.
    let (status, _, _) = http("GET", &addr, "/v2/").unwrap();
    assert_eq!(status, 200);
    b.stop();
}
