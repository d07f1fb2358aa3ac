//! Which upstream, if any, a repository name belongs to: containerd's
//! `?ns=<host>` first, then a first path component equal to an upstream host,
//! else the default upstream (where Docker Hub's one-component names get
//! `library/`). A pure function of the name and the configuration.

use crate::config::MirrorConfig;
use crate::oci::RepoName;

/// Docker Hub answers to several host names; clients may send any of them.
const DOCKER_HUB_ALIASES: [&str; 3] = ["index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"];

/// Where a name points before the store is consulted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Named for an upstream by `?ns=` or a host prefix: always mirrored.
    Explicit { host: String, remote: String },
    /// No host named: mirrored from the default upstream unless the
    /// repository holds pushed content (local first).
    Default { host: String, remote: String },
    /// No mirroring applies.
    Local,
}

/// Why a push into a name is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRefused(pub String);

pub struct Routing {
    enabled: bool,
    default: String,
    hosts: Vec<String>,
    protected: Vec<String>,
}

impl Routing {
    pub fn new(cfg: &MirrorConfig) -> Self {
        Self {
            enabled: cfg.enabled,
            default: cfg.default.clone(),
            hosts: cfg.upstreams.iter().map(|u| u.host.clone()).collect(),
            protected: cfg.protected_prefixes.clone(),
        }
    }

    fn canonical_host<'a>(&'a self, host: &'a str) -> Option<&'a str> {
        let host = if DOCKER_HUB_ALIASES.contains(&host) { "docker.io" } else { host };
        self.hosts.iter().find(|h| h.as_str() == host).map(String::as_str)
    }

    /// The name as the upstream knows it.
    fn remote_name(host: &str, name: &str) -> String {
        if host == "docker.io" && !name.contains('/') {
            format!("library/{name}")
        } else {
            name.to_string()
        }
    }

    pub fn resolve(&self, name: &RepoName, ns: Option<&str>) -> Resolution {
        if !self.enabled {
            return Resolution::Local;
        }
        if let Some(host) = ns.and_then(|ns| self.canonical_host(ns)) {
            return Resolution::Explicit { host: host.to_string(), remote: Self::remote_name(host, name.as_str()) };
        }
        if let Some((first, rest)) = name.as_str().split_once('/') {
            if let Some(host) = self.canonical_host(first) {
                return Resolution::Explicit { host: host.to_string(), remote: Self::remote_name(host, rest) };
            }
        }
        Resolution::Default { host: self.default.clone(), remote: Self::remote_name(&self.default, name.as_str()) }
    }

    /// Refuses pushes into names that are mirrored by construction.
    pub fn check_push(&self, name: &RepoName, ns: Option<&str>) -> Result<(), PushRefused> {
        if let Resolution::Explicit { host, .. } = self.resolve(name, ns) {
            return Err(PushRefused(format!(
                "{name} is mirrored from {host} and is read-only here; push to a name without a registry host (e.g. team/{})",
                name.as_str().rsplit('/').next().unwrap_or("app")
            )));
        }
        if self.enabled {
            if let Some(p) = self.protected.iter().find(|p| name.as_str().starts_with(p.as_str())) {
                return Err(PushRefused(format!(
                    "{name} is under the protected prefix {p:?} (mirrored from {}); push under another name (e.g. team/{})",
                    self.default,
                    name.as_str().rsplit('/').next().unwrap_or("app")
                )));
            }
        }
        Ok(())
    }
}

/// The repository in the store that holds an upstream's `remote` image:
/// `<host>/<remote>`, e.g. `docker.io/library/alpine`, so mirrored content
/// never mixes with pushed content.
pub fn storage_name(host: &str, remote: &str) -> RepoName {
    format!("{host}/{remote}").parse().unwrap_or_else(|_| {
        // Hosts with a port ("localhost:5001") are not valid name components;
        // keep the store path valid by replacing what the grammar refuses.
        let safe: String = host.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '-' }).collect();
        format!("{}/{remote}", safe.trim_matches('-')).parse().expect("sanitized host and valid remote name")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MirrorConfig, UpstreamConfig};

    fn routing() -> Routing {
        let mut cfg = MirrorConfig::default();
        cfg.upstreams.push(UpstreamConfig::new("ghcr.io", "https://ghcr.io"));
        Routing::new(&cfg)
    }

    fn n(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    fn explicit(host: &str, remote: &str) -> Resolution {
        Resolution::Explicit { host: host.into(), remote: remote.into() }
    }

    #[test]
    fn ns_wins_then_host_prefix_then_default() {
        let r = routing();
        assert_eq!(r.resolve(&n("owner/img"), Some("ghcr.io")), explicit("ghcr.io", "owner/img"));
        assert_eq!(r.resolve(&n("alpine"), Some("docker.io")), explicit("docker.io", "library/alpine"));
        assert_eq!(r.resolve(&n("library/alpine"), Some("index.docker.io")), explicit("docker.io", "library/alpine"));
        assert_eq!(r.resolve(&n("ghcr.io/owner/img"), None), explicit("ghcr.io", "owner/img"));
        assert_eq!(r.resolve(&n("docker.io/alpine"), None), explicit("docker.io", "library/alpine"));
        assert_eq!(
            r.resolve(&n("alpine"), None),
            Resolution::Default { host: "docker.io".into(), remote: "library/alpine".into() }
        );
        assert_eq!(
            r.resolve(&n("team/app"), None),
            Resolution::Default { host: "docker.io".into(), remote: "team/app".into() }
        );
        // An ns that is no configured upstream is ignored.
        assert!(matches!(r.resolve(&n("team/app"), Some("quay.io")), Resolution::Default { .. }));
    }

    #[test]
    fn pushes_into_mirrored_or_protected_names_are_refused() {
        let r = routing();
        assert!(r.check_push(&n("team/app"), None).is_ok());
        assert!(r.check_push(&n("myapp"), None).is_ok());
        assert!(r.check_push(&n("ghcr.io/owner/img"), None).unwrap_err().0.contains("ghcr.io"));
        assert!(r.check_push(&n("team/app"), Some("docker.io")).is_err());
        assert!(r.check_push(&n("library/alpine"), None).unwrap_err().0.contains("library/"));
    }

    #[test]
    fn disabled_mirror_routes_everything_locally() {
        let r = Routing::new(&MirrorConfig { enabled: false, ..Default::default() });
        assert_eq!(r.resolve(&n("ghcr.io/owner/img"), Some("docker.io")), Resolution::Local);
        assert!(r.check_push(&n("library/alpine"), None).is_ok());
    }

    #[test]
    fn storage_names_prefix_the_host() {
        assert_eq!(storage_name("docker.io", "library/alpine").as_str(), "docker.io/library/alpine");
        assert_eq!(storage_name("localhost:5001", "a/b").as_str(), "localhost-5001/a/b");
    }
}
