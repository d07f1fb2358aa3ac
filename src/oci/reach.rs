//! The one reachability walk: what a set of root manifests keeps alive,
//! through indexes to any depth. GC marks with it, eviction and pins keep
//! with it, the web page sizes tags with it and warm pulls with it; only how
//! a manifest is loaded (the store, a cache, an HTTP server) differs.

use std::collections::HashMap;
use std::future::Future;

use super::manifest::{Descriptor, ManifestInfo};
use super::Digest;

/// A loaded manifest the walk can read.
pub trait Parsed {
    fn manifest(&self) -> &ManifestInfo;
}

impl Parsed for ManifestInfo {
    fn manifest(&self) -> &ManifestInfo {
        self
    }
}

impl<T: Parsed> Parsed for std::sync::Arc<T> {
    fn manifest(&self) -> &ManifestInfo {
        (**self).manifest()
    }
}

/// What a walk reached.
#[derive(Debug)]
pub struct Reach<M> {
    /// Every manifest reached, roots included, with what loading it gave
    /// (`None`: the loader could not read it; it is kept, but what it
    /// references is unknown).
    pub manifests: HashMap<Digest, Option<M>>,
    /// Every blob the reached manifests reference (foreign layers aside),
    /// with the size their descriptors give.
    pub blobs: HashMap<Digest, u64>,
}

impl<M> Reach<M> {
    /// Whether `d` (a manifest or a blob) is kept alive by this reach.
    pub fn contains(&self, d: &Digest) -> bool {
        self.manifests.contains_key(d) || self.blobs.contains_key(d)
    }

    /// Every digest reached, manifests and blobs.
    pub fn digests(&self) -> impl Iterator<Item = &Digest> {
        self.manifests.keys().chain(self.blobs.keys())
    }
}

/// Walks from `roots` through every index entry `follow` accepts; `load`
/// gives a manifest, `Ok(None)` for one it cannot read (kept, not followed),
/// or an error that ends the walk. Each manifest is loaded once, cycles end.
pub async fn reach<M, E, F, Fut>(
    roots: impl IntoIterator<Item = Digest>,
    follow: impl Fn(&Descriptor) -> bool,
    load: F,
) -> Result<Reach<M>, E>
where
    M: Parsed,
    F: FnMut(Digest) -> Fut,
    Fut: Future<Output = Result<Option<M>, E>>,
{
    let mut out = Reach { manifests: HashMap::new(), blobs: HashMap::new() };
    walk(roots, follow, load, &mut out).await?;
    Ok(out)
}

/// Where a walk puts what it reaches.
pub trait Sink<M> {
    /// Whether manifest `d` is new to the walk (it is then loaded and followed).
    fn first(&mut self, d: &Digest) -> bool;
    /// Manifest `d`, as loaded (`None`: unreadable, not followed).
    fn manifest(&mut self, d: Digest, loaded: Option<M>);
    /// A blob a reached manifest references.
    fn blob(&mut self, b: &Descriptor);
}

impl<M> Sink<M> for Reach<M> {
    fn first(&mut self, d: &Digest) -> bool {
        !self.manifests.contains_key(d)
    }

    fn manifest(&mut self, d: Digest, loaded: Option<M>) {
        self.manifests.insert(d, loaded);
    }

    fn blob(&mut self, b: &Descriptor) {
        self.blobs.insert(b.digest.clone(), b.size);
    }
}

/// The walk itself, into any `Sink` (`reach` collects a `Reach`; a GC marks
/// straight into its compact sets, keeping no manifest and no map).
pub async fn walk<M, E, F, Fut>(
    roots: impl IntoIterator<Item = Digest>,
    follow: impl Fn(&Descriptor) -> bool,
    mut load: F,
    sink: &mut impl Sink<M>,
) -> Result<(), E>
where
    M: Parsed,
    F: FnMut(Digest) -> Fut,
    Fut: Future<Output = Result<Option<M>, E>>,
{
    let mut pending: Vec<Digest> = roots.into_iter().collect();
    while let Some(d) = pending.pop() {
        if !sink.first(&d) {
            continue;
        }
        let loaded = load(d.clone()).await?;
        if let Some(m) = &loaded {
            let info = m.manifest();
            for b in info.blobs() {
                sink.blob(b);
            }
            pending.extend(info.children().filter(|c| follow(c)).map(|c| c.digest.clone()));
        }
        sink.manifest(d, loaded);
    }
    Ok(())
}

/// Follows every index entry.
pub fn everything(_: &Descriptor) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        format!("sha256:{}", format!("{n:02x}").repeat(32)).parse().unwrap()
    }

    fn image(config: u8, layer: u8) -> ManifestInfo {
        let body = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"c","digest":"{}","size":2}},"layers":[{{"mediaType":"l","digest":"{}","size":30}}]}}"#,
            d(config),
            d(layer)
        );
        ManifestInfo::parse_stored(body.as_bytes()).unwrap()
    }

    fn index(children: &[(u8, &str)]) -> ManifestInfo {
        let entries: Vec<String> = children
            .iter()
            .map(|(c, arch)| {
                format!(
                    r#"{{"mediaType":"m","digest":"{}","size":1,"platform":{{"os":"linux","architecture":"{arch}"}}}}"#,
                    d(*c)
                )
            })
            .collect();
        let body = format!(r#"{{"schemaVersion":2,"manifests":[{}]}}"#, entries.join(","));
        ManifestInfo::parse_stored(body.as_bytes()).unwrap()
    }

    async fn walk(
        store: &HashMap<Digest, ManifestInfo>,
        roots: Vec<Digest>,
        follow: impl Fn(&Descriptor) -> bool,
    ) -> Reach<ManifestInfo> {
        reach(roots, follow, |m| async move { Ok::<_, ()>(store.get(&m).cloned()) }).await.unwrap()
    }

    #[actix_web::test]
    async fn through_indexes_to_any_depth_once_each() {
        // 1: index of (2: index of 3, 4) and 5; 3, 4, 5 images sharing layer 20; 6 unreadable.
        let store: HashMap<Digest, ManifestInfo> = [
            (d(1), index(&[(2, "amd64"), (5, "arm64"), (6, "s390x")])),
            (d(2), index(&[(3, "amd64"), (4, "arm64"), (1, "amd64")])),
            (d(3), image(10, 20)),
            (d(4), image(11, 20)),
            (d(5), image(12, 21)),
        ]
        .into_iter()
        .collect();
        let r = walk(&store, vec![d(1)], everything).await;
        assert_eq!(r.manifests.len(), 6, "1..6, the cycle back to 1 ends");
        assert!(r.manifests[&d(6)].is_none(), "unreadable: kept, not followed");
        let mut blobs: Vec<_> = r.blobs.keys().cloned().collect();
        blobs.sort();
        assert_eq!(blobs, vec![d(10), d(11), d(12), d(20), d(21)]);
        assert_eq!(r.blobs[&d(20)], 30);
        assert!(r.contains(&d(4)) && r.contains(&d(21)) && !r.contains(&d(7)));

        let arm = |e: &Descriptor| e.platform.as_ref().is_some_and(|p| p.architecture != "amd64");
        let r = walk(&store, vec![d(1)], arm).await;
        let mut manifests: Vec<_> = r.manifests.keys().cloned().collect();
        manifests.sort();
        assert_eq!(manifests, vec![d(1), d(5), d(6)], "only what `follow` accepts");
    }

    #[actix_web::test]
    async fn a_loader_error_ends_the_walk() {
        let r: Result<Reach<ManifestInfo>, &str> = reach([d(1)], everything, |_| async { Err("broken") }).await;
        assert_eq!(r.unwrap_err(), "broken");
    }
}
