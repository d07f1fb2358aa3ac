//! berth's own endpoints beside the registry API, for the `berth` command on
//! the same machine: `POST /_berth/gc` runs garbage collection inside the
//! serving process (so it is safe while serving) and streams its progress as
//! JSON lines, then the report. Loopback clients only: nothing here is for
//! the network.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde::Deserialize;

use crate::oci::OciCode;
use crate::registry::gc::{GcOptions, GcProgress};

use super::{ApiError, Reg};

#[derive(Debug, Deserialize)]
pub struct GcQuery {
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    delete_untagged: bool,
    /// humantime, e.g. "10m"; the configured `gc.grace` when absent.
    grace: Option<String>,
}

/// One line of the stream.
#[derive(serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Line<'a> {
    Progress(GcProgress),
    Report(&'a crate::registry::gc::GcReport),
    Error(String),
}

fn line(l: Line) -> Bytes {
    let mut v = serde_json::to_vec(&l).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

pub async fn gc(req: HttpRequest, reg: Reg, query: web::Query<GcQuery>) -> Result<HttpResponse, ApiError> {
    if !req.peer_addr().is_some_and(|a| a.ip().is_loopback()) {
        return Err(ApiError::BadRequest(
            OciCode::Denied,
            "berth's admin endpoints answer loopback clients only".into(),
        ));
    }
    let grace = match &query.grace {
        Some(g) => humantime::parse_duration(g)
            .map_err(|e| ApiError::BadRequest(OciCode::QueryInvalid, format!("grace {g:?}: {e}")))?,
        None => reg.gc_grace(),
    };
    let opts = GcOptions { dry_run: query.dry_run, delete_untagged: query.delete_untagged, grace };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let reg = reg.into_inner();
    actix_web::rt::spawn(async move {
        let progress_tx = tx.clone();
        let progress = move |p: GcProgress| {
            let _ = progress_tx.send(line(Line::Progress(p)));
        };
        let last = match reg.gc(opts, &progress).await {
            Ok(report) => line(Line::Report(&report)),
            Err(e) => line(Line::Error(e.client_message())),
        };
        let _ = tx.send(last);
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    Ok(HttpResponse::Ok().content_type("application/x-ndjson").streaming(body))
}

/// Where a running server can be reached for `berth gc`: `<root>/.berth/server.addr`.
pub fn server_addr_file(root: &std::path::Path) -> std::path::PathBuf {
    root.join(crate::store::fs::BERTH_DIR).join("server.addr")
}

/// How long `berth gc` waits on a remote run with no line at all.
pub const REMOTE_IDLE: Duration = Duration::from_secs(600);
