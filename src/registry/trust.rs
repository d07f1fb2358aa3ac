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
use crate::oci::{Digest, ManifestInfo, Reference, RepoName};
use crate::trust::keys::KeyRing;
use crate::trust::{cosign, judge, Found, Verdict};

use super::admission::{Admission, Outcome};
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
    verdicts: Cache<VerdictKey, Arc<Judgement>>,
    /// (repository storage, platform manifest) a signed index lists.
    signed_by_index: Cache<(RepoName, Digest), ()>,
    /// (repository storage, blob) → the manifest, let through, that lists it.
    served: Cache<(RepoName, Digest), Digest>,
    /// (repository storage, manifest) that passed every gate within the last
    /// `RECHECK`, with its decision counter: the hot path's one lookup.
    passed: moka::sync::Cache<(RepoName, Digest), Arc<Option<prometheus::IntCounter>>>,
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
            signed_by_index: Cache::builder().max_capacity(100_000).time_to_live(SIGNED_TTL).build(),
            served: Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(SIGNED_TTL)
                .support_invalidation_closures()
                .build(),
            passed: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(crate::trust::keys::RECHECK)
                .support_invalidation_closures()
                .build(),
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
        let (d, again) = (d.clone(), d.clone());
        if let Err(e) = self.verdicts.invalidate_entries_if(move |k, _| k.1 == d) {
            tracing::warn!(error = %e, "could not forget cached signature verdicts");
        }
        self.forget_passed(again);
    }

    /// Forgets that manifest `d` passed (in any repository).
    fn forget_passed(&self, d: Digest) {
        if let Err(e) = self.passed.invalidate_entries_if(move |k, _| k.1 == d) {
            tracing::warn!(error = %e, "could not forget passed manifests");
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
}

/// A verdict as cached: when it was reached, and the counter each decision
/// it makes goes to (resolved once, not per request).
struct Judgement {
    verdict: Verdict,
    at: Instant,
    counter: prometheus::IntCounter,
}

/// A manifest that passed the gates.
struct Passed {
    signed: bool,
    /// Where the signature decisions on it are counted (when a rule applies).
    counter: Option<prometheus::IntCounter>,
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
    /// The gates for `id`: its signature rule and the admission hook, when
    /// they apply.
    fn gates(&self, id: &RepoId) -> (Option<&Rule>, Option<&Admission>) {
        (self.trust.rule(id), self.admission.as_deref().filter(|a| a.covers(id)))
    }

    /// Applies the signature policy and the admission hook to manifest `m`,
    /// about to be served through `route`: `Denied` when a rule or the hook
    /// refuses it, `Unavailable` when the hook failed closed.
    pub(super) async fn admit_manifest(&self, route: &Route, m: &Manifest) -> RegistryResult<()> {
        let id = route.id();
        let (rule, hook) = self.gates(&id);
        if rule.is_none() && hook.is_none() {
            return Ok(());
        }
        // The hot path: passed moments ago (a verdict stands longer, but a key
        // file is looked at every RECHECK).
        let key = (route.storage().clone(), m.digest.clone());
        if let Some(counter) = self.trust.passed.get(&key) {
            if let Some(c) = counter.as_ref() {
                c.inc();
            }
            return Ok(());
        }
        let loaded = self.core.load_manifest(&m.digest).await?;
        let passed = self.pass_gates(route, &id, (rule, hook), &m.digest, &loaded.info).await?;
        self.vouch(route.storage(), &m.digest, &loaded.info, passed.signed).await;
        self.trust.passed.insert(key, Arc::new(passed.counter));
        Ok(())
    }

    /// Runs manifest `d` through the gates: whether it is signed (a signed
    /// index vouches for its platforms), and the counter of its signature
    /// decisions.
    async fn pass_gates(
        &self,
        route: &Route,
        id: &RepoId,
        (rule, hook): (Option<&Rule>, Option<&Admission>),
        d: &Digest,
        info: &ManifestInfo,
    ) -> RegistryResult<Passed> {
        // Signatures, SBOMs, attestations: served to clients that verify.
        if !cosign::is_runnable(info) {
            return Ok(Passed { signed: false, counter: None });
        }
        let storage = route.storage();
        let (judged, by_index);
        let mut counter = None;
        let signature = match rule {
            None => None,
            Some(_) if self.trust.signed_by_index.contains_key(&(storage.clone(), d.clone())) => {
                by_index = Verdict::Signed { key: "(the index's key)".into(), via: "a signed index lists it".into() };
                Some(&by_index)
            }
            Some(rule) => {
                judged = self.verdict(route, rule, d).await;
                self.decide(id, rule, d, &judged)?;
                counter = Some(judged.counter.clone());
                Some(&judged.verdict)
            }
        };
        if let Some(hook) = hook {
            match hook.ask(&self.core.metrics, id, storage, d, info, signature).await {
                Outcome::Allowed => {}
                Outcome::Denied(why) => return Err(RegistryError::Denied(why)),
                Outcome::Unavailable(why) => return Err(RegistryError::Unavailable(why)),
            }
        }
        Ok(Passed { signed: signature.is_some_and(Verdict::is_signed), counter })
    }

    /// Records what manifest `d`, let through, vouches for: its blobs, and
    /// (when it is a signed index) its platform manifests' signatures.
    async fn vouch(&self, storage: &RepoName, d: &Digest, info: &ManifestInfo, signed: bool) {
        if signed {
            for c in info.children() {
                self.trust.signed_by_index.insert((storage.clone(), c.digest.clone()), ()).await;
            }
        }
        for b in info.blobs() {
            self.trust.served.insert((storage.clone(), b.digest.clone()), d.clone()).await;
        }
    }

    /// Counts, logs and applies a verdict.
    fn decide(&self, id: &RepoId, rule: &Rule, d: &Digest, j: &Judgement) -> RegistryResult<()> {
        j.counter.inc();
        match &j.verdict {
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

    /// Applies the gates to blob `d`, about to be served through `route`:
    /// when a rule enforces or the hook is asked, only a blob that a manifest
    /// let through lists.
    pub(super) async fn admit_blob(&self, route: &Route, d: &Digest) -> RegistryResult<()> {
        let id = route.id();
        let (rule, hook) = self.gates(&id);
        let enforcing = rule.is_some_and(|r| r.mode == VerifyMode::Enforce) || hook.is_some();
        let storage = route.storage();
        if !enforcing || self.trust.served.contains_key(&(storage.clone(), d.clone())) {
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
        if let Some(rule) = rule {
            for (m, loaded) in listing.iter().filter(|(_, l)| l.info.is_index()) {
                if self.verdict(route, rule, m).await.verdict.is_signed() {
                    self.vouch(storage, m, &loaded.info, true).await;
                }
            }
        }
        let mut refused = None;
        for (m, loaded) in listing.iter().filter(|(_, l)| l.info.blobs().any(|b| &b.digest == d)) {
            match self.pass_gates(route, &id, (rule, hook), m, &loaded.info).await {
                Ok(passed) => {
                    self.vouch(storage, m, &loaded.info, passed.signed).await;
                    return Ok(());
                }
                Err(e) => refused = Some(e),
            }
        }
        Err(refused.unwrap_or_else(|| {
            RegistryError::Denied(format!("blob {d} is not listed by a manifest of {id} that may be served"))
        }))
    }

    /// Forgets what the admission hook said about `d` (it revoked it), and
    /// what that answer let through.
    pub fn forget_admission(&self, d: &Digest) -> bool {
        let Some(hook) = &self.admission else { return false };
        hook.forget(d);
        self.trust.forget_passed(d.clone());
        let d = d.clone();
        if let Err(e) = self.trust.served.invalidate_entries_if(move |_, by| *by == d) {
            tracing::warn!(error = %e, "could not forget what a revoked answer let through");
        }
        true
    }

    /// Whether `token` may revoke admission answers.
    pub fn admission_token_matches(&self, token: &str) -> bool {
        self.admission.as_ref().is_some_and(|a| a.token_matches(token))
    }

    /// What the signature policy says of `reference` in `route`'s
    /// repository (for `berth verify`): its digest, and the verdict (`None`
    /// when no rule covers the repository). Nothing is refused here.
    pub async fn verify(&self, route: &Route, reference: &Reference) -> RegistryResult<(Digest, Option<Judged>)> {
        let m = self.read_manifest(route, reference).await?;
        let Some(rule) = self.trust.rule(&route.id()) else { return Ok((m.digest, None)) };
        let info = self.core.load_manifest(&m.digest).await?;
        let verdict = match cosign::is_runnable(&info.info) {
            true => self.verdict(route, rule, &m.digest).await.verdict.clone(),
            false => Verdict::Signed { key: "(none needed)".into(), via: "not a runnable image".into() },
        };
        let judged = Judged { rule: rule.name(), mode: format!("{:?}", rule.mode).to_lowercase(), verdict };
        Ok((m.digest, Some(judged)))
    }

    /// The verdict on manifest `d` under `rule`, cached (a new one is
    /// remembered for the web page).
    async fn verdict(&self, route: &Route, rule: &Rule, d: &Digest) -> Arc<Judgement> {
        let keys = rule.keys.current();
        let key = (route.storage().clone(), d.clone(), rule.index, keys.fingerprint);
        if let Some(j) = self.trust.verdicts.get(&key).await {
            let ttl = match (&j.verdict, route) {
                (Verdict::Signed { .. }, _) => SIGNED_TTL,
                (Verdict::Unsigned { .. }, Route::Mirrored(m)) => m.upstream.tag_ttl,
                (Verdict::Unsigned { .. }, Route::Local(_)) => UNSIGNED_LOCAL_TTL,
            };
            if j.at.elapsed() < ttl {
                return j;
            }
        }
        let (found, looked) = self.find_signatures(route, d).await;
        let verdict = judge(d, &found, &keys, &looked);
        let id = route.id();
        let outcome = match (&verdict, rule.mode) {
            (Verdict::Signed { .. }, _) => "signed",
            (Verdict::Unsigned { .. }, VerifyMode::Enforce) => "refused",
            (Verdict::Unsigned { .. }, _) => "warned",
        };
        let counter = self.core.metrics.signature_decisions.with_label_values(&[id.to_string().as_str(), outcome]);
        self.trust.remember(&id, d, outcome, &verdict);
        let j = Arc::new(Judgement { verdict, at: Instant::now(), counter });
        self.trust.verdicts.insert(key, j.clone()).await;
        j
    }

    /// Every signature of `d` in `route`'s repository: those in its `.sig`
    /// tag and in its signature referrers.
    async fn find_signatures(&self, route: &Route, d: &Digest) -> (Vec<Found>, String) {
        let tag = cosign::signature_tag(d);
        let looked = format!("tag {tag}, referrers of type {}", cosign::SIGNATURE_ARTIFACT);
        let mut manifests = Vec::new();
        // Both places at once: on a cold pull each is an upstream round trip.
        let tag_ref = Reference::Tag(tag.clone());
        let (by_tag, referrers) = futures::join!(
            self.read_manifest(route, &tag_ref),
            self.referrers(route, d, Some(cosign::SIGNATURE_ARTIFACT))
        );
        match by_tag {
            Ok(m) => manifests.push((format!("tag {tag}"), Ok(m.bytes))),
            Err(RegistryError::ManifestUnknown(_)) => {}
            Err(e) => manifests.push((format!("tag {tag}"), Err(format!("could not be read: {e}")))),
        }
        match referrers {
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
