//! Errors of the upstream side, classified here: each knows its OCI code and
//! whether a cached copy may stand in for the upstream (stale-if-error).
//! Cloneable: one failed fetch is reported to every client waiting on it.

use std::sync::Arc;
use std::time::Duration;

use crate::oci::OciCode;
use crate::store::StoreError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum MirrorError {
    #[error("upstream {host} is unreachable: {reason}")]
    Unreachable { host: String, reason: String },
    #[error("upstream {host} did not answer within {after:?}")]
    Timeout { host: String, after: Duration },
    #[error("upstream {host} answered HTTP {status}")]
    Status { host: String, status: u16 },
    #[error("upstream {host} is rate limiting requests (HTTP 429)")]
    TooManyRequests { host: String, retry_after: Option<String> },
    #[error("{what} was not found at upstream {host}")]
    NotFound { host: String, what: String },
    #[error("upstream {host} refused our credentials: {reason}")]
    Unauthorized { host: String, reason: String },
    #[error("upstream {host} sent content whose digest is {actual}, not {expected}")]
    DigestMismatch { host: String, expected: String, actual: String },
    #[error("upstream {host} sent {actual} bytes, {expected} were announced")]
    SizeMismatch { host: String, expected: u64, actual: u64 },
    #[error("upstream {host}: {reason}")]
    Protocol { host: String, reason: String },
    #[error("storing upstream content failed: {0}")]
    Store(Arc<StoreError>),
    #[error("the upstream fetch ended without a result (its task stopped)")]
    Aborted,
}

impl MirrorError {
    /// The upstream is down or refusing service for now: a cached copy may be
    /// served instead (stale-if-error).
    pub fn is_unavailable(&self) -> bool {
        match self {
            MirrorError::Unreachable { .. } | MirrorError::Timeout { .. } | MirrorError::TooManyRequests { .. } => true,
            MirrorError::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// The metric label of an upstream's failure; `None` for what is not
    /// the upstream failing (a 404 answer, our own storage, a stopped task).
    pub fn kind(&self) -> Option<&'static str> {
        Some(match self {
            MirrorError::Unreachable { .. } => "unreachable",
            MirrorError::Timeout { .. } => "timeout",
            MirrorError::Status { .. } => "status",
            MirrorError::TooManyRequests { .. } => "rate_limited",
            MirrorError::Unauthorized { .. } => "unauthorized",
            MirrorError::DigestMismatch { .. } => "digest_mismatch",
            MirrorError::SizeMismatch { .. } => "size_mismatch",
            MirrorError::Protocol { .. } => "protocol",
            MirrorError::NotFound { .. } | MirrorError::Store(_) | MirrorError::Aborted => return None,
        })
    }

    pub fn code(&self) -> OciCode {
        match self {
            MirrorError::TooManyRequests { .. } => OciCode::TooManyRequests,
            MirrorError::Timeout { .. } => OciCode::UpstreamTimeout,
            MirrorError::Status { status: 503, .. } => OciCode::Unavailable,
            // A 404 the registry did not turn into its own "unknown" (it does for manifests and blobs).
            MirrorError::NotFound { .. } => OciCode::NameUnknown,
            MirrorError::Store(e) => e.code(),
            MirrorError::Aborted => OciCode::Internal,
            MirrorError::Unreachable { .. }
            | MirrorError::Status { .. }
            | MirrorError::Unauthorized { .. }
            | MirrorError::DigestMismatch { .. }
            | MirrorError::SizeMismatch { .. }
            | MirrorError::Protocol { .. } => OciCode::Upstream,
        }
    }

    pub fn client_message(&self) -> String {
        match self {
            MirrorError::Store(e) => e.client_message(),
            MirrorError::Aborted => OciCode::Internal.message().into(),
            other => other.to_string(),
        }
    }

    pub fn is_server_fault(&self) -> bool {
        match self {
            MirrorError::Store(e) => e.is_server_fault(),
            MirrorError::Aborted => true,
            _ => false,
        }
    }

    pub fn retry_after(&self) -> Option<&str> {
        match self {
            MirrorError::TooManyRequests { retry_after, .. } => retry_after.as_deref(),
            _ => None,
        }
    }
}

impl From<StoreError> for MirrorError {
    fn from(e: StoreError) -> Self {
        MirrorError::Store(Arc::new(e))
    }
}

pub type MirrorResult<T> = Result<T, MirrorError>;
