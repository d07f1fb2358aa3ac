//! An external token issuer for tests: keys and certificates made with
//! openssl, tokens signed with ring (ES256 with a P-256 key, RS256 with an
//! RSA key), each naming its key by libtrust `kid` or carrying its `x5c`
//! chain, and a realm that hands them out as a token server does.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;

use std::time::Duration;

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, RsaKeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};

use super::procs::run;

pub const ISSUER: &str = "test-issuer";
pub const SERVICE: &str = "test-registry";

fn b64url(v: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

fn pkcs8(key: &Path) -> Vec<u8> {
    let pem = std::fs::read(key).unwrap();
    PrivatePkcs8KeyDer::from_pem_slice(&pem)
        .unwrap_or_else(|e| panic!("{}: {e}", key.display()))
        .secret_pkcs8_der()
        .to_vec()
}

fn cert_der(cert: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(cert).unwrap().to_vec()
}

/// The libtrust key id of a certificate's public key.
fn kid_of(cert: &Path) -> String {
    let out = Command::new("openssl").args(["x509", "-noout", "-pubkey", "-in"]).arg(cert).output().unwrap();
    let spki = rustls::pki_types::SubjectPublicKeyInfoDer::from_pem_slice(&out.stdout).unwrap();
    berth::jwt::libtrust_key_id(spki.as_ref())
}

enum Pair {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A signing key, and how its tokens name it.
pub struct Signer {
    pair: Pair,
    kid: Option<String>,
    x5c: Option<Vec<String>>,
}

impl Signer {
    /// ES256 with `key` (PKCS#8 PEM, P-256), named by `cert`'s libtrust id.
    pub fn es256_kid(key: &Path, cert: &Path) -> Signer {
        let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pair = EcdsaKeyPair::from_pkcs8(alg, &pkcs8(key), &SystemRandom::new()).unwrap();
        Signer { pair: Pair::Ec(pair), kid: Some(kid_of(cert)), x5c: None }
    }

    /// ES256 with `key`, carrying `cert` (and nothing else) as its x5c chain.
    pub fn es256_x5c(key: &Path, cert: &Path) -> Signer {
        let mut s = Signer::es256_kid(key, cert);
        s.kid = None;
        s.x5c = Some(vec![base64::engine::general_purpose::STANDARD.encode(cert_der(cert))]);
        s
    }

    /// RS256 with `key` (PKCS#8 PEM, RSA), named by `cert`'s libtrust id.
    pub fn rs256_kid(key: &Path, cert: &Path) -> Signer {
        let pair = RsaKeyPair::from_pkcs8(&pkcs8(key)).unwrap();
        Signer { pair: Pair::Rsa(pair), kid: Some(kid_of(cert)), x5c: None }
    }

    /// A token with `claims`, signed.
    pub fn sign(&self, claims: &Value) -> String {
        let alg = match self.pair {
            Pair::Ec(_) => "ES256",
            Pair::Rsa(_) => "RS256",
        };
        let mut header = json!({"typ": "JWT", "alg": alg});
        if let Some(kid) = &self.kid {
            header["kid"] = kid.clone().into();
        }
        if let Some(x5c) = &self.x5c {
            header["x5c"] = x5c.clone().into();
        }
        let signed = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
        let sig = match &self.pair {
            Pair::Ec(p) => p.sign(&SystemRandom::new(), signed.as_bytes()).unwrap().as_ref().to_vec(),
            Pair::Rsa(p) => {
                let mut sig = vec![0; p.public().modulus_len()];
                p.sign(&ring::signature::RSA_PKCS1_SHA256, &SystemRandom::new(), signed.as_bytes(), &mut sig).unwrap();
                sig
            }
        };
        format!("{signed}.{}", b64url(&sig))
    }

    /// A token for `access` (`[(type, name, actions)]`) from the test issuer to the test service.
    pub fn grant(&self, access: &[(&str, &str, &[&str])]) -> String {
        self.sign(&claims(ISSUER, SERVICE, 300, access))
    }
}

/// Claims from `iss` to `aud`, expiring `ttl` seconds from now (negative: past).
pub fn claims(iss: &str, aud: &str, ttl: i64, access: &[(&str, &str, &[&str])]) -> Value {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let access: Vec<Value> = access.iter().map(|(t, n, a)| json!({"type": t, "name": n, "actions": a})).collect();
    json!({"iss": iss, "sub": "alice", "aud": aud, "exp": now + ttl, "nbf": now - 5, "iat": now - 5,
           "jti": uuid::Uuid::new_v4().to_string(), "access": access})
}

/// The issuer's material under `dir`: an EC CA (its own key signs, and it
/// roots x5c chains), a leaf it issued, and a self-signed RSA certificate.
pub struct Issuer {
    pub bundle: PathBuf,
    pub es256: Signer,
    pub rs256: Signer,
    pub x5c: Signer,
}

impl Issuer {
    pub fn new(dir: &Path) -> Issuer {
        let ca = super::certs::Ca::new(dir, "token-ca");
        let (leaf_crt, leaf_key) = ca.issue("token-leaf", "client");
        let (rsa_key, rsa_crt) = (dir.join("rsa.key"), dir.join("rsa.crt"));
        run(Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=token-rsa"])
            .arg("-keyout")
            .arg(&rsa_key)
            .arg("-out")
            .arg(&rsa_crt));
        let bundle = dir.join("bundle.pem");
        let mut pem = std::fs::read(ca.cert()).unwrap();
        pem.extend(std::fs::read(&rsa_crt).unwrap());
        std::fs::write(&bundle, pem).unwrap();
        Issuer {
            bundle,
            es256: Signer::es256_kid(&ca.key(), &ca.cert()),
            rs256: Signer::rs256_kid(&rsa_key, &rsa_crt),
            x5c: Signer::es256_x5c(&leaf_key, &leaf_crt),
        }
    }

    /// registry:2's `auth.token` section for this issuer, with `realm`.
    pub fn yaml(&self, realm: &str) -> String {
        format!(
            "auth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            self.bundle.display()
        )
    }
}

/// A token server: `GET /token?service=…&scope=…` answers a token granting
/// every scope asked for, with only the actions in `allowed` (a real one
/// asks its user database); each request's scopes are kept.
pub struct Realm {
    pub url: String,
    pub asked: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Realm {
    pub fn start(signer: Signer, allowed: &'static [&'static str]) -> Realm {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (signer, log) = (std::sync::Arc::new(signer), asked.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut line = String::new();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                }
                let query = line.split_whitespace().nth(1).and_then(|p| p.split_once('?')).map(|(_, q)| q.to_string());
                let mut grants: Vec<(String, String, Vec<String>)> = Vec::new();
                for pair in query.unwrap_or_default().split('&') {
                    let Some(("scope", v)) = pair.split_once('=') else { continue };
                    let v = percent_encoding::percent_decode_str(&v.replace('+', " ")).decode_utf8_lossy().into_owned();
                    log.lock().unwrap().push(v.clone());
                    for scope in v.split(' ') {
                        let mut parts = scope.splitn(3, ':');
                        if let (Some(t), Some(n), Some(a)) = (parts.next(), parts.next(), parts.next()) {
                            let actions = a
                                .split(',')
                                .filter(|x| allowed.contains(x) || t == "registry")
                                .map(str::to_string)
                                .collect();
                            grants.push((t.to_string(), n.to_string(), actions));
                        }
                    }
                }
                let actions: Vec<Vec<&str>> = grants.iter().map(|g| g.2.iter().map(String::as_str).collect()).collect();
                let access: Vec<(&str, &str, &[&str])> =
                    grants.iter().zip(&actions).map(|((t, n, _), a)| (t.as_str(), n.as_str(), a.as_slice())).collect();
                let token = signer.grant(&access);
                let body = json!({"token": token, "access_token": token, "expires_in": 300}).to_string();
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Realm { url, asked }
    }
}

/// Status, `WWW-Authenticate` and `Location` of one request.
pub fn request(addr: &str, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = match token {
        Some(t) if t.starts_with("Basic ") => format!("Authorization: {t}\r\n"),
        Some(t) => format!("Authorization: Bearer {t}\r\n"),
        None => String::new(),
    };
    let ct =
        if path.contains("/manifests/") { "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n" } else { "" };
    let accept = "Accept: application/vnd.oci.image.manifest.v1+json\r\n";
    write!(s, "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}{ct}{accept}Content-Length: {}\r\n\r\n", body.len())
        .unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let head = String::from_utf8_lossy(&raw[..raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(raw.len())])
        .into_owned();
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let header = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    (status, header("www-authenticate"), header("location"))
}

/// Pushes a blob the two-step way (Distribution 2.8 answers a one-request POST with a session).
pub fn push_blob(addr: &str, prefix: &str, repo: &str, token: &str, data: &[u8]) -> u16 {
    let (status, _, location) = request(addr, "POST", &format!("{prefix}/v2/{repo}/blobs/uploads/"), Some(token), b"");
    if status != 202 {
        return status;
    }
    let path = location.split_once("://").map_or(location.as_str(), |(_, rest)| &rest[rest.find('/').unwrap()..]);
    let sep = if path.contains('?') { '&' } else { '?' };
    request(addr, "PUT", &format!("{path}{sep}digest={}", berth::oci::Digest::sha256_of(data)), Some(token), data).0
}
