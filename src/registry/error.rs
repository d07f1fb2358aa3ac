//! Errors of the registry façade: the store's and the mirror's (each already
//! classified where it arose), plus the rules the façade applies. The API
//! edge asks a `RegistryError` for its code and message and matches nothing
//! below it.

use crate::mirror::MirrorError;
use crate::oci::{Digest, OciCode, ParseError};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Invalid(#[from] ParseError),
    #[error("blob {0} is not known in this repository")]
    BlobUnknown(Digest),
    #[error("manifest {0} is not known in this repository")]
    ManifestUnknown(String),
    #[error("repository {0} is not known to this registry")]
    NameUnknown(String),
    /// The policy says no repository here can be the one named (the reason).
    #[error("{0}")]
    NotHere(String),
    #[error("manifest references {0}, which is not known in this repository; push it first")]
    ManifestBlobUnknown(Digest),
    #[error("manifest digest is {actual}, but it was pushed as {expected}")]
    ManifestDigestMismatch { expected: Digest, actual: Digest },
    #[error("manifest is larger than the limit of {limit} bytes")]
    ManifestTooLarge { limit: u64 },
    #[error("deletes are disabled on this registry (storage.delete.enabled = false)")]
    DeleteDisabled,
    #[error(
        "the registry is in read-only mode (storage.read_only, or `berth readonly on`): pushes and deletes are refused"
    )]
    ReadOnly,
    #[error("range not satisfiable: the blob is {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    #[error("{0}")]
    Denied(String),
    #[error("a garbage collection is already running")]
    GcRunning,
    #[error("another replica is running lifecycle work on this storage; try again later")]
    ReplicaBusy,
    /// Stored content berth cannot read, so it will not act on a guess (the reason).
    #[error("{0}")]
    Unreadable(String),
    #[error("authentication required to access {0}")]
    Unauthorized(String),
    /// A service berth must ask first (the admission hook) did not answer (why).
    #[error("{0}")]
    Unavailable(String),
    /// A bundle to import that cannot be read as one, or whose content is
    /// not what it says (why).
    #[error("{0}")]
    Bundle(String),
    #[error(transparent)]
    Mirror(#[from] MirrorError),
}

impl RegistryError {
    pub fn code(&self) -> OciCode {
        match self {
            RegistryError::Store(e) => e.code(),
            RegistryError::Mirror(e) => e.code(),
            RegistryError::Invalid(p) => p.code,
            RegistryError::BlobUnknown(_) => OciCode::BlobUnknown,
            RegistryError::ManifestUnknown(_) => OciCode::ManifestUnknown,
            RegistryError::NameUnknown(_) | RegistryError::NotHere(_) => OciCode::NameUnknown,
            RegistryError::ManifestBlobUnknown(_) => OciCode::ManifestBlobUnknown,
            RegistryError::ManifestDigestMismatch { .. } => OciCode::DigestInvalid,
            RegistryError::ManifestTooLarge { .. } => OciCode::TooLarge,
            RegistryError::DeleteDisabled | RegistryError::ReadOnly => OciCode::Unsupported,
            RegistryError::RangeNotSatisfiable { .. } => OciCode::RangeInvalid,
            RegistryError::Denied(_) => OciCode::Denied,
            RegistryError::GcRunning | RegistryError::ReplicaBusy => OciCode::Busy,
            RegistryError::Unreadable(_) => OciCode::Internal,
            RegistryError::Unauthorized(_) => OciCode::Unauthorized,
            RegistryError::Unavailable(_) => OciCode::Unavailable,
            RegistryError::Bundle(_) => OciCode::QueryInvalid,
        }
    }

    /// What the client is told (storage faults without their paths).
    pub fn client_message(&self) -> String {
        match self {
            RegistryError::Store(e) => e.client_message(),
            RegistryError::Mirror(e) => e.client_message(),
            other => other.to_string(),
        }
    }

    /// A fault on our side that deserves a log line with its detail.
    pub fn is_server_fault(&self) -> bool {
        match self {
            RegistryError::Store(e) => e.is_server_fault(),
            RegistryError::Mirror(e) => e.is_server_fault(),
            RegistryError::Unreadable(_) => true,
            _ => false,
        }
    }

    /// `Retry-After` to send along (an upstream's rate limit).
    pub fn retry_after(&self) -> Option<&str> {
        match self {
            RegistryError::Mirror(e) => e.retry_after(),
            _ => None,
        }
    }

    /// The blob's size, for the `Content-Range: bytes */size` of a 416.
    pub fn unsatisfiable_size(&self) -> Option<u64> {
        match self {
            RegistryError::RangeNotSatisfiable { size } => Some(*size),
            _ => None,
        }
    }
}

pub type RegistryResult<T> = Result<T, RegistryError>;
