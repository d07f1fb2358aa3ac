//! Errors of the upstream side. Cloneable: one failed fetch is reported to
//! every client waiting on it.

use std::time::Duration;

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
    Store(String),
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
}

impl From<crate::store::StoreError> for MirrorError {
    fn from(e: crate::store::StoreError) -> Self {
        MirrorError::Store(e.to_string())
    }
}

pub type MirrorResult<T> = Result<T, MirrorError>;
