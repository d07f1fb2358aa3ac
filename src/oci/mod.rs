//! Pure OCI distribution types: digests, names, references, manifests and the
//! table of error codes. No I/O and no async: every other layer may use these.

pub mod digest;
pub mod error;
pub mod manifest;
pub mod name;

pub use digest::{Algorithm, Digest, DigestHasher};
pub use error::OciCode;
pub use manifest::{ManifestInfo, MediaType};
pub use name::{Reference, RepoName, Tag};

/// A value that could not be parsed from client input; carries the OCI code
/// the client should see and a message that says what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    pub code: OciCode,
    pub message: String,
}

impl ParseError {
    pub fn new(code: OciCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}
