//! Upstream answers whose body ends where the connection closes: HTTP/1.1
//! allows a response with neither `Content-Length` nor chunked encoding, and
//! some proxies send blobs that way. awc reads such a body only from an
//! HTTP/1.0 answer and takes an HTTP/1.1 one as empty (actix-http's response
//! decoder; actix/actix-web#2287), so the blob would fail verification every
//! time and never be mirrored. Such an answer is asked for once more through
//! reqwest (already here as object_store's client), which reads to the
//! close; its head and body replace awc's, so everything after sees one
//! response. The cost, one extra request, falls only on upstreams that
//! answer this way.

use awc::http::header::{self, HeaderName, HeaderValue};
use awc::http::{Method, Version};
use futures::StreamExt;

use super::upstream::Response;

/// Whether awc will read `resp`'s body as empty although one follows.
pub fn applies(method: &Method, resp: &Response) -> bool {
    method != Method::HEAD
        && resp.version() == Version::HTTP_11
        && !matches!(resp.status().as_u16(), 100..=199 | 204 | 304)
        && !resp.headers().contains_key(header::CONTENT_LENGTH)
        && !resp.headers().contains_key(header::TRANSFER_ENCODING)
}

/// The client that reads such answers (one per upstream, made on first use).
pub struct ToClose {
    client: reqwest::Client,
}

impl ToClose {
    pub fn new(connect_timeout: std::time::Duration, read_timeout: std::time::Duration) -> Result<Self, String> {
        // The same trust as awc's connector: the web PKI roots, ring.
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        let tls =
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(connect_timeout)
            .read_timeout(read_timeout)
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self { client })
    }

    /// Sends the request again (redirects followed, credentials not carried
    /// to another host) and returns `first` with the new answer's status,
    /// headers and body, read to the close.
    pub async fn again(
        &self,
        method: &Method,
        url: &str,
        headers: &[(HeaderName, &str)],
        first: Response,
    ) -> Result<Response, reqwest::Error> {
        let method = reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap_or(reqwest::Method::GET);
        let mut req = self.client.request(method, url);
        for (name, value) in headers {
            req = req.header(name.as_str(), *value);
        }
        let answer = req.send().await?;
        let status = awc::http::StatusCode::from_u16(answer.status().as_u16()).unwrap_or(first.status());
        let mut headers = header::HeaderMap::new();
        for (name, value) in answer.headers() {
            if let (Ok(n), Ok(v)) =
                (HeaderName::from_bytes(name.as_str().as_bytes()), HeaderValue::from_bytes(value.as_bytes()))
            {
                headers.append(n, v);
            }
        }
        let body = answer
            .bytes_stream()
            .map(|chunk| chunk.map_err(|e| awc::error::PayloadError::Io(std::io::Error::other(e))));
        Ok(first.map_body(move |head, _| {
            head.status = status;
            head.headers = headers;
            let payload: std::pin::Pin<Box<dyn futures::Stream<Item = _>>> = Box::pin(body);
            actix_web::dev::Payload::Stream { payload }
        }))
    }
}
