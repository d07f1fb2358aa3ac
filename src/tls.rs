//! Native TLS (rustls): the server's certificate and key from PEM files,
//! read again when either file changes, so a renewed certificate (certbot,
//! cert-manager) is served without a restart; an optional client-certificate
//! CA makes client certificates mandatory (mTLS); sibling mirrors may present
//! certificates of their own CA (`mirror.peer_tls`, optional for other
//! clients). ALPN offers HTTP/2 and HTTP/1.1 (actix-web adds both).
//!
//! A certificate and key that do not load stop the server at startup; a
//! change that does not load later keeps the pair already served (and says
//! why in the log), as a half-copied renewal must not take the registry down.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use rustls::crypto::ring as provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

use crate::config::TlsConfig;

/// The served certificate, swapped in place when its files change.
pub struct Certificates {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' modification times when they were last read.
    seen: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates").field("cert_path", &self.cert_path).finish_non_exhaustive()
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{what}: cannot read {}: {e}", path.display()))
}

fn certificates(pem: &[u8], path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what}: {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{what}: {} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// The certificate chain and its key, checked to belong together.
fn load_pair(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, String> {
    let chain = certificates(&read(cert_path, "server.tls.certificate")?, cert_path, "server.tls.certificate")?;
    let key = PrivateKeyDer::from_pem_slice(&read(key_path, "server.tls.key")?)
        .map_err(|e| format!("server.tls.key: {}: no usable PEM private key ({e})", key_path.display()))?;
    let signer =
        provider::sign::any_supported_type(&key).map_err(|e| format!("server.tls.key: {}: {e}", key_path.display()))?;
    let pair = CertifiedKey::new(chain, signer);
    pair.keys_match().map_err(|e| {
        format!(
            "server.tls: the key {} does not belong to the certificate {} ({e})",
            key_path.display(),
            cert_path.display()
        )
    })?;
    Ok(pair)
}

impl Certificates {
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, String> {
        let seen = (modified(cert_path), modified(key_path));
        let pair = load_pair(cert_path, key_path)?;
        Ok(Certificates {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: RwLock::new(Arc::new(pair)),
            seen: Mutex::new(seen),
        })
    }

    /// Reads the pair again if either file changed; returns whether the
    /// served certificate changed.
    pub fn reload_if_changed(&self) -> bool {
        let now = (modified(&self.cert_path), modified(&self.key_path));
        {
            let mut seen = self.seen.lock().unwrap();
            if *seen == now {
                return false;
            }
            *seen = now;
        }
        match load_pair(&self.cert_path, &self.key_path) {
            Ok(pair) => {
                *self.current.write().unwrap() = Arc::new(pair);
                tracing::info!(certificate = %self.cert_path.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS files changed but do not load; the certificate loaded before stays");
                false
            }
        }
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap().clone())
    }
}

/// The rustls configuration for `cfg`, and the certificates to reload.
/// With `peer_ca` (`mirror.peer_tls.ca`),
/// a client may also present a certificate that CA issued (a sibling
/// mirror; optional for everyone else unless `client_ca` requires one).
pub fn server_config(
    cfg: &TlsConfig,
    peer_ca: Option<&Path>,
) -> Result<(rustls::ServerConfig, Arc<Certificates>), String> {
    let certs = Arc::new(Certificates::load(&cfg.certificate, &cfg.key)?);
    let provider = Arc::new(server_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut roots = rustls::RootCertStore::empty();
    for (ca, what) in [(cfg.client_ca.as_deref(), "server.tls.client_ca"), (peer_ca, "mirror.peer_tls.ca")] {
        if let Some(ca) = ca {
            for c in certificates(&read(ca, what)?, ca, what)? {
                roots.add(c).map_err(|e| format!("{what}: {}: {e}", ca.display()))?;
            }
        }
    }
    let builder = match (cfg.client_ca.is_some(), peer_ca.is_some()) {
        (false, false) => builder.with_no_client_auth(),
        (required, _) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match required {
                true => verifier,
                false => verifier.allow_unauthenticated(),
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| format!("client certificates: {e}"))?)
        }
    };
    let mut config = builder.with_cert_resolver(certs.clone());
    // The server's order (AES-128-GCM first) over the client's: see `server_provider`.
    config.ignore_client_order = true;
    Ok((config, certs))
}

/// ring with AES-128-GCM preferred. Clients (OpenSSL, Go) list AES-256-GCM
/// first, which costs both ends 40% more rounds per byte for no security a
/// registry needs: on a blob download both the server's encryption and the
/// client's decryption share the same cores (the profile of a warm TLS blob
/// GET had AES-GCM at the top). Every registry client runs on hardware with
/// AES instructions, so ChaCha20 stays last.
fn server_provider() -> rustls::crypto::CryptoProvider {
    use rustls::crypto::ring::cipher_suite as cs;
    let mut p = provider::default_provider();
    p.cipher_suites = vec![
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    p
}

/// Makes ring the process's rustls provider, for clients that take the
/// default (the object store's HTTP client); berth's own configs name it.
pub fn install_crypto_provider() {
    // Err only when one is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// What a sibling mirror presents and trusts (`mirror.peer_tls`): a client
/// configuration with its certificate, trusting the siblings' CA; and a
/// verifier that tells a sibling's client certificate from any other.
pub struct PeerTls {
    pub client: Arc<rustls::ClientConfig>,
    verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
}

impl PeerTls {
    pub fn load(cert_path: &Path, key_path: &Path, ca: &Path) -> Result<PeerTls, String> {
        let what = "mirror.peer_tls";
        let provider = Arc::new(provider::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in certificates(&read(ca, "mirror.peer_tls.ca")?, ca, "mirror.peer_tls.ca")? {
            roots.add(c).map_err(|e| format!("{what}.ca: {}: {e}", ca.display()))?;
        }
        let roots = Arc::new(roots);
        let chain =
            certificates(&read(cert_path, "mirror.peer_tls.certificate")?, cert_path, "mirror.peer_tls.certificate")?;
        let key = PrivateKeyDer::from_pem_slice(&read(key_path, "mirror.peer_tls.key")?)
            .map_err(|e| format!("{what}.key: {}: no usable PEM private key ({e})", key_path.display()))?;
        let mut client = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("{what}: the certificate and key: {e}"))?;
        // Siblings stream blobs to each other over HTTP/1.1.
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| format!("{what}.ca: {e}"))?;
        Ok(PeerTls { client: Arc::new(client), verifier })
    }

    /// Whether a connection's client certificate chain (leaf first) was
    /// issued by the siblings' CA.
    pub fn admits(&self, chain: &[CertificateDer<'static>]) -> bool {
        let Some((leaf, intermediates)) = chain.split_first() else { return false };
        self.verifier.verify_client_cert(leaf, intermediates, rustls::pki_types::UnixTime::now()).is_ok()
    }
}

/// The client certificate chain a TLS connection presented, kept with the
/// connection (`HttpServer::on_connect`) for handlers that trust it.
#[derive(Clone)]
pub struct ClientChain(pub Vec<CertificateDer<'static>>);

/// `on_connect` for a TLS listener: keeps the client's certificate chain.
pub fn keep_client_chain(conn: &dyn std::any::Any, ext: &mut actix_web::dev::Extensions) {
    use actix_tls::accept::rustls_0_23::TlsStream;
    if let Some(tls) = conn.downcast_ref::<TlsStream<actix_web::rt::net::TcpStream>>() {
        if let Some(chain) = tls.get_ref().1.peer_certificates() {
            ext.insert(ClientChain(chain.to_vec()));
        }
    }
}
