//! The actix-web edge: the route table, and one dispatcher that turns a
//! `/v2/…` request into an `Endpoint` and an `Action`, asks the registry
//! where (and whether) the request is served, and hands it to a handler.
//! Handlers parse headers and query, make one registry call, and build the response.

pub mod admin;
mod blobs;
mod body;
pub mod error;
pub mod headers;
mod health;
mod listing;
mod manifests;
pub mod params;
mod referrers;
pub mod route;
mod uploads;

use std::time::Duration;

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};

pub use error::ApiError;
pub use params::Params;
use route::{Endpoint, RouteError};

use crate::registry::{Action, Registry};

pub type Reg = web::Data<Registry>;

/// What the edge itself needs from the configuration.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// See `server.body_timeout`.
    pub body_timeout: Duration,
}

/// Registers every route of the server.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/_berth/gc", web::post().to(admin::gc))
        .route("/readyz", web::get().to(health::readyz))
        .route("/v2", web::to(dispatch))
        .route("/v2/{tail:.*}", web::to(dispatch));
}

fn tail(req: &HttpRequest) -> String {
    let raw = req.match_info().get("tail").unwrap_or("");
    percent_encoding::percent_decode_str(raw).decode_utf8_lossy().into_owned()
}

async fn dispatch(
    req: HttpRequest,
    payload: web::Payload,
    reg: Reg,
    edge: web::Data<EdgeConfig>,
) -> Result<HttpResponse, ApiError> {
    let endpoint = match Endpoint::parse(&tail(&req)) {
        Ok(e) => e,
        Err(RouteError::NotFound) => return Err(ApiError::NotFound),
        Err(RouteError::Invalid(e)) => return Err(e.into()),
        Err(RouteError::InvalidTag(_, e)) if req.method() == Method::PUT => return Err(e.into()),
        Err(RouteError::InvalidTag(name, e)) => {
            return Err(crate::registry::RegistryError::ManifestUnknown(format!("{name}: {}", e.message)).into())
        }
    };
    let action =
        route::action(&endpoint, req.method()).ok_or_else(|| ApiError::MethodNotAllowed(req.method().to_string()))?;
    let params = Params::parse(req.query_string())?;
    let ns = params.ns.as_deref();
    let body = body::timed(payload, edge.body_timeout);
    let owner = Registry::upload_owner(req.peer_addr());
    let m = req.method();
    match endpoint {
        Endpoint::Base => Ok(health::base()),
        Endpoint::Catalog => listing::catalog(&reg, &params).await,
        Endpoint::Tags(name) => listing::tags(&reg, &name, &reg.route(&name, ns, action).await?, &params).await,
        Endpoint::Referrers(name, d) => referrers::get(&reg, &reg.route(&name, ns, action).await?, &d, &params).await,
        Endpoint::Manifest(name, r) if action == Action::Pull => {
            manifests::get(&req, &reg, &reg.route(&name, ns, action).await?, &r).await
        }
        Endpoint::Blob(name, d) if action == Action::Pull => {
            blobs::get(&req, &reg, &reg.route(&name, ns, action).await?, &d).await
        }
        Endpoint::Manifest(name, r) if action == Action::Push => {
            let repo = reg.writable(&name, ns, action).await?;
            manifests::put(&req, body, &reg, &repo, &r).await
        }
        Endpoint::Manifest(name, r) => manifests::delete(&reg, &reg.writable(&name, ns, action).await?, &r).await,
        Endpoint::Blob(name, d) => blobs::delete(&reg, &reg.writable(&name, ns, action).await?, &d).await,
        Endpoint::Uploads(name) => {
            let repo = reg.writable(&name, ns, action).await?;
            uploads::start(body, &reg, &repo, &params, owner).await
        }
        Endpoint::Upload(name, id) => {
            let repo = reg.writable(&name, ns, action).await?;
            match *m {
                Method::GET => uploads::status(&reg, &repo, &id).await,
                Method::PATCH => uploads::patch(&req, body, &reg, &repo, &id).await,
                Method::PUT => uploads::put(&req, body, &reg, &repo, &id, &params).await,
                _ => uploads::cancel(&reg, &repo, &id).await,
            }
        }
    }
}
