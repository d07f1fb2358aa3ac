//! Talking to a berth server over HTTP from this machine: `berth gc` and
//! `berth ready` (the address from the server's data directory), `berth warm`
//! and `mirror.warm` (a URL). One place decides how its address is reached
//! and which certificates are accepted.

use std::sync::Arc;
use std::time::Duration;

/// `scheme://host:port` without a trailing `/`; `http` when no scheme is
/// given, and a server listening on every address is reached on loopback.
pub fn base_url(addr: &str) -> String {
    let addr = addr.trim_end_matches('/');
    let (scheme, rest) = addr.split_once("://").unwrap_or(("http", addr));
    let rest = match rest {
        r if r.starts_with("0.0.0.0:") => r.replacen("0.0.0.0:", "127.0.0.1:", 1),
        r if r.starts_with("[::]:") => r.replacen("[::]:", "[::1]:", 1),
        r => r.to_string(),
    };
    format!("{scheme}://{rest}")
}

/// Whether `base` (from `base_url`) names this machine.
pub fn is_loopback(base: &str) -> bool {
    let host = base.split("://").nth(1).unwrap_or("").split('/').next().unwrap_or("");
    host.starts_with("127.") || host.starts_with("localhost") || host.starts_with("[::1]")
}

/// An HTTP client; with `local`, TLS accepts the server's certificate
/// whatever it names (see `loopback_tls`), else the web PKI. No timeout when `None`.
pub fn client(local: bool, timeout: Option<Duration>) -> awc::Client {
    let connector =
        if local { awc::Connector::new().rustls_0_23(Arc::new(loopback_tls())) } else { awc::Connector::new() };
    let builder = awc::Client::builder().connector(connector);
    match timeout {
        Some(t) => builder.timeout(t).finish(),
        None => builder.disable_timeout().finish(),
    }
}

/// TLS to the server on this machine, whatever its certificate names: the
/// address comes from the data directory of the server that holds its index
/// lock, and that server holds the port, so only root could answer in its
/// place. (Its certificate names the public host, not 127.0.0.1.)
fn loopback_tls() -> rustls::ClientConfig {
    #[derive(Debug)]
    struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    impl ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth()
}

/// Asks the server running on data directory `root` for `/readyz`.
pub async fn ready(root: &std::path::Path) -> Result<(), String> {
    let file = crate::api::admin::server_addr_file(root);
    let addr = std::fs::read_to_string(&file)
        .map_err(|e| format!("no server has started on {} ({}: {e})", root.display(), file.display()))?;
    let server = base_url(addr.trim());
    let mut resp = client(true, None)
        .get(format!("{server}/readyz"))
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| format!("{}: {e}", server))?;
    let body = resp.body().await.unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    match resp.status().as_u16() {
        200 => {
            print!("{text}");
            Ok(())
        }
        status => Err(format!("{}/readyz answered {status}: {}", server, text.trim())),
    }
}

/// POSTs `path` (with its query) to berth's admin endpoints on the server at
/// `addr`, with its admin `token`; an answer that is not a success is an
/// error that quotes it.
pub async fn admin_post(
    addr: &str,
    token: &str,
    path: &str,
    timeout: Duration,
) -> Result<awc::ClientResponse<impl futures::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>>>, String> {
    let url = format!("{}{path}", base_url(addr));
    let mut resp = client(true, Some(timeout))
        .post(&url)
        .insert_header((crate::api::admin::TOKEN_HEADER, token))
        .send()
        .await
        .map_err(|e| format!("cannot reach the berth server at {addr}: {e}"))?;
    if !resp.status().is_success() {
        let body = resp.body().await.unwrap_or_default();
        return Err(format!("the server answered {}: {}", resp.status(), String::from_utf8_lossy(&body)));
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_of_this_machine() {
        assert_eq!(base_url("0.0.0.0:5000"), "http://127.0.0.1:5000");
        assert_eq!(base_url("https://[::]:5000/"), "https://[::1]:5000");
        assert_eq!(base_url("https://registry.example.com"), "https://registry.example.com");
        assert!(is_loopback("http://127.0.0.1:5000") && is_loopback("https://localhost:5000"));
        assert!(!is_loopback("https://registry.example.com"));
    }
}
