//! Events of client requests: a handler notes what it did (`note`, which
//! costs nothing without notification endpoints), and the dispatcher adds
//! who asked and how, then emits it once the request succeeded (`emit`).

use actix_web::{web, HttpMessage, HttpRequest};

use crate::events::{Actor, Event, RequestRecord, Target};
use crate::registry::{Caller, Registry, Route};

/// What a handler did, waiting in the request's extensions for `emit`.
struct Noted {
    action: &'static str,
    target: Target,
    /// `manifests` or `blobs`: the kind of URL the target has.
    kind: &'static str,
    upstream: Option<String>,
}

/// The repository's name in events: the pushed name, or for mirrored content
/// its one identity (`docker.io/library/alpine`), whatever the client's spelling.
pub fn repository(route: &Route) -> String {
    route.id().to_string()
}

/// Notes an event of `action` about `target()` (built only if anyone listens).
pub fn note(
    req: &HttpRequest,
    reg: &Registry,
    action: &'static str,
    route: Option<&Route>,
    target: impl FnOnce() -> Target,
) {
    if !reg.events().enabled() {
        return;
    }
    let target = target();
    let kind = if target.media_type == "application/octet-stream" { "blobs" } else { "manifests" };
    let upstream = match route {
        Some(Route::Mirrored(m)) => Some(m.upstream.host.clone()),
        _ => None,
    };
    let mut ext = req.extensions_mut();
    match ext.get_mut::<Vec<Noted>>() {
        Some(noted) => noted.push(Noted { action, target, kind, upstream }),
        None => {
            ext.insert(vec![Noted { action, target, kind, upstream }]);
        }
    }
}

/// Emits what the handler noted, with the request, the actor and the
/// target's URL (by the name the client used, under the server's prefix).
pub fn emit(req: &HttpRequest, reg: &Registry, caller: &Caller, name: Option<&crate::oci::RepoName>) {
    if !reg.events().enabled() {
        return;
    }
    let Some(noted) = req.extensions_mut().remove::<Vec<Noted>>() else { return };
    // One request, one request id (registry:2's), whatever the events.
    let request_id = uuid::Uuid::new_v4().to_string();
    for n in noted {
        emit_one(req, reg, caller, name, n, &request_id);
    }
}

fn emit_one(
    req: &HttpRequest,
    reg: &Registry,
    caller: &Caller,
    name: Option<&crate::oci::RepoName>,
    noted: Noted,
    request_id: &str,
) {
    let Noted { action, mut target, kind, upstream } = noted;
    let info = req.connection_info();
    if let (Some(name), false) = (name, target.digest.is_empty() || action == "delete") {
        let prefix = req.app_data::<web::Data<super::prefix::Prefix>>().map(|p| p.0.clone()).unwrap_or_default();
        target.url = format!("{}://{}{prefix}/v2/{name}/{kind}/{}", info.scheme(), info.host(), target.digest);
    }
    // registry:2 names the client as its proxy headers do, else the peer's address and port.
    let peer = req.peer_addr();
    let addr = match (super::client_ip(req), peer) {
        (Some(ip), Some(p)) if ip != p.ip() => ip.to_string(),
        (_, Some(p)) => p.to_string(),
        (Some(ip), None) => ip.to_string(),
        (None, None) => String::new(),
    };
    let header = |h: &str| req.headers().get(h).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let mut event = Event::new(action, target);
    event.request = RequestRecord {
        id: request_id.to_string(),
        addr,
        host: header("host"),
        method: req.method().to_string(),
        useragent: header("user-agent"),
    };
    if let Some(user) = caller.user() {
        event.actor = Actor { name: user.to_string() };
    }
    if let Some(upstream) = upstream {
        event = event.mirrored(&upstream);
    }
    reg.events().emit(event);
}
