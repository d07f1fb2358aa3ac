//! Blob data and the per-repository `_layers` links that make a blob readable
//! in a repository.

use crate::oci::{Digest, RepoName};

use super::backend::ByteStream;
use super::error::{StoreError, StoreResult};
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

    /// Where a client may GET the blob's bytes itself: `base_url` and the
    /// blob's path in the tree, or the backend's presigned URL good for `expires`.
    pub async fn blob_url(
        &self,
        d: &Digest,
        expires: std::time::Duration,
        base_url: &str,
    ) -> StoreResult<Option<String>> {
        let path = layout::blob_data(d);
        match base_url {
            "" => self.backend.presigned_get(&path, expires).await,
            base => Ok(Some(format!("{}/{path}", base.trim_end_matches('/')))),
        }
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
        match self.link_blob_held(repo, d, size).await {
            Ok(()) => Ok(true),
            // Deleted by another replica meanwhile: as if it had never been there.
            Err(StoreError::LifecycleRace(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Links `d`, whose data is there and leased by the caller: the index
    /// learns of the reference before the link exists.
    pub(super) async fn link_blob_held(&self, repo: &RepoName, d: &Digest, size: u64) -> StoreResult<()> {
        let (digest, r) = (d.clone(), repo.clone());
        self.indexed(move |index| index.add_ref(&digest, RefKind::Layer, &r, Some(size))).await?;
        let created = self.write_link(&layout::layer_link(repo, d), d).await?;
        if self.confirm_data(std::slice::from_ref(d)).await?.is_empty() {
            return Ok(());
        }
        // Another replica deleted the data as this link was written: a link
        // this call made must not stay to answer for nothing.
        if created {
            self.unlink_blob(repo, d).await?;
        }
        Err(StoreError::LifecycleRace(d.clone()))
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

    /// The sizes of several blobs' data (`None` where absent).
    pub async fn blob_sizes(&self, ds: &[Digest]) -> StoreResult<Vec<Option<u64>>> {
        self.backend.stat_many(ds.iter().map(layout::blob_data).collect()).await
    }

    /// The blobs whose data the store holds (a walk of `blobs/`) that
    /// `wanted` accepts, and how many it holds in all. Filtered as the walk
    /// goes, so a GC holds the garbage it found, not a list of every blob.
    pub async fn list_blob_data(&self, wanted: impl Fn(&Digest) -> bool) -> StoreResult<(Vec<Digest>, usize)> {
        let (mut out, mut total) = (Vec::new(), 0);
        for alg in ["sha256", "sha512"] {
            let root = layout::blobs_root(alg);
            for prefix in self.backend.list(&root).await? {
                for hex in self.backend.list(&format!("{root}/{prefix}")).await? {
                    if let Some(d) = Digest::from_parts(alg, &hex).filter(|d| d.hex().starts_with(&prefix)) {
                        total += 1;
                        if wanted(&d) {
                            out.push(d);
                        }
                    }
                }
            }
        }
        Ok((out, total))
    }

    /// Claims `d` for deleting its data (`None` while an operation leases it).
    pub fn claim_deletion(&self, d: &Digest) -> Option<Deletion> {
        self.leases.try_delete(d)
    }

    /// For each (blob, repositories), when the newest link to the blob in
    /// those repositories (a layer link or a manifest revision) was written.
    pub async fn newest_links(
        &self,
        blobs: &[(Digest, Vec<String>)],
    ) -> StoreResult<Vec<Option<std::time::SystemTime>>> {
        let mut paths = Vec::new();
        let mut owner = Vec::new();
        for (i, (d, repos)) in blobs.iter().enumerate() {
            for repo in repos {
                let repo = RepoName::storage(repo.clone());
                paths.push(layout::layer_link(&repo, d));
                paths.push(layout::revision_link(&repo, d));
                owner.extend([i, i]);
            }
        }
        let mut newest = vec![None; blobs.len()];
        for (i, t) in owner.into_iter().zip(self.backend.modified_many(paths).await?) {
            newest[i] = newest[i].max(t);
        }
        Ok(newest)
    }

    /// Removes the layer links of `ds` from `repo` (those it has); returns
    /// those removed. The links go first, then their references in one
    /// index transaction (a crash in between leaves references over-counted:
    /// data kept, never lost).
    pub async fn unlink_blobs(&self, repo: &RepoName, ds: &[Digest]) -> StoreResult<Vec<Digest>> {
        let links: Vec<String> = ds.iter().map(|d| layout::layer_link(repo, d)).collect();
        let present = self.backend.stat_many(links).await?;
        let gone: Vec<Digest> = ds.iter().zip(present).filter(|(_, p)| p.is_some()).map(|(d, _)| d.clone()).collect();
        // Each link file before its directory (see `remove_link`).
        self.backend.delete_files(gone.iter().map(|d| layout::layer_link(repo, d)).collect()).await?;
        self.backend.delete_many(gone.iter().map(|d| layout::layer_link_dir(repo, d)).collect()).await?;
        let refs: Vec<_> = gone.iter().map(|d| (d.clone(), RefKind::Layer, repo.clone())).collect();
        self.indexed(move |index| index.remove_refs(&refs)).await?;
        Ok(gone)
    }

    /// Deletes the data of the claimed blobs `ds` (and the layer links
    /// pushed repositories keep to them: they could only answer "unknown"
    /// now); returns the bytes freed. Links and bookkeeping go before the
    /// data: a crash in between leaves only unreferenced data, which the next
    /// garbage collection removes, never a reference to missing data or a
    /// size counted for data that is gone. Returns (blobs, bytes) deleted.
    ///
    /// On shared storage, other replicas' links are ordered with the
    /// deletion by tombstones (`shared`): what one linked meanwhile stays.
    pub async fn remove_blobs_data(&self, ds: &[(Digest, Deletion)]) -> StoreResult<(usize, u64)> {
        let claimed: Vec<Digest> = ds.iter().map(|(d, _)| d.clone()).collect();
        if !self.shared() {
            return self.remove_data(claimed).await;
        }
        let result = match self.doom(&claimed).await {
            Ok(unused) => self.remove_data(unused).await,
            Err(e) => Err(e),
        };
        // Kept or deleted, the tombstones go (any left expire on their own).
        self.lift(&claimed).await?;
        result
    }

    async fn remove_data(&self, digests: Vec<Digest>) -> StoreResult<(usize, u64)> {
        let lookup = digests.clone();
        let refs = self.indexed(move |index| index.refs_many(&lookup)).await?;
        let sizes = self.backend.stat_many(digests.iter().map(layout::blob_data).collect()).await?;
        let mut by_repo: std::collections::BTreeMap<String, Vec<Digest>> = Default::default();
        for (d, r) in digests.iter().zip(refs) {
            for repo in r.pushed {
                by_repo.entry(repo).or_default().push(d.clone());
            }
        }
        for (repo, ds) in by_repo {
            self.unlink_blobs(&RepoName::storage(repo), &ds).await?;
        }
        let forget = digests.clone();
        self.indexed(move |index| index.forget_blobs(&forget)).await?;
        let present: Vec<(&Digest, u64)> = digests.iter().zip(sizes).filter_map(|(d, s)| s.map(|s| (d, s))).collect();
        self.backend.delete_many(present.iter().map(|(d, _)| layout::blob_dir(d)).collect()).await?;
        Ok((present.len(), present.iter().map(|(_, s)| s).sum()))
    }

    /// Deletes the data of those of `ds` that no repository links (by the
    /// index) and no operation leases; returns (blobs deleted, bytes freed).
    /// Those a lease protects now are recorded in the index and come back
    /// with `deferred_deletions` (their links are gone already: nothing else
    /// would ever name them again).
    pub async fn delete_unreferenced_blobs(&self, ds: &[Digest]) -> StoreResult<(usize, u64)> {
        let mut claims: Vec<(Digest, Deletion)> = Vec::new();
        let mut leased: Vec<Digest> = Vec::new();
        for d in ds {
            match self.leases.try_delete(d) {
                Some(c) => claims.push((d.clone(), c)),
                None => leased.push(d.clone()),
            }
        }
        let lookup: Vec<Digest> = claims.iter().map(|(d, _)| d.clone()).collect();
        let refs = self.indexed(move |index| index.refs_many(&lookup)).await?;
        let (unreferenced, linked): (Vec<_>, Vec<_>) = claims.into_iter().zip(refs).partition(|(_, r)| r.is_empty());
        // Linked again since: no longer waiting for deletion (deleted data is
        // forgotten by `remove_blobs_data`).
        let linked: Vec<Digest> = linked.into_iter().map(|((d, _), _)| d).collect();
        let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |t| t.as_secs());
        self.indexed(move |index| index.set_deferred(&leased, &linked, at)).await?;
        let unreferenced: Vec<(Digest, Deletion)> = unreferenced.into_iter().map(|(c, _)| c).collect();
        self.remove_blobs_data(&unreferenced).await
    }

    /// Blobs whose deletion a lease deferred, to retry.
    pub async fn deferred_deletions(&self) -> StoreResult<Vec<Digest>> {
        self.indexed(|index| index.deferred()).await
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
