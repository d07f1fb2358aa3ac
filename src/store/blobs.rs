//! Blob data and the per-repository `_layers` links that make a blob readable
//! in a repository.

use crate::oci::{Digest, RepoName};

use super::backend::ByteStream;
use super::error::StoreResult;
use super::index::RefKind;
use super::leases::{Deletion, Lease};
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

    /// Every blob `repo` links.
    pub async fn list_layer_links(&self, repo: &RepoName) -> StoreResult<Vec<Digest>> {
        let mut out = Vec::new();
        for alg in ["sha256", "sha512"] {
            for hex in self.backend.list(&format!("{}/{alg}", layout::layers_root(repo))).await? {
                if let Some(d) = Digest::from_parts(alg, &hex) {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    /// Streams the blob's bytes from `offset` (`len` bytes, or to the end).
    pub async fn open_blob(&self, d: &Digest, offset: u64, len: Option<u64>) -> StoreResult<ByteStream> {
        self.backend.reader(&layout::blob_data(d), offset, len).await
    }

    /// Takes a lease on `d`: its data is not deleted while the lease is held
    /// (see `leases`).
    pub async fn lease(&self, d: &Digest) -> Lease {
        self.leases.lease(d).await
    }

    /// Makes a stored blob readable in `repo`, if its data is there; returns
    /// whether it was (a mount or an adoption falls back to a transfer if not).
    pub async fn link_existing(&self, repo: &RepoName, d: &Digest) -> StoreResult<bool> {
        let _lease = self.lease(d).await;
        let Some(size) = self.blob_size(d).await? else { return Ok(false) };
        self.link_blob_held(repo, d, size).await?;
        Ok(true)
    }

    /// Links `d`, whose data is there and leased by the caller: the index
    /// learns of the reference before the link exists.
    pub(super) async fn link_blob_held(&self, repo: &RepoName, d: &Digest, size: u64) -> StoreResult<()> {
        let (digest, r) = (d.clone(), repo.clone());
        self.indexed(move |index| index.add_ref(&digest, RefKind::Layer, &r, Some(size))).await?;
        self.write_link(&layout::layer_link(repo, d), d).await.map(|_| ())
    }

    /// Removes the blob's link from `repo`; the data stays until garbage
    /// collection (other repositories may link it). Returns whether it was linked.
    pub async fn unlink_blob(&self, repo: &RepoName, d: &Digest) -> StoreResult<bool> {
        let path = layout::layer_link(repo, d);
        if self.backend.stat(&path).await?.is_none() {
            return Ok(false);
        }
        self.remove_link(&path, &layout::layer_link_dir(repo, d)).await?;
        let (digest, r) = (d.clone(), repo.clone());
        self.indexed(move |index| index.remove_ref(&digest, RefKind::Layer, &r)).await?;
        Ok(true)
    }

    /// Every blob whose data the store holds (a walk of `blobs/`).
    pub async fn list_blob_data(&self) -> StoreResult<Vec<Digest>> {
        let mut out = Vec::new();
        for alg in ["sha256", "sha512"] {
            let root = layout::blobs_root(alg);
            for prefix in self.backend.list(&root).await? {
                for hex in self.backend.list(&format!("{root}/{prefix}")).await? {
                    if let Some(d) = Digest::from_parts(alg, &hex).filter(|d| d.hex().starts_with(&prefix)) {
                        out.push(d);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Claims `d` for deleting its data (`None` while an operation leases it).
    pub fn claim_deletion(&self, d: &Digest) -> Option<Deletion> {
        self.leases.try_delete(d)
    }

    /// When the newest link to `d` (a layer link or a manifest revision, in
    /// any repository the index names) was written.
    pub async fn newest_link(&self, d: &Digest) -> StoreResult<Option<std::time::SystemTime>> {
        let digest = d.clone();
        let refs = self.indexed(move |index| index.refs(&digest)).await?;
        let mut newest = None;
        for repo in refs.pushed.iter().chain(&refs.mirrored) {
            let repo = RepoName::storage(repo.clone());
            for path in [layout::layer_link(&repo, d), layout::revision_link(&repo, d)] {
                if let Some(t) = self.backend.modified(&path).await? {
                    newest = newest.max(Some(t));
                }
            }
        }
        Ok(newest)
    }

    /// Deletes the data of `d`, claimed by the caller, with the layer links
    /// pushed repositories keep to it (they could only answer "unknown"
    /// now); returns the bytes freed. Links and bookkeeping go before the
    /// data: a crash in between leaves only unreferenced data, which the next
    /// run collects, never a reference to missing data or a size counted for
    /// data that is gone.
    pub async fn remove_blob_data(&self, d: &Digest, _claim: &Deletion) -> StoreResult<u64> {
        let Some(size) = self.blob_size(d).await? else { return Ok(0) };
        let digest = d.clone();
        let refs = self.indexed(move |index| index.refs(&digest)).await?;
        for repo in refs.pushed {
            self.unlink_blob(&RepoName::storage(repo), d).await?;
        }
        let digest = d.clone();
        self.indexed(move |index| index.forget_blob(&digest)).await?;
        self.backend.delete(&layout::blob_dir(d)).await?;
        Ok(size)
    }

    /// Deletes a blob's data if no repository links it (by the index) and no
    /// operation holds a lease on it; returns the bytes freed (0 if kept).
    pub async fn delete_unreferenced_blob(&self, d: &Digest) -> StoreResult<u64> {
        let Some(_deleting) = self.leases.try_delete(d) else { return Ok(0) };
        let digest = d.clone();
        if !self.indexed(move |index| index.refs(&digest)).await?.is_empty() {
            return Ok(0);
        }
        let size = self.blob_size(d).await?;
        // The size is forgotten before the data goes (see `remove_blob_data`).
        let digest = d.clone();
        self.indexed(move |index| index.forget_blob(&digest)).await?;
        let Some(size) = size else { return Ok(0) };
        self.backend.delete(&layout::blob_dir(d)).await?;
        Ok(size)
    }

    /// Stores small content (a manifest) under its digest, if not there yet.
    /// The caller holds a lease on `d`.
    pub(super) async fn put_blob_bytes(&self, d: &Digest, bytes: bytes::Bytes) -> StoreResult<()> {
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
