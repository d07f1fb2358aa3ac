//! Blob uploads: `POST …/blobs/uploads/` (session, monolithic, mount),
//! `PATCH`/`PUT`/`GET`/`DELETE …/blobs/uploads/<id>`.

use std::net::IpAddr;

use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use bytes::Bytes;
use futures::Stream;

use crate::oci::{Digest, RepoName};
use crate::registry::UploadStart;
use crate::store::{BodyError, UploadStatus};

use super::headers::{chunk_range, content_length, DOCKER_CONTENT_DIGEST, DOCKER_UPLOAD_UUID, OCI_CHUNK_MIN_LENGTH};
use super::{notify, ApiError, Params, Reg};
use crate::events::Target;

/// The smallest chunk berth asks for: none, any size is accepted.
const CHUNK_MIN_LENGTH: u64 = 0;

/// 201 for a blob that now exists in `name`.
fn created(name: &RepoName, d: &Digest) -> HttpResponse {
    HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/v2/{name}/blobs/{d}")))
        .insert_header((DOCKER_CONTENT_DIGEST, d.to_string()))
        .finish()
}

/// The session's location and progress (`Range` is inclusive; "0-0" when empty, as registry:2).
fn session(status: StatusCode, name: &RepoName, s: &UploadStatus) -> HttpResponseBuilder {
    let mut b = HttpResponse::build(status);
    b.insert_header((header::LOCATION, format!("/v2/{name}/blobs/uploads/{}", s.id)))
        .insert_header((header::RANGE, format!("0-{}", s.size.saturating_sub(1))))
        .insert_header((DOCKER_UPLOAD_UUID, s.id.clone()));
    b
}

fn digest_param(p: &Params) -> Result<Digest, ApiError> {
    let d = p.digest.as_deref().ok_or(ApiError::DigestMissing)?;
    Ok(d.parse()?)
}

/// A request body, as the store reads it.
pub trait Body: Stream<Item = Result<Bytes, BodyError>> {}
impl<S: Stream<Item = Result<Bytes, BodyError>>> Body for S {}

/// Notes the push (or mount) of `d` into `name`, with its size.
async fn note_stored(req: &HttpRequest, reg: &Reg, name: &RepoName, d: &Digest, from: Option<&RepoName>) {
    if !reg.events().enabled() {
        return;
    }
    let size = reg.stat_blob(&crate::registry::Route::Local(name.clone()), d).await.unwrap_or_default();
    let action = if from.is_some() { "mount" } else { "push" };
    notify::note(req, reg, action, None, || Target {
        from_repository: from.map(ToString::to_string).unwrap_or_default(),
        ..Target::blob(name.as_str(), d, size)
    });
}

pub async fn start(
    req: &HttpRequest,
    body: impl Body,
    reg: &Reg,
    name: &RepoName,
    p: &Params,
    owner: Option<IpAddr>,
    caller: &crate::registry::Caller,
) -> Result<HttpResponse, ApiError> {
    if p.digest.is_some() {
        let d = digest_param(p)?;
        reg.upload_blob(name, body, &d, owner).await?;
        note_stored(req, reg, name, &d, None).await;
        return Ok(created(name, &d));
    }
    let mount = match &p.mount {
        Some(m) => Some((m.parse::<Digest>()?, p.from.as_deref().map(str::parse::<RepoName>).transpose()?)),
        None => None,
    };
    let from = mount.as_ref().and_then(|m| m.1.clone());
    match reg.start_upload(name, mount, owner, caller).await? {
        UploadStart::Mounted(d) => {
            note_stored(req, reg, name, &d, from.as_ref()).await;
            Ok(created(name, &d))
        }
        UploadStart::Session(s) => {
            Ok(session(StatusCode::ACCEPTED, name, &s).insert_header((OCI_CHUNK_MIN_LENGTH, CHUNK_MIN_LENGTH)).finish())
        }
    }
}

pub async fn patch(
    req: &HttpRequest,
    body: impl Body,
    reg: &Reg,
    name: &RepoName,
    id: &str,
) -> Result<HttpResponse, ApiError> {
    let range = chunk_range(req.headers())?;
    if let (Some((_, len)), Some(cl)) = (range, content_length(req.headers())) {
        if len != cl {
            return Err(ApiError::ChunkRange(format!("Content-Range covers {len} bytes but Content-Length is {cl}")));
        }
    }
    let s = reg.append_upload(name, id, range.map(|r| r.0), range.map(|r| r.1), body).await?;
    Ok(session(StatusCode::ACCEPTED, name, &s).finish())
}

pub async fn put(
    req: &HttpRequest,
    body: impl Body,
    reg: &Reg,
    name: &RepoName,
    id: &str,
    p: &Params,
) -> Result<HttpResponse, ApiError> {
    let d = digest_param(p)?;
    let start = chunk_range(req.headers())?.map(|r| r.0);
    reg.finish_upload(name, id, start, body, &d).await?;
    note_stored(req, reg, name, &d, None).await;
    Ok(created(name, &d))
}

pub async fn status(reg: &Reg, name: &RepoName, id: &str) -> Result<HttpResponse, ApiError> {
    let s = reg.upload_status(name, id).await?;
    Ok(session(StatusCode::NO_CONTENT, name, &s).finish())
}

pub async fn cancel(reg: &Reg, name: &RepoName, id: &str) -> Result<HttpResponse, ApiError> {
    reg.cancel_upload(name, id).await?;
    Ok(HttpResponse::NoContent().finish())
}
