//! `berth import`: reads a bundle (`bundle`) into the mirror's name space, as
//! if each image had been pulled from its upstream: its blobs through the
//! store's verified ingest (each checked against its digest while it is
//! written; nothing unverified becomes visible), its manifests (checked
//! against their digests, children before the index that names them, the
//! tag last) and its referrers into `_mirror/<host>/<repository>`. Each
//! import counts as a use, so expiry measures from it. Blobs the store holds
//! already are linked, not copied: importing again (or resuming an import
//! that stopped) only writes what is missing.
//!
//! The images are then served as mirrored content whose upstream cannot be
//! asked: stale tags are served while the upstream is down (the mirror's
//! offline rule), so a `registry-mirrors` client pulls `alpine` with no
//! upstream at all.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use crate::bundle::{Bundle, Entry, IMAGE, REF_NAME, REPOSITORY};
use crate::oci::{Digest, ManifestInfo, RepoName, Tag};
use crate::store::index::UseKind;

use super::identity::RepoId;
use super::namespace::Class;
use super::{Action, Caller, Registry, RegistryError, RegistryResult};

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImportReport {
    pub images: usize,
    /// cosign signature tags (`sha256-<hex>.sig`), which travel with the images they sign.
    pub signatures: usize,
    pub manifests: usize,
    /// Blobs written from the bundle.
    pub blobs_written: usize,
    /// Blobs the store held already (linked, not copied).
    pub blobs_present: usize,
    pub bytes_written: u64,
    /// Hosts of imported images that this berth has no upstream for (it
    /// cannot serve them until `mirror.upstreams` names them).
    pub unserved_hosts: Vec<String>,
}

/// Progress of an import: bytes of blobs written of the bundle's total.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct ImportProgress {
    pub bytes: u64,
    pub total: u64,
}

fn bad(why: impl std::fmt::Display) -> RegistryError {
    RegistryError::Bundle(why.to_string())
}

/// One repository's part of the bundle: its images (tag or digest) and referrers.
#[derive(Default)]
struct RepoPart {
    tagged: Vec<(Digest, Option<Tag>)>,
    referrers: Vec<Digest>,
}

/// The identity an entry names: `io.berth.image`, or a fully qualified
/// `org.opencontainers.image.ref.name`; `None` for an entry of neither.
fn named(entry: &Entry) -> Option<&str> {
    entry
        .annotations
        .get(IMAGE)
        .or_else(|| entry.annotations.get(REF_NAME).filter(|r| r.contains('/')))
        .map(String::as_str)
}

impl Registry {
    /// Imports the bundle at `path` (see the module comment). `by`: the
    /// network caller that sent it (`berth import --server`), who must be
    /// allowed to push to every repository it fills, by the access policy
    /// (which must be on); `None`: this machine's own `berth import`.
    pub async fn import_bundle(
        &self,
        path: &Path,
        by: Option<&Caller>,
        progress: &(dyn Fn(ImportProgress) + Send + Sync),
    ) -> RegistryResult<ImportReport> {
        if let Some(caller) = by {
            self.may_send_bundle(caller)?;
        }
        let p = path.to_path_buf();
        let bundle = Arc::new(
            tokio::task::spawn_blocking(move || Bundle::open(&p))
                .await
                .map_err(|e| bad(e.to_string()))?
                .map_err(bad)?,
        );
        let mut parts: BTreeMap<String, RepoPart> = BTreeMap::new();
        for entry in &bundle.index.manifests {
            let d = entry.digest().map_err(bad)?;
            if let Some(name) = named(entry) {
                let image = crate::warm::parse_image(name).map_err(bad)?;
                let tag = match image.reference.parse::<Digest>() {
                    Ok(_) => None,
                    Err(_) => Some(image.reference.parse::<Tag>().map_err(|_| bad(format!("{name}: not a tag")))?),
                };
                parts.entry(format!("{}/{}", image.host, image.remote)).or_default().tagged.push((d, tag));
            } else if let Some(repo) = entry.annotations.get(REPOSITORY) {
                parts.entry(repo.clone()).or_default().referrers.push(d);
            } else {
                return Err(bad(format!(
                    "index.json's entry {} names no image (an {IMAGE} annotation or a fully qualified {REF_NAME}): \
                     was this bundle made by berth export?",
                    entry.digest
                )));
            }
        }
        let mut report = ImportReport::default();
        let mut plans = Vec::new();
        for (repository, part) in parts {
            let (host, remote) = repository.split_once('/').ok_or_else(|| bad(format!("{repository}: no host")))?;
            let name: RepoName = remote.parse().map_err(|_| bad(format!("{repository}: not a repository name")))?;
            // One identity, as a request naming it would get (host aliases, `library/`).
            let id = match self.namespace.classify(&name, Some(host))? {
                Class::Explicit { host, remote } => RepoId::Mirrored { host, remote },
                _ => {
                    if !report.unserved_hosts.iter().any(|h| h == host) {
                        report.unserved_hosts.push(host.to_string());
                    }
                    RepoId::Mirrored { host: host.to_string(), remote: name }
                }
            };
            if let Some(caller) = by {
                self.authorize(caller, Action::Push, &id)?;
            }
            let storage = id.storage();
            let plan = self.plan_import(&bundle, &part)?;
            plans.push((storage, part, plan));
        }
        let total: u64 = plans.iter().flat_map(|(_, _, p)| p.blobs.iter().map(|(_, s)| *s)).sum();
        let mut done = 0u64;
        for (storage, part, plan) in plans {
            for (d, size) in &plan.blobs {
                if self.core.store.link_existing(&storage, d).await? {
                    report.blobs_present += 1;
                } else {
                    self.ingest_from_bundle(&bundle, &storage, d, *size).await?;
                    report.blobs_written += 1;
                    report.bytes_written += size;
                }
                self.lifecycle.uses.record(UseKind::Blob, &storage, d);
                done += size;
                progress(ImportProgress { bytes: done, total });
            }
            // Children before what names them; tags last, once all they reach is there.
            let _writing = self.core.locks.lock(&storage).await;
            for (d, bytes) in &plan.manifests {
                let info =
                    ManifestInfo::parse_stored(bytes).map_err(|e| bad(format!("manifest {d}: {}", e.message)))?;
                self.save_manifest(&storage, d, bytes.clone(), info, None).await?;
                self.lifecycle.uses.record(UseKind::Manifest, &storage, d);
                report.manifests += 1;
            }
            for (d, tag) in &part.tagged {
                if let Some(tag) = tag {
                    let bytes = plan.manifests.iter().find(|(m, _)| m == d).map(|(_, b)| b.clone()).expect("planned");
                    let info = ManifestInfo::parse_stored(&bytes).map_err(|e| bad(e.message))?;
                    self.save_manifest(&storage, d, bytes, info, Some(tag)).await?;
                    self.lifecycle.uses.record(UseKind::Tag, &storage, tag.as_str());
                    if crate::trust::cosign::signed_by_tag(tag).is_some() {
                        report.signatures += 1;
                        continue;
                    }
                }
                report.images += 1;
            }
            tracing::info!(repository = %storage, images = part.tagged.len(), referrers = part.referrers.len(), "imported");
        }
        self.lifecycle.flush_uses().await?;
        Ok(report)
    }

    /// Whether `caller` may send a bundle over the network at all (asked
    /// before its bytes are taken; each repository is asked on import).
    pub fn may_send_bundle(&self, caller: &Caller) -> RegistryResult<()> {
        // A user's import is a push (read-only mode refuses it); the machine's own is not.
        self.check_writes()?;
        if !self.access.enabled() {
            return Err(RegistryError::Denied(
                "an import over the network needs authentication on (auth.htpasswd): run berth import on the \
                 server's machine otherwise"
                    .into(),
            ));
        }
        match caller {
            Caller::Anonymous => Err(RegistryError::Unauthorized("import".into())),
            _ => Ok(()),
        }
    }

    /// Writes a bundle sent over the network (`berth import --server`) to a
    /// temp file of the data directory, on disk before it is read: what
    /// `import_bundle` then imports. Removed when the returned path drops.
    pub async fn stage_bundle<E: std::fmt::Display>(
        &self,
        body: impl futures::Stream<Item = Result<Bytes, E>>,
    ) -> RegistryResult<tempfile::TempPath> {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        let dir = self.staging.clone();
        let io = |e: std::io::Error| crate::store::StoreError::Io { path: dir.display().to_string(), source: e };
        let (file, path) = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&dir)?;
                tempfile::Builder::new().prefix("import-").suffix(".tar").tempfile_in(&dir)
            })
            .await
            .map_err(|e| bad(e.to_string()))?
            .map_err(io)?
            .into_parts()
        };
        let mut file = tokio::fs::File::from_std(file);
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| bad(format!("the bundle's upload broke off: {e}")))?;
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.sync_all().await.map_err(io)?;
        Ok(path)
    }

    /// Every manifest a repository's part reaches (read from the bundle and
    /// verified, children first) and every blob they reference.
    fn plan_import(&self, bundle: &Bundle, part: &RepoPart) -> RegistryResult<Plan> {
        let limit = self.max_manifest_size;
        let mut plan = Plan::default();
        let mut seen: HashSet<Digest> = HashSet::new();
        let mut blobs: HashSet<Digest> = HashSet::new();
        let roots = part.tagged.iter().map(|(d, _)| d).chain(&part.referrers);
        for root in roots {
            // Depth-first, a manifest pushed after its children.
            let mut stack = vec![(root.clone(), false)];
            while let Some((d, expanded)) = stack.pop() {
                if expanded {
                    let bytes = bundle.read_verified(&d, limit).map_err(bad)?;
                    plan.manifests.push((d, Bytes::from(bytes)));
                    continue;
                }
                if !seen.insert(d.clone()) {
                    continue;
                }
                let bytes = bundle.read_verified(&d, limit).map_err(bad)?;
                let info =
                    ManifestInfo::parse_stored(&bytes).map_err(|e| bad(format!("manifest {d}: {}", e.message)))?;
                stack.push((d.clone(), true));
                for child in info.children() {
                    stack.push((child.digest.clone(), false));
                }
                for b in info.blobs() {
                    if blobs.insert(b.digest.clone()) {
                        plan.blobs.push((b.digest.clone(), b.size));
                    }
                }
            }
        }
        Ok(plan)
    }

    /// Writes blob `d` of `size` bytes from the bundle into `storage` through
    /// the verified ingest. A blob the bundle leaves out (an incremental one)
    /// must be in the store already: `link_existing` found it otherwise.
    async fn ingest_from_bundle(
        &self,
        bundle: &Arc<Bundle>,
        storage: &RepoName,
        d: &Digest,
        size: u64,
    ) -> RegistryResult<()> {
        if bundle.blob_size(d).is_none() {
            return Err(bad(format!(
                "blob {d} is neither in this bundle nor in the store: import the bundle this one was made --since first"
            )));
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, String>>(4);
        let (b, digest) = (bundle.clone(), d.clone());
        // The bundle is read by a blocking thread, chunk by chunk, never whole.
        let reader = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let (mut r, _) = match b.open_blob(&digest) {
                Ok(x) => x,
                Err(e) => return tx.blocking_send(Err(e)).map_err(|_| ()),
            };
            let mut buf = vec![0u8; 1 << 20];
            loop {
                match r.read(&mut buf) {
                    Ok(0) => return Ok(()),
                    Ok(n) => tx.blocking_send(Ok(Bytes::copy_from_slice(&buf[..n]))).map_err(|_| ())?,
                    Err(e) => return tx.blocking_send(Err(format!("blob {digest}: {e}"))).map_err(|_| ()),
                }
            }
        });
        let (mut ingest, _reader) = self.core.store.begin_ingest(storage, d).await?;
        let mut failed = None;
        while let Some(chunk) = rx.recv().await {
            match chunk {
                Ok(bytes) => {
                    if let Err(e) = ingest.write(bytes).await {
                        failed = Some(RegistryError::from(e));
                        break;
                    }
                }
                Err(e) => {
                    failed = Some(bad(e));
                    break;
                }
            }
        }
        drop(rx);
        let _ = reader.await;
        if let Some(e) = failed {
            self.core.store.abort_ingest(ingest).await;
            return Err(e);
        }
        match ingest.verify(d, Some(size)) {
            Ok(verified) => Ok(self.core.store.commit_ingest(verified).await?),
            Err((ingest, e)) => {
                self.core.store.abort_ingest(ingest).await;
                Err(bad(format!("the bundle's blob {d} is corrupt: {e}")))
            }
        }
    }
}

/// What one repository's import writes.
#[derive(Default)]
struct Plan {
    /// Manifests, each after every manifest it names.
    manifests: Vec<(Digest, Bytes)>,
    /// Blobs with their sizes, each once.
    blobs: Vec<(Digest, u64)>,
}
