//! The actix-web edge: the route table, and one dispatcher that turns a
//! `/v2/…` request into an `Endpoint` and an `Action`, asks the registry
//! where (and whether) the request is served, and hands it to a handler.
//! Handlers parse headers and query, make one registry call, and build the response.

pub mod admin;
pub mod auth;
mod blobs;
mod body;
pub mod error;
pub mod headers;
pub mod health;
pub mod limits;
mod listing;
mod manifests;
pub mod metrics;
mod notify;
pub mod params;
mod peer;
pub mod prefix;
mod referrers;
pub mod route;
mod trust;
mod uploads;

use actix_web::http::{header, Method};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse, ResponseError};

pub use error::ApiError;
pub use params::Params;
use route::{Endpoint, RouteError};

use crate::registry::{Action, Registry};

pub type Reg = web::Data<Registry>;

/// What the edge itself needs from the configuration.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// How request bodies must arrive (`server.body_timeout`, `server.body_min_rate`).
    pub pace: body::Pace,
    /// What a request may look like (`server.max_url_length`, …).
    pub shape: limits::Shape,
    /// `uploads.max_blob_size`: a body declared larger is refused before it is read.
    pub max_blob_size: u64,
    /// `metrics.teams`: how clients are counted.
    pub teams: crate::metrics::Teams,
    /// `metrics.enabled`: whether `/metrics` answers.
    pub metrics: bool,
    /// `server.trusted_proxies`: peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl EdgeConfig {
    pub fn new(cfg: &crate::config::Config) -> Self {
        let s = &cfg.server;
        EdgeConfig {
            pace: body::Pace { stall: s.body_timeout, min_rate: s.body_min_rate.as_u64() },
            shape: limits::Shape {
                max_url_length: s.max_url_length,
                max_headers: s.max_headers,
                max_header_bytes: s.max_header_bytes.as_u64(),
            },
            max_blob_size: cfg.uploads.max_blob_size.as_u64(),
            // Checked when the configuration was loaded.
            teams: crate::metrics::Teams::new(&cfg.metrics.teams).unwrap_or_default(),
            metrics: cfg.metrics.enabled,
            // Checked when the configuration was loaded.
            trusted_proxies: s.trusted_proxies.iter().filter_map(|p| crate::config::parse_network(p).ok()).collect(),
        }
    }
}

fn get_or_head() -> impl actix_web::guard::Guard {
    actix_web::guard::Any(actix_web::guard::Get()).or(actix_web::guard::Head())
}

/// Registers every route of the server.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/metrics", web::get().to(metrics::scrape))
        .route("/_berth/gc", web::post().to(admin::gc))
        .route("/_berth/readonly", web::post().to(admin::read_only))
        .route("/_berth/retention", web::post().to(admin::retention))
        .route("/_berth/usage", web::post().to(admin::usage))
        .route("/_berth/import", web::post().to(admin::import))
        .route("/_berth/import", web::put().to(admin::import_upload))
        .route("/_berth/peer/blobs/{digest}", web::route().guard(get_or_head()).to(peer::blob))
        .route("/_berth/peer/manifests/{digest}", web::route().guard(get_or_head()).to(peer::manifest))
        .route("/_berth/peer/claim/{digest}", web::post().to(peer::claim))
        .route("/_berth/peer/fetch/{digest}", web::get().to(peer::fetch))
        .route("/_berth/peer/tag", web::get().to(peer::tag))
        .route("/_berth/verify", web::get().to(trust::verify))
        .route("/_berth/admission/forget", web::post().to(trust::forget))
        .route("/readyz", web::get().to(health::readyz))
        .route("/v1/search", web::get().to(search))
        .route("/v1/_ping", web::get().to(health::v1_ping))
        .route("/v2/token", web::get().to(auth::token))
        .route("/v2/token", web::post().to(auth::token))
        // A prefix, not a pattern: actix matches `{tail:.*}` with a regex on
        // every request (a tenth of the manifest GET's CPU in its profile).
        .service(web::scope("/v2").default_service(web::to(dispatch)));
}

/// `GET /v1/search?q=&n=&page=` (`docker search`): answered for whoever the
/// credentials say (anonymous without any), never with a challenge.
async fn search(req: HttpRequest, reg: Reg, auth: web::Data<auth::Auth>) -> Result<HttpResponse, ApiError> {
    let query = web::Query::<listing::SearchQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::Query(format!("search query: {e}")))?;
    let caller = auth.caller(&req).await?;
    Ok(HttpResponse::Ok().json(listing::search_names(&reg, &query, &caller).await?))
}

/// The client's address: the peer's, or, when the peer is a trusted proxy,
/// the last address in `X-Forwarded-For` that is not one (what nginx's
/// `$proxy_add_x_forwarded_for` appends). Per-client limits, metrics and
/// logs use it; berth's admin endpoint never does (it wants the real peer).
pub fn client_ip(req: &HttpRequest) -> Option<std::net::IpAddr> {
    let peer = req.peer_addr().map(|a| a.ip());
    let trusted = req.app_data::<web::Data<EdgeConfig>>().map(|e| e.trusted_proxies.as_slice()).unwrap_or_default();
    let xff = req.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok());
    forwarded_client(peer, xff, trusted)
}

fn forwarded_client(
    peer: Option<std::net::IpAddr>,
    xff: Option<&str>,
    trusted: &[ipnet::IpNet],
) -> Option<std::net::IpAddr> {
    let is_trusted = |ip: &std::net::IpAddr| trusted.iter().any(|n| n.contains(ip));
    let peer = peer?;
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let mut client = peer;
    for hop in xff.unwrap_or("").rsplit(',') {
        match hop.trim().parse::<std::net::IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    Some(client)
}

/// The path after `/v2/`, percent-decoded.
fn tail(req: &HttpRequest) -> String {
    let raw = req.path().strip_prefix("/v2").unwrap_or("");
    let raw = raw.strip_prefix('/').unwrap_or(raw);
    percent_encoding::percent_decode_str(raw).decode_utf8_lossy().into_owned()
}

/// Every `/v2/` request: the answer, or the error with the login challenge on a 401.
async fn dispatch(
    req: HttpRequest,
    payload: web::Payload,
    reg: Reg,
    edge: web::Data<EdgeConfig>,
    auth: web::Data<auth::Auth>,
) -> HttpResponse {
    match handle(&req, payload, reg, edge, &auth).await {
        Ok(resp) => resp,
        Err(e) => {
            let mut resp = e.error_response();
            if e.code().status() == 401 {
                if let Some(v) = auth.challenge(&req).and_then(|c| header::HeaderValue::from_str(&c).ok()) {
                    resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                }
            }
            resp
        }
    }
}

async fn handle(
    req: &HttpRequest,
    payload: web::Payload,
    reg: Reg,
    edge: web::Data<EdgeConfig>,
    auth: &auth::Auth,
) -> Result<HttpResponse, ApiError> {
    let endpoint = match Endpoint::parse(&tail(req)) {
        Ok(e) => e,
        Err(RouteError::NotFound) => return Err(ApiError::NotFound),
        Err(RouteError::Invalid(e)) => return Err(e.into()),
        Err(RouteError::InvalidTag(_, e)) if req.method() == Method::PUT => return Err(e.into()),
        Err(RouteError::InvalidTag(name, e)) => {
            return Err(crate::registry::RegistryError::ManifestUnknown(format!("{name}: {}", e.message)).into())
        }
    };
    req.extensions_mut().insert(metrics::EndpointLabel(endpoint.label()));
    let action =
        route::action(&endpoint, req.method()).ok_or_else(|| ApiError::MethodNotAllowed(req.method().to_string()))?;
    // Read-only mode refuses by method, as registry:2's does.
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        reg.check_writes()?;
    }
    let params = Params::parse(req.query_string())?;
    let caller = auth.caller(req).await?;
    let user = caller.user();
    let client: std::sync::Arc<str> = edge.teams.label(user, client_ip(req)).into();
    // Bytes fetched upstream on this request's behalf are counted against its client.
    let kind = match (&endpoint, req.method()) {
        (Endpoint::Manifest(..), &Method::GET) => Some("manifest"),
        (Endpoint::Blob(..), &Method::GET) => Some("blob"),
        _ => None,
    };
    let mut mirrored = false;
    // The name the client used, for the URL in a notification event.
    let name = reg.events().enabled().then(|| endpoint.name().cloned()).flatten();
    let served = crate::metrics::CLIENT
        .scope(client.clone(), serve(req, payload, &reg, &edge, endpoint, action, &params, &caller, &mut mirrored))
        .await?;
    notify::emit(req, &reg, &caller, name.as_ref());
    let Some(kind) = kind.filter(|_| served.status().is_success()) else { return Ok(served) };
    match actix_web::body::MessageBody::size(served.body()) {
        actix_web::body::BodySize::Sized(n) => reg.metrics().served(&client, mirrored, kind, n),
        // A body of unknown length (an upstream streaming without one) is counted as it goes.
        actix_web::body::BodySize::Stream => {
            let metrics = reg.metrics().clone();
            return Ok(served.map_body(move |_, body| {
                actix_web::body::BoxBody::new(metrics::Counted { inner: body, metrics, client, mirrored, kind })
            }));
        }
        actix_web::body::BodySize::None => {}
    }
    Ok(served)
}

/// The request's work, once it is known who asks what; `mirrored` is set
/// when a pull is served from mirrored content.
#[allow(clippy::too_many_arguments)]
async fn serve(
    req: &HttpRequest,
    payload: web::Payload,
    reg: &Reg,
    edge: &EdgeConfig,
    endpoint: Endpoint,
    action: Action,
    params: &Params,
    who: &crate::registry::Caller,
    mirrored: &mut bool,
) -> Result<HttpResponse, ApiError> {
    let ns = params.ns.as_deref();
    if matches!(endpoint, Endpoint::Uploads(_) | Endpoint::Upload(..))
        && headers::content_length(req.headers()).is_some_and(|n| n > edge.max_blob_size)
    {
        return Err(ApiError::BlobTooLarge { limit: edge.max_blob_size });
    }
    let body = body::timed(payload, edge.pace);
    let owner = client_ip(req);
    let m = req.method();
    let (reg, params) = (reg.clone(), params);
    match endpoint {
        Endpoint::Base if reg.base_allows(who) => Ok(health::base()),
        Endpoint::Base => Err(crate::registry::RegistryError::Unauthorized("this registry".into()).into()),
        Endpoint::Catalog => listing::catalog(&reg, params, who).await,
        Endpoint::Tags(name) => listing::tags(&reg, &name, &reg.route(&name, ns, action, who).await?, params).await,
        Endpoint::Referrers(name, d) => {
            referrers::get(&reg, &reg.route(&name, ns, action, who).await?, &d, params).await
        }
        Endpoint::Manifest(name, r) if action == Action::Pull => {
            let route = reg.route(&name, ns, action, who).await?;
            *mirrored = matches!(route, crate::registry::Route::Mirrored(_));
            manifests::get(req, &reg, &route, &r).await
        }
        Endpoint::Blob(name, d) if action == Action::Pull => {
            let route = reg.route(&name, ns, action, who).await?;
            *mirrored = matches!(route, crate::registry::Route::Mirrored(_));
            blobs::get(req, &reg, &route, &d).await
        }
        Endpoint::Manifest(name, r) if action == Action::Push => {
            let repo = reg.writable(&name, ns, action, who).await?;
            manifests::put(req, body, &reg, &repo, &r).await
        }
        Endpoint::Manifest(name, r) => {
            manifests::delete(req, &reg, &reg.writable(&name, ns, action, who).await?, &r).await
        }
        Endpoint::Blob(name, d) => blobs::delete(req, &reg, &reg.writable(&name, ns, action, who).await?, &d).await,
        Endpoint::Uploads(name) => {
            let repo = reg.writable(&name, ns, action, who).await?;
            uploads::start(req, body, &reg, &repo, params, owner, who).await
        }
        Endpoint::Upload(name, id) => {
            let repo = reg.writable(&name, ns, action, who).await?;
            match *m {
                Method::GET => uploads::status(&reg, &repo, &id).await,
                Method::PATCH => uploads::patch(req, body, &reg, &repo, &id).await,
                Method::PUT => uploads::put(req, body, &reg, &repo, &id, params).await,
                _ => uploads::cancel(&reg, &repo, &id).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_behind_trusted_proxies() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let nets: Vec<ipnet::IpNet> = vec!["127.0.0.1/32".parse().unwrap(), "10.0.0.0/8".parse().unwrap()];
        let f = |peer: &str, xff: Option<&str>| forwarded_client(Some(ip(peer)), xff, &nets);
        assert_eq!(f("192.0.2.1", Some("1.2.3.4")), Some(ip("192.0.2.1")), "an untrusted peer is the client");
        assert_eq!(f("127.0.0.1", Some("198.51.100.7")), Some(ip("198.51.100.7")));
        assert_eq!(
            f("127.0.0.1", Some("6.6.6.6, 198.51.100.7, 10.1.1.1")),
            Some(ip("198.51.100.7")),
            "spoofed hops left of the first untrusted one are ignored"
        );
        assert_eq!(f("127.0.0.1", None), Some(ip("127.0.0.1")));
        assert_eq!(f("127.0.0.1", Some("garbage")), Some(ip("127.0.0.1")));
        assert_eq!(
            forwarded_client(Some(ip("127.0.0.1")), Some("198.51.100.7"), &[]),
            Some(ip("127.0.0.1")),
            "no trusted proxies: headers ignored"
        );
    }
}
