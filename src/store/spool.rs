//! A local copy of a blob being fetched from upstream, which readers tail
//! while it arrives, for backends whose writer has no file to read from
//! (object stores: a multipart upload cannot be read before it completes).
//! The file is anonymous (unlinked from the start): it goes when its last
//! reader does, and a crash leaves nothing to clean.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use super::backend::{Appender, RandomRead};
use super::error::{StoreError, StoreResult};
use super::fs::{FsAppender, FsRandom};

pub(super) struct Spool {
    out: FsAppender,
    file: Arc<std::fs::File>,
}

impl Spool {
    /// A new, empty spool file in `dir` (made if missing).
    pub(super) async fn create(dir: &Path) -> StoreResult<Spool> {
        let dir = dir.to_path_buf();
        let name = dir.display().to_string();
        let file = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            tempfile::tempfile_in(&dir)
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r)
        .map_err(StoreError::io(&name))?;
        let file = Arc::new(file);
        Ok(Spool { out: FsAppender::over(file.clone(), &name), file })
    }

    /// Appends `bytes`; readers see them when this returns.
    pub(super) async fn write(&mut self, bytes: Bytes) -> StoreResult<()> {
        self.out.write(bytes).await
    }

    /// A reader over the spool, valid for as long as it is held.
    pub(super) fn reader(&self) -> Arc<dyn RandomRead> {
        Arc::new(FsRandom(self.file.clone()))
    }
}
