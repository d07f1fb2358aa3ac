//! Sequential blob reads for downloads. A read runs on the async worker when
//! its bytes are already in the page cache (`preadv2` with `RWF_NOWAIT`) and
//! moves to the blocking pool only when it would wait for the disk: a warm
//! blob is served with no thread hop per chunk (the hops were a quarter of
//! the CPU time of a warm download). Each stream reuses one buffer: the HTTP
//! layer copies a chunk into its write buffer and drops it before asking for
//! the next, so `BytesMut::reserve` takes the memory back.

use std::fs::File;
use std::io::{self, ErrorKind};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::backend::{ByteStream, READ_CHUNK};

struct Cursor {
    file: Arc<File>,
    pos: u64,
    end: u64,
    buf: BytesMut,
}

/// Streams `[offset, end)` of `file`.
pub fn stream(file: File, offset: u64, end: u64) -> ByteStream {
    let cursor = Cursor { file: Arc::new(file), pos: offset, end, buf: BytesMut::new() };
    futures::stream::try_unfold(cursor, next).boxed()
}

async fn next(mut c: Cursor) -> io::Result<Option<(Bytes, Cursor)>> {
    if c.pos >= c.end {
        return Ok(None);
    }
    let want = (c.end - c.pos).min(READ_CHUNK as u64) as usize;
    c.buf.reserve(want);
    let (n, buf) = read_into(&c.file, std::mem::take(&mut c.buf), c.pos, want).await?;
    c.buf = buf;
    if n == 0 {
        return Err(io::Error::new(ErrorKind::UnexpectedEof, "blob shorter than its size"));
    }
    c.pos += n as u64;
    Ok(Some((c.buf.split().freeze(), c)))
}

/// Up to `len` bytes at `pos`; fewer only at the end of the file.
pub async fn read_at(file: &Arc<File>, pos: u64, len: usize) -> io::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(len);
    while buf.len() < len {
        let filled = buf.len();
        let (n, b) = read_into(file, buf, pos + filled as u64, len - filled).await?;
        buf = b;
        if n == 0 {
            break;
        }
    }
    Ok(buf.freeze())
}

/// One read of up to `want` bytes at `pos`, appended to `buf` (which has the
/// room): on this thread when the page cache holds them, else on the pool.
async fn read_into(file: &Arc<File>, mut buf: BytesMut, pos: u64, want: usize) -> io::Result<(usize, BytesMut)> {
    if let Some(n) = read_cached(file, &mut buf, pos, want)? {
        return Ok((n, buf));
    }
    let file = file.clone();
    tokio::task::spawn_blocking(move || Ok((pread_spare(&file, &mut buf, pos, want, false)?, buf)))
        .await
        .map_err(io::Error::other)?
}

/// A read that only takes what the page cache holds; `None` when it would
/// block (or the kernel cannot tell), for the caller to read on the pool.
#[cfg(target_os = "linux")]
fn read_cached(file: &File, buf: &mut BytesMut, pos: u64, want: usize) -> io::Result<Option<usize>> {
    match pread_spare(file, buf, pos, want, true) {
        Ok(n) => Ok(Some(n)),
        Err(e) if e.kind() == ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(not(target_os = "linux"))]
fn read_cached(_: &File, _: &mut BytesMut, _: u64, _: usize) -> io::Result<Option<usize>> {
    Ok(None)
}

/// One positioned read into the spare capacity of `buf` (at least `want`
/// bytes), which grows by what was read; retried on EINTR. `nowait` fails
/// with `WouldBlock` instead of waiting for the disk.
fn pread_spare(file: &File, buf: &mut BytesMut, pos: u64, want: usize, nowait: bool) -> io::Result<usize> {
    let spare = &mut buf.spare_capacity_mut()[..want];
    let iov = libc::iovec { iov_base: spare.as_mut_ptr().cast(), iov_len: want };
    let offset = libc::off_t::try_from(pos).map_err(io::Error::other)?;
    loop {
        // SAFETY: `iov` covers `want` writable bytes of `buf`'s spare capacity,
        // which the kernel may fill; only the `n` bytes it reports written are
        // then marked initialized.
        let n = unsafe {
            #[cfg(target_os = "linux")]
            let n = libc::preadv2(file.as_raw_fd(), &iov, 1, offset, if nowait { libc::RWF_NOWAIT } else { 0 });
            #[cfg(not(target_os = "linux"))]
            let n = {
                let _ = nowait;
                libc::preadv(file.as_raw_fd(), &iov, 1, offset)
            };
            n
        };
        if n >= 0 {
            // SAFETY: the kernel initialized these `n` bytes, within capacity.
            unsafe { buf.set_len(buf.len() + n as usize) };
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn file_with(content: &[u8]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        std::fs::write(&path, content).unwrap();
        let file = File::open(&path).unwrap();
        (dir, file)
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn streams_the_range_in_chunks_reusing_one_buffer() {
        let content = pattern(READ_CHUNK * 2 + 1000);
        let (_dir, file) = file_with(&content);
        let (start, end) = (10u64, content.len() as u64 - 5);
        let mut s = stream(file, start, end);
        let mut got = Vec::new();
        let mut first_ptr = None;
        while let Some(chunk) = s.next().await {
            let chunk = chunk.unwrap();
            assert!(chunk.len() <= READ_CHUNK);
            got.extend_from_slice(&chunk);
            // The chunk is dropped here, as the HTTP layer does after copying it.
            let ptr = chunk.as_ptr();
            assert_eq!(*first_ptr.get_or_insert(ptr), ptr, "each chunk reuses the first one's memory");
        }
        assert_eq!(got, &content[start as usize..end as usize]);
    }

    #[tokio::test]
    async fn a_file_shorter_than_the_range_is_an_error() {
        let (_dir, file) = file_with(b"short");
        let results: Vec<_> = stream(file, 0, 10).collect().await;
        assert_eq!(results[0].as_ref().unwrap().as_ref(), b"short");
        assert_eq!(results[1].as_ref().unwrap_err().kind(), ErrorKind::UnexpectedEof);
        assert_eq!(results.len(), 2);
    }

    #[tokio::test]
    async fn read_at_is_short_only_at_the_end() {
        let content = pattern(5000);
        let (_dir, file) = file_with(&content);
        let file = Arc::new(file);
        assert_eq!(read_at(&file, 100, 1000).await.unwrap(), &content[100..1100]);
        assert_eq!(read_at(&file, 4000, 4096).await.unwrap(), &content[4000..]);
        assert!(read_at(&file, 6000, 10).await.unwrap().is_empty());
    }

    #[test]
    fn the_blocking_read_fills_spare_capacity() {
        let content = pattern(3000);
        let (_dir, file) = file_with(&content);
        let mut buf = BytesMut::with_capacity(4096);
        buf.extend_from_slice(b"head");
        assert_eq!(pread_spare(&file, &mut buf, 1000, 2000, false).unwrap(), 2000);
        assert_eq!(&buf[..4], b"head");
        assert_eq!(&buf[4..], &content[1000..3000]);
    }
}
