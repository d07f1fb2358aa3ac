//! `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<reference>`.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use bytes::BytesMut;
use futures::StreamExt;

use crate::store::BodyError;

use crate::oci::{Reference, RepoName};
use crate::registry::{RegistryError, Route};

use super::headers::{accepts, content_type, DOCKER_CONTENT_DIGEST, DOCKER_CONTENT_DIGEST_NAME, OCI_SUBJECT, STALE};
use super::notify;
use super::uploads::Body;
use super::{ApiError, Reg};
use crate::events::Target;

pub async fn get(req: &HttpRequest, reg: &Reg, route: &Route, r: &Reference) -> Result<HttpResponse, ApiError> {
    let m = if req.method() == actix_web::http::Method::HEAD {
        reg.head_manifest(route, r).await?
    } else {
        reg.get_manifest(route, r).await?
    };
    if !accepts(req.headers(), &m.media_type) {
        return Err(ApiError::NotAcceptable(m.media_type));
    }
    notify::note(req, reg, "pull", Some(route), || {
        let mut t =
            Target::manifest(&notify::repository(route), &m.digest, &m.media_type, m.bytes.len() as u64, r.tag());
        if reg.events().include_references() {
            if let Ok(info) = crate::oci::ManifestInfo::parse_stored(&m.bytes) {
                t.references = crate::events::references(&info);
            }
        }
        t
    });
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
    let size = bytes.len() as u64;
    let pushed = reg.put_manifest(name, r, content_type(req.headers()), bytes).await?;
    notify::note(req, reg, "push", None, || Target {
        references: pushed.references.clone(),
        ..Target::manifest(name.as_str(), &pushed.digest, &pushed.media_type, size, r.tag())
    });
    let mut resp = HttpResponse::Created();
    resp.insert_header((header::LOCATION, format!("/v2/{name}/manifests/{}", pushed.digest)))
        .insert_header((DOCKER_CONTENT_DIGEST, pushed.digest.to_string()));
    if let Some(subject) = pushed.subject {
        resp.insert_header((OCI_SUBJECT, subject.to_string()));
    }
    Ok(resp.finish())
}

pub async fn delete(req: &HttpRequest, reg: &Reg, name: &RepoName, r: &Reference) -> Result<HttpResponse, ApiError> {
    let tags = reg.delete_manifest(name, r).await?;
    notify::note(req, reg, "delete", None, || match r {
        Reference::Digest(d) => Target::deleted(name.as_str(), Some(d), None),
        Reference::Tag(t) => Target::deleted(name.as_str(), None, Some(t.as_str())),
    });
    // As registry:2: a delete by digest untags, and says so for each tag.
    for t in &tags {
        notify::note(req, reg, "delete", None, || Target::deleted(name.as_str(), None, Some(t.as_str())));
    }
    Ok(HttpResponse::Accepted().finish())
}
