//! The only place an error becomes an HTTP status and an OCI JSON body.
//! Faults on our side are logged here, once, with their source chain; the
//! client gets a generic message for those and a precise one for its own mistakes.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::mirror::MirrorError;
use crate::oci::{OciCode, ParseError};
use crate::registry::RegistryError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{1}")]
    BadRequest(OciCode, String),
    #[error("no such endpoint")]
    NotFound,
    #[error("method {0} is not allowed on this endpoint")]
    MethodNotAllowed(String),
    #[error("the manifest is {0}, which the request's Accept header does not allow")]
    NotAcceptable(String),
}

impl From<ParseError> for ApiError {
    fn from(e: ParseError) -> Self {
        ApiError::BadRequest(e.code, e.message)
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
            ApiError::Registry(e) => registry_code(e),
            ApiError::BadRequest(code, _) => *code,
            ApiError::NotFound => OciCode::NotFound,
            ApiError::MethodNotAllowed(_) => OciCode::Unsupported,
            ApiError::NotAcceptable(_) => OciCode::ManifestUnknown,
        }
    }
}

fn registry_code(e: &RegistryError) -> OciCode {
    match e {
        RegistryError::Store(s) => match s {
            StoreError::BlobUnknown(_) => OciCode::BlobUnknown,
            StoreError::UploadUnknown(_) => OciCode::BlobUploadUnknown,
            StoreError::DigestMismatch { .. } => OciCode::DigestInvalid,
            StoreError::SizeMismatch { .. } => OciCode::SizeInvalid,
            StoreError::ChunkOutOfOrder { .. } => OciCode::RangeInvalid,
            StoreError::TooLarge { .. } => OciCode::TooLarge,
            StoreError::Body(_) => OciCode::BlobUploadInvalid,
            StoreError::Io { .. } | StoreError::CorruptLink { .. } => OciCode::Internal,
        },
        RegistryError::Invalid(p) => p.code,
        RegistryError::BlobUnknown(_) => OciCode::BlobUnknown,
        RegistryError::ManifestUnknown(_) => OciCode::ManifestUnknown,
        RegistryError::NameUnknown(_) => OciCode::NameUnknown,
        RegistryError::ManifestBlobUnknown(_) => OciCode::ManifestBlobUnknown,
        RegistryError::ManifestDigestMismatch { .. } => OciCode::DigestInvalid,
        RegistryError::ManifestTooLarge { .. } => OciCode::TooLarge,
        RegistryError::DeleteDisabled => OciCode::Unsupported,
        RegistryError::RangeNotSatisfiable { .. } => OciCode::RangeInvalid,
        RegistryError::Denied(_) => OciCode::Denied,
        RegistryError::Mirror(m) => match m {
            MirrorError::TooManyRequests { .. } => OciCode::TooManyRequests,
            MirrorError::Timeout { .. } => OciCode::UpstreamTimeout,
            MirrorError::Status { status: 503, .. } => OciCode::UpstreamUnavailable,
            MirrorError::Store(_) => OciCode::Internal,
            // A 404 the registry did not turn into its own "unknown" (it does for manifests and blobs).
            MirrorError::NotFound { .. } => OciCode::NameUnknown,
            MirrorError::Unreachable { .. }
            | MirrorError::Status { .. }
            | MirrorError::Unauthorized { .. }
            | MirrorError::DigestMismatch { .. }
            | MirrorError::SizeMismatch { .. }
            | MirrorError::Protocol { .. } => OciCode::Upstream,
        },
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
        let message = if code == OciCode::Internal {
            tracing::error!(error = %chain(self), "internal error");
            code.message().to_string()
        } else {
            self.to_string()
        };
        let mut resp = HttpResponse::build(self.status_code());
        match self {
            ApiError::Registry(RegistryError::RangeNotSatisfiable { size }) => {
                resp.insert_header((header::CONTENT_RANGE, format!("bytes */{size}")));
            }
            ApiError::Registry(RegistryError::Mirror(MirrorError::TooManyRequests {
                retry_after: Some(after),
                ..
            })) => {
                resp.insert_header((header::RETRY_AFTER, after.clone()));
            }
            _ => {}
        }
        resp.json(json!({ "errors": [{ "code": code.as_str(), "message": message, "detail": null }] }))
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
            (StoreError::UploadUnknown("u".into()).into(), 404, "BLOB_UPLOAD_UNKNOWN"),
            (StoreError::DigestMismatch { expected: d.clone(), actual: d.clone() }.into(), 400, "DIGEST_INVALID"),
            (StoreError::ChunkOutOfOrder { start: 1, size: 0 }.into(), 416, "BLOB_UPLOAD_INVALID"),
            (RegistryError::ManifestBlobUnknown(d.clone()).into(), 400, "MANIFEST_BLOB_UNKNOWN"),
            (RegistryError::DeleteDisabled.into(), 405, "UNSUPPORTED"),
            (RegistryError::ManifestTooLarge { limit: 1 }.into(), 413, "SIZE_INVALID"),
            (ApiError::NotAcceptable("x".into()), 404, "MANIFEST_UNKNOWN"),
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
}
