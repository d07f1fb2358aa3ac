//! Header names and small header parsers shared by the handlers.

use actix_web::http::header::{self, HeaderMap, HeaderName};

use crate::registry::RangeRequest;

use super::ApiError;

pub const DOCKER_CONTENT_DIGEST: &str = "Docker-Content-Digest";
/// The same as a header name made at compile time, for the hot manifest GET
/// (the string would be parsed into a name on every response).
pub const DOCKER_CONTENT_DIGEST_NAME: HeaderName = HeaderName::from_static("docker-content-digest");
pub const DOCKER_UPLOAD_UUID: &str = "Docker-Upload-UUID";
pub const API_VERSION: (&str, &str) = ("Docker-Distribution-API-Version", "registry/2.0");
pub const OCI_CHUNK_MIN_LENGTH: &str = "OCI-Chunk-Min-Length";
pub const OCI_SUBJECT: &str = "OCI-Subject";
pub const OCI_FILTERS_APPLIED: &str = "OCI-Filters-Applied";
/// Says that mirrored content (a tag, a referrers list) was served without
/// asking its upstream, and why.
pub const STALE: &str = "X-Berth-Stale";

fn get(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|s| !s.is_empty())
}

pub fn content_type(headers: &HeaderMap) -> Option<&str> {
    get(headers, header::CONTENT_TYPE)
}

pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    get(headers, header::CONTENT_LENGTH).and_then(|v| v.parse().ok())
}

/// An upload chunk's `Content-Range` (see `parse_chunk_range`). Returns (start, length).
pub fn chunk_range(headers: &HeaderMap) -> Result<Option<(u64, u64)>, ApiError> {
    let Some(v) = get(headers, header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let bad = || ApiError::ChunkRange(format!("invalid Content-Range {v:?}: expected <start>-<end>"));
    parse_chunk_range(v).map(Some).ok_or_else(bad)
}

/// `<start>-<end>` (inclusive, as registry clients send it) or the RFC form
/// `bytes <start>-<end>/<total>`, as (start, length).
pub fn parse_chunk_range(v: &str) -> Option<(u64, u64)> {
    let spec = v.strip_prefix("bytes ").unwrap_or(v);
    let spec = spec.split('/').next().unwrap_or(spec);
    let (s, e) = spec.split_once('-')?;
    let (s, e): (u64, u64) = (s.trim().parse().ok()?, e.trim().parse().ok()?);
    if e < s {
        return None;
    }
    // 0-18446744073709551615 would be 2^64 bytes (found by the fuzzer).
    Some((s, (e - s).checked_add(1)?))
}

/// A blob request's `Range` (see `RangeRequest::parse`).
pub fn byte_range(headers: &HeaderMap) -> Option<RangeRequest> {
    RangeRequest::parse(get(headers, header::RANGE)?)
}

/// Whether a manifest of `media_type` may be served to a client with these
/// `Accept` headers (RFC 9110 §12.5.1): the most specific entry that matches
/// the type decides, and `q=0` there means "not acceptable". No Accept
/// accepts everything.
pub fn accepts(headers: &HeaderMap, media_type: &str) -> bool {
    let (main_type, _) = media_type.split_once('/').unwrap_or((media_type, ""));
    let mut any = false;
    // (specificity, q) of the most specific matching entry.
    let mut best: Option<(u8, f32)> = None;
    for v in headers.get_all(header::ACCEPT) {
        let Ok(v) = v.to_str() else { continue };
        for item in v.split(',') {
            let mut parts = item.split(';');
            let mt = parts.next().unwrap_or("").trim();
            if mt.is_empty() {
                continue;
            }
            any = true;
            let specificity = if mt.eq_ignore_ascii_case(media_type) {
                3
            } else if mt.strip_suffix("/*").is_some_and(|t| t.eq_ignore_ascii_case(main_type)) {
                2
            } else if mt == "*/*" {
                1
            } else {
                continue;
            };
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q=")))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if best.is_none_or(|(s, _)| specificity > s) {
                best = Some((specificity, q));
            }
        }
    }
    match best {
        Some((_, q)) => q > 0.0,
        None => !any,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        m
    }

    #[test]
    fn chunk_ranges() {
        assert_eq!(chunk_range(&h(&[("content-range", "0-9")])).unwrap(), Some((0, 10)));
        assert_eq!(chunk_range(&h(&[("content-range", "bytes 10-19/*")])).unwrap(), Some((10, 10)));
        assert_eq!(chunk_range(&h(&[])).unwrap(), None);
        assert!(chunk_range(&h(&[("content-range", "9-0")])).is_err());
        assert!(chunk_range(&h(&[("content-range", "x")])).is_err());
        // The fuzzer's find: a range of 2^64 bytes wrapped to length 0.
        assert_eq!(parse_chunk_range("0-18446744073709551615"), None);
        assert_eq!(parse_chunk_range("1-18446744073709551615"), Some((1, u64::MAX)));
    }

    #[test]
    fn blob_ranges() {
        assert_eq!(byte_range(&h(&[("range", "bytes=0-9")])), Some(RangeRequest::From { start: 0, end: Some(9) }));
        assert_eq!(byte_range(&h(&[("range", "bytes=5-")])), Some(RangeRequest::From { start: 5, end: None }));
        assert_eq!(byte_range(&h(&[("range", "bytes=-5")])), Some(RangeRequest::Suffix(5)));
        assert_eq!(byte_range(&h(&[("range", "bytes=0-1,4-5")])), None);
        assert_eq!(byte_range(&h(&[("range", "items=0-1")])), None);
    }

    #[test]
    fn accept_negotiation() {
        let oci = "application/vnd.oci.image.manifest.v1+json";
        assert!(accepts(&h(&[]), oci));
        assert!(accepts(&h(&[("accept", "*/*")]), oci));
        assert!(accepts(
            &h(&[("accept", "application/vnd.docker.distribution.manifest.v2+json"), ("accept", oci)]),
            oci
        ));
        assert!(accepts(&h(&[("accept", &format!("text/x, {oci}; q=0.5"))]), oci));
        assert!(!accepts(&h(&[("accept", "application/vnd.docker.distribution.manifest.v2+json")]), oci));
        assert!(accepts(&h(&[("accept", "application/*")]), oci));
        // q=0 refuses, and the most specific entry wins over a wildcard.
        assert!(!accepts(&h(&[("accept", &format!("{oci};q=0"))]), oci));
        assert!(!accepts(&h(&[("accept", &format!("*/*, {oci}; q=0"))]), oci));
        assert!(!accepts(&h(&[("accept", "application/*;q=0")]), oci));
        assert!(accepts(&h(&[("accept", &format!("*/*;q=0, {oci};q=0.1"))]), oci));
        assert!(accepts(&h(&[("accept", &format!("{oci};q=0.001"))]), oci));
    }
}
