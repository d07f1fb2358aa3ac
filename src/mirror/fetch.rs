//! Fetched once: one spawned task per uncached digest streams the upstream
//! body into a store ingest (hashing as it writes) and publishes its progress
//! on a watch channel. Every client, the first included, reads from that
//! growing file, so each sees bytes as they arrive, none waits for the whole
//! blob, and the fetch completes (and is kept) even if every client leaves.
//! The last byte of a body is released only once the digest is verified, so a
//! mismatch cuts every client's response short; a client that wants a range
//! or a size waits for the verification before it is told anything.
//! A fetch leaves the in-flight map however its task ends, a panic included.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    /// Receiving the body: `total` bytes announced (if the upstream said),
    /// `written` on disk so far.
    Receiving {
        total: Option<u64>,
        written: u64,
        file: Arc<dyn RandomRead>,
    },
    /// Verified (digest and size); committing to the store follows.
    Done {
        total: u64,
        file: Arc<dyn RandomRead>,
    },
    Failed(MirrorError),
}

/// Repositories besides the fetch's own that get the blob linked once it is stored.
#[derive(Default)]
struct Links {
    repos: Vec<RepoName>,
    /// The blob is stored and the list was served: later askers link themselves.
    closed: bool,
}

/// One in-flight upstream fetch of a blob.
pub struct Fetch {
    pub digest: Digest,
    /// The upstream host and repository the bytes come from.
    pub host: String,
    pub remote: String,
    phase: watch::Receiver<Phase>,
    links: Mutex<Links>,
    /// Client responses reading the fetch now (`tail`).
    readers: Arc<AtomicUsize>,
}

/// Counts a `tail` stream among a fetch's readers while it lives.
struct Reader(Arc<AtomicUsize>);

impl Reader {
    fn new(readers: &Arc<AtomicUsize>) -> Self {
        readers.fetch_add(1, Ordering::Relaxed);
        Reader(readers.clone())
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
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
    /// Whom the bytes are fetched for (counted in the metrics).
    pub client: Arc<str>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Sibling mirrors to ask before the upstream (`None`: ask none).
    pub peers: Option<Arc<super::peers::Peers>>,
}

/// The task's hold on its map entry and its channel: dropped when the task
/// ends in any way (a panic unwinds through it too), it reports a fetch that
/// never finished as failed and takes the entry out of the map.
struct Entry {
    inflight: Inflight,
    fetch: Arc<Fetch>,
    tx: watch::Sender<Phase>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.tx.send_if_modified(|p| match p {
            Phase::Connecting | Phase::Receiving { .. } => {
                *p = Phase::Failed(MirrorError::Aborted);
                true
            }
            Phase::Done { .. } | Phase::Failed(_) => false,
        });
        self.fetch.close_links();
        if let Ok(mut map) = self.inflight.lock() {
            if map.get(&self.fetch.digest).is_some_and(|f| Arc::ptr_eq(f, &self.fetch)) {
                map.remove(&self.fetch.digest);
            }
        }
    }
}

/// Joins the fetch of `job.digest` in flight (whatever repository it is for:
/// the caller checks that first), or starts one. Returns the fetch and
/// whether it was already running.
pub fn join_or_start(inflight: &Inflight, job: FetchJob) -> (Arc<Fetch>, bool) {
    let mut map = inflight.lock().unwrap();
    if let Some(f) = map.get(&job.digest) {
        return (f.clone(), true);
    }
    let (tx, rx) = watch::channel(Phase::Connecting);
    let fetch = Arc::new(Fetch {
        digest: job.digest.clone(),
        host: job.upstream.host.clone(),
        remote: job.remote.clone(),
        phase: rx,
        links: Mutex::default(),
        readers: Arc::default(),
    });
    map.insert(job.digest.clone(), fetch.clone());
    drop(map);
    let entry = Entry { inflight: inflight.clone(), fetch: fetch.clone(), tx };
    // Spawned, not awaited: the fetch outlives the request that started it.
    actix_web::rt::spawn(async move {
        let (digest, host) = (job.digest.clone(), job.upstream.host.clone());
        let store = job.store.clone();
        let result = run(job, &entry.tx).await;
        match result {
            Ok(()) => {
                for repo in entry.fetch.close_links() {
                    if let Err(e) = store.link_existing(&repo, &digest).await {
                        tracing::warn!(%repo, %digest, error = %e, "could not link a fetched blob");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(upstream = %host, %digest, error = %e, "blob fetch failed");
                entry.tx.send_replace(Phase::Failed(e));
            }
        }
        drop(entry);
    });
    (fetch, false)
}

/// Whose turn it is to fetch a blob, when replicas share the storage.
enum Turn {
    /// This replica's: it holds the lease until the blob is stored.
    Mine(crate::store::bucket_lease::LeaseGuard),
    /// Another replica stored it meanwhile: its size.
    Stored(u64),
}

/// How often a replica waiting on another's fetch looks for the blob.
const TURN_POLL: Duration = Duration::from_millis(100);

/// Waits until the blob is stored by another replica, or this one wins the
/// lease to fetch it (free, released, or expired with its holder).
async fn wait_turn(job: &FetchJob) -> MirrorResult<Turn> {
    use crate::store::bucket_lease::Attempt;
    let mut waited = false;
    loop {
        if let Some(size) = job.store.blob_size(&job.digest).await? {
            return Ok(Turn::Stored(size));
        }
        match job.store.try_fetch_lease(&job.digest).await? {
            // Stored just before the holder let go: the second look finds it.
            Attempt::Won(lease) => {
                return Ok(match job.store.blob_size(&job.digest).await? {
                    Some(size) => Turn::Stored(size),
                    None => Turn::Mine(lease),
                })
            }
            Attempt::Held => {
                if !waited {
                    waited = true;
                    job.metrics.fetch_waits.inc();
                    tracing::debug!(digest = %job.digest, "another replica is fetching this blob; waiting for it");
                }
                tokio::time::sleep(TURN_POLL).await;
            }
        }
    }
}

async fn run(job: FetchJob, tx: &watch::Sender<Phase>) -> MirrorResult<()> {
    // Over shared storage, one replica fetches a cold blob; the others serve what it stored.
    let _lease = match job.store.shared() {
        false => None,
        true => match wait_turn(&job).await? {
            Turn::Mine(lease) => Some(lease),
            Turn::Stored(size) => {
                job.store.link_existing(&job.storage, &job.digest).await?;
                tx.send_replace(Phase::Done { total: size, file: job.store.blob_read_at(&job.digest) });
                return Ok(());
            }
        },
    };
    // A sibling that has it, or the one whose turn it is to fetch it.
    if let Some(peers) = job.peers.clone() {
        if let Some((verified, file)) = from_peers(&job, &peers).await? {
            let size = verified.size();
            tx.send_replace(Phase::Done { total: size, file });
            job.store.commit_ingest(verified).await?;
            return Ok(());
        }
    }
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
            job.metrics.fetched(&up.host, &job.client, chunk.len() as u64);
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
            // The request itself was counted by `send`/`check`; this is the body.
            return Err(up.failed(e));
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

/// The blob from a sibling (see `peers`): from one that holds it, else from
/// the one that fetches it, as the owner of the digest says. Its bytes are
/// released to no client before they verified (the fetch stays
/// `Connecting`), so a sibling that fails or lies costs time, never a wrong
/// byte; it is then penalized and the next source asked. `None`: the
/// upstream, by this berth (granted the claim, or no sibling could help).
async fn from_peers(
    job: &FetchJob,
    peers: &super::peers::Peers,
) -> MirrorResult<Option<(crate::store::Verified, Arc<dyn RandomRead>)>> {
    let probes = peers.probe("blobs", &job.digest).await;
    for holder in probes.iter().filter(|p| p.size.is_some()) {
        let path = format!("/_berth/peer/blobs/{}", job.digest);
        if let Some(got) = from_peer(job, peers, &holder.base, &path, peers.timeout, peers.timeout).await? {
            return Ok(Some(got));
        }
    }
    // Holders that just failed are out of the running.
    let live: Vec<_> = probes.into_iter().filter(|p| !peers.is_penalized(&p.base)).collect();
    let fetcher = match peers.owner(&job.digest, &live) {
        // This berth decides: a sibling that claimed it first fetches it.
        None => peers.claimed(&job.digest),
        Some(owner) => match peers.ask_claim(&owner.base, &job.digest).await {
            Ok(fetcher) => fetcher,
            Err(why) => {
                peers.penalize(&owner.base, &why);
                None
            }
        },
    };
    let Some(fetcher) = fetcher.and_then(|id| live.iter().find(|p| p.id == id)) else { return Ok(None) };
    // It fetches it upstream (this request joins its fetch in flight): wait as
    // long as the upstream may take, and its silences as long as the upstream's.
    let up = &job.upstream;
    let path = format!(
        "/_berth/peer/fetch/{}?ns={}&remote={}",
        job.digest,
        percent_encoding::utf8_percent_encode(&up.host, percent_encoding::NON_ALPHANUMERIC),
        percent_encoding::utf8_percent_encode(&job.remote, percent_encoding::NON_ALPHANUMERIC),
    );
    let headers_within = peers.timeout + up.response_timeout();
    let silence = peers.timeout.max(up.read_timeout());
    tracing::debug!(peer = %fetcher.base, digest = %job.digest, "joining the sibling that fetches it");
    from_peer(job, peers, &fetcher.base, &path, headers_within, silence).await
}

/// One transfer from a sibling into a verified ingest; `None` (the sibling
/// penalized) when it failed, timed out or sent the wrong bytes.
async fn from_peer(
    job: &FetchJob,
    peers: &super::peers::Peers,
    base: &str,
    path: &str,
    headers_within: Duration,
    silence: Duration,
) -> MirrorResult<Option<(crate::store::Verified, Arc<dyn RandomRead>)>> {
    let req = peers.request(Method::GET, base, path);
    let resp = match tokio::time::timeout(headers_within, req.send()).await {
        Ok(Ok(resp)) if resp.status().is_success() => resp,
        // Not the sibling's fault (the upstream has no such blob, or it was
        // collected meanwhile): the upstream is asked, and answers for itself.
        Ok(Ok(resp)) if resp.status() == awc::http::StatusCode::NOT_FOUND => return Ok(None),
        Ok(Ok(resp)) => {
            peers.penalize(base, &format!("GET {path}: {}", resp.status()));
            return Ok(None);
        }
        Ok(Err(e)) => {
            peers.penalize(base, &format!("GET {path}: {e}"));
            return Ok(None);
        }
        Err(_) => {
            peers.penalize(base, &format!("GET {path}: no answer within {}s", headers_within.as_secs()));
            return Ok(None);
        }
    };
    let total = super::content_length(&resp);
    let (mut ingest, file) = job.store.begin_ingest(&job.storage, &job.digest).await?;
    let mut body = std::pin::pin!(crate::store::gather(resp, WRITE_BATCH));
    let failed: Option<String> = loop {
        match tokio::time::timeout(silence, body.next()).await {
            Err(_) => break Some(format!("silent for {}s mid-transfer", silence.as_secs())),
            Ok(None) => break None,
            Ok(Some(Err(e))) => break Some(format!("transfer: {e}")),
            Ok(Some(Ok(chunk))) => {
                peers.received(chunk.len() as u64);
                // Our own storage failing is no sibling's fault: the fetch fails.
                if let Err(e) = ingest.write(chunk).await {
                    job.store.abort_ingest(ingest).await;
                    return Err(e.into());
                }
                if total.is_some_and(|t| ingest.size() > t) {
                    break Some("more bytes than announced".into());
                }
            }
        }
    };
    let verified = match failed {
        Some(why) => Err((ingest, why)),
        None => ingest.verify(&job.digest, total).map_err(|(ingest, e)| (ingest, e.to_string())),
    };
    match verified {
        Ok(v) => Ok(Some((v, file))),
        Err((ingest, why)) => {
            job.store.abort_ingest(ingest).await;
            peers.penalize(base, &format!("blob {}: {why}", job.digest));
            Ok(None)
        }
    }
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
    /// Links the blob into `repo` too once it is stored; `false` when it is
    /// stored already (the caller links it itself).
    pub fn also_link(&self, repo: RepoName) -> bool {
        let mut links = self.links.lock().unwrap();
        if links.closed {
            return false;
        }
        if !links.repos.contains(&repo) {
            links.repos.push(repo);
        }
        true
    }

    /// Client responses reading the fetch now.
    pub fn readers(&self) -> usize {
        self.readers.load(Ordering::Relaxed)
    }

    fn close_links(&self) -> Vec<RepoName> {
        let mut links = self.links.lock().unwrap();
        links.closed = true;
        std::mem::take(&mut links.repos)
    }

    /// Waits for the upstream's answer: the size it announced (`None` for a
    /// body without Content-Length), or the failure.
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
                return Err(MirrorError::Aborted);
            }
        }
    }

    /// Waits until the whole blob is verified: its size and a reader of it.
    /// A client that is told anything before the end (a range, a size) waits here.
    pub async fn verified(&self) -> MirrorResult<(u64, Arc<dyn RandomRead>)> {
        let mut rx = self.phase.clone();
        loop {
            match &*rx.borrow_and_update() {
                Phase::Connecting | Phase::Receiving { .. } => {}
                Phase::Done { total, file } => return Ok((*total, file.clone())),
                Phase::Failed(e) => return Err(e.clone()),
            }
            if rx.changed().await.is_err() {
                return Err(MirrorError::Aborted);
            }
        }
    }

    /// Streams the whole blob as the bytes arrive. The last byte on disk is
    /// held back until the digest is verified, so no client ever receives a
    /// complete body that was not checked; a failed fetch ends the stream in
    /// an error, cutting the client's response short.
    pub fn tail(&self) -> ByteStream {
        let rx = self.phase.clone();
        let reader = Reader::new(&self.readers);
        futures::stream::try_unfold((rx, 0u64, reader), move |(mut rx, pos, reader)| async move {
            loop {
                let phase = rx.borrow_and_update().clone();
                let (available, complete, file) = match phase {
                    Phase::Connecting => (0, false, None),
                    Phase::Receiving { written, total, file } => {
                        // Without a Content-Length any byte may be the last one.
                        let releasable = total.map_or(written.saturating_sub(1), |t| written.min(t.saturating_sub(1)));
                        (releasable, false, Some(file))
                    }
                    Phase::Done { total, file } => (total, true, Some(file)),
                    Phase::Failed(e) => return Err(std::io::Error::other(e.to_string())),
                };
                if let (true, Some(file)) = (pos < available, file) {
                    let want = (available - pos).min(READ_CHUNK as u64) as usize;
                    let bytes = file.read_at(pos, want).await?;
                    if bytes.is_empty() {
                        return Err(std::io::Error::other("the fetched file is shorter than what was written"));
                    }
                    let next = pos + bytes.len() as u64;
                    return Ok(Some((bytes, (rx, next, reader))));
                }
                if complete {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fetch_task_that_panics_leaves_the_map_and_fails_its_waiters() {
        let inflight: Inflight = Default::default();
        let d = Digest::sha256_of(b"x");
        let (tx, rx) = watch::channel(Phase::Connecting);
        let fetch = Arc::new(Fetch {
            digest: d.clone(),
            host: "h".into(),
            remote: "r".into(),
            phase: rx,
            links: Mutex::default(),
            readers: Arc::default(),
        });
        inflight.lock().unwrap().insert(d.clone(), fetch.clone());
        let entry = Entry { inflight: inflight.clone(), fetch: fetch.clone(), tx };
        let task = tokio::spawn(async move {
            let _entry = entry;
            panic!("a fetch task that panics (on purpose)");
        });
        assert!(task.await.unwrap_err().is_panic());
        assert!(inflight.lock().unwrap().is_empty(), "the digest can be fetched again");
        assert!(matches!(fetch.size().await, Err(MirrorError::Aborted)), "waiters are told");
        assert!(matches!(fetch.verified().await, Err(MirrorError::Aborted)));
        assert!(!fetch.also_link("a".parse().unwrap()), "no link is promised by a dead fetch");
    }
}
