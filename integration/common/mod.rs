//! Shared test harness: berth in-process on a free loopback port with a temp
//! data directory, and a small HTTP client for it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use actix_web::dev::ServerHandle;
use awc::http::Method;
use bytes::Bytes;

pub use berth::config::Config;
pub use berth::oci::Digest;

pub mod azure;
pub mod browser;
pub mod certs;
pub mod faults;
pub mod images;
pub mod mirroring;
pub mod procs;
pub mod receiver;
pub mod s3;
pub mod signing;
pub mod tokens;
pub mod upstream;
pub mod webdriver;

pub struct TestServer {
    pub base: String,
    handle: ServerHandle,
    dir: tempfile::TempDir,
    /// The server's storage, for the test to look into (`has`, `read`, …).
    storage: std::sync::Arc<dyn berth::store::Backend>,
}

/// The object store this test binary runs its suite over, if any: the
/// `*_s3` (SeaweedFS) and `*_azure` (Azurite) targets in Cargo.toml are the
/// suites' files under other names.
pub fn object_store() -> Option<&'static str> {
    static ON: std::sync::OnceLock<Option<&'static str>> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_name().unwrap().to_string_lossy().into_owned();
        let stem = name.split_once('-').map_or(name.as_str(), |(stem, _)| stem).to_string();
        ["s3", "azure"].into_iter().find(|kind| stem.ends_with(&format!("_{kind}")))
    })
}

/// Whether this test binary runs its suite over an object store.
pub fn on_object_store() -> bool {
    object_store().is_some()
}

/// On an object store, each data directory has its own prefix in the shared
/// bucket (or container), kept in the directory so a restart finds it.
fn object_storage(dir: &Path, cfg: &mut berth::config::StorageConfig) {
    if !on_object_store() {
        return;
    }
    let file = dir.join(".test-object-prefix");
    let prefix = std::fs::read_to_string(&file).unwrap_or_else(|_| {
        let p = format!("t-{}", uuid::Uuid::new_v4().simple());
        std::fs::write(&file, &p).unwrap();
        p
    });
    match object_store() {
        Some("s3") => cfg.s3 = Some(s3::shared().config("berth", &prefix)),
        Some(_) => cfg.azure = Some(azure::shared().config("berth", &prefix)),
        None => {}
    }
}

impl TestServer {
    /// A plain private registry (mirroring off, as `berth serve --no-mirror`).
    pub async fn start() -> Self {
        Self::start_with(|c| c.mirror.enabled = false).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, tweak).await
    }

    /// Starts on an existing data directory (which the server then owns).
    pub async fn start_in(dir: tempfile::TempDir, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_over(dir, None, tweak).await
    }

    /// Starts over a storage backend of the test's (a fault-injecting double
    /// over `dir`).
    pub async fn start_with_backend(
        dir: tempfile::TempDir,
        backend: std::sync::Arc<dyn berth::store::Backend>,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        Self::start_over(dir, Some(backend), tweak).await
    }

    async fn start_over(
        dir: tempfile::TempDir,
        backend: Option<std::sync::Arc<dyn berth::store::Backend>>,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        // Warnings and errors of the server go to the failing test's output.
        let _ = tracing_subscriber::fmt().with_env_filter("warn").with_test_writer().try_init();
        let mut cfg = Config::default();
        cfg.server.listen = "127.0.0.1:0".into();
        // More than one worker, as in production: requests of one test meet
        // each other on different threads.
        cfg.server.workers = 2;
        cfg.server.shutdown_timeout = std::time::Duration::from_secs(1);
        cfg.storage.root = dir.path().to_path_buf();
        if backend.is_none() {
            object_storage(dir.path(), &mut cfg.storage);
        }
        tweak(&mut cfg);
        let storage = match &backend {
            Some(b) => b.clone(),
            None => berth::backend(&cfg).unwrap(),
        };
        let bound = match backend {
            Some(b) => berth::bind_with(&cfg, b).unwrap(),
            None => berth::bind(&cfg).unwrap(),
        };
        let handle = bound.server.handle();
        actix_rt::spawn(bound.server);
        TestServer { base: format!("http://{}", bound.addr), handle, dir, storage }
    }

    /// Whether the storage holds a file at `rel` (a path of `berth::store::layout`).
    pub async fn has(&self, rel: &str) -> bool {
        self.storage.stat(rel).await.unwrap().is_some()
    }

    /// The file at `rel`, if the storage holds it.
    pub async fn read(&self, rel: &str) -> Option<Bytes> {
        self.storage.get(rel).await.unwrap()
    }

    /// The size of the file at `rel`, if the storage holds it.
    pub async fn size(&self, rel: &str) -> Option<u64> {
        self.storage.stat(rel).await.unwrap()
    }

    /// Names under directory `rel` that still hold something.
    pub async fn entries(&self, rel: &str) -> Vec<String> {
        let mut out = vec![];
        for name in self.storage.list(rel).await.unwrap() {
            let path = format!("{rel}/{name}");
            if self.storage.stat(&path).await.unwrap().is_some() || self.storage.has_children(&path).await.unwrap() {
                out.push(name);
            }
        }
        out
    }

    /// Waits (bounded) until the storage holds `rel`: clients are served
    /// once bytes are verified, and the files land just after.
    pub async fn wait_for(&self, rel: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !self.has(rel).await {
            assert!(std::time::Instant::now() < deadline, "{rel} never appeared");
            actix_rt::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    pub fn data(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Stops the server and hands back its data directory.
    pub async fn stop(self) -> tempfile::TempDir {
        self.handle.stop(true).await;
        self.dir
    }

    pub fn client(&self) -> Client {
        Client::new(&self.base)
    }
}

pub struct Client {
    pub base: String,
    http: awc::Client,
}

impl Client {
    /// A client of the server at `base` (`http://host:port`).
    pub fn new(base: &str) -> Client {
        Client { base: base.to_string(), http: awc::Client::builder().disable_timeout().finish() }
    }

    /// A client that sends `authorization` with every request.
    pub fn authorized(base: &str, authorization: &str) -> Client {
        let http = awc::Client::builder()
            .disable_timeout()
            .add_default_header(("Authorization", authorization.to_string()))
            .finish();
        Client { base: base.to_string(), http }
    }
}

/// A response read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: awc::http::header::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("not JSON ({e}): {:?} ({} bytes)", &self.body[..self.body.len().min(200)], self.body.len())
        })
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The first OCI error code of the body.
    pub fn code(&self) -> String {
        self.json()["errors"][0]["code"].as_str().unwrap_or_default().to_string()
    }
}

impl Client {
    pub async fn req(&self, method: &str, path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Resp {
        self.try_req(method, path, headers, body).await.unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// `req`, with a connection that fails (a server that went away) as an error.
    pub async fn try_req(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Resp, String> {
        let url = if path.starts_with("http") { path.to_string() } else { format!("{}{path}", self.base) };
        let mut r = self.http.request(Method::from_bytes(method.as_bytes()).unwrap(), url);
        for (k, v) in headers {
            r = r.insert_header((*k, *v));
        }
        let mut resp = r.send_body(body.into()).await.map_err(|e| format!("request failed: {e}"))?;
        let body = resp.body().limit(1 << 30).await.map_err(|e| format!("body failed: {e}"))?;
        Ok(Resp { status: resp.status().as_u16(), headers: resp.headers().clone(), body })
    }

    /// GETs `path`, hashing the body as it streams (large blobs never sit in
    /// memory); returns the status, the body's sha256 and its length.
    pub async fn get_hashed(&self, path: &str) -> Result<(u16, Digest, u64), String> {
        use futures::StreamExt;
        let mut resp = self.http.get(format!("{}{path}", self.base)).send().await.map_err(|e| e.to_string())?;
        let mut h = berth::oci::Algorithm::Sha256.hasher();
        let mut n = 0u64;
        while let Some(chunk) = resp.next().await {
            let chunk = chunk.map_err(|e| e.to_string())?;
            h.update(&chunk);
            n += chunk.len() as u64;
        }
        Ok((resp.status().as_u16(), h.finish(), n))
    }

    /// Sends a request whose body is streamed chunked (no Content-Length).
    pub async fn req_chunked(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Vec<Bytes>) -> Resp {
        let mut r = self.http.request(Method::from_bytes(method.as_bytes()).unwrap(), format!("{}{path}", self.base));
        for (k, v) in headers {
            r = r.insert_header((*k, *v));
        }
        let stream = futures::stream::iter(body.into_iter().map(Ok::<_, std::io::Error>));
        let mut resp = r.send_stream(stream).await.expect("request failed");
        let body = resp.body().limit(1 << 30).await.expect("body failed");
        Resp { status: resp.status().as_u16(), headers: resp.headers().clone(), body }
    }

    /// GETs `path` over a plain socket and reports whether the body arrived
    /// whole by HTTP/1.1's own framing (all `Content-Length` bytes, or the
    /// closing chunk): awc takes a connection closed early for a clean end,
    /// so a test of a response cut short needs this. Returns (status, body, complete).
    pub async fn get_framed(&self, path: &str) -> (u16, Vec<u8>, bool) {
        let addr = self.base.trim_start_matches("http://").to_string();
        let path = path.to_string();
        actix_rt::task::spawn_blocking(move || raw_get(&addr, &path)).await.unwrap()
    }

    /// Starts a GET and returns the response with its body unread.
    pub async fn get_streaming(&self, path: &str) -> awc::ClientResponse {
        self.http.get(format!("{}{path}", self.base)).send().await.expect("request failed")
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.req("GET", path, &[], Bytes::new()).await
    }

    /// Pushes a blob monolithically; returns its digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> Digest {
        let d = Digest::sha256_of(data);
        let r = self.req("POST", &format!("/v2/{repo}/blobs/uploads/?digest={d}"), &[], data.to_vec()).await;
        assert_eq!(r.status, 201, "push blob: {:?}", r.body);
        d
    }

    /// Pushes a blob in two steps (POST, then PUT to the upload's Location),
    /// as registries without single-request uploads (Distribution 2.8) take it.
    pub async fn push_blob_two_step(&self, repo: &str, data: &[u8]) -> Digest {
        let d = Digest::sha256_of(data);
        let r = self.req("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], Bytes::new()).await;
        assert_eq!(r.status, 202, "start upload: {:?}", r.body);
        let location = r.header("location").unwrap().to_string();
        let sep = if location.contains('?') { '&' } else { '?' };
        let path = match location.find("/v2/") {
            Some(i) => location[i..].to_string(),
            None => location,
        };
        let r = self.req("PUT", &format!("{path}{sep}digest={d}"), &[], data.to_vec()).await;
        assert_eq!(r.status, 201, "finish upload: {:?}", r.body);
        d
    }

    /// Pushes a manifest; returns the response.
    pub async fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> Resp {
        self.req("PUT", &format!("/v2/{repo}/manifests/{reference}"), &[("Content-Type", media_type)], body.to_vec())
            .await
    }

    /// Pushes a config and one layer, then an OCI image manifest under `tag`;
    /// returns (manifest bytes, manifest digest).
    pub async fn push_image(&self, repo: &str, tag: &str, layer: &[u8]) -> (Vec<u8>, Digest) {
        let config = self.push_blob(repo, b"{}").await;
        let layer_d = self.push_blob(repo, layer).await;
        let m = image_manifest(&config, 2, &layer_d, layer.len());
        let r = self.put_manifest(repo, tag, OCI_MANIFEST, &m).await;
        assert_eq!(r.status, 201, "push manifest: {:?}", r.body);
        let d = Digest::sha256_of(&m);
        (m, d)
    }
}

fn raw_get(addr: &str, path: &str) -> (u16, Vec<u8>, bool) {
    use std::io::{Read, Write};
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    write!(sock, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    let _ = sock.read_to_end(&mut raw);
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("response headers");
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let mut rest = &raw[split + 4..];
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let header = |name: &str| head.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()));
    if let Some(len) = header("content-length:") {
        let len: usize = len.parse().unwrap();
        return (status, rest.to_vec(), rest.len() == len);
    }
    assert_eq!(header("transfer-encoding:").as_deref(), Some("chunked"), "{head}");
    let mut body = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else { return (status, body, false) };
        let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..eol]).trim(), 16).unwrap();
        rest = &rest[eol + 2..];
        if size == 0 {
            return (status, body, rest.starts_with(b"\r\n"));
        }
        if rest.len() < size + 2 {
            body.extend_from_slice(&rest[..rest.len().min(size)]);
            return (status, body, false);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// The README's ```toml example whose first line starts with `heading`, as shown.
pub fn readme_toml(heading: &str) -> String {
    let readme = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    readme
        .split("```toml\n")
        .map(|b| b.split("```").next().unwrap())
        .find(|b| b.starts_with(heading))
        .unwrap_or_else(|| panic!("the README's example {heading:?}"))
        .to_string()
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

pub fn image_manifest(config: &Digest, config_size: usize, layer: &Digest, layer_size: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": config_size },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer.to_string(), "size": layer_size }]
    }))
    .unwrap()
}
