//! The built-in web page at `/` and `/ui/…`: what is stored (pushed and
//! mirrored repositories, their tags, one tag's platforms, layers and
//! referrers) and how to pull it. Server-rendered HTML with one stylesheet
//! berth serves itself; no JavaScript. What a viewer sees is what they may
//! pull: the page asks the registry (`registry::browse`), which asks the
//! access policy, as the API does. With authentication on, `/ui/login`
//! asks the browser for the registry's user name and password (HTTP Basic,
//! as `docker login` sends them) and answers them with a session cookie
//! (`session`), which every page after reads.

mod session;

mod format;
mod pages;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use maud::Markup;

use crate::api::auth::Auth;
use crate::registry::browse::Kind;
use crate::registry::{Caller, Registry, RegistryError};
use pages::Viewer;

/// Registers the page's routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(to_list))
        .route("/ui", web::get().to(to_list))
        .route("/ui/", web::get().to(repositories))
        .route("/ui/repo", web::get().to(repository))
        .route("/ui/tag", web::get().to(tag))
        .route("/ui/login", web::get().to(login))
        .route("/ui/logout", web::get().to(logout))
        .route("/ui/mirror", web::get().to(mirror))
        .route("/ui/housekeeping", web::get().to(housekeeping))
        .route("/ui/delete", web::get().to(confirm_delete))
        .route("/ui/delete", web::post().to(delete))
        .route("/ui/static/style.css", web::get().to(style));
}

const STYLE: &str = include_str!("style.css");

async fn style() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(STYLE)
}

fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header((header::LOCATION, to)).finish()
}

async fn to_list() -> HttpResponse {
    see_other("/ui/")
}

fn html(status: StatusCode, page: Markup) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        // Pages show what the viewer may pull: never from a shared cache.
        .insert_header((header::CACHE_CONTROL, "private, no-store"))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header((
            "Content-Security-Policy",
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'",
        ))
        .body(page.into_string())
}

/// Who asks: credentials sent with the request, else the session cookie,
/// else nobody; or the page that says the credentials were wrong.
async fn viewer(req: &HttpRequest, auth: &Auth) -> Result<Caller, HttpResponse> {
    match auth.caller(req).await {
        Ok(Caller::Anonymous) => {
            Ok(auth.htpasswd.as_ref().and_then(|on| session::user(req, on)).map_or(Caller::Anonymous, Caller::User))
        }
        Ok(caller) => Ok(caller),
        Err(_) => Err(login_challenge(auth, "The user name or password was not accepted. Try again.")),
    }
}

fn viewer_of<'a>(caller: &'a Caller, auth: &Auth) -> Viewer<'a> {
    Viewer { user: caller.user(), auth: auth.htpasswd.is_some() }
}

/// 401 with a Basic challenge: the browser asks for the user name and password.
fn login_challenge(auth: &Auth, message: &str) -> HttpResponse {
    let realm = auth.htpasswd.as_ref().map_or("berth".to_string(), |on| on.realm.replace('"', ""));
    let page = pages::problem(&Viewer { user: None, auth: true }, "Log in", message);
    let mut resp = html(StatusCode::UNAUTHORIZED, page);
    if let Ok(v) = header::HeaderValue::from_str(&format!("Basic realm=\"{realm}\", charset=\"UTF-8\"")) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// `/ui/login`: the browser's login prompt, then a session and back to the list.
async fn login(req: HttpRequest, auth: web::Data<Auth>) -> HttpResponse {
    let Some(on) = &auth.htpasswd else { return see_other("/ui/") };
    match viewer(&req, &auth).await {
        Ok(Caller::User(user)) => {
            let mut resp = see_other("/ui/");
            if let Some(cookie) = session::cookie(&req, on, &user) {
                resp.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            resp
        }
        Ok(_) => login_challenge(&auth, "Log in with your registry user name and password."),
        Err(challenge) => challenge,
    }
}

/// `/ui/logout`: the session ends (the browser may still remember the
/// password it was given, and offer it at the next login).
async fn logout(auth: web::Data<Auth>) -> HttpResponse {
    let page =
        pages::problem(&Viewer { user: None, auth: auth.htpasswd.is_some() }, "Logged out", "The session has ended.");
    let mut resp = html(StatusCode::OK, page);
    resp.headers_mut().insert(header::SET_COOKIE, session::cleared());
    resp
}

/// What the registry could not show, as a page.
fn failed(caller: &Caller, auth: &Auth, e: RegistryError) -> HttpResponse {
    let viewer = viewer_of(caller, auth);
    match e {
        RegistryError::NameUnknown(_) | RegistryError::ManifestUnknown(_) => {
            let msg = "There is no such repository or tag, or you may not pull it.";
            let status = StatusCode::NOT_FOUND;
            match (&viewer.user, viewer.auth) {
                // Perhaps theirs to see once logged in.
                (None, true) => {
                    html(status, pages::problem(&viewer, "Not found", &format!("{msg} Log in to see more.")))
                }
                _ => html(status, pages::problem(&viewer, "Not found", msg)),
            }
        }
        e => {
            tracing::warn!(error = %e, "the web page could not be shown");
            let status = StatusCode::from_u16(e.code().status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            html(status, pages::problem(&viewer, "Something went wrong", &e.client_message()))
        }
    }
}

fn bad_query(caller: &Caller, auth: &Auth, e: impl std::fmt::Display) -> HttpResponse {
    html(StatusCode::BAD_REQUEST, pages::problem(&viewer_of(caller, auth), "Bad request", &e.to_string()))
}

/// Who asks, and what (the query string as `Q`); or the page that says why not.
async fn asked<Q: serde::de::DeserializeOwned>(req: &HttpRequest, auth: &Auth) -> Result<(Caller, Q), HttpResponse> {
    let caller = viewer(req, auth).await?;
    match web::Query::<Q>::from_query(req.query_string()) {
        Ok(q) => Ok((caller, q.into_inner())),
        Err(e) => Err(bad_query(&caller, auth, e)),
    }
}

#[derive(serde::Deserialize)]
struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    kind: String,
    #[serde(default = "first")]
    page: usize,
}

fn first() -> usize {
    1
}

async fn repositories(req: HttpRequest, reg: web::Data<Registry>, auth: web::Data<Auth>) -> HttpResponse {
    let (caller, query) = match asked::<ListQuery>(&req, &auth).await {
        Ok(asked) => asked,
        Err(resp) => return resp,
    };
    let kind = match query.kind.as_str() {
        "" => None,
        "pushed" => Some(Kind::Pushed),
        host => Some(Kind::Mirrored(host.to_string())),
    };
    let page = match reg.browsing().repositories(&caller, query.q.trim(), kind.as_ref(), query.page).await {
        Ok(p) => p,
        Err(e) => return failed(&caller, &auth, e),
    };
    let counts = reg.browsing().catalog_counts(&caller);
    let filter = pages::ListFilter { search: query.q.trim(), kind: &query.kind };
    html(StatusCode::OK, pages::repositories(&viewer_of(&caller, &auth), &filter, &counts, &page))
}

#[derive(serde::Deserialize)]
struct RepoQuery {
    name: String,
    #[serde(default = "first")]
    page: usize,
    /// A tag the page just deleted (what the notice says).
    deleted: Option<String>,
}

/// The host clients reach this server by, for the pull commands.
fn host(req: &HttpRequest) -> String {
    req.connection_info().host().to_string()
}

async fn repository(req: HttpRequest, reg: web::Data<Registry>, auth: web::Data<Auth>) -> HttpResponse {
    let (caller, query) = match asked::<RepoQuery>(&req, &auth).await {
        Ok(asked) => asked,
        Err(resp) => return resp,
    };
    let notice = query.deleted.as_ref().map(|t| format!("Deleted the tag {t}."));
    match reg.browsing().tags(&caller, &query.name, query.page).await {
        Ok(page) => {
            let viewer = viewer_of(&caller, &auth);
            let signature = reg.browsing().signature_decision(&caller, &query.name).await;
            let shown = pages::RepoView { host: &host(&req), name: &query.name, notice: notice.as_deref(), signature };
            html(StatusCode::OK, pages::repository(&viewer, &shown, &page))
        }
        Err(e) => failed(&caller, &auth, e),
    }
}

#[derive(serde::Deserialize)]
struct TagQuery {
    name: String,
    tag: String,
}

async fn tag(req: HttpRequest, reg: web::Data<Registry>, auth: web::Data<Auth>) -> HttpResponse {
    let (caller, query) = match asked::<TagQuery>(&req, &auth).await {
        Ok(asked) => asked,
        Err(resp) => return resp,
    };
    match reg.browsing().tag(&caller, &query.name, &query.tag).await {
        Ok(details) => {
            let can_delete = reg.may_delete(&caller, &query.name);
            html(StatusCode::OK, pages::tag(&viewer_of(&caller, &auth), &host(&req), &query.name, &details, can_delete))
        }
        Err(e) => failed(&caller, &auth, e),
    }
}

/// What a delete form's token is for.
fn delete_purpose(name: &str, tag: &str) -> String {
    format!("delete\0{name}\0{tag}")
}

fn forbidden(caller: &Caller, auth: &Auth, message: &str) -> HttpResponse {
    html(StatusCode::FORBIDDEN, pages::problem(&viewer_of(caller, auth), "Not allowed", message))
}

/// `GET /ui/delete?name=&tag=`: the confirmation, with the form that deletes.
async fn confirm_delete(req: HttpRequest, reg: web::Data<Registry>, auth: web::Data<Auth>) -> HttpResponse {
    let (caller, query) = match asked::<TagQuery>(&req, &auth).await {
        Ok(asked) => asked,
        Err(resp) => return resp,
    };
    let details = match reg.browsing().tag(&caller, &query.name, &query.tag).await {
        Ok(d) => d,
        Err(e) => return failed(&caller, &auth, e),
    };
    if !reg.may_delete(&caller, &query.name) {
        return forbidden(&caller, &auth, "You may not delete tags of this repository (or deletes are off).");
    }
    let token = match (&auth.htpasswd, &caller) {
        (Some(on), Caller::User(user)) => {
            session::form_token(on, user, &delete_purpose(&query.name, &query.tag)).unwrap_or_default()
        }
        _ => String::new(),
    };
    let digest = details.row.digest.to_string();
    let page = pages::confirm_delete(&viewer_of(&caller, &auth), &query.name, &query.tag, &digest, &token);
    html(StatusCode::OK, page)
}

#[derive(serde::Deserialize)]
struct DeleteForm {
    name: String,
    tag: String,
    #[serde(default)]
    token: String,
}

/// Whether a form post comes from a page of this server (browsers send
/// `Origin` with every POST; another site's page cannot make it ours).
fn same_origin(req: &HttpRequest) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok()) else { return true };
    let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
    origin_host == req.connection_info().host()
}

/// `POST /ui/delete`: deletes the tag the confirmation named, then back to
/// the repository with a notice.
async fn delete(
    req: HttpRequest,
    form: web::Form<DeleteForm>,
    reg: web::Data<Registry>,
    auth: web::Data<Auth>,
) -> HttpResponse {
    let caller = match viewer(&req, &auth).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let DeleteForm { name, tag, token } = form.into_inner();
    let genuine = match (&auth.htpasswd, &caller) {
        (Some(on), Caller::User(user)) => session::form_token_ok(on, user, &delete_purpose(&name, &tag), &token),
        (Some(_), _) => false,
        (None, _) => true,
    };
    if !same_origin(&req) || !genuine {
        return forbidden(&caller, &auth, "This form did not come from this page, or it expired. Open the tag again.");
    }
    match reg.delete_tag(&caller, &name, &tag).await {
        Ok(()) => see_other(&format!("/ui/repo?name={}&deleted={}", pages::q(&name), pages::q(&tag))),
        Err(e) => failed(&caller, &auth, e),
    }
}

/// `/ui/mirror`: the mirror at a glance. Its numbers name no repository, but
/// upstream errors may: with authentication on, for logged-in users only.
/// `/ui/housekeeping`: each quota's use, and what retention would remove now
/// (its dry run), for the repositories the viewer may pull.
async fn housekeeping(req: HttpRequest, reg: web::Data<Registry>, auth: web::Data<Auth>) -> HttpResponse {
    let caller = match viewer(&req, &auth).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    if auth.htpasswd.is_some() && caller == Caller::Anonymous {
        return login_challenge(&auth, "Log in to see quotas and what retention would remove.");
    }
    // On shared storage the preview takes a lifecycle turn: a page waits briefly, then says busy (503).
    let preview = reg.retention_within(true, std::time::Duration::from_secs(5));
    let (usage, mut plan) = match (reg.quota_usage().await, preview.await) {
        (Ok(u), Ok(p)) => (u, p),
        (Err(e), _) | (_, Err(e)) => return failed(&caller, &auth, e),
    };
    plan.removals.retain(|r| reg.browsing().visible(&caller, &r.repository));
    html(StatusCode::OK, pages::housekeeping(&viewer_of(&caller, &auth), &usage, &plan))
}

async fn mirror(req: HttpRequest, reg: web::Data<Registry>, auth: web::Data<Auth>) -> HttpResponse {
    let caller = match viewer(&req, &auth).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    if auth.htpasswd.is_some() && caller == Caller::Anonymous {
        return login_challenge(&auth, "Log in to see the mirror's traffic and upstreams.");
    }
    match reg.browsing().mirror_overview().await {
        Ok(m) => html(StatusCode::OK, pages::mirror(&viewer_of(&caller, &auth), &m)),
        Err(e) => failed(&caller, &auth, e),
    }
}
