//! Fetched once: one spawned task per uncached digest streams the upstream
//! body into a store ingest (hashing as it writes) and publishes its progress
//! on a watch channel. Every client, the first included, reads from that
//! growing file, so each sees bytes as they arrive, none waits for the whole
//! blob, and the fetch completes (and is kept) even if every client leaves.
//! The last byte of the body is released only once the digest is verified:
//! a mismatch aborts the ingest and cuts every client's response short.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use awc::http::Method;
use futures::StreamExt;
use tokio::sync::watch;

use super::error::{MirrorError, MirrorResult};
use super::upstream::Upstream;
use crate::oci::{Digest, RepoName};
use crate::store::{ByteStream, RandomRead, Store, READ_CHUNK};

/// Upstream bytes that have already arrived are gathered into writes of up to this size.
const WRITE_BATCH: usize = 1024 * 1024;

/// How a fetch stands.
#[derive(Clone)]
pub enum Phase {
    /// Waiting for the upstream's response headers.
    Connecting,
    /// Receiving the body: `total` bytes announced, `written` on disk so far.
    Receiving {
        total: Option<u64>,
        written: u64,
        file: Arc<dyn RandomRead>,
    },
    /// Verified and committed to the store.
    Done {
        total: u64,
        file: Arc<dyn RandomRead>,
    },
    Failed(MirrorError),
}

/// One in-flight upstream fetch of a blob.
pub struct Fetch {
    pub digest: Digest,
    phase: watch::Receiver<Phase>,
}

/// In-flight fetches by digest, owned by the `Mirror`.
pub type Inflight = Arc<Mutex<HashMap<Digest, Arc<Fetch>>>>;

/// Where a fetch writes and whom it asks.
pub struct FetchJob {
    pub store: Arc<Store>,
    pub upstream: Arc<Upstream>,
    pub remote: String,
    pub storage: RepoName,
    pub digest: Digest,
}

/// Joins the fetch of `job.digest` in flight, or starts one.
pub fn join_or_start(inflight: &Inflight, job: FetchJob) -> Arc<Fetch> {
    let mut map = inflight.lock().unwrap();
    if let Some(f) = map.get(&job.digest) {
        return f.clone();
    }
    let (tx, rx) = watch::channel(Phase::Connecting);
    let fetch = Arc::new(Fetch { digest: job.digest.clone(), phase: rx });
    map.insert(job.digest.clone(), fetch.clone());
    drop(map);
    let inflight = inflight.clone();
    let me = fetch.clone();
    // Spawned, not awaited: the fetch outlives the request that started it.
    actix_web::rt::spawn(async move {
        let digest = job.digest.clone();
        let host = job.upstream.host.clone();
        let result = run(job, &tx).await;
        if let Err(e) = &result {
            tracing::warn!(upstream = %host, %digest, error = %e, "blob fetch failed");
            tx.send_replace(Phase::Failed(e.clone()));
        }
        let mut map = inflight.lock().unwrap();
        if map.get(&digest).is_some_and(|f| Arc::ptr_eq(f, &me)) {
            map.remove(&digest);
        }
    });
    fetch
}

async fn run(job: FetchJob, tx: &watch::Sender<Phase>) -> MirrorResult<()> {
    let up = &job.upstream;
    let path = format!("/v2/{}/blobs/{}", job.remote, job.digest);
    tracing::debug!(upstream = %up.host, %path, "GET blob upstream");
    let resp = up.send(Method::GET, &path, None, &super::scope(&job.remote)).await?;
    let resp = up.check(resp, || format!("blob {} in {}", job.digest, job.remote))?;
    let total = super::content_length(&resp);
    let (mut ingest, file) = job.store.begin_ingest(&job.storage, &job.digest).await?;
    tx.send_replace(Phase::Receiving { total, written: 0, file: file.clone() });
    let mut body = std::pin::pin!(crate::store::gather(resp, WRITE_BATCH));
    let body_result: MirrorResult<()> = async {
        loop {
            let next = tokio::time::timeout(up.read_timeout(), body.next())
                .await
                .map_err(|_| MirrorError::Timeout { host: up.host.clone(), after: up.read_timeout() })?;
            let Some(chunk) = next else { return Ok(()) };
            let chunk = chunk.map_err(|e| MirrorError::Unreachable { host: up.host.clone(), reason: e.to_string() })?;
            ingest.write(chunk).await?;
            if let Some(t) = total.filter(|&t| ingest.size() > t) {
                return Err(MirrorError::SizeMismatch { host: up.host.clone(), expected: t, actual: ingest.size() });
            }
            let written = ingest.size();
            tx.send_modify(|p| {
                if let Phase::Receiving { written: w, .. } = p {
                    *w = written;
                }
            });
        }
    }
    .await;
    let verified = match body_result {
        Ok(()) => ingest.verify(&job.digest, total).map_err(|(ingest, e)| (ingest, mismatch(up, e))),
        Err(e) => Err((ingest, e)),
    };
    let verified = match verified {
        Ok(v) => v,
        Err((ingest, e)) => {
            job.store.abort_ingest(ingest).await;
            return Err(e);
        }
    };
    // Verified: clients may take the last bytes now. Durability (fsync, rename
    // into blobs/) follows; new requests keep joining this fetch until it is stored.
    let size = verified.size();
    tx.send_replace(Phase::Done { total: size, file });
    job.store.commit_ingest(verified).await?;
    tracing::debug!(upstream = %up.host, digest = %job.digest, size, "blob fetched and stored");
    Ok(())
}

/// An ingest's store error, as the upstream's fault when the content did not match.
fn mismatch(up: &Upstream, e: crate::store::StoreError) -> MirrorError {
    match e {
        crate::store::StoreError::DigestMismatch { expected, actual } => MirrorError::DigestMismatch {
            host: up.host.clone(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        },
        crate::store::StoreError::SizeMismatch { expected, actual } => {
            MirrorError::SizeMismatch { host: up.host.clone(), expected, actual }
        }
        other => other.into(),
    }
}

impl Fetch {
    /// Waits for the upstream's answer: the blob's size if announced, or the failure.
    pub async fn size(&self) -> MirrorResult<Option<u64>> {
        let mut rx = self.phase.clone();
        loop {
            match &*rx.borrow_and_update() {
                Phase::Connecting => {}
                Phase::Receiving { total, .. } => return Ok(*total),
                Phase::Done { total, .. } => return Ok(Some(*total)),
                Phase::Failed(e) => return Err(e.clone()),
            }
            if rx.changed().await.is_err() {
                return Err(MirrorError::Store("the fetch ended without a result".into()));
            }
        }
    }

    /// Streams `[start, end)` (or to the end of the blob) as the bytes arrive.
    /// Ends in an error, cutting the client's response short, if the fetch fails.
    pub fn tail(&self, start: u64, end: Option<u64>) -> ByteStream {
        let rx = self.phase.clone();
        futures::stream::try_unfold((rx, start), move |(mut rx, pos)| async move {
            loop {
                let phase = rx.borrow_and_update().clone();
                let (available, complete, file) = match phase {
                    Phase::Connecting => (0, None, None),
                    // The last byte is held back until the digest is verified:
                    // no client ever receives a complete body that was not checked.
                    Phase::Receiving { written, total, file } => {
                        (total.map_or(written, |t| written.min(t.saturating_sub(1))), None, Some(file))
                    }
                    Phase::Done { total, file } => (total, Some(total), Some(file)),
                    Phase::Failed(e) => return Err(std::io::Error::other(e.to_string())),
                };
                let limit = match (end, complete) {
                    (Some(e), _) => e,
                    (None, Some(total)) => total,
                    (None, None) => u64::MAX,
                };
                if pos >= limit {
                    return Ok(None);
                }
                if let (true, Some(file)) = (pos < available, file) {
                    let want = (available.min(limit) - pos).min(READ_CHUNK as u64) as usize;
                    let bytes = file.read_at(pos, want).await?;
                    let next = pos + bytes.len() as u64;
                    return Ok(Some((bytes, (rx, next))));
                }
                if complete.is_some() {
                    return Ok(None);
                }
                if rx.changed().await.is_err() {
                    return Err(std::io::Error::other("the blob fetch ended without a result"));
                }
            }
        })
        .boxed()
    }
}
