//! Faults made for real: a storage backend double that pauses a chosen
//! operation until the test releases it (to make races deterministic), and
//! a small tmpfs the test mounts and fills to the last byte (a full disk).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use berth::store::fs::FsBackend;
use berth::store::{Appender, Backend, ByteStream, PutIf, StoreResult, Version, Writer};
use bytes::Bytes;
use tokio::sync::{Notify, Semaphore};

/// One pause: the first `op` on a path containing `part` stops, after the
/// operation itself ran, until `release` is called.
struct Pause {
    op: &'static str,
    part: String,
    reached: Arc<Notify>,
    release: Arc<Semaphore>,
}

/// A backend (the filesystem's unless said), with one operation paused on demand.
pub struct PausingBackend {
    inner: Arc<dyn Backend>,
    pause: Mutex<Option<Pause>>,
}

/// The test's handle on a pause it armed.
pub struct Armed {
    reached: Arc<Notify>,
    release: Arc<Semaphore>,
}

impl Armed {
    /// Waits until the paused operation has run and is held (failing the
    /// test if it never comes: the operation was not made at all).
    pub async fn reached(&self) {
        let waited = tokio::time::timeout(std::time::Duration::from_secs(20), self.reached.notified()).await;
        assert!(waited.is_ok(), "the paused storage operation never ran");
    }

    pub fn release(&self) {
        self.release.add_permits(1);
    }
}

impl PausingBackend {
    pub fn new(root: &Path) -> Arc<Self> {
        Self::over(Arc::new(FsBackend::new(root)))
    }

    /// Any backend (an object store), with one operation paused on demand.
    pub fn over(inner: Arc<dyn Backend>) -> Arc<Self> {
        Arc::new(Self { inner, pause: Mutex::new(None) })
    }

    /// Pauses the next `op` ("get", "list", "put", "delete", "stat") on a path containing `part`.
    pub fn arm(&self, op: &'static str, part: &str) -> Armed {
        let (reached, release) = (Arc::new(Notify::new()), Arc::new(Semaphore::new(0)));
        *self.pause.lock().unwrap() =
            Some(Pause { op, part: part.to_string(), reached: reached.clone(), release: release.clone() });
        Armed { reached, release }
    }

    async fn checkpoint(&self, op: &'static str, path: &str) {
        let hit = {
            let mut p = self.pause.lock().unwrap();
            match p.as_ref() {
                Some(x) if x.op == op && path.contains(&x.part) => p.take(),
                _ => None,
            }
        };
        if let Some(p) = hit {
            p.reached.notify_one();
            p.release.acquire().await.unwrap().forget();
        }
    }
}

#[async_trait::async_trait]
impl Backend for PausingBackend {
    async fn get(&self, path: &str) -> StoreResult<Option<Bytes>> {
        let r = self.inner.get(path).await;
        self.checkpoint("get", path).await;
        r
    }
    async fn get_versioned(&self, path: &str) -> StoreResult<Option<(Bytes, Version)>> {
        self.inner.get_versioned(path).await
    }
    async fn put(&self, path: &str, content: Bytes) -> StoreResult<()> {
        let r = self.inner.put(path, content).await;
        self.checkpoint("put", path).await;
        r
    }
    async fn put_if(&self, path: &str, content: Bytes, condition: PutIf) -> StoreResult<bool> {
        self.inner.put_if(path, content, condition).await
    }
    async fn stat(&self, path: &str) -> StoreResult<Option<u64>> {
        let r = self.inner.stat(path).await;
        self.checkpoint("stat", path).await;
        r
    }
    async fn modified(&self, path: &str) -> StoreResult<Option<SystemTime>> {
        self.inner.modified(path).await
    }
    async fn list(&self, dir: &str) -> StoreResult<Vec<String>> {
        let r = self.inner.list(dir).await;
        self.checkpoint("list", dir).await;
        r
    }
    async fn walk(&self, dir: &str) -> StoreResult<Vec<berth::store::Found>> {
        let r = self.inner.walk(dir).await;
        self.checkpoint("walk", dir).await;
        r
    }
    async fn has_children(&self, dir: &str) -> StoreResult<bool> {
        self.inner.has_children(dir).await
    }
    async fn delete(&self, path: &str) -> StoreResult<()> {
        let r = self.inner.delete(path).await;
        self.checkpoint("delete", path).await;
        r
    }
    async fn reader(&self, path: &str, offset: u64, len: Option<u64>) -> StoreResult<ByteStream> {
        self.inner.reader(path, offset, len).await
    }
    async fn writer(&self, to: &str) -> StoreResult<Box<dyn Writer>> {
        self.inner.writer(to).await
    }
    fn appends(&self) -> bool {
        self.inner.appends()
    }
    fn shared(&self) -> bool {
        self.inner.shared()
    }
    async fn appender(&self, path: &str, offset: u64) -> StoreResult<Box<dyn Appender>> {
        self.inner.appender(path, offset).await
    }
    async fn move_into(&self, from: &str, to: &str) -> StoreResult<()> {
        self.inner.move_into(from, to).await
    }
    async fn rename(&self, from: &str, to: &str) -> StoreResult<bool> {
        self.inner.rename(from, to).await
    }
    async fn check_writable(&self) -> StoreResult<()> {
        self.inner.check_writable().await
    }
    async fn recover(&self) -> StoreResult<usize> {
        self.inner.recover().await
    }
}

/// A tmpfs of a few MiB, mounted by the test (which runs as root) and
/// unmounted when dropped: a disk the test can fill to the last byte.
pub struct SmallDisk {
    pub mount: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    pub fn new(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path().join("disk");
        std::fs::create_dir(&mount).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mount)
            .output()
            .expect("mount");
        assert!(out.status.success(), "mounting a tmpfs needs root: {}", String::from_utf8_lossy(&out.stderr));
        SmallDisk { mount, _dir: dir }
    }

    /// Fills the file system to the last byte with one file; returns its path.
    pub fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.mount.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        for chunk in [1 << 20, 4096, 512, 1] {
            let buf = vec![0u8; chunk];
            while f.write_all(&buf).and_then(|_| f.flush()).is_ok() {}
        }
        let _ = f.sync_all();
        // No space is left: even one more byte in a new file fails.
        let probe = self.mount.join("probe");
        assert!(std::fs::write(&probe, b"x").is_err(), "the disk is not full");
        let _ = std::fs::remove_file(probe);
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}
