//! The narrow storage driver every store operation goes through. Paths are
//! relative, `/`-separated and come only from `layout`. Its shape is what a
//! file tree and an object store can both do: whole small objects (plain
//! and conditional puts), ranged streaming reads, a writer that makes its
//! bytes visible only at commit, listing and deletes. Implementations:
//! `fs::FsBackend` (a local directory) and `object::ObjectBackend` (S3, GCS,
//! Azure, or in memory, through the `object_store` crate).

use bytes::Bytes;
use futures::stream::BoxStream;

use super::error::{StoreError, StoreResult};

/// Read size for blob streaming: each read becomes one socket write, and
/// large writes cost the TCP stack less per byte (64–256 KiB chunks took
/// twice the CPU per GiB of 1 MiB ones), while a download holds at most a
/// couple of them in memory.
pub const READ_CHUNK: usize = 1024 * 1024;

/// A stream of blob bytes read from storage.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// What an object's content was when it was read, for a conditional
/// replacement (`PutIf::Unchanged`): an ETag on object stores, a hash of the
/// content on files. Opaque to callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(pub String);

/// The condition of a conditional put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutIf {
    /// Only if nothing is at the path (create, never replace).
    Absent,
    /// Only if the content is still the version read.
    Unchanged(Version),
}

/// A file `Backend::walk` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub path: String,
    pub size: u64,
    /// When it was last written (by the storage's clock).
    pub modified: std::time::SystemTime,
}

/// A storage driver. Every implementation passes the same conformance suite
/// (`store::conformance`): a file tree and object stores alike.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Whole content of a small file (links, manifests); `None` if absent.
    async fn get(&self, path: &str) -> StoreResult<Option<Bytes>>;
    /// `get`, with the version a conditional put can name.
    async fn get_versioned(&self, path: &str) -> StoreResult<Option<(Bytes, Version)>>;
    /// Writes a small file atomically: the whole content (checked through its
    /// fsync) replaces the old one, or on any error the old one stays.
    async fn put(&self, path: &str, content: Bytes) -> StoreResult<()>;
    /// `put` only if `condition` holds, decided atomically (one of two racing
    /// writers wins); `false`, and nothing written, when it does not.
    async fn put_if(&self, path: &str, content: Bytes, condition: PutIf) -> StoreResult<bool>;
    /// Size of a file; `None` if absent.
    async fn stat(&self, path: &str) -> StoreResult<Option<u64>>;
    /// When a file (or, where there are directories, a directory) was last
    /// modified; `None` if absent.
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
    /// `delete_many` of paths known to be files, never directories: on an
    /// object store, one request per batch of keys instead of a listing of
    /// each path as a prefix first.
    async fn delete_files(&self, paths: Vec<String>) -> StoreResult<()> {
        self.delete_many(paths).await
    }
    /// Names of the direct children of a directory (a key prefix), files and
    /// subdirectories alike, in no set order; empty if absent. A directory
    /// emptied a moment ago may still be named (some object stores remove
    /// empty folders lazily): callers that need content confirm it.
    async fn list(&self, dir: &str) -> StoreResult<Vec<String>>;
    /// Every file under `dir` at any depth, with its size: paths as the
    /// other calls take them. One paged listing on an object store, a
    /// directory walk on files. The bookkeeping of shared storage is rebuilt
    /// from it (`store::shared`).
    async fn walk(&self, dir: &str) -> StoreResult<Vec<Found>>;
    /// Whether a directory has any child (without listing them all).
    async fn has_children(&self, dir: &str) -> StoreResult<bool> {
        Ok(!self.list(dir).await?.is_empty())
    }
    /// Removes the empty directories at and under `dir`, deepest first, and
    /// then its parents that are left empty, up to (not including) `up_to`;
    /// a directory with a file in it stays. Whether `dir` is gone. Object
    /// stores have no directories: a prefix ends with its last key.
    async fn prune_empty_dirs(&self, _dir: &str, _up_to: &str) -> StoreResult<bool> {
        Ok(true)
    }
    /// A URL that lets anyone holding it GET `path` for `expires`, signed by
    /// the storage itself (an object store's presigned URL); `None` where the
    /// backend cannot make one (files).
    async fn presigned_get(&self, _path: &str, _expires: std::time::Duration) -> StoreResult<Option<String>> {
        Ok(None)
    }
    /// Removes a file and everything under it as a directory; absent is not an error.
    async fn delete(&self, path: &str) -> StoreResult<()>;
    /// Streams `len` bytes (or to the end) from `offset`: only that range is
    /// read, never the whole file first.
    async fn reader(&self, path: &str, offset: u64, len: Option<u64>) -> StoreResult<ByteStream>;
    /// A writer whose bytes become the content of `to` only at `commit`, all
    /// at once; before that no reader of `to` sees any of them.
    async fn writer(&self, to: &str) -> StoreResult<Box<dyn Writer>>;
    /// Moves a complete file into place; if `to` exists already (same
    /// content, by address), `from` is removed instead. Durable on return.
    async fn move_into(&self, from: &str, to: &str) -> StoreResult<()>;
    /// Moves a file or directory to a path that does not exist yet; `false`
    /// (and nothing moved) when `from` is absent or `to` exists. Only
    /// berth's one-time layout migrations use it; atomic on files only.
    async fn rename(&self, from: &str, to: &str) -> StoreResult<bool>;
    /// Whether other processes may use the same storage at once (replicas
    /// over one bucket): work one should do for all takes a lease in it.
    /// (No default, as for `appends`.)
    fn shared(&self) -> bool;
    /// Whether this backend appends to files in place (`appender`), as
    /// registry:2 keeps an upload in one `data` file. Object stores cannot;
    /// their uploads keep each chunk as its own object (`uploads::parts`).
    /// (No default: a wrapper must say what its inner backend does.)
    fn appends(&self) -> bool;
    /// Opens a file for appending at `offset` (truncating anything past it);
    /// only where `appends`.
    async fn appender(&self, path: &str, _offset: u64) -> StoreResult<Box<dyn Appender>> {
        Err(StoreError::io(path)(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "this storage backend cannot append in place",
        )))
    }
    /// Fails as a small write would if the storage cannot take writes now
    /// (full, out of inodes, read-only, unreachable): the readiness probe.
    async fn check_writable(&self) -> StoreResult<()>;
    /// Removes what a crash can leave of the backend's own temporary files;
    /// returns how many. Called once at startup.
    async fn recover(&self) -> StoreResult<usize>;
}

/// Bytes on their way to one path (`Backend::writer`). Dropped without
/// `commit`, it leaves nothing readable behind, as `cancel` does.
#[async_trait::async_trait]
pub trait Writer: Send {
    /// Appends `bytes`; when it returns they are written (and visible to a `tail` reader).
    async fn write(&mut self, bytes: Bytes) -> StoreResult<()>;
    /// A reader over the bytes written so far that stays valid after commit,
    /// where the backend has one for free (a file); `None` otherwise, and a
    /// caller that needs one keeps its own copy (`spool`).
    fn tail(&self) -> Option<std::sync::Arc<dyn RandomRead>> {
        None
    }
    /// Makes the bytes the content of the path, durably. Where that path
    /// holds content already (the same, by address), either may stay.
    async fn commit(self: Box<Self>) -> StoreResult<()>;
    /// Discards what was written; nothing appears at the path.
    async fn cancel(self: Box<Self>);
}

/// An open file being appended to (an upload's data, on backends that `appends`).
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
