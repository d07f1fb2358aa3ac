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
    /// Writes a small file atomically: temp file, fsync, rename.
    async fn put(&self, path: &str, content: &[u8]) -> StoreResult<()>;
    /// Size of a file; `None` if absent.
    async fn stat(&self, path: &str) -> StoreResult<Option<u64>>;
    /// Names of the direct children of a directory (empty if absent).
    async fn list(&self, dir: &str) -> StoreResult<Vec<String>>;
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

/// Positioned reads from an open file.
#[async_trait::async_trait]
pub trait RandomRead: Send + Sync {
    /// Reads exactly `len` bytes at `offset` (fewer only at end of file).
    async fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Bytes>;
}
