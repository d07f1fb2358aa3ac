//! Which tags may not move (`[[immutable]]`): the one owner of that
//! decision, asked by a manifest push by tag and by every delete. A rule
//! names repositories (patterns over the one identity, resolved at load as
//! access rules are) and tag patterns (`*` for any run; a pattern starting
//! with `!` is a mutable exception, e.g. `["*", "!latest"]`). A tag some rule
//! covers may be pushed once; pushing the same manifest again is allowed,
//! pointing it elsewhere is not, and deleting it (or the manifest it names)
//! is allowed only with the rule's `allow_delete`.

use crate::config::ImmutableRule;

use super::identity::{glob, RepoId, RepoPattern};
use super::namespace::Namespace;

struct Rule {
    patterns: Vec<RepoPattern>,
    tags: Vec<String>,
    except: Vec<String>,
    allow_delete: bool,
    /// How errors name it: `immutable[0] (tags ["v*"])`.
    shown: String,
}

#[derive(Default)]
pub struct Immutable {
    rules: Vec<Rule>,
}

impl Immutable {
    /// The rules of `cfg`, resolved by `namespace`; an error names a bad rule.
    pub fn new(cfg: &[ImmutableRule], namespace: &Namespace) -> Result<Immutable, String> {
        let mut rules = Vec::new();
        for (i, r) in cfg.iter().enumerate() {
            let mut patterns = Vec::new();
            for p in &r.repositories {
                patterns.extend(namespace.resolve_pattern(p).map_err(|e| format!("immutable[{i}]: {e}"))?);
            }
            if r.tags.is_empty() {
                return Err(format!("immutable[{i}]: tags is empty (\"*\" makes every tag immutable)"));
            }
            let (except, tags): (Vec<String>, Vec<String>) = r.tags.iter().cloned().partition(|t| t.starts_with('!'));
            let except = except.into_iter().map(|t| t[1..].to_string()).collect();
            rules.push(Rule {
                patterns,
                tags,
                except,
                allow_delete: r.allow_delete,
                shown: format!("immutable[{i}] (tags {:?})", r.tags),
            });
        }
        Ok(Immutable { rules })
    }

    fn rule(&self, repo: &RepoId, tag: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| {
            r.patterns.iter().any(|p| p.matches(repo))
                && r.tags.iter().any(|t| glob(t, tag))
                && !r.except.iter().any(|t| glob(t, tag))
        })
    }

    /// Why `tag` of `repo`, now at `current`, may not be pointed at `new`
    /// (`None`: it may; a tag not there yet, or the same manifest again, always may).
    pub fn refuses_move(&self, repo: &RepoId, tag: &str, current: Option<&str>, new: &str) -> Option<String> {
        let current = current.filter(|c| *c != new)?;
        let rule = self.rule(repo, tag)?;
        Some(format!(
            "tag {tag} of {repo} is immutable by {}: it names {current} and cannot be moved to {new}",
            rule.shown
        ))
    }

    /// Why `tag` of `repo` may not be deleted (`None`: it may).
    pub fn refuses_delete(&self, repo: &RepoId, tag: &str) -> Option<String> {
        let rule = self.rule(repo, tag).filter(|r| !r.allow_delete)?;
        Some(format!("tag {tag} of {repo} is immutable by {} and its rule does not allow deletes", rule.shown))
    }

    /// Each rule in canonical form (what `berth config check` prints).
    pub fn describe(&self) -> Vec<String> {
        self.rules
            .iter()
            .map(|r| {
                let patterns: Vec<String> = r.patterns.iter().map(ToString::to_string).collect();
                let deletes = if r.allow_delete { "deletes allowed" } else { "no deletes" };
                format!("{} covers: {}; {deletes}", r.shown, patterns.join(", "))
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(cfg: &[(&[&str], &[&str], bool)]) -> Immutable {
        let cfg: Vec<ImmutableRule> = cfg
            .iter()
            .map(|(r, t, d)| ImmutableRule {
                repositories: r.iter().map(|s| s.to_string()).collect(),
                tags: t.iter().map(|s| s.to_string()).collect(),
                allow_delete: *d,
            })
            .collect();
        Immutable::new(&cfg, &Namespace::new(&crate::config::MirrorConfig::default())).unwrap()
    }

    #[test]
    fn releases_stay_put_latest_moves_and_deletes_follow_the_rule() {
        let im = rules(&[(&["team/*"], &["v*", "!v*-rc*"], false), (&["ci/*"], &["*", "!latest"], true)]);
        let app = RepoId::Local("team/app".parse().unwrap());
        let ci = RepoId::Local("ci/build".parse().unwrap());
        let other = RepoId::Local("other/app".parse().unwrap());
        assert!(im.refuses_move(&app, "v1", Some("sha256:a"), "sha256:b").unwrap().contains("immutable[0]"));
        assert_eq!(im.refuses_move(&app, "v1", Some("sha256:a"), "sha256:a"), None, "the same manifest again");
        assert_eq!(im.refuses_move(&app, "v1", None, "sha256:b"), None, "a first push");
        assert_eq!(im.refuses_move(&app, "v2-rc1", Some("sha256:a"), "sha256:b"), None, "an exception");
        assert_eq!(im.refuses_move(&app, "main", Some("sha256:a"), "sha256:b"), None);
        assert_eq!(im.refuses_move(&other, "v1", Some("sha256:a"), "sha256:b"), None);
        assert!(im.refuses_move(&ci, "build-7", Some("sha256:a"), "sha256:b").is_some());
        assert_eq!(im.refuses_move(&ci, "latest", Some("sha256:a"), "sha256:b"), None);
        assert!(im.refuses_delete(&app, "v1").is_some());
        assert_eq!(im.refuses_delete(&ci, "build-7"), None, "allow_delete");
        assert_eq!(im.refuses_delete(&app, "main"), None);
    }
}
