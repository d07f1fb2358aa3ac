//! Request limits end to end: each limit answers its 4xx with an OCI error
//! body, nothing stored is harmed, and the next request is served.
//! (`integrity.rs` has the stalled body and the per-client upload cap;
//! `process_faults.rs` the connection cap.)

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;

/// Writes `head` (and `body`) on a fresh connection and reads the whole answer.
fn raw(addr: &str, head: &str, body: &[u8]) -> String {
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    sock.write_all(head.as_bytes()).unwrap();
    let _ = sock.write_all(body);
    let mut reply = Vec::new();
    let _ = sock.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    actix_rt::task::spawn_blocking(f).await.unwrap()
}

#[actix_rt::test]
async fn uri_and_header_limits_answer_414_and_431_with_an_oci_body() {
    let s = TestServer::start_with(|c| {
        c.mirror.enabled = false;
        c.server.max_url_length = 1024;
        c.server.max_headers = 20;
        c.server.max_header_bytes = bytesize::ByteSize::kib(4);
    })
    .await;
    let c = s.client();
    let long = format!("/v2/team/app/tags/list?last={}", "a".repeat(1100));
    let r = c.get(&long).await;
    assert_eq!((r.status, r.code().as_str()), (414, "URI_TOO_LONG"));
    let many: Vec<(String, String)> = (0..25).map(|i| (format!("x-h{i}"), "1".to_string())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = c.req("GET", "/v2/", &many, "").await;
    assert_eq!((r.status, r.code().as_str()), (431, "HEADERS_TOO_LARGE"));
    let big = "b".repeat(5000);
    let r = c.req("GET", "/v2/", &[("X-Big", &big)], "").await;
    assert_eq!((r.status, r.code().as_str()), (431, "HEADERS_TOO_LARGE"));
    assert!(r.json()["errors"][0]["message"].as_str().unwrap().contains("limit"));
    // Past actix-web's own parser (more than 96 headers): a bare 431, and the server carries on.
    let addr = s.base.trim_start_matches("http://").to_string();
    let head: String = (0..120).map(|i| format!("X-H{i}: 1\r\n")).collect();
    let reply = blocking(move || raw(&addr, &format!("GET /v2/ HTTP/1.1\r\nHost: x\r\n{head}\r\n"), b"")).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    assert_eq!(c.get("/v2/").await.status, 200);
    s.stop().await;
}

#[actix_rt::test]
async fn blobs_over_the_size_limit_are_refused_and_the_upload_kept() {
    let s = TestServer::start_with(|c| {
        c.mirror.enabled = false;
        c.uploads.max_blob_size = bytesize::ByteSize::kib(64);
    })
    .await;
    let c = s.client();
    // Declared too large: refused before a byte is read.
    let big = vec![7u8; 65 * 1024];
    let d = Digest::sha256_of(&big);
    let r = c.req("POST", &format!("/v2/team/app/blobs/uploads/?digest={d}"), &[], big.clone()).await;
    assert_eq!((r.status, r.code().as_str()), (413, "TOO_LARGE"));
    // Chunked (no Content-Length), over several PATCHes: the chunk that crosses the limit is refused, and rolled back.
    let loc = c.req("POST", "/v2/team/app/blobs/uploads/", &[], "").await.header("location").unwrap().to_string();
    let r = c.req_chunked("PATCH", &loc, &[], vec![Bytes::from(vec![1u8; 40 * 1024])]).await;
    assert_eq!(r.status, 202);
    let r = c.req_chunked("PATCH", &loc, &[], vec![Bytes::from(vec![2u8; 16 * 1024]); 2]).await;
    assert_eq!((r.status, r.code().as_str()), (413, "TOO_LARGE"));
    assert_eq!(c.get(&loc).await.header("range"), Some(&*format!("0-{}", 40 * 1024 - 1)), "kept as it was");
    // Up to the limit exactly is fine.
    let mut blob = vec![1u8; 40 * 1024];
    blob.extend(vec![3u8; 24 * 1024]);
    let d = Digest::sha256_of(&blob);
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = c.req_chunked("PUT", &format!("{loc}{sep}digest={d}"), &[], vec![Bytes::from(vec![3u8; 24 * 1024])]).await;
    assert_eq!(r.status, 201);
    assert_eq!(c.get(&format!("/v2/team/app/blobs/{d}")).await.body.len(), 64 * 1024);
    s.stop().await;
}

#[actix_rt::test]
async fn slow_clients_are_cut_off_and_idle_connections_closed() {
    let s = TestServer::start_with(|c| {
        c.mirror.enabled = false;
        c.server.header_timeout = Duration::from_secs(1);
        c.server.keep_alive = Duration::from_secs(1);
        c.server.body_min_rate = bytesize::ByteSize::kib(1);
    })
    .await;
    let addr = s.base.trim_start_matches("http://").to_string();

    // Headers one byte at a time: the connection is answered 408 and closed after header_timeout.
    let a = addr.clone();
    let (reply, took) = blocking(move || {
        let mut sock = TcpStream::connect(&a).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let started = Instant::now();
        for b in b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: ".iter().cycle() {
            if sock.write_all(&[*b]).is_err() || started.elapsed() > Duration::from_secs(20) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut reply = Vec::new();
        let _ = sock.read_to_end(&mut reply);
        (String::from_utf8_lossy(&reply).into_owned(), started.elapsed())
    })
    .await;
    assert!(reply.is_empty() || reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(took < Duration::from_secs(3), "a slow head held its connection for {took:?}");

    // A body at 100 bytes a second, under the 1 KiB/s minimum: 408 once a rate window has passed.
    let loc =
        s.client().req("POST", "/v2/team/app/blobs/uploads/", &[], "").await.header("location").unwrap().to_string();
    let (a, l) = (addr.clone(), loc.clone());
    let (reply, took) = blocking(move || {
        let mut sock = TcpStream::connect(&a).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(sock, "PATCH {l} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n").unwrap();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(40) {
            if sock.write_all(&[b'z'; 10]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            // The answer may come while we are still writing.
            sock.set_nonblocking(true).unwrap();
            let mut peek = [0u8; 1];
            let answered = matches!(sock.peek(&mut peek), Ok(n) if n > 0);
            sock.set_nonblocking(false).unwrap();
            if answered {
                break;
            }
        }
        let mut reply = Vec::new();
        let _ = sock.read_to_end(&mut reply);
        (String::from_utf8_lossy(&reply).into_owned(), started.elapsed())
    })
    .await;
    assert!(reply.starts_with("HTTP/1.1 408") && reply.contains("REQUEST_TIMEOUT"), "{reply}");
    assert!(took < Duration::from_secs(15), "a trickling body held its connection for {took:?}");
    // (A fresh client each time: the server closes idle connections after a second here.)
    assert_eq!(s.client().get(&loc).await.header("range"), Some("0-0"), "the trickled chunk was rolled back");

    // Keep-alive: an idle connection is closed after keep_alive.
    let a = addr.clone();
    let took = blocking(move || {
        let mut sock = TcpStream::connect(&a).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        sock.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let started = Instant::now();
        let mut reply = Vec::new();
        let _ = sock.read_to_end(&mut reply); // returns at EOF: the server closed it
        assert!(String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 200"));
        started.elapsed()
    })
    .await;
    assert!(took < Duration::from_secs(3), "an idle keep-alive connection stayed open {took:?}");
    assert_eq!(s.client().get("/v2/").await.status, 200);
    s.stop().await;
}

/// A status read (`GET` of the upload) answers at once while a chunk of the
/// same session is stalled mid-body: it does not queue behind the writer.
#[actix_rt::test]
async fn an_upload_status_does_not_wait_for_a_stalled_chunk() {
    let s = TestServer::start_with(|c| {
        c.mirror.enabled = false;
        c.server.body_timeout = Duration::from_secs(60);
        c.server.body_min_rate = bytesize::ByteSize::b(0);
    })
    .await;
    let addr = s.base.trim_start_matches("http://").to_string();
    let c = s.client();
    let loc = c.req("POST", "/v2/team/app/blobs/uploads/", &[], "").await.header("location").unwrap().to_string();
    let id = loc.rsplit('/').next().unwrap().split('?').next().unwrap().to_string();
    assert_eq!(c.req("PATCH", &loc, &[], vec![7u8; 100]).await.status, 202);
    // A second chunk: its head and 10 of its 1000 bytes, then nothing.
    let mut sock = TcpStream::connect(&addr).unwrap();
    write!(sock, "PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Range: 100-1099\r\nContent-Length: 1000\r\n\r\n").unwrap();
    sock.write_all(&[8u8; 10]).unwrap();
    // The server holds the session once it has written those 10 bytes.
    let data = format!("docker/registry/v2/repositories/team/app/_uploads/{id}/data");
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.size(&data).await != Some(110) {
        assert!(Instant::now() < deadline, "the stalled chunk's bytes never arrived");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let r = c.get(&loc).await;
    assert_eq!((r.status, r.header("range")), (204, Some("0-99")), "the size before the chunk in flight");
    assert!(started.elapsed() < Duration::from_secs(10), "the status waited {:?}", started.elapsed());
    sock.set_nonblocking(true).unwrap();
    let mut peek = [0u8; 1];
    assert!(sock.peek(&mut peek).is_err(), "the stalled PATCH is still open, unanswered");
    drop(sock);
    s.stop().await;
}
