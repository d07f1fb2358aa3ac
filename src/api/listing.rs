//! `GET /v2/<name>/tags/list` and `GET /v2/_catalog`, with `n`/`last`
//! pagination and an RFC 5988 `Link` to the next page.

use actix_web::http::header;
use actix_web::HttpResponse;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::json;

use crate::oci::{OciCode, RepoName};
use crate::registry::Route;

use super::{ApiError, Params, Reg};

/// The catalog's page size when the client gives none (registry:2's default).
const CATALOG_DEFAULT_N: usize = 1000;

fn page_size(p: &Params) -> Result<Option<usize>, ApiError> {
    p.n.as_deref().map(|n| n.parse::<usize>()).transpose().map_err(|_| {
        ApiError::BadRequest(
            OciCode::PaginationInvalid,
            format!("n must be a non-negative integer, got {:?}", p.n.as_deref().unwrap_or("")),
        )
    })
}

/// `path` may carry a query already (`?ns=`); the page parameters join it.
fn next_link(path: &str, n: Option<usize>, items: &[String], more: bool) -> Option<String> {
    let (n, last) = (n?, items.last()?);
    more.then(|| {
        let last = utf8_percent_encode(last, NON_ALPHANUMERIC);
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("<{path}{sep}n={n}&last={last}>; rel=\"next\"")
    })
}

/// The tags of `name` (as the client named it, whatever store serves it).
pub async fn tags(reg: &Reg, name: &RepoName, route: &Route, p: &Params) -> Result<HttpResponse, ApiError> {
    let n = page_size(p)?;
    let (tags, more) = reg.list_tags(route, n, p.last.as_deref()).await?;
    let mut resp = HttpResponse::Ok();
    let path = match &p.ns {
        Some(ns) => format!("/v2/{name}/tags/list?ns={}", utf8_percent_encode(ns, NON_ALPHANUMERIC)),
        None => format!("/v2/{name}/tags/list"),
    };
    if let Some(link) = next_link(&path, n, &tags, more) {
        resp.insert_header((header::LINK, link));
    }
    Ok(resp.json(json!({ "name": name.as_str(), "tags": tags })))
}

/// The repositories `caller` may pull.
pub async fn catalog(reg: &Reg, p: &Params, caller: &crate::registry::Caller) -> Result<HttpResponse, ApiError> {
    let n = Some(page_size(p)?.unwrap_or(CATALOG_DEFAULT_N));
    let (repos, more) = reg.catalog(n, p.last.as_deref(), caller).await?;
    let mut resp = HttpResponse::Ok();
    if let Some(link) = next_link("/v2/_catalog", n, &repos, more) {
        resp.insert_header((header::LINK, link));
    }
    Ok(resp.json(json!({ "repositories": repos })))
}
