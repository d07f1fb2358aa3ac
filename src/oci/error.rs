//! The one table of OCI error codes: wire string, HTTP status and default
//! message (distribution-spec "Error Codes", plus Docker's TOOMANYREQUESTS).

/// An error code from the distribution spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OciCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    /// Not a spec code (Distribution's): `n` is not a valid page size.
    PaginationInvalid,
    /// Not a spec code: no such endpoint (404).
    NotFound,
    /// Not a spec code: a byte range the blob cannot satisfy (416).
    RangeInvalid,
    /// Not a spec code: the request is too large (413).
    TooLarge,
    /// Not a spec code: a fault on our side (500); the detail is logged, not sent.
    Internal,
    /// Not a spec code: an upstream could not be reached or failed (502).
    Upstream,
    /// Not a spec code: the upstream is unavailable (503).
    UpstreamUnavailable,
    /// Not a spec code: the upstream did not answer in time (504).
    UpstreamTimeout,
}

impl OciCode {
    /// The code string sent in the JSON error body.
    pub fn as_str(self) -> &'static str {
        match self {
            OciCode::BlobUnknown => "BLOB_UNKNOWN",
            OciCode::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            OciCode::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            OciCode::DigestInvalid => "DIGEST_INVALID",
            OciCode::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            OciCode::ManifestInvalid => "MANIFEST_INVALID",
            OciCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            OciCode::NameInvalid => "NAME_INVALID",
            OciCode::NameUnknown => "NAME_UNKNOWN",
            OciCode::SizeInvalid => "SIZE_INVALID",
            OciCode::Unauthorized => "UNAUTHORIZED",
            OciCode::Denied => "DENIED",
            OciCode::Unsupported => "UNSUPPORTED",
            OciCode::TooManyRequests => "TOOMANYREQUESTS",
            OciCode::PaginationInvalid => "PAGINATION_NUMBER_INVALID",
            OciCode::NotFound => "NOT_FOUND",
            OciCode::RangeInvalid => "BLOB_UPLOAD_INVALID",
            OciCode::TooLarge => "SIZE_INVALID",
            OciCode::Internal => "UNKNOWN",
            OciCode::Upstream | OciCode::UpstreamUnavailable | OciCode::UpstreamTimeout => "UNAVAILABLE",
        }
    }

    /// The HTTP status the spec gives for the code.
    pub fn status(self) -> u16 {
        match self {
            OciCode::BlobUnknown
            | OciCode::BlobUploadUnknown
            | OciCode::ManifestUnknown
            | OciCode::NameUnknown
            | OciCode::NotFound => 404,
            OciCode::BlobUploadInvalid
            | OciCode::DigestInvalid
            | OciCode::ManifestBlobUnknown
            | OciCode::ManifestInvalid
            | OciCode::NameInvalid
            | OciCode::SizeInvalid
            | OciCode::PaginationInvalid => 400,
            OciCode::Unauthorized => 401,
            OciCode::Denied => 403,
            OciCode::Unsupported => 405,
            OciCode::TooManyRequests => 429,
            OciCode::RangeInvalid => 416,
            OciCode::TooLarge => 413,
            OciCode::Internal => 500,
            OciCode::Upstream => 502,
            OciCode::UpstreamUnavailable => 503,
            OciCode::UpstreamTimeout => 504,
        }
    }

    /// The spec's default message for the code.
    pub fn message(self) -> &'static str {
        match self {
            OciCode::BlobUnknown => "blob unknown to registry",
            OciCode::BlobUploadInvalid => "blob upload invalid",
            OciCode::BlobUploadUnknown => "blob upload unknown to registry",
            OciCode::DigestInvalid => "provided digest did not match uploaded content",
            OciCode::ManifestBlobUnknown => "manifest references a manifest or blob unknown to registry",
            OciCode::ManifestInvalid => "manifest invalid",
            OciCode::ManifestUnknown => "manifest unknown to registry",
            OciCode::NameInvalid => "invalid repository name",
            OciCode::NameUnknown => "repository name not known to registry",
            OciCode::SizeInvalid => "provided length did not match content length",
            OciCode::Unauthorized => "authentication required",
            OciCode::Denied => "requested access to the resource is denied",
            OciCode::Unsupported => "the operation is unsupported",
            OciCode::TooManyRequests => "too many requests",
            OciCode::PaginationInvalid => "invalid number of results requested",
            OciCode::NotFound => "no such endpoint",
            OciCode::RangeInvalid => "requested range not satisfiable",
            OciCode::TooLarge => "request body too large",
            OciCode::Internal => "internal server error",
            OciCode::Upstream | OciCode::UpstreamUnavailable | OciCode::UpstreamTimeout => "upstream registry error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_codes_have_spec_statuses() {
        assert_eq!(OciCode::BlobUnknown.status(), 404);
        assert_eq!(OciCode::DigestInvalid.as_str(), "DIGEST_INVALID");
        assert_eq!(OciCode::ManifestBlobUnknown.status(), 400);
        assert_eq!(OciCode::Unsupported.status(), 405);
        assert_eq!(OciCode::TooManyRequests.as_str(), "TOOMANYREQUESTS");
    }
}
