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
//!
//! Mirrored content lives under `repositories/_mirror/<host>/<name>` (e.g.
//! `_mirror/docker.io/library/alpine`, `_mirror/registry.corp:5000/team/app`):
//! a repository name component starts with a letter or digit, so no client
//! request can name, push into or delete anything there, and every host keeps
//! its own directory (`a:1` and `a-1` never meet). registry:2 skips `_`
//! directories, as it does `_layers` and `_uploads`.
//!
//! berth's own tree lives beside it, never inside it (registry:2 and a copy
//! of the registry tree never see it); its section is at the end of this file:
//!
//! ```text
//! <root>/.berth
//! ├── index.redb              references, sizes and uses (store::index; local disk)
//! ├── events.redb             notification events not yet delivered (events::queue; local disk)
//! ├── tmp/<instance>.<id>     files on their way in (renamed into place; emptied at start)
//! ├── spool/                  a blob's bytes kept while it goes to object storage
//! ├── token.key  admin.token  server.addr   the running server's secrets and address
//! ├── leases/<name>           fetch and lifecycle leases (shared storage)
//! ├── uses/<instance>-<ms>-<id>  use batches a replica flushed (shared storage)
//! ├── lifecycle/{uses,clock}  the merged uses; the storage's clock
//! └── doomed/<alg>-<hex>      tombstones of blobs a lifecycle turn is deleting
//! ```

use crate::oci::{Digest, RepoName, Tag};

use super::index::RefKind;

/// registry:2's tree, relative to the root.
pub const V2: &str = "docker/registry/v2";

pub fn blob_data(d: &Digest) -> String {
    format!("{}/data", blob_dir(d))
}

/// The directory of every blob of one algorithm (children are two-hex prefixes).
pub fn blobs_root(algorithm: &str) -> String {
    format!("{V2}/blobs/{algorithm}")
}

/// The directory of one blob (what deleting its data removes).
pub fn blob_dir(d: &Digest) -> String {
    format!("{V2}/blobs/{}/{}/{}", d.algorithm().as_str(), &d.hex()[..2], d.hex())
}

/// The directory that holds every repository (its children are name components).
pub fn repositories_root() -> String {
    format!("{V2}/repositories")
}

/// The directory under `repositories/` that holds every mirrored repository.
pub const MIRROR_DIR: &str = "_mirror";

/// Where the mirror keeps `remote` of upstream `host` (a validated, lowercase
/// `host[:port]`): a storage name no client can send.
pub fn mirror_repository(host: &str, remote: &str) -> RepoName {
    RepoName::storage(format!("{MIRROR_DIR}/{host}/{remote}"))
}

/// The upstream host and remote name of a mirrored repository's storage
/// name (what `mirror_repository` made); `None` for pushed content.
pub fn mirrored_parts(storage: &RepoName) -> Option<(&str, &str)> {
    storage.as_str().strip_prefix(MIRROR_DIR)?.strip_prefix('/')?.split_once('/')
}

/// The directory of one upstream's mirrored repositories.
pub fn mirror_host_dir(host: &str) -> String {
    format!("{V2}/repositories/{MIRROR_DIR}/{host}")
}

pub fn repository(name: &RepoName) -> String {
    format!("{V2}/repositories/{name}")
}

pub fn layer_link(name: &RepoName, d: &Digest) -> String {
    format!("{}/_layers/{}/{}/link", repository(name), d.algorithm().as_str(), d.hex())
}

/// The repository's layer links (exists once a blob was linked into it).
pub fn layers_root(name: &RepoName) -> String {
    format!("{}/_layers", repository(name))
}

/// The repository's manifests and tags (exists once a manifest was stored in it).
pub fn manifests_root(name: &RepoName) -> String {
    format!("{}/_manifests", repository(name))
}

/// The directory of a layer link (what an unlink removes).
pub fn layer_link_dir(name: &RepoName, d: &Digest) -> String {
    format!("{}/_layers/{}/{}", repository(name), d.algorithm().as_str(), d.hex())
}

/// The directory of a revision link (what a manifest delete removes).
pub fn revision_link_dir(name: &RepoName, d: &Digest) -> String {
    format!("{}/_manifests/revisions/{}/{}", repository(name), d.algorithm().as_str(), d.hex())
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
    format!("{}/link", tag_index_dir(name, tag, d))
}

pub fn tag_index_dir(name: &RepoName, tag: &Tag, d: &Digest) -> String {
    format!("{}/index/{}/{}", tag_dir(name, tag), d.algorithm().as_str(), d.hex())
}

pub fn uploads_dir(name: &RepoName) -> String {
    format!("{}/_uploads", repository(name))
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

/// An upload's record on backends that cannot append (`upload_parts`):
/// its size, running hash and parts, replaced by conditional puts only.
pub fn upload_record(name: &RepoName, id: &str) -> String {
    format!("{}/berth-session", upload_dir(name, id))
}

/// One chunk's bytes of such an upload.
pub fn upload_part(name: &RepoName, id: &str, part: &str) -> String {
    format!("{}/berth-parts/{part}", upload_dir(name, id))
}

/// A link's kind, repository and digest, from its path: the inverse of
/// `layer_link` and `revision_link` (`None` for every other file of the
/// tree: tag links, uploads).
pub fn parse_link(path: &str) -> Option<(RefKind, RepoName, Digest)> {
    let rest = path.strip_prefix(&repositories_root())?.strip_prefix('/')?;
    let link = rest.strip_suffix("/link")?;
    let (repo, kind, tail) = if let Some((repo, tail)) = link.split_once("/_layers/") {
        (repo, RefKind::Layer, tail)
    } else {
        let (repo, tail) = link.split_once("/_manifests/revisions/")?;
        (repo, RefKind::Manifest, tail)
    };
    let (alg, hex) = tail.split_once('/')?;
    Some((kind, RepoName::storage(repo.to_string()), Digest::from_parts(alg, hex)?))
}

/// The digest of a blob's data file, from its path: the inverse of `blob_data`.
pub fn parse_blob_data(path: &str) -> Option<Digest> {
    let mut parts = path.rsplit('/');
    let (_data, hex, _prefix, alg) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    Digest::from_parts(alg, hex)
}

// berth's own tree (see the module comment), relative to the root.

/// berth's directory in the data directory.
pub const BERTH_DIR: &str = ".berth";
/// The bookkeeping index (always on local disk).
pub const INDEX: &str = ".berth/index.redb";
/// Files on their way in; what a crash leaves here is removed at start.
pub const TMP_DIR: &str = ".berth/tmp";
/// Marks that the registry:2 tree was swept once for temp files berth wrote
/// beside their targets before it had `TMP_DIR`.
pub const LEGACY_SWEPT: &str = ".berth/legacy-temp-swept";
/// Blob bytes kept locally while they go to object storage.
pub const SPOOL_DIR: &str = ".berth/spool";
/// The notification events not yet delivered, and each endpoint's place (`events::queue`).
pub const EVENTS: &str = ".berth/events.redb";
/// The key berth's own bearer tokens are signed with (0600).
pub const TOKEN_KEY: &str = ".berth/token.key";
/// The running server's admin token, for `berth gc` on this machine (0600).
pub const ADMIN_TOKEN: &str = ".berth/admin.token";
/// Where the running server can be reached (`http://127.0.0.1:5000`).
pub const SERVER_ADDR: &str = ".berth/server.addr";
/// Leases that replicas on shared storage take (`bucket_lease`).
pub const LEASES_DIR: &str = ".berth/leases";
/// Batches of uses, one object per replica and flush.
pub const USES_DIR: &str = ".berth/uses";
/// Every use known when the last lifecycle turn ended.
pub const USES_SNAPSHOT: &str = ".berth/lifecycle/uses";
/// Written to learn the storage's clock (links are dated by it, not ours).
pub const CLOCK: &str = ".berth/lifecycle/clock";
/// Tombstones of blobs whose data a lifecycle turn is about to delete.
pub const DOOMED_DIR: &str = ".berth/doomed";

/// The name, within `TMP_DIR`, of a temp file of this process (`instance`).
pub fn temp_name(instance: &str, id: &str) -> String {
    format!("{instance}.{id}")
}

/// A temp file of this process (`instance`) under `TMP_DIR`.
pub fn temp_file(instance: &str, id: &str) -> String {
    format!("{TMP_DIR}/{}", temp_name(instance, id))
}

/// Whether a name under `TMP_DIR` is one of `instance`'s temp files.
pub fn temp_file_of(name: &str, instance: &str) -> bool {
    name.strip_prefix(instance).is_some_and(|rest| rest.starts_with('.'))
}

/// A scratch object a storage check writes and removes (`id` unique).
pub fn probe(id: &str) -> String {
    format!("{BERTH_DIR}/probe-{id}")
}

/// Lease `name` (`fetch-<alg>-<hex>`, `lifecycle`).
pub fn lease(name: &str) -> String {
    format!("{LEASES_DIR}/{name}")
}

/// One batch of uses a replica flushes.
pub fn uses_batch(instance: &str, at_ms: u64, id: &str) -> String {
    format!("{USES_DIR}/{instance}-{at_ms:013}-{id}")
}

/// The tombstone of blob `d`.
pub fn tombstone(d: &Digest) -> String {
    format!("{DOOMED_DIR}/{}-{}", d.algorithm().as_str(), d.hex())
}

/// The blob a tombstone stands for: the inverse of `tombstone`.
pub fn parse_tombstone(path: &str) -> Option<Digest> {
    let name = path.strip_prefix(DOOMED_DIR)?.strip_prefix('/')?;
    let (alg, hex) = name.split_once('-')?;
    Digest::from_parts(alg, hex)
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

    #[test]
    fn paths_parse_back() {
        let d = Digest::sha256_of(b"x");
        let repo = mirror_repository("docker.io", "library/alpine");
        assert_eq!(parse_link(&layer_link(&repo, &d)), Some((RefKind::Layer, repo.clone(), d.clone())));
        let pushed: RepoName = "team/app".parse().unwrap();
        assert_eq!(parse_link(&revision_link(&pushed, &d)), Some((RefKind::Manifest, pushed.clone(), d.clone())));
        let tag: Tag = "v1".parse().unwrap();
        assert_eq!(parse_link(&tag_current_link(&pushed, &tag)), None);
        assert_eq!(parse_link(&tag_index_link(&pushed, &tag, &d)), None);
        assert_eq!(parse_link(&upload_data(&pushed, "u")), None);
        assert_eq!(parse_blob_data(&blob_data(&d)), Some(d.clone()));
        assert_eq!(parse_tombstone(&tombstone(&d)), Some(d.clone()));
        assert_eq!(parse_tombstone(&lease("x")), None);
        assert!(temp_file_of(&temp_name("abc", "1"), "abc"));
        assert_eq!(temp_file("abc", "1"), format!("{TMP_DIR}/{}", temp_name("abc", "1")));
        assert!(!temp_file_of("abcd.1", "abc"));
    }

    #[test]
    fn berths_tree_is_outside_registry2s() {
        for path in [INDEX, TMP_DIR, SPOOL_DIR, TOKEN_KEY, ADMIN_TOKEN, SERVER_ADDR, LEASES_DIR, USES_DIR, CLOCK] {
            assert!(path.starts_with(&format!("{BERTH_DIR}/")), "{path}");
            assert!(!path.starts_with(V2));
        }
    }

    #[test]
    fn mirrored_repositories_are_unnameable_and_per_host() {
        let a = mirror_repository("a:1", "x/y");
        let b = mirror_repository("a-1", "x/y");
        assert_eq!(repository(&a), "docker/registry/v2/repositories/_mirror/a:1/x/y");
        assert_ne!(repository(&a), repository(&b));
        for name in [a.as_str(), b.as_str(), "_mirror/docker.io/library/alpine"] {
            assert!(name.parse::<RepoName>().is_err(), "a client could name {name}");
        }
        assert_eq!(mirrored_parts(&a), Some(("a:1", "x/y")));
        assert_eq!(mirrored_parts(&"team/app".parse().unwrap()), None);
        assert_eq!(
            repository(&mirror_repository("docker.io", "library/alpine")),
            format!("{}/docker.io/library/alpine", mirror_host_dir("docker.io").trim_end_matches("/docker.io"))
        );
    }
}
