//! `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<reference>`.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use bytes::BytesMut;
use futures::StreamExt;

use crate::store::BodyError;

use crate::oci::{Reference, RepoName};
use crate::registry::{RegistryError, Route};

use super::headers::{accepts, content_type, DOCKER_CONTENT_DIGEST, DOCKER_CONTENT_DIGEST_NAME, OCI_SUBJECT, STALE};
use super::uploads::Body;
use super::{ApiError, Reg};

pub async fn get(req: &HttpRequest, reg: &Reg, route: &Route, r: &Reference) -> Result<HttpResponse, ApiError> {
    let m = if req.method() == actix_web::http::Method::HEAD {
        reg.head_manifest(route, r).await?
    } else {
        reg.get_manifest(route, r).await?
    };
    if !accepts(req.headers(), &m.media_type) {
        return Err(ApiError::NotAcceptable(m.media_type));
    }
    // actix sends Content-Length but no body for HEAD.
    let mut resp = HttpResponse::Ok();
    match &m.head.content_type {
        Some(ct) => resp.insert_header((header::CONTENT_TYPE, ct.clone())),
        None => resp.content_type(m.media_type),
    };
    resp.insert_header((DOCKER_CONTENT_DIGEST_NAME, m.head.digest.clone()))
        .insert_header((header::ETAG, m.head.etag.clone()));
    if let Some(why) = m.stale.and_then(|w| header::HeaderValue::from_str(&w).ok()) {
        resp.insert_header((STALE, why));
    }
    Ok(resp.body(m.bytes))
}

/// Reads the manifest body, refusing it as soon as it passes the limit.
async fn read_limited(body: impl Body, limit: u64) -> Result<bytes::Bytes, ApiError> {
    let mut body = std::pin::pin!(body);
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| match e {
            BodyError::TimedOut(_) | BodyError::TooSlow(_) => ApiError::BodyTimedOut(e),
            BodyError::Broken(_) => ApiError::BodyBroken(e),
        })?;
        if (buf.len() + chunk.len()) as u64 > limit {
            return Err(RegistryError::ManifestTooLarge { limit }.into());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

pub async fn put(
    req: &HttpRequest,
    body: impl Body,
    reg: &Reg,
    name: &RepoName,
    r: &Reference,
) -> Result<HttpResponse, ApiError> {
    let limit = reg.max_manifest_size();
    if super::headers::content_length(req.headers()).is_some_and(|n| n > limit) {
        return Err(RegistryError::ManifestTooLarge { limit }.into());
    }
    let bytes = read_limited(body, limit).await?;
    let pushed = reg.put_manifest(name, r, content_type(req.headers()), bytes).await?;
    let mut resp = HttpResponse::Created();
    resp.insert_header((header::LOCATION, format!("/v2/{name}/manifests/{}", pushed.digest)))
        .insert_header((DOCKER_CONTENT_DIGEST, pushed.digest.to_string()));
    if let Some(subject) = pushed.subject {
        resp.insert_header((OCI_SUBJECT, subject.to_string()));
    }
    Ok(resp.finish())
}

pub async fn delete(reg: &Reg, name: &RepoName, r: &Reference) -> Result<HttpResponse, ApiError> {
    reg.delete_manifest(name, r).await?;
    Ok(HttpResponse::Accepted().finish())
}
