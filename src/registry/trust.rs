//! The signature policy, one owner for it: which repositories must be
//! signed and by which keys (`[[mirror.verify]]`, first matching rule
//! decides, patterns over the repository identity), where signatures are
//! looked for (cosign's `sha256-<hex>.sig` tag and OCI 1.1 referrers, through
//! the mirror for mirrored repositories), and what happens to a manifest
//! without one: refused with 403 before any byte of it or its blobs is
//! served (`enforce`), or served, logged and counted (`warn`).
//!
//! What a signature vouches for: an index's signature covers the platform
//! manifests it lists, an image's covers its config and layers. A blob is
//! served under `enforce` only when a manifest that is signed (or covered)
//! lists it. Signatures, SBOMs and attestations themselves (manifests no
//! runtime could run) need no signature of their own, so clients that
//! verify for themselves can read them through berth.
//!
//! Verdicts are cached per repository, manifest digest, rule and key set
//! (the keys' fingerprint): a changed key file re-judges. A signature found is trusted
//! for an hour; the lack of one is asked about again after the upstream's
//! `tag_ttl` (`UNSIGNED_LOCAL_TTL` for pushed content).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use moka::future::Cache;

use crate::config::{VerifyMode, VerifyRule, VerifyScope};
use crate::oci::{Digest, Reference, RepoName};
use crate::trust::keys::KeyRing;
use crate::trust::{cosign, judge, Found, Verdict};

use super::identity::{RepoId, RepoPattern};
use super::namespace::Namespace;
use super::{Manifest, Registry, RegistryError, RegistryResult, Route};

/// How long a signed verdict stands.
const SIGNED_TTL: Duration = Duration::from_secs(3600);
/// How long "unsigned" stands for pushed content (a signature may be pushed next).
const UNSIGNED_LOCAL_TTL: Duration = Duration::from_secs(10);
/// The largest signature payload read (cosign's are a few hundred bytes).
const MAX_PAYLOAD: usize = 64 * 1024;

struct Rule {
    index: usize,
    patterns: Vec<RepoPattern>,
    written: Vec<String>,
    keys: KeyRing,
    mode: VerifyMode,
    scope: VerifyScope,
}

impl Rule {
    fn name(&self) -> String {
        format!("mirror.verify[{}] ({})", self.index, self.written.join(", "))
    }

    fn covers(&self, id: &RepoId) -> bool {
        let in_scope = match self.scope {
            VerifyScope::Mirrored => id.is_mirrored(),
            VerifyScope::Pushed => !id.is_mirrored(),
            VerifyScope::All => true,
        };
        in_scope && self.patterns.iter().any(|p| p.matches(id))
    }
}

/// (repository storage, manifest, rule, key set): a signature counts in the
/// repository it is stored in, as cosign looks for it there.
type VerdictKey = (RepoName, Digest, usize, [u8; 32]);

/// The rules, the verdicts cached, and what signed manifests vouch for.
pub struct Trust {
    rules: Vec<Rule>,
    verdicts: Cache<VerdictKey, (Arc<Verdict>, Instant)>,
    /// (repository storage, digest) of manifests and blobs a signed (or
    /// warned) manifest listed.
    covered: Cache<(RepoName, Digest), ()>,
    recent: std::sync::Mutex<std::collections::HashMap<RepoId, Decision>>,
}

/// Repositories whose latest decision is kept for the web page.
const MAX_REMEMBERED: usize = 10_000;

/// A decision of the policy on one manifest.
#[derive(Debug, Clone)]
pub struct Decision {
    pub digest: String,
    /// `signed`, `warned` or `refused`.
    pub outcome: &'static str,
    pub reason: String,
    pub at: std::time::SystemTime,
}

impl Trust {
    /// The rules of `cfg`, patterns resolved and key files read: an error
    /// names the rule.
    pub fn new(rules: &[VerifyRule], namespace: &Namespace) -> Result<Trust, String> {
        let mut out = Vec::new();
        for (index, r) in rules.iter().enumerate() {
            let name = format!("mirror.verify[{index}]");
            if r.repositories.is_empty() {
                return Err(format!("{name}: no repositories"));
            }
            let mut patterns = Vec::new();
            for p in &r.repositories {
                patterns.extend(namespace.resolve_pattern(p).map_err(|e| format!("{name}: {e}"))?);
            }
            let keys = match (r.mode, r.keys.is_empty()) {
                // An `off` rule is an exception; it needs no keys.
                (VerifyMode::Off, true) => KeyRing::empty(),
                _ => KeyRing::load(r.keys.clone()).map_err(|e| format!("{name}: keys: {e}"))?,
            };
            out.push(Rule { index, patterns, written: r.repositories.clone(), keys, mode: r.mode, scope: r.scope });
        }
        Ok(Trust {
            rules: out,
            verdicts: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(SIGNED_TTL)
                .support_invalidation_closures()
                .build(),
            covered: Cache::builder().max_capacity(1_000_000).time_to_live(SIGNED_TTL).build(),
            recent: Default::default(),
        })
    }

    /// The rule that decides for `id`, unless none does or it says `off`.
    fn rule(&self, id: &RepoId) -> Option<&Rule> {
        if self.rules.is_empty() {
            return None;
        }
        self.rules.iter().find(|r| r.covers(id)).filter(|r| r.mode != VerifyMode::Off)
    }

    /// Each rule in canonical form (what `berth config check` prints).
    pub fn describe(&self) -> Vec<String> {
        self.rules
            .iter()
            .map(|r| {
                let patterns: Vec<String> = r.patterns.iter().map(|p| p.to_string()).collect();
                format!("{} {:?} {:?}: covers {}", r.name(), r.mode, r.scope, patterns.join(", ")).to_lowercase()
            })
            .collect()
    }

    /// Forgets the verdicts on `d` (a signature of it was stored).
    pub fn forget(&self, d: &Digest) {
        if self.rules.is_empty() {
            return;
        }
        let d = d.clone();
        if let Err(e) = self.verdicts.invalidate_entries_if(move |k, _| k.1 == d) {
            tracing::warn!(error = %e, "could not forget cached signature verdicts");
        }
    }

    /// Keeps the latest decision per repository for the web page.
    fn remember(&self, id: &RepoId, d: &Digest, outcome: &'static str, verdict: &Verdict) {
        let mut recent = self.recent.lock().unwrap();
        if recent.len() >= MAX_REMEMBERED && !recent.contains_key(id) {
            return;
        }
        let reason = match verdict {
            Verdict::Signed { key, via } => format!("signed by {key} ({via})"),
            Verdict::Unsigned { reason } => reason.clone(),
        };
        recent
            .insert(id.clone(), Decision { digest: d.to_string(), outcome, reason, at: std::time::SystemTime::now() });
    }

    /// The latest decision on a manifest of `id`, if any.
    pub fn latest(&self, id: &RepoId) -> Option<Decision> {
        self.recent.lock().unwrap().get(id).cloned()
    }

    async fn cover(&self, repo: &RepoName, digests: impl Iterator<Item = Digest>) {
        for d in digests {
            self.covered.insert((repo.clone(), d), ()).await;
        }
    }

    async fn is_covered(&self, repo: &RepoName, d: &Digest) -> bool {
        self.covered.contains_key(&(repo.clone(), d.clone()))
    }
}

/// How a verdict was used, for logs, metrics and `berth verify`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Judged {
    pub rule: String,
    pub mode: String,
    #[serde(flatten)]
    pub verdict: Verdict,
}

impl Registry {
    /// Applies the signature policy to manifest `m`, about to be served
    /// through `route`: `Denied` when an `enforce` rule finds it unsigned.
    pub(super) async fn admit_manifest(&self, route: &Route, m: &Manifest) -> RegistryResult<()> {
        let id = route.id();
        let Some(rule) = self.trust.rule(&id) else { return Ok(()) };
        let storage = route.storage();
        let info = self.core.load_manifest(&m.digest).await?;
        if !cosign::is_runnable(&info.info) {
            self.trust.cover(storage, info.info.blobs().map(|b| b.digest.clone())).await;
            return Ok(());
        }
        if self.trust.is_covered(storage, &m.digest).await {
            self.vouch(storage, &info.info).await;
            return Ok(());
        }
        let verdict = self.verdict(route, rule, &m.digest).await;
        self.decide(&id, rule, &m.digest, &verdict)?;
        self.vouch(storage, &info.info).await;
        Ok(())
    }

    /// Records what a served manifest vouches for.
    async fn vouch(&self, storage: &RepoName, info: &crate::oci::ManifestInfo) {
        let children = info.children().map(|c| c.digest.clone());
        let blobs = info.blobs().map(|b| b.digest.clone());
        self.trust.cover(storage, children.chain(blobs)).await;
    }

    /// Counts, logs and applies a verdict.
    fn decide(&self, id: &RepoId, rule: &Rule, d: &Digest, verdict: &Verdict) -> RegistryResult<()> {
        let repository = id.to_string();
        let outcome = match (verdict, rule.mode) {
            (Verdict::Signed { .. }, _) => "signed",
            (Verdict::Unsigned { .. }, VerifyMode::Enforce) => "refused",
            (Verdict::Unsigned { .. }, _) => "warned",
        };
        self.core.metrics.signature_decisions.with_label_values(&[repository.as_str(), outcome]).inc();
        self.trust.remember(id, d, outcome, verdict);
        match verdict {
            Verdict::Signed { .. } => Ok(()),
            Verdict::Unsigned { reason } => {
                let message = format!("signature policy {}: {d} is not signed as required: {reason}", rule.name());
                tracing::warn!(repo = %id, digest = %d, mode = ?rule.mode, "{message}");
                match rule.mode {
                    VerifyMode::Enforce => Err(RegistryError::Denied(message)),
                    _ => Ok(()),
                }
            }
        }
    }

    /// Applies the signature policy to blob `d`, about to be served through
    /// `route`: under `enforce`, only a blob that a signed (or covered, or
    /// not runnable) manifest of the repository lists.
    pub(super) async fn admit_blob(&self, route: &Route, d: &Digest) -> RegistryResult<()> {
        let id = route.id();
        let Some(rule) = self.trust.rule(&id) else { return Ok(()) };
        let storage = route.storage();
        if rule.mode != VerifyMode::Enforce || self.trust.is_covered(storage, d).await {
            return Ok(());
        }
        // Not seen through a manifest since this process started (a client
        // that had the manifest already): what the stored manifests say.
        let mut listing = Vec::new();
        for m in self.core.store.list_manifests(storage).await? {
            if let Ok(loaded) = self.core.load_manifest(&m).await {
                listing.push((m, loaded));
            }
        }
        for (m, loaded) in listing.iter().filter(|(_, l)| l.info.is_index()) {
            if self.verdict(route, rule, m).await.is_signed() {
                self.vouch(storage, &loaded.info).await;
            }
        }
        for (m, loaded) in listing.iter().filter(|(_, l)| l.info.blobs().any(|b| &b.digest == d)) {
            let vouched = !cosign::is_runnable(&loaded.info)
                || self.trust.is_covered(storage, m).await
                || self.verdict(route, rule, m).await.is_signed();
            if vouched {
                self.vouch(storage, &loaded.info).await;
                return Ok(());
            }
        }
        Err(RegistryError::Denied(format!(
            "signature policy {}: blob {d} is not listed by a signed manifest of {id}",
            rule.name()
        )))
    }

    /// What the policy says of manifest `d` in `route`'s repository (for
    /// `berth verify`): `None` when no rule covers it.
    pub async fn judge(&self, route: &Route, d: &Digest) -> RegistryResult<Option<Judged>> {
        let Some(rule) = self.trust.rule(&route.id()) else { return Ok(None) };
        let m = self.read_manifest(route, &Reference::Digest(d.clone())).await?;
        let verdict = match cosign::is_runnable(&self.core.load_manifest(&m.digest).await?.info) {
            true => self.verdict(route, rule, d).await,
            false => Verdict::Signed { key: "(none needed)".into(), via: "not a runnable image".into() },
        };
        Ok(Some(Judged { rule: rule.name(), mode: format!("{:?}", rule.mode).to_lowercase(), verdict }))
    }

    /// The verdict on manifest `d` under `rule`, cached.
    async fn verdict(&self, route: &Route, rule: &Rule, d: &Digest) -> Verdict {
        let keys = rule.keys.current();
        let key = (route.storage().clone(), d.clone(), rule.index, keys.fingerprint);
        if let Some((v, at)) = self.trust.verdicts.get(&key).await {
            let ttl = match (v.as_ref(), route) {
                (Verdict::Signed { .. }, _) => SIGNED_TTL,
                (Verdict::Unsigned { .. }, Route::Mirrored(m)) => m.upstream.tag_ttl,
                (Verdict::Unsigned { .. }, Route::Local(_)) => UNSIGNED_LOCAL_TTL,
            };
            if at.elapsed() < ttl {
                return (*v).clone();
            }
        }
        let (found, looked) = self.find_signatures(route, d).await;
        let verdict = judge(d, &found, &keys, &looked);
        self.trust.verdicts.insert(key, (Arc::new(verdict.clone()), Instant::now())).await;
        verdict
    }

    /// Every signature of `d` in `route`'s repository: those in its `.sig`
    /// tag and in its signature referrers.
    async fn find_signatures(&self, route: &Route, d: &Digest) -> (Vec<Found>, String) {
        let tag = cosign::signature_tag(d);
        let looked = format!("tag {tag}, referrers of type {}", cosign::SIGNATURE_ARTIFACT);
        let mut manifests = Vec::new();
        match self.read_manifest(route, &Reference::Tag(tag.clone())).await {
            Ok(m) => manifests.push((format!("tag {tag}"), Ok(m.bytes))),
            Err(RegistryError::ManifestUnknown(_)) => {}
            Err(e) => manifests.push((format!("tag {tag}"), Err(format!("could not be read: {e}")))),
        }
        match self.referrers(route, d, Some(cosign::SIGNATURE_ARTIFACT)).await {
            Ok(found) => {
                for r in found.manifests {
                    let via = format!("referrer {}", r.digest);
                    let read = match r.digest.parse::<Digest>() {
                        Ok(rd) => self
                            .read_manifest(route, &Reference::Digest(rd))
                            .await
                            .map(|m| m.bytes)
                            .map_err(|e| format!("could not be read: {e}")),
                        Err(_) => Err("not a digest".into()),
                    };
                    manifests.push((via, read));
                }
            }
            Err(e) => manifests.push(("referrers".into(), Err(format!("could not be listed: {e}")))),
        }
        let mut found = Vec::new();
        for (via, bytes) in manifests {
            let signatures = match bytes.and_then(|b| cosign::signatures(&b)) {
                Ok(s) => s,
                Err(e) => {
                    found.push(Found { via, signature: Err(e) });
                    continue;
                }
            };
            for s in signatures {
                let payload = self.payload(route, &s).await;
                found.push(Found { via: via.clone(), signature: payload.map(|p| (s, p)) });
            }
        }
        (found, looked)
    }

    /// A signature's payload, read through `route` and checked against its digest.
    async fn payload(&self, route: &Route, s: &cosign::Signature) -> Result<Bytes, String> {
        if s.payload_size > MAX_PAYLOAD as u64 {
            return Err(format!("payload {} is {} bytes, more than a signature payload", s.payload, s.payload_size));
        }
        let read = self.read_blob(route, &s.payload, None).await.map_err(|e| format!("payload {}: {e}", s.payload))?;
        let mut body = read.body;
        let mut buf = BytesMut::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| format!("payload {}: {e}", s.payload))?;
            if buf.len() + chunk.len() > MAX_PAYLOAD {
                return Err(format!("payload {} is larger than a signature payload", s.payload));
            }
            buf.extend_from_slice(&chunk);
        }
        let bytes = buf.freeze();
        s.payload.check(&bytes).map_err(|actual| format!("payload {} read as {actual}", s.payload))?;
        Ok(bytes)
    }
}
