//! `/_berth/peer/…`: what sibling mirrors ask each other (`mirror::peers`),
//! answered only to a caller with the siblings' token or certificate (others
//! get a 404, as if nothing were here), each answer naming this berth's
//! instance id.
//!
//! - `HEAD|GET /_berth/peer/blobs/<digest>`: a blob mirrored content holds;
//! - `HEAD|GET /_berth/peer/manifests/<digest>`: a manifest it holds;
//! - `POST /_berth/peer/claim/<digest>` (the asker's id in `X-Berth-Peer-Id`):
//!   as the blob's owner, grants the asker the fetch (`{}`) or names who
//!   fetches it (`{"holder": id}`);
//! - `GET /_berth/peer/fetch/<digest>?ns=<host>&remote=<repository>`: the
//!   blob, fetched upstream by this berth if need be (joining a fetch in
//!   flight), for a sibling told this berth fetches it;
//! - `GET /_berth/peer/tag?ns=<host>&remote=<repository>&tag=<tag>`: the
//!   manifest a mirrored tag points to here, fresh or not, for a sibling
//!   whose upstream is down (it serves it as stale).

use actix_web::body::SizedStream;
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use crate::mirror::peers::{ID_HEADER, TOKEN_HEADER};
use crate::oci::Digest;

use super::headers::DOCKER_CONTENT_DIGEST;
use super::{ApiError, Reg};

/// This berth's id, when the request comes from a sibling with the token.
fn sibling(req: &HttpRequest, reg: &Reg) -> Option<String> {
    let peers = reg.peers()?;
    let presented = req.headers().get(TOKEN_HEADER).and_then(|v| v.to_str().ok());
    let chain = req.conn_data::<crate::tls::ClientChain>();
    peers.admits(presented, chain).then(|| peers.id().to_string())
}

fn digest(path: &str) -> Result<Digest, ApiError> {
    path.parse().map_err(|_| ApiError::Query(format!("{path:?} is not a digest")))
}

fn not_here(id: Option<String>) -> HttpResponse {
    let mut r = HttpResponse::NotFound();
    if let Some(id) = id {
        r.insert_header((ID_HEADER, id));
    }
    r.finish()
}

pub async fn blob(req: HttpRequest, reg: Reg, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let Some(id) = sibling(&req, &reg) else { return Ok(not_here(None)) };
    let d = digest(&path)?;
    let head = req.method() == Method::HEAD;
    let Some((size, body)) = reg.peer_blob(&d, !head).await? else { return Ok(not_here(Some(id))) };
    let mut resp = HttpResponse::Ok();
    resp.insert_header((ID_HEADER, id)).insert_header((DOCKER_CONTENT_DIGEST, d.to_string()));
    Ok(match body {
        Some(body) => resp.body(SizedStream::new(size, body)),
        None => resp.body(SizedStream::new(size, futures::stream::empty::<Result<bytes::Bytes, std::io::Error>>())),
    })
}

pub async fn manifest(req: HttpRequest, reg: Reg, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let Some(id) = sibling(&req, &reg) else { return Ok(not_here(None)) };
    let d = digest(&path)?;
    let Some((media_type, bytes)) = reg.peer_manifest(&d).await? else { return Ok(not_here(Some(id))) };
    let mut resp = HttpResponse::Ok();
    resp.insert_header((ID_HEADER, id)).insert_header((DOCKER_CONTENT_DIGEST, d.to_string())).content_type(media_type);
    Ok(match req.method() == Method::HEAD {
        true => resp.body(SizedStream::new(
            bytes.len() as u64,
            futures::stream::empty::<Result<bytes::Bytes, std::io::Error>>(),
        )),
        false => resp.body(bytes),
    })
}

pub async fn claim(req: HttpRequest, reg: Reg, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let Some(id) = sibling(&req, &reg) else { return Ok(not_here(None)) };
    let d = digest(&path)?;
    let asker = req
        .headers()
        .get(ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::Query(format!("a claim names its asker in {ID_HEADER}")))?;
    let holder = reg.peer_claim(&d, asker);
    Ok(HttpResponse::Ok().insert_header((ID_HEADER, id)).json(crate::mirror::peers::ClaimAnswer { holder }))
}

#[derive(Deserialize)]
pub struct FetchQuery {
    ns: String,
    remote: String,
}

pub async fn fetch(
    req: HttpRequest,
    reg: Reg,
    path: web::Path<String>,
    query: web::Query<FetchQuery>,
) -> Result<HttpResponse, ApiError> {
    let Some(id) = sibling(&req, &reg) else { return Ok(not_here(None)) };
    let d = digest(&path)?;
    let route = reg.peer_route(&query.ns, &query.remote)?;
    // This fetch is the one for every sibling: it asks none of them.
    let blob = crate::mirror::peers::HOP.scope((), reg.open_blob(&route, &d, None)).await?;
    let mut resp = HttpResponse::Ok();
    resp.insert_header((ID_HEADER, id)).insert_header((DOCKER_CONTENT_DIGEST, d.to_string()));
    Ok(match blob.size {
        Some(size) => resp.body(SizedStream::new(size, blob.body)),
        None => resp.streaming(blob.body),
    })
}

#[derive(Deserialize)]
pub struct TagQuery {
    ns: String,
    remote: String,
    tag: String,
}

pub async fn tag(req: HttpRequest, reg: Reg, query: web::Query<TagQuery>) -> Result<HttpResponse, ApiError> {
    let Some(id) = sibling(&req, &reg) else { return Ok(not_here(None)) };
    let Some((d, media_type, bytes)) = reg.peer_tag(&query.ns, &query.remote, &query.tag).await? else {
        return Ok(not_here(Some(id)));
    };
    Ok(HttpResponse::Ok()
        .insert_header((ID_HEADER, id))
        .insert_header((DOCKER_CONTENT_DIGEST, d.to_string()))
        .content_type(media_type)
        .body(bytes))
}
