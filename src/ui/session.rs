//! The web page's session: after a login, a cookie holding a token signed
//! with the registry's token key (`tokens`), naming the user and when it
//! expires, and bound to the user's password hash, so a changed password
//! or a removed user ends it at once. Marked for the web page alone: the
//! hash it is bound to carries a prefix the API's tokens never have, so the
//! cookie is not a bearer token for `/v2/`.

use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::HttpRequest;

use crate::api::auth::AuthOn;

const COOKIE: &str = "berth_session";
/// How long a session lasts.
const LIFETIME: Duration = Duration::from_secs(8 * 3600);

fn bound(on: &AuthOn, user: &str) -> Option<String> {
    on.users.hash_of(user).map(|h| format!("web\0{h}"))
}

/// The user the request's session cookie names, if it is genuine and current.
pub fn user(req: &HttpRequest, on: &AuthOn) -> Option<String> {
    let cookies = req.headers().get_all(header::COOKIE).filter_map(|v| v.to_str().ok());
    let token = cookies.flat_map(|v| v.split(';')).find_map(|c| c.trim().strip_prefix(&format!("{COOKIE}=")))?;
    on.key.verify(token, |u| bound(on, u)).ok().flatten()
}

/// The `Set-Cookie` value that starts a session for `user`.
pub fn cookie(req: &HttpRequest, on: &AuthOn, user: &str) -> Option<HeaderValue> {
    let token = on.key.issue_for(user, &bound(on, user)?, LIFETIME);
    let secure = if req.connection_info().scheme() == "https" { "; Secure" } else { "" };
    let value =
        format!("{COOKIE}={token}; Path=/ui; Max-Age={}; HttpOnly; SameSite=Strict{secure}", LIFETIME.as_secs());
    HeaderValue::from_str(&value).ok()
}

/// How long a form stays good for (a confirmation read, then answered).
const FORM_LIFETIME: Duration = Duration::from_secs(600);

fn form_binding(on: &AuthOn, user: &str, purpose: &str) -> Option<String> {
    on.users.hash_of(user).map(|h| format!("form\0{purpose}\0{h}"))
}

/// A token a form carries, so that only a page this server sent to `user`
/// can make the change `purpose` names (another site cannot forge the POST).
pub fn form_token(on: &AuthOn, user: &str, purpose: &str) -> Option<String> {
    Some(on.key.issue_for(user, &form_binding(on, user, purpose)?, FORM_LIFETIME))
}

/// Whether `token` is `form_token(user, purpose)`, unexpired.
pub fn form_token_ok(on: &AuthOn, user: &str, purpose: &str, token: &str) -> bool {
    on.key.verify(token, |u| form_binding(on, u, purpose)).ok().flatten().as_deref() == Some(user)
}

/// The `Set-Cookie` value that ends the session.
pub fn cleared() -> HeaderValue {
    HeaderValue::from_static("berth_session=; Path=/ui; Max-Age=0; HttpOnly; SameSite=Strict")
}
