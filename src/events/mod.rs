//! Notifications (registry:2's `notifications`): an event for every push,
//! pull, mount and delete, and for the mirror's fetches from an upstream and
//! its evictions, in registry:2's envelope
//! (`application/vnd.docker.distribution.events.v1+json`), sent to each
//! configured endpoint.
//!
//! A client never waits for a receiver: `emit` hands the event to a writer
//! that appends it (batched) to the queue on disk (`queue`), and one loop per
//! endpoint (`delivery`) sends what it has not yet taken, retrying with
//! registry:2's threshold and backoff. What the queue holds survives a
//! restart; an endpoint's place moves only once its receiver accepted an
//! envelope, so delivery is at least once, and exactly once across a clean
//! stop (which lets the envelope in flight finish).
//!
//! The fields are registry:2's, filled as Distribution 2.8 fills them for the
//! same request; events about mirrored content carry a `mirror` record (the
//! upstream) that registry:2's consumers ignore, and the actions `fetch` and
//! `evict` that only the mirror makes.

mod delivery;
pub mod queue;

use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::config::NotificationsConfig;
use crate::metrics::Metrics;
use crate::oci::{Digest, ManifestInfo};

/// Every action an event can have.
pub const ACTIONS: &[&str] = &["push", "pull", "mount", "delete", "fetch", "evict"];
/// The envelope's media type, registry:2's.
pub const ENVELOPE: &str = "application/vnd.docker.distribution.events.v1+json";
/// What registry:2 calls a blob's media type in its events.
const BLOB_MEDIA_TYPE: &str = "application/octet-stream";

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One event, as registry:2 writes it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    pub timestamp: String,
    pub action: String,
    pub target: Target,
    pub request: RequestRecord,
    pub actor: Actor,
    pub source: Source,
    /// Set for events about mirrored content: the upstream it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<MirrorRecord>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Target {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub size: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub digest: String,
    /// The size again (registry:2 keeps it for older consumers).
    #[serde(skip_serializing_if = "is_zero")]
    pub length: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub repository: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub from_repository: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub url: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub tag: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<Reference>,
}

/// A descriptor a manifest references (`notifications.include_references`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Reference {
    pub media_type: String,
    pub size: u64,
    pub digest: String,
}

/// The request that made the event (registry:2 always writes `id`, `method`
/// and `useragent`, even empty).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RequestRecord {
    pub id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub addr: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub host: String,
    pub method: String,
    pub useragent: String,
}

/// Who made the request: the authenticated user's name, if any.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Actor {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// The server that made the event: its host name and port, and an id that
/// changes with every start.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Source {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub addr: String,
    #[serde(rename = "instanceID", skip_serializing_if = "String::is_empty")]
    pub instance_id: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MirrorRecord {
    /// The upstream's host as berth names it (`docker.io`).
    pub upstream: String,
}

impl Target {
    /// A manifest, pushed or pulled (`tag` when it was asked for by tag).
    pub fn manifest(repository: &str, digest: &Digest, media_type: &str, size: u64, tag: Option<&str>) -> Target {
        Target {
            media_type: media_type.to_string(),
            size,
            length: size,
            digest: digest.to_string(),
            repository: repository.to_string(),
            tag: tag.unwrap_or_default().to_string(),
            ..Target::default()
        }
    }

    /// A blob, pushed, pulled or mounted.
    pub fn blob(repository: &str, digest: &Digest, size: u64) -> Target {
        Target::manifest(repository, digest, BLOB_MEDIA_TYPE, size, None)
    }

    /// What a delete names: the repository and the digest (or the tag).
    pub fn deleted(repository: &str, digest: Option<&Digest>, tag: Option<&str>) -> Target {
        Target {
            repository: repository.to_string(),
            digest: digest.map(ToString::to_string).unwrap_or_default(),
            tag: tag.unwrap_or_default().to_string(),
            ..Target::default()
        }
    }
}

impl Event {
    pub fn new(action: &str, target: Target) -> Event {
        Event {
            id: uuid::Uuid::new_v4().to_string(),
            timestamp: humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
            action: action.to_string(),
            target,
            ..Event::default()
        }
    }

    /// Marks the event as about content mirrored from `upstream`.
    pub fn mirrored(mut self, upstream: &str) -> Event {
        self.mirror = Some(MirrorRecord { upstream: upstream.to_string() });
        self
    }
}

/// The notifier every path emits through; inert without endpoints.
#[derive(Default)]
pub struct Notifier {
    inner: Option<Arc<Shared>>,
}

struct Shared {
    queue: Arc<queue::Queue>,
    tx: mpsc::UnboundedSender<Vec<u8>>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Vec<u8>>>>,
    cfg: NotificationsConfig,
    source: OnceLock<Source>,
    /// The number of the last event on disk.
    written: watch::Sender<u64>,
    /// Set once the server stopped: the loops finish what is in hand and end.
    closing: watch::Sender<bool>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    metrics: Arc<Metrics>,
}

impl Notifier {
    /// The notifier for `cfg`, with its queue in `root`'s bookkeeping
    /// (nothing is opened when no endpoint is configured).
    pub fn open(cfg: &NotificationsConfig, root: &std::path::Path, metrics: Arc<Metrics>) -> Result<Notifier, String> {
        if cfg.endpoints.iter().all(|e| e.disabled) {
            return Ok(Notifier::default());
        }
        let queue = Arc::new(queue::Queue::open(&root.join(crate::store::layout::EVENTS))?);
        let (tx, rx) = mpsc::unbounded_channel();
        let last = queue.last()?;
        Ok(Notifier {
            inner: Some(Arc::new(Shared {
                queue,
                tx,
                rx: Mutex::new(Some(rx)),
                cfg: cfg.clone(),
                source: OnceLock::new(),
                written: watch::channel(last).0,
                closing: watch::channel(false).0,
                tasks: Mutex::new(Vec::new()),
                metrics,
            })),
        })
    }

    /// Whether anyone listens (callers skip building events otherwise).
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Whether manifest events list the manifest's references.
    pub fn include_references(&self) -> bool {
        self.inner.as_ref().is_some_and(|s| s.cfg.include_references)
    }

    /// Queues `event` for every endpoint; returns at once.
    pub fn emit(&self, mut event: Event) {
        let Some(s) = &self.inner else { return };
        if let Some(source) = s.source.get() {
            event.source = source.clone();
        }
        match serde_json::to_vec(&event) {
            Ok(json) => {
                // Fails only once the writer ended (the server stopped).
                let _ = s.tx.send(json);
            }
            Err(e) => tracing::error!(error = %e, "a notification event could not be written"),
        }
    }

    /// Starts the queue's writer and one delivery loop per endpoint, for a
    /// server listening on `port`. Call once, on the server's runtime.
    pub fn start(&self, port: u16) {
        let Some(s) = &self.inner else { return };
        let Some(rx) = s.rx.lock().unwrap().take() else { return };
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        let _ = s.source.set(Source { addr: format!("{host}:{port}"), instance_id: uuid::Uuid::new_v4().to_string() });
        let mut tasks = s.tasks.lock().unwrap();
        tasks.push(actix_web::rt::spawn(write(s.clone(), rx)));
        let live: Vec<String> = s.cfg.endpoints.iter().filter(|e| !e.disabled).map(|e| e.name.clone()).collect();
        for e in s.cfg.endpoints.iter().filter(|e| !e.disabled) {
            let d = delivery::Delivery {
                endpoint: e.clone(),
                live: live.clone(),
                queue: s.queue.clone(),
                written: s.written.subscribe(),
                closing: s.closing.subscribe(),
                metrics: s.metrics.clone(),
                client: awc::Client::builder().timeout(e.timeout).finish(),
            };
            tasks.push(actix_web::rt::spawn(d.run()));
        }
    }

    /// After the server stopped: writes what is queued in memory, lets each
    /// endpoint finish the envelope in flight, and ends the loops.
    pub async fn close(&self) {
        let Some(s) = &self.inner else { return };
        s.closing.send_replace(true);
        let tasks: Vec<_> = s.tasks.lock().unwrap().drain(..).collect();
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// The writer: appends what was emitted, in batches (one commit for all the
/// events that arrived while the last one was written).
async fn write(s: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    let mut closing = s.closing.subscribe();
    loop {
        let mut batch = Vec::new();
        tokio::select! {
            e = rx.recv() => match e {
                Some(e) => batch.push(e),
                None => return,
            },
            _ = closing.wait_for(|c| *c) => {}
        }
        while batch.len() < 4096 {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        let done = *closing.borrow();
        if !batch.is_empty() {
            let (queue, n) = (s.queue.clone(), batch.len());
            match actix_web::rt::task::spawn_blocking(move || queue.append(&batch)).await {
                Ok(Ok(last)) => {
                    s.written.send_replace(last);
                }
                Ok(Err(e)) => tracing::error!(error = %e, events = n, "notification events could not be queued"),
                Err(e) => tracing::error!(error = %e, events = n, "notification events could not be queued"),
            }
        }
        if done && rx.is_empty() {
            return;
        }
    }
}

/// The references registry:2 lists for a manifest: its config and layers,
/// or an index's manifests.
pub fn references(info: &ManifestInfo) -> Vec<Reference> {
    info.config
        .iter()
        .chain(&info.layers)
        .chain(&info.manifests)
        .chain(&info.artifact_blobs)
        .map(|d| Reference { media_type: d.media_type.clone(), size: d.size, digest: d.digest.to_string() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_written_with_registry2s_fields_and_omissions() {
        let d: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        let e = Event::new("delete", Target::deleted("team/app", Some(&d), None));
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["target"], serde_json::json!({"digest": d.to_string(), "repository": "team/app"}));
        assert_eq!(v["actor"], serde_json::json!({}));
        assert_eq!(v["request"], serde_json::json!({"id": "", "method": "", "useragent": ""}));
        assert!(v.get("mirror").is_none());
        let e = Event::new("pull", Target::blob("team/app", &d, 7)).mirrored("docker.io");
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["target"]["mediaType"], "application/octet-stream");
        assert_eq!((v["target"]["size"].as_u64(), v["target"]["length"].as_u64()), (Some(7), Some(7)));
        assert_eq!(v["mirror"]["upstream"], "docker.io");
        assert!(e.timestamp.ends_with('Z') && e.timestamp.contains('T'));
    }
}
