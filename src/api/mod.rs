//! The actix-web edge: the route table, and one dispatcher that turns a
//! `/v2/…` request into an `Endpoint` and hands it to a handler. Handlers
//! parse headers and query, make one registry call, and build the response.

mod blobs;
pub mod error;
pub mod headers;
mod health;
mod listing;
mod manifests;
mod referrers;
pub mod route;
mod uploads;

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

pub use error::ApiError;
use route::{Endpoint, RouteError};

use crate::registry::Registry;

pub type Reg = web::Data<Registry>;

/// Query parameters any `/v2/` endpoint may take.
#[derive(Debug, Default, Deserialize)]
pub struct Params {
    pub digest: Option<String>,
    pub mount: Option<String>,
    pub from: Option<String>,
    pub n: Option<String>,
    pub last: Option<String>,
    #[serde(rename = "artifactType")]
    pub artifact_type: Option<String>,
    /// The registry a mirror request is for (containerd's `?ns=`).
    pub ns: Option<String>,
}

/// Registers every route of the server.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/v2", web::to(dispatch))
        .route("/v2/{tail:.*}", web::to(dispatch));
}

fn tail(req: &HttpRequest) -> String {
    let raw = req.match_info().get("tail").unwrap_or("");
    percent_encoding::percent_decode_str(raw).decode_utf8_lossy().into_owned()
}

async fn dispatch(req: HttpRequest, body: web::Payload, reg: Reg) -> Result<HttpResponse, ApiError> {
    let endpoint = match Endpoint::parse(&tail(&req)) {
        Ok(e) => e,
        Err(RouteError::NotFound) => return Err(ApiError::NotFound),
        Err(RouteError::Invalid(e)) => return Err(e.into()),
        Err(RouteError::InvalidTag(_, e)) if req.method() == Method::PUT => return Err(e.into()),
        Err(RouteError::InvalidTag(name, e)) => {
            return Err(crate::registry::RegistryError::ManifestUnknown(format!("{name}: {}", e.message)).into())
        }
    };
    let params = web::Query::<Params>::from_query(req.query_string())
        .map(|q| q.into_inner())
        .map_err(|e| ApiError::BadRequest(crate::oci::OciCode::Unsupported, format!("invalid query: {e}")))?;
    let m = req.method().clone();
    let ns = params.ns.as_deref();
    let not_allowed = || Err(ApiError::MethodNotAllowed(req.method().to_string()));
    let reading = m == Method::GET || m == Method::HEAD;
    match endpoint {
        Endpoint::Base if reading => Ok(health::base()),
        Endpoint::Catalog if m == Method::GET => listing::catalog(&reg, &params).await,
        Endpoint::Tags(name) if m == Method::GET => listing::tags(&reg, &reg.route(&name, ns).await?, &params).await,
        Endpoint::Referrers(name, d) if m == Method::GET => {
            referrers::get(&reg, &reg.route(&name, ns).await?, &d, &params).await
        }
        Endpoint::Manifest(name, r) if reading => manifests::get(&req, &reg, &reg.route(&name, ns).await?, &r).await,
        Endpoint::Blob(name, d) if reading => blobs::get(&req, &reg, &reg.route(&name, ns).await?, &d).await,
        Endpoint::Manifest(name, r) if m == Method::PUT => {
            reg.check_push(&name, ns).await?;
            manifests::put(&req, body, &reg, &name, &r).await
        }
        Endpoint::Manifest(name, r) if m == Method::DELETE => {
            reg.check_writable(&name, ns)?;
            manifests::delete(&reg, &name, &r).await
        }
        Endpoint::Blob(name, d) if m == Method::DELETE => {
            reg.check_writable(&name, ns)?;
            blobs::delete(&reg, &name, &d).await
        }
        Endpoint::Uploads(name) if m == Method::POST => {
            reg.check_push(&name, ns).await?;
            uploads::start(body, &reg, &name, &params).await
        }
        Endpoint::Upload(name, id) if [Method::GET, Method::PATCH, Method::PUT, Method::DELETE].contains(&m) => {
            // A session exists only after a POST, which already made the name local.
            reg.check_writable(&name, ns)?;
            match m {
                Method::GET => uploads::status(&reg, &name, &id).await,
                Method::PATCH => uploads::patch(&req, body, &reg, &name, &id).await,
                Method::PUT => uploads::put(&req, body, &reg, &name, &id, &params).await,
                _ => uploads::cancel(&reg, &name, &id).await,
            }
        }
        _ => not_allowed(),
    }
}
