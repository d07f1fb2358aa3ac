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

/// Ready when the store answers a listing and can take a write (a full
/// disk, exhausted inodes or a read-only mount make it unready).
pub async fn readyz(reg: Reg) -> HttpResponse {
    match reg.check_ready().await {
        Ok(()) => HttpResponse::Ok().content_type("text/plain").body("ready\n"),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            let why = e.client_message();
            HttpResponse::ServiceUnavailable().content_type("text/plain").body(format!("not ready: {why}\n"))
        }
    }
}
