//! One endpoint's delivery loop: the events it has not taken, in envelopes
//! of up to `BATCH`, each sent until the receiver accepts it (any 2xx or 3xx,
//! as registry:2), then its place moves past them. Failures are retried at
//! once up to the endpoint's `threshold`, then every `backoff` (registry:2's
//! retrying sink), for as long as it takes: the queue is on disk.

use std::sync::Arc;

use tokio::sync::watch;

use crate::config::NotifyEndpoint;
use crate::metrics::Metrics;

use super::queue::Queue;

/// Events in one envelope at most.
const BATCH: usize = 64;

pub(super) struct Delivery {
    pub endpoint: NotifyEndpoint,
    /// Every enabled endpoint (an event goes when all of them took it).
    pub live: Vec<String>,
    pub queue: Arc<Queue>,
    pub written: watch::Receiver<u64>,
    pub closing: watch::Receiver<bool>,
    pub metrics: Arc<Metrics>,
    /// One client for the loop's life: its connections to the receiver are kept alive between envelopes.
    pub client: awc::Client,
}

/// Why an event is not sent to an endpoint (registry:2's `ignoredmediatypes`
/// and `ignore`): its action or its target's media type.
fn ignored(e: &NotifyEndpoint, event: &serde_json::Value) -> bool {
    let action = event["action"].as_str().unwrap_or("");
    let media_type = event["target"]["mediaType"].as_str().unwrap_or("");
    e.ignore_actions.iter().any(|a| a == action) || e.ignore_media_types.iter().any(|m| m == media_type)
}

impl Delivery {
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Queue) -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        let q = self.queue.clone();
        actix_web::rt::task::spawn_blocking(move || f(&q)).await.map_err(|e| e.to_string())?
    }

    pub async fn run(mut self) {
        let name = self.endpoint.name.clone();
        let pending = self.metrics.notifications_pending.with_label_values(&[name.as_str()]);
        let (sent, failed) = (
            self.metrics.notifications_sent.with_label_values(&[name.as_str()]),
            self.metrics.notifications_failed.with_label_values(&[name.as_str()]),
        );
        let n = name.clone();
        let mut at = match self.blocking(move |q| q.cursor(&n)).await {
            Ok(at) => at,
            Err(e) => {
                tracing::error!(endpoint = %name, error = %e, "notifications to this endpoint stopped");
                return;
            }
        };
        let mut failures = 0u32;
        loop {
            let last = *self.written.borrow_and_update();
            pending.set(last.saturating_sub(at) as i64);
            // Stopping: the envelope in flight was finished (its place
            // recorded); what is left waits on disk for the next start.
            if *self.closing.borrow() {
                return;
            }
            if last <= at {
                tokio::select! {
                    _ = self.written.changed() => {}
                    _ = self.closing.changed() => {}
                }
                continue;
            }
            let batch = match self.blocking(move |q| q.after(at, BATCH)).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(endpoint = %name, error = %e, "reading the notification queue failed");
                    self.pause(self.endpoint.backoff).await;
                    continue;
                }
            };
            let Some(&(to, _)) = batch.last() else {
                // Pruned under us cannot happen (our place holds them); be safe.
                at = last;
                continue;
            };
            // Parsed only for an endpoint that ignores something.
            let filters = !(self.endpoint.ignore_actions.is_empty() && self.endpoint.ignore_media_types.is_empty());
            let events: Vec<&[u8]> = batch
                .iter()
                .map(|(_, e)| e.as_slice())
                .filter(|e| {
                    !filters || serde_json::from_slice(e).map(|v| !ignored(&self.endpoint, &v)).unwrap_or(false)
                })
                .collect();
            if !events.is_empty() {
                match self.send(&events).await {
                    Ok(()) => {
                        sent.inc_by(events.len() as u64);
                        if failures > 0 {
                            tracing::info!(endpoint = %name, after = failures, "notifications delivered again");
                        }
                        failures = 0;
                    }
                    Err(why) => {
                        failed.inc();
                        failures += 1;
                        if failures == 1 || failures == self.endpoint.threshold {
                            tracing::warn!(endpoint = %name, error = %why, failures, "notification delivery failed; retrying");
                        }
                        if failures >= self.endpoint.threshold.max(1) {
                            self.pause(self.endpoint.backoff).await;
                        }
                        continue;
                    }
                }
            }
            let (n, live) = (name.clone(), self.live.clone());
            match self.blocking(move |q| q.advance(&n, to, &live)).await {
                Ok(()) => at = to,
                Err(e) => {
                    tracing::error!(endpoint = %name, error = %e, "recording a delivery failed");
                    self.pause(self.endpoint.backoff).await;
                }
            }
        }
    }

    /// Waits `d`, or less if the server is stopping.
    async fn pause(&mut self, d: std::time::Duration) {
        tokio::select! {
            _ = actix_web::rt::time::sleep(d) => {}
            _ = self.closing.wait_for(|c| *c) => {}
        }
    }

    /// One envelope, `{"events":[…]}`, built from the stored JSON as it is.
    async fn send(&self, events: &[&[u8]]) -> Result<(), String> {
        let mut body = Vec::with_capacity(events.iter().map(|e| e.len() + 1).sum::<usize>() + 12);
        body.extend_from_slice(b"{\"events\":[");
        for (i, e) in events.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(e);
        }
        body.extend_from_slice(b"]}");
        let mut request = self
            .client
            .post(&self.endpoint.url)
            .insert_header(("Content-Type", super::ENVELOPE))
            .insert_header(("User-Agent", concat!("berth/", env!("CARGO_PKG_VERSION"))));
        for (k, v) in &self.endpoint.headers {
            request = request.insert_header((k.as_str(), v.as_str()));
        }
        let resp = request.send_body(body).await.map_err(|e| e.to_string())?;
        match resp.status().as_u16() {
            200..=399 => Ok(()),
            code => Err(format!("HTTP {code}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignored_by_action_or_media_type() {
        let e = NotifyEndpoint {
            ignore_actions: vec!["pull".into()],
            ignore_media_types: vec!["application/octet-stream".into()],
            ..Default::default()
        };
        let ev = |action: &str, mt: &str| serde_json::json!({"action": action, "target": {"mediaType": mt}});
        assert!(ignored(&e, &ev("pull", "application/vnd.oci.image.manifest.v1+json")));
        assert!(ignored(&e, &ev("push", "application/octet-stream")));
        assert!(!ignored(&e, &ev("push", "application/vnd.oci.image.manifest.v1+json")));
        assert!(!ignored(&e, &ev("delete", "")));
    }
}
