//! Local-directory backend. Small files are written temp → fsync → rename;
//! blobs are committed by renaming a synced upload file into place, then
//! syncing the directory, so a path that exists is always complete.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::fs;
use tokio::io::AsyncWriteExt;

use super::backend::{Appender, Backend, ByteStream, RandomRead};
use super::error::{StoreError, StoreResult};

pub struct FsBackend {
    root: PathBuf,
}

impl FsBackend {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn full(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }
}

async fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all()).await.map_err(std::io::Error::other)?
}

/// File work the async runtime must not wait on, run on the blocking pool;
/// its errors name `path`.
async fn blocking<T: Send + 'static>(
    path: &str,
    op: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> StoreResult<T> {
    tokio::task::spawn_blocking(op).await.map_err(std::io::Error::other).and_then(|r| r).map_err(StoreError::io(path))
}

/// Errors that mean the path is simply not there.
fn absent(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory)
}

async fn ensure_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(p) => fs::create_dir_all(p).await,
        None => Ok(()),
    }
}

#[async_trait::async_trait]
impl Backend for FsBackend {
    async fn get(&self, path: &str) -> StoreResult<Option<Bytes>> {
        match fs::read(self.full(path)).await {
            Ok(v) => Ok(Some(Bytes::from(v))),
            Err(e) if absent(&e) => Ok(None),
            Err(e) => Err(StoreError::io(path)(e)),
        }
    }

    async fn put(&self, path: &str, content: &[u8]) -> StoreResult<()> {
        let full = self.full(path);
        ensure_parent(&full).await.map_err(StoreError::io(path))?;
        let tmp = full.with_extension(format!("tmp-{}", uuid::Uuid::new_v4()));
        let result = async {
            let mut f = fs::OpenOptions::new().write(true).create_new(true).open(&tmp).await?;
            f.write_all(content).await?;
            f.sync_all().await?;
            drop(f);
            fs::rename(&tmp, &full).await?;
            sync_dir(full.parent().unwrap_or(&self.root)).await
        }
        .await;
        if result.is_err() {
            let _ = fs::remove_file(&tmp).await;
        }
        result.map_err(StoreError::io(path))
    }

    async fn stat(&self, path: &str) -> StoreResult<Option<u64>> {
        match fs::metadata(self.full(path)).await {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if absent(&e) => Ok(None),
            Err(e) => Err(StoreError::io(path)(e)),
        }
    }

    async fn list(&self, dir: &str) -> StoreResult<Vec<String>> {
        let mut rd = match fs::read_dir(self.full(dir)).await {
            Ok(rd) => rd,
            Err(e) if absent(&e) => return Ok(vec![]),
            Err(e) => return Err(StoreError::io(dir)(e)),
        };
        let mut names = Vec::new();
        while let Some(entry) = rd.next_entry().await.map_err(StoreError::io(dir))? {
            if let Some(n) = entry.file_name().to_str() {
                names.push(n.to_string());
            }
        }
        Ok(names)
    }

    async fn delete(&self, path: &str) -> StoreResult<()> {
        let full = self.full(path);
        let result = match fs::symlink_metadata(&full).await {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&full).await,
            Ok(_) => fs::remove_file(&full).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(path)(e)),
        }
    }

    async fn reader(&self, path: &str, offset: u64, len: Option<u64>) -> StoreResult<ByteStream> {
        let full = self.full(path);
        let (file, size) = blocking(path, move || {
            let file = std::fs::File::open(full)?;
            let size = file.metadata()?.len();
            Ok((file, size))
        })
        .await?;
        let end = len.map_or(size, |n| offset.saturating_add(n).min(size));
        Ok(super::fs_read::stream(file, offset, end))
    }

    async fn open_random(&self, path: &str) -> StoreResult<std::sync::Arc<dyn RandomRead>> {
        let full = self.full(path);
        let file = blocking(path, move || std::fs::File::open(full)).await?;
        Ok(std::sync::Arc::new(FsRandom(std::sync::Arc::new(file))))
    }

    async fn appender(&self, path: &str, offset: u64) -> StoreResult<Box<dyn Appender>> {
        let full = self.full(path);
        ensure_parent(&full).await.map_err(StoreError::io(path))?;
        let file = blocking(path, move || {
            let f = std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(full)?;
            f.set_len(offset)?;
            Ok(f)
        })
        .await?;
        Ok(Box::new(FsAppender { file: std::sync::Arc::new(file), pos: offset, path: path.to_string() }))
    }

    async fn commit(&self, from: &str, to: &str) -> StoreResult<()> {
        let (src, dst) = (self.full(from), self.full(to));
        if fs::metadata(&dst).await.is_ok() {
            return self.delete(from).await;
        }
        ensure_parent(&dst).await.map_err(StoreError::io(to))?;
        fs::rename(&src, &dst).await.map_err(StoreError::io(to))?;
        sync_dir(dst.parent().unwrap_or(&self.root)).await.map_err(StoreError::io(to))
    }
}

/// An open file read at offsets: no shared cursor, no thread held between
/// reads, and no thread hop for bytes already in the page cache.
struct FsRandom(std::sync::Arc<std::fs::File>);

#[async_trait::async_trait]
impl RandomRead for FsRandom {
    async fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Bytes> {
        super::fs_read::read_at(&self.0, offset, len).await
    }
}

/// Positioned writes on the blocking pool (ext4 has no non-blocking
/// buffered write), awaited to the end: when `write` returns, the bytes are
/// in the file, where a mirror fetch's tailing readers look for them.
struct FsAppender {
    file: std::sync::Arc<std::fs::File>,
    pos: u64,
    path: String,
}

#[async_trait::async_trait]
impl Appender for FsAppender {
    async fn write(&mut self, bytes: Bytes) -> StoreResult<()> {
        use std::os::unix::fs::FileExt;
        let (file, pos, len) = (self.file.clone(), self.pos, bytes.len() as u64);
        blocking(&self.path, move || file.write_all_at(&bytes, pos)).await?;
        self.pos += len;
        Ok(())
    }

    async fn sync(&mut self) -> StoreResult<()> {
        let file = self.file.clone();
        blocking(&self.path, move || file.sync_all()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn put_get_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let b = FsBackend::new(dir.path());
        assert_eq!(b.get("a/b/link").await.unwrap(), None);
        b.put("a/b/link", b"sha256:x").await.unwrap();
        assert_eq!(b.get("a/b/link").await.unwrap().unwrap(), Bytes::from_static(b"sha256:x"));
        assert_eq!(b.stat("a/b/link").await.unwrap(), Some(8));
        assert_eq!(b.list("a").await.unwrap(), vec!["b".to_string()]);
        b.delete("a").await.unwrap();
        assert!(b.list("a").await.unwrap().is_empty());
        b.delete("a").await.unwrap();
    }

    #[tokio::test]
    async fn appender_resumes_and_truncates_and_commit_dedupes() {
        let dir = tempfile::tempdir().unwrap();
        let b = FsBackend::new(dir.path());
        let mut w = b.appender("u/data", 0).await.unwrap();
        w.write(Bytes::from_static(b"hello world")).await.unwrap();
        w.sync().await.unwrap();
        let mut w = b.appender("u/data", 5).await.unwrap();
        w.write(Bytes::from_static(b"!")).await.unwrap();
        w.sync().await.unwrap();
        assert_eq!(b.get("u/data").await.unwrap().unwrap(), Bytes::from_static(b"hello!"));
        let got: Vec<_> = b.reader("u/data", 1, Some(3)).await.unwrap().collect().await;
        assert_eq!(got.into_iter().map(|c| c.unwrap()).collect::<Vec<_>>().concat(), b"ell");
        b.commit("u/data", "blobs/x/data").await.unwrap();
        b.put("v/data", b"hello!").await.unwrap();
        b.commit("v/data", "blobs/x/data").await.unwrap();
        assert_eq!(b.stat("v/data").await.unwrap(), None);
        assert_eq!(b.stat("blobs/x/data").await.unwrap(), Some(6));
    }
}
