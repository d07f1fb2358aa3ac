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

/// The `Set-Cookie` value that ends the session.
pub fn cleared() -> HeaderValue {
    HeaderValue::from_static("berth_session=; Path=/ui; Max-Age=0; HttpOnly; SameSite=Strict")
}
