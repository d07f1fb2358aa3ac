//! What every part of the registry shares: the store, the metadata caches
//! that keep reads of it fast, the per-repository write locks, the metrics,
//! the parsed manifests and the one reachability walk over them, and the
//! record of writes (every write bumps its repository's generation and
//! tells the catalog). Serving (`Registry`), `Lifecycle` and `Browsing`
//! each hold it; none of them owns what another decides.

use std::sync::Arc;

use crate::metrics::Metrics;
use crate::oci::reach::{self, Reach};
use crate::oci::{Digest, DigestSet, Edges, ManifestInfo, RepoName};
use crate::store::Store;

use super::browse::Catalog;
use super::cache::{CachedManifest, Caches, RepoLocks};
use super::{Referrer, RegistryError, RegistryResult};

/// Roots whose references one index read fetches during a GC's marking.
const MARK_BATCH: usize = 1024;

/// A GC's marking of one repository: every manifest and blob it keeps goes
/// into `kept` (the run's, over all repositories), and the manifests walked
/// here are remembered (one reached again is not read again), as compact
/// digest sets rather than a map of parsed manifests.
pub struct Marks<'a> {
    kept: &'a mut DigestSet,
    walked: DigestSet,
}

impl<'a> Marks<'a> {
    pub(super) fn new(kept: &'a mut DigestSet) -> Self {
        Self { kept, walked: DigestSet::default() }
    }

    /// Whether the walk reached manifest `d` in this repository.
    pub(super) fn reached(&self, d: &Digest) -> bool {
        self.walked.contains(d)
    }
}

impl<M> reach::Sink<M> for Marks<'_> {
    fn first(&mut self, d: &Digest) -> bool {
        self.walked.insert(d)
    }

    fn manifest(&mut self, d: Digest, _: Option<M>) {
        self.kept.insert(&d);
    }

    fn blob(&mut self, b: &crate::oci::Descriptor) {
        self.kept.insert(&b.digest);
    }
}

pub struct Core {
    pub(super) store: Arc<Store>,
    pub(super) caches: Caches,
    pub(super) locks: RepoLocks,
    pub(super) metrics: Arc<Metrics>,
    /// The repository names (browsing's), told of every write.
    pub(super) catalog: Arc<Catalog>,
    /// Notifications: every path that pushes, serves, fetches or removes emits here.
    pub(super) events: crate::events::Notifier,
}

impl Core {
    /// Records a write to `repo`: cached reads of it made before stop counting.
    pub(super) fn written(&self, repo: &RepoName) {
        self.caches.generations.bump(repo);
        self.catalog.written(repo);
    }

    /// Bytes and parsed info of a manifest known to be in some repository.
    pub(super) async fn load_manifest(&self, d: &Digest) -> RegistryResult<Arc<CachedManifest>> {
        if let Some(m) = self.caches.manifests.get(d).await {
            return Ok(m);
        }
        let m = self.read_manifest(d).await?;
        self.caches.manifests.insert(d.clone(), m.clone()).await;
        Ok(m)
    }

    /// As `load_manifest`, but what is read is not cached: a walk of every
    /// manifest (a GC) neither fills the serving cache nor evicts what is
    /// hot from it.
    pub(super) async fn peek_manifest(&self, d: &Digest) -> RegistryResult<Arc<CachedManifest>> {
        match self.caches.manifests.get(d).await {
            Some(m) => Ok(m),
            None => self.read_manifest(d).await,
        }
    }

    async fn read_manifest(&self, d: &Digest) -> RegistryResult<Arc<CachedManifest>> {
        let bytes =
            self.store.read_blob_bytes(d).await?.ok_or_else(|| RegistryError::ManifestUnknown(d.to_string()))?;
        let info = ManifestInfo::parse_stored(&bytes)?;
        Ok(Arc::new(CachedManifest::new(d, bytes, info)))
    }

    /// What `roots` keep alive (the one walk, `oci::reach`), read through the
    /// manifest cache. A manifest that cannot be read is kept, not followed.
    pub(super) async fn reach(&self, roots: impl IntoIterator<Item = Digest>) -> Reach<Arc<CachedManifest>> {
        let load = |d: Digest| async move { Ok::<_, std::convert::Infallible>(self.load_manifest(&d).await.ok()) };
        match reach::reach(roots, reach::everything, load).await {
            Ok(r) => r,
            Err(never) => match never {},
        }
    }

    /// The walk for a GC: what `roots` keep alive goes into `marks`. What a
    /// manifest references comes from the index (`oci::Edges`) where it is
    /// known, read for a batch of roots at once; a manifest it does not know
    /// yet is read (past the serving cache, `peek_manifest`) and the index
    /// told, so the next run reads none. When `strict`, a manifest that
    /// cannot be read ends the walk with its error (what a sweep would do
    /// after it would be a guess).
    pub(super) async fn mark(
        &self,
        roots: impl IntoIterator<Item = Digest>,
        marks: &mut Marks<'_>,
        strict: bool,
    ) -> RegistryResult<()> {
        let roots: Vec<Digest> = roots.into_iter().collect();
        for batch in roots.chunks(MARK_BATCH) {
            let lookup = batch.to_vec();
            let known = self.store.indexed(move |index| index.edges_many(&lookup)).await?;
            let known: std::collections::HashMap<Digest, Edges> =
                batch.iter().cloned().zip(known).filter_map(|(d, e)| Some((d, e?))).collect();
            let known = std::sync::Mutex::new(known);
            let learnt = std::sync::Mutex::new(Vec::new());
            let load = |d: Digest| {
                let (known, learnt) = (&known, &learnt);
                async move {
                    // Taken first: the lock is not held across the index read below.
                    let prefetched = known.lock().unwrap().remove(&d);
                    let edges = match prefetched {
                        Some(edges) => Some(edges),
                        None => {
                            let one = vec![d.clone()];
                            self.store.indexed(move |index| index.edges_many(&one)).await?.pop().flatten()
                        }
                    };
                    if let Some(edges) = edges {
                        return Ok(Some(edges.skeleton()));
                    }
                    match self.peek_manifest(&d).await {
                        Ok(m) => {
                            let edges = Edges::of(&m.info);
                            let skeleton = edges.skeleton();
                            learnt.lock().unwrap().push((d, edges));
                            Ok(Some(skeleton))
                        }
                        Err(e) if strict => Err(e),
                        Err(_) => Ok(None),
                    }
                }
            };
            let walked = reach::walk(batch.iter().cloned(), reach::everything, load, marks).await;
            let learnt = learnt.into_inner().unwrap();
            self.store.indexed(move |index| index.record_edges(&learnt)).await?;
            walked?;
        }
        Ok(())
    }

    /// Manifests stored in `repo` whose subject is `subject`, optionally only
    /// those of `artifact_type`, ordered by digest. registry:2's layout has
    /// no referrers index, so the revisions are scanned; parsed manifests
    /// come from the cache.
    pub(super) async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> RegistryResult<Vec<Referrer>> {
        let mut out = Vec::new();
        for d in self.store.list_manifests(repo).await? {
            let m = match self.load_manifest(&d).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(digest = %d, error = %e, "skipping unreadable manifest in referrers scan");
                    continue;
                }
            };
            if m.info.subject.as_ref() != Some(subject) {
                continue;
            }
            if artifact_type.is_some() && m.info.artifact_type.as_deref() != artifact_type {
                continue;
            }
            out.push(Referrer {
                media_type: m.info.media_type.clone(),
                digest: d.to_string(),
                size: m.bytes.len() as u64,
                artifact_type: m.info.artifact_type.clone(),
                annotations: m.info.annotations.clone(),
            });
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }
}
