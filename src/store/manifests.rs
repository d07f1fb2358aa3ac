//! Manifests (stored as blobs, linked as revisions), tags and the repository
//! listing used by the catalog.

use crate::oci::{Digest, RepoName, Tag};

use super::error::StoreResult;
use super::{layout, Store};

impl Store {
    /// Stores a verified manifest in `repo` and, if given, points `tag` at it.
    pub async fn put_manifest(&self, repo: &RepoName, d: &Digest, bytes: &[u8], tag: Option<&Tag>) -> StoreResult<()> {
        self.put_blob_bytes(d, bytes).await?;
        self.write_link(&layout::revision_link(repo, d), d).await?;
        if let Some(tag) = tag {
            self.tag_manifest(repo, tag, d).await?;
        }
        Ok(())
    }

    /// Points `tag` at manifest `d`, recording it in the tag's index as registry:2 does.
    pub async fn tag_manifest(&self, repo: &RepoName, tag: &Tag, d: &Digest) -> StoreResult<()> {
        self.write_link(&layout::tag_index_link(repo, tag, d), d).await?;
        self.write_link(&layout::tag_current_link(repo, tag), d).await
    }

    /// Whether `repo` holds manifest `d`.
    pub async fn has_manifest(&self, repo: &RepoName, d: &Digest) -> StoreResult<bool> {
        Ok(self.read_link(&layout::revision_link(repo, d)).await?.is_some())
    }

    /// The digest `tag` points at in `repo`.
    pub async fn resolve_tag(&self, repo: &RepoName, tag: &Tag) -> StoreResult<Option<Digest>> {
        self.read_link(&layout::tag_current_link(repo, tag)).await
    }

    /// Removes a tag (not the manifest it points to). Returns whether it existed.
    pub async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> StoreResult<bool> {
        if self.resolve_tag(repo, tag).await?.is_none() {
            return Ok(false);
        }
        self.backend.delete(&layout::tag_dir(repo, tag)).await?;
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
                self.backend.delete(&layout::tag_dir(repo, &tag)).await?;
                removed.push(tag);
            }
        }
        self.backend.delete(link.trim_end_matches("/link")).await?;
        Ok(Some(removed))
    }

    /// Tag names in `repo`, sorted.
    pub async fn list_tags(&self, repo: &RepoName) -> StoreResult<Vec<String>> {
        let mut tags = self.backend.list(&layout::tags_dir(repo)).await?;
        tags.sort();
        Ok(tags)
    }

    /// Every manifest digest `repo` holds.
    pub async fn list_manifests(&self, repo: &RepoName) -> StoreResult<Vec<Digest>> {
        let mut out = Vec::new();
        for alg in ["sha256", "sha512"] {
            for hex in self.backend.list(&layout::revisions_dir(repo, alg)).await? {
                if let Some(d) = Digest::from_parts(alg, &hex) {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    /// Whether anything is stored under `repo`.
    pub async fn repository_exists(&self, repo: &RepoName) -> StoreResult<bool> {
        Ok(!self.backend.list(&layout::repository(repo)).await?.is_empty())
    }

    /// Every repository that holds manifests, sorted (registry:2's catalog rule).
    pub async fn list_repositories(&self) -> StoreResult<Vec<String>> {
        let root = layout::repositories_root();
        let mut found = Vec::new();
        let mut pending = vec![String::new()];
        while let Some(name) = pending.pop() {
            let dir = if name.is_empty() { root.clone() } else { format!("{root}/{name}") };
            for child in self.backend.list(&dir).await? {
                if child == "_manifests" && !name.is_empty() {
                    found.push(name.clone());
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
        let store = Store::filesystem(dir.path());
        let repo: RepoName = "team/app".parse().unwrap();
        let body = br#"{"schemaVersion":2}"#;
        let d = Digest::sha256_of(body);
        let v1: Tag = "v1".parse().unwrap();
        store.put_manifest(&repo, &d, body, Some(&v1)).await.unwrap();
        store.tag_manifest(&repo, &"latest".parse().unwrap(), &d).await.unwrap();
        assert_eq!(store.resolve_tag(&repo, &v1).await.unwrap(), Some(d.clone()));
        assert_eq!(store.list_tags(&repo).await.unwrap(), vec!["latest", "v1"]);
        assert!(store.has_manifest(&repo, &d).await.unwrap());
        assert_eq!(store.read_blob_bytes(&d).await.unwrap().unwrap().as_ref(), body);
        store.put_manifest(&"team".parse().unwrap(), &d, body, None).await.unwrap();
        assert_eq!(store.list_repositories().await.unwrap(), vec!["team", "team/app"]);
        let removed = store.delete_manifest(&repo, &d).await.unwrap().unwrap();
        assert_eq!(removed.len(), 2);
        assert!(store.list_tags(&repo).await.unwrap().is_empty());
        assert!(!store.has_manifest(&repo, &d).await.unwrap());
        let raw = std::fs::read(dir.path().join(layout::revision_link(&"team".parse().unwrap(), &d))).unwrap();
        assert_eq!(raw, d.to_string().as_bytes());
    }
}
