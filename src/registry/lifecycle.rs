//! The registry's lifecycle part: what keeps the store in shape while it
//! serves. Expiry and the cap (`expiry`), garbage collection (`gc`), the
//! uses that expiry reads (`uses`), the upload purge, startup recovery and
//! indexing, and what the last runs freed. Serving tells it of uses and of
//! pushes during a GC; browsing reads its pins and its last runs.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{Config, GcConfig};
use crate::mirror::Mirror;
use crate::oci::Digest;

use super::browse::LastRuns;
use super::core::Core;
use super::expiry::Pins;
use super::{gc, uses, RegistryResult};

pub struct Lifecycle {
    pub(super) core: Arc<Core>,
    pub(super) mirror: Option<Arc<Mirror>>,
    /// Uses (pulls) not yet written to the index.
    pub(super) uses: uses::Uses,
    pub(super) pins: Pins,
    /// `mirror.ttl`, `mirror.max_size` (bytes), `mirror.eviction_interval`.
    pub(super) ttl: Duration,
    pub(super) max_size: Option<u64>,
    eviction_interval: Duration,
    upload_max_age: Duration,
    /// While a garbage collection runs: what manifests pushed meanwhile reference.
    pub(super) gc_live: Mutex<Option<HashSet<Digest>>>,
    /// One garbage collection at a time.
    pub(super) gc_running: Arc<tokio::sync::Mutex<()>>,
    gc: GcConfig,
    /// Store bytes (mirrored, pushed) and when they were counted: a scrape
    /// reads the index at most once a minute.
    store_bytes: Mutex<Option<(Instant, (u64, u64))>>,
    /// The last eviction pass and garbage collection, and what they freed.
    pub(super) last_runs: Mutex<LastRuns>,
}

impl Lifecycle {
    pub(super) fn new(cfg: &Config, core: Arc<Core>, mirror: Option<Arc<Mirror>>, pins: Pins) -> Self {
        Self {
            core,
            mirror,
            uses: Default::default(),
            pins,
            ttl: cfg.mirror.ttl,
            max_size: cfg.mirror.max_size.map(|b| b.as_u64()),
            eviction_interval: cfg.mirror.eviction_interval,
            upload_max_age: cfg.uploads.max_age,
            gc_live: Default::default(),
            gc_running: Default::default(),
            gc: cfg.gc.clone(),
            store_bytes: Default::default(),
            last_runs: Default::default(),
        }
    }

    /// Bytes of blob data (mirrored only, the rest) by the index, counted at
    /// most once a minute (a scrape must not read a large index each time).
    pub async fn store_bytes(&self) -> RegistryResult<(u64, u64)> {
        const FRESH: Duration = Duration::from_secs(60);
        if let Some((at, bytes)) = *self.store_bytes.lock().unwrap() {
            if at.elapsed() < FRESH {
                return Ok(bytes);
            }
        }
        let bytes = self.store_bytes_now().await?;
        *self.store_bytes.lock().unwrap() = Some((Instant::now(), bytes));
        Ok(bytes)
    }

    /// What the last eviction pass and garbage collection did.
    pub fn last_runs(&self) -> LastRuns {
        self.last_runs.lock().unwrap().clone()
    }

    /// Work at startup: temp files a crash left behind, and mirrored content
    /// where berth kept it before `_mirror/`.
    pub async fn recover(&self) -> RegistryResult<()> {
        let removed = self.core.store.recover().await?;
        if removed > 0 {
            tracing::info!(removed, "removed temporary files left by an earlier crash");
        }
        if let Some(mirror) = &self.mirror {
            for host in mirror.hosts() {
                if self.core.store.migrate_legacy_mirror(host).await? {
                    tracing::info!(host, "moved mirrored content under _mirror/");
                }
            }
        }
        Ok(())
    }

    /// Purges upload sessions idle longer than `uploads.max_age` and mirror
    /// ingests that nothing writes (both also after a crash).
    pub async fn purge_uploads(&self) -> RegistryResult<crate::store::PurgeReport> {
        Ok(self.core.store.purge_uploads(self.upload_max_age).await?)
    }

    /// How often `purge_uploads` should run.
    pub fn purge_interval(&self) -> Duration {
        (self.upload_max_age / 24).clamp(Duration::from_millis(500), Duration::from_secs(3600))
    }

    /// `gc.grace`: what a run keeps as too recent to judge.
    pub fn gc_grace(&self) -> Duration {
        self.gc.grace
    }

    /// The scheduled garbage collection (`gc.schedule`), if any: its interval and options.
    pub fn gc_schedule(&self) -> Option<(Duration, gc::GcOptions)> {
        let opts = gc::GcOptions { dry_run: false, delete_untagged: self.gc.delete_untagged, grace: self.gc.grace };
        self.gc.schedule.map(|every| (every, opts))
    }

    /// How often expiry and the cap are enforced.
    pub fn eviction_interval(&self) -> Duration {
        self.eviction_interval
    }

    /// Builds the index if the data directory has no complete one yet, and
    /// nothing more: what an offline `berth gc` needs. Entries a crash left
    /// for links that are gone only keep data (a GC errs toward keeping), so
    /// the reconcile `index_tree` adds, a read of every reference and a stat
    /// of every link, is the server's startup work, not the GC's.
    pub async fn ensure_indexed(&self) -> RegistryResult<()> {
        let store = &self.core.store;
        if store.shared() || store.indexed(|index| index.is_indexed()).await? {
            return Ok(());
        }
        let started = Instant::now();
        let found = store.index_tree().await?;
        tracing::info!(references = found, took = ?started.elapsed(), "indexed the data directory");
        Ok(())
    }

    /// Indexes a data directory that has no complete index yet (registry:2's,
    /// or an older berth's), while the server serves.
    pub async fn index_tree(&self) -> RegistryResult<()> {
        let store = &self.core.store;
        // Over shared storage other replicas write too: each lifecycle turn
        // rebuilds the index (`store::shared`), and `ensure_indexed` leaves it.
        if !store.shared() && store.indexed(|index| index.is_indexed()).await? {
            let started = Instant::now();
            // What a crash left the index saying about links and data that are gone.
            let dropped = store.reconcile_index().await?;
            if dropped > 0 {
                tracing::info!(dropped, took = ?started.elapsed(), "index entries of links or data that are gone dropped");
            }
            return Ok(());
        }
        self.ensure_indexed().await
    }
}
