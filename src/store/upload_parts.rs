//! Upload sessions on backends that cannot append (object stores), where the
//! chunks of one upload may reach different replicas. Each chunk is its own
//! object (`berth-parts/<uuid>`); the session's record (`berth-session`: size,
//! the hash state after those bytes, the parts in order) lives beside them
//! and is replaced only by a conditional put on the version read, so two
//! replicas appending at once cannot both win, and any replica goes on from
//! the saved hash state without reading the bytes again. At the end the
//! parts become the blob: one part is copied within the store, several are
//! streamed into one writer (read once, hashed again on the way).

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use crate::oci::{Algorithm, Digest, DigestHasher, RepoName};

use super::backend::PutIf;
use super::error::{BodyError, StoreError, StoreResult};
use super::uploads::{pump, Body, Sessions, UploadKind};
use super::{layout, Store};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Part {
    id: String,
    size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    size: u64,
    /// The algorithm of `state` ("sha256", or "sha512" when the client named
    /// it before the first byte).
    algorithm: String,
    /// `DigestHasher::save` after `size` bytes, in hex.
    state: String,
    parts: Vec<Part>,
}

impl Record {
    fn fresh(algorithm: Algorithm) -> Record {
        Record {
            size: 0,
            algorithm: algorithm.as_str().into(),
            state: hex::encode(algorithm.hasher().save()),
            parts: vec![],
        }
    }

    fn algorithm(&self) -> Option<Algorithm> {
        [Algorithm::Sha256, Algorithm::Sha512].into_iter().find(|a| a.as_str() == self.algorithm)
    }

    fn hasher(&self, path: &str) -> StoreResult<DigestHasher> {
        self.algorithm()
            .zip(hex::decode(&self.state).ok())
            .and_then(|(a, s)| DigestHasher::resume(a, &s))
            .ok_or_else(|| StoreError::CorruptLink { path: path.to_string() })
    }
}

fn encode(r: &Record) -> Bytes {
    Bytes::from(serde_json::to_vec(r).expect("a record serialises"))
}

/// Parts under a record (see the module comment).
pub(super) struct PartUploads;

#[async_trait::async_trait(?Send)]
impl UploadKind for PartUploads {
    async fn create(&self, store: &Store, repo: &RepoName, id: &str) -> StoreResult<()> {
        store.parts_start(repo, id).await
    }

    async fn size(&self, store: &Store, repo: &RepoName, id: &str) -> StoreResult<u64> {
        store.parts_size(repo, id).await
    }

    async fn append(
        &self,
        store: &Store,
        repo: &RepoName,
        id: &str,
        start: Option<u64>,
        declared: Option<u64>,
        body: Body<'_>,
    ) -> StoreResult<u64> {
        store.parts_append(repo, id, start, declared, body, None).await
    }

    async fn finish(
        &self,
        store: &Store,
        repo: &RepoName,
        id: &str,
        start: Option<u64>,
        body: Body<'_>,
        expected: &Digest,
    ) -> StoreResult<u64> {
        match store.parts_finish_whole(repo, id, start, body, expected).await? {
            Ok(size) => Ok(size),
            Err(body) => {
                store.parts_append(repo, id, start, None, body, Some(expected.algorithm())).await?;
                store.parts_finish(repo, id, expected).await
            }
        }
    }

    /// Sessions here are measured by their record (every replica's chunks count).
    fn idle(&self, _: &Sessions, _: Duration) -> Vec<(RepoName, String)> {
        vec![]
    }

    fn held_here(&self, _: &Sessions, _: &RepoName, _: &str) -> bool {
        false
    }
}

impl Store {
    /// Writes a new session's record (after `create_upload_dir`).
    pub(super) async fn parts_start(&self, repo: &RepoName, id: &str) -> StoreResult<()> {
        let path = layout::upload_record(repo, id);
        let fresh = encode(&Record::fresh(Algorithm::Sha256));
        if !self.backend.put_if(&path, fresh, PutIf::Absent).await? {
            return Err(StoreError::io(path)(std::io::Error::other("an upload id was used twice")));
        }
        Ok(())
    }

    /// The session's record and its version; `UploadUnknown` when there is none.
    async fn parts_record(&self, repo: &RepoName, id: &str) -> StoreResult<(Record, super::Version)> {
        let path = layout::upload_record(repo, id);
        let (bytes, version) =
            self.backend.get_versioned(&path).await?.ok_or_else(|| StoreError::UploadUnknown(id.to_string()))?;
        let record = serde_json::from_slice(&bytes).map_err(|_| StoreError::CorruptLink { path })?;
        Ok((record, version))
    }

    /// Bytes the session holds.
    pub(super) async fn parts_size(&self, repo: &RepoName, id: &str) -> StoreResult<u64> {
        Ok(self.parts_record(repo, id).await?.0.size)
    }

    /// When the session last took a chunk (what the purge measures).
    pub(super) async fn parts_modified(&self, repo: &RepoName, id: &str) -> StoreResult<Option<std::time::SystemTime>> {
        self.backend.modified(&layout::upload_record(repo, id)).await
    }

    /// Appends a chunk as a new part (see `append_upload`). `algorithm` is the
    /// one to hash with if this is the first byte. On any failure the session
    /// is as it was.
    pub(super) async fn parts_append<S>(
        &self,
        repo: &RepoName,
        id: &str,
        start: Option<u64>,
        declared: Option<u64>,
        body: S,
        algorithm: Option<Algorithm>,
    ) -> StoreResult<u64>
    where
        S: Stream<Item = Result<Bytes, BodyError>>,
    {
        let record_path = layout::upload_record(repo, id);
        let (mut record, version) = self.parts_record(repo, id).await?;
        if let Some(start) = start.filter(|&s| s != record.size) {
            return Err(StoreError::ChunkOutOfOrder { start, size: record.size });
        }
        if let Some(a) = algorithm.filter(|a| record.size == 0 && record.algorithm() != Some(*a)) {
            record = Record::fresh(a);
        }
        let mut hasher = Some(record.hasher(&record_path)?);
        let part = uuid::Uuid::new_v4().simple().to_string();
        let part_path = layout::upload_part(repo, id, &part);
        let mut w = self.backend.writer(&part_path).await?;
        let room = self.max_blob_size.saturating_sub(record.size);
        let write = async |chunk| w.write(chunk).await;
        let written = pump(write, &mut hasher, body, room, self.max_blob_size).await.and_then(|n| match declared {
            Some(d) if d != n => Err(StoreError::SizeMismatch { expected: d, actual: n }),
            _ => Ok(n),
        });
        let n = match written {
            Ok(0) => {
                w.cancel().await;
                return Ok(record.size);
            }
            Ok(n) => n,
            Err(e) => {
                w.cancel().await;
                return Err(e);
            }
        };
        w.commit().await?;
        record.size += n;
        record.state = hex::encode(hasher.expect("hashed").save());
        record.parts.push(Part { id: part, size: n });
        if !self.backend.put_if(&record_path, encode(&record), PutIf::Unchanged(version)).await? {
            // Another chunk was taken meanwhile (by another replica): this one was not.
            self.backend.delete_files(vec![part_path]).await?;
            let now = self.parts_record(repo, id).await?.0.size;
            return Err(StoreError::ChunkOutOfOrder { start: record.size - n, size: now });
        }
        Ok(record.size)
    }

    /// The whole blob in the final request (POST then one PUT with the body,
    /// or a monolithic POST) of a session that holds nothing yet: written
    /// straight to its place in `blobs/`, hashed on the way and committed
    /// only if it matches, with no part and no copy. `Err(body)`, untouched,
    /// when the session holds bytes already (the general path then applies).
    pub(super) async fn parts_finish_whole<S>(
        &self,
        repo: &RepoName,
        id: &str,
        start: Option<u64>,
        body: S,
        expected: &Digest,
    ) -> StoreResult<Result<u64, S>>
    where
        S: Stream<Item = Result<Bytes, BodyError>>,
    {
        let (record, _) = self.parts_record(repo, id).await?;
        if record.size != 0 {
            return Ok(Err(body));
        }
        if let Some(start) = start.filter(|&s| s != 0) {
            return Err(StoreError::ChunkOutOfOrder { start, size: 0 });
        }
        let _lease = self.lease(expected).await;
        let mut w = self.backend.writer(&layout::blob_data(expected)).await?;
        let mut hasher = Some(expected.algorithm().hasher());
        let write = async |chunk| w.write(chunk).await;
        let n = match pump(write, &mut hasher, body, self.max_blob_size, self.max_blob_size).await {
            Ok(n) => n,
            Err(e) => {
                w.cancel().await;
                return Err(e);
            }
        };
        let actual = hasher.expect("hashed").finish();
        if &actual != expected {
            w.cancel().await;
            self.backend.delete(&layout::upload_dir(repo, id)).await?;
            return Err(StoreError::DigestMismatch { expected: expected.clone(), actual });
        }
        w.commit().await?;
        self.link_blob_held(repo, expected, n).await?;
        self.backend.delete(&layout::upload_dir(repo, id)).await?;
        Ok(Ok(n))
    }

    /// Verifies the session's bytes against `expected` and makes them the
    /// blob, linked into `repo`; the session is removed either way. Returns the size.
    pub(super) async fn parts_finish(&self, repo: &RepoName, id: &str, expected: &Digest) -> StoreResult<u64> {
        let record_path = layout::upload_record(repo, id);
        let (record, _) = self.parts_record(repo, id).await?;
        let actual = match record.algorithm() {
            Some(a) if a == expected.algorithm() => record.hasher(&record_path)?.finish(),
            // Chunks sent before a non-sha256 digest was named: hash the parts once.
            _ => self.hash_parts(repo, id, &record, expected.algorithm(), None).await?,
        };
        if &actual != expected {
            self.backend.delete(&layout::upload_dir(repo, id)).await?;
            return Err(StoreError::DigestMismatch { expected: expected.clone(), actual });
        }
        let _lease = self.lease(expected).await;
        let blob = layout::blob_data(expected);
        if self.backend.stat(&blob).await? != Some(record.size) {
            match record.parts.as_slice() {
                [one] => self.backend.move_into(&layout::upload_part(repo, id, &one.id), &blob).await?,
                _ => {
                    let mut w = self.backend.writer(&blob).await?;
                    let copied = self.hash_parts(repo, id, &record, expected.algorithm(), Some(w.as_mut())).await;
                    match copied {
                        Ok(d) if &d == expected => w.commit().await?,
                        Ok(d) => {
                            w.cancel().await;
                            self.backend.delete(&layout::upload_dir(repo, id)).await?;
                            return Err(StoreError::DigestMismatch { expected: expected.clone(), actual: d });
                        }
                        Err(e) => {
                            w.cancel().await;
                            return Err(e);
                        }
                    }
                }
            }
        }
        self.link_blob_held(repo, expected, record.size).await?;
        self.backend.delete(&layout::upload_dir(repo, id)).await?;
        Ok(record.size)
    }

    /// Reads the parts in order, hashing them (and writing them to `copy`).
    async fn hash_parts(
        &self,
        repo: &RepoName,
        id: &str,
        record: &Record,
        algorithm: Algorithm,
        mut copy: Option<&mut dyn super::Writer>,
    ) -> StoreResult<Digest> {
        let mut h = algorithm.hasher();
        for part in &record.parts {
            let path = layout::upload_part(repo, id, &part.id);
            let mut r = self.backend.reader(&path, 0, None).await?;
            let mut got = 0u64;
            while let Some(chunk) = r.next().await {
                let chunk = chunk.map_err(StoreError::io(&path))?;
                got += chunk.len() as u64;
                h.update(&chunk);
                if let Some(w) = copy.as_mut() {
                    w.write(chunk).await?;
                }
            }
            if got != part.size {
                let why = format!("part holds {got} bytes, its record says {}", part.size);
                return Err(StoreError::io(path)(std::io::Error::other(why)));
            }
        }
        Ok(h.finish())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use futures::stream;

    use super::*;
    use crate::store::backend::{Backend, ByteStream, Version, Writer};
    use crate::store::object::ObjectBackend;

    /// An object backend that counts the ranged reads made of it, and can
    /// hold the next two readers of a session record until both have read
    /// (two replicas that read the same version, deterministically).
    struct Counting {
        inner: ObjectBackend,
        reads: AtomicUsize,
        held: AtomicUsize,
        both_read: tokio::sync::Barrier,
    }

    #[async_trait::async_trait]
    impl Backend for Counting {
        async fn get(&self, p: &str) -> StoreResult<Option<Bytes>> {
            self.inner.get(p).await
        }
        async fn get_versioned(&self, p: &str) -> StoreResult<Option<(Bytes, Version)>> {
            let got = self.inner.get_versioned(p).await;
            let hold = self.held.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
            if hold && p.ends_with("berth-session") {
                self.both_read.wait().await;
            }
            got
        }
        async fn put(&self, p: &str, c: Bytes) -> StoreResult<()> {
            self.inner.put(p, c).await
        }
        async fn put_if(&self, p: &str, c: Bytes, cond: PutIf) -> StoreResult<bool> {
            self.inner.put_if(p, c, cond).await
        }
        async fn stat(&self, p: &str) -> StoreResult<Option<u64>> {
            self.inner.stat(p).await
        }
        async fn modified(&self, p: &str) -> StoreResult<Option<std::time::SystemTime>> {
            self.inner.modified(p).await
        }
        async fn list(&self, d: &str) -> StoreResult<Vec<String>> {
            self.inner.list(d).await
        }
        async fn walk(&self, d: &str) -> StoreResult<Vec<crate::store::Found>> {
            self.inner.walk(d).await
        }
        async fn delete(&self, p: &str) -> StoreResult<()> {
            self.inner.delete(p).await
        }
        async fn reader(&self, p: &str, o: u64, l: Option<u64>) -> StoreResult<ByteStream> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.inner.reader(p, o, l).await
        }
        async fn writer(&self, to: &str) -> StoreResult<Box<dyn Writer>> {
            self.inner.writer(to).await
        }
        async fn move_into(&self, f: &str, t: &str) -> StoreResult<()> {
            self.inner.move_into(f, t).await
        }
        async fn rename(&self, f: &str, t: &str) -> StoreResult<bool> {
            self.inner.rename(f, t).await
        }
        fn appends(&self) -> bool {
            self.inner.appends()
        }
        fn shared(&self) -> bool {
            self.inner.shared()
        }
        async fn check_writable(&self) -> StoreResult<()> {
            self.inner.check_writable().await
        }
        async fn recover(&self) -> StoreResult<usize> {
            Ok(0)
        }
    }

    /// Two replicas (stores with their own index) over one bucket.
    fn replicas(dir: &std::path::Path) -> (Arc<Counting>, Store, Store) {
        let bucket = Arc::new(object_store::memory::InMemory::new());
        let backend = Arc::new(Counting {
            inner: ObjectBackend::new(bucket, "reg"),
            reads: AtomicUsize::new(0),
            held: AtomicUsize::new(0),
            both_read: tokio::sync::Barrier::new(2),
        });
        let store = |n: &str| {
            let index = crate::store::index::Index::open(&dir.join(n).join("index.redb")).unwrap();
            Store::new(backend.clone(), index, 100)
        };
        (backend.clone(), store("a"), store("b"))
    }

    fn body(b: &'static [u8]) -> impl Stream<Item = Result<Bytes, BodyError>> {
        stream::iter(vec![Ok(Bytes::from_static(b))])
    }

    #[tokio::test]
    async fn chunks_on_different_replicas_make_one_verified_blob_without_rereading() {
        let dir = tempfile::tempdir().unwrap();
        let (backend, a, b) = replicas(dir.path());
        let repo: RepoName = "team/app".parse().unwrap();
        let id = a.start_upload(&repo, None).await.unwrap().id;
        assert_eq!(a.append_upload(&repo, &id, Some(0), Some(6), body(b"hello ")).await.unwrap().size, 6);
        assert_eq!(b.upload_status(&repo, &id).await.unwrap().size, 6, "the other replica sees the session");
        let wrong = b.append_upload(&repo, &id, Some(0), None, body(b"again")).await.unwrap_err();
        assert!(matches!(wrong, StoreError::ChunkOutOfOrder { start: 0, size: 6 }), "{wrong:?}");
        assert_eq!(b.append_upload(&repo, &id, Some(6), None, body(b"big ")).await.unwrap().size, 10);
        let d = Digest::sha256_of(b"hello big world");
        assert_eq!(a.finish_upload(&repo, &id, Some(10), body(b"world"), &d).await.unwrap(), 15);
        // Hashing went on from the saved state: the parts were read once, to become the blob.
        assert_eq!(backend.reads.load(Ordering::SeqCst), 3, "each part read once, at the end");
        let got: Vec<_> = b.open_blob(&d, 0, None).await.unwrap().collect().await;
        assert_eq!(got.into_iter().map(Result::unwrap).collect::<Vec<_>>().concat(), b"hello big world");
        assert!(backend.list(&layout::uploads_dir(&repo)).await.unwrap().is_empty(), "the session is gone");
    }

    #[tokio::test]
    async fn one_chunk_becomes_the_blob_by_a_copy_and_a_wrong_digest_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (backend, a, b) = replicas(dir.path());
        let repo: RepoName = "r".parse().unwrap();
        let id = a.start_upload(&repo, None).await.unwrap().id;
        b.append_upload(&repo, &id, None, None, body(b"layer")).await.unwrap();
        let d = Digest::sha256_of(b"layer");
        b.finish_upload(&repo, &id, None, stream::empty(), &d).await.unwrap();
        assert_eq!(backend.reads.load(Ordering::SeqCst), 0, "copied within the store, never read");
        assert_eq!(a.blob_size(&d).await.unwrap(), Some(5));

        let id = a.start_upload(&repo, None).await.unwrap().id;
        b.append_upload(&repo, &id, None, None, body(b"evil")).await.unwrap();
        let good = Digest::sha256_of(b"good");
        let e = a.finish_upload(&repo, &id, None, stream::empty(), &good).await.unwrap_err();
        assert!(matches!(e, StoreError::DigestMismatch { .. }));
        assert_eq!(a.blob_size(&good).await.unwrap(), None);
        assert!(matches!(b.upload_status(&repo, &id).await, Err(StoreError::UploadUnknown(_))));
    }

    #[tokio::test]
    async fn racing_chunks_at_one_offset_from_two_replicas_take_exactly_one() {
        let dir = tempfile::tempdir().unwrap();
        let (backend, a, b) = replicas(dir.path());
        let repo: RepoName = "r".parse().unwrap();
        for _ in 0..5 {
            let id = a.start_upload(&repo, None).await.unwrap().id;
            backend.held.store(2, Ordering::SeqCst);
            let (ra, rb) = futures::join!(
                a.append_upload(&repo, &id, Some(0), None, body(b"from a")),
                b.append_upload(&repo, &id, Some(0), None, body(b"from b"))
            );
            assert_eq!(ra.is_ok() as u8 + rb.is_ok() as u8, 1, "{ra:?} {rb:?}");
            let (won, text) = if ra.is_ok() { (&a, &b"from a"[..]) } else { (&b, &b"from b"[..]) };
            let d = Digest::sha256_of(text);
            won.finish_upload(&repo, &id, None, stream::empty(), &d).await.unwrap();
            let parts = backend.list(&format!("{}/berth-parts", layout::upload_dir(&repo, &id))).await.unwrap();
            assert!(parts.is_empty(), "the losing chunk's part was removed: {parts:?}");
        }
    }

    #[tokio::test]
    async fn a_blob_whole_in_the_last_request_goes_straight_to_its_place_in_any_algorithm() {
        let dir = tempfile::tempdir().unwrap();
        let (backend, a, _) = replicas(dir.path());
        let repo: RepoName = "r".parse().unwrap();
        let id = a.start_upload(&repo, None).await.unwrap().id;
        let d = Digest::of(Algorithm::Sha512, b"monolithic");
        a.finish_upload(&repo, &id, None, body(b"monolithic"), &d).await.unwrap();
        assert_eq!(backend.reads.load(Ordering::SeqCst), 0);
        assert_eq!(a.blob_size(&d).await.unwrap(), Some(10));
        // Whole in the last request and wrong: nothing stored, the session gone.
        let id = a.start_upload(&repo, None).await.unwrap().id;
        let e = a.finish_upload(&repo, &id, None, body(b"tampered"), &d).await.unwrap_err();
        assert!(matches!(e, StoreError::DigestMismatch { .. }));
        assert_eq!(a.blob_size(&Digest::of(Algorithm::Sha512, b"tampered")).await.unwrap(), None);
        assert!(matches!(a.upload_status(&repo, &id).await, Err(StoreError::UploadUnknown(_))));
    }
}
