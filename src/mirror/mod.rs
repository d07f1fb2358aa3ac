//! The upstream side of the pull-through mirror: talks to upstream
//! registries (awc, token auth), fetches manifests and blobs, and writes what
//! it fetches only through the store's verified ingest. Called by the
//! `registry` façade, which decides when to ask upstream and keeps the caches.

pub mod auth;
mod close_delimited;
pub mod error;
mod fetch;
mod helper;
pub mod peers;
mod upstream;

use std::collections::HashMap;
use std::sync::Arc;

use awc::http::{header, Method};
use bytes::Bytes;

pub use error::{MirrorError, MirrorResult};
pub use fetch::Fetch;
pub use upstream::{Health, Upstream};

use crate::config::MirrorConfig;
use crate::metrics::Metrics;
use crate::oci::RepoName;
use crate::oci::{Digest, ManifestInfo, MediaType, Reference};
use crate::store::Store;

/// A manifest as an upstream sent it, digest verified.
pub struct FetchedManifest {
    pub digest: Digest,
    pub bytes: Bytes,
}

pub struct Mirror {
    upstreams: HashMap<String, Arc<Upstream>>,
    /// Sibling mirrors (`mirror.peers`), when a `peer_token` is set.
    peers: Option<Arc<peers::Peers>>,
    store: Arc<Store>,
    inflight: fetch::Inflight,
    max_manifest_size: usize,
    metrics: Arc<Metrics>,
}

fn accept_all() -> String {
    MediaType::ALL.join(", ")
}

fn scope(remote: &str) -> String {
    format!("repository:{remote}:pull")
}

fn content_length(resp: &upstream::Response) -> Option<u64> {
    resp.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
}

fn header_digest(resp: &upstream::Response) -> Option<Digest> {
    resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok())
}

impl Mirror {
    pub fn new(cfg: &MirrorConfig, store: Arc<Store>, max_manifest_size: u64, metrics: Arc<Metrics>) -> Self {
        let upstreams =
            cfg.upstreams.iter().map(|u| (u.host.clone(), Arc::new(Upstream::new(u, metrics.clone())))).collect();
        let max_manifest_size = max_manifest_size as usize;
        let peers = peers::Peers::new(cfg, store.instance().to_string(), metrics.clone());
        Self { upstreams, peers, store, inflight: Default::default(), max_manifest_size, metrics }
    }

    /// The siblings, if peering is on (their endpoints answer with the token).
    pub fn peers(&self) -> Option<&Arc<peers::Peers>> {
        self.peers.as_ref()
    }

    /// The siblings to ask now: none while serving a sibling's own fetch.
    fn peers_to_ask(&self) -> Option<Arc<peers::Peers>> {
        self.peers.clone().filter(|p| p.any() && !peers::in_hop())
    }

    /// (fetches in flight, client responses reading them).
    pub fn inflight_counts(&self) -> (usize, usize) {
        let map = self.inflight.lock().unwrap();
        (map.len(), map.values().map(|f| f.readers()).sum())
    }

    pub fn upstream(&self, host: &str) -> Option<Arc<Upstream>> {
        self.upstreams.get(host).cloned()
    }

    /// The configured upstream hosts.
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.upstreams.keys().map(String::as_str)
    }

    /// GETs a manifest and checks its digest: against the reference if it is
    /// one, else against `Docker-Content-Digest` when the upstream sends it.
    pub async fn fetch_manifest(
        &self,
        up: &Upstream,
        remote: &str,
        reference: &Reference,
    ) -> MirrorResult<FetchedManifest> {
        // A manifest by digest is the same wherever it comes from: a sibling first.
        if let (Reference::Digest(d), Some(peers)) = (reference, self.peers_to_ask()) {
            if let Some(bytes) = peers.manifest(d, self.max_manifest_size).await {
                return Ok(FetchedManifest { digest: d.clone(), bytes });
            }
        }
        let path = format!("/v2/{remote}/manifests/{reference}");
        tracing::debug!(upstream = %up.host, %path, "GET manifest upstream");
        let resp = up.send(Method::GET, &path, Some(&accept_all()), &scope(remote)).await?;
        let mut resp = up.check(resp, || format!("manifest {remote}:{reference}"))?;
        let announced = header_digest(&resp);
        let bytes = resp
            .body()
            .limit(self.max_manifest_size)
            .await
            .map_err(|e| up.failed(up.protocol(format!("manifest body: {e}"))))?;
        self.metrics.fetched(&up.host, &crate::metrics::current_client(), bytes.len() as u64);
        let expected = match reference {
            Reference::Digest(d) => Some(d.clone()),
            Reference::Tag(_) => announced,
        };
        let digest = match expected {
            Some(expected) => {
                expected.check(&bytes).map_err(|actual| {
                    up.failed(MirrorError::DigestMismatch {
                        host: up.host.clone(),
                        expected: expected.to_string(),
                        actual: actual.to_string(),
                    })
                })?;
                expected
            }
            None => Digest::sha256_of(&bytes),
        };
        Ok(FetchedManifest { digest, bytes })
    }

    /// What the siblings say tag `tag` of `remote` points to, for when the
    /// upstream is down (served as stale; `None`: no sibling has it).
    pub async fn tag_from_peers(&self, up: &Upstream, remote: &str, tag: &str) -> Option<FetchedManifest> {
        let peers = self.peers_to_ask()?;
        let (digest, bytes) = peers.stale_tag(&up.host, remote, tag, self.max_manifest_size).await?;
        Some(FetchedManifest { digest, bytes })
    }

    /// What the upstream lists as referring to `subject`: the referrers API,
    /// or, where the upstream does not have it (404), the referrers tag
    /// schema (an index tagged `sha256-<hex>`); empty when neither exists.
    /// Only the list: each manifest is fetched (and verified) by digest.
    pub async fn fetch_referrers(&self, up: &Upstream, remote: &str, subject: &Digest) -> MirrorResult<Vec<Digest>> {
        let path = format!("/v2/{remote}/referrers/{subject}");
        tracing::debug!(upstream = %up.host, %path, "GET referrers upstream");
        let resp = up.send(Method::GET, &path, Some(MediaType::OCI_INDEX), &scope(remote)).await?;
        let body = match up.check(resp, || format!("referrers of {subject} in {remote}")) {
            Ok(mut resp) => resp
                .body()
                .limit(self.max_manifest_size)
                .await
                .map_err(|e| up.failed(up.protocol(format!("referrers body: {e}"))))?,
            Err(MirrorError::NotFound { .. }) => {
                let tag: Reference = match subject.to_string().replacen(':', "-", 1).parse() {
                    Ok(tag) => tag,
                    Err(_) => return Ok(vec![]),
                };
                match self.fetch_manifest(up, remote, &tag).await {
                    Ok(index) => index.bytes,
                    Err(MirrorError::NotFound { .. }) => return Ok(vec![]),
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        let index = ManifestInfo::parse_stored(&body)
            .map_err(|e| up.protocol(format!("referrers of {subject}: {}", e.message)))?;
        Ok(index.children().map(|d| d.digest.clone()).collect())
    }

    /// HEADs a tag (free of Docker Hub's pull rate limit); the digest it
    /// points to, if the upstream says.
    pub async fn head_manifest(
        &self,
        up: &Upstream,
        remote: &str,
        reference: &Reference,
    ) -> MirrorResult<Option<Digest>> {
        let path = format!("/v2/{remote}/manifests/{reference}");
        tracing::debug!(upstream = %up.host, %path, "HEAD manifest upstream");
        let resp = up.send(Method::HEAD, &path, Some(&accept_all()), &scope(remote)).await?;
        let resp = up.check(resp, || format!("manifest {remote}:{reference}"))?;
        Ok(header_digest(&resp))
    }

    /// HEADs a blob: its size, without downloading it.
    pub async fn head_blob(&self, up: &Upstream, remote: &str, d: &Digest) -> MirrorResult<u64> {
        let path = format!("/v2/{remote}/blobs/{d}");
        tracing::debug!(upstream = %up.host, %path, "HEAD blob upstream");
        let resp = up.send(Method::HEAD, &path, None, &scope(remote)).await?;
        let resp = up.check(resp, || format!("blob {d} in {remote}"))?;
        content_length(&resp).ok_or_else(|| up.protocol("blob HEAD without Content-Length".into()))
    }

    /// The single fetch of blob `d` into `storage`, or the one in flight
    /// (possibly for another repository; `true` then).
    pub fn fetch_blob(&self, up: Arc<Upstream>, remote: &str, storage: &RepoName, d: &Digest) -> (Arc<Fetch>, bool) {
        fetch::join_or_start(
            &self.inflight,
            fetch::FetchJob {
                store: self.store.clone(),
                upstream: up,
                remote: remote.to_string(),
                storage: storage.clone(),
                digest: d.clone(),
                client: crate::metrics::current_client(),
                metrics: self.metrics.clone(),
                peers: self.peers_to_ask(),
            },
        )
    }

    /// The fetch of `d` in flight, if any.
    pub fn inflight_blob(&self, d: &Digest) -> Option<Arc<Fetch>> {
        self.inflight.lock().unwrap().get(d).cloned()
    }
}
