//! The `/v2/…` path grammar as a pure function: a path after `/v2/` becomes an
//! `Endpoint` with a validated name and reference. Parsed from the right,
//! because repository names may contain `/` and words like `blobs`.

use actix_web::http::Method;

use crate::oci::{Digest, ParseError, Reference, RepoName};
use crate::registry::Action;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags(RepoName),
    /// `/v2/<name>/manifests/<reference>`
    Manifest(RepoName, Reference),
    /// `/v2/<name>/blobs/<digest>`
    Blob(RepoName, Digest),
    /// `/v2/<name>/blobs/uploads/`
    Uploads(RepoName),
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload(RepoName, String),
    /// `/v2/<name>/referrers/<digest>`
    Referrers(RepoName, Digest),
}

impl Endpoint {
    /// The endpoint's name in metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Endpoint::Base => "base",
            Endpoint::Catalog => "catalog",
            Endpoint::Tags(_) => "tags",
            Endpoint::Manifest(..) => "manifest",
            Endpoint::Blob(..) => "blob",
            Endpoint::Uploads(_) => "uploads",
            Endpoint::Upload(..) => "upload",
            Endpoint::Referrers(..) => "referrers",
        }
    }
}

/// Why a path is not an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// The path has no endpoint shape at all (404).
    NotFound,
    /// The shape is right but a name or digest is invalid.
    Invalid(ParseError),
    /// A manifest path whose tag is not a valid tag: nothing can be stored
    /// under it, so reads answer 404 and pushes 400.
    InvalidTag(RepoName, ParseError),
}

impl From<ParseError> for RouteError {
    fn from(e: ParseError) -> Self {
        RouteError::Invalid(e)
    }
}

impl Endpoint {
    /// The repository the endpoint is in, if any.
    pub fn name(&self) -> Option<&RepoName> {
        match self {
            Endpoint::Base | Endpoint::Catalog => None,
            Endpoint::Tags(n) | Endpoint::Uploads(n) => Some(n),
            Endpoint::Manifest(n, _) | Endpoint::Blob(n, _) | Endpoint::Upload(n, _) | Endpoint::Referrers(n, _) => {
                Some(n)
            }
        }
    }

    /// Parses the path after `/v2/` (already percent-decoded).
    pub fn parse(tail: &str) -> Result<Endpoint, RouteError> {
        if tail.is_empty() {
            return Ok(Endpoint::Base);
        }
        if tail == "_catalog" {
            return Ok(Endpoint::Catalog);
        }
        let segs: Vec<&str> = tail.split('/').collect();
        let n = segs.len();
        let name = |k: usize| -> Result<RepoName, RouteError> {
            if n <= k {
                return Err(RouteError::NotFound);
            }
            Ok(segs[..n - k].join("/").parse()?)
        };
        let last = segs[n - 1];
        let before = |k: usize| if n > k { segs[n - 1 - k] } else { "" };
        match (before(2), before(1), last) {
            (_, "tags", "list") => Ok(Endpoint::Tags(name(2)?)),
            (_, "manifests", r) if !r.is_empty() => {
                let name = name(2)?;
                match r.parse::<Reference>() {
                    Ok(r) => Ok(Endpoint::Manifest(name, r)),
                    Err(e) if r.contains(':') => Err(RouteError::Invalid(e)),
                    Err(e) => Err(RouteError::InvalidTag(name, e)),
                }
            }
            (_, "referrers", d) if !d.is_empty() => Ok(Endpoint::Referrers(name(2)?, d.parse()?)),
            ("blobs", "uploads", "") => Ok(Endpoint::Uploads(name(3)?)),
            (_, "blobs", "uploads") => Ok(Endpoint::Uploads(name(2)?)),
            ("blobs", "uploads", id) => Ok(Endpoint::Upload(name(3)?, id.to_string())),
            (_, "blobs", d) if !d.is_empty() => Ok(Endpoint::Blob(name(2)?, d.parse()?)),
            _ => Err(RouteError::NotFound),
        }
    }
}

/// What a request does: the `Action` the name-space policy (and access
/// control) judges, or `None` when the method is not served on the endpoint.
pub fn action(endpoint: &Endpoint, method: &Method) -> Option<Action> {
    let reading = method == Method::GET || method == Method::HEAD;
    match endpoint {
        Endpoint::Base | Endpoint::Manifest(..) | Endpoint::Blob(..) if reading => Some(Action::Pull),
        Endpoint::Catalog | Endpoint::Tags(_) | Endpoint::Referrers(..) if method == Method::GET => Some(Action::Pull),
        Endpoint::Manifest(..) if method == Method::PUT => Some(Action::Push),
        Endpoint::Manifest(..) | Endpoint::Blob(..) if method == Method::DELETE => Some(Action::Delete),
        Endpoint::Uploads(_) if method == Method::POST => Some(Action::Push),
        // Status, chunks, the final PUT and cancelling all belong to the pushing client.
        Endpoint::Upload(..) if [Method::GET, Method::PATCH, Method::PUT, Method::DELETE].contains(method) => {
            Some(Action::Push)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::OciCode;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn name(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    #[test]
    fn parses_every_endpoint() {
        let d: Digest = D.parse().unwrap();
        assert_eq!(Endpoint::parse(""), Ok(Endpoint::Base));
        assert_eq!(Endpoint::parse("_catalog"), Ok(Endpoint::Catalog));
        assert_eq!(Endpoint::parse("a/b/tags/list"), Ok(Endpoint::Tags(name("a/b"))));
        assert_eq!(
            Endpoint::parse("a/manifests/latest"),
            Ok(Endpoint::Manifest(name("a"), Reference::Tag("latest".parse().unwrap())))
        );
        assert_eq!(
            Endpoint::parse(&format!("a/manifests/{D}")),
            Ok(Endpoint::Manifest(name("a"), Reference::Digest(d.clone())))
        );
        assert_eq!(Endpoint::parse(&format!("x/blobs/{D}")), Ok(Endpoint::Blob(name("x"), d.clone())));
        assert_eq!(Endpoint::parse("x/y/blobs/uploads/"), Ok(Endpoint::Uploads(name("x/y"))));
        assert_eq!(Endpoint::parse("x/y/blobs/uploads"), Ok(Endpoint::Uploads(name("x/y"))));
        assert_eq!(Endpoint::parse("x/blobs/uploads/abc"), Ok(Endpoint::Upload(name("x"), "abc".into())));
        assert_eq!(Endpoint::parse(&format!("x/referrers/{D}")), Ok(Endpoint::Referrers(name("x"), d.clone())));
    }

    #[test]
    fn actions_by_endpoint_and_method() {
        let d: Digest = D.parse().unwrap();
        let m = Endpoint::Manifest(name("a"), Reference::Digest(d.clone()));
        let b = Endpoint::Blob(name("a"), d);
        let up = Endpoint::Upload(name("a"), "id".into());
        let cases = [
            (&m, Method::GET, Some(Action::Pull)),
            (&m, Method::HEAD, Some(Action::Pull)),
            (&m, Method::PUT, Some(Action::Push)),
            (&m, Method::DELETE, Some(Action::Delete)),
            (&m, Method::POST, None),
            (&b, Method::HEAD, Some(Action::Pull)),
            (&b, Method::DELETE, Some(Action::Delete)),
            (&b, Method::PUT, None),
            (&up, Method::PATCH, Some(Action::Push)),
            (&up, Method::DELETE, Some(Action::Push)),
            (&up, Method::POST, None),
            (&Endpoint::Uploads(name("a")), Method::POST, Some(Action::Push)),
            (&Endpoint::Tags(name("a")), Method::GET, Some(Action::Pull)),
            (&Endpoint::Tags(name("a")), Method::DELETE, None),
            (&Endpoint::Catalog, Method::GET, Some(Action::Pull)),
            (&Endpoint::Base, Method::HEAD, Some(Action::Pull)),
        ];
        for (e, method, want) in cases {
            assert_eq!(action(e, &method), want, "{e:?} {method}");
        }
    }

    #[test]
    fn names_may_contain_endpoint_words() {
        let d: Digest = D.parse().unwrap();
        assert_eq!(Endpoint::parse(&format!("blobs/blobs/{D}")), Ok(Endpoint::Blob(name("blobs"), d)));
        assert_eq!(Endpoint::parse("manifests/tags/list"), Ok(Endpoint::Tags(name("manifests"))));
    }

    #[test]
    fn bad_parts_are_errors_with_codes() {
        assert_eq!(Endpoint::parse("nothing"), Err(RouteError::NotFound));
        assert_eq!(Endpoint::parse("tags/list"), Err(RouteError::NotFound));
        let code = |p: &str| match Endpoint::parse(p) {
            Err(RouteError::Invalid(e)) => e.code,
            other => panic!("{p}: {other:?}"),
        };
        assert_eq!(code("UPPER/manifests/x"), OciCode::NameInvalid);
        assert_eq!(code("a/../b/manifests/x"), OciCode::NameInvalid);
        assert_eq!(code("a//b/tags/list"), OciCode::NameInvalid);
        assert_eq!(code("a/blobs/sha256:zz"), OciCode::DigestInvalid);
        assert_eq!(code("a/blobs/md5:00"), OciCode::DigestInvalid);
        assert!(matches!(Endpoint::parse("a/manifests/-bad"), Err(RouteError::InvalidTag(_, _))));
        assert_eq!(code("a/manifests/sha256:00"), OciCode::DigestInvalid);
        assert_eq!(code(&format!("{}/manifests/latest", "a".repeat(300))), OciCode::NameInvalid);
        assert_eq!(code(&format!("{}/blobs/uploads/", ["abc"; 80].join("/"))), OciCode::NameInvalid);
    }
}
