//! The trust endpoints: `GET /_berth/verify?image=` (what the signature
//! policy says of an image, for `berth verify`; answered to whoever may pull
//! it) and `POST /_berth/admission/forget` (the admission hook revokes an
//! answer; it presents the configured token).

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use crate::oci::{Digest, Reference, RepoName};
use crate::registry::namespace::Action;

use super::{auth, ApiError, Reg};

#[derive(Deserialize)]
pub struct VerifyQuery {
    image: String,
}

/// `name[:tag]` or `name@digest`, as a client names an image to berth.
fn split_image(image: &str) -> Result<(RepoName, Reference), ApiError> {
    let bad = || ApiError::Query(format!("image {image:?}: expected NAME[:TAG] or NAME@DIGEST"));
    let (name, reference) = match image.split_once('@') {
        Some((n, d)) => (n, d),
        None => match image.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, t),
            _ => (image, "latest"),
        },
    };
    Ok((name.parse().map_err(|_| bad())?, reference.parse().map_err(|_| bad())?))
}

pub async fn verify(
    req: HttpRequest,
    reg: Reg,
    auth: web::Data<auth::Auth>,
    query: web::Query<VerifyQuery>,
) -> Result<HttpResponse, ApiError> {
    let (name, reference) = split_image(&query.image)?;
    let caller = auth.caller(&req).await?;
    let route = reg.route(&name, None, Action::Pull, &caller).await?;
    let (digest, judged) = reg.verify(&route, &reference).await?;
    Ok(HttpResponse::Ok().json(json!({
        "repository": route.id().to_string(),
        "digest": digest.to_string(),
        "signature": judged,
    })))
}

#[derive(Deserialize)]
pub struct Forget {
    digest: String,
}

pub async fn forget(req: HttpRequest, reg: Reg, body: web::Json<Forget>) -> Result<HttpResponse, ApiError> {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !reg.admission_token_matches(presented) {
        return Err(ApiError::AdminOnly);
    }
    let digest: Digest =
        body.digest.parse().map_err(|_| ApiError::Query(format!("{:?} is not a digest", body.digest)))?;
    reg.forget_admission(&digest);
    tracing::info!(%digest, "the admission hook revoked its answer");
    Ok(HttpResponse::Ok().json(json!({ "forgotten": digest.to_string() })))
}
