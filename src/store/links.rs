//! Link files: a digest string, no newline, at a `layout` path.

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

    pub(super) async fn write_link(&self, path: &str, d: &Digest) -> StoreResult<()> {
        self.backend.put(path, d.to_string().as_bytes()).await
    }
}
