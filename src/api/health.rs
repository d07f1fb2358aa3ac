//! `/v2/` version check and the liveness/readiness probes.

use actix_web::HttpResponse;

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

pub async fn readyz(reg: Reg, ignored: Option<actix_web::web::Data<Ignored>>) -> HttpResponse {
    let mut upstreams = upstream_lines(&reg.browsing().upstream_health(), std::time::SystemTime::now());
    // Not a reason to be unready; said where operators look.
    for line in ignored.iter().flat_map(|i| i.0.iter()) {
        upstreams.push_str(&format!("configuration: {line}\n"));
    }
    match reg.check_ready().await {
        Ok(()) => HttpResponse::Ok().content_type("text/plain").body(format!("ready\n{upstreams}")),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            let why = e.client_message();
            HttpResponse::ServiceUnavailable().content_type("text/plain").body(format!("not ready: {why}\n{upstreams}"))
        }
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
