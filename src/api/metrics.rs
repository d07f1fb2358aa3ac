//! `/metrics`, and the middleware that counts every request and its latency.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse, ResponseError};

use super::{EdgeConfig, Reg};

/// The endpoint a `/v2/` request was routed to (set by the dispatcher).
#[derive(Clone, Copy)]
pub struct EndpointLabel(pub &'static str);

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        _ => "other",
    }
}

/// The endpoint of a request the dispatcher did not label: berth's own
/// routes, or a path that is no endpoint.
fn path_label(path: &str) -> &'static str {
    match path {
        "/v2/token" => "token",
        "/v1/search" | "/v1/_ping" => "search",
        "/healthz" | "/readyz" => "health",
        "/metrics" => "metrics",
        p if p.starts_with("/_berth/") => "admin",
        p if p == "/v2" || p.starts_with("/v2/") => "unknown",
        _ => "other",
    }
}

/// Counts each request by endpoint, method and status, and times it to the
/// response head (a blob's body streams on after).
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = method_label(req.method());
    let fallback = path_label(req.path());
    let reg = req.app_data::<Reg>().cloned();
    // Counted until the response head, however the request ends (a client gone mid-wait drops it).
    let _in_progress = reg.as_ref().map(|r| InProgress::new(r.metrics().requests_in_progress.clone()));
    let result = next.call(req).await;
    if let Some(reg) = reg {
        let (endpoint, status) = match &result {
            Ok(res) => {
                let label = res.request().extensions().get::<EndpointLabel>().copied();
                (label.map_or(fallback, |l| l.0), res.status())
            }
            Err(e) => (fallback, e.as_response_error().status_code()),
        };
        reg.metrics().request(endpoint, method, status.as_u16(), started.elapsed().as_secs_f64());
    }
    result
}

/// One request in `berth_http_requests_in_progress`, for as long as it lives.
struct InProgress(prometheus::IntGauge);

impl InProgress {
    fn new(g: prometheus::IntGauge) -> Self {
        g.inc();
        Self(g)
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `GET /metrics`: the Prometheus text format.
pub async fn scrape(reg: Reg, edge: web::Data<EdgeConfig>) -> HttpResponse {
    if !edge.metrics {
        return super::ApiError::NotFound.error_response();
    }
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(reg.render_metrics().await)
}

/// A response body of unknown length whose bytes are counted as served as
/// they go out.
pub struct Counted {
    pub inner: actix_web::body::BoxBody,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    pub client: std::sync::Arc<str>,
    pub mirrored: bool,
    pub kind: &'static str,
}

impl MessageBody for Counted {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> actix_web::body::BodySize {
        self.inner.size()
    }

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<bytes::Bytes, Self::Error>>> {
        let this = self.get_mut();
        let next = std::pin::Pin::new(&mut this.inner).poll_next(cx);
        if let std::task::Poll::Ready(Some(Ok(chunk))) = &next {
            this.metrics.served(&this.client, this.mirrored, this.kind, chunk.len() as u64);
        }
        next
    }
}
