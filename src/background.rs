//! Every loop the server runs beside its requests, started in one place
//! (`start`) and each holding only a `Weak` of what it drives, so all of them
//! end once the server has stopped and dropped the registry: startup
//! recovery and indexing, the upload purge, expiry and the cap, scheduled
//! GC, the traffic sampler, `mirror.warm`, and the reload of the htpasswd
//! file and the TLS certificate.

use std::sync::{Arc, Weak};

use crate::registry::Registry;
use crate::{htpasswd, tls, warm};

/// `mirror.warm`: the images pulled through this server (at `server`) at
/// startup and every `interval`.
pub struct Warm {
    pub server: String,
    pub images: Vec<warm::ImageRef>,
    pub interval: std::time::Duration,
}

/// Starts every background loop of a server over `registry`.
pub fn start(
    registry: &Arc<Registry>,
    warm: Option<Warm>,
    users: Option<&Arc<htpasswd::Htpasswd>>,
    certs: Option<&Arc<tls::Certificates>>,
) {
    let weak = || Arc::downgrade(registry);
    actix_web::rt::spawn(housekeeping(weak()));
    actix_web::rt::spawn(eviction(weak()));
    actix_web::rt::spawn(scheduled_gc(weak()));
    actix_web::rt::spawn(scheduled_retention(weak()));
    actix_web::rt::spawn(traffic_sampler(weak()));
    if let Some(w) = warm {
        actix_web::rt::spawn(scheduled_warm(weak(), w));
    }
    actix_web::rt::spawn(reload_files(users.map(Arc::downgrade), certs.map(Arc::downgrade)));
}

/// Startup recovery and indexing, then the periodic upload purge, for as
/// long as the registry lives (the server's workers hold it; the task holds
/// only a `Weak`).
async fn housekeeping(registry: Weak<Registry>) {
    if let Some(reg) = registry.upgrade() {
        let lifecycle = reg.lifecycle();
        if let Err(e) = lifecycle.recover().await {
            tracing::error!(error = %e, "startup recovery failed");
        }
        if let Err(e) = lifecycle.index_tree().await {
            tracing::error!(error = %e, "indexing the data directory failed; expiry waits for the next start");
        }
        // The web page's repository names: walked once, then kept current by every write.
        if let Err(e) = reg.browsing().walk_catalog().await {
            tracing::warn!(error = %e, "walking the repository names for the web page failed");
        }
    }
    loop {
        let Some(reg) = registry.upgrade() else { return };
        match reg.lifecycle().purge_uploads().await {
            Ok(r) if r.sessions + r.ingests > 0 => {
                tracing::info!(sessions = r.sessions, ingests = r.ingests, "purged abandoned uploads")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "upload purge failed"),
        }
        let interval = reg.lifecycle().purge_interval();
        drop(reg);
        actix_web::rt::time::sleep(interval).await;
    }
}

/// `[[retention]]`, hourly while the server runs (nothing without rules).
async fn scheduled_retention(registry: Weak<Registry>) {
    loop {
        actix_web::rt::time::sleep(crate::registry::retention::INTERVAL).await;
        let Some(reg) = registry.upgrade() else { return };
        match reg.retention(false).await {
            Ok(r) if !r.removals.is_empty() => {
                tracing::info!(removed = r.removals.len(), held = r.held.len(), "retention pass")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention pass failed"),
        }
    }
}

/// Reads the htpasswd file and the TLS certificate again when they change
/// (checked every 2 s), for as long as the server holds them.
async fn reload_files(users: Option<Weak<htpasswd::Htpasswd>>, certs: Option<Weak<tls::Certificates>>) {
    loop {
        actix_web::rt::time::sleep(std::time::Duration::from_secs(2)).await;
        let (users, certs) = (users.as_ref().map(Weak::upgrade), certs.as_ref().map(Weak::upgrade));
        if matches!(users, None | Some(None)) && matches!(certs, None | Some(None)) {
            return;
        }
        let _ = actix_web::rt::task::spawn_blocking(move || {
            if let Some(Some(h)) = users {
                h.reload_if_changed();
            }
            if let Some(Some(c)) = certs {
                c.reload_if_changed();
            }
        })
        .await;
    }
}

/// Samples the mirror's traffic for the web page's charts, every minute.
async fn traffic_sampler(registry: Weak<Registry>) {
    loop {
        let Some(reg) = registry.upgrade() else { return };
        reg.browsing().sample_traffic();
        drop(reg);
        actix_web::rt::time::sleep(std::time::Duration::from_secs(60)).await;
    }
}

/// Garbage collection every `gc.schedule`, when set.
async fn scheduled_gc(registry: Weak<Registry>) {
    loop {
        let Some((every, opts)) = registry.upgrade().and_then(|r| r.lifecycle().gc_schedule()) else { return };
        actix_web::rt::time::sleep(every).await;
        let Some(reg) = registry.upgrade() else { return };
        match reg.lifecycle().gc(opts, &|_| {}).await {
            Ok(r) => tracing::info!(
                manifests_removed = r.manifests_removed,
                blobs_removed = r.blobs_removed,
                bytes_freed = r.bytes_freed,
                millis = r.millis as u64,
                "scheduled garbage collection"
            ),
            Err(e) => tracing::warn!(error = %e, "scheduled garbage collection failed"),
        }
    }
}

/// `mirror.warm`: the images pulled through this server at startup and every
/// `interval`, for as long as it serves.
async fn scheduled_warm(registry: Weak<Registry>, Warm { server, images, interval }: Warm) {
    let w = warm::Warmer::new(&server, vec![], None, false);
    loop {
        if registry.upgrade().is_none() {
            return;
        }
        let (report, failures) = warm::warm_all(&w, &images).await;
        tracing::info!(images = report.images, blobs = report.blobs, bytes = report.bytes, "mirror.warm pass");
        for f in failures {
            tracing::warn!(error = %f, "mirror.warm: an image could not be warmed");
        }
        actix_web::rt::time::sleep(interval).await;
    }
}

/// Mirror expiry and the cap, every `mirror.eviction_interval`.
async fn eviction(registry: Weak<Registry>) {
    loop {
        let Some(reg) = registry.upgrade() else { return };
        let interval = reg.lifecycle().eviction_interval();
        match reg.lifecycle().evict().await {
            Ok(r) if r.tags + r.manifests + r.blob_links + r.blobs > 0 => tracing::info!(
                tags = r.tags,
                manifests = r.manifests,
                blob_links = r.blob_links,
                blobs = r.blobs,
                bytes_freed = r.bytes_freed,
                mirror_bytes = r.mirror_bytes,
                millis = r.millis as u64,
                "evicted mirrored content"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "eviction pass failed"),
        }
        drop(reg);
        actix_web::rt::time::sleep(interval).await;
    }
}
