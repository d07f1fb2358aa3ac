//! Content-addressed storage: blobs, manifests, tags and uploads over one
//! `Backend`, in registry:2's layout. Knows no HTTP and no upstream; called by
//! the `registry` façade (and by the mirror, through the same methods).

pub mod backend;
mod batch;
mod blobs;
pub mod bucket_lease;
pub mod conformance;
pub mod error;
pub mod fs;
mod fs_read;
pub mod index;
mod ingest;
pub mod layout;
pub mod leases;
mod links;
mod manifests;
pub mod object;
pub mod shared;
mod spool;
mod upload_files;
mod upload_parts;
mod uploads;

use std::sync::Arc;

pub use backend::{read_range, Appender, Backend, ByteStream, Found, PutIf, RandomRead, Version, Writer, READ_CHUNK};
pub use batch::gather;
pub use error::{BodyError, StoreError, StoreResult};
pub use ingest::{Ingest, Verified};
pub use uploads::{PurgeReport, UploadStatus};

use crate::oci::Digest;
use index::Index;
use leases::Leases;

/// Upload sessions one client address may hold open when nothing else is said.
pub const DEFAULT_MAX_UPLOADS_PER_CLIENT: usize = 1000;

/// The store over one backend. Cheap to share behind an `Arc`.
pub struct Store {
    backend: Arc<dyn Backend>,
    uploads: uploads::Sessions,
    /// How upload sessions keep their bytes on this backend.
    upload_kind: Box<dyn uploads::UploadKind>,
    /// Where mirror fetches keep the local copy their readers tail, on
    /// backends that have none (`spool`).
    spool_dir: std::path::PathBuf,
    /// Bookkeeping: references, sizes, uses (`index`).
    index: Arc<Index>,
    /// Blobs whose data must stay for now (`leases`).
    leases: Arc<Leases>,
    /// The largest blob an upload may grow to, over all its chunks.
    max_blob_size: u64,
    /// This process, as a holder of leases in shared storage.
    instance: String,
    /// When this replica's lifecycle turn began, by the storage's clock
    /// (`shared`): links dated since are new to the turn.
    turn_since: std::sync::Mutex<Option<std::time::SystemTime>>,
}

/// How long a fetch lease in shared storage lasts unless renewed (its holder
/// renews it every third of this while it fetches).
const FETCH_LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// Where the index of a data directory lives.
pub fn index_path(root: &std::path::Path) -> std::path::PathBuf {
    root.join(layout::INDEX)
}

impl Store {
    /// A store over `backend`, with its index, whose clients may each hold at
    /// most `max_per_client` open uploads.
    pub fn new(backend: Arc<dyn Backend>, index: Index, max_per_client: usize) -> Self {
        Self {
            upload_kind: uploads::kind_for(backend.as_ref()),
            backend,
            uploads: uploads::Sessions::new(max_per_client),
            spool_dir: std::env::temp_dir(),
            index: Arc::new(index),
            leases: Default::default(),
            max_blob_size: u64::MAX,
            instance: uuid::Uuid::new_v4().simple().to_string(),
            turn_since: Default::default(),
        }
    }

    /// Uploads that would grow past `bytes` fail with `TooLarge` (and are put back as they were).
    pub fn with_max_blob_size(mut self, bytes: u64) -> Self {
        self.max_blob_size = bytes;
        self
    }

    /// Mirror fetches spool to `dir` (a local directory) on backends that need it.
    pub fn with_spool_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.spool_dir = dir.into();
        self
    }

    /// A store over a local directory laid out as registry:2's `/var/lib/registry`.
    pub fn filesystem(root: impl Into<std::path::PathBuf>) -> StoreResult<Self> {
        let root = root.into();
        let index = Index::open(&index_path(&root))?;
        Ok(Self::new(Arc::new(fs::FsBackend::new(root)), index, DEFAULT_MAX_UPLOADS_PER_CLIENT))
    }

    /// Runs an index operation on the blocking pool.
    pub(crate) async fn indexed<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Index) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let index = self.index.clone();
        tokio::task::spawn_blocking(move || op(&index))
            .await
            .map_err(|e| StoreError::Index(format!("index task failed: {e}")))?
    }

    /// Clears what a crash left of the backend's temporary files (at startup).
    pub async fn recover(&self) -> StoreResult<usize> {
        self.backend.recover().await
    }

    /// This process's instance id (random per start): how leases, use
    /// batches and sibling mirrors tell it from others.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Whether other replicas share this store's storage.
    pub fn shared(&self) -> bool {
        self.backend.shared()
    }

    /// Tries to become the one replica that fetches `d` from upstream.
    pub async fn try_fetch_lease(&self, d: &Digest) -> StoreResult<bucket_lease::Attempt> {
        let name = format!("fetch-{}-{}", d.algorithm().as_str(), d.hex());
        bucket_lease::try_acquire(&self.backend, &name, &self.instance, FETCH_LEASE_TTL).await
    }

    /// Positioned reads of a stored blob (ranged reads of the storage: for
    /// a blob another replica stored while this one waited).
    pub fn blob_read_at(&self, d: &Digest) -> Arc<dyn RandomRead> {
        Arc::new(StoredRead { backend: self.backend.clone(), path: layout::blob_data(d) })
    }

    /// Fails when the storage cannot take a write now (readiness).
    pub async fn check_writable(&self) -> StoreResult<()> {
        self.backend.check_writable().await
    }
}

/// `RandomRead` over a file of the storage, one ranged read per call.
struct StoredRead {
    backend: Arc<dyn Backend>,
    path: String,
}

#[async_trait::async_trait]
impl RandomRead for StoredRead {
    async fn read_at(&self, offset: u64, len: usize) -> std::io::Result<bytes::Bytes> {
        use futures::StreamExt;
        let mut r = self.backend.reader(&self.path, offset, Some(len as u64)).await.map_err(std::io::Error::other)?;
        let mut out = bytes::BytesMut::with_capacity(len);
        while let Some(chunk) = r.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out.freeze())
    }
}
