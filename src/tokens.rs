//! Bearer tokens from berth's own token endpoint (`/v2/token`).
//!
//! Why berth has tokens at all: dockerd gives up on a registry whose
//! `GET /v2/` answers a `Basic` challenge when it has no credentials for it,
//! and it never has any for a `registry-mirrors` mirror. With a `Bearer`
//! challenge it fetches a token first (anonymously, or with the user's
//! password after `docker login`), which is how Docker Hub works too. So one
//! berth serves anonymous mirror pulls and logged-in pushes.
//!
//! A token names its user (or nobody, for an anonymous one) and when it
//! expires, and is signed with HMAC-SHA256 under a key kept in
//! `<root>/.berth/token.key` (0600), so it survives a restart. A user's token
//! is also bound to that user's current htpasswd hash: a changed password or
//! a removed user ends the user's tokens at once. What a token's holder may
//! do is decided per request by the access policy, as for a password.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use ring::hmac;
use serde::{Deserialize, Serialize};

/// How long a token is good for (Docker Hub's tokens last as long).
pub const LIFETIME: Duration = Duration::from_secs(300);

pub struct TokenKey(hmac::Key);

#[derive(Serialize, Deserialize)]
struct Claims {
    /// The user; absent for an anonymous token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    /// Expiry, seconds since the epoch.
    exp: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Invalid {
    Malformed,
    Signature,
    Expired,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl TokenKey {
    pub fn from_bytes(bytes: &[u8]) -> Self {
        TokenKey(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    /// The key in `<root>/.berth/token.key`, made (32 random bytes, 0600) on first use.
    pub fn load_or_create(root: &Path) -> std::io::Result<Self> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = root.join(crate::store::layout::TOKEN_KEY);
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() == 32 => return Ok(Self::from_bytes(&bytes)),
            Ok(_) => tracing::warn!(path = %path.display(), "token key has the wrong length; making a new one"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(std::io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display()))),
        }
        let mut bytes = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .map_err(|_| std::io::Error::other("no randomness for the token key"))?;
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        Ok(Self::from_bytes(&bytes))
    }

    /// A token for `user` (None: anonymous), bound to the user's password hash.
    pub fn issue(&self, user: Option<&str>, bound_to: &str) -> String {
        self.issue_until(user, bound_to, now() + LIFETIME.as_secs())
    }

    /// A token for `user` that lasts `lifetime` (the web page's sessions).
    pub fn issue_for(&self, user: &str, bound_to: &str, lifetime: Duration) -> String {
        self.issue_until(Some(user), bound_to, now() + lifetime.as_secs())
    }

    fn issue_until(&self, user: Option<&str>, bound_to: &str, exp: u64) -> String {
        let claims = B64.encode(serde_json::to_vec(&Claims { sub: user.map(str::to_string), exp }).unwrap_or_default());
        let tag = hmac::sign(&self.0, &signed(&claims, bound_to));
        format!("{claims}.{}", B64.encode(tag.as_ref()))
    }

    /// The user a token names (None: anonymous), if it is genuine and
    /// unexpired; `bound_to` gives a user's current password hash (None:
    /// no such user any more).
    pub fn verify(&self, token: &str, bound_to: impl Fn(&str) -> Option<String>) -> Result<Option<String>, Invalid> {
        let (claims_b64, tag_b64) = token.split_once('.').ok_or(Invalid::Malformed)?;
        let claims: Claims =
            B64.decode(claims_b64).ok().and_then(|raw| serde_json::from_slice(&raw).ok()).ok_or(Invalid::Malformed)?;
        let tag = B64.decode(tag_b64).map_err(|_| Invalid::Malformed)?;
        let bound = match &claims.sub {
            Some(user) => bound_to(user).ok_or(Invalid::Signature)?,
            None => String::new(),
        };
        hmac::verify(&self.0, &signed(claims_b64, &bound), &tag).map_err(|_| Invalid::Signature)?;
        if claims.exp <= now() {
            return Err(Invalid::Expired);
        }
        Ok(claims.sub)
    }
}

fn signed(claims_b64: &str, bound_to: &str) -> Vec<u8> {
    let mut m = claims_b64.as_bytes().to_vec();
    m.push(0);
    m.extend_from_slice(bound_to.as_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_unaltered_unexpired_and_for_the_same_password() {
        let key = TokenKey::from_bytes(&[7; 32]);
        let hash = |u: &str| (u == "alice").then(|| "$2y$hash-one".to_string());
        let t = key.issue(Some("alice"), "$2y$hash-one");
        assert_eq!(key.verify(&t, hash), Ok(Some("alice".into())));
        let anon = key.issue(None, "");
        assert_eq!(key.verify(&anon, hash), Ok(None));

        // Another key, a changed password, a removed user, an edited claim, an expired token.
        assert_eq!(TokenKey::from_bytes(&[8; 32]).verify(&t, hash), Err(Invalid::Signature));
        assert_eq!(key.verify(&t, |_| Some("$2y$hash-two".into())), Err(Invalid::Signature));
        assert_eq!(key.verify(&t, |_| None), Err(Invalid::Signature));
        let (_, tag) = t.split_once('.').unwrap();
        let forged = B64.encode(br#"{"sub":"root","exp":99999999999}"#);
        assert_eq!(key.verify(&format!("{forged}.{tag}"), hash), Err(Invalid::Signature));
        let old = key.issue_until(Some("alice"), "$2y$hash-one", now() - 1);
        assert_eq!(key.verify(&old, hash), Err(Invalid::Expired));
        for junk in ["", ".", "abc", "abc.def", "!!.!!", &format!("{forged}.")] {
            assert!(key.verify(junk, hash).is_err(), "{junk}");
        }
    }

    #[test]
    fn the_key_is_made_once_and_kept_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(crate::store::layout::BERTH_DIR)).unwrap();
        let t = TokenKey::load_or_create(dir.path()).unwrap().issue(None, "");
        let again = TokenKey::load_or_create(dir.path()).unwrap();
        assert_eq!(again.verify(&t, |_| None), Ok(None), "a restart keeps the key");
        let mode = std::fs::metadata(dir.path().join(".berth/token.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
