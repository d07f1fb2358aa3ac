//! Blob data and the per-repository `_layers` links that make a blob readable
//! in a repository.

use crate::oci::{Digest, RepoName};

use super::backend::ByteStream;
use super::error::StoreResult;
use super::{layout, Store};

impl Store {
    /// Size of the blob's data, if the store holds it (in any repository).
    pub async fn blob_size(&self, d: &Digest) -> StoreResult<Option<u64>> {
        self.backend.stat(&layout::blob_data(d)).await
    }

    /// Size of the blob if `repo` links it and its data is present.
    pub async fn linked_blob_size(&self, repo: &RepoName, d: &Digest) -> StoreResult<Option<u64>> {
        if self.read_link(&layout::layer_link(repo, d)).await?.is_none() {
            return Ok(None);
        }
        self.blob_size(d).await
    }

    /// Streams the blob's bytes from `offset` (`len` bytes, or to the end).
    pub async fn open_blob(&self, d: &Digest, offset: u64, len: Option<u64>) -> StoreResult<ByteStream> {
        self.backend.reader(&layout::blob_data(d), offset, len).await
    }

    /// Makes a stored blob readable in `repo`.
    pub async fn link_blob(&self, repo: &RepoName, d: &Digest) -> StoreResult<()> {
        self.write_link(&layout::layer_link(repo, d), d).await.map(|_| ())
    }

    /// Removes the blob's link from `repo`; the data stays until garbage
    /// collection (other repositories may link it). Returns whether it was linked.
    pub async fn unlink_blob(&self, repo: &RepoName, d: &Digest) -> StoreResult<bool> {
        let path = layout::layer_link(repo, d);
        if self.backend.stat(&path).await?.is_none() {
            return Ok(false);
        }
        self.backend.delete(&layout::layer_link_dir(repo, d)).await?;
        Ok(true)
    }

    /// Stores small content (a manifest) under its digest, if not there yet.
    pub async fn put_blob_bytes(&self, d: &Digest, bytes: bytes::Bytes) -> StoreResult<()> {
        let path = layout::blob_data(d);
        if self.backend.stat(&path).await? == Some(bytes.len() as u64) {
            return Ok(());
        }
        self.backend.put(&path, bytes).await
    }

    /// Whole content of a small blob (a manifest).
    pub async fn read_blob_bytes(&self, d: &Digest) -> StoreResult<Option<bytes::Bytes>> {
        self.backend.get(&layout::blob_data(d)).await
    }
}
