//! `GET /v2/<name>/referrers/<digest>`: an OCI index of the manifests whose
//! subject is `<digest>`; 200 with an empty list when there are none.

use actix_web::http::header;
use actix_web::HttpResponse;
use serde_json::json;

use crate::oci::{Digest, MediaType};
use crate::registry::Route;

use super::headers::{OCI_FILTERS_APPLIED, STALE};
use super::{ApiError, Params, Reg};

pub async fn get(reg: &Reg, route: &Route, subject: &Digest, p: &Params) -> Result<HttpResponse, ApiError> {
    let filter = p.artifact_type.as_deref().filter(|s| !s.is_empty());
    let found = reg.referrers(route, subject, filter).await?;
    let mut resp = HttpResponse::Ok();
    resp.content_type(MediaType::OCI_INDEX);
    if filter.is_some() {
        resp.insert_header((OCI_FILTERS_APPLIED, "artifactType"));
    }
    if let Some(why) = found.stale.and_then(|w| header::HeaderValue::from_str(&w).ok()) {
        resp.insert_header((STALE, why));
    }
    let body = json!({ "schemaVersion": 2, "mediaType": MediaType::OCI_INDEX, "manifests": found.manifests });
    Ok(resp.body(body.to_string()))
}
