//! Logging: one tracing subscriber for the process, and a span per request
//! (`request_span`) that every event a request logs carries.

use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `RUST_LOG` wins over the configured level.
/// Safe to call more than once (tests): later calls are no-ops.
pub fn init(cfg: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.level));
    // Colours only for a terminal; log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
    let _ = match cfg.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Request ids: a counter, unique within the process (the log lines of one
/// request share it).
static NEXT_REQUEST: AtomicU64 = AtomicU64::new(1);

/// Middleware: the request's span, `request{id method target}`. Only what a
/// request's log lines need: the fmt subscriber formats a span's fields when
/// the span is made, on every request (the profile of the manifest GET showed
/// tracing-actix-web's root span, ten fields and a random UUID read from the
/// kernel, at about a sixth of the server's CPU). At a level that leaves INFO
/// off the span costs nothing.
pub async fn request_span(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let span = tracing::info_span!(
        "request",
        id = NEXT_REQUEST.fetch_add(1, Ordering::Relaxed),
        method = %req.method(),
        target = %req.uri(),
    );
    next.call(req).instrument(span).await
}
