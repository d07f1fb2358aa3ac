//! Object-storage backend (S3, GCS, Azure, or in memory) on the
//! `object_store` crate. Keys are the registry:2 layout under a prefix (what
//! Distribution's S3 driver writes under its `rootdirectory`), so both can
//! share a bucket. Nothing is buffered whole: reads stream ranges, and a
//! writer sends a large blob as a multipart upload that becomes visible only
//! when completed. There are no directories: a "directory" is a key prefix,
//! listed with a delimiter and deleted key by key.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use tokio::io::AsyncWriteExt;

use super::backend::{Backend, ByteStream, Found, PutIf, Version, Writer};
use super::error::{StoreError, StoreResult};

/// Part size of a multipart upload: S3 allows 10,000 parts, so blobs up to
/// about 100 GiB; a writer holds at most `PART_SIZE × (1 + PARTS_IN_FLIGHT)`.
const PART_SIZE: usize = 10 * 1024 * 1024;
/// Parts of one writer uploading at once.
const PARTS_IN_FLIGHT: usize = 2;

pub struct ObjectBackend {
    store: Arc<dyn ObjectStore>,
    /// The same store's URL signer (S3, GCS and Azure have one).
    signer: Option<Arc<dyn object_store::signer::Signer>>,
    /// Key prefix of the tree, without slashes at either end ("" for none).
    prefix: String,
}

impl ObjectBackend {
    /// A backend keeping the registry tree under `prefix` of `store`.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str) -> Self {
        Self { store, signer: None, prefix: prefix.trim_matches('/').to_string() }
    }

    /// As `new`, with the store's URL signer (for `presigned_get`).
    pub fn with_signer(mut self, signer: Arc<dyn object_store::signer::Signer>) -> Self {
        self.signer = Some(signer);
        self
    }

    /// The key of a layout path.
    fn key(&self, path: &str) -> StoreResult<Path> {
        let full = if self.prefix.is_empty() { path.to_string() } else { format!("{}/{path}", self.prefix) };
        Path::parse(full.trim_end_matches('/'))
            .map_err(|e| StoreError::io(path)(std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())))
    }

    /// Every key under `path` taken as a directory.
    async fn keys_under(&self, path: &str) -> StoreResult<Vec<Path>> {
        let dir = self.key(path)?;
        self.store.list(Some(&dir)).map_ok(|m| m.location).try_collect().await.map_err(StoreError::remote(path))
    }

    async fn delete_keys(&self, path: &str, keys: Vec<Path>) -> StoreResult<()> {
        let stream = futures::stream::iter(keys.into_iter().map(Ok)).boxed();
        let mut deleted = self.store.delete_stream(stream);
        while let Some(r) = deleted.next().await {
            match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(StoreError::remote(path)(e)),
            }
        }
        Ok(())
    }
}

/// The backend `storage.s3` configures. Settings left empty come from the
/// environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, …).
pub fn s3(cfg: &crate::config::S3Config) -> Result<ObjectBackend, String> {
    use object_store::aws::AmazonS3Builder;
    crate::tls::install_crypto_provider();
    let mut b =
        AmazonS3Builder::from_env().with_bucket_name(&cfg.bucket).with_virtual_hosted_style_request(!cfg.path_style);
    if !cfg.region.is_empty() {
        b = b.with_region(&cfg.region);
    }
    if !cfg.endpoint.is_empty() {
        b = b.with_endpoint(&cfg.endpoint).with_allow_http(cfg.endpoint.starts_with("http://"));
    }
    if !cfg.access_key.is_empty() {
        b = b.with_access_key_id(&cfg.access_key);
    }
    if let Some(file) = &cfg.secret_key_file {
        let secret =
            std::fs::read_to_string(file).map_err(|e| format!("storage.s3.secret_key_file {}: {e}", file.display()))?;
        b = b.with_secret_access_key(secret.trim());
    } else if !cfg.secret_key.is_empty() {
        b = b.with_secret_access_key(&cfg.secret_key);
    }
    let store = b.build().map_err(|e| {
        // The HTTP client verifies TLS against the system's CA certificates
        // and cannot be built without any (even for an http:// endpoint).
        let hint = match e.to_string().contains("builder error") {
            true => " (no CA certificates found? install the ca-certificates package, or set SSL_CERT_FILE)",
            false => "",
        };
        format!("storage.s3: {e}{hint}")
    })?;
    let store = Arc::new(store);
    Ok(ObjectBackend::new(store.clone(), &cfg.prefix).with_signer(store))
}

/// The backend `storage.azure` configures (shared-key auth; without a key,
/// the environment's Azure credentials).
pub fn azure(cfg: &crate::config::AzureConfig) -> Result<ObjectBackend, String> {
    use object_store::azure::MicrosoftAzureBuilder;
    crate::tls::install_crypto_provider();
    let mut b = MicrosoftAzureBuilder::from_env().with_account(&cfg.account_name).with_container_name(&cfg.container);
    let key = match &cfg.account_key_file {
        Some(file) => std::fs::read_to_string(file)
            .map_err(|e| format!("storage.azure.account_key_file {}: {e}", file.display()))?
            .trim()
            .to_string(),
        None => cfg.account_key.clone(),
    };
    if !key.is_empty() {
        b = b.with_access_key(key);
    }
    let endpoint = match cfg.endpoint.as_str() {
        "" => format!("https://{}.blob.{}", cfg.account_name, cfg.realm),
        e => e.trim_end_matches('/').to_string(),
    };
    b = b.with_allow_http(endpoint.starts_with("http://")).with_endpoint(endpoint);
    let store = Arc::new(b.build().map_err(|e| format!("storage.azure: {e}"))?);
    Ok(ObjectBackend::new(store.clone(), &cfg.prefix).with_signer(store))
}

/// The backend `storage.gcs` configures.
pub fn gcs(cfg: &crate::config::GcsConfig) -> Result<ObjectBackend, String> {
    use object_store::gcp::GoogleCloudStorageBuilder;
    crate::tls::install_crypto_provider();
    let mut b = GoogleCloudStorageBuilder::from_env().with_bucket_name(&cfg.bucket);
    if let Some(keyfile) = &cfg.keyfile {
        b = b.with_service_account_path(keyfile.to_string_lossy());
    }
    let store = Arc::new(b.build().map_err(|e| format!("storage.gcs: {e}"))?);
    Ok(ObjectBackend::new(store.clone(), &cfg.prefix).with_signer(store))
}

fn not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

/// An object's version for a conditional replace: its ETag (and version id,
/// on versioned buckets).
fn version_of(meta: &object_store::ObjectMeta) -> Version {
    Version(format!("{}\n{}", meta.e_tag.as_deref().unwrap_or(""), meta.version.as_deref().unwrap_or("")))
}

fn update_version(v: &Version) -> UpdateVersion {
    let (e_tag, version) = v.0.split_once('\n').unwrap_or((&v.0, ""));
    UpdateVersion {
        e_tag: (!e_tag.is_empty()).then(|| e_tag.to_string()),
        version: (!version.is_empty()).then(|| version.to_string()),
    }
}

#[async_trait::async_trait]
impl Backend for ObjectBackend {
    async fn presigned_get(&self, path: &str, expires: std::time::Duration) -> StoreResult<Option<String>> {
        let Some(signer) = &self.signer else { return Ok(None) };
        let url = signer
            .signed_url(object_store::signer::Method::GET, &self.key(path)?, expires)
            .await
            .map_err(StoreError::remote(path))?;
        Ok(Some(url.to_string()))
    }

    async fn get(&self, path: &str) -> StoreResult<Option<Bytes>> {
        Ok(self.get_versioned(path).await?.map(|(b, _)| b))
    }

    async fn get_versioned(&self, path: &str) -> StoreResult<Option<(Bytes, Version)>> {
        let got = match self.store.get(&self.key(path)?).await {
            Ok(got) => got,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(StoreError::remote(path)(e)),
        };
        let version = version_of(&got.meta);
        let bytes = got.bytes().await.map_err(StoreError::remote(path))?;
        Ok(Some((bytes, version)))
    }

    async fn put(&self, path: &str, content: Bytes) -> StoreResult<()> {
        self.store.put(&self.key(path)?, PutPayload::from(content)).await.map_err(StoreError::remote(path))?;
        Ok(())
    }

    async fn put_if(&self, path: &str, content: Bytes, condition: PutIf) -> StoreResult<bool> {
        let mode = match &condition {
            PutIf::Absent => PutMode::Create,
            PutIf::Unchanged(v) => PutMode::Update(update_version(v)),
        };
        let opts = PutOptions { mode, ..Default::default() };
        match self.store.put_opts(&self.key(path)?, PutPayload::from(content), opts).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => Ok(false),
            // An update of an object deleted meanwhile: its version is not current either.
            Err(e) if not_found(&e) && matches!(condition, PutIf::Unchanged(_)) => Ok(false),
            Err(e) => Err(StoreError::remote(path)(e)),
        }
    }

    async fn stat(&self, path: &str) -> StoreResult<Option<u64>> {
        match self.store.head(&self.key(path)?).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(StoreError::remote(path)(e)),
        }
    }

    async fn modified(&self, path: &str) -> StoreResult<Option<SystemTime>> {
        match self.store.head(&self.key(path)?).await {
            Ok(meta) => Ok(Some(meta.last_modified.into())),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(StoreError::remote(path)(e)),
        }
    }

    async fn stat_many(&self, paths: Vec<String>) -> StoreResult<Vec<Option<u64>>> {
        // Requests in flight at once: a HEAD is a round trip, not a syscall.
        futures::stream::iter(paths).map(|p| async move { self.stat(&p).await }).buffered(16).try_collect().await
    }

    async fn modified_many(&self, paths: Vec<String>) -> StoreResult<Vec<Option<SystemTime>>> {
        futures::stream::iter(paths).map(|p| async move { self.modified(&p).await }).buffered(16).try_collect().await
    }

    async fn list(&self, dir: &str) -> StoreResult<Vec<String>> {
        let listed = self.store.list_with_delimiter(Some(&self.key(dir)?)).await.map_err(StoreError::remote(dir))?;
        let names = listed.common_prefixes.iter().chain(listed.objects.iter().map(|m| &m.location));
        Ok(names.filter_map(|p| p.filename().map(str::to_string)).collect())
    }

    async fn walk(&self, dir: &str) -> StoreResult<Vec<Found>> {
        let key = self.key(dir)?;
        let skip = if self.prefix.is_empty() { 0 } else { self.prefix.len() + 1 };
        self.store
            .list(Some(&key))
            .map_ok(|m| Found {
                path: m.location.as_ref().get(skip..).unwrap_or_default().to_string(),
                size: m.size,
                modified: m.last_modified.into(),
            })
            .try_collect()
            .await
            .map_err(StoreError::remote(dir))
    }

    async fn has_children(&self, dir: &str) -> StoreResult<bool> {
        let key = self.key(dir)?;
        match self.store.list(Some(&key)).next().await {
            None => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(e)) => Err(StoreError::remote(dir)(e)),
        }
    }

    async fn delete(&self, path: &str) -> StoreResult<()> {
        let mut keys = self.keys_under(path).await?;
        keys.push(self.key(path)?);
        self.delete_keys(path, keys).await
    }

    async fn delete_many(&self, paths: Vec<String>) -> StoreResult<()> {
        let mut keys = Vec::new();
        for p in &paths {
            keys.extend(self.keys_under(p).await?);
            keys.push(self.key(p)?);
        }
        self.delete_keys("delete", keys).await
    }

    async fn delete_files(&self, paths: Vec<String>) -> StoreResult<()> {
        let keys = paths.iter().map(|p| self.key(p)).collect::<StoreResult<Vec<_>>>()?;
        self.delete_keys("delete", keys).await
    }

    async fn reader(&self, path: &str, offset: u64, len: Option<u64>) -> StoreResult<ByteStream> {
        let range = match len {
            Some(0) => return Ok(futures::stream::empty().boxed()),
            Some(n) => Some(GetRange::Bounded(offset..offset.saturating_add(n))),
            None if offset == 0 => None,
            None => Some(GetRange::Offset(offset)),
        };
        let opts = GetOptions { range, ..Default::default() };
        let got = self.store.get_opts(&self.key(path)?, opts).await.map_err(StoreError::remote(path))?;
        let path = path.to_string();
        Ok(got.into_stream().map_err(move |e| std::io::Error::other(format!("object storage on {path}: {e}"))).boxed())
    }

    async fn writer(&self, to: &str) -> StoreResult<Box<dyn Writer>> {
        let key = self.key(to)?;
        let out =
            BufWriter::with_capacity(self.store.clone(), key.clone(), PART_SIZE).with_max_concurrency(PARTS_IN_FLIGHT);
        Ok(Box::new(ObjectWriter { out, path: to.to_string(), store: self.store.clone(), key, written: 0 }))
    }

    fn appends(&self) -> bool {
        false
    }

    fn shared(&self) -> bool {
        true
    }

    async fn move_into(&self, from: &str, to: &str) -> StoreResult<()> {
        let (src, dst) = (self.key(from)?, self.key(to)?);
        // Copied within the store, never through berth; an existing `to` is the same content.
        self.store.copy(&src, &dst).await.map_err(StoreError::remote(to))?;
        self.delete(from).await
    }

    async fn rename(&self, from: &str, to: &str) -> StoreResult<bool> {
        let (keys, taken) =
            (self.keys_under(from).await?, self.has_children(to).await? || self.stat(to).await?.is_some());
        if keys.is_empty() || taken {
            return Ok(false);
        }
        let (src, dst) = (self.key(from)?, self.key(to)?);
        for key in &keys {
            let rest = key.prefix_match(&src).expect("listed under the prefix");
            let target = rest.fold(dst.clone(), |p, part| p.join(part));
            self.store.copy(key, &target).await.map_err(StoreError::remote(to))?;
        }
        self.delete_keys(from, keys).await?;
        Ok(true)
    }

    async fn check_writable(&self) -> StoreResult<()> {
        let probe = super::layout::probe(&uuid::Uuid::new_v4().to_string());
        let content = Bytes::from(vec![0u8; 4096]);
        self.put(&probe, content.clone()).await?;
        let back = self.get(&probe).await;
        self.delete(&probe).await?;
        match back? {
            Some(b) if b == content => Ok(()),
            other => Err(StoreError::io(probe)(std::io::Error::other(format!(
                "a 4096-byte probe read back as {:?} bytes",
                other.map(|b| b.len())
            )))),
        }
    }

    async fn recover(&self) -> StoreResult<usize> {
        // A writer cut off by a crash leaves an incomplete multipart upload,
        // which no reader sees; the bucket's lifecycle rule for incomplete
        // uploads removes its parts (README, "Object storage").
        Ok(0)
    }
}

/// A blob on its way to the bucket: buffered up to one part, then a
/// multipart upload; completed at commit, aborted at cancel.
struct ObjectWriter {
    out: BufWriter,
    path: String,
    /// For the lost-race check at commit.
    store: Arc<dyn ObjectStore>,
    key: Path,
    written: u64,
}

/// Whether `path` is a blob's data: its key is its content's digest, so two
/// writers of it write the same bytes.
fn content_addressed(path: &str) -> bool {
    path.ends_with("/data") && path.split('/').any(|p| p == "blobs")
}

#[async_trait::async_trait]
impl Writer for ObjectWriter {
    async fn write(&mut self, bytes: Bytes) -> StoreResult<()> {
        self.written += bytes.len() as u64;
        self.out.put(bytes).await.map_err(StoreError::remote(&self.path))
    }

    async fn commit(mut self: Box<Self>) -> StoreResult<()> {
        let path = self.path.clone();
        let Err(e) = self.out.shutdown().await else { return Ok(()) };
        // Azure keeps one list of uncommitted blocks per blob: of two writers
        // of one blob, the second to commit finds its blocks gone. For a
        // blob's data the winner wrote the same bytes (its key is their
        // digest): the loser's write is done once the blob is there whole.
        if content_addressed(&path) {
            if let Ok(meta) = self.store.head(&self.key).await {
                if meta.size == self.written {
                    tracing::debug!(path, error = %e, "a concurrent writer committed the same blob first");
                    return Ok(());
                }
            }
        }
        Err(StoreError::io(path)(e))
    }

    async fn cancel(mut self: Box<Self>) {
        if let Err(e) = self.out.abort().await {
            tracing::warn!(path = self.path, error = %e, "could not abort a multipart upload");
        }
    }
}
