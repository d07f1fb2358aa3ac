//! Where everything lives: CNCF Distribution's (registry:2) layout, byte for
//! byte, so that an existing `/var/lib/registry` is served unchanged and what
//! berth writes can be served by registry:2. Every storage path comes from here.
//!
//! ```text
//! <root>/docker/registry/v2
//! ├── blobs/<alg>/<first two hex>/<hex>/data
//! └── repositories/<name>/
//!     ├── _layers/<alg>/<hex>/link                    blob linked into the repository
//!     ├── _manifests/revisions/<alg>/<hex>/link       manifest known in the repository
//!     ├── _manifests/tags/<tag>/current/link          tag -> manifest digest
//!     ├── _manifests/tags/<tag>/index/<alg>/<hex>/link  every digest the tag pointed to
//!     └── _uploads/<id>/{data,startedat}              upload in progress
//! ```
//! A link file holds the digest string (`sha256:…`) with no newline.

use crate::oci::{Digest, RepoName, Tag};

const V2: &str = "docker/registry/v2";

pub fn blob_data(d: &Digest) -> String {
    format!("{V2}/blobs/{}/{}/{}/data", d.algorithm().as_str(), &d.hex()[..2], d.hex())
}

/// The directory that holds every repository (its children are name components).
pub fn repositories_root() -> String {
    format!("{V2}/repositories")
}

pub fn repository(name: &RepoName) -> String {
    format!("{V2}/repositories/{name}")
}

pub fn layer_link(name: &RepoName, d: &Digest) -> String {
    format!("{}/_layers/{}/{}/link", repository(name), d.algorithm().as_str(), d.hex())
}

pub fn revision_link(name: &RepoName, d: &Digest) -> String {
    format!("{}/_manifests/revisions/{}/{}/link", repository(name), d.algorithm().as_str(), d.hex())
}

/// Directory of revision links for one algorithm (children are hex names).
pub fn revisions_dir(name: &RepoName, algorithm: &str) -> String {
    format!("{}/_manifests/revisions/{algorithm}", repository(name))
}

pub fn tags_dir(name: &RepoName) -> String {
    format!("{}/_manifests/tags", repository(name))
}

pub fn tag_dir(name: &RepoName, tag: &Tag) -> String {
    format!("{}/{tag}", tags_dir(name))
}

pub fn tag_current_link(name: &RepoName, tag: &Tag) -> String {
    format!("{}/current/link", tag_dir(name, tag))
}

pub fn tag_index_link(name: &RepoName, tag: &Tag, d: &Digest) -> String {
    format!("{}/index/{}/{}/link", tag_dir(name, tag), d.algorithm().as_str(), d.hex())
}

pub fn upload_dir(name: &RepoName, id: &str) -> String {
    format!("{}/_uploads/{id}", repository(name))
}

pub fn upload_data(name: &RepoName, id: &str) -> String {
    format!("{}/data", upload_dir(name, id))
}

pub fn upload_started_at(name: &RepoName, id: &str) -> String {
    format!("{}/startedat", upload_dir(name, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789";

    #[test]
    fn golden_registry2_paths() {
        let d: Digest = format!("sha256:{HEX}").parse().unwrap();
        let n: RepoName = "team/app".parse().unwrap();
        let t: Tag = "v1".parse().unwrap();
        assert_eq!(blob_data(&d), format!("docker/registry/v2/blobs/sha256/ab/{HEX}/data"));
        assert_eq!(layer_link(&n, &d), format!("docker/registry/v2/repositories/team/app/_layers/sha256/{HEX}/link"));
        assert_eq!(
            revision_link(&n, &d),
            format!("docker/registry/v2/repositories/team/app/_manifests/revisions/sha256/{HEX}/link")
        );
        assert_eq!(
            tag_current_link(&n, &t),
            "docker/registry/v2/repositories/team/app/_manifests/tags/v1/current/link"
        );
        assert_eq!(
            tag_index_link(&n, &t, &d),
            format!("docker/registry/v2/repositories/team/app/_manifests/tags/v1/index/sha256/{HEX}/link")
        );
        assert_eq!(upload_data(&n, "u1"), "docker/registry/v2/repositories/team/app/_uploads/u1/data");
        assert_eq!(upload_started_at(&n, "u1"), "docker/registry/v2/repositories/team/app/_uploads/u1/startedat");
    }
}
