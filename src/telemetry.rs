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
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.level));
    // Colours only for a terminal; log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stderr);
    let fields = Fields::of(&cfg.fields);
    let fmt = match cfg.format {
        LogFormat::Text => fmt.event_format(WithFields { fields, inner: tracing_subscriber::fmt::format() }).boxed(),
        LogFormat::Json => {
            fmt.json().event_format(WithFields { fields, inner: tracing_subscriber::fmt::format().json() }).boxed()
        }
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt.with_filter(tracing_subscriber::filter::filter_fn(|m| !is_connection_error(m))))
        .with(ConnectionErrors)
        .try_init();
}

/// `log.fields`, ready to write: `k=v ` before a text line, `"k":"v",`
/// first in a JSON object.
#[derive(Clone)]
struct Fields {
    text: String,
    json: String,
}

impl Fields {
    fn of(fields: &std::collections::BTreeMap<String, String>) -> Fields {
        let text = fields.iter().map(|(k, v)| format!("{k}={v:?} ")).collect();
        let json = fields.iter().map(|(k, v)| format!("{}:{},", serde_json::json!(k), serde_json::json!(v))).collect();
        Fields { text, json }
    }
}

/// An event format with `log.fields` on every line (registry:2's).
struct WithFields<F> {
    fields: Fields,
    inner: F,
}

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for WithFields<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        if self.fields.text.is_empty() {
            return self.inner.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.inner.format_event(ctx, tracing_subscriber::fmt::format::Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(writer, "{{{}{rest}", self.fields.json),
            None => write!(writer, "{}{line}", self.fields.text),
        }
    }
}

/// actix-http's "stream error" lines: a client's connection that was not
/// HTTP/1 (most often a client probing for TLS on a plain-HTTP port, which
/// skopeo and docker do on every operation) or that broke off. Not the
/// server's trouble: they are not logged as errors.
fn is_connection_error(m: &tracing::Metadata<'_>) -> bool {
    *m.level() == tracing::Level::ERROR && m.target() == "actix_http::h1::dispatcher"
}

/// Says once, plainly, that clients try TLS on this plain-HTTP port; other
/// connection errors go to DEBUG.
struct ConnectionErrors;

static TLS_PROBE_SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ConnectionErrors {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if !is_connection_error(event.metadata()) {
            return;
        }
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        if message.0.contains("parse error") {
            if !TLS_PROBE_SAID.swap(true, Ordering::Relaxed) {
                tracing::info!(
                    "a client spoke something other than HTTP/1 on this plain-HTTP port (most likely a TLS probe: \
                     docker and skopeo try TLS first); berth answers HTTP here, set server.tls to serve HTTPS \
                     (said once)"
                );
            }
            return;
        }
        tracing::debug!(target: "berth::connections", "client connection error: {}", message.0);
    }
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
