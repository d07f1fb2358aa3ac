//! Byte ranges of blobs (RFC 9110 `Range`), resolved against a blob's size.

/// A byte range of a blob, inclusive, as resolved against its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

/// A `Range` request before the blob's size is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// `bytes=start-` or `bytes=start-end`.
    From { start: u64, end: Option<u64> },
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

impl RangeRequest {
    /// A `Range: bytes=…` value. Forms we do not serve (several ranges, other
    /// units, bad syntax) are `None`, and the whole blob is sent (RFC 9110).
    pub fn parse(value: &str) -> Option<RangeRequest> {
        let spec = value.strip_prefix("bytes=")?;
        if spec.contains(',') {
            return None;
        }
        let (s, e) = spec.trim().split_once('-')?;
        match (s.trim(), e.trim()) {
            ("", n) => n.parse().ok().map(RangeRequest::Suffix),
            (s, "") => s.parse().ok().map(|start| RangeRequest::From { start, end: None }),
            (s, e) => {
                let (start, end) = (s.parse().ok()?, e.parse().ok()?);
                (end >= start).then_some(RangeRequest::From { start, end: Some(end) })
            }
        }
    }

    /// Resolves against the blob size; `None` when unsatisfiable (RFC 9110 §14.1.2).
    pub fn resolve(self, size: u64) -> Option<ByteRange> {
        match self {
            RangeRequest::From { start, end } if start < size => {
                Some(ByteRange { start, end: end.map_or(size - 1, |e| e.min(size - 1)) })
            }
            RangeRequest::Suffix(n) if n > 0 && size > 0 => {
                Some(ByteRange { start: size.saturating_sub(n), end: size - 1 })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_like_rfc9110() {
        let r = |start, end| Some(ByteRange { start, end });
        assert_eq!(RangeRequest::From { start: 0, end: Some(9) }.resolve(100), r(0, 9));
        assert_eq!(RangeRequest::From { start: 90, end: Some(200) }.resolve(100), r(90, 99));
        assert_eq!(RangeRequest::From { start: 10, end: None }.resolve(100), r(10, 99));
        assert_eq!(RangeRequest::Suffix(10).resolve(100), r(90, 99));
        assert_eq!(RangeRequest::Suffix(500).resolve(100), r(0, 99));
        assert_eq!(RangeRequest::From { start: 100, end: None }.resolve(100), None);
        assert_eq!(RangeRequest::Suffix(0).resolve(100), None);
    }
}
