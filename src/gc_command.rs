//! `berth gc`: garbage collection of a data directory. When a berth server
//! serves the directory (it holds the index), the run happens inside that
//! server, asked for over loopback (`POST /_berth/gc`), so it is safe while
//! the server serves; otherwise it runs here, holding the index so that no
//! server starts on the directory meanwhile. Progress goes to stderr: a bar
//! on a terminal, plain lines otherwise; the summary goes to stdout.

use std::io::IsTerminal;
use std::time::Duration;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Config;
use crate::registry::gc::{GcOptions, GcProgress, GcReport};
use crate::registry::Registry;
use crate::store::{index::Index, StoreError};

/// Shows progress: a bar on a terminal, a line per phase and per tenth otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    last_line: std::sync::Mutex<(String, usize)>,
}

impl Progress {
    fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{msg:10} [{bar:40}] {pos}/{len} {prefix}")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar
        });
        Progress { bar, last_line: Default::default() }
    }

    fn show(&self, p: GcProgress) {
        let (phase, done, total, freed) = match p {
            GcProgress::Marking { repositories, done } => ("marking", done, repositories, None),
            GcProgress::Sweeping { blobs, scanned, bytes_freed } => ("sweeping", scanned, blobs, Some(bytes_freed)),
        };
        if let Some(bar) = &self.bar {
            bar.set_message(phase);
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            bar.set_prefix(freed.map(|f| format!("{} freed", bytesize::ByteSize::b(f))).unwrap_or_default());
            return;
        }
        let tenth = (done * 10).checked_div(total).unwrap_or(10);
        let mut last = self.last_line.lock().unwrap();
        if last.0 != phase || last.1 != tenth {
            *last = (phase.to_string(), tenth);
            let what = if phase == "marking" { "repositories" } else { "blobs" };
            eprintln!("berth gc: {phase} {done}/{total} {what}");
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// What a run held back and why, for its summary ("" when nothing).
fn held_back(r: &GcReport) -> String {
    let mut parts = Vec::new();
    if r.held_by_grace_blobs + r.held_by_grace_manifests > 0 {
        let bytes = match r.held_by_grace_bytes {
            0 => String::new(),
            b => format!(", {}", bytesize::ByteSize::b(b)),
        };
        parts.push(format!(
            "{} blobs{bytes} and {} manifests written within gc.grace ({}; --grace 0s includes them)",
            r.held_by_grace_blobs,
            r.held_by_grace_manifests,
            humantime::format_duration(Duration::from_secs(r.grace_secs))
        ));
    }
    if r.held_mirrored_blobs > 0 {
        parts.push(format!("{} blobs only mirrored content uses (expiry removes those)", r.held_mirrored_blobs));
    }
    match parts.is_empty() {
        true => String::new(),
        false => format!("\nheld back: {}", parts.join("; ")),
    }
}

/// The summary line of a run, and what it held back.
pub fn summary(r: &GcReport) -> String {
    let verb = if r.dry_run { "would remove" } else { "removed" };
    let held = held_back(r);
    format!(
        "berth gc: {verb} {} manifests and {} blobs, {} {}; scanned {} blobs in {} repositories in {:.1}s \
         (marking {:.1}s, listing {:.1}s, sweeping {:.1}s)",
        r.manifests_removed,
        r.blobs_removed,
        bytesize::ByteSize::b(r.bytes_freed),
        if r.dry_run { "to free" } else { "freed" },
        r.blobs_scanned,
        r.repositories,
        r.millis as f64 / 1000.0,
        r.mark_millis as f64 / 1000.0,
        r.list_millis as f64 / 1000.0,
        r.millis.saturating_sub(r.mark_millis + r.list_millis) as f64 / 1000.0
    ) + &held
}

/// Runs garbage collection of `cfg.storage.root` (see the module comment).
pub fn run(cfg: &Config, opts: GcOptions) -> Result<GcReport, String> {
    let progress = Progress::new();
    let path = format!(
        "/_berth/gc?dry_run={}&delete_untagged={}&grace={}s",
        opts.dry_run,
        opts.delete_untagged,
        opts.grace.as_secs()
    );
    let result = here_or_in_the_server(
        cfg,
        async |r: &Registry| r.lifecycle().gc(opts, &|p| progress.show(p)).await,
        async |addr: &str, token: &str| follow(addr, token, &path, |p| progress.show(p)).await,
    );
    progress.finish();
    result
}

/// Runs `local` over `cfg`'s data directory here when no server holds it;
/// else `remote` asks the server that does, with its address and admin
/// token: the same work, done where the index is.
fn here_or_in_the_server<T>(
    cfg: &Config,
    local: impl AsyncFnOnce(&Registry) -> crate::registry::RegistryResult<T>,
    remote: impl AsyncFnOnce(&str, &str) -> Result<T, String>,
) -> Result<T, String> {
    let root = &cfg.storage.root;
    match Index::open_waiting(&crate::store::index_path(root), Duration::ZERO) {
        Ok(index) => actix_web::rt::System::new().block_on(async {
            let backend = crate::backend(cfg).map_err(|e| e.to_string())?;
            let store = crate::store::Store::new(backend, index, cfg.uploads.max_per_client);
            let registry = Registry::with_store(cfg, store)?;
            registry.lifecycle().ensure_indexed().await.map_err(|e| e.to_string())?;
            // What the work emits (retention's deletes) is queued for the
            // notification endpoints; what is not sent before the end is sent
            // by the next server.
            registry.events().start(0);
            let result = local(&registry).await.map_err(|e| e.to_string());
            registry.events().close().await;
            result
        }),
        Err(StoreError::InUse(_)) => {
            let (addr, token) = crate::api::admin::running_server(root)?;
            actix_web::rt::System::new().block_on(remote(&addr, &token))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// The server's JSON answer to `POST path`.
async fn answer<T: serde::de::DeserializeOwned>(addr: &str, token: &str, path: &str) -> Result<T, String> {
    let mut resp = crate::local_server::admin_post(addr, token, path, crate::api::admin::REMOTE_IDLE).await?;
    let body = resp.body().limit(256 * 1024 * 1024).await.map_err(|e| e.to_string())?;
    serde_json::from_slice(&body).map_err(|e| format!("the server's answer: {e}"))
}

/// `POST path` to a run the server streams (`api::admin::follow_along`):
/// each progress line shown as it comes, then its report or its error.
async fn follow<P, R>(addr: &str, token: &str, path: &str, show: impl Fn(P)) -> Result<R, String>
where
    P: serde::de::DeserializeOwned,
    R: serde::de::DeserializeOwned,
{
    let resp = crate::local_server::admin_post(addr, token, path, crate::api::admin::REMOTE_IDLE).await?;
    follow_lines(resp, show).await
}

/// The lines of a run's answer (see `follow`).
async fn follow_lines<P, R>(
    mut resp: impl futures::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>> + Unpin,
    show: impl Fn(P),
) -> Result<R, String>
where
    P: serde::de::DeserializeOwned,
    R: serde::de::DeserializeOwned,
{
    let mut buf = Vec::new();
    while let Some(chunk) = resp.next().await {
        buf.extend_from_slice(&chunk.map_err(|e| format!("the server's answer broke off: {e}"))?);
        while let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            let value: serde_json::Value = serde_json::from_slice(&line).map_err(|e| e.to_string())?;
            if let Some(p) = value.get("progress") {
                if let Ok(p) = serde_json::from_value::<P>(p.clone()) {
                    show(p);
                }
            } else if let Some(r) = value.get("report") {
                return serde_json::from_value(r.clone()).map_err(|e| e.to_string());
            } else if let Some(e) = value.get("error") {
                return Err(e.as_str().unwrap_or("the run failed").to_string());
            }
        }
    }
    Err("the server ended the run without a report".into())
}

/// `berth retention [--dry-run]`: one retention run of `cfg.storage.root`,
/// inside the server that holds it if one does, else here.
pub fn retention(cfg: &Config, dry_run: bool) -> Result<crate::registry::retention::RetentionReport, String> {
    let path = format!("/_berth/retention?dry_run={dry_run}");
    here_or_in_the_server(
        cfg,
        async |r: &Registry| r.retention(dry_run).await,
        async |addr: &str, token: &str| answer(addr, token, &path).await,
    )
}

/// `berth usage`: each quota's use and limit, from the server that holds
/// the data directory if one does, else from its index here.
pub fn usage(cfg: &Config) -> Result<Vec<crate::registry::quota::Usage>, String> {
    here_or_in_the_server(
        cfg,
        async |r: &Registry| r.quota_usage().await,
        async |addr: &str, token: &str| answer(addr, token, "/_berth/usage").await,
    )
}

/// `berth import BUNDLE`: into `cfg.storage.root`'s mirror, inside the
/// server that holds it if one does (it reads the bundle from this machine's
/// disk), else here with a progress bar.
pub fn import(cfg: &Config, bundle: &std::path::Path) -> Result<crate::registry::import::ImportReport, String> {
    let bundle = std::path::absolute(bundle).map_err(|e| format!("{}: {e}", bundle.display()))?;
    let query = percent_encoding::utf8_percent_encode(&bundle.to_string_lossy(), percent_encoding::NON_ALPHANUMERIC)
        .to_string();
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("import {bar:40} {bytes:>10}/{total_bytes:10} {bytes_per_sec}")
                .expect("a valid template"),
        );
        bar
    });
    let show = |p: crate::registry::import::ImportProgress| {
        if let Some(b) = &bar {
            b.set_length(p.total);
            b.set_position(p.bytes);
        }
    };
    let path = format!("/_berth/import?path={query}");
    let result = here_or_in_the_server(
        cfg,
        async |r: &Registry| r.import_bundle(&bundle, None, &show).await,
        async |addr: &str, token: &str| follow(addr, token, &path, show).await,
    );
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    result
}

/// `berth import --server URL DIR|FILE.tar`: sends the bundle to a berth over
/// the network (`PUT /_berth/import`, as `user`, who must be allowed to push
/// to each of its repositories there) and follows the import it runs.
pub fn import_to(
    server: &str,
    user: Option<(String, String)>,
    bundle: &std::path::Path,
) -> Result<crate::registry::import::ImportReport, String> {
    // Over the network a bundle goes as one tar: a directory is packed first (into the temp directory).
    let packed = match bundle.is_dir() {
        true => {
            let tmp = tempfile::Builder::new()
                .prefix("berth-bundle-")
                .suffix(".tar")
                .tempfile()
                .map_err(|e| format!("a temp file to pack {} into: {e}", bundle.display()))?
                .into_temp_path();
            crate::bundle::pack_tar(bundle, &tmp)?;
            Some(tmp)
        }
        false => None,
    };
    let bundle: &std::path::Path = packed.as_deref().unwrap_or(bundle);
    let size = std::fs::metadata(bundle).map_err(|e| format!("{}: {e}", bundle.display()))?.len();
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(size);
        bar.set_style(
            ProgressStyle::with_template("{msg:6} {bar:40} {bytes:>10}/{total_bytes:10} {bytes_per_sec}")
                .expect("a valid template"),
        );
        bar.set_message("send");
        bar
    });
    let base = crate::local_server::base_url(server);
    let result = actix_web::rt::System::new().block_on(async {
        let file = tokio::fs::File::open(bundle).await.map_err(|e| format!("{}: {e}", bundle.display()))?;
        let sent = bar.clone();
        let body = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20).inspect(move |chunk| {
            if let (Some(b), Ok(c)) = (&sent, chunk) {
                b.inc(c.len() as u64);
            }
        });
        let client = crate::local_server::client(crate::local_server::is_loopback(&base), None);
        let req = client.put(format!("{base}/_berth/import"));
        let req = match &user {
            Some((u, p)) => req.basic_auth(u, p),
            None => req,
        };
        let mut resp =
            req.send_body(actix_web::body::SizedStream::new(size, body)).await.map_err(|e| format!("{base}: {e}"))?;
        if !resp.status().is_success() {
            let text = resp.body().await.unwrap_or_default();
            return Err(format!("{base} answered {}: {}", resp.status(), String::from_utf8_lossy(&text)));
        }
        if let Some(b) = &bar {
            b.set_message("import");
            b.set_position(0);
        }
        follow_lines(resp, |p: crate::registry::import::ImportProgress| {
            if let Some(b) = &bar {
                b.set_length(p.total);
                b.set_position(p.bytes);
            }
        })
        .await
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    result
}

/// A retention report for people: one line per removal, with its rule and why.
pub fn retention_summary(r: &crate::registry::retention::RetentionReport) -> String {
    let verb = if r.dry_run { "would remove" } else { "removed" };
    let mut out = String::new();
    for x in &r.removals {
        let what = match &x.tag {
            Some(t) => format!("{}:{t} ({})", x.repository, x.digest),
            None => format!("{}@{} (untagged)", x.repository, x.digest),
        };
        out.push_str(&format!("{verb} {what}: {} ({})\n", x.rule, x.why));
    }
    for h in &r.held {
        out.push_str(&format!("held back {h}\n"));
    }
    let tags = r.removals.iter().filter(|x| x.tag.is_some()).count();
    out.push_str(&format!(
        "berth retention: {verb} {tags} tags and {} untagged manifests of {} tags in {} repositories in {:.1}s{}",
        r.removals.len() - tags,
        r.tags_scanned,
        r.repositories,
        r.millis as f64 / 1000.0,
        if r.dry_run { "" } else { "; `berth gc` frees their blobs" }
    ));
    out
}

/// `berth readonly [on|off]`: asks the server running on `root` to turn
/// read-only mode on or off (or only says whether it is on).
pub fn read_only(root: &std::path::Path, on: Option<bool>) -> Result<bool, String> {
    let (addr, token) = crate::api::admin::running_server(root).map_err(|e| {
        format!("{e} (read-only mode is switched on a running server; start it with storage.read_only)")
    })?;
    let path = match on {
        Some(on) => format!("/_berth/readonly?enabled={on}"),
        None => "/_berth/readonly".to_string(),
    };
    actix_web::rt::System::new().block_on(async {
        let mut resp = crate::local_server::admin_post(&addr, &token, &path, Duration::from_secs(30)).await?;
        let body = resp.body().await.map_err(|e| e.to_string())?;
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        v["read_only"].as_bool().ok_or_else(|| "the server's answer has no read_only".to_string())
    })
}
