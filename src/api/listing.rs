//! `GET /v2/<name>/tags/list` and `GET /v2/_catalog`, with `n`/`last`
//! pagination and an RFC 5988 `Link` to the next page.

use actix_web::http::header;
use actix_web::HttpResponse;
use serde_json::json;

use crate::oci::OciCode;
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

fn next_link(path: &str, n: Option<usize>, items: &[String], more: bool) -> Option<String> {
    let (n, last) = (n?, items.last()?);
    more.then(|| {
        let last = percent_encoding::utf8_percent_encode(last, percent_encoding::NON_ALPHANUMERIC);
        format!("<{path}?n={n}&last={last}>; rel=\"next\"")
    })
}

pub async fn tags(reg: &Reg, route: &Route, p: &Params) -> Result<HttpResponse, ApiError> {
    let n = page_size(p)?;
    let (tags, more) = reg.list_tags(route, n, p.last.as_deref()).await?;
    let mut resp = HttpResponse::Ok();
    if let Some(link) = next_link(&format!("/v2/{}/tags/list", route.storage()), n, &tags, more) {
        resp.insert_header((header::LINK, link));
    }
    Ok(resp.json(json!({ "name": route.storage().as_str(), "tags": tags })))
}

pub async fn catalog(reg: &Reg, p: &Params) -> Result<HttpResponse, ApiError> {
    let n = Some(page_size(p)?.unwrap_or(CATALOG_DEFAULT_N));
    let (repos, more) = reg.catalog(n, p.last.as_deref()).await?;
    let mut resp = HttpResponse::Ok();
    if let Some(link) = next_link("/v2/_catalog", n, &repos, more) {
        resp.insert_header((header::LINK, link));
    }
    Ok(resp.json(json!({ "repositories": repos })))
}
