//! What every storage backend must do, as checks that run against a live
//! one: the unit tests run them over the file tree and an in-memory object
//! store, the integration tests over a real S3 server, and `berth
//! check-storage` over the bucket a deployment configures (an S3-compatible
//! server that ignores conditional puts fails here, before it can lose a
//! tag). Every check works under a scratch directory it removes afterwards.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;

use super::backend::{Backend, PutIf};

/// One check's outcome: its name, what went wrong, and how long it took.
pub type Outcome = (&'static str, Result<(), String>, std::time::Duration);

type Check = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            return Err(format!($($why)+));
        }
    };
}

fn failed(what: &str) -> impl FnOnce(super::StoreError) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Content whose every byte depends on its offset, so a wrong range shows.
fn patterned(len: usize) -> Bytes {
    (0..len).map(|i| (i % 251) as u8 ^ (i / 251) as u8).collect::<Vec<_>>().into()
}

async fn read_all(b: &dyn Backend, path: &str, offset: u64, len: Option<u64>) -> Result<Vec<u8>, String> {
    let mut r = b.reader(path, offset, len).await.map_err(failed("reader"))?;
    let mut out = Vec::new();
    while let Some(chunk) = r.next().await {
        out.extend_from_slice(&chunk.map_err(|e| format!("reading {path}: {e}"))?);
    }
    Ok(out)
}

async fn small_files(b: &dyn Backend, dir: &str) -> Check {
    let path = format!("{dir}/a/link");
    ensure!(b.get(&path).await.map_err(failed("get"))?.is_none(), "an absent file read as present");
    ensure!(b.stat(&path).await.map_err(failed("stat"))?.is_none(), "an absent file has a size");
    b.put(&path, Bytes::from_static(b"sha256:one")).await.map_err(failed("put"))?;
    b.put(&path, Bytes::from_static(b"sha256:two!")).await.map_err(failed("put over"))?;
    let got = b.get(&path).await.map_err(failed("get"))?;
    ensure!(got.as_deref() == Some(&b"sha256:two!"[..]), "read back {got:?} after an overwrite");
    ensure!(b.stat(&path).await.map_err(failed("stat"))? == Some(11), "wrong size");
    let modified = b.modified(&path).await.map_err(failed("modified"))?;
    let age = modified.and_then(|t| t.elapsed().ok()).unwrap_or_default();
    ensure!(modified.is_some() && age.as_secs() < 3600, "modified time {modified:?} is not recent");
    let many = b.stat_many(vec![path.clone(), format!("{dir}/absent")]).await.map_err(failed("stat_many"))?;
    ensure!(many == vec![Some(11), None], "stat_many gave {many:?}");
    Ok(())
}

async fn ranged_reads(b: &dyn Backend, dir: &str) -> Check {
    let path = format!("{dir}/blob");
    let content = patterned(3 * 1024 * 1024 + 17);
    let size = content.len() as u64;
    b.put(&path, content.clone()).await.map_err(failed("put"))?;
    let cases: [(u64, Option<u64>); 6] = [
        (0, None),
        (1, Some(3)),
        (size - 1, None),
        (1024 * 1024 - 5, Some(2 * 1024 * 1024)),
        (7, Some(size)),
        (0, Some(0)),
    ];
    for (offset, len) in cases {
        let got = read_all(b, &path, offset, len).await?;
        let end = len.map_or(size, |n| (offset + n).min(size));
        ensure!(
            got == content[offset as usize..end as usize],
            "range {offset}+{len:?} read wrong bytes ({} bytes)",
            got.len()
        );
    }
    Ok(())
}

async fn writer_commit(b: &dyn Backend, dir: &str) -> Check {
    let path = format!("{dir}/blobs/data");
    // Large enough for a multipart upload on object stores.
    let content = patterned(23 * 1024 * 1024 + 5);
    let mut w = b.writer(&path).await.map_err(failed("writer"))?;
    for chunk in content.chunks(1024 * 1024 + 3) {
        w.write(Bytes::copy_from_slice(chunk)).await.map_err(failed("write"))?;
    }
    if let Some(tail) = w.tail() {
        let got = tail.read_at(5 * 1024 * 1024, 10).await.map_err(|e| format!("tail: {e}"))?;
        ensure!(got == content[5 * 1024 * 1024..][..10], "the tail reader read wrong bytes");
    }
    ensure!(b.stat(&path).await.map_err(failed("stat"))?.is_none(), "written bytes were visible before commit");
    w.commit().await.map_err(failed("commit"))?;
    ensure!(b.stat(&path).await.map_err(failed("stat"))? == Some(content.len() as u64), "committed size is wrong");
    ensure!(read_all(b, &path, 0, None).await? == content, "committed content differs");
    // A second writer of the same (content-addressed) path: either copy stays, whole.
    let mut again = b.writer(&path).await.map_err(failed("writer"))?;
    again.write(content.clone()).await.map_err(failed("write"))?;
    again.commit().await.map_err(failed("second commit"))?;
    ensure!(read_all(b, &path, 0, None).await? == content, "content differs after a second commit");
    Ok(())
}

async fn writer_cancel(b: &dyn Backend, dir: &str) -> Check {
    let path = format!("{dir}/cancelled");
    let mut w = b.writer(&path).await.map_err(failed("writer"))?;
    w.write(patterned(12 * 1024 * 1024)).await.map_err(failed("write"))?;
    w.cancel().await;
    let mut dropped = b.writer(&format!("{dir}/dropped")).await.map_err(failed("writer"))?;
    dropped.write(patterned(1000)).await.map_err(failed("write"))?;
    drop(dropped);
    ensure!(b.stat(&path).await.map_err(failed("stat"))?.is_none(), "a cancelled writer left its bytes");
    ensure!(b.list(dir).await.map_err(failed("list"))?.is_empty(), "a cancelled or dropped writer left something");
    Ok(())
}

async fn conditional_puts(b: &dyn Backend, dir: &str) -> Check {
    let path = format!("{dir}/lease");
    let put = |c: &'static [u8], cond| b.put_if(&path, Bytes::from_static(c), cond);
    ensure!(put(b"first", PutIf::Absent).await.map_err(failed("create"))?, "a create of an absent file failed");
    ensure!(!put(b"second", PutIf::Absent).await.map_err(failed("create"))?, "a create replaced a file");
    let (content, v1) = b.get_versioned(&path).await.map_err(failed("get"))?.ok_or("the file vanished")?;
    ensure!(content.as_ref() == b"first", "a refused create changed the content");
    ensure!(
        put(b"third", PutIf::Unchanged(v1.clone())).await.map_err(failed("update"))?,
        "an update at the current version failed"
    );
    ensure!(!put(b"fourth", PutIf::Unchanged(v1)).await.map_err(failed("update"))?, "an update at a stale version won");
    ensure!(
        b.get(&path).await.map_err(failed("get"))?.as_deref() == Some(&b"third"[..]),
        "a stale update changed the content"
    );
    let (_, v3) = b.get_versioned(&path).await.map_err(failed("get"))?.ok_or("the file vanished")?;
    b.delete(&path).await.map_err(failed("delete"))?;
    ensure!(!put(b"fifth", PutIf::Unchanged(v3)).await.map_err(failed("update"))?, "an update of a deleted file won");
    Ok(())
}

async fn racing_conditional_puts(b: &dyn Backend, dir: &str) -> Check {
    for round in 0..3 {
        let path = format!("{dir}/race-{round}");
        let creates = (0..6).map(|i| b.put_if(&path, Bytes::from(format!("creator {i}")), PutIf::Absent));
        let won = futures::future::join_all(creates).await.into_iter().collect::<Result<Vec<_>, _>>();
        let won = won.map_err(failed("create"))?.into_iter().filter(|w| *w).count();
        ensure!(won == 1, "{won} of 6 racing creates won");
        let (_, v) = b.get_versioned(&path).await.map_err(failed("get"))?.ok_or("the file vanished")?;
        let updates = (0..6).map(|i| b.put_if(&path, Bytes::from(format!("updater {i}")), PutIf::Unchanged(v.clone())));
        let won = futures::future::join_all(updates).await.into_iter().collect::<Result<Vec<_>, _>>();
        let won = won.map_err(failed("update"))?.into_iter().filter(|w| *w).count();
        ensure!(won == 1, "{won} of 6 racing updates from one version won");
    }
    Ok(())
}

async fn listing_and_deletes(b: &dyn Backend, dir: &str) -> Check {
    for f in ["l/x/1", "l/x/2/deep", "l/y", "l/z/3", "lz/keep", "l2/keep"] {
        b.put(&format!("{dir}/{f}"), Bytes::from_static(b"-")).await.map_err(failed("put"))?;
    }
    let mut names = b.list(&format!("{dir}/l")).await.map_err(failed("list"))?;
    names.sort();
    ensure!(names == ["x", "y", "z"], "listed {names:?}");
    ensure!(
        b.list(&format!("{dir}/nothing")).await.map_err(failed("list"))?.is_empty(),
        "an absent directory listed children"
    );
    ensure!(
        b.has_children(&format!("{dir}/l/x")).await.map_err(failed("has_children"))?,
        "has_children missed a child"
    );
    ensure!(!b.has_children(&format!("{dir}/l/y")).await.map_err(failed("has_children"))?, "a file has children");
    let mut walked: Vec<(String, u64)> =
        b.walk(&format!("{dir}/l")).await.map_err(failed("walk"))?.into_iter().map(|f| (f.path, f.size)).collect();
    walked.sort();
    let expected: Vec<(String, u64)> =
        ["l/x/1", "l/x/2/deep", "l/y", "l/z/3"].iter().map(|f| (format!("{dir}/{f}"), 1)).collect();
    ensure!(walked == expected, "walked {walked:?}");
    b.delete(&format!("{dir}/l/x")).await.map_err(failed("delete"))?;
    b.delete(&format!("{dir}/l/x")).await.map_err(failed("delete of an absent path"))?;
    b.delete_many(vec![format!("{dir}/l/y"), format!("{dir}/l/z")]).await.map_err(failed("delete_many"))?;
    // An object store may list a prefix emptied a moment ago (SeaweedFS
    // removes empty folders lazily); nothing may be found under it.
    for name in b.list(&format!("{dir}/l")).await.map_err(failed("list"))? {
        let path = format!("{dir}/l/{name}");
        ensure!(b.stat(&path).await.map_err(failed("stat"))?.is_none(), "deleted file {name} is still there");
        ensure!(!b.has_children(&path).await.map_err(failed("has_children"))?, "deleted directory {name} has children");
    }
    let files = vec![format!("{dir}/lz/keep"), format!("{dir}/l2/keep")];
    b.delete_files(vec![format!("{dir}/lz/absent")]).await.map_err(failed("delete_files of an absent file"))?;
    for keep in ["lz/keep", "l2/keep"] {
        ensure!(
            b.stat(&format!("{dir}/{keep}")).await.map_err(failed("stat"))?.is_some(),
            "a delete of l removed {keep}"
        );
    }
    b.delete_files(files).await.map_err(failed("delete_files"))?;
    for gone in ["lz/keep", "l2/keep"] {
        ensure!(b.stat(&format!("{dir}/{gone}")).await.map_err(failed("stat"))?.is_none(), "delete_files left {gone}");
    }
    Ok(())
}

async fn moves(b: &dyn Backend, dir: &str) -> Check {
    let (from, to) = (format!("{dir}/upload/data"), format!("{dir}/blob/data"));
    b.put(&from, Bytes::from_static(b"content")).await.map_err(failed("put"))?;
    b.move_into(&from, &to).await.map_err(failed("move_into"))?;
    ensure!(b.stat(&from).await.map_err(failed("stat"))?.is_none(), "move_into left its source");
    b.put(&from, Bytes::from_static(b"content")).await.map_err(failed("put"))?;
    b.move_into(&from, &to).await.map_err(failed("move_into onto a copy"))?;
    ensure!(b.stat(&from).await.map_err(failed("stat"))?.is_none(), "move_into onto a copy left its source");
    ensure!(b.get(&to).await.map_err(failed("get"))?.as_deref() == Some(&b"content"[..]), "moved content differs");
    ensure!(
        b.rename(&format!("{dir}/blob"), &format!("{dir}/moved")).await.map_err(failed("rename"))?,
        "rename refused"
    );
    ensure!(
        !b.rename(&format!("{dir}/blob"), &format!("{dir}/moved2")).await.map_err(failed("rename"))?,
        "renamed an absent path"
    );
    ensure!(
        b.get(&format!("{dir}/moved/data")).await.map_err(failed("get"))?.is_some(),
        "a renamed tree lost its file"
    );
    Ok(())
}

async fn concurrent_writers(b: &dyn Backend, dir: &str) -> Check {
    let content = patterned(11 * 1024 * 1024);
    // Two writers per path, as two replicas storing one blob: the paths are
    // blob data paths, whose content is fixed by their key (on Azure the
    // second commit of one blob finds the first's and succeeds by it).
    let path = |i: usize| format!("{dir}/w{i}/blobs/data");
    let write = |i: usize| {
        let (content, path) = (content.clone(), path(i % 2));
        async move {
            let mut w = b.writer(&path).await.map_err(failed("writer"))?;
            for chunk in content.chunks(512 * 1024) {
                w.write(Bytes::copy_from_slice(chunk)).await.map_err(failed("write"))?;
            }
            w.commit().await.map_err(failed("commit"))
        }
    };
    for r in futures::future::join_all((0..4).map(write)).await {
        r?;
    }
    for i in 0..2 {
        ensure!(read_all(b, &path(i), 0, None).await? == content, "concurrent writers mixed their bytes");
    }
    Ok(())
}

/// Runs every check against `backend`, each under its own directory below
/// `scratch`, which is removed afterwards.
pub async fn run(backend: Arc<dyn Backend>, scratch: &str) -> Vec<Outcome> {
    let b = backend.as_ref();
    let mut out: Vec<Outcome> = Vec::new();
    macro_rules! check {
        ($name:ident) => {{
            let (dir, started) = (format!("{scratch}/{}", stringify!($name)), std::time::Instant::now());
            let result = $name(b, &dir).await;
            out.push((stringify!($name), result, started.elapsed()));
        }};
    }
    check!(small_files);
    check!(ranged_reads);
    check!(writer_commit);
    check!(writer_cancel);
    check!(conditional_puts);
    check!(racing_conditional_puts);
    check!(listing_and_deletes);
    check!(moves);
    check!(concurrent_writers);
    let started = std::time::Instant::now();
    if let Err(e) = b.delete(scratch).await {
        out.push(("cleanup", Err(e.to_string()), started.elapsed()));
    }
    out
}

/// Panics naming every check that failed (for tests).
pub fn assert_all_pass(outcomes: &[Outcome]) {
    let failed: Vec<String> =
        outcomes.iter().filter_map(|(n, r, _)| r.as_ref().err().map(|e| format!("{n}: {e}"))).collect();
    assert!(failed.is_empty(), "backend conformance failed:\n{}", failed.join("\n"));
    assert!(outcomes.len() >= 9, "the suite ran {} checks", outcomes.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_file_tree_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let b: Arc<dyn Backend> = Arc::new(super::super::fs::FsBackend::new(dir.path()));
        assert_all_pass(&run(b, "scratch").await);
    }

    #[tokio::test]
    async fn an_in_memory_object_store_conforms() {
        let store = Arc::new(object_store::memory::InMemory::new());
        let b: Arc<dyn Backend> = Arc::new(super::super::object::ObjectBackend::new(store, "prefix/root"));
        assert_all_pass(&run(b, "scratch").await);
    }
}
