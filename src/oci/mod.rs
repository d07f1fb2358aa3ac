//! Pure OCI distribution types: digests, names, references, manifests, the
//! table of error codes, and the reachability walk over manifests (generic
//! over how one is loaded). No I/O: every other layer may use these.

pub mod digest;
pub mod edges;
pub mod error;
pub mod manifest;
pub mod name;
pub mod reach;

pub use digest::{Algorithm, Digest, DigestHasher, DigestSet};
pub use edges::Edges;
pub use error::OciCode;
pub use manifest::{Descriptor, ManifestInfo, MediaType, Platform};
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
