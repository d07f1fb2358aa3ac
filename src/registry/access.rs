//! Who may do what: one pure function of (caller, action, repository), next
//! to the name-space policy (`namespace`), which has already resolved the
//! repository into its one identity (`RepoId`), whatever the client's
//! spelling. With authentication off, everyone may do everything the name
//! space allows. With it on (`auth.htpasswd`):
//!
//! - `auth.rules` are tried in order; the first whose `repositories` pattern
//!   matches the repository decides (each pattern was resolved at load by the
//!   same policy, so `busybox`, `library/busybox` and
//!   `docker.io/library/busybox` are one rule): a caller may do an action if
//!   its list names them, `"*"` (any logged-in user) or `"anonymous"` (everyone);
//! - with no matching rule, mirrored content may be pulled by everyone (Docker
//!   sends no credentials to a `registry-mirrors` mirror), and pushed content
//!   needs a logged-in user for anything (pushed images are private, as behind
//!   registry:2's htpasswd).
//!
//! Not allowed: an anonymous caller is asked to log in (401 with the
//! challenge); a logged-in one is refused (403 `DENIED`).
//!
//! With an external token issuer instead (`auth.token`), the token's
//! `access` claim is the whole policy, as in registry:2: its repository names
//! are resolved by the same name-space policy as everything else (a grant
//! for `alpine` is one for `docker.io/library/alpine`), a push needs `pull`
//! and `push`, the catalog needs `registry:catalog:*`, and whatever is not
//! granted is a 401 whose challenge names the scope to ask the issuer for.

use crate::config::{AccessRule, AuthConfig};

use super::identity::{RepoId, RepoPattern};
use super::namespace::Namespace;
use super::Action;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Caller {
    Anonymous,
    User(String),
    /// The bearer of an external issuer's token, with what it grants.
    Token(std::sync::Arc<TokenGrants>),
}

impl Caller {
    pub fn name(&self) -> &str {
        match self {
            Caller::Anonymous => "anonymous",
            Caller::User(u) => u,
            Caller::Token(t) => &t.subject,
        }
    }

    /// The authenticated name (a user's, or a token's subject); `None` when anonymous.
    pub fn user(&self) -> Option<&str> {
        match self {
            Caller::Anonymous => None,
            other => Some(other.name()),
        }
    }
}

/// What an external token grants, its repository names resolved.
#[derive(Debug)]
pub struct TokenGrants {
    pub subject: String,
    repos: Vec<(Vec<RepoPattern>, Actions)>,
    catalog: bool,
    /// The token's signature: two callers are one when their tokens are.
    key: String,
}

impl PartialEq for TokenGrants {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for TokenGrants {}
impl std::hash::Hash for TokenGrants {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key.hash(state)
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Actions {
    pull: bool,
    push: bool,
    delete: bool,
}

impl TokenGrants {
    fn allows(&self, action: Action, repo: &RepoId) -> bool {
        let granted = self.repos.iter().filter(|(patterns, _)| patterns.iter().any(|p| p.matches(repo)));
        let mut all = Actions::default();
        for (_, a) in granted {
            all.pull |= a.pull;
            all.push |= a.push;
            all.delete |= a.delete;
        }
        match action {
            Action::Pull => all.pull,
            // registry:2 asks for both on a push.
            Action::Push => all.pull && all.push,
            Action::Delete => all.delete,
        }
    }
}

/// The policy's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Log in first (401 with the challenge).
    Unauthorized,
    /// Logged in, and not allowed (403).
    Denied(String),
}

pub struct Access {
    enabled: bool,
    /// `auth.token`: tokens' claims decide, and `namespace` resolves their names.
    tokens: bool,
    namespace: Namespace,
    rules: Vec<Rule>,
}

/// An access rule with its patterns resolved into the identity space.
struct Rule {
    patterns: Vec<RepoPattern>,
    who: AccessRule,
}

fn names(list: &[String], caller: &Caller) -> bool {
    list.iter().any(|who| match (who.as_str(), caller) {
        ("anonymous", _) => true,
        ("*", Caller::User(_)) => true,
        (user, Caller::User(u)) => user == u,
        _ => false,
    })
}

impl Access {
    /// The rules of `cfg`, their patterns resolved by `namespace`; a pattern
    /// it cannot resolve is an error that names the rule.
    pub fn new(cfg: &AuthConfig, namespace: &Namespace) -> Result<Self, String> {
        let rules = cfg
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut patterns = Vec::new();
                for p in &r.repositories {
                    patterns.extend(namespace.resolve_pattern(p).map_err(|e| format!("auth.rules[{i}]: {e}"))?);
                }
                Ok(Rule { patterns, who: r.clone() })
            })
            .collect::<Result<_, String>>()?;
        Ok(Access {
            enabled: cfg.htpasswd.is_some() || cfg.token.is_some(),
            tokens: cfg.token.is_some(),
            namespace: namespace.clone(),
            rules,
        })
    }

    /// The caller a verified token makes: its `access` claim, each
    /// repository name resolved as a request's would be (a name that is no
    /// repository name grants nothing). `key` tells tokens apart.
    pub fn token_caller(&self, claims: crate::jwt::Claims, key: &str) -> Caller {
        let mut grants =
            TokenGrants { subject: claims.subject, repos: Vec::new(), catalog: false, key: key.to_string() };
        for g in claims.access {
            let has = |a: &str| g.actions.iter().any(|x| x == a || x == "*");
            match g.kind.as_str() {
                "registry" if g.name == "catalog" && has("*") => grants.catalog = true,
                // Literal names only: a grant is never a wildcard pattern.
                "repository" if !g.name.contains(['*', '[', ']']) => {
                    if let Ok(patterns) = self.namespace.resolve_pattern(&g.name) {
                        let actions = Actions { pull: has("pull"), push: has("push"), delete: has("delete") };
                        grants.repos.push((patterns, actions));
                    }
                }
                _ => {}
            }
        }
        Caller::Token(std::sync::Arc::new(grants))
    }

    /// Whether `caller` sees `repo` in the catalog: what it may pull, or with
    /// external tokens, everything to a token granting `registry:catalog:*`.
    pub fn lists(&self, caller: &Caller, repo: &RepoId) -> bool {
        match (self.tokens, caller) {
            (true, Caller::Token(t)) => t.catalog,
            (true, _) => false,
            (false, _) => self.decide(caller, Action::Pull, repo) == Verdict::Allow,
        }
    }

    /// Whether `caller` may ask for the catalog at all (with external
    /// tokens, only with `registry:catalog:*`; otherwise anyone, who then sees
    /// what they may pull).
    pub fn may_list(&self, caller: &Caller) -> Verdict {
        match (self.tokens, caller) {
            (true, Caller::Token(t)) if t.catalog => Verdict::Allow,
            (true, _) => Verdict::Unauthorized,
            (false, _) => Verdict::Allow,
        }
    }

    /// Each rule's patterns in canonical form (what `berth config check` prints).
    pub fn describe(&self) -> Vec<String> {
        self.rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let patterns: Vec<String> = r.patterns.iter().map(|p| p.to_string()).collect();
                format!("auth.rules[{i}] {:?} covers: {}", r.who.repositories, patterns.join(", "))
            })
            .collect()
    }

    /// Whether callers must be told to log in at all (`GET /v2/` asks anonymous ones to).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn decide(&self, caller: &Caller, action: Action, repo: &RepoId) -> Verdict {
        if !self.enabled {
            return Verdict::Allow;
        }
        if self.tokens {
            return match caller {
                Caller::Token(t) if t.allows(action, repo) => Verdict::Allow,
                // registry:2 answers every refusal 401, so the client asks the issuer for the scope.
                _ => Verdict::Unauthorized,
            };
        }
        let rule = self.rules.iter().find(|r| r.patterns.iter().any(|p| p.matches(repo)));
        let allowed = match rule {
            Some(Rule { who, .. }) => names(
                match action {
                    Action::Pull => &who.pull,
                    Action::Push => &who.push,
                    Action::Delete => &who.delete,
                },
                caller,
            ),
            None => (repo.is_mirrored() && action == Action::Pull) || matches!(caller, Caller::User(_)),
        };
        match (allowed, caller) {
            (true, _) => Verdict::Allow,
            (false, Caller::Anonymous | Caller::Token(_)) => Verdict::Unauthorized,
            (false, Caller::User(u)) => {
                let verb = match action {
                    Action::Pull => "pull from",
                    Action::Push => "push to",
                    Action::Delete => "delete in",
                };
                Verdict::Denied(format!("{u} may not {verb} {repo}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HtpasswdConfig, MirrorConfig, UpstreamConfig};
    use crate::registry::namespace::{Decision, Facts};

    fn namespace() -> Namespace {
        let mut cfg = MirrorConfig::default();
        cfg.upstreams.push(UpstreamConfig::new("ghcr.io", "https://ghcr.io"));
        cfg.upstreams.push(UpstreamConfig::new("registry.corp:5000", "https://registry.corp:5000"));
        Namespace::new(&cfg)
    }

    fn access(rules: Vec<AccessRule>) -> Access {
        let cfg = AuthConfig { htpasswd: Some(HtpasswdConfig::default()), rules, ..Default::default() };
        Access::new(&cfg, &namespace()).unwrap()
    }

    fn rule(repos: &[&str], pull: &[&str], push: &[&str], delete: &[&str]) -> AccessRule {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect();
        AccessRule { repositories: v(repos), pull: v(pull), push: v(push), delete: v(delete) }
    }

    fn local(name: &str) -> RepoId {
        RepoId::Local(name.parse().unwrap())
    }

    fn hub(remote: &str) -> RepoId {
        RepoId::Mirrored { host: "docker.io".into(), remote: remote.parse().unwrap() }
    }

    /// (caller, action, repository) → verdict kind.
    #[test]
    fn decision_table() {
        use Action::*;
        let anon = Caller::Anonymous;
        let alice = Caller::User("alice".into());
        let bob = Caller::User("bob".into());
        let a = access(vec![
            rule(&["public/*"], &["anonymous"], &["alice"], &["alice"]),
            rule(&["team/*"], &["*"], &["alice", "bob"], &["alice"]),
            rule(&["docker.io/library/secret*"], &["alice"], &[], &[]),
        ]);
        #[derive(Debug, PartialEq)]
        enum K {
            Allow,
            Login,
            Denied,
        }
        let cases: Vec<(&Caller, Action, RepoId, K)> = vec![
            // Defaults: mirrored content is everyone's to pull; pushed content needs a user.
            (&anon, Pull, hub("library/alpine"), K::Allow),
            (&anon, Pull, local("mine/app"), K::Login),
            (&anon, Push, local("mine/app"), K::Login),
            (&anon, Delete, local("mine/app"), K::Login),
            (&bob, Pull, local("mine/app"), K::Allow),
            (&bob, Push, local("mine/app"), K::Allow),
            (&bob, Delete, local("mine/app"), K::Allow),
            // A public repository: anonymous pulls, only alice writes.
            (&anon, Pull, local("public/tool"), K::Allow),
            (&anon, Push, local("public/tool"), K::Login),
            (&bob, Push, local("public/tool"), K::Denied),
            (&alice, Push, local("public/tool"), K::Allow),
            // A team: every user pulls, alice and bob push, alice deletes.
            (&anon, Pull, local("team/app"), K::Login),
            (&bob, Pull, local("team/app"), K::Allow),
            (&bob, Push, local("team/app"), K::Allow),
            (&bob, Delete, local("team/app"), K::Denied),
            (&alice, Delete, local("team/app"), K::Allow),
            // A rule without a host covers the default upstream's copy of the name too.
            (&anon, Pull, hub("team/app"), K::Login),
            // A rule can close mirrored content too.
            (&anon, Pull, hub("library/secret-tool"), K::Login),
            (&bob, Pull, hub("library/secret-tool"), K::Denied),
            (&alice, Pull, hub("library/secret-tool"), K::Allow),
            // ... and only the repositories it names: a pushed library/secret-tool is another one.
            (&bob, Pull, local("library/secret-tool"), K::Allow),
        ];
        for (caller, action, repo, want) in cases {
            let got = match a.decide(caller, action, &repo) {
                Verdict::Allow => K::Allow,
                Verdict::Unauthorized => K::Login,
                Verdict::Denied(why) => {
                    assert!(why.contains(caller.name()) && why.contains(&repo.to_string()), "{why}");
                    K::Denied
                }
            };
            assert_eq!(got, want, "{caller:?} {action:?} {repo}");
        }
    }

    /// One decision per repository: every spelling a client can use, against
    /// a rule written in every spelling, resolved through the name-space
    /// policy as a request is.
    #[test]
    fn every_spelling_gets_one_answer() {
        let ns = namespace();
        let spellings: [(&str, Option<&str>); 7] = [
            ("busybox", None),
            ("library/busybox", None),
            ("docker.io/library/busybox", None),
            ("docker.io/busybox", None),
            ("index.docker.io/library/busybox", None),
            ("registry-1.docker.io/library/busybox", None),
            ("busybox", Some("docker.io")),
        ];
        let rules = ["bus*", "library/bus*", "docker.io/library/bus*", "index.docker.io/library/busybox", "busybox"];
        for pattern in rules {
            let a = access(vec![rule(&[pattern], &["alice"], &[], &[])]);
            for (name, q) in spellings {
                let name = name.parse().unwrap();
                let class = ns.classify(&name, q).unwrap();
                let Decision::Serve { id, .. } = ns.decide(&name, &class, Action::Pull, Facts::default()) else {
                    panic!("{name} is served")
                };
                assert_eq!(id, hub("library/busybox"), "{name} {q:?}");
                assert_eq!(
                    a.decide(&Caller::Anonymous, Action::Pull, &id),
                    Verdict::Unauthorized,
                    "{pattern} vs {name}"
                );
                assert!(matches!(a.decide(&Caller::User("bob".into()), Action::Pull, &id), Verdict::Denied(_)));
                assert_eq!(a.decide(&Caller::User("alice".into()), Action::Pull, &id), Verdict::Allow);
            }
        }
        // A port-bearing upstream, reached only by ns, and by its rule in any case.
        let a = access(vec![rule(&["registry.corp:5000/team/*"], &["alice"], &[], &[])]);
        let name = "team/app".parse().unwrap();
        let class = ns.classify(&name, Some("Registry.Corp:5000")).unwrap();
        let Decision::Serve { id, .. } = ns.decide(&name, &class, Action::Pull, Facts::default()) else { panic!() };
        assert_eq!(a.decide(&Caller::Anonymous, Action::Pull, &id), Verdict::Unauthorized);
    }

    #[test]
    fn unresolvable_patterns_are_refused_at_load() {
        let cfg = AuthConfig {
            htpasswd: Some(HtpasswdConfig::default()),
            rules: vec![rule(&["*/app"], &["alice"], &[], &[])],
            ..Default::default()
        };
        let e = Access::new(&cfg, &namespace()).err().unwrap();
        assert!(e.contains("auth.rules[0]") && e.contains("ambiguous"), "{e}");
        let a = access(vec![rule(&["library/bus*"], &["alice"], &[], &[])]);
        assert_eq!(
            a.describe(),
            vec![r#"auth.rules[0] ["library/bus*"] covers: library/bus* (pushed), docker.io/library/bus*"#]
        );
    }

    #[test]
    fn without_htpasswd_everything_is_allowed() {
        let a = Access::new(&AuthConfig::default(), &namespace()).unwrap();
        assert!(!a.enabled());
        assert_eq!(a.decide(&Caller::Anonymous, Action::Delete, &local("x")), Verdict::Allow);
    }

    /// The README's table of patterns, and its `berth config check` example,
    /// say what berth reads (with only Docker Hub mirrored, as by default).
    #[test]
    fn readme_pattern_table_is_what_berth_reads() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
        let table = readme.split("<!-- patterns:").nth(1).unwrap().split("<!-- /patterns -->").next().unwrap();
        let ticked = |cell: &str| cell.split('`').skip(1).step_by(2).map(str::to_string).collect::<Vec<_>>();
        let hub_only = Namespace::new(&MirrorConfig::default());
        let mut rows = 0;
        for line in table.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split('|').collect();
            let pattern = ticked(cells[1]).remove(0);
            let rules = vec![rule(&[&pattern], &[], &[], &[])];
            let cfg = AuthConfig { htpasswd: Some(HtpasswdConfig::default()), rules, ..Default::default() };
            let described = Access::new(&cfg, &hub_only).unwrap().describe().remove(0);
            let expected = format!("auth.rules[0] {:?} covers: {}", [&pattern], ticked(cells[2]).join(", "));
            assert_eq!(described, expected, "README row: {line}");
            rows += 1;
        }
        assert!(rows >= 8, "the README shows its pattern table");
        let example = readme.lines().find(|l| l.starts_with("#   auth.rules[0]")).unwrap();
        let cfg = AuthConfig {
            htpasswd: Some(HtpasswdConfig::default()),
            rules: vec![rule(&["tools/*"], &[], &[], &[])],
            ..Default::default()
        };
        assert_eq!(example, format!("#   {}", Access::new(&cfg, &hub_only).unwrap().describe()[0]));
    }
}
