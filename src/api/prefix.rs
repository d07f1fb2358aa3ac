//! `server.prefix` (registry:2's `http.prefix`): the registry answers under
//! a path prefix, `/<prefix>/v2/…`, for a reverse proxy that forwards it
//! unchanged. Requests under the prefix are served as if it were not there;
//! the API without it answers 404, as registry:2's does; the other endpoints
//! (`/healthz`, `/readyz`, `/metrics`, `/ui/`) answer both ways. What berth
//! writes back as a path (`Location`, `Link`, the token realm) gets the prefix.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Uri;
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};

/// The configured prefix, without a trailing slash (`/registry`); empty: none.
#[derive(Debug, Clone, Default)]
pub struct Prefix(pub String);

impl Prefix {
    /// From the configuration's value (`/registry/` or `registry`); an error
    /// says what is wrong with it.
    pub fn parse(s: &str) -> Result<Prefix, String> {
        let trimmed = s.trim_matches('/');
        if trimmed.is_empty() {
            return Ok(Prefix::default());
        }
        let valid = trimmed
            .split('/')
            .all(|seg| !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)));
        match valid && trimmed != "v2" && !trimmed.starts_with("v2/") {
            true => Ok(Prefix(format!("/{trimmed}"))),
            false => Err(format!("server.prefix {s:?}: expected path segments such as /registry, not /v2")),
        }
    }
}

fn is_api(path: &str) -> bool {
    path == "/v2" || path.starts_with("/v2/")
}

pub async fn strip(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let prefix = match req.app_data::<web::Data<Prefix>>() {
        Some(p) if !p.0.is_empty() => p.0.clone(),
        _ => return next.call(req).await.map(ServiceResponse::map_into_left_body),
    };
    let path = req.path().to_string();
    match path.strip_prefix(prefix.as_str()).filter(|rest| rest.starts_with('/')) {
        Some(rest) => {
            let pq = match req.uri().query() {
                Some(q) => format!("{rest}?{q}"),
                None => rest.to_string(),
            };
            let uri: Uri = pq.parse().map_err(|_| actix_web::error::ErrorBadRequest("bad path"))?;
            req.match_info_mut().get_mut().update(&uri);
            req.head_mut().uri = uri;
        }
        None if is_api(&path) => {
            let resp = HttpResponse::NotFound().json(serde_json::json!({"errors": [{
                "code": "NAME_UNKNOWN", "message": format!("this registry answers under {prefix}/v2/"), "detail": null}]}));
            return Ok(req.into_response(resp).map_into_right_body());
        }
        None => return next.call(req).await.map(ServiceResponse::map_into_left_body),
    }
    let mut res = next.call(req).await?;
    let headers = res.headers_mut();
    for name in [header::LOCATION, header::LINK, header::WWW_AUTHENTICATE] {
        let Some(value) = headers.get(&name).and_then(|v| v.to_str().ok()) else { continue };
        let prefixed = match name == header::WWW_AUTHENTICATE {
            true => value.replace("/v2/token", &format!("{prefix}/v2/token")),
            false => prefixed_paths(value, &prefix),
        };
        if let Ok(v) = HeaderValue::from_str(&prefixed) {
            headers.insert(name, v);
        }
    }
    Ok(res.map_into_left_body())
}

/// `/v2/…` (alone, or in `<…>` of a Link) with the prefix in front.
fn prefixed_paths(value: &str, prefix: &str) -> String {
    match value.strip_prefix('<') {
        Some(rest) if rest.starts_with("/v2/") => format!("<{prefix}{rest}"),
        _ if value.starts_with("/v2/") => format!("{prefix}{value}"),
        _ => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_and_paths_get_them() {
        assert_eq!(Prefix::parse("/registry/").unwrap().0, "/registry");
        assert_eq!(Prefix::parse("a/b").unwrap().0, "/a/b");
        assert_eq!(Prefix::parse("/").unwrap().0, "");
        assert!(Prefix::parse("/v2").is_err() && Prefix::parse("/a b").is_err());
        assert_eq!(prefixed_paths("/v2/a/blobs/uploads/x", "/r"), "/r/v2/a/blobs/uploads/x");
        assert_eq!(
            prefixed_paths("</v2/a/tags/list?n=1&last=b>; rel=\"next\"", "/r"),
            "</r/v2/a/tags/list?n=1&last=b>; rel=\"next\""
        );
        assert_eq!(prefixed_paths("https://elsewhere/x", "/r"), "https://elsewhere/x");
    }
}
