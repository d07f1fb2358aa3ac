//! Local-directory backend. Small files are written to a temp file under
//! `<root>/.berth/tmp` (beside the registry:2 tree, never inside it), checked
//! to the last byte (write, fsync), then renamed into place and the directory
//! synced; a failed write leaves the old file untouched and its temp file
//! removed. Blobs are committed by renaming a synced upload file into place.
//! A crash can leave temp files only in `.berth/tmp`, which `recover` empties.

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;
use tokio::fs;

use super::backend::{Appender, Backend, ByteStream, Found, PutIf, RandomRead, Version, Writer};
use super::error::{StoreError, StoreResult};

use super::layout::{self, LEGACY_SWEPT, TMP_DIR};

pub struct FsBackend {
    root: PathBuf,
    /// Prefixes the names of this backend's temp files: any other name in the
    /// temp directory is an earlier process's leftover (`recover`).
    instance: String,
    /// Serialises `put_if(Unchanged)`'s read-compare-replace (one process
    /// serves a data directory; conditional puts are rare).
    conditional: tokio::sync::Mutex<()>,
}

impl FsBackend {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            instance: uuid::Uuid::new_v4().simple().to_string(),
            conditional: tokio::sync::Mutex::new(()),
        }
    }

    fn full(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }

    fn temp_file(&self) -> PathBuf {
        self.root.join(layout::temp_file(&self.instance, &uuid::Uuid::new_v4().simple().to_string()))
    }
}

fn sync_dir_blocking(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// File work the async runtime must not wait on, run on the blocking pool;
/// its errors name `path`.
async fn blocking<T: Send + 'static>(
    path: &str,
    op: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> StoreResult<T> {
    tokio::task::spawn_blocking(op).await.map_err(std::io::Error::other).and_then(|r| r).map_err(StoreError::io(path))
}

/// How many blocking threads one call over many paths spreads across.
const PARALLEL_PATHS: usize = 8;
/// Paths below this many stay on one thread (a thread hop costs more).
const PATHS_PER_THREAD: usize = 64;

/// `op` over every path of `paths` (relative to `root`), the results in the
/// order of the paths, spread over up to `PARALLEL_PATHS` blocking threads.
/// File-system metadata work (stat, unlink, rmdir) mostly waits on the
/// journal and, on a disk mounted with `discard`, on the device: spread over
/// threads the waits overlap (a GC's deletes went several times faster).
async fn per_path<T: Send + 'static>(
    label: &'static str,
    root: &Path,
    paths: Vec<String>,
    op: fn(&Path) -> std::io::Result<T>,
) -> StoreResult<Vec<T>> {
    let threads = (paths.len() / PATHS_PER_THREAD).clamp(1, PARALLEL_PATHS);
    let chunk = paths.len().div_ceil(threads).max(1);
    let mut tasks = Vec::with_capacity(threads);
    let mut paths = paths.into_iter();
    loop {
        let part: Vec<String> = paths.by_ref().take(chunk).collect();
        if part.is_empty() {
            break;
        }
        let root = root.to_path_buf();
        tasks
            .push(blocking(label, move || part.iter().map(|p| op(&root.join(p))).collect::<std::io::Result<Vec<T>>>()));
    }
    let mut out = Vec::new();
    for part in futures::future::join_all(tasks).await {
        out.extend(part?);
    }
    Ok(out)
}

/// A file's size; `None` when absent or not a file.
fn stat_file(full: &Path) -> std::io::Result<Option<u64>> {
    match std::fs::metadata(full) {
        Ok(m) if m.is_file() => Ok(Some(m.len())),
        Ok(_) => Ok(None),
        Err(e) if absent(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// When a file or directory was last modified; `None` when absent.
fn modified_at(full: &Path) -> std::io::Result<Option<SystemTime>> {
    match std::fs::metadata(full) {
        Ok(m) => m.modified().map(Some),
        Err(e) if absent(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes a file, or a directory with what it holds; absent is fine.
fn remove_path(full: &Path) -> std::io::Result<()> {
    let result = match std::fs::symlink_metadata(full) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(full),
        Ok(_) => std::fs::remove_file(full),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// A file's version is its content's hash: what `put_if(Unchanged)` compares.
fn version_of(content: &[u8]) -> Version {
    Version(crate::oci::Digest::sha256_of(content).hex().to_string())
}

/// Writes `content` to a new file `tmp`, checked through its fsync, and makes
/// `dest`'s directory; returns that directory (to sync once `dest` is in it).
fn write_temp<'a>(tmp: &Path, dest: &'a Path, content: &[u8]) -> std::io::Result<&'a Path> {
    if let Some(dir) = tmp.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(tmp)?;
    f.write_all(content)?;
    f.sync_all()?;
    drop(f);
    dest.parent().ok_or_else(|| std::io::Error::other("destination has no parent directory"))
}

/// Runs `op` (a rename or link into `dir`) once `dir` exists. Expiry prunes
/// a repository's empty directories (`prune_empty_dirs`); one removed between
/// the mkdir and the rename is made again and the rename retried.
fn into_dir<T>(dir: &Path, mut op: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    for _ in 0..3 {
        std::fs::create_dir_all(dir)?;
        match op() {
            Err(e) if e.kind() == ErrorKind::NotFound && !dir.exists() => continue,
            result => return result,
        }
    }
    std::fs::create_dir_all(dir)?;
    op()
}

/// Removes the empty directories under `path` and then `path` itself,
/// deepest first; a directory that is not empty (or gains a child meanwhile)
/// stays. Returns whether `path` is gone.
fn prune_empty(path: &Path) -> std::io::Result<bool> {
    let entries = match std::fs::read_dir(path) {
        Ok(rd) => rd,
        Err(e) if absent(&e) => return Ok(true),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            prune_empty(&entry.path())?;
        }
    }
    remove_empty_dir(path)
}

/// `rmdir`: whether the directory is gone; one with children is left.
fn remove_empty_dir(path: &Path) -> std::io::Result<bool> {
    match std::fs::remove_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if absent(&e) => Ok(true),
        Err(e) if e.kind() == ErrorKind::DirectoryNotEmpty || e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writes `content` to `tmp` and links it at `dest` only if nothing is there
/// (a hard link fails on an existing name, atomically); `false` if taken.
fn create_exclusively(tmp: &Path, dest: &Path, content: &[u8]) -> std::io::Result<bool> {
    let result = (|| {
        let dir = write_temp(tmp, dest, content)?;
        match into_dir(dir, || std::fs::hard_link(tmp, dest)) {
            Ok(()) => sync_dir_blocking(dir).map(|()| true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    })();
    let _ = std::fs::remove_file(tmp);
    result
}

/// Errors that mean the path is simply not there.
fn absent(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory)
}

/// Writes `content` to `tmp`, checking every step up to the fsync (a write
/// error the kernel reports only at fsync is an error here too), then renames
/// it over `dest` and syncs the directory. On any failure `tmp` is removed
/// and `dest` is as it was.
fn write_atomically(tmp: &Path, dest: &Path, content: &[u8]) -> std::io::Result<()> {
    let result = (|| {
        let dir = write_temp(tmp, dest, content)?;
        into_dir(dir, || std::fs::rename(tmp, dest))?;
        sync_dir_blocking(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    result
}

/// Opens a file for reading without updating its access time (`O_NOATIME`,
/// where the process owns the file or may override that; otherwise plainly).
/// An access-time update is a metadata write: under heavy writeback it can
/// wait on the filesystem journal for a second or more, and a cached read
/// made on a server thread (`fs_read`) would stall every connection there.
pub(super) fn open_for_reading(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOATIME).open(path) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => std::fs::File::open(path),
        opened => opened,
    }
}

#[async_trait::async_trait]
impl Backend for FsBackend {
    async fn get(&self, path: &str) -> StoreResult<Option<Bytes>> {
        let full = self.full(path);
        blocking(path, move || {
            use std::io::Read;
            let mut content = Vec::new();
            match open_for_reading(&full).and_then(|mut f| f.read_to_end(&mut content)) {
                Ok(_) => Ok(Some(Bytes::from(content))),
                Err(e) if absent(&e) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await
    }

    async fn get_versioned(&self, path: &str) -> StoreResult<Option<(Bytes, Version)>> {
        Ok(self.get(path).await?.map(|b| {
            let v = version_of(&b);
            (b, v)
        }))
    }

    async fn put(&self, path: &str, content: Bytes) -> StoreResult<()> {
        let (tmp, dest) = (self.temp_file(), self.full(path));
        blocking(path, move || write_atomically(&tmp, &dest, &content)).await
    }

    async fn put_if(&self, path: &str, content: Bytes, condition: PutIf) -> StoreResult<bool> {
        let (tmp, dest) = (self.temp_file(), self.full(path));
        match condition {
            PutIf::Absent => blocking(path, move || create_exclusively(&tmp, &dest, &content)).await,
            PutIf::Unchanged(expected) => {
                let _one_at_a_time = self.conditional.lock().await;
                match self.get(path).await? {
                    Some(now) if version_of(&now) == expected => {
                        blocking(path, move || write_atomically(&tmp, &dest, &content)).await?;
                        Ok(true)
                    }
                    _ => Ok(false),
                }
            }
        }
    }

    async fn stat(&self, path: &str) -> StoreResult<Option<u64>> {
        match fs::metadata(self.full(path)).await {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if absent(&e) => Ok(None),
            Err(e) => Err(StoreError::io(path)(e)),
        }
    }

    async fn modified(&self, path: &str) -> StoreResult<Option<SystemTime>> {
        match fs::metadata(self.full(path)).await {
            Ok(m) => Ok(Some(m.modified().map_err(StoreError::io(path))?)),
            Err(e) if absent(&e) => Ok(None),
            Err(e) => Err(StoreError::io(path)(e)),
        }
    }

    async fn stat_many(&self, paths: Vec<String>) -> StoreResult<Vec<Option<u64>>> {
        per_path("stat", &self.root, paths, stat_file).await
    }

    async fn modified_many(&self, paths: Vec<String>) -> StoreResult<Vec<Option<SystemTime>>> {
        per_path("stat", &self.root, paths, modified_at).await
    }

    async fn delete_many(&self, paths: Vec<String>) -> StoreResult<()> {
        per_path("delete", &self.root, paths, remove_path).await.map(drop)
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

    async fn walk(&self, dir: &str) -> StoreResult<Vec<Found>> {
        let (root, start) = (self.root.clone(), dir.trim_end_matches('/').to_string());
        blocking(dir, move || {
            let mut out = Vec::new();
            let mut pending = vec![start];
            while let Some(d) = pending.pop() {
                let rd = match std::fs::read_dir(root.join(&d)) {
                    Ok(rd) => rd,
                    Err(e) if absent(&e) => continue,
                    Err(e) => return Err(e),
                };
                for entry in rd {
                    let entry = entry?;
                    let Some(name) = entry.file_name().to_str().map(|n| format!("{d}/{n}")) else { continue };
                    let kind = entry.file_type()?;
                    if kind.is_dir() {
                        pending.push(name);
                    } else if kind.is_file() {
                        let meta = entry.metadata()?;
                        out.push(Found { path: name, size: meta.len(), modified: meta.modified()? });
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn prune_empty_dirs(&self, dir: &str, up_to: &str) -> StoreResult<bool> {
        let (start, stop) = (self.full(dir), self.full(up_to));
        blocking(dir, move || {
            if !prune_empty(&start)? {
                return Ok(false);
            }
            let mut parent = start.parent();
            while let Some(p) = parent.filter(|p| p.starts_with(&stop) && *p != stop) {
                if !remove_empty_dir(p)? {
                    break;
                }
                parent = p.parent();
            }
            Ok(true)
        })
        .await
    }

    async fn has_children(&self, dir: &str) -> StoreResult<bool> {
        let full = self.full(dir);
        blocking(dir, move || match std::fs::read_dir(full) {
            Ok(mut rd) => Ok(rd.next().transpose()?.is_some()),
            Err(e) if absent(&e) => Ok(false),
            Err(e) => Err(e),
        })
        .await
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
            let file = open_for_reading(&full)?;
            let size = file.metadata()?.len();
            Ok((file, size))
        })
        .await?;
        let end = len.map_or(size, |n| offset.saturating_add(n).min(size));
        Ok(super::fs_read::stream(file, offset, end))
    }

    async fn writer(&self, to: &str) -> StoreResult<Box<dyn Writer>> {
        let (tmp, dest) = (self.temp_file(), self.full(to));
        let path = tmp.clone();
        let file = blocking(to, move || {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::create_dir_all(path.parent().expect("the temp directory"))?;
            // Its readers (a fetch's waiters) read it on server threads: no access-time updates.
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOATIME)
                .open(&path)
        })
        .await?;
        let file = std::sync::Arc::new(file);
        let out = FsAppender { file, pos: 0, path: to.to_string() };
        Ok(Box::new(FsWriter { out, tmp: Some(tmp), dest }))
    }

    fn appends(&self) -> bool {
        true
    }

    fn shared(&self) -> bool {
        // One process serves a data directory (its index is locked).
        false
    }

    async fn appender(&self, path: &str, offset: u64) -> StoreResult<Box<dyn Appender>> {
        let full = self.full(path);
        // No parent directories are made: an upload whose directory was
        // purged must not come back as a file without its session.
        let file = blocking(path, move || {
            let f = std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(full)?;
            f.set_len(offset)?;
            Ok(f)
        })
        .await?;
        Ok(Box::new(FsAppender { file: std::sync::Arc::new(file), pos: offset, path: path.to_string() }))
    }

    async fn move_into(&self, from: &str, to: &str) -> StoreResult<()> {
        let (src, dst) = (self.full(from), self.full(to));
        if fs::metadata(&dst).await.is_ok() {
            return self.delete(from).await;
        }
        blocking(to, move || commit_file(&src, &dst)).await
    }

    async fn rename(&self, from: &str, to: &str) -> StoreResult<bool> {
        let (src, dst) = (self.full(from), self.full(to));
        blocking(to, move || {
            if dst.exists() || !src.exists() {
                return Ok(false);
            }
            match dst.parent() {
                Some(dir) => into_dir(dir, || std::fs::rename(&src, &dst))?,
                None => std::fs::rename(&src, &dst)?,
            }
            Ok(true)
        })
        .await
    }

    async fn check_writable(&self) -> StoreResult<()> {
        // A page of data, written and synced as every small file is: on a full
        // disk (or with no inodes left) this fails as a manifest push would.
        let (tmp, dest) = (self.temp_file(), self.root.join(layout::probe(&uuid::Uuid::new_v4().to_string())));
        blocking(TMP_DIR, move || {
            write_atomically(&tmp, &dest, &[0u8; 4096])?;
            // Read back: a directory that takes writes but cannot be read is not ready either.
            let back = std::fs::read(&dest);
            std::fs::remove_file(&dest)?;
            match back {
                Ok(b) if b.len() == 4096 => Ok(()),
                Ok(b) => Err(std::io::Error::other(format!("a 4096-byte probe read back as {} bytes", b.len()))),
                Err(e) => Err(e),
            }
        })
        .await
    }

    async fn recover(&self) -> StoreResult<usize> {
        let (dir, instance) = (self.root.join(TMP_DIR), self.instance.clone());
        let (tree, marker) = (self.root.join(layout::V2), self.root.join(LEGACY_SWEPT));
        blocking(TMP_DIR, move || {
            let mut removed = 0;
            if !marker.exists() {
                removed += sweep_legacy_temp(&tree)?;
                write_atomically(&dir.join(layout::temp_name(&instance, "swept")), &marker, b"")?;
            }
            match std::fs::read_dir(&dir) {
                Ok(rd) => {
                    for entry in rd {
                        let entry = entry?;
                        if !layout::temp_file_of(&entry.file_name().to_string_lossy(), &instance) {
                            std::fs::remove_file(entry.path())?;
                            removed += 1;
                        }
                    }
                }
                Err(e) if absent(&e) => {}
                Err(e) => return Err(e),
            }
            Ok(removed)
        })
        .await
    }
}

/// Renames a complete, synced file into place and syncs the directory.
fn commit_file(src: &Path, dst: &Path) -> std::io::Result<()> {
    let dir = dst.parent().ok_or_else(|| std::io::Error::other("destination has no parent directory"))?;
    into_dir(dir, || std::fs::rename(src, dst))?;
    sync_dir_blocking(dir)
}

/// Whether a file name is one of the temp files berth once wrote beside its
/// target: `<name>.tmp-<uuid>`.
fn legacy_temp_name(name: &str) -> bool {
    name.rsplit_once(".tmp-").is_some_and(|(_, id)| uuid::Uuid::parse_str(id).is_ok())
}

/// Removes legacy temp files anywhere in the registry:2 tree; returns how many.
fn sweep_legacy_temp(tree: &Path) -> std::io::Result<usize> {
    let mut removed = 0;
    let mut pending = vec![tree.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if absent(&e) => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() && legacy_temp_name(&entry.file_name().to_string_lossy()) {
                std::fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// An open file read at offsets: no shared cursor, no thread held between
/// reads, and no thread hop for bytes already in the page cache.
pub(super) struct FsRandom(pub(super) std::sync::Arc<std::fs::File>);

#[async_trait::async_trait]
impl RandomRead for FsRandom {
    async fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Bytes> {
        super::fs_read::read_at(&self.0, offset, len).await
    }
}

/// Positioned writes on the blocking pool (ext4 has no non-blocking
/// buffered write), awaited to the end: when `write` returns, the bytes are
/// in the file, where a mirror fetch's tailing readers look for them.
pub(super) struct FsAppender {
    file: std::sync::Arc<std::fs::File>,
    pos: u64,
    path: String,
}

impl FsAppender {
    /// Appends to `file` from its start; errors name `path`.
    pub(super) fn over(file: std::sync::Arc<std::fs::File>, path: &str) -> Self {
        Self { file, pos: 0, path: path.to_string() }
    }
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

/// A blob on its way in: a temp file under `.berth/tmp`, renamed into place
/// at commit (after its fsync). Its open handle is the tail readers follow,
/// and stays valid across the rename.
struct FsWriter {
    out: FsAppender,
    /// `None` once committed or cancelled.
    tmp: Option<PathBuf>,
    dest: PathBuf,
}

#[async_trait::async_trait]
impl Writer for FsWriter {
    async fn write(&mut self, bytes: Bytes) -> StoreResult<()> {
        self.out.write(bytes).await
    }

    fn tail(&self) -> Option<std::sync::Arc<dyn RandomRead>> {
        Some(std::sync::Arc::new(FsRandom(self.out.file.clone())))
    }

    async fn commit(mut self: Box<Self>) -> StoreResult<()> {
        self.out.sync().await?;
        let tmp = self.tmp.take().expect("a writer commits once");
        let dest = self.dest.clone();
        blocking(&self.out.path, move || {
            if dest.exists() {
                // The same content, by address: the copy in place stays.
                return std::fs::remove_file(&tmp);
            }
            let committed = commit_file(&tmp, &dest);
            if committed.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            committed
        })
        .await
    }

    async fn cancel(mut self: Box<Self>) {
        if let Some(tmp) = self.tmp.take() {
            let _ = blocking(&self.out.path, move || std::fs::remove_file(tmp)).await;
        }
    }
}

impl Drop for FsWriter {
    fn drop(&mut self) {
        // Neither committed nor cancelled (the task was dropped): leave nothing.
        if let Some(tmp) = self.tmp.take() {
            let _ = std::fs::remove_file(tmp);
        }
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
        b.put("a/b/link", Bytes::from_static(b"sha256:x")).await.unwrap();
        assert_eq!(b.get("a/b/link").await.unwrap().unwrap(), Bytes::from_static(b"sha256:x"));
        assert_eq!(b.stat("a/b/link").await.unwrap(), Some(8));
        assert_eq!(b.list("a").await.unwrap(), vec!["b".to_string()]);
        b.delete("a").await.unwrap();
        assert!(b.list("a").await.unwrap().is_empty());
        b.delete("a").await.unwrap();
    }

    /// Reads leave a file's access time alone (no metadata write on a read).
    #[tokio::test]
    async fn reads_do_not_update_the_access_time() {
        let dir = tempfile::tempdir().unwrap();
        let b = FsBackend::new(dir.path());
        b.put("f/link", Bytes::from_static(b"sha256:x")).await.unwrap();
        let old = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        let full = dir.path().join("f/link");
        // Older than the modification time: a relatime mount would update it on the next read.
        std::fs::File::options()
            .write(true)
            .open(&full)
            .unwrap()
            .set_times(std::fs::FileTimes::new().set_accessed(old))
            .unwrap();
        assert!(b.get("f/link").await.unwrap().is_some());
        let mut r = b.reader("f/link", 0, None).await.unwrap();
        while r.next().await.is_some() {}
        assert_eq!(std::fs::metadata(&full).unwrap().accessed().unwrap(), old);
    }

    #[tokio::test]
    async fn appender_resumes_and_truncates_and_commit_dedupes() {
        let dir = tempfile::tempdir().unwrap();
        let b = FsBackend::new(dir.path());
        assert!(b.appender("u/data", 0).await.is_err(), "no parent directory is made for an upload file");
        std::fs::create_dir(dir.path().join("u")).unwrap();
        let mut w = b.appender("u/data", 0).await.unwrap();
        w.write(Bytes::from_static(b"hello world")).await.unwrap();
        w.sync().await.unwrap();
        let mut w = b.appender("u/data", 5).await.unwrap();
        w.write(Bytes::from_static(b"!")).await.unwrap();
        w.sync().await.unwrap();
        assert_eq!(b.get("u/data").await.unwrap().unwrap(), Bytes::from_static(b"hello!"));
        let got: Vec<_> = b.reader("u/data", 1, Some(3)).await.unwrap().collect().await;
        assert_eq!(got.into_iter().map(|c| c.unwrap()).collect::<Vec<_>>().concat(), b"ell");
        b.move_into("u/data", "blobs/x/data").await.unwrap();
        b.put("v/data", Bytes::from_static(b"hello!")).await.unwrap();
        b.move_into("v/data", "blobs/x/data").await.unwrap();
        assert_eq!(b.stat("v/data").await.unwrap(), None);
        assert_eq!(b.stat("blobs/x/data").await.unwrap(), Some(6));
    }

    #[tokio::test]
    async fn a_failed_put_leaves_the_old_file_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let b = FsBackend::new(dir.path());
        b.put("a/link", Bytes::from_static(b"old")).await.unwrap();
        // A directory where the file should go: the rename fails after the temp file was written.
        std::fs::create_dir_all(dir.path().join("a/dir/sub")).unwrap();
        assert!(b.put("a/dir", Bytes::from_static(b"new")).await.is_err());
        assert_eq!(b.get("a/link").await.unwrap().unwrap(), Bytes::from_static(b"old"));
        assert_eq!(std::fs::read_dir(dir.path().join(TMP_DIR)).unwrap().count(), 0);
        // What a crash left in the temp directory is removed by `recover`;
        // a temp file of this process's own writes is not.
        let crashed = dir.path().join(TMP_DIR).join("left-by-a-crash");
        std::fs::write(&crashed, b"x").unwrap();
        std::fs::write(b.temp_file(), b"being written").unwrap();
        assert_eq!(b.recover().await.unwrap(), 1);
        assert!(!crashed.exists());
        b.check_writable().await.unwrap();
        assert!(b.has_children("a").await.unwrap());
    }

    #[tokio::test]
    async fn temp_files_once_written_beside_their_targets_are_swept_once() {
        let dir = tempfile::tempdir().unwrap();
        let link_dir = dir.path().join("docker/registry/v2/repositories/a/_layers/sha256/ab");
        std::fs::create_dir_all(&link_dir).unwrap();
        let leftover = link_dir.join(format!("link.tmp-{}", uuid::Uuid::new_v4()));
        std::fs::write(&leftover, b"").unwrap();
        std::fs::write(link_dir.join("link"), b"sha256:ab").unwrap();
        std::fs::write(link_dir.join("notes.tmp-mine"), b"kept").unwrap();
        let b = FsBackend::new(dir.path());
        assert_eq!(b.recover().await.unwrap(), 1);
        assert!(!leftover.exists() && link_dir.join("link").exists() && link_dir.join("notes.tmp-mine").exists());
        // Done once: a later start does not walk the tree again.
        std::fs::write(&leftover, b"").unwrap();
        assert_eq!(FsBackend::new(dir.path()).recover().await.unwrap(), 0);
        assert!(!b.has_children("nothing/here").await.unwrap());
    }
}
