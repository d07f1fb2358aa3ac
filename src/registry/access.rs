//! Who may do what: one pure function of (caller, action, name, whether the
//! name is mirrored), next to the name-space policy (`namespace`), which has
//! already said what the name is. With authentication off, everyone may do
//! everything the name space allows. With it on (`auth.htpasswd`):
//!
//! - `auth.rules` are tried in order; the first whose `repositories` pattern
//!   matches the name decides: a caller may do an action if its list names
//!   them, `"*"` (any logged-in user) or `"anonymous"` (everyone);
//! - with no matching rule, mirrored content may be pulled by everyone (Docker
//!   sends no credentials to a `registry-mirrors` mirror), and pushed content
//!   needs a logged-in user for anything (pushed images are private, as behind
//!   registry:2's htpasswd).
//!
//! Not allowed: an anonymous caller is asked to log in (401 with the
//! challenge); a logged-in one is refused (403 `DENIED`).

use crate::config::{AccessRule, AuthConfig};
use crate::oci::RepoName;
use crate::registry::expiry::glob;

use super::Action;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Caller {
    Anonymous,
    User(String),
}

impl Caller {
    pub fn name(&self) -> &str {
        match self {
            Caller::Anonymous => "anonymous",
            Caller::User(u) => u,
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
    rules: Vec<AccessRule>,
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
    pub fn new(cfg: &AuthConfig) -> Self {
        Access { enabled: cfg.htpasswd.is_some(), rules: cfg.rules.clone() }
    }

    /// Whether callers must be told to log in at all (`GET /v2/` asks anonymous ones to).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn decide(&self, caller: &Caller, action: Action, name: &RepoName, mirrored: bool) -> Verdict {
        if !self.enabled {
            return Verdict::Allow;
        }
        let rule = self.rules.iter().find(|r| r.repositories.iter().any(|p| glob(p, name.as_str())));
        let allowed = match rule {
            Some(r) => names(
                match action {
                    Action::Pull => &r.pull,
                    Action::Push => &r.push,
                    Action::Delete => &r.delete,
                },
                caller,
            ),
            None => (mirrored && action == Action::Pull) || matches!(caller, Caller::User(_)),
        };
        match (allowed, caller) {
            (true, _) => Verdict::Allow,
            (false, Caller::Anonymous) => Verdict::Unauthorized,
            (false, Caller::User(u)) => {
                let verb = match action {
                    Action::Pull => "pull from",
                    Action::Push => "push to",
                    Action::Delete => "delete in",
                };
                Verdict::Denied(format!("{u} may not {verb} {name}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HtpasswdConfig;

    fn access(rules: Vec<AccessRule>) -> Access {
        Access::new(&AuthConfig { htpasswd: Some(HtpasswdConfig::default()), rules, ..Default::default() })
    }

    fn rule(repos: &[&str], pull: &[&str], push: &[&str], delete: &[&str]) -> AccessRule {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect();
        AccessRule { repositories: v(repos), pull: v(pull), push: v(push), delete: v(delete) }
    }

    /// (caller, action, name, mirrored) → verdict kind.
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
        let cases: Vec<(&Caller, Action, &str, bool, K)> = vec![
            // Defaults: mirrored content is everyone's to pull; pushed content needs a user.
            (&anon, Pull, "library/alpine", true, K::Allow),
            (&anon, Pull, "mine/app", false, K::Login),
            (&anon, Push, "mine/app", false, K::Login),
            (&anon, Delete, "mine/app", false, K::Login),
            (&bob, Pull, "mine/app", false, K::Allow),
            (&bob, Push, "mine/app", false, K::Allow),
            (&bob, Delete, "mine/app", false, K::Allow),
            // A public repository: anonymous pulls, only alice writes.
            (&anon, Pull, "public/tool", false, K::Allow),
            (&anon, Push, "public/tool", false, K::Login),
            (&bob, Push, "public/tool", false, K::Denied),
            (&alice, Push, "public/tool", false, K::Allow),
            // A team: every user pulls, alice and bob push, alice deletes.
            (&anon, Pull, "team/app", false, K::Login),
            (&bob, Pull, "team/app", false, K::Allow),
            (&bob, Push, "team/app", false, K::Allow),
            (&bob, Delete, "team/app", false, K::Denied),
            (&alice, Delete, "team/app", false, K::Allow),
            // A rule can close mirrored content too.
            (&anon, Pull, "docker.io/library/secret-tool", true, K::Login),
            (&bob, Pull, "docker.io/library/secret-tool", true, K::Denied),
            (&alice, Pull, "docker.io/library/secret-tool", true, K::Allow),
        ];
        for (caller, action, name, mirrored, want) in cases {
            let got = match a.decide(caller, action, &name.parse().unwrap(), mirrored) {
                Verdict::Allow => K::Allow,
                Verdict::Unauthorized => K::Login,
                Verdict::Denied(why) => {
                    assert!(why.contains(caller.name()) && why.contains(name), "{why}");
                    K::Denied
                }
            };
            assert_eq!(got, want, "{caller:?} {action:?} {name} mirrored={mirrored}");
        }
    }

    #[test]
    fn without_htpasswd_everything_is_allowed() {
        let a = Access::new(&AuthConfig::default());
        assert!(!a.enabled());
        assert_eq!(a.decide(&Caller::Anonymous, Action::Delete, &"x".parse().unwrap(), false), Verdict::Allow);
    }
}
