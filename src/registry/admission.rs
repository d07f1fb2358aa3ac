//! The admission webhook (`[mirror.admission]`): before a runnable manifest
//! of a mirrored repository is first served, berth POSTs a question to a
//! service of the operator's (a scanner, a policy engine) and waits for its
//! answer, `{"allow": true|false, "reason": "..."}`. berth ships no scanner;
//! this is where one plugs in.
//!
//! The question (JSON): `repository` (the canonical identity), `digest`,
//! `mediaType`, `platforms` (an index's entries) or `config` and `layers`
//! (an image's, with sizes), and `signature` (the signature policy's verdict,
//! when a rule covers the repository). Answers are cached per repository and
//! digest for `ttl`; the hook revokes one with `POST /_berth/admission/forget`
//! (`{"digest": "..."}`, its token as `Authorization: Bearer`). A timeout, an
//! error status or an answer that does not read is a failure: `closed`
//! refuses the image with 503 (asked again at the next pull), `open` serves it.

use std::cell::RefCell;
use std::time::Instant;

use moka::future::Cache;
use serde::{Deserialize, Serialize};

use crate::config::{AdmissionConfig, AdmissionFailure};
use crate::oci::{Digest, ManifestInfo, RepoName};
use crate::trust::Verdict;

use super::identity::{RepoId, RepoPattern};
use super::namespace::Namespace;

thread_local! {
    /// awc clients are per thread; one per worker serves every question.
    static CLIENT: RefCell<Option<awc::Client>> = const { RefCell::new(None) };
}

/// What the hook decided (or what its failure means).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    Denied(String),
    /// The hook failed and `failure = "closed"`: why.
    Unavailable(String),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Described {
    digest: String,
    size: u64,
    media_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Question<'a> {
    repository: String,
    digest: String,
    media_type: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    platforms: Vec<Described>,
    #[serde(skip_serializing_if = "Option::is_none")]
    config: Option<Described>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    layers: Vec<Described>,
    signature: Option<&'a Verdict>,
}

#[derive(Deserialize)]
struct Answer {
    allow: bool,
    #[serde(default)]
    reason: Option<String>,
}

pub struct Admission {
    cfg: AdmissionConfig,
    patterns: Vec<RepoPattern>,
    /// (repository storage, digest) → (allowed, the hook's reason), when asked.
    answers: Cache<(RepoName, Digest), (bool, String, Instant)>,
}

fn described(d: &crate::oci::Descriptor) -> Described {
    Described {
        digest: d.digest.to_string(),
        size: d.size,
        media_type: d.media_type.clone(),
        platform: d.platform.as_ref().map(|p| match &p.variant {
            Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
            None => format!("{}/{}", p.os, p.architecture),
        }),
    }
}

impl Admission {
    /// The hook of `cfg`, if one is configured.
    pub fn new(cfg: Option<&AdmissionConfig>, namespace: &Namespace) -> Result<Option<Admission>, String> {
        let Some(cfg) = cfg else { return Ok(None) };
        let mut patterns = Vec::new();
        for p in &cfg.repositories {
            patterns.extend(namespace.resolve_pattern(p).map_err(|e| format!("mirror.admission: {e}"))?);
        }
        let answers = Cache::builder().max_capacity(100_000).support_invalidation_closures().build();
        Ok(Some(Admission { cfg: cfg.clone(), patterns, answers }))
    }

    /// Whether the hook is asked about `id`'s images.
    pub fn covers(&self, id: &RepoId) -> bool {
        id.is_mirrored() && (self.patterns.is_empty() || self.patterns.iter().any(|p| p.matches(id)))
    }

    /// Whether `presented` is the configured token (no token: nobody may revoke).
    pub fn token_matches(&self, presented: &str) -> bool {
        match &self.cfg.token {
            // Compared as hashes: how long a match takes says nothing of the token.
            Some(t) => Digest::sha256_of(t.as_bytes()) == Digest::sha256_of(presented.as_bytes()),
            None => false,
        }
    }

    /// Forgets the answers about `d` (the hook revoked them).
    pub fn forget(&self, d: &Digest) {
        let d = d.clone();
        if let Err(e) = self.answers.invalidate_entries_if(move |k, _| k.1 == d) {
            tracing::warn!(error = %e, "could not forget admission answers");
        }
    }

    /// The hook's answer on manifest `d` of `id` (stored as `storage`),
    /// asked unless a cached one stands.
    pub async fn ask(
        &self,
        metrics: &crate::metrics::Metrics,
        id: &RepoId,
        storage: &RepoName,
        d: &Digest,
        info: &ManifestInfo,
        signature: Option<&Verdict>,
    ) -> Outcome {
        let key = (storage.clone(), d.clone());
        if let Some((allow, reason, at)) = self.answers.get(&key).await {
            if at.elapsed() < self.cfg.ttl {
                return if allow { Outcome::Allowed } else { Outcome::Denied(reason) };
            }
        }
        let question = Question {
            repository: id.to_string(),
            digest: d.to_string(),
            media_type: &info.media_type,
            platforms: info.children().map(described).collect(),
            config: info.config.as_ref().map(described),
            layers: info.layers.iter().map(described).collect(),
            signature,
        };
        let asked = tokio::time::timeout(self.cfg.timeout, self.post(&question)).await;
        let answered = asked.unwrap_or_else(|_| Err(format!("no answer within {:?}", self.cfg.timeout)));
        match answered {
            Ok(answer) => {
                let reason = answer.reason.unwrap_or_default();
                tracing::info!(repo = %id, digest = %d, allow = answer.allow, reason, "admission hook answered");
                metrics.admission_decisions.with_label_values(&[if answer.allow { "allowed" } else { "denied" }]).inc();
                self.answers.insert(key, (answer.allow, reason.clone(), Instant::now())).await;
                match answer.allow {
                    true => Outcome::Allowed,
                    false => Outcome::Denied(format!("the admission hook denied {id}@{d}: {reason}")),
                }
            }
            Err(why) => match self.cfg.failure {
                AdmissionFailure::Open => {
                    tracing::warn!(repo = %id, digest = %d, "admission hook failed ({why}); serving (failure = open)");
                    metrics.admission_decisions.with_label_values(&["failed_open"]).inc();
                    Outcome::Allowed
                }
                AdmissionFailure::Closed => {
                    tracing::warn!(repo = %id, digest = %d, "admission hook failed ({why}); refusing (failure = closed)");
                    metrics.admission_decisions.with_label_values(&["failed_closed"]).inc();
                    Outcome::Unavailable(format!("the admission hook did not answer for {id}@{d}: {why}"))
                }
            },
        }
    }

    async fn post(&self, question: &Question<'_>) -> Result<Answer, String> {
        let client = CLIENT.with(|c| {
            c.borrow_mut()
                .get_or_insert_with(|| {
                    awc::Client::builder()
                        .add_default_header(("User-Agent", concat!("berth/", env!("CARGO_PKG_VERSION"))))
                        .finish()
                })
                .clone()
        });
        let mut request = client.post(&self.cfg.url).timeout(self.cfg.timeout);
        if let Some(token) = &self.cfg.token {
            request = request.bearer_auth(token);
        }
        let mut resp = request.send_json(question).await.map_err(|e| format!("{e}"))?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        resp.json::<Answer>().limit(64 * 1024).await.map_err(|e| format!("unreadable answer: {e}"))
    }
}
