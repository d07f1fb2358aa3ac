//! Errors of the storage layer. It knows no HTTP: the API edge maps these.

use crate::oci::Digest;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("blob {0} is not known in this repository")]
    BlobUnknown(Digest),
    #[error("upload {0} is not known in this repository")]
    UploadUnknown(String),
    #[error("content digest {actual} does not match the requested digest {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("content is {actual} bytes, {expected} were declared")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("chunk starts at byte {start}, but the upload holds {size} bytes")]
    ChunkOutOfOrder { start: u64, size: u64 },
    #[error("request body is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("request body failed: {0}")]
    Body(String),
    #[error("storage i/o on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("link file {path} does not hold a valid digest")]
    CorruptLink { path: String },
}

impl StoreError {
    pub fn io(path: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { path, source }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;
