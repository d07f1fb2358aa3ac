//! Errors of the storage layer, classified here, where they arise: each
//! knows its OCI code (a full disk is `STORAGE_FULL`, not a bare 500) and what
//! a client may be told of it. The store knows no HTTP: the API edge turns the
//! code into a status once.

use std::time::Duration;

use crate::oci::{Digest, OciCode};

/// Why an incoming body (an upload's bytes) stopped before its end.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BodyError {
    #[error("the client sent no body bytes for {0:?}")]
    TimedOut(Duration),
    #[error("the client sent the body slower than {0} bytes a second")]
    TooSlow(u64),
    #[error("request body failed: {0}")]
    Broken(String),
}

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
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("this client has {limit} uploads open already; finish or cancel some first")]
    TooManyUploads { limit: usize },
    #[error("storage i/o on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// An object store's answer (unreachable, refused, failed): the
    /// server's trouble, a 503 for the client.
    #[error("object storage on {path}: {source}")]
    Remote {
        path: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error("link file {path} does not hold a valid digest")]
    CorruptLink { path: String },
    #[error("bookkeeping index: {0}")]
    Index(String),
    #[error("{0} is in use: another berth serves this data directory")]
    InUse(String),
    /// Another replica's lifecycle work deleted (or is deleting) the data of
    /// a blob this request just linked: try again (it is fetched or
    /// uploaded anew).
    #[error("blob {0} was being deleted by another replica's lifecycle work at the same moment; try again")]
    LifecycleRace(Digest),
}

/// What an i/o error says about the storage as a whole.
fn io_code(e: &std::io::Error) -> OciCode {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => OciCode::StorageFull,
        Some(libc::EROFS) => OciCode::Unavailable,
        _ => OciCode::Internal,
    }
}

impl StoreError {
    pub fn io(path: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { path, source }
    }

    /// The OCI code a client gets for this error.
    pub fn code(&self) -> OciCode {
        match self {
            StoreError::BlobUnknown(_) => OciCode::BlobUnknown,
            StoreError::UploadUnknown(_) => OciCode::BlobUploadUnknown,
            StoreError::DigestMismatch { .. } => OciCode::DigestInvalid,
            StoreError::SizeMismatch { .. } => OciCode::SizeInvalid,
            StoreError::ChunkOutOfOrder { .. } => OciCode::RangeInvalid,
            StoreError::TooLarge { .. } => OciCode::TooLarge,
            StoreError::Body(BodyError::TimedOut(_) | BodyError::TooSlow(_)) => OciCode::RequestTimeout,
            StoreError::Body(BodyError::Broken(_)) => OciCode::BlobUploadInvalid,
            StoreError::TooManyUploads { .. } => OciCode::TooManyRequests,
            StoreError::Io { source, .. } => io_code(source),
            StoreError::Remote { .. } | StoreError::LifecycleRace(_) => OciCode::Unavailable,
            StoreError::CorruptLink { .. } | StoreError::Index(_) | StoreError::InUse(_) => OciCode::Internal,
        }
    }

    /// What the client is told: its own mistakes in full; the server's
    /// trouble without paths or system detail (the edge logs those).
    pub fn client_message(&self) -> String {
        match self {
            StoreError::Io { source, .. } if source.raw_os_error() == Some(libc::EROFS) => {
                "the registry's storage is read-only; nothing was written".into()
            }
            StoreError::Io { .. }
            | StoreError::Remote { .. }
            | StoreError::CorruptLink { .. }
            | StoreError::Index(_)
            | StoreError::InUse(_) => self.code().message().into(),
            other => other.to_string(),
        }
    }

    /// The server's own trouble, worth a log line with the detail.
    pub fn is_server_fault(&self) -> bool {
        matches!(
            self,
            StoreError::Io { .. }
                | StoreError::Remote { .. }
                | StoreError::CorruptLink { .. }
                | StoreError::Index(_)
                | StoreError::InUse(_)
        )
    }

    /// The path did not exist (for callers that turn that into "unknown").
    pub fn is_not_found(&self) -> bool {
        match self {
            StoreError::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            StoreError::Remote { source, .. } => matches!(**source, object_store::Error::NotFound { .. }),
            _ => false,
        }
    }

    pub fn remote(path: impl Into<String>) -> impl FnOnce(object_store::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Remote { path, source: Box::new(source) }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[cfg(test)]
mod tests {
    use super::*;

    fn io(errno: i32) -> StoreError {
        StoreError::Io { path: "docker/registry/v2/x".into(), source: std::io::Error::from_raw_os_error(errno) }
    }

    #[test]
    fn full_and_read_only_disks_are_named_without_paths() {
        for errno in [libc::ENOSPC, libc::EDQUOT] {
            assert_eq!(io(errno).code(), OciCode::StorageFull);
            assert!(!io(errno).client_message().contains("docker/registry"));
        }
        assert_eq!(io(libc::EROFS).code(), OciCode::Unavailable);
        assert!(io(libc::EROFS).client_message().contains("read-only"));
        assert_eq!(io(libc::EIO).code(), OciCode::Internal);
        assert_eq!(io(libc::EIO).client_message(), "internal server error");
    }
}
