//! `/v2/` version check and the liveness/readiness probes.

use actix_web::HttpResponse;

use super::Reg;

/// `GET /v2/`: 200 tells clients this is a v2 registry.
pub fn base() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body("{}")
}

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

/// Ready when the store answers a listing of its root.
pub async fn readyz(reg: Reg) -> HttpResponse {
    match reg.catalog(Some(1), None).await {
        Ok(_) => HttpResponse::Ok().content_type("text/plain").body("ready\n"),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            HttpResponse::ServiceUnavailable().content_type("text/plain").body("storage unavailable\n")
        }
    }
}
