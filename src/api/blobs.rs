//! `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`.

use actix_web::body::SizedStream;
use actix_web::http::{header, Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse};

use crate::oci::{Digest, RepoName};
use crate::registry::Route;

use super::headers::{byte_range, DOCKER_CONTENT_DIGEST};
use super::{notify, ApiError, Reg};
use crate::events::Target;

pub async fn get(req: &HttpRequest, reg: &Reg, route: &Route, d: &Digest) -> Result<HttpResponse, ApiError> {
    let mut resp = HttpResponse::Ok();
    resp.content_type("application/octet-stream")
        .insert_header((DOCKER_CONTENT_DIGEST, d.to_string()))
        .insert_header((header::ETAG, format!("\"{d}\"")))
        .insert_header((header::ACCEPT_RANGES, "bytes"));
    if req.method() == Method::HEAD {
        let size = reg.stat_blob(route, d).await?;
        notify::note(req, reg, "pull", Some(route), || Target::blob(&notify::repository(route), d, size));
        let empty = futures::stream::empty::<Result<bytes::Bytes, std::io::Error>>();
        return Ok(resp.body(SizedStream::new(size, empty)));
    }
    if let Some(url) = reg.redirect_blob(route, d).await? {
        notify::note(req, reg, "pull", Some(route), || Target::blob(&notify::repository(route), d, 0));
        return Ok(HttpResponse::TemporaryRedirect()
            .insert_header((header::LOCATION, url))
            .insert_header((DOCKER_CONTENT_DIGEST, d.to_string()))
            .finish());
    }
    let blob = reg.open_blob(route, d, byte_range(req.headers())).await?;
    notify::note(req, reg, "pull", Some(route), || {
        Target::blob(&notify::repository(route), d, blob.size.unwrap_or_default())
    });
    match (blob.range, blob.size) {
        (Some(r), Some(size)) => {
            resp.status(StatusCode::PARTIAL_CONTENT)
                .insert_header((header::CONTENT_RANGE, format!("bytes {}-{}/{}", r.start, r.end, size)));
            Ok(resp.body(SizedStream::new(r.end - r.start + 1, blob.body)))
        }
        (None, Some(size)) => Ok(resp.body(SizedStream::new(size, blob.body))),
        // An upstream that sent no Content-Length, still streaming: chunked,
        // and the end (held back until verified) comes when the digest matched.
        (_, None) => Ok(resp.streaming(blob.body)),
    }
}

pub async fn delete(req: &HttpRequest, reg: &Reg, name: &RepoName, d: &Digest) -> Result<HttpResponse, ApiError> {
    reg.delete_blob(name, d).await?;
    notify::note(req, reg, "delete", None, || Target::deleted(name.as_str(), Some(d), None));
    Ok(HttpResponse::Accepted().insert_header((DOCKER_CONTENT_DIGEST, d.to_string())).finish())
}
