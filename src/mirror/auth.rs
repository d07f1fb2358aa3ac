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

/// The registrable part of a host, roughly: the last two labels of a DNS
/// name; an IP address or single-label host stands for itself.
fn site(host: &str) -> String {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
        return host;
    }
    let labels: Vec<&str> = host.split('.').collect();
    labels[labels.len().saturating_sub(2)..].join(".")
}

fn host_of(url: &str) -> Option<String> {
    let uri: awc::http::Uri = url.parse().ok()?;
    uri.host().map(str::to_string)
}

/// Whether credentials for `upstream_url` may be sent to the token `realm`:
/// only when both are on the same site (auth.docker.io for registry-1.docker.io).
pub fn realm_allowed(upstream_url: &str, realm: &str) -> bool {
    match (host_of(upstream_url), host_of(realm)) {
        (Some(a), Some(b)) => site(&a) == site(&b),
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
