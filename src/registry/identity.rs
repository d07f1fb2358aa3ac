//! The one identity of a repository. The name-space policy (`namespace`)
//! resolves every request's name into a `RepoId` once, at the edge, and
//! configuration patterns (access rules, pins) into `RepoPattern`s when the
//! configuration loads; access control, pins, expiry, the catalog, search,
//! the web page and logs take these values and never read a raw name again.
//! So two spellings of one repository (`busybox`, `library/busybox`,
//! `docker.io/library/busybox`, `busybox?ns=docker.io`,
//! `index.docker.io/library/busybox`) always get one answer.
//!
//! The canonical form, which `Display` writes, is the pushed name for pushed
//! content (`team/app`) and `<host>/<name upstream>` for mirrored content
//! (`docker.io/library/busybox`, `registry.corp:5000/team/app`).

use std::fmt;

use crate::oci::RepoName;
use crate::store::layout;

/// A repository, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RepoId {
    /// Pushed content, by the name it was pushed under.
    Local(RepoName),
    /// Upstream `host`'s repository `remote`, by its name there (`library/` applied).
    Mirrored { host: String, remote: RepoName },
}

impl RepoId {
    /// Where the store keeps the repository.
    pub fn storage(&self) -> RepoName {
        match self {
            RepoId::Local(name) => name.clone(),
            RepoId::Mirrored { host, remote } => layout::mirror_repository(host, remote.as_str()),
        }
    }

    /// The repository a storage name holds (the inverse of `storage`).
    pub fn from_storage(storage: &RepoName) -> RepoId {
        match layout::mirrored_parts(storage) {
            // Mirrored storage names are minted from validated remote names.
            Some((host, remote)) => match remote.parse() {
                Ok(remote) => RepoId::Mirrored { host: host.to_string(), remote },
                Err(_) => RepoId::Local(storage.clone()),
            },
            None => RepoId::Local(storage.clone()),
        }
    }

    /// A pushed repository the store lists by `name` (`None`: not a name).
    pub fn listed_local(name: &str) -> Option<RepoId> {
        name.parse().ok().map(RepoId::Local)
    }

    /// A repository the store lists as mirrored from `host` as `remote`.
    pub fn listed_mirrored(host: &str, remote: &str) -> Option<RepoId> {
        remote.parse().ok().map(|remote| RepoId::Mirrored { host: host.to_string(), remote })
    }

    pub fn is_mirrored(&self) -> bool {
        matches!(self, RepoId::Mirrored { .. })
    }

    /// The upstream a mirrored repository comes from.
    pub fn host(&self) -> Option<&str> {
        match self {
            RepoId::Local(_) => None,
            RepoId::Mirrored { host, .. } => Some(host),
        }
    }
}

impl fmt::Display for RepoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepoId::Local(name) => write!(f, "{name}"),
            RepoId::Mirrored { host, remote } => write!(f, "{host}/{remote}"),
        }
    }
}

/// A configured pattern (`*` matches any run of characters, slashes
/// included), resolved into the identity space: it matches repositories of
/// one kind, never names as spelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoPattern {
    /// Pushed repositories whose name matches.
    Local(String),
    /// Repositories of upstream `host` whose name there matches.
    Mirrored { host: String, remote: String },
}

impl RepoPattern {
    pub fn matches(&self, id: &RepoId) -> bool {
        match (self, id) {
            (RepoPattern::Local(p), RepoId::Local(name)) => glob(p, name.as_str()),
            (RepoPattern::Mirrored { host: h, remote: p }, RepoId::Mirrored { host, remote }) => {
                h == host && glob(p, remote.as_str())
            }
            _ => false,
        }
    }
}

impl fmt::Display for RepoPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepoPattern::Local(p) => write!(f, "{p} (pushed)"),
            RepoPattern::Mirrored { host, remote } => write!(f, "{host}/{remote}"),
        }
    }
}

/// `*` matches any run of characters (slashes included).
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(text) = text.strip_prefix(head) else { return false };
            (0..=text.len()).filter(|&i| text.is_char_boundary(i)).any(|i| glob(rest, &text[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    #[test]
    fn storage_names_round_trip() {
        let ids = [
            RepoId::Local(n("team/app")),
            RepoId::Mirrored { host: "docker.io".into(), remote: n("library/alpine") },
            RepoId::Mirrored { host: "registry.corp:5000".into(), remote: n("x/y") },
        ];
        for id in ids {
            assert_eq!(RepoId::from_storage(&id.storage()), id);
        }
        let m = RepoId::Mirrored { host: "docker.io".into(), remote: n("library/alpine") };
        assert_eq!(m.storage().as_str(), "_mirror/docker.io/library/alpine");
        assert_eq!(m.to_string(), "docker.io/library/alpine");
    }

    #[test]
    fn patterns_match_one_kind() {
        let local = RepoId::Local(n("library/bus"));
        let hub = RepoId::Mirrored { host: "docker.io".into(), remote: n("library/busybox") };
        let p = RepoPattern::Mirrored { host: "docker.io".into(), remote: "library/bus*".into() };
        assert!(p.matches(&hub));
        assert!(!p.matches(&local), "a mirrored pattern never matches pushed content");
        assert!(!p.matches(&RepoId::Mirrored { host: "ghcr.io".into(), remote: n("library/busybox") }));
        assert!(RepoPattern::Local("library/*".into()).matches(&local));
        assert!(!RepoPattern::Local("library/*".into()).matches(&hub));
    }

    #[test]
    fn globs() {
        assert!(glob("a*c", "abbbc"));
        assert!(glob("*", ""));
        assert!(!glob("a*c", "abd"));
        assert!(glob("docker.io/library/*", "docker.io/library/a/b"));
    }
}
