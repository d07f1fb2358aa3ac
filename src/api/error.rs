//! The only place an error becomes an HTTP status and an OCI JSON body.
//! Faults on our side are logged here, once, with their source chain; the
//! client gets a generic message for those and a precise one for its own mistakes.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::oci::{OciCode, ParseError};
use crate::registry::RegistryError;
use crate::store::StoreError;

/// What went wrong at the HTTP edge, by kind; `code()` maps each kind to
/// its OCI code (and so its status) here and nowhere else.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A query parameter that is malformed or given twice.
    #[error("{0}")]
    Query(String),
    /// A page size or page number that is not a number berth accepts.
    #[error("{0}")]
    Pagination(String),
    /// A `Content-Range` that does not parse or does not match the body.
    #[error("{0}")]
    ChunkRange(String),
    #[error("the digest query parameter is required")]
    DigestMissing,
    /// Credentials or a token that do not let the caller in.
    #[error("{0}")]
    Unauthenticated(String),
    /// A token request berth does not serve (the grant type).
    #[error("{0}")]
    UnsupportedGrant(String),
    /// A manifest body that stopped coming (too slow, or timed out).
    #[error("{0}")]
    BodyTimedOut(crate::store::BodyError),
    /// A manifest body that broke off.
    #[error("{0}")]
    BodyBroken(crate::store::BodyError),
    #[error("the body is larger than the largest blob accepted ({limit} bytes)")]
    BlobTooLarge { limit: u64 },
    #[error("the request URI is {len} bytes; the limit is {limit}")]
    UriTooLong { len: usize, limit: usize },
    #[error("{0}")]
    HeadersTooLarge(String),
    /// An admin endpoint asked by someone other than `berth` on this machine.
    #[error("berth's admin endpoints answer `berth` on this machine only (loopback, with the admin token)")]
    AdminOnly,
    #[error("no such endpoint")]
    NotFound,
    #[error("method {0} is not allowed on this endpoint")]
    MethodNotAllowed(String),
    #[error("the manifest is {0}, which the request's Accept header does not allow")]
    NotAcceptable(String),
}

/// Client input that does not parse, classified by its parser.
impl From<ParseError> for ApiError {
    fn from(e: ParseError) -> Self {
        ApiError::Registry(RegistryError::Invalid(e))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Registry(e.into())
    }
}

impl ApiError {
    pub fn code(&self) -> OciCode {
        match self {
            ApiError::Registry(e) => e.code(),
            ApiError::Query(_) => OciCode::QueryInvalid,
            ApiError::Pagination(_) => OciCode::PaginationInvalid,
            ApiError::ChunkRange(_) => OciCode::RangeInvalid,
            ApiError::DigestMissing => OciCode::DigestInvalid,
            ApiError::Unauthenticated(_) => OciCode::Unauthorized,
            ApiError::UnsupportedGrant(_) => OciCode::Unsupported,
            ApiError::BodyTimedOut(_) => OciCode::RequestTimeout,
            ApiError::BodyBroken(_) => OciCode::ManifestInvalid,
            ApiError::BlobTooLarge { .. } => OciCode::TooLarge,
            ApiError::UriTooLong { .. } => OciCode::UriTooLong,
            ApiError::HeadersTooLarge(_) => OciCode::HeadersTooLarge,
            ApiError::AdminOnly => OciCode::Denied,
            ApiError::NotFound => OciCode::NotFound,
            ApiError::MethodNotAllowed(_) => OciCode::Unsupported,
            ApiError::NotAcceptable(_) => OciCode::ManifestUnknown,
        }
    }

    fn client_message(&self) -> String {
        match self {
            ApiError::Registry(e) => e.client_message(),
            other => other.to_string(),
        }
    }

    fn is_server_fault(&self) -> bool {
        match self {
            ApiError::Registry(e) => e.is_server_fault(),
            _ => false,
        }
    }
}

/// Writes an error chain as one line: "outer: inner: innermost".
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code().status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let code = self.code();
        if self.is_server_fault() {
            tracing::error!(code = code.as_str(), error = %chain(self), "storage fault");
        }
        let mut resp = HttpResponse::build(self.status_code());
        if let ApiError::Registry(e) = self {
            if let Some(size) = e.unsatisfiable_size() {
                resp.insert_header((header::CONTENT_RANGE, format!("bytes */{size}")));
            }
            if let Some(after) = e.retry_after() {
                resp.insert_header((header::RETRY_AFTER, after.to_string()));
            }
            // As registry:2's read-only mode answers.
            if matches!(e, RegistryError::ReadOnly) {
                resp.insert_header((header::ALLOW, "GET, HEAD"));
            }
        }
        resp.json(json!({ "errors": [{ "code": code.as_str(), "message": self.client_message(), "detail": null }] }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Digest;

    #[test]
    fn maps_client_mistakes_to_4xx() {
        let d = Digest::sha256_of(b"x");
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (RegistryError::BlobUnknown(d.clone()).into(), 404, "BLOB_UNKNOWN"),
            (RegistryError::GcRunning.into(), 409, "BUSY"),
            (StoreError::UploadUnknown("u".into()).into(), 404, "BLOB_UPLOAD_UNKNOWN"),
            (StoreError::DigestMismatch { expected: d.clone(), actual: d.clone() }.into(), 400, "DIGEST_INVALID"),
            (StoreError::ChunkOutOfOrder { start: 1, size: 0 }.into(), 416, "RANGE_INVALID"),
            (RegistryError::RangeNotSatisfiable { size: 1 }.into(), 416, "RANGE_INVALID"),
            (
                StoreError::Body(crate::store::BodyError::TimedOut(std::time::Duration::from_secs(1))).into(),
                408,
                "REQUEST_TIMEOUT",
            ),
            (StoreError::TooManyUploads { limit: 1 }.into(), 429, "TOOMANYREQUESTS"),
            (RegistryError::Denied("x".into()).into(), 403, "DENIED"),
            (RegistryError::ManifestBlobUnknown(d.clone()).into(), 400, "MANIFEST_BLOB_UNKNOWN"),
            (RegistryError::DeleteDisabled.into(), 405, "UNSUPPORTED"),
            (RegistryError::ManifestTooLarge { limit: 1 }.into(), 413, "TOO_LARGE"),
            (ApiError::NotAcceptable("x".into()), 404, "MANIFEST_UNKNOWN"),
            (ApiError::AdminOnly, 403, "DENIED"),
            (ApiError::Query("x".into()), 400, "QUERY_INVALID"),
            (ApiError::Pagination("x".into()), 400, "PAGINATION_NUMBER_INVALID"),
            (ApiError::ChunkRange("x".into()), 416, "RANGE_INVALID"),
            (ApiError::DigestMissing, 400, "DIGEST_INVALID"),
            (ApiError::Unauthenticated("x".into()), 401, "UNAUTHORIZED"),
            (ApiError::UriTooLong { len: 2, limit: 1 }, 414, "URI_TOO_LONG"),
            (ApiError::BlobTooLarge { limit: 1 }, 413, "TOO_LARGE"),
            (crate::oci::ParseError::new(OciCode::NameInvalid, "x").into(), 400, "NAME_INVALID"),
        ];
        for (e, status, code) in cases {
            assert_eq!(e.status_code().as_u16(), status, "{e}");
            assert_eq!(e.code().as_str(), code, "{e}");
        }
    }

    #[test]
    fn internal_errors_hide_detail() {
        let e: ApiError = StoreError::Io { path: "secret/path".into(), source: std::io::Error::other("disk") }.into();
        assert_eq!(e.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
        let resp = e.error_response();
        let body = actix_web::body::MessageBody::try_into_bytes(resp.into_body()).unwrap();
        assert!(!String::from_utf8_lossy(&body).contains("secret"));
    }

    #[test]
    fn a_full_disk_is_507_with_a_message_that_says_so() {
        let full =
            || StoreError::Io { path: "secret/path".into(), source: std::io::Error::from_raw_os_error(libc::ENOSPC) };
        let e: ApiError = full().into();
        assert_eq!(e.status_code().as_u16(), 507);
        let body = actix_web::body::MessageBody::try_into_bytes(e.error_response().into_body()).unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("STORAGE_FULL") && text.contains("full") && !text.contains("secret"), "{text}");
        // The same fault met while storing upstream content.
        let e: ApiError = RegistryError::Mirror(crate::mirror::MirrorError::from(full())).into();
        assert_eq!(e.status_code().as_u16(), 507);
    }
}
