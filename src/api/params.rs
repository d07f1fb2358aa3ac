//! The query parameters of `/v2/` requests, parsed strictly: a parameter
//! berth reads that is given twice (`?n=1&n=2`) is a client mistake, answered
//! 400 `QUERY_INVALID` and not guessed at. Parameters berth does not read are ignored.

use super::ApiError;

/// Query parameters any `/v2/` endpoint may take.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Params {
    pub digest: Option<String>,
    pub mount: Option<String>,
    pub from: Option<String>,
    pub n: Option<String>,
    pub last: Option<String>,
    pub artifact_type: Option<String>,
    /// The registry a mirror request is for (containerd's `?ns=`).
    pub ns: Option<String>,
}

impl Params {
    pub fn parse(query: &str) -> Result<Params, ApiError> {
        let mut p = Params::default();
        for pair in query.split('&').filter(|s| !s.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                let s = s.replace('+', " ");
                percent_encoding::percent_decode_str(&s).decode_utf8_lossy().into_owned()
            };
            let slot = match decode(key).as_str() {
                "digest" => &mut p.digest,
                "mount" => &mut p.mount,
                "from" => &mut p.from,
                "n" => &mut p.n,
                "last" => &mut p.last,
                "artifactType" => &mut p.artifact_type,
                "ns" => &mut p.ns,
                _ => continue,
            };
            if slot.is_some() {
                return Err(ApiError::Query(format!("query parameter {:?} is given more than once", decode(key))));
            }
            *slot = Some(decode(value));
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_parameters_and_refuses_repeats() {
        let p = Params::parse("n=10&last=a%2Fb&ns=docker.io&x=1&x=2&artifactType=a%2Bb").unwrap();
        assert_eq!(p.n.as_deref(), Some("10"));
        assert_eq!(p.last.as_deref(), Some("a/b"));
        assert_eq!(p.ns.as_deref(), Some("docker.io"));
        assert_eq!(p.artifact_type.as_deref(), Some("a+b"));
        assert_eq!(Params::parse("").unwrap(), Params::default());
        for bad in ["n=1&n=2", "digest=a&digest=a", "ns=a&ns=b", "mount=x&mount"] {
            match Params::parse(bad) {
                Err(ApiError::Query(_)) => {}
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert_eq!(Params::parse("mount=x&from=a%2Fb").unwrap().from.as_deref(), Some("a/b"));
        assert_eq!(
            Params::parse("digest=%ZZ").unwrap().digest.as_deref(),
            Some("%ZZ"),
            "kept for the digest parser to refuse"
        );
    }
}
