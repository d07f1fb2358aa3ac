//! Content-addressed storage: blobs, manifests, tags and uploads over one
//! `Backend`, in registry:2's layout. Knows no HTTP and no upstream; called by
//! the `registry` façade (and by the mirror, through the same methods).

pub mod backend;
mod batch;
mod blobs;
pub mod error;
pub mod fs;
mod fs_read;
mod ingest;
pub mod layout;
mod links;
mod manifests;
mod uploads;

use std::sync::Arc;

pub use backend::{read_range, Appender, Backend, ByteStream, RandomRead, READ_CHUNK};
pub use batch::gather;
pub use error::{BodyError, StoreError, StoreResult};
pub use ingest::{Ingest, Verified};
pub use uploads::{PurgeReport, UploadStatus};

use std::collections::HashSet;
use std::sync::Mutex;

/// Upload sessions one client address may hold open when nothing else is said.
pub const DEFAULT_MAX_UPLOADS_PER_CLIENT: usize = 1000;

/// The store over one backend. Cheap to share behind an `Arc`.
pub struct Store {
    backend: Arc<dyn Backend>,
    uploads: uploads::Sessions,
    /// Upload directories mirror fetches are writing now (a purge leaves them).
    ingests: Arc<Mutex<HashSet<String>>>,
}

impl Store {
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self::with_upload_limit(backend, DEFAULT_MAX_UPLOADS_PER_CLIENT)
    }

    /// A store whose clients may each hold at most `max_per_client` open uploads.
    pub fn with_upload_limit(backend: Arc<dyn Backend>, max_per_client: usize) -> Self {
        Self { backend, uploads: uploads::Sessions::new(max_per_client), ingests: Default::default() }
    }

    /// A store over a local directory laid out as registry:2's `/var/lib/registry`.
    pub fn filesystem(root: impl Into<std::path::PathBuf>) -> Self {
        Self::new(Arc::new(fs::FsBackend::new(root)))
    }

    /// Clears what a crash left of the backend's temporary files (at startup).
    pub async fn recover(&self) -> StoreResult<usize> {
        self.backend.recover().await
    }

    /// Fails when the storage cannot take a write now (readiness).
    pub async fn check_writable(&self) -> StoreResult<()> {
        self.backend.check_writable().await
    }

    fn ingest_active(&self, dir: &str) -> bool {
        self.ingests.lock().unwrap().contains(dir)
    }
}
