//! A fake upstream registry for mirror tests: serves manifests and blobs
//! from memory, records every request, and can require bearer tokens or
//! basic auth, corrupt a blob, hold a blob body half-sent until released,
//! hold token requests, send blobs without Content-Length, or answer
//! every registry request (or only manifest GETs, or token requests) with a
//! fixed status. It answers the referrers API (or, as an older registry
//! would, 404 to it) from the manifests it holds.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine as _;
use bytes::Bytes;
use serde_json::json;

use super::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

#[derive(Clone, Debug, PartialEq)]
pub enum Auth {
    Anonymous,
    /// Bearer tokens from `/token`; `realm` overrides the advertised realm URL.
    Token {
        realm: Option<String>,
    },
    Basic {
        user: String,
        password: String,
    },
}

#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    /// Answered with 401 (an auth round trip, not a served request).
    pub challenged: bool,
}

pub struct State {
    pub manifests: HashMap<(String, String), (String, Bytes)>,
    pub blobs: HashMap<String, Bytes>,
    /// Which repositories hold each blob (a blob is served only in those).
    pub blob_repos: HashMap<String, HashSet<String>>,
    pub corrupt: HashSet<String>,
    pub auth: Auth,
    pub seen: Vec<Seen>,
    pub valid_tokens: HashSet<String>,
    pub tokens_issued: usize,
    /// Every `/v2/` request answers this status (and Retry-After) when set.
    pub fail_with: Option<(u16, Option<String>)>,
    /// Manifest GETs (not HEADs) answer this status (and Retry-After) when set.
    pub fail_manifest_gets: Option<(u16, Option<String>)>,
    /// The token endpoint answers this status (and Retry-After) when set.
    pub fail_tokens: Option<(u16, Option<String>)>,
    /// When set, token requests wait for a permit before they are answered.
    pub token_gate: Option<Arc<tokio::sync::Semaphore>>,
    /// Blob bodies are sent without Content-Length (chunked).
    pub no_content_length: bool,
    /// When set, blob bodies stop after their first chunk until a permit is added.
    pub gate: Option<Arc<tokio::sync::Semaphore>>,
    /// Docker Hub's rate limit: (limit, remaining, window seconds). Manifest
    /// responses report it; each manifest GET (not HEAD) spends one.
    pub ratelimit: Option<(i64, i64, u64)>,
    /// Whether `/v2/<name>/referrers/<digest>` is answered (else 404, as
    /// Distribution 2.8 does: clients then use the referrers tag schema).
    pub referrers_api: bool,
    pub url: String,
}

pub struct FakeUpstream {
    pub url: String,
    /// The same server on 127.0.0.2: "another host" for realm checks.
    pub foreign_url: String,
    pub state: Arc<Mutex<State>>,
    handle: ServerHandle,
}

/// One image: its manifest digest and bytes, and its blob digests.
#[derive(Clone)]
pub struct Image {
    pub digest: Digest,
    pub manifest: Bytes,
    pub config: Digest,
    pub layers: Vec<Digest>,
}

impl FakeUpstream {
    pub async fn start(auth: Auth) -> FakeUpstream {
        let state = Arc::new(Mutex::new(State {
            manifests: HashMap::new(),
            blobs: HashMap::new(),
            blob_repos: HashMap::new(),
            corrupt: HashSet::new(),
            auth,
            seen: vec![],
            valid_tokens: HashSet::new(),
            tokens_issued: 0,
            fail_with: None,
            fail_manifest_gets: None,
            fail_tokens: None,
            token_gate: None,
            no_content_length: false,
            gate: None,
            ratelimit: None,
            referrers_api: true,
            url: String::new(),
        }));
        let data = web::Data::from(state.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let foreign = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
        let foreign_url = format!("http://{}", foreign.local_addr().unwrap());
        state.lock().unwrap().url = url.clone();
        let server = HttpServer::new(move || App::new().app_data(data.clone()).default_service(web::to(handle)))
            .workers(1)
            .shutdown_timeout(1)
            .listen(listener)
            .unwrap()
            .listen(foreign)
            .unwrap()
            .run();
        let handle = server.handle();
        actix_rt::spawn(server);
        FakeUpstream { url, foreign_url, state, handle }
    }

    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Adds an OCI index under `repo:tag` over images already added, with their platforms (`os/arch`).
    pub fn add_index(&self, repo: &str, tag: &str, images: &[(&Image, &str)]) -> Digest {
        let manifests: Vec<_> = images
            .iter()
            .map(|(img, platform)| {
                let (os, arch) = platform.split_once('/').unwrap();
                json!({"mediaType": OCI_MANIFEST, "digest": img.digest.to_string(), "size": img.manifest.len(),
                       "platform": {"os": os, "architecture": arch}})
            })
            .collect();
        let index = Bytes::from(
            serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})).unwrap(),
        );
        let digest = Digest::sha256_of(&index);
        let mut s = self.state();
        for reference in [tag.to_string(), digest.to_string()] {
            s.manifests.insert((repo.to_string(), reference), (OCI_INDEX.to_string(), index.clone()));
        }
        digest
    }

    /// Adds blobs and an OCI image manifest under `repo:tag`.
    pub fn add_image(&self, repo: &str, tag: &str, layers: &[Bytes]) -> Image {
        let config = Bytes::from(format!(r#"{{"architecture":"amd64","os":"linux","tag":"{tag}"}}"#));
        let config_d = Digest::sha256_of(&config);
        let layer_ds: Vec<Digest> = layers.iter().map(|l| Digest::sha256_of(l)).collect();
        let manifest = Bytes::from(
            serde_json::to_vec(&json!({
                "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_d.to_string(), "size": config.len()},
                "layers": layers.iter().zip(&layer_ds).map(|(l, d)| json!({
                    "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d.to_string(), "size": l.len()})).collect::<Vec<_>>(),
            }))
            .unwrap(),
        );
        let digest = Digest::sha256_of(&manifest);
        let mut s = self.state();
        s.blobs.insert(config_d.to_string(), config);
        s.blob_repos.entry(config_d.to_string()).or_default().insert(repo.to_string());
        for (l, d) in layers.iter().zip(&layer_ds) {
            s.blobs.insert(d.to_string(), l.clone());
            s.blob_repos.entry(d.to_string()).or_default().insert(repo.to_string());
        }
        for reference in [tag.to_string(), digest.to_string()] {
            s.manifests.insert((repo.to_string(), reference), (OCI_MANIFEST.to_string(), manifest.clone()));
        }
        Image { digest, manifest, config: config_d, layers: layer_ds }
    }

    /// Adds an artifact referring to `subject` (by digest only, as a client
    /// of the referrers API pushes it): one layer, `payload`.
    pub fn add_artifact(&self, repo: &str, subject: &Digest, artifact_type: &str, payload: &[u8]) -> (Digest, Bytes) {
        let subject_body = self.state().manifests.get(&(repo.to_string(), subject.to_string())).unwrap().1.clone();
        let layer = Digest::sha256_of(payload);
        let manifest = Bytes::from(
            serde_json::to_vec(&json!({
                "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
                "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": Digest::sha256_of(b"{}").to_string(), "size": 2},
                "layers": [{"mediaType": "application/octet-stream", "digest": layer.to_string(), "size": payload.len()}],
                "subject": {"mediaType": OCI_MANIFEST, "digest": subject.to_string(), "size": subject_body.len()},
                "annotations": {"org.example.kind": artifact_type},
            }))
            .unwrap(),
        );
        let digest = Digest::sha256_of(&manifest);
        let mut s = self.state();
        for (d, body) in
            [(layer, Bytes::copy_from_slice(payload)), (Digest::sha256_of(b"{}"), Bytes::from_static(b"{}"))]
        {
            s.blobs.insert(d.to_string(), body);
            s.blob_repos.entry(d.to_string()).or_default().insert(repo.to_string());
        }
        s.manifests.insert((repo.to_string(), digest.to_string()), (OCI_MANIFEST.to_string(), manifest.clone()));
        (digest, manifest)
    }

    /// Tags an index of `artifacts` (added with `add_artifact`) as
    /// `sha256-<hex>` of `subject`: the referrers tag schema.
    pub fn add_referrers_tag(&self, repo: &str, subject: &Digest, artifacts: &[(Digest, Bytes)]) {
        let manifests: Vec<_> = artifacts
            .iter()
            .map(|(d, body)| {
                let v: serde_json::Value = serde_json::from_slice(body).unwrap();
                json!({"mediaType": OCI_MANIFEST, "digest": d.to_string(), "size": body.len(), "artifactType": v["artifactType"]})
            })
            .collect();
        let index =
            serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})).unwrap();
        let tag = subject.to_string().replacen(':', "-", 1);
        self.state().manifests.insert((repo.to_string(), tag), (OCI_INDEX.to_string(), Bytes::from(index)));
    }

    /// Requests served (not answered with an auth challenge) whose method
    /// is `method` and whose path contains `part`.
    pub fn count(&self, method: &str, part: &str) -> usize {
        self.state().seen.iter().filter(|s| !s.challenged && s.method == method && s.path.contains(part)).count()
    }

    /// Requests to the registry API (`/v2/…` other than the base).
    pub fn api_requests(&self) -> usize {
        self.state().seen.iter().filter(|s| s.path.starts_with("/v2/") && s.path.len() > 4).count()
    }

    pub fn token_requests(&self) -> Vec<Seen> {
        self.state().seen.iter().filter(|s| s.path.starts_with("/token")).cloned().collect()
    }
}

fn failing(status: u16, retry_after: Option<String>) -> HttpResponse {
    let mut r = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
    if let Some(ra) = retry_after {
        r.insert_header(("Retry-After", ra));
    }
    r.json(json!({"errors": [{"code": "TOOMANYREQUESTS", "message": "failing on purpose"}]}))
}

fn challenge(s: &State, name: &str) -> HttpResponse {
    let mut r = HttpResponse::Unauthorized();
    match &s.auth {
        Auth::Token { realm } => {
            let realm = realm.clone().unwrap_or_else(|| format!("{}/token", s.url));
            r.insert_header((
                "WWW-Authenticate",
                format!(r#"Bearer realm="{realm}",service="fake",scope="repository:{name}:pull""#),
            ));
        }
        Auth::Basic { .. } => {
            r.insert_header(("WWW-Authenticate", r#"Basic realm="fake""#));
        }
        Auth::Anonymous => {}
    }
    r.json(json!({"errors": [{"code": "UNAUTHORIZED", "message": "auth required"}]}))
}

fn authorized(s: &State, header: Option<&str>) -> bool {
    match &s.auth {
        Auth::Anonymous => true,
        Auth::Token { .. } => {
            header.and_then(|h| h.strip_prefix("Bearer ")).is_some_and(|t| s.valid_tokens.contains(t))
        }
        Auth::Basic { user, password } => {
            let expected =
                format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")));
            header == Some(expected.as_str())
        }
    }
}

async fn handle(req: HttpRequest, state: web::Data<Mutex<State>>) -> HttpResponse {
    let authorization = req.headers().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
    let path = req.path().to_string();
    let method = req.method().to_string();
    if path == "/token" {
        let gate = state.lock().unwrap().token_gate.clone();
        if let Some(gate) = gate {
            gate.acquire().await.unwrap().forget();
        }
    }
    let mut s = state.lock().unwrap();
    s.seen.push(Seen {
        method: method.clone(),
        path: path.clone(),
        authorization: authorization.clone(),
        challenged: false,
    });

    if path == "/token" {
        if let Some((status, retry_after)) = s.fail_tokens.clone() {
            return failing(status, retry_after);
        }
        s.tokens_issued += 1;
        let token = format!("token-{}", s.tokens_issued);
        s.valid_tokens.insert(token.clone());
        return HttpResponse::Ok().json(json!({"token": token, "expires_in": 300}));
    }
    let Some(rest) = path.strip_prefix("/v2/") else { return HttpResponse::NotFound().finish() };
    if rest.is_empty() {
        return HttpResponse::Ok().json(json!({}));
    }
    let (name, kind, reference) = match (rest.rfind("/manifests/"), rest.rfind("/blobs/"), rest.rfind("/referrers/")) {
        (Some(i), _, _) => (&rest[..i], "manifests", &rest[i + 11..]),
        (None, Some(i), _) => (&rest[..i], "blobs", &rest[i + 7..]),
        (None, None, Some(i)) => (&rest[..i], "referrers", &rest[i + 11..]),
        _ => return HttpResponse::NotFound().finish(),
    };
    if let Some((status, retry_after)) = s.fail_with.clone() {
        return failing(status, retry_after);
    }
    if !authorized(&s, authorization.as_deref()) {
        s.seen.last_mut().unwrap().challenged = true;
        return challenge(&s, name);
    }
    let not_found =
        |code: &str| HttpResponse::NotFound().json(json!({"errors": [{"code": code, "message": "unknown"}]}));
    if kind == "referrers" {
        if !s.referrers_api {
            return HttpResponse::NotFound().finish();
        }
        let mut found: Vec<serde_json::Value> = s
            .manifests
            .iter()
            .filter(|((repo, r), _)| repo == name && r.starts_with("sha256:"))
            .filter_map(|((_, r), (mt, body))| {
                let v: serde_json::Value = serde_json::from_slice(body).ok()?;
                (v["subject"]["digest"] == reference).then(|| {
                    let artifact_type = if v["artifactType"].is_null() {
                        v["config"]["mediaType"].clone()
                    } else {
                        v["artifactType"].clone()
                    };
                    json!({"mediaType": mt, "digest": r, "size": body.len(), "artifactType": artifact_type})
                })
            })
            .collect();
        found.sort_by_key(|v| v["digest"].as_str().unwrap().to_string());
        return HttpResponse::Ok()
            .content_type(OCI_INDEX)
            .json(json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": found}));
    }
    if kind == "manifests" {
        if let (Some((status, retry_after)), "GET") = (s.fail_manifest_gets.clone(), method.as_str()) {
            return failing(status, retry_after);
        }
        let Some((mt, body)) = s.manifests.get(&(name.to_string(), reference.to_string())).cloned() else {
            return not_found("MANIFEST_UNKNOWN");
        };
        let mut resp = HttpResponse::Ok();
        if let Some((limit, remaining, window)) = &mut s.ratelimit {
            if method == "GET" {
                *remaining -= 1;
            }
            resp.insert_header(("ratelimit-limit", format!("{limit};w={window}")));
            resp.insert_header(("ratelimit-remaining", format!("{remaining};w={window}")));
        }
        return resp
            .content_type(mt)
            .insert_header(("Docker-Content-Digest", Digest::sha256_of(&body).to_string()))
            .body(body);
    }
    let in_repo = s.blob_repos.get(reference).is_some_and(|repos| repos.contains(name));
    let Some(mut body) = s.blobs.get(reference).cloned().filter(|_| in_repo) else {
        return not_found("BLOB_UNKNOWN");
    };
    if s.corrupt.contains(reference) {
        let mut v = body.to_vec();
        v[0] ^= 0xff;
        body = Bytes::from(v);
    }
    if method == "HEAD" {
        return HttpResponse::Ok().insert_header(("Docker-Content-Digest", reference.to_string())).body(
            actix_web::body::SizedStream::new(
                body.len() as u64,
                futures::stream::empty::<Result<Bytes, std::io::Error>>(),
            ),
        );
    }
    let gate = s.gate.clone();
    let sized = !s.no_content_length;
    drop(s);
    let len = body.len() as u64;
    let chunks: Vec<Bytes> = body.chunks(256 * 1024).map(Bytes::copy_from_slice).collect();
    let stream = futures::stream::unfold((chunks.into_iter(), 0usize, gate), |(mut it, i, gate)| async move {
        let chunk = it.next()?;
        if i == 1 {
            if let Some(g) = &gate {
                g.acquire().await.unwrap().forget();
            }
        }
        Some((Ok::<_, std::io::Error>(chunk), (it, i + 1, gate)))
    });
    if sized {
        HttpResponse::Ok().body(actix_web::body::SizedStream::new(len, stream))
    } else {
        HttpResponse::Ok().streaming(stream)
    }
}

/// A raw HTTP/1.1 front for a `FakeUpstream` that sends blob bodies the
/// oldest way HTTP allows: no Content-Length, no chunked encoding, the body
/// ending where the connection closes (what some proxies send). Every other
/// request is passed to the fake upstream as it came. Stopped when dropped.
pub struct CloseDelimitedFront {
    pub url: String,
    addr: std::net::SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CloseDelimitedFront {
    /// In front of `up`; `say_close` adds `Connection: close` to the blob answers.
    pub fn start(up: &FakeUpstream, say_close: bool) -> CloseDelimitedFront {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream: std::net::SocketAddr = up.url.trim_start_matches("http://").parse().unwrap();
        let (state, stop) = (up.state.clone(), Arc::new(std::sync::atomic::AtomicBool::new(false)));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let state = state.clone();
                std::thread::spawn(move || {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match conn.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let text = String::from_utf8_lossy(&head).to_string();
                    let mut words = text.split_whitespace();
                    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                    let blob = path.split_once("/blobs/").map(|(_, d)| d.to_string());
                    if let (true, Some(d)) = (method == "GET", blob) {
                        let body = state.lock().unwrap().blobs.get(&d).cloned();
                        let Some(body) = body else {
                            let _ = conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                            return;
                        };
                        let close = if say_close { "Connection: close\r\n" } else { "" };
                        let head = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nDocker-Content-Digest: {d}\r\n{close}\r\n"
                        );
                        let _ = conn.write_all(head.as_bytes());
                        for part in body.chunks(64 * 1024) {
                            if conn.write_all(part).is_err() {
                                return;
                            }
                        }
                        return; // the close ends the body
                    }
                    // Passed through, one request per connection.
                    let Ok(mut up) = std::net::TcpStream::connect(upstream) else { return };
                    let forwarded = text.replacen("\r\n", "\r\nConnection: close\r\n", 1);
                    let mut answer = Vec::new();
                    if up.write_all(forwarded.as_bytes()).is_ok() && up.read_to_end(&mut answer).is_ok() {
                        let _ = conn.write_all(&answer);
                    }
                });
            }
        });
        CloseDelimitedFront { url: format!("http://{addr}"), addr, stop, thread: Some(thread) }
    }
}

impl Drop for CloseDelimitedFront {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
