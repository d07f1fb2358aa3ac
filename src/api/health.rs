//! `/v2/` version check and the liveness/readiness probes.

use std::sync::atomic::{AtomicU32, Ordering};

use actix_web::{web, HttpResponse};

use crate::config::{HealthConfig, HttpCheck};

use super::Reg;

/// `GET /v2/`: 200 tells clients this is a v2 registry.
pub fn base() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body("{}")
}

/// `GET /v1/_ping`: what dockerd asks before `docker search`; berth is a
/// standalone registry (no index to log in to).
pub async fn v1_ping() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("X-Docker-Registry-Standalone", "true"))
        .content_type("application/json")
        .body("true")
}

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

/// Ready when the data directory takes a write and reads it back (a full
/// disk, exhausted inodes or a read-only mount make it unready). The body
/// also says what berth last heard from each upstream; an upstream that is
/// down does not make berth unready (it serves what it holds).
/// What the configuration named that berth does not honour (`Config::ignored`).
#[derive(Debug, Clone, Default)]
pub struct Ignored(pub Vec<String>);

/// `[health]`'s checks with their failures in a row (registry:2's health
/// checks, evaluated on each probe rather than on a timer: a probe is the
/// timer).
pub struct Checks {
    cfg: HealthConfig,
    storage: AtomicU32,
    http: Vec<AtomicU32>,
    tcp: Vec<AtomicU32>,
}

impl Checks {
    pub fn new(cfg: &HealthConfig) -> Checks {
        let counters = |n: usize| (0..n).map(|_| AtomicU32::new(0)).collect();
        Checks {
            cfg: cfg.clone(),
            storage: AtomicU32::new(0),
            http: counters(cfg.http.len()),
            tcp: counters(cfg.tcp.len()),
        }
    }

    /// Counts one outcome; whether the check now counts as failing.
    fn failing(counter: &AtomicU32, ok: bool, threshold: u32) -> bool {
        match ok {
            true => {
                counter.store(0, Ordering::Relaxed);
                false
            }
            false => counter.fetch_add(1, Ordering::Relaxed) + 1 >= threshold.max(1),
        }
    }

    /// Why the configured checks say not ready (empty: ready).
    async fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for f in self.cfg.files.iter().filter(|f| f.exists()) {
            out.push(format!("health file {} exists", f.display()));
        }
        for (check, n) in self.cfg.tcp.iter().zip(&self.tcp) {
            let connected = tokio::time::timeout(check.timeout, tokio::net::TcpStream::connect(&check.addr)).await;
            let ok = matches!(connected, Ok(Ok(_)));
            if Self::failing(n, ok, check.threshold) {
                out.push(format!("tcp {} does not accept connections", check.addr));
            }
        }
        for (check, n) in self.cfg.http.iter().zip(&self.http) {
            let status = http_status(check).await;
            let ok = status.as_ref().is_ok_and(|s| *s == check.status);
            if Self::failing(n, ok, check.threshold) {
                let got = match status {
                    Ok(s) => format!("HTTP {s}"),
                    Err(e) => e,
                };
                out.push(format!("http {} answered {got}, not {}", check.uri, check.status));
            }
        }
        out
    }
}

async fn http_status(check: &HttpCheck) -> Result<u16, String> {
    let mut request = awc::Client::builder().timeout(check.timeout).finish().get(&check.uri);
    for (k, v) in &check.headers {
        request = request.insert_header((k.as_str(), v.as_str()));
    }
    request.send().await.map(|r| r.status().as_u16()).map_err(|e| e.to_string())
}

pub async fn readyz(reg: Reg, ignored: Option<web::Data<Ignored>>, checks: Option<web::Data<Checks>>) -> HttpResponse {
    let mut upstreams = upstream_lines(&reg.browsing().upstream_health(), std::time::SystemTime::now());
    // Not a reason to be unready; said where operators look.
    for line in ignored.iter().flat_map(|i| i.0.iter()) {
        upstreams.push_str(&format!("configuration: {line}\n"));
    }
    let stored = reg.check_ready().await;
    let mut problems = match &checks {
        Some(c) => c.problems().await,
        None => vec![],
    };
    if let Err(e) = &stored {
        tracing::warn!(error = %e, "readiness check failed");
        let threshold = checks.as_ref().map_or(1, |c| c.cfg.storage_threshold);
        let counted = checks.as_ref().is_none_or(|c| Checks::failing(&c.storage, false, threshold));
        if counted {
            problems.insert(0, e.client_message());
        }
    } else if let Some(c) = &checks {
        Checks::failing(&c.storage, true, 1);
    }
    match problems.is_empty() {
        true => HttpResponse::Ok().content_type("text/plain").body(format!("ready\n{upstreams}")),
        false => HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body(format!("not ready: {}\n{upstreams}", problems.join("; "))),
    }
}

/// One line per upstream: `upstream docker.io: ok (answered 3s ago)`, or
/// failing, with the last error.
fn upstream_lines(health: &[(String, crate::mirror::Health)], now: std::time::SystemTime) -> String {
    let ago = |t: std::time::SystemTime| {
        let secs = now.duration_since(t).unwrap_or_default().as_secs();
        humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
    };
    let mut out = String::new();
    for (host, h) in health {
        let line = match (&h.last_ok, &h.last_error) {
            (None, None) => "not contacted yet".to_string(),
            (Some(ok), Some((at, _))) if at < ok => format!("ok (answered {} ago)", ago(*ok)),
            (Some(ok), None) => format!("ok (answered {} ago)", ago(*ok)),
            (_, Some((at, e))) => format!("failing ({} ago: {e})", ago(*at)),
        };
        out.push_str(&format!("upstream {host}: {line}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::Health;
    use std::time::{Duration, SystemTime};

    #[test]
    fn upstream_lines_say_the_latest_news() {
        let now = SystemTime::now();
        let at = |s: u64| now - Duration::from_secs(s);
        let h = |ok: Option<u64>, err: Option<u64>| Health {
            last_ok: ok.map(at),
            last_error: err.map(|s| (at(s), "connection refused".to_string())),
        };
        let lines = upstream_lines(
            &[
                ("a".into(), h(None, None)),
                ("b".into(), h(Some(3), None)),
                ("c".into(), h(Some(3), Some(60))),
                ("d".into(), h(Some(60), Some(3))),
            ],
            now,
        );
        assert_eq!(
            lines,
            "upstream a: not contacted yet\nupstream b: ok (answered 3s ago)\nupstream c: ok (answered 3s ago)\n\
             upstream d: failing (3s ago: connection refused)\n"
        );
    }
}
