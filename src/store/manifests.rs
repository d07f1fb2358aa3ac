//! Manifests (stored as blobs, linked as revisions), tags and the repository
//! listing used by the catalog.

use bytes::Bytes;

use crate::oci::{Digest, Edges, ManifestInfo, RepoName, Tag};

use super::error::StoreResult;
use super::index::RefKind;
use super::{layout, Store};

impl Store {
    /// Stores a verified manifest in `repo` and, if given, points `tag` at it.
    /// All or nothing as far as readers can see: if a step fails, the links
    /// this call created are removed again (the content-addressed data may
    /// stay, invisible, for garbage collection) and a tag keeps its old target.
    pub async fn put_manifest(&self, repo: &RepoName, d: &Digest, bytes: Bytes, tag: Option<&Tag>) -> StoreResult<()> {
        let _lease = self.lease(d).await;
        let size = bytes.len() as u64;
        // What it references, for GC to mark from the index; derived here from
        // the bytes themselves so the index cannot be told something else.
        let edges = ManifestInfo::parse_stored(&bytes).ok().map(|info| Edges::of(&info));
        self.put_blob_bytes(d, bytes.clone()).await?;
        let (digest, r) = (d.clone(), repo.clone());
        self.indexed(move |index| match edges {
            Some(edges) => index.add_manifest(&digest, &r, size, &edges),
            None => index.add_ref(&digest, RefKind::Manifest, &r, Some(size)),
        })
        .await?;
        let mut created = Vec::new();
        let result = async {
            if self.write_link(&layout::revision_link(repo, d), d).await? {
                created.push(layout::revision_link_dir(repo, d));
            }
            if let Some(tag) = tag {
                if self.write_link(&layout::tag_index_link(repo, tag, d), d).await? {
                    created.push(layout::tag_index_dir(repo, tag, d));
                }
                self.write_link(&layout::tag_current_link(repo, tag), d).await?;
            }
            // Another replica deleted the manifest's data as it was linked:
            // put it back (this call has the bytes).
            if !self.confirm_data(std::slice::from_ref(d)).await?.is_empty() {
                self.backend.put(&layout::blob_data(d), bytes).await?;
            }
            Ok(())
        }
        .await;
        if result.is_err() {
            for dir in created.iter().rev() {
                if let Err(e) = self.backend.delete(dir).await {
                    tracing::warn!(error = %e, dir, "could not undo a partial manifest write");
                }
            }
        }
        result
    }

    /// Removes the revision link of `d` from `repo`, then its index reference.
    async fn unlink_revision(&self, repo: &RepoName, d: &Digest) -> StoreResult<()> {
        self.remove_link(&layout::revision_link(repo, d), &layout::revision_link_dir(repo, d)).await?;
        let (digest, r) = (d.clone(), repo.clone());
        self.indexed(move |index| index.remove_ref(&digest, RefKind::Manifest, &r)).await
    }

    /// When the revision link of `d` in `repo` was written.
    pub async fn revision_modified(&self, repo: &RepoName, d: &Digest) -> StoreResult<Option<std::time::SystemTime>> {
        self.backend.modified(&layout::revision_link(repo, d)).await
    }

    /// Whether `repo` holds manifest `d`.
    pub async fn has_manifest(&self, repo: &RepoName, d: &Digest) -> StoreResult<bool> {
        Ok(self.read_link(&layout::revision_link(repo, d)).await?.is_some())
    }

    /// The digest `tag` points at in `repo`.
    pub async fn resolve_tag(&self, repo: &RepoName, tag: &Tag) -> StoreResult<Option<Digest>> {
        self.read_link(&layout::tag_current_link(repo, tag)).await
    }

    /// When tag `tag` of `repo` was last pointed at a manifest.
    pub async fn tag_modified(&self, repo: &RepoName, tag: &Tag) -> StoreResult<Option<std::time::SystemTime>> {
        self.backend.modified(&layout::tag_current_link(repo, tag)).await
    }

    /// Removes a tag (not the manifest it points to). Returns whether it existed.
    pub async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> StoreResult<bool> {
        if self.resolve_tag(repo, tag).await?.is_none() {
            return Ok(false);
        }
        self.remove_link(&layout::tag_current_link(repo, tag), &layout::tag_dir(repo, tag)).await?;
        Ok(true)
    }

    /// Removes manifest `d` from `repo` and every tag pointing at it (as
    /// registry:2 does). Returns the removed tags, or `None` if unknown.
    pub async fn delete_manifest(&self, repo: &RepoName, d: &Digest) -> StoreResult<Option<Vec<Tag>>> {
        let link = layout::revision_link(repo, d);
        if self.read_link(&link).await?.is_none() {
            return Ok(None);
        }
        let mut removed = Vec::new();
        for tag in self.list_tags(repo).await? {
            let Ok(tag) = tag.parse::<Tag>() else {
                continue;
            };
            if self.resolve_tag(repo, &tag).await?.as_ref() == Some(d) {
                self.remove_link(&layout::tag_current_link(repo, &tag), &layout::tag_dir(repo, &tag)).await?;
                removed.push(tag);
            }
        }
        self.unlink_revision(repo, d).await?;
        Ok(Some(removed))
    }

    /// Tag names in `repo`, sorted: those with a current link (a tag whose
    /// deletion a crash cut short is gone already).
    pub async fn list_tags(&self, repo: &RepoName) -> StoreResult<Vec<String>> {
        let mut tags = Vec::new();
        for name in self.backend.list(&layout::tags_dir(repo)).await? {
            let Ok(tag) = name.parse::<Tag>() else { continue };
            if self.backend.stat(&layout::tag_current_link(repo, &tag)).await?.is_some() {
                tags.push(name);
            }
        }
        tags.sort();
        Ok(tags)
    }

    /// Every manifest digest `repo` holds (with its revision link present).
    pub async fn list_manifests(&self, repo: &RepoName) -> StoreResult<Vec<Digest>> {
        let mut out = Vec::new();
        for alg in ["sha256", "sha512"] {
            for hex in self.backend.list(&layout::revisions_dir(repo, alg)).await? {
                if let Some(d) = Digest::from_parts(alg, &hex) {
                    if self.backend.stat(&layout::revision_link(repo, &d)).await?.is_some() {
                        out.push(d);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Removes a mirrored repository's directories once expiry has left no
    /// tag, manifest or blob link in it, so the catalog, search, the page and
    /// a copy of the tree no longer see an empty repository. Pushed
    /// repositories keep theirs (`holds_content`). Whether it is gone.
    pub async fn remove_emptied_mirror(&self, repo: &RepoName) -> StoreResult<bool> {
        let Some((host, _)) = layout::mirrored_parts(repo) else { return Ok(false) };
        if !self.list_tags(repo).await?.is_empty()
            || !self.list_manifests(repo).await?.is_empty()
            || !self.list_layer_links(repo).await?.is_empty()
        {
            return Ok(false);
        }
        self.backend.prune_empty_dirs(&layout::repository(repo), &layout::mirror_host_dir(host)).await
    }

    /// Whether content was ever committed to exactly `repo`: a blob link or
    /// a manifest made its `_layers` or `_manifests` directory (as registry:2's
    /// do). Deleting the content keeps the directories, so a name that was
    /// pushed to stays its owner's: it never falls back to the mirror, which
    /// would serve someone else's image under it. Upload sessions (`_uploads`)
    /// and nested repositories do not count.
    pub async fn holds_content(&self, repo: &RepoName) -> StoreResult<bool> {
        Ok(self.backend.has_children(&layout::layers_root(repo)).await?
            || self.backend.has_children(&layout::manifests_root(repo)).await?)
    }

    /// Every repository of pushed content that holds manifests, sorted
    /// (registry:2's catalog rule; `_mirror` is skipped like every `_` directory).
    pub async fn list_repositories(&self) -> StoreResult<Vec<String>> {
        self.list_repositories_under(&layout::repositories_root(), false).await
    }

    /// Mirrored repositories of upstream `host` that hold manifests, by their
    /// upstream names, sorted.
    pub async fn list_mirrored(&self, host: &str) -> StoreResult<Vec<String>> {
        self.list_repositories_under(&layout::mirror_host_dir(host), false).await
    }

    /// Every repository of pushed content with any content (manifests or blob links), sorted.
    pub async fn list_pushed_repositories(&self) -> StoreResult<Vec<String>> {
        self.list_repositories_under(&layout::repositories_root(), true).await
    }

    /// Mirrored repositories of upstream `host` with any content (manifests
    /// or blob links), by their upstream names.
    pub async fn list_mirrored_content(&self, host: &str) -> StoreResult<Vec<String>> {
        self.list_repositories_under(&layout::mirror_host_dir(host), true).await
    }

    /// Brings the index back in line with the tree after a crash: references
    /// whose link is gone (the crash came between deleting the link and
    /// recording it) are removed, and so are sizes of blobs whose data is
    /// gone. Returns how many entries were dropped.
    pub async fn reconcile_index(&self) -> StoreResult<usize> {
        let refs = self.indexed(|index| index.all_refs()).await?;
        let mut dropped = 0;
        for chunk in refs.chunks(4096) {
            let paths = chunk
                .iter()
                .map(|(d, kind, repo)| match kind {
                    RefKind::Layer => layout::layer_link(repo, d),
                    RefKind::Manifest => layout::revision_link(repo, d),
                })
                .collect();
            let present = self.backend.stat_many(paths).await?;
            let stale: Vec<_> =
                chunk.iter().zip(present).filter(|(_, p)| p.is_none()).map(|(r, _)| r.clone()).collect();
            dropped += stale.len();
            self.indexed(move |index| index.remove_refs(&stale)).await?;
        }
        let blobs = self.indexed(|index| index.blobs()).await?;
        for chunk in blobs.chunks(4096) {
            let present = self.backend.stat_many(chunk.iter().map(|(d, _, _)| layout::blob_data(d)).collect()).await?;
            let gone: Vec<Digest> =
                chunk.iter().zip(present).filter(|(_, p)| p.is_none()).map(|((d, _, _), _)| d.clone()).collect();
            dropped += gone.len();
            self.indexed(move |index| index.forget_blobs(&gone)).await?;
        }
        Ok(dropped)
    }

    /// Indexes every link of the tree (pushed and mirrored repositories) in
    /// batches, then marks the index complete; returns the references found.
    pub async fn index_tree(&self) -> StoreResult<usize> {
        let mut names = self.list_repositories_under(&layout::repositories_root(), true).await?;
        let mirror_root = format!("{}/{}", layout::repositories_root(), layout::MIRROR_DIR);
        for host in self.backend.list(&mirror_root).await? {
            for remote in self.list_repositories_under(&format!("{mirror_root}/{host}"), true).await? {
                names.push(layout::mirror_repository(&host, &remote).to_string());
            }
        }
        let mut total = 0;
        let mut batch = Vec::new();
        for name in names {
            let repo = RepoName::storage(name);
            let layers = self.list_layer_links(&repo).await?.into_iter().map(|d| (d, RefKind::Layer));
            let revisions = self.list_manifests(&repo).await?.into_iter().map(|d| (d, RefKind::Manifest));
            for (d, kind) in layers.chain(revisions).collect::<Vec<_>>() {
                let size = self.blob_size(&d).await?;
                batch.push((d, kind, repo.clone(), size));
            }
            if batch.len() >= 1000 {
                total += batch.len();
                let b = std::mem::take(&mut batch);
                self.indexed(move |index| index.add_found(&b, false)).await?;
            }
        }
        total += batch.len();
        self.indexed(move |index| index.add_found(&batch, true)).await?;
        Ok(total)
    }

    /// Moves mirrored content from where berth kept it before `_mirror/`
    /// (`repositories/<host>/…`, for a host that is a valid name component,
    /// so no client could ever push there) to `_mirror/<host>/…`.
    pub async fn migrate_legacy_mirror(&self, host: &str) -> StoreResult<bool> {
        if host.parse::<RepoName>().is_err() {
            return Ok(false);
        }
        let legacy = format!("{}/{host}", layout::repositories_root());
        self.backend.rename(&legacy, &layout::mirror_host_dir(host)).await
    }

    /// Repositories below `root` with a `_manifests` directory (and, with
    /// `layers`, also those with only `_layers`), sorted.
    async fn list_repositories_under(&self, root: &str, layers: bool) -> StoreResult<Vec<String>> {
        let root = root.to_string();
        let mut found = Vec::new();
        let mut pending = vec![String::new()];
        while let Some(name) = pending.pop() {
            let dir = if name.is_empty() { root.clone() } else { format!("{root}/{name}") };
            let mut counted = false;
            for child in self.backend.list(&dir).await? {
                let content = child == "_manifests" || (layers && child == "_layers");
                // An object store may still name a folder emptied a moment ago
                // (`Backend::list`): an expired repository is confirmed gone.
                if content && !name.is_empty() {
                    if !counted && self.backend.has_children(&format!("{dir}/{child}")).await? {
                        found.push(name.clone());
                        counted = true;
                    }
                } else if !child.starts_with('_') {
                    pending.push(if name.is_empty() { child } else { format!("{name}/{child}") });
                }
            }
        }
        found.sort();
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tags_manifests_and_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::filesystem(dir.path()).unwrap();
        let repo: RepoName = "team/app".parse().unwrap();
        let body = br#"{"schemaVersion":2}"#;
        let d = Digest::sha256_of(body);
        let v1: Tag = "v1".parse().unwrap();
        store.put_manifest(&repo, &d, Bytes::from_static(body), Some(&v1)).await.unwrap();
        store.put_manifest(&repo, &d, Bytes::from_static(body), Some(&"latest".parse().unwrap())).await.unwrap();
        assert_eq!(store.resolve_tag(&repo, &v1).await.unwrap(), Some(d.clone()));
        assert_eq!(store.list_tags(&repo).await.unwrap(), vec!["latest", "v1"]);
        assert!(store.has_manifest(&repo, &d).await.unwrap());
        assert_eq!(store.read_blob_bytes(&d).await.unwrap().unwrap().as_ref(), body);
        store.put_manifest(&"team".parse().unwrap(), &d, Bytes::from_static(body), None).await.unwrap();
        assert_eq!(store.list_repositories().await.unwrap(), vec!["team", "team/app"]);
        let removed = store.delete_manifest(&repo, &d).await.unwrap().unwrap();
        assert_eq!(removed.len(), 2);
        assert!(store.list_tags(&repo).await.unwrap().is_empty());
        assert!(!store.has_manifest(&repo, &d).await.unwrap());
        let raw = std::fs::read(dir.path().join(layout::revision_link(&"team".parse().unwrap(), &d))).unwrap();
        assert_eq!(raw, d.to_string().as_bytes());
    }

    #[tokio::test]
    async fn the_index_is_reconciled_with_what_a_crash_left() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::filesystem(dir.path()).unwrap();
        let repo: RepoName = "team/app".parse().unwrap();
        let body = Bytes::from_static(br#"{"schemaVersion":2}"#);
        let d = Digest::sha256_of(&body);
        store.put_manifest(&repo, &d, body, None).await.unwrap();
        let digest = d.clone();
        let refs = store.indexed(move |i| i.refs(&digest)).await.unwrap();
        assert_eq!(refs.pushed, vec!["team/app".to_string()]);
        assert_eq!(store.reconcile_index().await.unwrap(), 0, "nothing to drop");
        // A crash between removing the link and recording it, and data gone.
        std::fs::remove_file(dir.path().join(layout::revision_link(&repo, &d))).unwrap();
        std::fs::remove_file(dir.path().join(layout::blob_data(&d))).unwrap();
        assert_eq!(store.reconcile_index().await.unwrap(), 2);
        let digest = d.clone();
        assert!(store.indexed(move |i| i.refs(&digest)).await.unwrap().is_empty());
        assert_eq!(store.indexed(move |i| i.size(&d)).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_deletion_a_lease_refused_is_retried_until_done() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::filesystem(dir.path()).unwrap();
        let repo = layout::mirror_repository("docker.io", "library/alpine");
        let body = Bytes::from_static(br#"{"schemaVersion":2}"#);
        let d = Digest::sha256_of(&body);
        let data = dir.path().join(layout::blob_data(&d));
        store.put_manifest(&repo, &d, body.clone(), None).await.unwrap();
        store.delete_manifest(&repo, &d).await.unwrap().unwrap();
        // Unlinked while a download still holds it: kept, and remembered.
        let lease = store.lease(&d).await;
        assert_eq!(store.delete_unreferenced_blobs(std::slice::from_ref(&d)).await.unwrap(), (0, 0));
        assert!(data.exists());
        assert_eq!(store.deferred_deletions().await.unwrap(), vec![d.clone()]);
        drop(lease);
        // The retry (what the next eviction pass asks for) deletes it and forgets it.
        let retry = store.deferred_deletions().await.unwrap();
        assert_eq!(store.delete_unreferenced_blobs(&retry).await.unwrap(), (1, body.len() as u64));
        assert!(!data.exists());
        assert!(store.deferred_deletions().await.unwrap().is_empty());
        // Linked again before the retry: kept, and no longer waiting.
        store.put_manifest(&repo, &d, body.clone(), None).await.unwrap();
        store.delete_manifest(&repo, &d).await.unwrap().unwrap();
        let lease = store.lease(&d).await;
        store.delete_unreferenced_blobs(std::slice::from_ref(&d)).await.unwrap();
        drop(lease);
        store.put_manifest(&repo, &d, body, None).await.unwrap();
        let retry = store.deferred_deletions().await.unwrap();
        assert_eq!(store.delete_unreferenced_blobs(&retry).await.unwrap(), (0, 0));
        assert!(data.exists());
        assert!(store.deferred_deletions().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn mirrored_content_moves_from_where_berth_kept_it_before() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::filesystem(dir.path()).unwrap();
        let body = Bytes::from_static(br#"{"schemaVersion":2}"#);
        let d = Digest::sha256_of(&body);
        let legacy: RepoName = "docker.io/library/alpine".parse().unwrap();
        store.put_manifest(&legacy, &d, body, Some(&"3".parse().unwrap())).await.unwrap();
        assert!(store.migrate_legacy_mirror("docker.io").await.unwrap());
        let now = layout::mirror_repository("docker.io", "library/alpine");
        assert_eq!(store.resolve_tag(&now, &"3".parse().unwrap()).await.unwrap(), Some(d));
        assert!(!store.holds_content(&legacy).await.unwrap());
        assert_eq!(store.list_mirrored("docker.io").await.unwrap(), vec!["library/alpine"]);
        assert!(store.list_repositories().await.unwrap().is_empty(), "mirrored content is not pushed content");
        // Done once; and a port-bearing host's old storage name was open to pushes, so it is left alone.
        assert!(!store.migrate_legacy_mirror("docker.io").await.unwrap());
        assert!(!store.migrate_legacy_mirror("registry.corp:5000").await.unwrap());
    }
}
