//! The shape of a request, checked before any handler runs: URI length,
//! header count and header bytes (`server.max_url_length`, `max_headers`,
//! `max_header_bytes`). Past a limit the client gets 414 or 431 with an OCI
//! error body. (Beyond actix-web's own parser limits, 96 headers or a
//! 128 KiB head, actix answers a bare 431 and closes the connection before
//! any of this runs; the configured limits are kept below those.)

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::HeaderMap;
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};

use super::{ApiError, EdgeConfig};

/// What a request may look like.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub max_url_length: usize,
    pub max_headers: usize,
    pub max_header_bytes: u64,
}

impl Shape {
    /// The limit `uri` and `headers` break, if any.
    pub fn check(&self, uri: &str, headers: &HeaderMap) -> Result<(), ApiError> {
        if uri.len() > self.max_url_length {
            return Err(ApiError::UriTooLong { len: uri.len(), limit: self.max_url_length });
        }
        if headers.len() > self.max_headers {
            return Err(ApiError::HeadersTooLarge(format!(
                "{} request headers; the limit is {}",
                headers.len(),
                self.max_headers
            )));
        }
        // As on the wire: "name: value\r\n".
        let bytes: u64 = headers.iter().map(|(k, v)| (k.as_str().len() + v.len() + 4) as u64).sum();
        if bytes > self.max_header_bytes {
            return Err(ApiError::HeadersTooLarge(format!(
                "{bytes} bytes of request headers; the limit is {}",
                self.max_header_bytes
            )));
        }
        Ok(())
    }
}

/// Middleware: refuses a request whose shape breaks a limit.
pub async fn shape(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let verdict = match req.app_data::<web::Data<EdgeConfig>>() {
        Some(edge) => {
            let uri = req.uri().path_and_query().map_or("", |pq| pq.as_str());
            edge.shape.check(uri, req.headers())
        }
        None => Ok(()),
    };
    match verdict {
        Ok(()) => next.call(req).await.map(ServiceResponse::map_into_left_body),
        Err(e) => {
            tracing::info!(client = ?req.peer_addr().map(|a| a.ip()), error = %e, "refused a request's shape");
            Ok(req.into_response(e.error_response()).map_into_right_body())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::OciCode;
    use actix_web::http::header::{HeaderName, HeaderValue};

    #[test]
    fn each_limit_has_its_code() {
        let shape = Shape { max_url_length: 20, max_headers: 3, max_header_bytes: 40 };
        let mut h = HeaderMap::new();
        h.insert(HeaderName::from_static("a"), HeaderValue::from_static("1"));
        assert!(shape.check("/v2/", &h).is_ok());
        let code = |r: Result<(), ApiError>| r.unwrap_err().code();
        assert_eq!(code(shape.check("/v2/aaaaaaaaaaaaaaaaaaaaaaa", &h)), OciCode::UriTooLong);
        for name in ["b", "c", "d"] {
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("1"));
        }
        assert_eq!(code(shape.check("/v2/", &h)), OciCode::HeadersTooLarge, "four headers");
        let mut big = HeaderMap::new();
        big.insert(HeaderName::from_static("x"), HeaderValue::from_str(&"v".repeat(40)).unwrap());
        assert_eq!(code(shape.check("/v2/", &big)), OciCode::HeadersTooLarge, "45 bytes");
    }
}
