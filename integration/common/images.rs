//! Test images built offline: busybox-static in an OCI layout made with umoci,
//! single-arch or multi-arch (an index over two platform manifests).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use super::procs::{require, run};
use berth::oci::Digest;

/// An OCI image layout directory and the tags it holds.
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    /// `oci:<dir>:<tag>` for skopeo.
    pub fn reference(&self, tag: &str) -> String {
        format!("oci:{}:{tag}", self.dir.display())
    }

    fn index(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.dir.join("index.json")).unwrap()).unwrap()
    }

    /// The descriptor `tag` names in index.json.
    pub fn descriptor(&self, tag: &str) -> Value {
        self.index()["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .unwrap_or_else(|| panic!("no tag {tag} in layout"))
            .clone()
    }

    /// The digest of the manifest (or index) `tag` names.
    pub fn digest(&self, tag: &str) -> Digest {
        self.descriptor(tag)["digest"].as_str().unwrap().parse().unwrap()
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.dir.join("blobs").join(d.algorithm().as_str()).join(d.hex())
    }

    /// Builds a busybox image for `arch` under `tag`; `extra` becomes a file
    /// in the image, so images with different `extra` differ in their layer.
    pub fn add_busybox(&self, tag: &str, arch: &str, extra: &str) {
        require("umoci");
        let busybox = ["/bin/busybox", "/usr/bin/busybox"].into_iter().find(|p| Path::new(p).is_file());
        let busybox = busybox.expect("busybox-static is not installed; `bash .ci/run` installs it");
        let image = format!("{}:{tag}", self.dir.display());
        let bundle = self.dir.with_extension(format!("bundle-{tag}"));
        run(Command::new("umoci").args(["new", "--image", &image]));
        run(Command::new("umoci").args(["unpack", "--image", &image]).arg(&bundle));
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
        std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
        std::fs::write(rootfs.join("etc-berth-test"), extra).unwrap();
        run(Command::new("umoci").args(["repack", "--image", &image]).arg(&bundle));
        run(Command::new("umoci").args([
            "config",
            "--image",
            &image,
            "--config.cmd",
            "/bin/sh",
            "--os",
            "linux",
            "--architecture",
            arch,
        ]));
        std::fs::remove_dir_all(&bundle).unwrap();
        run(Command::new("umoci").args(["gc", "--layout"]).arg(&self.dir));
    }

    /// Adds an index under `tag` over the manifests tagged `parts` (as (tag, arch)).
    pub fn add_index(&self, tag: &str, parts: &[(&str, &str)]) {
        let manifests: Vec<Value> = parts
            .iter()
            .map(|(t, arch)| {
                let d = self.descriptor(t);
                json!({"mediaType": d["mediaType"], "digest": d["digest"], "size": d["size"],
                       "platform": {"os": "linux", "architecture": arch}})
            })
            .collect();
        let body = serde_json::to_vec(
            &json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests}),
        )
        .unwrap();
        let d = Digest::sha256_of(&body);
        std::fs::write(self.blob_path(&d), &body).unwrap();
        let mut index = self.index();
        index["manifests"].as_array_mut().unwrap().push(json!({
            "mediaType": "application/vnd.oci.image.index.v1+json", "digest": d.to_string(), "size": body.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag}
        }));
        std::fs::write(self.dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    }
}

/// A layout with `single` (amd64 busybox) and `multi` (amd64 + arm64 index).
pub fn busybox_layout(work: &Path) -> Layout {
    let dir = work.join("layout");
    require("umoci");
    run(Command::new("umoci").args(["init", "--layout"]).arg(&dir));
    let l = Layout { dir };
    l.add_busybox("single", "amd64", "single");
    l.add_busybox("arm", "arm64", "arm");
    l.add_index("multi", &[("single", "amd64"), ("arm", "arm64")]);
    l
}
