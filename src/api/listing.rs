//! `GET /v2/<name>/tags/list` and `GET /v2/_catalog`, with `n`/`last`
//! pagination and an RFC 5988 `Link` to the next page; and `GET /v1/search`,
//! what `docker search myhost:5000/<term>` asks, answered from the catalog.

use actix_web::http::header;
use actix_web::HttpResponse;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::json;

use crate::oci::RepoName;
use crate::registry::Route;

use super::{ApiError, Params, Reg};

/// The catalog's page size when the client gives none (registry:2's default).
const CATALOG_DEFAULT_N: usize = 1000;

fn page_size(p: &Params) -> Result<Option<usize>, ApiError> {
    p.n.as_deref().map(|n| n.parse::<usize>()).transpose().map_err(|_| {
        ApiError::Pagination(format!("n must be a non-negative integer, got {:?}", p.n.as_deref().unwrap_or("")))
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

/// `docker search`'s page size when it gives none, and the most it may ask.
const SEARCH_DEFAULT_N: usize = 25;
const SEARCH_MAX_N: usize = 100;

#[derive(serde::Deserialize)]
pub struct SearchQuery {
    #[serde(default)]
    q: String,
    n: Option<String>,
    page: Option<String>,
}

/// The catalog names (pushed and mirrored, those `caller` may pull) that
/// contain `q` (case-insensitive), one page of them.
pub async fn search_names(
    reg: &Reg,
    q: &SearchQuery,
    caller: &crate::registry::Caller,
) -> Result<serde_json::Value, ApiError> {
    let number = |v: &Option<String>, what: &str, default: usize| match v.as_deref() {
        None | Some("") => Ok(default),
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|&x| x > 0)
            .ok_or_else(|| ApiError::Pagination(format!("{what} must be a positive integer, got {s:?}"))),
    };
    let n = number(&q.n, "n", SEARCH_DEFAULT_N)?.min(SEARCH_MAX_N);
    let page = number(&q.page, "page", 1)?;
    let term = q.q.to_lowercase();
    let (names, _) = reg.catalog(None, None, caller).await?;
    let found: Vec<String> = names.into_iter().filter(|name| name.contains(&term)).collect();
    let results: Vec<serde_json::Value> = found
        .iter()
        .skip((page - 1).saturating_mul(n))
        .take(n)
        .map(|name| {
            json!({ "name": name, "description": "", "star_count": 0, "is_official": false, "is_automated": false })
        })
        .collect();
    Ok(json!({
        "query": q.q,
        "num_results": found.len(),
        "num_pages": found.len().div_ceil(n),
        "page": page,
        "page_size": n,
        "results": results,
    }))
}
