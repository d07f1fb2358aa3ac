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

pub use backend::{Backend, ByteStream, RandomRead, READ_CHUNK};
pub use batch::gather;
pub use error::{StoreError, StoreResult};
pub use ingest::{Ingest, Verified};
pub use uploads::UploadStatus;

/// The store over one backend. Cheap to share behind an `Arc`.
pub struct Store {
    backend: Arc<dyn Backend>,
    uploads: uploads::Sessions,
}

impl Store {
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self { backend, uploads: Default::default() }
    }

    /// A store over a local directory laid out as registry:2's `/var/lib/registry`.
    pub fn filesystem(root: impl Into<std::path::PathBuf>) -> Self {
        Self::new(Arc::new(fs::FsBackend::new(root)))
    }
}
