//! Errors of the registry façade: the store's, plus the rules it applies.

use crate::mirror::MirrorError;
use crate::oci::{Digest, ParseError};
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
    #[error("manifest references {0}, which is not known in this repository; push it first")]
    ManifestBlobUnknown(Digest),
    #[error("manifest digest is {actual}, but it was pushed as {expected}")]
    ManifestDigestMismatch { expected: Digest, actual: Digest },
    #[error("manifest is larger than the limit of {limit} bytes")]
    ManifestTooLarge { limit: u64 },
    #[error("deletes are disabled on this registry (storage.delete.enabled = false)")]
    DeleteDisabled,
    #[error("range not satisfiable: the blob is {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    #[error("{0}")]
    Denied(String),
    #[error(transparent)]
    Mirror(#[from] MirrorError),
}

pub type RegistryResult<T> = Result<T, RegistryError>;
