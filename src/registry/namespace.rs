//! The one owner of the name-space policy: for every request, what a
//! repository name is — pushed (local), mirrored from which upstream,
//! protected, or read-only — and so whether the request may read or write it
//! and where in the store it lives. Every API path asks `decide`; nothing
//! else in berth looks at a name's shape to make that call. Access control
//! (who may pull, push, delete) plugs in here too.
//!
//! It is two pure functions, so a table test pins every case:
//! - `classify(name, ns)` reads only the name and the configuration:
//!   containerd's `?ns=<host>` first, then a first path component that is an
//!   upstream host, else the default upstream (where Docker Hub's
//!   one-component names get `library/`).
//! - `decide(name, class, action, facts)` adds what the store knows of the
//!   name (`Facts`, looked up by the façade): whether it holds pushed content,
//!   and whether the mirror holds content under it.
//!
//! | class                    | pull                              | push                                   | delete                 |
//! |--------------------------|-----------------------------------|----------------------------------------|------------------------|
//! | mirroring off            | local                             | local                                  | local                  |
//! | explicit (`ns`, host/)   | mirrored                          | DENIED (read-only mirror)              | DENIED                 |
//! | default, pushed content  | local                             | local                                  | local                  |
//! | default, protected       | mirrored (implicit)               | DENIED (protected)                     | DENIED if mirrored, else local |
//! | default, mirror holds it | mirrored (implicit)               | DENIED unless `allow_shadowing`        | DENIED                 |
//! | default, nothing held    | mirrored (implicit)               | local                                  | local (→ unknown)      |
//!
//! Mirrored content lives under `store::layout::mirror_repository`, a storage
//! name no client can send, so no write can ever land there.

use crate::config::MirrorConfig;
use crate::oci::RepoName;
use crate::store::layout;

/// Docker Hub answers to several host names; clients may send any of them.
const DOCKER_HUB_ALIASES: [&str; 3] = ["index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"];

/// What a request wants to do with a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read: manifests, blobs, tags, referrers.
    Pull,
    /// Create content: uploads, mounts, manifest and tag PUTs.
    Push,
    /// Remove: manifest, tag and blob DELETEs.
    Delete,
}

/// What a name is before the store is consulted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// Mirroring is off: every name is a repository of pushed content.
    Unmirrored,
    /// Named for an upstream by `?ns=` or a host prefix: mirrored, read-only.
    Explicit { host: String, remote: String },
    /// No host named: mirrored from the default upstream unless the name
    /// holds pushed content. `protected` says why pushes are refused, if they are.
    Default { host: String, remote: String, protected: Option<String> },
}

/// What the store knows of a name (looked up by the façade, only when the
/// decision needs it: see `Namespace::needs_facts`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Facts {
    /// Content was committed to the repository of that name (a blob link or
    /// a manifest, even if since deleted). Upload sessions never count.
    pub local: bool,
    /// The default upstream's mirrored copy of the name holds content.
    pub mirrored: bool,
}

/// Where a request is served, or why it is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The repository of pushed content of that very name.
    Local,
    /// Upstream `host`'s repository `remote`, kept in the store under `storage`.
    Mirrored {
        host: String,
        remote: String,
        storage: RepoName,
        /// Routed to the default upstream only because nothing is pushed
        /// under the name yet: a pushing client's existence checks (HEAD)
        /// are answered from the store and never fail because of the upstream.
        implicit: bool,
    },
    Denied(String),
}

pub struct Namespace {
    enabled: bool,
    default: String,
    hosts: Vec<String>,
    protected_prefixes: Vec<String>,
    protect_short_names: bool,
    allow_shadowing: bool,
}

/// The last path component, for "push under another name" hints.
fn short(name: &RepoName) -> &str {
    name.as_str().rsplit('/').next().unwrap_or("app")
}

impl Namespace {
    pub fn new(cfg: &MirrorConfig) -> Self {
        Self {
            enabled: cfg.enabled,
            default: cfg.default.clone(),
            hosts: cfg.upstreams.iter().map(|u| u.host.clone()).collect(),
            protected_prefixes: cfg.protected_prefixes.clone(),
            protect_short_names: cfg.protect_short_names,
            allow_shadowing: cfg.allow_shadowing,
        }
    }

    fn canonical_host(&self, host: &str) -> Option<&str> {
        let host = host.to_ascii_lowercase();
        let host = if DOCKER_HUB_ALIASES.contains(&host.as_str()) { "docker.io".to_string() } else { host };
        self.hosts.iter().find(|h| **h == host).map(String::as_str)
    }

    /// The name as the upstream knows it.
    fn remote_name(host: &str, name: &str) -> String {
        if host == "docker.io" && !name.contains('/') {
            format!("library/{name}")
        } else {
            name.to_string()
        }
    }

    /// What `name` is, from its shape and `?ns=` alone.
    pub fn classify(&self, name: &RepoName, ns: Option<&str>) -> Class {
        if !self.enabled {
            return Class::Unmirrored;
        }
        if let Some(host) = ns.and_then(|ns| self.canonical_host(ns)) {
            return Class::Explicit { host: host.to_string(), remote: Self::remote_name(host, name.as_str()) };
        }
        if let Some((first, rest)) = name.as_str().split_once('/') {
            if let Some(host) = self.canonical_host(first) {
                return Class::Explicit { host: host.to_string(), remote: Self::remote_name(host, rest) };
            }
        }
        let remote = Self::remote_name(&self.default, name.as_str());
        let protected = if self.protect_short_names && !name.as_str().contains('/') {
            Some(format!(
                "{name} is {remote} on {}: one-component names are mirrored (mirror.protect_short_names)",
                self.default
            ))
        } else {
            self.protected_prefixes
                .iter()
                .find(|p| name.as_str().starts_with(p.as_str()))
                .map(|p| format!("{name} is under the protected prefix {p:?}, mirrored from {}", self.default))
        };
        Class::Default { host: self.default.clone(), remote, protected }
    }

    /// Whether `decide` needs the store's facts for this class and action
    /// (the façade skips the lookups otherwise).
    pub fn needs_facts(class: &Class, action: Action) -> (bool, bool) {
        match (class, action) {
            (Class::Default { .. }, Action::Pull) => (true, false),
            (Class::Default { .. }, _) => (true, true),
            _ => (false, false),
        }
    }

    /// The decision for `action` on `name` of class `class`, given what the store knows.
    pub fn decide(&self, name: &RepoName, class: &Class, action: Action, facts: Facts) -> Decision {
        let mirrored = |host: &str, remote: &str, implicit| Decision::Mirrored {
            host: host.to_string(),
            remote: remote.to_string(),
            storage: layout::mirror_repository(host, remote),
            implicit,
        };
        match (class, action) {
            (Class::Unmirrored, _) => Decision::Local,
            (Class::Explicit { host, remote }, Action::Pull) => mirrored(host, remote, false),
            (Class::Explicit { host, .. }, _) => Decision::Denied(format!(
                "{name} is mirrored from {host} and is read-only here; push to a name without a registry host (e.g. team/{})",
                short(name)
            )),
            (Class::Default { .. }, _) if facts.local => Decision::Local,
            (Class::Default { host, remote, .. }, Action::Pull) => mirrored(host, remote, true),
            (Class::Default { protected: Some(why), .. }, Action::Push) => {
                Decision::Denied(format!("{why}; push under another name (e.g. team/{})", short(name)))
            }
            (Class::Default { host, remote, .. }, Action::Push) if facts.mirrored && !self.allow_shadowing => {
                Decision::Denied(format!(
                    "{name} holds content mirrored from {host} ({remote}); a push would shadow it for every client \
                     (mirror.allow_shadowing); push under another name (e.g. team/{})",
                    short(name)
                ))
            }
            (Class::Default { host, .. }, Action::Delete) if facts.mirrored => {
                Decision::Denied(format!("{name} is mirrored from {host}; mirrored content cannot be deleted"))
            }
            (Class::Default { .. }, _) => Decision::Local,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MirrorConfig, UpstreamConfig};

    fn namespace(tweak: impl FnOnce(&mut MirrorConfig)) -> Namespace {
        let mut cfg = MirrorConfig::default();
        cfg.upstreams.push(UpstreamConfig::new("ghcr.io", "https://ghcr.io"));
        cfg.upstreams.push(UpstreamConfig::new("registry.corp:5000", "https://registry.corp:5000"));
        tweak(&mut cfg);
        Namespace::new(&cfg)
    }

    fn n(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    fn explicit(host: &str, remote: &str) -> Class {
        Class::Explicit { host: host.into(), remote: remote.into() }
    }

    #[test]
    fn ns_wins_then_host_prefix_then_default() {
        let r = namespace(|_| {});
        assert_eq!(r.classify(&n("owner/img"), Some("ghcr.io")), explicit("ghcr.io", "owner/img"));
        assert_eq!(r.classify(&n("alpine"), Some("docker.io")), explicit("docker.io", "library/alpine"));
        assert_eq!(r.classify(&n("library/alpine"), Some("index.docker.io")), explicit("docker.io", "library/alpine"));
        assert_eq!(r.classify(&n("x"), Some("Registry.Corp:5000")), explicit("registry.corp:5000", "x"));
        assert_eq!(r.classify(&n("ghcr.io/owner/img"), None), explicit("ghcr.io", "owner/img"));
        assert_eq!(r.classify(&n("docker.io/alpine"), None), explicit("docker.io", "library/alpine"));
        assert!(matches!(r.classify(&n("team/app"), None), Class::Default { protected: None, .. }));
        // An ns that is no configured upstream is ignored.
        assert!(matches!(r.classify(&n("team/app"), Some("quay.io")), Class::Default { .. }));
        // What berth once stored a port-bearing host's images under is an ordinary name now.
        assert!(matches!(r.classify(&n("registry.corp-5000/x"), None), Class::Default { .. }));
    }

    /// The policy table: (name, ns, action, facts) → decision kind.
    #[test]
    fn decision_table() {
        use Action::*;
        let none = Facts::default();
        let local = Facts { local: true, mirrored: false };
        let mirrored = Facts { local: false, mirrored: true };
        #[derive(Debug, PartialEq)]
        enum K {
            Local,
            Mirrored(String, bool),
            Denied(&'static str),
        }
        let cases: Vec<(&str, Option<&str>, Action, Facts, K)> = vec![
            // Explicit names: mirrored, and read-only whatever the store holds.
            ("ghcr.io/owner/img", None, Pull, none, K::Mirrored("_mirror/ghcr.io/owner/img".into(), false)),
            ("x", Some("registry.corp:5000"), Pull, none, K::Mirrored("_mirror/registry.corp:5000/x".into(), false)),
            ("ghcr.io/owner/img", None, Push, local, K::Denied("read-only")),
            ("x", Some("ghcr.io"), Push, none, K::Denied("read-only")),
            ("x", Some("ghcr.io"), Delete, local, K::Denied("read-only")),
            // Default names without pushed content pull through the mirror.
            ("alpine", None, Pull, none, K::Mirrored("_mirror/docker.io/library/alpine".into(), true)),
            ("team/app", None, Pull, none, K::Mirrored("_mirror/docker.io/team/app".into(), true)),
            // Pushed content is local first, for every action.
            ("team/app", None, Pull, local, K::Local),
            ("team/app", None, Push, local, K::Local),
            ("team/app", None, Delete, local, K::Local),
            ("alpine", None, Push, local, K::Local),
            // Protected names: one-component and library/.
            ("alpine", None, Push, none, K::Denied("one-component")),
            ("library/alpine", None, Push, none, K::Denied("protected prefix")),
            ("library/alpine", None, Delete, mirrored, K::Denied("cannot be deleted")),
            // A name the mirror holds content for is not shadowed by a push.
            ("team/app", None, Push, mirrored, K::Denied("shadow")),
            ("team/app", None, Delete, mirrored, K::Denied("cannot be deleted")),
            // Nothing held: a first push makes it local; a delete finds nothing.
            ("team/new", None, Push, none, K::Local),
            ("team/new", None, Delete, none, K::Local),
        ];
        let r = namespace(|_| {});
        for (name, ns, action, facts, want) in cases {
            let name = n(name);
            let class = r.classify(&name, ns);
            let got = match r.decide(&name, &class, action, facts) {
                Decision::Local => K::Local,
                Decision::Mirrored { storage, implicit, .. } => K::Mirrored(storage.to_string(), implicit),
                Decision::Denied(why) => {
                    let expected = match &want {
                        K::Denied(part) => *part,
                        _ => "",
                    };
                    assert!(why.contains(expected), "{name} {action:?}: {why}");
                    K::Denied(expected)
                }
            };
            assert_eq!(got, want, "{name} ns={ns:?} {action:?} {facts:?}");
        }
    }

    #[test]
    fn configuration_relaxes_the_policy() {
        let r = namespace(|c| {
            c.protect_short_names = false;
            c.allow_shadowing = true;
        });
        let (alpine, app) = (n("myapp"), n("team/app"));
        let mirrored = Facts { local: false, mirrored: true };
        assert_eq!(r.decide(&alpine, &r.classify(&alpine, None), Action::Push, Facts::default()), Decision::Local);
        assert_eq!(r.decide(&app, &r.classify(&app, None), Action::Push, mirrored), Decision::Local);
        let off = namespace(|c| c.enabled = false);
        let name = n("library/alpine");
        assert_eq!(off.classify(&name, Some("docker.io")), Class::Unmirrored);
        assert_eq!(off.decide(&name, &Class::Unmirrored, Action::Push, Facts::default()), Decision::Local);
    }

    #[test]
    fn facts_are_looked_up_only_when_they_matter() {
        let r = namespace(|_| {});
        let explicit = r.classify(&n("ghcr.io/a/b"), None);
        assert_eq!(Namespace::needs_facts(&explicit, Action::Pull), (false, false));
        let default = r.classify(&n("team/app"), None);
        assert_eq!(Namespace::needs_facts(&default, Action::Pull), (true, false));
        assert_eq!(Namespace::needs_facts(&default, Action::Push), (true, true));
    }
}
