//! berth's own endpoints beside the registry API, for the `berth` command on
//! the same machine: `POST /_berth/gc` runs garbage collection inside the
//! serving process (so it is safe while serving) and streams its progress as
//! JSON lines, then the report. Nothing here is for the network: a caller must
//! come from loopback *and* present the token the server wrote, readable only
//! by its own user, in `<root>/.berth/admin.token` (a reverse proxy on the same
//! host makes every client look like loopback; the token does not travel).

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde::Deserialize;

use crate::registry::gc::{GcOptions, GcProgress};
use crate::registry::import::ImportProgress;

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

/// One line of a long run's answer (see `follow_along`).
#[derive(serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Line<P, R> {
    Progress(P),
    Report(R),
    Error(String),
}

fn line<P: serde::Serialize, R: serde::Serialize>(l: &Line<P, R>) -> Bytes {
    let mut v = serde_json::to_vec(l).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// Runs `work` on a task of its own and answers with its progress as it
/// goes, one JSON line each (`{"progress":…}`), then `{"report":…}` or
/// `{"error":"…"}`: what `berth gc` and `berth import` follow with a bar.
fn follow_along<P, R>(
    work: impl AsyncFnOnce(&(dyn Fn(P) + Send + Sync)) -> crate::registry::RegistryResult<R> + 'static,
) -> HttpResponse
where
    P: serde::Serialize + 'static,
    R: serde::Serialize + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    actix_web::rt::spawn(async move {
        let progress_tx = tx.clone();
        let progress = move |p: P| {
            let _ = progress_tx.send(line::<P, R>(&Line::Progress(p)));
        };
        let last = match work(&progress).await {
            Ok(report) => line::<P, R>(&Line::Report(report)),
            Err(e) => line::<P, R>(&Line::Error(e.client_message())),
        };
        let _ = tx.send(last);
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    HttpResponse::Ok().content_type("application/x-ndjson").streaming(body)
}

/// The header that carries the admin token.
pub const TOKEN_HEADER: &str = "X-Berth-Admin-Token";

/// The token the running server accepts (see the module comment).
#[derive(Debug, Clone)]
pub struct AdminToken(pub String);

/// Refuses whoever is not `berth` on this machine (see the module comment).
fn admin_only(req: &HttpRequest, token: &AdminToken) -> Result<(), ApiError> {
    let loopback = req.peer_addr().is_some_and(|a| a.ip().is_loopback());
    let presented = req.headers().get(TOKEN_HEADER).and_then(|v| v.to_str().ok());
    match loopback && presented == Some(token.0.as_str()) {
        true => Ok(()),
        false => Err(ApiError::AdminOnly),
    }
}

#[derive(serde::Deserialize)]
pub struct ReadOnlyQuery {
    enabled: Option<bool>,
}

/// `POST /_berth/readonly?enabled=true|false` (`berth readonly on|off`):
/// turns read-only mode on or off without a restart; without `enabled`,
/// says whether it is on.
pub async fn read_only(
    req: HttpRequest,
    reg: Reg,
    token: web::Data<AdminToken>,
    query: web::Query<ReadOnlyQuery>,
) -> Result<HttpResponse, ApiError> {
    admin_only(&req, &token)?;
    if let Some(on) = query.enabled {
        reg.set_read_only(on);
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({ "read_only": reg.is_read_only() })))
}

pub async fn gc(
    req: HttpRequest,
    reg: Reg,
    token: web::Data<AdminToken>,
    query: web::Query<GcQuery>,
) -> Result<HttpResponse, ApiError> {
    admin_only(&req, &token)?;
    let grace = match &query.grace {
        Some(g) => humantime::parse_duration(g).map_err(|e| ApiError::Query(format!("grace {g:?}: {e}")))?,
        None => reg.lifecycle().gc_grace(),
    };
    let opts = GcOptions { dry_run: query.dry_run, delete_untagged: query.delete_untagged, grace };
    // A second collection is refused with its status, before the stream starts.
    let lifecycle = reg.lifecycle().clone();
    let slot = lifecycle.gc_slot()?;
    Ok(follow_along(async move |progress: &(dyn Fn(GcProgress) + Send + Sync)| {
        lifecycle.gc_with(slot, opts, progress).await
    }))
}

#[derive(Debug, Deserialize)]
pub struct RetentionQuery {
    #[serde(default)]
    dry_run: bool,
}

/// `POST /_berth/retention?dry_run=` (`berth retention`): one retention run
/// inside the serving process; its report as JSON.
pub async fn retention(
    req: HttpRequest,
    reg: Reg,
    token: web::Data<AdminToken>,
    query: web::Query<RetentionQuery>,
) -> Result<HttpResponse, ApiError> {
    admin_only(&req, &token)?;
    let report = reg.retention(query.dry_run).await?;
    Ok(HttpResponse::Ok().json(report))
}

#[derive(Debug, Deserialize)]
pub struct ImportQuery {
    /// The bundle's absolute path on this machine.
    path: String,
}

/// `POST /_berth/import?path=` (`berth import`): reads a bundle from this
/// machine's disk into the mirror; its progress, then its report, as JSON
/// lines (see `follow_along`).
pub async fn import(
    req: HttpRequest,
    reg: Reg,
    token: web::Data<AdminToken>,
    query: web::Query<ImportQuery>,
) -> Result<HttpResponse, ApiError> {
    admin_only(&req, &token)?;
    let path = std::path::PathBuf::from(&query.path);
    Ok(follow_along(async move |progress: &(dyn Fn(ImportProgress) + Send + Sync)| {
        reg.import_bundle(&path, None, progress).await
    }))
}

/// `PUT /_berth/import` (`berth import --server URL FILE.tar`): a bundle
/// (tar) sent over the network by a caller the access policy lets push to
/// every repository it fills; staged on disk, then imported as above, its
/// progress and report as JSON lines.
pub async fn import_upload(
    req: HttpRequest,
    reg: Reg,
    auth: web::Data<super::auth::Auth>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let caller = auth.caller(&req).await?;
    // Before the upload: a client learns to log in without sending gigabytes first.
    reg.may_send_bundle(&caller)?;
    let staged = reg.stage_bundle(body).await?;
    Ok(follow_along(async move |progress: &(dyn Fn(ImportProgress) + Send + Sync)| {
        let report = reg.import_bundle(&staged, Some(&caller), progress).await;
        drop(staged);
        report
    }))
}

/// `POST /_berth/usage` (`berth usage`): each quota's use and limit.
pub async fn usage(req: HttpRequest, reg: Reg, token: web::Data<AdminToken>) -> Result<HttpResponse, ApiError> {
    admin_only(&req, &token)?;
    Ok(HttpResponse::Ok().json(reg.quota_usage().await?))
}

/// The address and admin token of the server running on data directory
/// `root` (what `berth gc` and `berth readonly` ask).
pub fn running_server(root: &std::path::Path) -> Result<(String, String), String> {
    let addr = std::fs::read_to_string(server_addr_file(root))
        .map_err(|e| format!("a berth server holds {} but left no address: {e}", root.display()))?;
    let token = std::fs::read_to_string(token_file(root))
        .map_err(|e| format!("cannot read the server's admin token (run as the server's user): {e}"))?;
    Ok((addr.trim().to_string(), token.trim().to_string()))
}

/// Where a running server can be reached for `berth gc`: `<root>/.berth/server.addr`.
pub fn server_addr_file(root: &std::path::Path) -> std::path::PathBuf {
    root.join(crate::store::layout::SERVER_ADDR)
}

/// Where the running server's admin token is: `<root>/.berth/admin.token`.
pub fn token_file(root: &std::path::Path) -> std::path::PathBuf {
    root.join(crate::store::layout::ADMIN_TOKEN)
}

/// Makes a fresh token and writes it where only this user can read it.
pub fn write_token(root: &std::path::Path) -> std::io::Result<AdminToken> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let token = uuid::Uuid::new_v4().simple().to_string();
    let path = token_file(root);
    let _ = std::fs::remove_file(&path);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
    f.write_all(token.as_bytes())?;
    f.sync_all()?;
    Ok(AdminToken(token))
}

/// How long `berth gc` waits on a remote run with no line at all.
pub const REMOTE_IDLE: Duration = Duration::from_secs(600);
