//! Checks of pushed manifests beyond the spec's, as configured
//! (`[validation]`, registry:2's `validation.manifests.urls`): where a
//! foreign (non-distributable) layer may say it is fetched from. A URL must
//! be http(s) without a fragment, match one of `urls_allow` (when any are
//! given) and none of `urls_deny`; otherwise the push is refused with 400
//! `MANIFEST_BLOB_UNKNOWN`, the code registry:2 answers with, and a message
//! that names the URL.

use regex::Regex;

use crate::config::ValidationConfig;
use crate::oci::{ManifestInfo, OciCode, ParseError};

pub struct Validation {
    allow: Vec<Regex>,
    deny: Vec<Regex>,
}

fn compile(list: &[String], key: &str) -> Result<Vec<Regex>, String> {
    list.iter().map(|r| Regex::new(r).map_err(|e| format!("validation.{key}: {r:?}: {e}"))).collect()
}

impl Validation {
    /// The checks of `cfg`; a pattern that does not compile names its key.
    pub fn new(cfg: &ValidationConfig) -> Result<Validation, String> {
        Ok(Validation { allow: compile(&cfg.urls_allow, "urls_allow")?, deny: compile(&cfg.urls_deny, "urls_deny")? })
    }

    /// Whether a pushed manifest passes.
    pub fn check(&self, info: &ManifestInfo) -> Result<(), ParseError> {
        for layer in &info.layers {
            for url in &layer.urls {
                let http = url.starts_with("https://") || url.starts_with("http://");
                let why = if !http || url.contains('#') {
                    Some("is not an http(s) URL without a fragment")
                } else if !self.allow.is_empty() && !self.allow.iter().any(|r| r.is_match(url)) {
                    Some("matches none of validation.urls_allow")
                } else if self.deny.iter().any(|r| r.is_match(url)) {
                    Some("matches validation.urls_deny")
                } else {
                    None
                };
                if let Some(why) = why {
                    return Err(ParseError::new(
                        OciCode::ManifestBlobUnknown,
                        format!("layer {} names the URL {url:?}, which {why}", layer.digest),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn foreign(url: &str) -> ManifestInfo {
        let body = serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": crate::oci::Digest::sha256_of(b"{}").to_string(), "size": 2},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                        "digest": crate::oci::Digest::sha256_of(b"l").to_string(), "size": 1, "urls": [url]}]
        });
        ManifestInfo::parse_stored(&serde_json::to_vec(&body).unwrap()).unwrap()
    }

    #[test]
    fn urls_are_allowed_by_the_patterns_and_refused_with_the_url_named() {
        let v = |allow: &[&str], deny: &[&str]| {
            Validation::new(&ValidationConfig {
                urls_allow: allow.iter().map(|s| s.to_string()).collect(),
                urls_deny: deny.iter().map(|s| s.to_string()).collect(),
            })
            .unwrap()
        };
        assert!(v(&[], &[]).check(&foreign("https://example.com/l")).is_ok(), "any http(s) URL by default");
        let e = v(&[], &[]).check(&foreign("ftp://example.com/l")).unwrap_err();
        assert_eq!(e.code, OciCode::ManifestBlobUnknown);
        assert!(e.message.contains("ftp://example.com/l") && e.message.contains("http(s)"), "{}", e.message);
        assert!(v(&[], &[]).check(&foreign("https://example.com/l#x")).is_err(), "a fragment");
        let only_example = v(&["^https://example\\.com/"], &[]);
        assert!(only_example.check(&foreign("https://example.com/l")).is_ok());
        assert!(only_example.check(&foreign("https://evil.com/l")).unwrap_err().message.contains("urls_allow"));
        let no_evil = v(&["^https://"], &["evil"]);
        assert!(no_evil.check(&foreign("https://evil.com/l")).unwrap_err().message.contains("urls_deny"));
        assert!(Validation::new(&ValidationConfig { urls_allow: vec!["(".into()], urls_deny: vec![] })
            .err()
            .is_some_and(|e| e.contains("validation.urls_allow")));
    }
}
