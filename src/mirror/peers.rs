//! Sibling mirrors (`mirror.peers`): other berths asked before the upstream
//! for what is immutable (a blob, a manifest by digest). The protocol, over
//! each sibling's `/_berth/peer/` endpoints with the shared `peer_token`:
//!
//! - **Who has it**: a HEAD to every sibling at once (`peer_timeout` each);
//!   the first that holds the content verified in its store serves it.
//! - **Who fetches it**: when none has it, the sibling first in a stable hash
//!   of (its id, the digest) among those that answered, this berth included
//!   (rendezvous hashing), decides: it is asked for a claim
//!   (`/_berth/peer/claim/…`) and grants it to the first who asks (who then
//!   fetches upstream itself, streaming to its own clients at once); anyone
//!   after is told who holds the claim, or that the owner fetches it itself,
//!   and asks that one for the blob (`/_berth/peer/fetch/…`), joining its
//!   one fetch. Two siblings that miss at once ask the same owner, so the
//!   upstream link carries the blob once. A fetch on a sibling's behalf asks
//!   no sibling (`HOP`).
//! - **Trust nothing sent**: what a sibling sends is written through the
//!   store's verified ingest and released only once its digest matched; a
//!   sibling that times out, fails, or sends bytes that do not verify is
//!   skipped for `PENALTY` and the next source is asked.
//!
//! A sibling serves only mirrored content (never pushed images) and only to
//! a caller with the token (`peer_token`) or a client certificate the
//! siblings' CA issued (`peer_tls`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use awc::http::Method;

use crate::config::MirrorConfig;
use crate::oci::Digest;

/// The header a sibling's token travels in.
pub const TOKEN_HEADER: &str = "X-Berth-Peer-Token";
/// The header a sibling names itself with (its instance id).
pub const ID_HEADER: &str = "X-Berth-Peer-Id";
/// A sibling that failed is not asked again for this long.
pub const PENALTY: Duration = Duration::from_secs(30);
/// How long a `dns://` entry's addresses are used before it is resolved again.
const DNS_TTL: Duration = Duration::from_secs(30);
/// How long a claim to fetch a blob stands. Once its fetch is done the
/// claimer holds the blob (and answers probes); a claimer that died meanwhile
/// costs the others one failed ask, after which they fetch themselves.
const CLAIM_TTL: Duration = Duration::from_secs(60);

tokio::task_local! {
    /// Set while serving a sibling's request to fetch: that fetch goes to the
    /// upstream, never back to the siblings.
    pub static HOP: ();
}

/// Whether this task serves a sibling's fetch (see `HOP`).
pub fn in_hop() -> bool {
    HOP.try_with(|_| ()).is_ok()
}

/// A sibling's answer to "do you have it".
#[derive(Debug, Clone)]
pub struct Probe {
    /// `http://host:port`.
    pub base: String,
    /// Its instance id.
    pub id: String,
    /// The content's size, when it has it.
    pub size: Option<u64>,
}

/// The owner's answer to a claim: `holder` absent when it was granted.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ClaimAnswer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
}

pub struct Peers {
    entries: Vec<String>,
    /// The shared secret (`peer_token`), if siblings use one.
    token: Option<String>,
    /// The siblings' certificates (`peer_tls`), if they use them.
    tls: Option<Arc<crate::tls::PeerTls>>,
    pub timeout: Duration,
    /// This berth's id (what it answers with, and how it knows itself in the list).
    id: String,
    /// Siblings skipped until the instant, with why.
    penalized: Mutex<HashMap<String, Instant>>,
    resolved: Mutex<HashMap<String, (Instant, Vec<String>)>>,
    /// For the blobs this berth is owner of: who claimed to fetch each, until when.
    claims: Mutex<HashMap<Digest, (String, Instant)>>,
    /// The name server `srv://` entries are asked of (`peer_dns`), else the system's.
    dns: Option<std::net::SocketAddr>,
    /// Built when an `srv://` entry is first resolved.
    resolver: tokio::sync::OnceCell<hickory_resolver::TokioResolver>,
    metrics: Arc<crate::metrics::Metrics>,
}

thread_local! {
    static CLIENT: RefCell<Option<awc::Client>> = const { RefCell::new(None) };
}

/// The rendezvous score of sibling `id` for `d`: the highest fetches it.
fn score(id: &str, d: &Digest) -> Digest {
    Digest::sha256_of(format!("{id}\n{d}").as_bytes())
}

impl Peers {
    /// The siblings of `cfg` (`None` with neither `peer_token` nor
    /// `peer_tls`: no peering). `peer_tls`'s files were checked at startup
    /// (`preflight`).
    pub fn new(cfg: &MirrorConfig, id: String, metrics: Arc<crate::metrics::Metrics>) -> Option<Arc<Peers>> {
        let tls = cfg.peer_tls.as_ref().and_then(|t| match crate::tls::PeerTls::load(&t.certificate, &t.key, &t.ca) {
            Ok(tls) => Some(Arc::new(tls)),
            Err(e) => {
                tracing::error!(error = %e, "mirror.peer_tls does not load: siblings cannot authenticate by certificate");
                None
            }
        });
        if cfg.peer_token.is_none() && tls.is_none() {
            return None;
        }
        Some(Arc::new(Peers {
            entries: cfg.peers.clone(),
            token: cfg.peer_token.clone(),
            tls,
            timeout: cfg.peer_timeout,
            id,
            penalized: Default::default(),
            resolved: Default::default(),
            claims: Default::default(),
            dns: cfg.peer_dns,
            resolver: Default::default(),
            metrics,
        }))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether a request comes from a sibling: it presents the siblings'
    /// token (compared in constant time), or its connection a client
    /// certificate the siblings' CA issued.
    pub fn admits(&self, token: Option<&str>, chain: Option<&crate::tls::ClientChain>) -> bool {
        let by_token = match (token, &self.token) {
            (Some(p), Some(t)) => same_secret(p.as_bytes(), t.as_bytes()),
            _ => false,
        };
        by_token
            || match (chain, &self.tls) {
                (Some(chain), Some(tls)) => tls.admits(&chain.0),
                _ => false,
            }
    }

    /// Whether any sibling is configured to be asked.
    pub fn any(&self) -> bool {
        !self.entries.is_empty()
    }

    fn client(&self) -> awc::Client {
        CLIENT.with(|c| {
            c.borrow_mut()
                .get_or_insert_with(|| {
                    let connector = awc::Connector::new().timeout(self.timeout);
                    let connector = match &self.tls {
                        Some(tls) => connector.rustls_0_23(tls.client.clone()),
                        None => connector,
                    };
                    awc::Client::builder()
                        .connector(connector)
                        .disable_timeout()
                        .add_default_header(("User-Agent", concat!("berth/", env!("CARGO_PKG_VERSION"))))
                        .finish()
                })
                .clone()
        })
    }

    /// Skips `base` for `PENALTY`, saying why.
    pub fn penalize(&self, base: &str, why: &str) {
        tracing::warn!(peer = base, reason = why, "sibling skipped for {}s", PENALTY.as_secs());
        self.metrics.peer_failures.inc();
        self.penalized.lock().unwrap().insert(base.to_string(), Instant::now() + PENALTY);
    }

    pub fn is_penalized(&self, base: &str) -> bool {
        let mut p = self.penalized.lock().unwrap();
        match p.get(base) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                p.remove(base);
                false
            }
            None => false,
        }
    }

    /// The siblings' base URLs now: `dns://` and `srv://` entries resolved
    /// (cached for `DNS_TTL`), penalized ones left out.
    async fn members(&self) -> Vec<String> {
        let mut out = Vec::new();
        for e in &self.entries {
            if !(e.starts_with("dns://") || e.starts_with("srv://")) {
                out.push(e.trim_end_matches('/').to_string());
                continue;
            }
            let cached = self.resolved.lock().unwrap().get(e).filter(|(at, _)| at.elapsed() < DNS_TTL).cloned();
            let bases = match cached {
                Some((_, bases)) => bases,
                None => {
                    let bases = self.resolve(e).await.unwrap_or_else(|why| {
                        tracing::warn!(peers = %e, error = %why, "cannot resolve the siblings' name");
                        vec![]
                    });
                    self.resolved.lock().unwrap().insert(e.clone(), (Instant::now(), bases.clone()));
                    bases
                }
            };
            out.extend(bases);
        }
        out.sort();
        out.dedup();
        out.retain(|b| !self.is_penalized(b));
        out
    }

    /// The base URLs `dns://name:port` (every A/AAAA address of the name)
    /// or `srv://name` (each SRV record's target's addresses, with its port) stands for.
    async fn resolve(&self, entry: &str) -> Result<Vec<String>, String> {
        if let Some(name) = entry.strip_prefix("dns://") {
            let addrs = tokio::net::lookup_host(name).await.map_err(|e| e.to_string())?;
            return Ok(addrs.map(|a| format!("{}://{a}", self.scheme())).collect());
        }
        let name = entry.strip_prefix("srv://").unwrap_or(entry);
        let resolver = self.resolver.get_or_try_init(|| async { self.new_resolver() }).await?;
        let records = resolver.srv_lookup(name).await.map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for r in records.iter() {
            let ips = resolver.lookup_ip(r.target().clone()).await.map_err(|e| format!("{}: {e}", r.target()))?;
            out.extend(ips.iter().map(|ip| format!("{}://{}", self.scheme(), std::net::SocketAddr::new(ip, r.port()))));
        }
        Ok(out)
    }

    /// How resolved siblings are reached: over TLS when they authenticate by certificate.
    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    fn new_resolver(&self) -> Result<hickory_resolver::TokioResolver, String> {
        use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
        use hickory_resolver::name_server::TokioConnectionProvider;
        match self.dns {
            None => Ok(hickory_resolver::Resolver::builder_tokio().map_err(|e| e.to_string())?.build()),
            Some(server) => {
                let servers = NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
                let config = ResolverConfig::from_parts(None, vec![], servers);
                Ok(hickory_resolver::Resolver::builder_with_config(config, TokioConnectionProvider::default()).build())
            }
        }
    }

    /// A request to a sibling, with the token (if siblings use one) and this berth's id.
    pub fn request(&self, method: Method, base: &str, path: &str) -> awc::ClientRequest {
        let req = self.client().request(method, format!("{base}{path}")).insert_header((ID_HEADER, self.id.as_str()));
        match &self.token {
            Some(t) => req.insert_header((TOKEN_HEADER, t.as_str())),
            None => req,
        }
    }

    /// Sends `req` to a sibling and reads its (small) answer whole, all
    /// within `timeout`: status, headers and at most `max_size` bytes.
    async fn small_answer(
        &self,
        req: awc::ClientRequest,
        max_size: usize,
    ) -> Result<(awc::http::StatusCode, awc::http::header::HeaderMap, bytes::Bytes), String> {
        tokio::time::timeout(self.timeout, async {
            let mut resp = req.send().await.map_err(|e| e.to_string())?;
            let body = resp.body().limit(max_size).await.map_err(|e| e.to_string())?;
            Ok((resp.status(), resp.headers().clone(), body))
        })
        .await
        .unwrap_or_else(|_| Err("no answer within peer_timeout".into()))
    }

    /// As the owner of `d`: grants `asker` the claim to fetch it (`None`),
    /// unless another sibling's claim stands (its id).
    pub fn claim(&self, d: &Digest, asker: &str) -> Option<String> {
        let now = Instant::now();
        let mut claims = self.claims.lock().unwrap();
        claims.retain(|_, (_, until)| *until > now);
        match claims.get(d) {
            Some((holder, _)) if holder != asker => Some(holder.clone()),
            _ => {
                claims.insert(d.clone(), (asker.to_string(), now + CLAIM_TTL));
                None
            }
        }
    }

    /// As the owner of `d`, fetching it for a client of its own: the sibling
    /// whose claim stands, if one does (then this berth asks it instead).
    pub fn claimed(&self, d: &Digest) -> Option<String> {
        let claims = self.claims.lock().unwrap();
        claims.get(d).filter(|(id, until)| *until > Instant::now() && *id != self.id).map(|(id, _)| id.clone())
    }

    /// Asks the owner `base` for the claim to fetch `d`: `Ok(None)` granted
    /// (fetch it upstream), `Ok(Some(id))` the sibling that fetches it.
    pub async fn ask_claim(&self, base: &str, d: &Digest) -> Result<Option<String>, String> {
        let req = self.request(Method::POST, base, &format!("/_berth/peer/claim/{d}"));
        let (status, _, body) = self.small_answer(req, 64 * 1024).await.map_err(|e| format!("claim: {e}"))?;
        if !status.is_success() {
            return Err(format!("claim: {status}"));
        }
        let answer: ClaimAnswer = serde_json::from_slice(&body).map_err(|e| format!("claim: {e}"))?;
        Ok(answer.holder)
    }

    /// Asks every sibling at once whether it holds `kind` (`blobs` or
    /// `manifests`) `d`; the answers of those that answered, this berth
    /// left out. One that does not answer within `timeout` is penalized.
    pub async fn probe(&self, kind: &str, d: &Digest) -> Vec<Probe> {
        let path = format!("/_berth/peer/{kind}/{d}");
        let asks = self.members().await.into_iter().map(|base| {
            let req = self.request(Method::HEAD, &base, &path);
            async move {
                let answer = tokio::time::timeout(self.timeout, req.send()).await;
                let resp = match answer {
                    Ok(Ok(resp)) => resp,
                    Ok(Err(e)) => {
                        self.penalize(&base, &format!("HEAD: {e}"));
                        return None;
                    }
                    Err(_) => {
                        self.penalize(&base, "HEAD: no answer within peer_timeout");
                        return None;
                    }
                };
                let id = resp.headers().get(ID_HEADER).and_then(|v| v.to_str().ok())?.to_string();
                if id == self.id {
                    return None;
                }
                let size = match resp.status().as_u16() {
                    200 => resp.headers().get("content-length").and_then(|v| v.to_str().ok()?.parse().ok()),
                    _ => None,
                };
                Some(Probe { base, id, size })
            }
        });
        futures::future::join_all(asks).await.into_iter().flatten().collect()
    }

    /// Manifest `d` from the first sibling that holds it, checked against
    /// its digest (a sibling that fails or lies is penalized; `None`: none could).
    pub async fn manifest(&self, d: &Digest, max_size: usize) -> Option<bytes::Bytes> {
        for p in self.probe("manifests", d).await.into_iter().filter(|p| p.size.is_some()) {
            let req = self.request(Method::GET, &p.base, &format!("/_berth/peer/manifests/{d}"));
            let got = match self.small_answer(req, max_size).await {
                Ok((status, _, bytes)) if status.is_success() => Ok(bytes),
                Ok((status, _, _)) => Err(format!("GET answered {status}")),
                Err(e) => Err(e),
            };
            match got {
                Ok(bytes) if d.check(&bytes).is_ok() => {
                    self.received(bytes.len() as u64);
                    return Some(bytes);
                }
                Ok(_) => self.penalize(&p.base, &format!("manifest {d}: bytes that do not match the digest")),
                Err(e) => self.penalize(&p.base, &format!("manifest {d}: {e}")),
            }
        }
        None
    }

    /// What tag `tag` of `remote` at upstream `host` points to at the
    /// siblings (as stored there, fresh or not), for when the upstream is
    /// down: the manifest of the first that answers with bytes matching the
    /// digest it names. Asked of all at once, each within `timeout`.
    pub async fn stale_tag(
        &self,
        host: &str,
        remote: &str,
        tag: &str,
        max_size: usize,
    ) -> Option<(Digest, bytes::Bytes)> {
        let enc = |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
        let path = format!("/_berth/peer/tag?ns={}&remote={}&tag={}", enc(host), enc(remote), enc(tag));
        let asks = self.members().await.into_iter().map(|base| {
            let req = self.request(Method::GET, &base, &path);
            let path = &path;
            async move {
                let got = self.small_answer(req, max_size).await.and_then(|(status, headers, bytes)| {
                    let id = headers.get(ID_HEADER).and_then(|v| v.to_str().ok());
                    if id == Some(self.id.as_str()) || status == 404 {
                        return Ok(None);
                    }
                    if !status.is_success() {
                        return Err(format!("GET {path}: {status}"));
                    }
                    let named: Option<Digest> =
                        headers.get("docker-content-digest").and_then(|v| v.to_str().ok()?.parse().ok());
                    match named {
                        Some(d) if d.check(&bytes).is_ok() => Ok(Some((d, bytes))),
                        _ => Err(format!("tag {tag}: a manifest that does not match the digest named")),
                    }
                });
                match got {
                    Ok(found) => found,
                    Err(why) => {
                        self.penalize(&base, &why);
                        None
                    }
                }
            }
        });
        let found = futures::future::join_all(asks).await.into_iter().flatten().next()?;
        self.received(found.1.len() as u64);
        Some(found)
    }

    /// Who fetches `d` upstream among `probes` and this berth: `None` for
    /// this berth, else the sibling (see the module comment).
    pub fn owner<'a>(&self, d: &Digest, probes: &'a [Probe]) -> Option<&'a Probe> {
        let best = probes.iter().max_by_key(|p| score(&p.id, d).hex().to_string())?;
        (score(&best.id, d).hex() > score(&self.id, d).hex()).then_some(best)
    }

    /// Counts bytes a sibling sent.
    pub fn received(&self, n: u64) {
        self.metrics.peer_bytes.inc_by(n);
    }
}

/// Equality whose time depends on the lengths only, not on where the bytes first differ,
/// so a caller cannot guess the token a byte at a time.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(id: &str) -> Arc<Peers> {
        let cfg = MirrorConfig { peer_token: Some("s".repeat(16)), ..Default::default() };
        Peers::new(&cfg, id.into(), Arc::new(crate::metrics::Metrics::new())).unwrap()
    }

    #[test]
    fn every_sibling_names_the_same_owner_for_a_digest() {
        let ids = ["a", "b", "c"];
        let probe = |id: &str| Probe { base: format!("http://{id}"), id: id.into(), size: None };
        for i in 0..50u8 {
            let d = Digest::sha256_of(&[i]);
            let owners: Vec<String> = ids
                .iter()
                .map(|me| {
                    let p = peers(me);
                    let others: Vec<Probe> = ids.iter().filter(|o| *o != me).map(|o| probe(o)).collect();
                    p.owner(&d, &others).map_or(me.to_string(), |o| o.id.clone())
                })
                .collect();
            assert!(owners.iter().all(|o| *o == owners[0]), "{d}: {owners:?}");
        }
        // Spread: each sibling owns some of 50 digests.
        let p = peers("a");
        let others = [probe("b"), probe("c")];
        let owned: std::collections::HashSet<String> = (0..50u8)
            .map(|i| p.owner(&Digest::sha256_of(&[i]), &others).map_or("a".into(), |o| o.id.clone()))
            .collect();
        assert_eq!(owned.len(), 3);
    }

    #[test]
    fn a_claim_goes_to_the_first_who_asks() {
        let owner = peers("o");
        let d = Digest::sha256_of(b"blob");
        assert_eq!(owner.claim(&d, "x"), None, "granted");
        assert_eq!(owner.claim(&d, "y").as_deref(), Some("x"), "the next is told who fetches");
        assert_eq!(owner.claim(&d, "x"), None, "asked again by the claimer: still its");
        assert_eq!(owner.claimed(&d).as_deref(), Some("x"));
        assert_eq!(owner.claimed(&Digest::sha256_of(b"other")), None);
    }

    #[test]
    fn the_token_is_required() {
        let p = peers("a");
        assert!(p.admits(Some(&"s".repeat(16)), None));
        assert!(!p.admits(Some("wrong"), None) && !p.admits(None, None));
        assert!(!p.admits(Some(&format!("{}t", "s".repeat(15))), None), "same length, last byte differs");
        assert!(!p.admits(Some(&"s".repeat(17)), None), "a longer token that starts with it");
        let chain = crate::tls::ClientChain(vec![]);
        assert!(!p.admits(None, Some(&chain)), "no certificate without peer_tls");
    }
}
