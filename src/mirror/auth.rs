//! Upstream authentication: the `WWW-Authenticate` challenge, the bearer
//! token request (docker token spec), and which realms may see credentials.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Bearer { realm: String, service: Option<String>, scope: Option<String> },
    Basic,
}

/// Parses `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(rest);
    Some(Challenge::Bearer {
        realm: params.get("realm")?.clone(),
        service: params.get("service").cloned(),
        scope: params.get("scope").cloned(),
    })
}

/// `k="v", k2=v2` with commas allowed inside quotes (scopes contain them).
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else { break };
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.insert(key, value.to_string());
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// The registrable part of a host (`docker.io` for `registry-1.docker.io`,
/// `example.co.uk` for `auth.example.co.uk`), judged with the public suffix
/// list; an IP address, a single-label host or a public suffix itself stands
/// for itself.
fn site(host: &str) -> String {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') || !host.contains('.') {
        return host;
    }
    psl::domain_str(&host).map(str::to_string).unwrap_or(host)
}

/// Whether credentials for `upstream_url` may be sent to the token `realm`:
/// only when both are on the same site (auth.docker.io for
/// registry-1.docker.io), and never over plain HTTP for an HTTPS upstream.
pub fn realm_allowed(upstream_url: &str, realm: &str) -> bool {
    let (Ok(up), Ok(realm)) = (upstream_url.parse::<awc::http::Uri>(), realm.parse::<awc::http::Uri>()) else {
        return false;
    };
    let downgrade = up.scheme_str() == Some("https") && realm.scheme_str() != Some("https");
    match (up.host(), realm.host()) {
        (Some(a), Some(b)) => !downgrade && site(a) == site(b),
        _ => false,
    }
}

/// A token endpoint's answer (`token` and/or `access_token`).
#[derive(Debug, Deserialize)]
pub struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

/// Token lifetime when the endpoint names none (docker token spec: 60 s).
const DEFAULT_TOKEN_LIFETIME: u64 = 60;

impl TokenResponse {
    /// The token and how long to cache it (a little less than it lives).
    pub fn into_token(self) -> Option<(String, Duration)> {
        let token = self.token.or(self.access_token).filter(|t| !t.is_empty())?;
        let lifetime = self.expires_in.unwrap_or(DEFAULT_TOKEN_LIFETIME).max(1);
        Some((token, Duration::from_secs(lifetime.saturating_sub(lifetime / 10 + 1).max(1))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_hub_challenge() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:samalba/my-app:pull,push".into()),
            })
        );
        assert_eq!(parse_challenge(r#"Basic realm="Registry Realm""#), Some(Challenge::Basic));
        assert_eq!(parse_challenge("Negotiate"), None);
        assert!(matches!(parse_challenge(r#"Bearer realm=http://x/token"#), Some(Challenge::Bearer { .. })));
    }

    #[test]
    fn credentials_stay_on_the_upstreams_site() {
        assert!(realm_allowed("https://registry-1.docker.io", "https://auth.docker.io/token"));
        assert!(realm_allowed("http://127.0.0.1:5001", "http://127.0.0.1:5002/token"));
        assert!(!realm_allowed("https://registry-1.docker.io", "https://evil.example.com/token"));
        assert!(!realm_allowed("http://127.0.0.1:5001", "http://127.0.0.2/token"));
        // The public suffix list: co.uk and github.io are not sites, their children are.
        assert!(realm_allowed("https://registry.example.co.uk", "https://auth.example.co.uk/token"));
        assert!(!realm_allowed("https://registry.example.co.uk", "https://auth.evil.co.uk/token"));
        assert!(!realm_allowed("https://alice.github.io", "https://mallory.github.io/token"));
        assert!(realm_allowed("https://ghcr.io", "https://ghcr.io/token"));
        assert!(realm_allowed("http://registry.lan:5000", "http://auth.registry.lan/token"));
        assert!(!realm_allowed("http://registry:5000", "http://auth:5000/token"), "single labels stand alone");
        // Never over plain HTTP for an HTTPS upstream.
        assert!(!realm_allowed("https://registry-1.docker.io", "http://auth.docker.io/token"));
        assert!(realm_allowed("http://127.0.0.1:5001", "https://127.0.0.1:5002/token"));
        assert!(!realm_allowed("https://registry-1.docker.io", "not a url"));
    }

    #[test]
    fn token_lifetimes() {
        let t: TokenResponse = serde_json::from_str(r#"{"token":"abc","expires_in":300}"#).unwrap();
        let (tok, ttl) = t.into_token().unwrap();
        assert_eq!(tok, "abc");
        assert!(ttl < Duration::from_secs(300) && ttl > Duration::from_secs(200));
        let t: TokenResponse = serde_json::from_str(r#"{"access_token":"x"}"#).unwrap();
        assert!(t.into_token().unwrap().1 <= Duration::from_secs(60));
        let t: TokenResponse = serde_json::from_str(r#"{}"#).unwrap();
        assert!(t.into_token().is_none());
    }
}
