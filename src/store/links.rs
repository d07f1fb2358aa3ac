//! Link files: a digest string, no newline, at a `layout` path.

use bytes::Bytes;

use crate::oci::Digest;

use super::error::{StoreError, StoreResult};
use super::Store;

impl Store {
    pub(super) async fn read_link(&self, path: &str) -> StoreResult<Option<Digest>> {
        match self.backend.get(path).await? {
            None => Ok(None),
            Some(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .map(Some)
                .ok_or_else(|| StoreError::CorruptLink { path: path.to_string() }),
        }
    }

    /// Removes a link, then the directory it lives in: the link file goes
    /// first, so a crash in between leaves an empty directory (nothing
    /// readers see), never a half-removed one that still resolves.
    pub(super) async fn remove_link(&self, link: &str, dir: &str) -> StoreResult<()> {
        self.backend.delete_files(vec![link.to_string()]).await?;
        self.backend.delete(dir).await
    }

    /// Points the link at `d`. A link that already holds `d` is not written
    /// again (no needless write, and nothing to lose on a full disk). Returns
    /// whether the link was created (it did not exist before).
    pub(super) async fn write_link(&self, path: &str, d: &Digest) -> StoreResult<bool> {
        let (existed, current) = match self.read_link(path).await {
            Ok(found) => (found.is_some(), found),
            // A damaged link is replaced by a good one.
            Err(StoreError::CorruptLink { .. }) => (true, None),
            Err(e) => return Err(e),
        };
        if current.as_ref() == Some(d) {
            return Ok(false);
        }
        self.backend.put(path, Bytes::from(d.to_string())).await?;
        Ok(!existed)
    }
}
