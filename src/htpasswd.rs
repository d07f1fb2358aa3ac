//! Users from an htpasswd file of bcrypt lines (`user:$2y$…`, as `htpasswd -B`
//! and `berth htpasswd` write them). Weaker hashes (MD5 `$apr1$`, SHA1
//! `{SHA}`, crypt, plain) are refused when the file is loaded, naming the
//! line. The file is read again when it changes; a change that does not
//! parse keeps the users already loaded (and says why in the log).
//!
//! Checking a password costs a bcrypt verification (tens of milliseconds by
//! design), so successes are remembered for a while, keyed by a SHA-256 of
//! user and password (never the password itself). An unknown user costs the
//! same bcrypt work as a known one, so timing tells nothing about who exists.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, SystemTime};

use sha2::Digest as _;

/// How long a verified user and password are trusted without bcrypt.
const VERIFIED_TTL: Duration = Duration::from_secs(300);

/// The bcrypt cost `berth htpasswd` uses: ~50 ms a check on a current core.
pub const DEFAULT_COST: u32 = 10;

struct Users {
    modified: Option<SystemTime>,
    hashes: HashMap<String, String>,
}

pub struct Htpasswd {
    path: PathBuf,
    users: RwLock<Users>,
    /// Keys of (user, password) pairs verified lately, with the file version they were checked against.
    verified: moka::sync::Cache<[u8; 32], ()>,
    /// Verified for users that do not exist, so that they cost the same.
    decoy: String,
}

/// Parses htpasswd content; refuses anything but bcrypt.
pub fn parse(content: &str) -> Result<HashMap<String, String>, String> {
    let mut users = HashMap::new();
    for (i, line) in content.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (user, hash) = line.split_once(':').ok_or_else(|| format!("line {}: expected user:hash", i + 1))?;
        if user.is_empty() {
            return Err(format!("line {}: empty user name", i + 1));
        }
        let bcrypt = ["$2a$", "$2b$", "$2x$", "$2y$"].iter().any(|p| hash.starts_with(p));
        if !bcrypt || bcrypt::HashParts::from_str_checked(hash).is_none() {
            return Err(format!(
                "line {} (user {user}): only bcrypt hashes are accepted; write it with `htpasswd -B` or `berth htpasswd`",
                i + 1
            ));
        }
        users.insert(user.to_string(), hash.to_string());
    }
    Ok(users)
}

/// `HashParts::from_str` without panicking on malformed input.
trait CheckedParts {
    fn from_str_checked(s: &str) -> Option<()>;
}

impl CheckedParts for bcrypt::HashParts {
    fn from_str_checked(s: &str) -> Option<()> {
        s.parse::<bcrypt::HashParts>().ok().map(|_| ())
    }
}

fn key(user: &str, password: &str) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    h.update(user.as_bytes());
    h.update([0u8]);
    h.update(password.as_bytes());
    h.finalize().into()
}

fn read(path: &Path) -> Result<(Option<SystemTime>, HashMap<String, String>), String> {
    let content = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let users = parse(&content).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((modified, users))
}

impl Htpasswd {
    /// Loads the file (an error names the bad line; the server does not start on it).
    pub fn load(path: &Path) -> Result<Htpasswd, String> {
        let (modified, hashes) = read(path)?;
        let decoy = bcrypt::hash("berth decoy", DEFAULT_COST).map_err(|e| e.to_string())?;
        Ok(Htpasswd {
            path: path.to_path_buf(),
            users: RwLock::new(Users { modified, hashes }),
            verified: moka::sync::Cache::builder().max_capacity(10_000).time_to_live(VERIFIED_TTL).build(),
            decoy,
        })
    }

    /// Reads the file again if it changed since it was loaded; returns
    /// whether the users changed.
    pub fn reload_if_changed(&self) -> bool {
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        if modified == self.users.read().unwrap().modified {
            return false;
        }
        match read(&self.path) {
            Ok((modified, hashes)) => {
                *self.users.write().unwrap() = Users { modified, hashes };
                self.verified.invalidate_all();
                tracing::info!(path = %self.path.display(), "htpasswd reloaded");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "htpasswd changed but does not load; the users loaded before stay");
                self.users.write().unwrap().modified = modified;
                false
            }
        }
    }

    /// `user`'s password hash, if the user exists (tokens are bound to it).
    pub fn hash_of(&self, user: &str) -> Option<String> {
        self.users.read().unwrap().hashes.get(user).cloned()
    }

    /// Whether `user` and `password` were verified lately (cheap: no bcrypt).
    pub fn recently_verified(&self, user: &str, password: &str) -> bool {
        self.verified.contains_key(&key(user, password))
    }

    /// Whether `password` is `user`'s (blocking: bcrypt on a miss).
    pub fn verify(&self, user: &str, password: &str) -> bool {
        if self.recently_verified(user, password) {
            return true;
        }
        let hash = self.users.read().unwrap().hashes.get(user).cloned();
        let ok = match &hash {
            Some(h) => bcrypt::verify(password, h).unwrap_or(false),
            None => {
                let _ = bcrypt::verify(password, &self.decoy);
                false
            }
        };
        if ok {
            self.verified.insert(key(user, password), ());
        }
        ok
    }
}

/// One htpasswd line for `user` (bcrypt `$2y$`, as `htpasswd -B` writes).
pub fn line(user: &str, password: &str, cost: u32) -> Result<String, String> {
    if user.is_empty() || user.contains(':') {
        return Err("a user name must be non-empty and contain no ':'".into());
    }
    let parts = bcrypt::hash_with_result(password, cost).map_err(|e| e.to_string())?;
    Ok(format!("{user}:{}", parts.format_for_version(bcrypt::Version::TwoY)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcrypt_lines_load_and_weaker_hashes_are_refused() {
        let alice = line("alice", "s3cret", 4).unwrap();
        assert!(alice.starts_with("alice:$2y$04$"));
        let users = parse(&format!("# comment\n{alice}\n\n")).unwrap();
        assert!(users.contains_key("alice"));
        for weak in ["bob:$apr1$abc$def", "bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "bob:plain", "bob:$2y$xx"] {
            let e = parse(weak).unwrap_err();
            assert!(e.contains("line 1") && e.contains("bcrypt"), "{e}");
        }
        assert!(parse("nocolon").is_err());
    }

    #[test]
    fn passwords_are_checked_and_the_file_is_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, line("alice", "one", 4).unwrap()).unwrap();
        let h = Htpasswd::load(&path).unwrap();
        assert!(h.verify("alice", "one"));
        assert!(h.verify("alice", "one"), "remembered");
        assert!(!h.verify("alice", "two"));
        assert!(!h.verify("nobody", "one"));
        assert!(!h.reload_if_changed());
        std::fs::write(&path, line("alice", "two", 4).unwrap()).unwrap();
        let later = SystemTime::now() + Duration::from_secs(2);
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(later).unwrap();
        assert!(h.reload_if_changed());
        assert!(!h.verify("alice", "one"), "the old password no longer works");
        assert!(h.verify("alice", "two"));
        // A change that does not load keeps the users.
        std::fs::write(&path, "alice:$apr1$x$y").unwrap();
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(later + Duration::from_secs(2)).unwrap();
        assert!(!h.reload_if_changed());
        assert!(h.verify("alice", "two"));
    }
}
