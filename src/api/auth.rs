//! Who a request is from: `Authorization: Basic` checked against the
//! htpasswd file (off the worker thread: bcrypt is slow on purpose). No
//! header is an anonymous caller; a header that does not check out is a 401
//! at once (with the challenge), logged with the client's address and user
//! name, never the password.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::HttpRequest;
use base64::Engine as _;

use crate::htpasswd::Htpasswd;
use crate::oci::OciCode;
use crate::registry::Caller;

use super::ApiError;

/// The htpasswd users, when authentication is on.
#[derive(Clone)]
pub struct Users(pub Option<Arc<Htpasswd>>);

/// The `WWW-Authenticate` value of a 401 (when authentication is on).
#[derive(Clone)]
pub struct Challenge(pub Option<String>);

impl Challenge {
    pub fn basic(realm: &str) -> Self {
        Challenge(Some(format!("Basic realm=\"{}\"", realm.replace('"', ""))))
    }
}

fn refused(why: &str) -> ApiError {
    ApiError::BadRequest(OciCode::Unauthorized, why.into())
}

/// The caller of `req`.
pub async fn caller(req: &HttpRequest, users: &Users) -> Result<Caller, ApiError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else { return Ok(Caller::Anonymous) };
    let Some(htpasswd) = &users.0 else { return Ok(Caller::Anonymous) };
    let peer = req.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
    let credentials = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())));
    let Some((user, password)) = credentials else {
        tracing::warn!(client = %peer, "malformed Authorization header");
        return Err(refused("the Authorization header is not Basic credentials"));
    };
    let (h, u) = (htpasswd.clone(), user.clone());
    let ok = actix_web::rt::task::spawn_blocking(move || h.verify(&u, &password)).await.unwrap_or(false);
    if ok {
        Ok(Caller::User(user))
    } else {
        tracing::warn!(client = %peer, user = %user, "failed login");
        Err(refused("invalid username or password"))
    }
}
