//! The narrow storage driver every store operation goes through. Paths are
//! relative, `/`-separated and come only from `layout`. Implementations:
//! `fs::FsBackend` (local directory); an object-storage driver will follow.

use bytes::Bytes;
use futures::stream::BoxStream;

use super::error::StoreResult;

/// Read size for blob streaming: each read becomes one socket write, and
/// large writes cost the TCP stack less per byte (64–256 KiB chunks took
/// twice the CPU per GiB of 1 MiB ones), while a download holds at most a
/// couple of them in memory.
pub const READ_CHUNK: usize = 1024 * 1024;

/// A stream of blob bytes read from storage.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Whole content of a small file (links, manifests); `None` if absent.
    async fn get(&self, path: &str) -> StoreResult<Option<Bytes>>;
    /// Writes a small file atomically: the whole content (checked through its
    /// fsync) replaces the old one, or on any error the old one stays.
    async fn put(&self, path: &str, content: Bytes) -> StoreResult<()>;
    /// Size of a file; `None` if absent.
    async fn stat(&self, path: &str) -> StoreResult<Option<u64>>;
    /// When a file or directory was last modified; `None` if absent.
    async fn modified(&self, path: &str) -> StoreResult<Option<std::time::SystemTime>>;
    /// `stat` of many paths at once (one trip to the blocking pool, where that matters).
    async fn stat_many(&self, paths: Vec<String>) -> StoreResult<Vec<Option<u64>>> {
        let mut out = Vec::with_capacity(paths.len());
        for p in &paths {
            out.push(self.stat(p).await?);
        }
        Ok(out)
    }
    /// `modified` of many paths at once.
    async fn modified_many(&self, paths: Vec<String>) -> StoreResult<Vec<Option<std::time::SystemTime>>> {
        let mut out = Vec::with_capacity(paths.len());
        for p in &paths {
            out.push(self.modified(p).await?);
        }
        Ok(out)
    }
    /// `delete` of many paths at once, in order.
    async fn delete_many(&self, paths: Vec<String>) -> StoreResult<()> {
        for p in &paths {
            self.delete(p).await?;
        }
        Ok(())
    }
    /// Names of the direct children of a directory (empty if absent).
    async fn list(&self, dir: &str) -> StoreResult<Vec<String>>;
    /// Whether a directory has any child (without listing them all).
    async fn has_children(&self, dir: &str) -> StoreResult<bool> {
        Ok(!self.list(dir).await?.is_empty())
    }
    /// Removes a file or a whole directory; absent is not an error.
    async fn delete(&self, path: &str) -> StoreResult<()>;
    /// Streams `len` bytes (or to the end) from `offset`.
    async fn reader(&self, path: &str, offset: u64, len: Option<u64>) -> StoreResult<ByteStream>;
    /// Opens a file for reads at any offset; the handle stays valid when the
    /// file is later renamed (readers tailing an ingest keep reading after commit).
    async fn open_random(&self, path: &str) -> StoreResult<std::sync::Arc<dyn RandomRead>>;
    /// Opens a file for appending at `offset` (truncating anything past it).
    async fn appender(&self, path: &str, offset: u64) -> StoreResult<Box<dyn Appender>>;
    /// Moves a complete file into place; if `to` exists already (same
    /// content, by address), `from` is removed instead. Durable on return.
    async fn commit(&self, from: &str, to: &str) -> StoreResult<()>;
    /// Moves a file or directory to a path that does not exist yet; `false`
    /// (and nothing moved) when `from` is absent or `to` exists.
    async fn rename(&self, from: &str, to: &str) -> StoreResult<bool>;
    /// Fails as a small write would if the storage cannot take writes now
    /// (full, out of inodes, read-only): the readiness probe.
    async fn check_writable(&self) -> StoreResult<()>;
    /// Removes what a crash can leave of the backend's own temporary files;
    /// returns how many. Called once at startup.
    async fn recover(&self) -> StoreResult<usize>;
}

/// An open file being appended to (an upload's data).
#[async_trait::async_trait]
pub trait Appender: Send {
    /// Appends `bytes`; when it returns they are in the file, visible to
    /// readers of it.
    async fn write(&mut self, bytes: Bytes) -> StoreResult<()>;
    /// Flushes and fsyncs what was written.
    async fn sync(&mut self) -> StoreResult<()>;
}

/// Streams `[start, end)` of an open file, `READ_CHUNK` bytes at a time; a
/// file shorter than `end` ends the stream in an error, never short.
pub fn read_range(file: std::sync::Arc<dyn RandomRead>, start: u64, end: u64) -> ByteStream {
    use futures::StreamExt;
    futures::stream::try_unfold(start, move |pos| {
        let file = file.clone();
        async move {
            if pos >= end {
                return Ok(None);
            }
            let bytes = file.read_at(pos, (end - pos).min(READ_CHUNK as u64) as usize).await?;
            if bytes.is_empty() {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "file shorter than its range"));
            }
            let next = pos + bytes.len() as u64;
            Ok(Some((bytes, next)))
        }
    })
    .boxed()
}

/// Positioned reads from an open file.
#[async_trait::async_trait]
pub trait RandomRead: Send + Sync {
    /// Reads exactly `len` bytes at `offset` (fewer only at end of file).
    async fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Bytes>;
}
