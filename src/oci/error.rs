//! The one table of OCI error codes: each code's wire string, HTTP status and
//! default message sit together in one row (as Distribution's `register()`),
//! and no wire string appears in two rows, so a code always means one status.
//! Spec codes come first (distribution-spec "Error Codes", plus Docker's
//! TOOMANYREQUESTS); the rest are berth's own, for what the spec leaves uncoded.

/// An error code a client can receive.
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
    /// `n` is not a valid page size (Distribution's code).
    PaginationInvalid,
    /// An upload chunk out of order, or a blob range the blob cannot satisfy
    /// (Distribution's code for 416).
    RangeInvalid,
    /// A query parameter that is malformed or given twice.
    QueryInvalid,
    /// The request body is larger than allowed (413).
    TooLarge,
    /// The client sent its request body too slowly (408).
    RequestTimeout,
    /// The request URI is longer than `server.max_url_length` (414).
    UriTooLong,
    /// More request headers, or more header bytes, than allowed (431).
    HeadersTooLarge,
    /// No such endpoint (404).
    NotFound,
    /// A fault on our side (500); the detail is logged, not sent.
    Internal,
    /// An upstream could not be reached or failed (502).
    Upstream,
    /// The service cannot take the request now: upstream 503, read-only storage (503).
    Unavailable,
    /// The upstream did not answer in time (504).
    UpstreamTimeout,
    /// The registry's storage is full (507): nothing was written.
    StorageFull,
    /// The operation conflicts with one of its kind in progress (409), such
    /// as a second garbage collection.
    Busy,
}

/// One row of the table: wire string, HTTP status, default message.
type Row = (&'static str, u16, &'static str);

impl OciCode {
    fn row(self) -> Row {
        match self {
            OciCode::BlobUnknown => ("BLOB_UNKNOWN", 404, "blob unknown to registry"),
            OciCode::BlobUploadInvalid => ("BLOB_UPLOAD_INVALID", 400, "blob upload invalid"),
            OciCode::BlobUploadUnknown => ("BLOB_UPLOAD_UNKNOWN", 404, "blob upload unknown to registry"),
            OciCode::DigestInvalid => ("DIGEST_INVALID", 400, "provided digest did not match uploaded content"),
            OciCode::ManifestBlobUnknown => {
                ("MANIFEST_BLOB_UNKNOWN", 400, "manifest references a manifest or blob unknown to registry")
            }
            OciCode::ManifestInvalid => ("MANIFEST_INVALID", 400, "manifest invalid"),
            OciCode::ManifestUnknown => ("MANIFEST_UNKNOWN", 404, "manifest unknown to registry"),
            OciCode::NameInvalid => ("NAME_INVALID", 400, "invalid repository name"),
            OciCode::NameUnknown => ("NAME_UNKNOWN", 404, "repository name not known to registry"),
            OciCode::SizeInvalid => ("SIZE_INVALID", 400, "provided length did not match content length"),
            OciCode::Unauthorized => ("UNAUTHORIZED", 401, "authentication required"),
            OciCode::Denied => ("DENIED", 403, "requested access to the resource is denied"),
            OciCode::Unsupported => ("UNSUPPORTED", 405, "the operation is unsupported"),
            OciCode::TooManyRequests => ("TOOMANYREQUESTS", 429, "too many requests"),
            OciCode::PaginationInvalid => ("PAGINATION_NUMBER_INVALID", 400, "invalid number of results requested"),
            OciCode::RangeInvalid => ("RANGE_INVALID", 416, "requested range not satisfiable"),
            OciCode::QueryInvalid => ("QUERY_INVALID", 400, "invalid query parameters"),
            OciCode::TooLarge => ("TOO_LARGE", 413, "request body too large"),
            OciCode::RequestTimeout => ("REQUEST_TIMEOUT", 408, "the request body was not received in time"),
            OciCode::UriTooLong => ("URI_TOO_LONG", 414, "the request URI is too long"),
            OciCode::HeadersTooLarge => ("HEADERS_TOO_LARGE", 431, "the request headers are too large"),
            OciCode::NotFound => ("NOT_FOUND", 404, "no such endpoint"),
            OciCode::Internal => ("UNKNOWN", 500, "internal server error"),
            OciCode::Upstream => ("UPSTREAM_ERROR", 502, "upstream registry error"),
            OciCode::Unavailable => ("UNAVAILABLE", 503, "service unavailable"),
            OciCode::UpstreamTimeout => ("UPSTREAM_TIMEOUT", 504, "upstream registry did not answer in time"),
            OciCode::Busy => ("BUSY", 409, "an operation of this kind is already in progress"),
            OciCode::StorageFull => {
                ("STORAGE_FULL", 507, "the registry's storage is full; nothing was written, retry once space is freed")
            }
        }
    }

    /// The code string sent in the JSON error body.
    pub fn as_str(self) -> &'static str {
        self.row().0
    }

    /// The HTTP status of the code.
    pub fn status(self) -> u16 {
        self.row().1
    }

    /// The code's default message.
    pub fn message(self) -> &'static str {
        self.row().2
    }

    /// Every code, for the table's own checks.
    pub const ALL: [OciCode; 26] = [
        OciCode::BlobUnknown,
        OciCode::BlobUploadInvalid,
        OciCode::BlobUploadUnknown,
        OciCode::DigestInvalid,
        OciCode::ManifestBlobUnknown,
        OciCode::ManifestInvalid,
        OciCode::ManifestUnknown,
        OciCode::NameInvalid,
        OciCode::NameUnknown,
        OciCode::SizeInvalid,
        OciCode::Unauthorized,
        OciCode::Denied,
        OciCode::Unsupported,
        OciCode::TooManyRequests,
        OciCode::PaginationInvalid,
        OciCode::RangeInvalid,
        OciCode::QueryInvalid,
        OciCode::TooLarge,
        OciCode::RequestTimeout,
        OciCode::NotFound,
        OciCode::Internal,
        OciCode::Upstream,
        OciCode::Unavailable,
        OciCode::UpstreamTimeout,
        OciCode::StorageFull,
        OciCode::Busy,
    ];
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

    #[test]
    fn each_wire_string_has_one_row() {
        for (i, a) in OciCode::ALL.iter().enumerate() {
            for b in &OciCode::ALL[i + 1..] {
                assert_ne!(a.as_str(), b.as_str(), "{a:?} and {b:?} share a wire string");
            }
            assert!(a.as_str().bytes().all(|c| c.is_ascii_uppercase() || c == b'_'), "{a:?}");
            assert!((400..600).contains(&a.status()), "{a:?}");
        }
    }
}
