//! Distribution 2.8's S3 driver and berth on one bucket: what Distribution
//! wrote under its `rootdirectory` berth serves, and what berth wrote there
//! Distribution serves. Images go in and out with skopeo, which checks every
//! digest, and their manifests are compared byte for byte.

mod common;

use std::process::Command;

use common::images::busybox_layout;
use common::procs::{berth_with, distribution_s3, require, run};
use common::s3::{Weed, ACCESS_KEY, SECRET_KEY};

fn raw_manifest(addr: &str, image: &str) -> String {
    run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", &format!("docker://{addr}/{image}")]))
}

fn copy(from: &str, to: &str) {
    run(Command::new("skopeo").args(["copy", "--src-tls-verify=false", "--dest-tls-verify=false", from, to]));
}

#[test]
fn distribution_and_berth_serve_what_the_other_wrote_to_the_bucket() {
    require("skopeo");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let weed = Weed::start();
    weed.bucket("shared");
    let layout = busybox_layout(w);
    let (dist, dist_addr) = distribution_s3(w, &weed, "shared", "/dist");
    let (berth, berth_addr) = berth_with(&w.join("state"), w, &["--no-mirror"], |cmd| {
        cmd.env("BERTH_STORAGE__S3__ENDPOINT", &weed.endpoint)
            .env("BERTH_STORAGE__S3__BUCKET", "shared")
            .env("BERTH_STORAGE__S3__PREFIX", "dist")
            .env("BERTH_STORAGE__S3__ACCESS_KEY", ACCESS_KEY)
            .env("BERTH_STORAGE__S3__SECRET_KEY", SECRET_KEY);
    });

    // Distribution writes; berth serves (skopeo verifies every blob's digest on the way).
    copy(&layout.reference("single"), &format!("docker://{dist_addr}/team/busybox:1"));
    assert_eq!(raw_manifest(&berth_addr, "team/busybox:1"), raw_manifest(&dist_addr, "team/busybox:1"));
    copy(&format!("docker://{berth_addr}/team/busybox:1"), &format!("oci:{}:from-berth", w.join("out").display()));

    // berth writes (a multi-platform index too); Distribution serves.
    for tag in ["single", "multi"] {
        let image = format!("team/app:{tag}");
        run(Command::new("skopeo").args([
            "copy",
            "--all",
            "--dest-tls-verify=false",
            &layout.reference(tag),
            &format!("docker://{berth_addr}/{image}"),
        ]));
        assert_eq!(raw_manifest(&dist_addr, &image), raw_manifest(&berth_addr, &image));
        run(Command::new("skopeo").args([
            "copy",
            "--all",
            "--src-tls-verify=false",
            &format!("docker://{dist_addr}/{image}"),
            &format!("oci:{}:{tag}", w.join("out").display()),
        ]));
    }
    // Both list the same tags.
    let tags = |addr: &str| {
        run(Command::new("skopeo").args(["list-tags", "--tls-verify=false", &format!("docker://{addr}/team/app")]))
    };
    let (from_dist, from_berth): (serde_json::Value, serde_json::Value) =
        (serde_json::from_str(&tags(&dist_addr)).unwrap(), serde_json::from_str(&tags(&berth_addr)).unwrap());
    assert_eq!(from_dist["Tags"], from_berth["Tags"]);
    assert_eq!(from_berth["Tags"], serde_json::json!(["multi", "single"]));
    berth.stop();
    dist.stop();
}
