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
//!   and whether the mirror holds content under it. What it serves is a
//!   `RepoId` (`identity`): the one identity every later decision takes.
//! - `resolve_pattern` reads configured patterns (access rules, pins) the
//!   same way, so a rule means repositories, not spellings.
//!
//! | class                    | pull                              | push                                   | delete                 |
//! |--------------------------|-----------------------------------|----------------------------------------|------------------------|
//! | mirroring off            | local                             | local                                  | local                  |
//! | explicit (`ns`, host/)   | mirrored                          | DENIED (read-only mirror)              | DENIED                 |
//! | `ns` of another registry | NAME_UNKNOWN (not mirrored here)  | DENIED                                 | DENIED                 |
//! | another host/ prefix     | local if pushed, else NAME_UNKNOWN | local                                 | local                  |
//! | default, pushed content  | local                             | local                                  | local                  |
//! | default, protected       | mirrored (implicit)               | DENIED (protected)                     | DENIED if mirrored, else local |
//! | default, mirror holds it | mirrored (implicit)               | DENIED unless `allow_shadowing`        | DENIED                 |
//! | default, nothing held    | mirrored (implicit)               | local                                  | local (→ unknown)      |
//!
//! Mirrored content lives under `store::layout::mirror_repository`, a storage
//! name no client can send, so no write can ever land there.

use crate::config::MirrorConfig;
use crate::oci::{OciCode, ParseError, RepoName};

use super::identity::{glob, RepoId, RepoPattern};

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
    Explicit { host: String, remote: RepoName },
    /// `?ns=` names a registry berth does not mirror: nothing here is its
    /// content (containerd then falls back to its next host).
    NotMirrored { host: String },
    /// The first component is a host berth does not mirror
    /// (`quay.io/org/app`): only pushed content can be there, never the
    /// default upstream's (Docker Hub has no such names).
    ForeignHost { host: String },
    /// No host named: mirrored from the default upstream unless the name
    /// holds pushed content. `remote` is `None` when the upstream name would
    /// be invalid (`library/` + 250 characters); `protected` says why pushes
    /// are refused, if they are.
    Default { host: String, remote: Option<RepoName>, protected: Option<String> },
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
    /// Served as the repository `id`. For mirrored content, `implicit` says
    /// it is routed to the default upstream only because nothing is pushed
    /// under the name yet: a pushing client's existence checks (HEAD) are
    /// answered from the store and never fail because of the upstream.
    Serve { id: RepoId, implicit: bool },
    /// Not allowed here (403 `DENIED`), and why.
    Denied(String),
    /// No repository here can be this one (404 `NAME_UNKNOWN`), and why.
    Unknown(String),
    /// The name cannot exist where it is routed (400 `NAME_INVALID`).
    Invalid(String),
}

#[derive(Debug, Clone)]
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

/// Whether a first path component is a registry host, as Docker reads a
/// reference: it has a dot or a port, or is `localhost`.
fn looks_like_host(first: &str) -> bool {
    first.contains(['.', ':']) || first == "localhost"
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

    /// The name as the upstream knows it (Docker Hub's one-component names are `library/…`).
    fn remote_text(host: &str, name: &str) -> String {
        if host == "docker.io" && !name.contains('/') {
            format!("library/{name}")
        } else {
            name.to_string()
        }
    }

    fn remote_name(host: &str, name: &str) -> Result<RepoName, ParseError> {
        let remote = Self::remote_text(host, name);
        remote.parse().map_err(|_| {
            ParseError::new(
                OciCode::NameInvalid,
                format!("{name} would be {remote} on {host}, which is not a valid repository name there"),
            )
        })
    }

    /// What `name` is, from its shape and `?ns=` alone.
    pub fn classify(&self, name: &RepoName, ns: Option<&str>) -> Result<Class, ParseError> {
        if !self.enabled {
            return Ok(Class::Unmirrored);
        }
        if let Some(ns) = ns {
            return Ok(match self.canonical_host(ns) {
                Some(host) => {
                    Class::Explicit { host: host.to_string(), remote: Self::remote_name(host, name.as_str())? }
                }
                None => Class::NotMirrored { host: ns.to_ascii_lowercase() },
            });
        }
        if let Some((first, rest)) = name.as_str().split_once('/') {
            if let Some(host) = self.canonical_host(first) {
                return Ok(Class::Explicit { host: host.to_string(), remote: Self::remote_name(host, rest)? });
            }
            if looks_like_host(first) {
                return Ok(Class::ForeignHost { host: first.to_string() });
            }
        }
        let remote = Self::remote_name(&self.default, name.as_str()).ok();
        let upstream = Self::remote_text(&self.default, name.as_str());
        let protected = if self.protect_short_names && !name.as_str().contains('/') {
            Some(format!(
                "{name} is {upstream} on {}: one-component names are mirrored (mirror.protect_short_names)",
                self.default
            ))
        } else {
            self.protected_prefixes
                .iter()
                .find(|p| name.as_str().starts_with(p.as_str()))
                .map(|p| format!("{name} is under the protected prefix {p:?}, mirrored from {}", self.default))
        };
        Ok(Class::Default { host: self.default.clone(), remote, protected })
    }

    /// Whether `decide` needs the store's facts for this class and action
    /// (the façade skips the lookups otherwise).
    pub fn needs_facts(class: &Class, action: Action) -> (bool, bool) {
        match (class, action) {
            (Class::Default { .. }, Action::Pull) | (Class::ForeignHost { .. }, Action::Pull) => (true, false),
            (Class::Default { .. }, _) => (true, true),
            _ => (false, false),
        }
    }

    /// Where a class's mirrored copy would be stored, for the `mirrored` fact.
    pub fn default_mirror(class: &Class) -> Option<RepoId> {
        match class {
            Class::Default { host, remote: Some(remote), .. } => {
                Some(RepoId::Mirrored { host: host.clone(), remote: remote.clone() })
            }
            _ => None,
        }
    }

    /// The decision for `action` on `name` of class `class`, given what the store knows.
    pub fn decide(&self, name: &RepoName, class: &Class, action: Action, facts: Facts) -> Decision {
        let local = || Decision::Serve { id: RepoId::Local(name.clone()), implicit: false };
        let mirrored = |host: &str, remote: &RepoName, implicit| Decision::Serve {
            id: RepoId::Mirrored { host: host.to_string(), remote: remote.clone() },
            implicit,
        };
        match (class, action) {
            (Class::Unmirrored, _) => local(),
            (Class::Explicit { host, remote }, Action::Pull) => mirrored(host, remote, false),
            (Class::Explicit { host, .. }, _) => Decision::Denied(format!(
                "{name} is mirrored from {host} and is read-only here; push to a name without a registry host (e.g. team/{})",
                short(name)
            )),
            (Class::NotMirrored { host }, Action::Pull) => {
                Decision::Unknown(format!("{name}: this registry does not mirror {host}"))
            }
            (Class::NotMirrored { host }, _) => {
                Decision::Denied(format!("{name}: this registry does not mirror {host}; push without ?ns="))
            }
            (Class::ForeignHost { host }, Action::Pull) if !facts.local => Decision::Unknown(format!(
                "{name}: this registry does not mirror {host}, and nothing was pushed under that name"
            )),
            (Class::ForeignHost { .. }, _) => local(),
            (Class::Default { .. }, _) if facts.local => local(),
            (Class::Default { remote: None, host, .. }, Action::Pull) => {
                Decision::Invalid(format!("{name} cannot name a repository of {host}: its name there is too long"))
            }
            (Class::Default { host, remote: Some(remote), .. }, Action::Pull) => mirrored(host, remote, true),
            (Class::Default { protected: Some(why), .. }, Action::Push) => {
                Decision::Denied(format!("{why}; push under another name (e.g. team/{})", short(name)))
            }
            (Class::Default { host, remote, .. }, Action::Push) if facts.mirrored && !self.allow_shadowing => {
                let remote = remote.as_ref().map_or(name.as_str(), RepoName::as_str);
                Decision::Denied(format!(
                    "{name} holds content mirrored from {host} ({remote}); a push would shadow it for every client \
                     (mirror.allow_shadowing); push under another name (e.g. team/{})",
                    short(name)
                ))
            }
            (Class::Default { host, .. }, Action::Delete) if facts.mirrored => {
                Decision::Denied(format!("{name} is mirrored from {host}; mirrored content cannot be deleted"))
            }
            (Class::Default { .. }, _) => local(),
        }
    }

    /// Whether anything is mirrored at all.
    pub fn mirroring(&self) -> bool {
        self.enabled
    }

    /// A configured repository pattern (an access rule's, a pin's), written
    /// in any spelling a client may use, resolved into the identity space the
    /// way `classify` resolves a name: `busybox`, `library/busybox` and
    /// `docker.io/library/busybox` are one repository; a pattern with no
    /// host names both the pushed repositories of that name and the default
    /// upstream's. A pattern whose first component is a wildcard that could
    /// stand for an upstream host is ambiguous and refused.
    pub fn resolve_pattern(&self, p: &str) -> Result<Vec<RepoPattern>, String> {
        let valid = !p.is_empty()
            && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/*:[]".contains(&b))
            && !p.split('/').any(str::is_empty);
        if !valid {
            return Err(format!(
                "{p:?} is not a repository pattern: lowercase name components separated by '/', with '*' for any run"
            ));
        }
        if !self.enabled {
            return Ok(vec![RepoPattern::Local(p.to_string())]);
        }
        // The upstream names a pattern covers: as a name, with `library/`
        // for a one-component one on Docker Hub; a one-component pattern
        // with `*` (`bus*`) also covers the nested names a client spells the
        // same way (`busy/box` is Docker Hub's `busy/box`), and `*` alone is
        // every repository of the host.
        let mirrored = |host: &str, remote: &str| {
            let named = Self::remote_text(host, remote);
            let mut v = vec![RepoPattern::Mirrored { host: host.to_string(), remote: named.clone() }];
            if remote.contains('*') && named != remote {
                v.push(RepoPattern::Mirrored { host: host.to_string(), remote: remote.to_string() });
            }
            if remote == "*" {
                v = vec![RepoPattern::Mirrored { host: host.to_string(), remote: "*".into() }];
            }
            v
        };
        if p == "*" {
            let every = self.hosts.iter().flat_map(|h| mirrored(h, "*"));
            return Ok(std::iter::once(RepoPattern::Local("*".into())).chain(every).collect());
        }
        if let Some((first, rest)) = p.split_once('/') {
            if first.contains('*') {
                let mut hosts = self.hosts.iter().map(String::as_str).chain(DOCKER_HUB_ALIASES);
                if let Some(host) = hosts.find(|h| glob(first, h)) {
                    return Err(format!(
                        "{p:?} is ambiguous: its first component could be the upstream {host} or a name on {}; \
                         write the host (e.g. {}/{p} or {host}/{rest})",
                        self.default, self.default
                    ));
                }
            }
            if let Some(host) = self.canonical_host(first) {
                return Ok(mirrored(host, rest));
            }
            if looks_like_host(first) {
                return Ok(vec![RepoPattern::Local(p.to_string())]);
            }
        }
        Ok(std::iter::once(RepoPattern::Local(p.to_string())).chain(mirrored(&self.default, p)).collect())
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
        Class::Explicit { host: host.into(), remote: n(remote) }
    }

    #[test]
    fn ns_wins_then_host_prefix_then_default() {
        let r = namespace(|_| {});
        let c = |name: &str, ns: Option<&str>| r.classify(&n(name), ns).unwrap();
        assert_eq!(c("owner/img", Some("ghcr.io")), explicit("ghcr.io", "owner/img"));
        assert_eq!(c("alpine", Some("docker.io")), explicit("docker.io", "library/alpine"));
        assert_eq!(c("library/alpine", Some("index.docker.io")), explicit("docker.io", "library/alpine"));
        assert_eq!(c("x", Some("Registry.Corp:5000")), explicit("registry.corp:5000", "x"));
        assert_eq!(c("ghcr.io/owner/img", None), explicit("ghcr.io", "owner/img"));
        assert_eq!(c("docker.io/alpine", None), explicit("docker.io", "library/alpine"));
        assert!(matches!(c("team/app", None), Class::Default { protected: None, .. }));
        // An ns that is no configured upstream is not the default upstream's.
        assert_eq!(c("team/app", Some("quay.io")), Class::NotMirrored { host: "quay.io".into() });
        // Nor is a host prefix of a registry berth does not mirror.
        assert_eq!(c("quay.io/org/app", None), Class::ForeignHost { host: "quay.io".into() });
        assert_eq!(c("registry.corp-5000/x", None), Class::ForeignHost { host: "registry.corp-5000".into() });
        // A one-component name whose upstream name would be too long.
        let long = "a".repeat(250);
        assert!(matches!(c(&long, None), Class::Default { remote: None, .. }));
        assert_eq!(r.classify(&n(&long), Some("docker.io")).unwrap_err().code, OciCode::NameInvalid);
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
            Unknown,
            Invalid,
        }
        let long = "a".repeat(250);
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
            // A registry berth does not mirror: never the default upstream.
            ("org/app", Some("quay.io"), Pull, local, K::Unknown),
            ("org/app", Some("quay.io"), Push, none, K::Denied("does not mirror")),
            ("quay.io/org/app", None, Pull, none, K::Unknown),
            ("quay.io/org/app", None, Push, none, K::Local),
            ("quay.io/org/app", None, Pull, local, K::Local),
            // An upstream name that cannot exist is invalid, with no upstream request.
            (&long, None, Pull, none, K::Invalid),
        ];
        let r = namespace(|_| {});
        for (name, ns, action, facts, want) in cases {
            let name = n(name);
            let class = r.classify(&name, ns).unwrap();
            let got = match r.decide(&name, &class, action, facts) {
                Decision::Serve { id: RepoId::Local(l), .. } => {
                    assert_eq!(l, name);
                    K::Local
                }
                Decision::Serve { id, implicit } => K::Mirrored(id.storage().to_string(), implicit),
                Decision::Unknown(_) => K::Unknown,
                Decision::Invalid(_) => K::Invalid,
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
        let local = |name: &RepoName| Decision::Serve { id: RepoId::Local(name.clone()), implicit: false };
        let c = |name: &RepoName| r.classify(name, None).unwrap();
        assert_eq!(r.decide(&alpine, &c(&alpine), Action::Push, Facts::default()), local(&alpine));
        assert_eq!(r.decide(&app, &c(&app), Action::Push, mirrored), local(&app));
        let off = namespace(|c| c.enabled = false);
        let name = n("library/alpine");
        assert_eq!(off.classify(&name, Some("docker.io")).unwrap(), Class::Unmirrored);
        assert_eq!(off.decide(&name, &Class::Unmirrored, Action::Push, Facts::default()), local(&name));
    }

    #[test]
    fn facts_are_looked_up_only_when_they_matter() {
        let r = namespace(|_| {});
        let explicit = r.classify(&n("ghcr.io/a/b"), None).unwrap();
        assert_eq!(Namespace::needs_facts(&explicit, Action::Pull), (false, false));
        let default = r.classify(&n("team/app"), None).unwrap();
        assert_eq!(Namespace::needs_facts(&default, Action::Pull), (true, false));
        assert_eq!(Namespace::needs_facts(&default, Action::Push), (true, true));
    }

    /// Every spelling of one pattern resolves to the same patterns.
    #[test]
    fn patterns_resolve_like_names() {
        let r = namespace(|_| {});
        let show = |p: &str| r.resolve_pattern(p).unwrap().iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let hub = vec!["docker.io/library/bus*".to_string()];
        assert_eq!(show("docker.io/library/bus*"), hub);
        assert_eq!(show("index.docker.io/library/bus*"), hub);
        assert_eq!(show("registry-1.docker.io/bus*"), vec!["docker.io/library/bus*", "docker.io/bus*"]);
        assert_eq!(show("library/bus*"), vec!["library/bus* (pushed)", "docker.io/library/bus*"]);
        assert_eq!(show("bus*"), vec!["bus* (pushed)", "docker.io/library/bus*", "docker.io/bus*"]);
        assert_eq!(show("busybox"), vec!["busybox (pushed)", "docker.io/library/busybox"]);
        assert_eq!(show("team/*"), vec!["team/* (pushed)", "docker.io/team/*"]);
        assert_eq!(show("ghcr.io/owner/*"), vec!["ghcr.io/owner/*"]);
        assert_eq!(show("registry.corp:5000/x"), vec!["registry.corp:5000/x"]);
        assert_eq!(show("docker.io/*"), vec!["docker.io/*"]);
        assert_eq!(show("quay.io/org/*"), vec!["quay.io/org/* (pushed)"]);
        assert_eq!(show("*"), vec!["* (pushed)", "docker.io/*", "ghcr.io/*", "registry.corp:5000/*"]);
        for ambiguous in ["*/app", "gh*/owner/img", "*.io/x"] {
            let e = r.resolve_pattern(ambiguous).unwrap_err();
            assert!(e.contains("ambiguous"), "{ambiguous}: {e}");
        }
        for bad in ["", "Team/app", "a//b", "a b"] {
            assert!(r.resolve_pattern(bad).is_err(), "{bad:?}");
        }
        let off = namespace(|c| c.enabled = false);
        assert_eq!(off.resolve_pattern("docker.io/x").unwrap(), vec![RepoPattern::Local("docker.io/x".into())]);
    }
}
