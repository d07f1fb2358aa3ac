//! Who a request is from, how a 401 asks to log in, and the token endpoint.
//!
//! A request may carry `Authorization: Basic` (checked against the htpasswd
//! file, off the worker thread: bcrypt is slow on purpose) or `Bearer` (a
//! token from `/v2/token`, see `crate::tokens`). No header is an anonymous
//! caller; a header that does not check out is a 401 at once, logged with the
//! client's address and user name, never the password.
//!
//! With an external issuer (`auth.token`), only its Bearer tokens count
//! (`crate::jwt` verifies them), and a 401's challenge is registry:2's:
//! the realm, the service, the scope the request needs, and whether the token
//! was invalid or its scope insufficient.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use base64::Engine as _;

use crate::config::ChallengeScheme;
use crate::htpasswd::Htpasswd;
use crate::registry::Caller;
use crate::tokens::{TokenKey, LIFETIME};

use super::ApiError;

/// Authentication: off, htpasswd users (`auth.htpasswd`), or an external
/// token issuer (`auth.token`).
#[derive(Default)]
pub struct Auth {
    pub htpasswd: Option<AuthOn>,
    pub token: Option<TokenOn>,
}

/// An external token issuer's keys and where clients get its tokens.
pub struct TokenOn {
    pub verifier: crate::jwt::Verifier,
    pub cfg: crate::config::TokenAuthConfig,
}

/// Set on a request whose Bearer token the issuer's keys refused (its
/// challenge then says `error="invalid_token"`).
struct InvalidToken;
/// Set on a request that came with a valid external token (a 401 then means
/// `error="insufficient_scope"`).
struct ValidToken;

impl TokenOn {
    fn caller(&self, req: &HttpRequest) -> Result<Caller, ApiError> {
        let value = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
        // Anything but a Bearer token is no token (registry:2: 401, asking for one).
        let Some(token) = bearer(value) else { return Ok(Caller::Anonymous) };
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        match self.verifier.verify(token, now) {
            Ok(claims) => {
                let Some(reg) = req.app_data::<web::Data<crate::registry::Registry>>() else {
                    return Ok(Caller::Anonymous);
                };
                req.extensions_mut().insert(ValidToken);
                let key = token.rsplit('.').next().unwrap_or(token);
                Ok(reg.token_caller(claims, key))
            }
            Err(e) => {
                tracing::info!(client = %client(req), problem = %e, "refused an external token");
                req.extensions_mut().insert(InvalidToken);
                Err(refused(&format!("the token was refused: {e}")))
            }
        }
    }

    /// registry:2's challenge: realm, service, the scope `req` needs, and the error.
    fn challenge(&self, req: &HttpRequest) -> String {
        let realm = match self.cfg.autoredirect {
            true => {
                let info = req.connection_info();
                format!("{}://{}{}", info.scheme(), info.host(), self.cfg.autoredirect_path)
            }
            false => self.cfg.realm.clone(),
        };
        let mut out =
            format!("Bearer realm=\"{}\",service=\"{}\"", realm.replace('"', ""), self.cfg.service.replace('"', ""));
        if let Some(scope) = scope(req) {
            out.push_str(&format!(",scope=\"{scope}\""));
        }
        let ext = req.extensions();
        if ext.get::<InvalidToken>().is_some() {
            out.push_str(",error=\"invalid_token\"");
        } else if ext.get::<ValidToken>().is_some() {
            out.push_str(",error=\"insufficient_scope\"");
        }
        out
    }
}

/// The scope a request needs, as registry:2 names it: `repository:<name>:pull`
/// for reads, `pull,push` for writes, `delete` for deletes (and `pull` on a
/// mount's source), `registry:catalog:*` for the catalog; none for `/v2/`.
fn scope(req: &HttpRequest) -> Option<String> {
    use super::route::Endpoint;
    use actix_web::http::Method;
    let endpoint = Endpoint::parse(&super::tail(req)).ok()?;
    if matches!(endpoint, Endpoint::Catalog) {
        return Some("registry:catalog:*".into());
    }
    let name = endpoint.name()?;
    let actions = match *req.method() {
        Method::GET | Method::HEAD => "pull",
        Method::DELETE => "delete",
        _ => "pull,push",
    };
    let mut scope = format!("repository:{name}:{actions}");
    if let (Endpoint::Uploads(_), Ok(p)) = (&endpoint, super::Params::parse(req.query_string())) {
        if let (Some(_), Some(from)) = (&p.mount, &p.from) {
            scope.push_str(&format!(" repository:{from}:pull"));
        }
    }
    Some(scope)
}

pub struct AuthOn {
    pub users: Arc<Htpasswd>,
    pub key: TokenKey,
    pub scheme: ChallengeScheme,
    pub realm: String,
}

fn refused(why: &str) -> ApiError {
    ApiError::Unauthenticated(why.into())
}

fn client(req: &HttpRequest) -> String {
    super::client_ip(req).map(|ip| ip.to_string()).unwrap_or_default()
}

/// What an `Authorization` value holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented<'a> {
    Basic(String, String),
    Bearer(&'a str),
}

/// Parses an `Authorization` value; `None` for anything but Basic credentials or a Bearer token.
pub fn parse_authorization(value: &str) -> Option<Presented<'_>> {
    match bearer(value) {
        Some(t) => Some(Presented::Bearer(t)),
        None => basic_credentials(value).map(|(u, p)| Presented::Basic(u, p)),
    }
}

/// `user:password` from a Basic header value.
fn basic_credentials(value: &str) -> Option<(String, String)> {
    let (scheme, b64) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
    let (user, password) = String::from_utf8(raw).ok()?.split_once(':').map(|(u, p)| (u.to_string(), p.to_string()))?;
    Some((user, password))
}

fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl AuthOn {
    /// Whether `password` is `user`'s (bcrypt off the worker thread, unless verified lately).
    async fn check(&self, req: &HttpRequest, user: &str, password: String) -> bool {
        if self.users.recently_verified(user, &password) {
            return true;
        }
        let (h, u) = (self.users.clone(), user.to_string());
        let ok = actix_web::rt::task::spawn_blocking(move || h.verify(&u, &password)).await.unwrap_or(false);
        if !ok {
            tracing::warn!(client = %client(req), user = %user, "failed login");
        }
        ok
    }

    /// The `WWW-Authenticate` value of a 401 to `req`.
    pub fn challenge(&self, req: &HttpRequest) -> String {
        match self.scheme {
            ChallengeScheme::Basic => format!("Basic realm=\"{}\"", self.realm.replace('"', "")),
            ChallengeScheme::Token => {
                // The realm must be a URL the client can reach: the one it used for this request.
                let info = req.connection_info();
                let host = info.host().replace('"', "");
                format!("Bearer realm=\"{}://{host}/v2/token\",service=\"{host}\"", info.scheme())
            }
        }
    }
}

impl Auth {
    /// The `WWW-Authenticate` value of a 401 to `req` (none with authentication off).
    pub fn challenge(&self, req: &HttpRequest) -> Option<String> {
        match (&self.token, &self.htpasswd) {
            (Some(t), _) => Some(t.challenge(req)),
            (None, Some(on)) => Some(on.challenge(req)),
            (None, None) => None,
        }
    }

    /// The caller of `req`.
    pub async fn caller(&self, req: &HttpRequest) -> Result<Caller, ApiError> {
        if let Some(t) = &self.token {
            return t.caller(req);
        }
        let Some(on) = &self.htpasswd else { return Ok(Caller::Anonymous) };
        let Some(value) = req.headers().get(header::AUTHORIZATION) else { return Ok(Caller::Anonymous) };
        match parse_authorization(value.to_str().unwrap_or("")) {
            Some(Presented::Bearer(token)) => match on.key.verify(token, |u| on.users.hash_of(u)) {
                Ok(Some(user)) => Ok(Caller::User(user)),
                Ok(None) => Ok(Caller::Anonymous),
                Err(e) => {
                    tracing::info!(client = %client(req), problem = ?e, "refused a bearer token");
                    Err(refused("the token is invalid or expired; get a new one"))
                }
            },
            Some(Presented::Basic(user, password)) if on.check(req, &user, password.clone()).await => {
                Ok(Caller::User(user))
            }
            Some(Presented::Basic(..)) => Err(refused("invalid username or password")),
            None => {
                tracing::warn!(client = %client(req), "malformed Authorization header");
                Err(refused("the Authorization header is neither Basic credentials nor a Bearer token"))
            }
        }
    }
}

/// The query of `GET /v2/token` and the form of `POST /v2/token` (OAuth2's
/// password grant, which containerd tries first).
#[derive(Debug, Default)]
pub struct TokenRequest {
    scope: Vec<String>,
    grant_type: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

impl TokenRequest {
    fn parse(query: &str) -> TokenRequest {
        // `scope` may repeat; everything else is taken once.
        let mut out = TokenRequest::default();
        for (k, v) in url_pairs(query) {
            match k.as_str() {
                "scope" => out.scope.extend(v.split(' ').filter(|s| !s.is_empty()).map(str::to_string)),
                "grant_type" => out.grant_type = Some(v),
                "username" => out.username = Some(v),
                "password" => out.password = Some(v),
                _ => {}
            }
        }
        out
    }

    /// Whether every scope asked for is a pull (what anonymous callers ask for).
    fn pull_only(&self) -> bool {
        !self.scope.is_empty()
            && self.scope.iter().all(|s| s.rsplit_once(':').is_some_and(|(_, actions)| actions == "pull"))
    }
}

fn url_pairs(s: &str) -> Vec<(String, String)> {
    let decode = |v: &str| percent_encoding::percent_decode_str(&v.replace('+', " ")).decode_utf8_lossy().into_owned();
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

/// `GET`/`POST /v2/token`: a token for the htpasswd user whose password
/// comes with it (Basic header, or the form's `username`/`password`), or an
/// anonymous one without credentials.
///
/// Credentials berth does not know are refused, except when only pulls are
/// asked for: dockerd sends its Docker Hub login to every `registry-mirrors`
/// mirror, and such a pull gets what an anonymous one would (and the failed
/// login is still logged). `docker login` asks for no scope, so a wrong
/// password there is always refused.
pub async fn token(req: HttpRequest, body: web::Bytes, auth: web::Data<Auth>) -> Result<HttpResponse, ApiError> {
    let Some(on) = &auth.htpasswd else { return Err(ApiError::NotFound) };
    let mut ask = TokenRequest::parse(req.query_string());
    if req.method() == actix_web::http::Method::POST {
        let form = TokenRequest::parse(std::str::from_utf8(&body).unwrap_or(""));
        if form.grant_type.as_deref().is_some_and(|g| g != "password") {
            return Err(ApiError::UnsupportedGrant("only the password grant is supported".into()));
        }
        ask.scope.extend(form.scope);
        (ask.username, ask.password) = (form.username, form.password);
    }
    let credentials = match (ask.username.take(), ask.password.take()) {
        (Some(u), Some(p)) => Some((u, p)),
        _ => match req.headers().get(header::AUTHORIZATION) {
            Some(v) => {
                Some(basic_credentials(v.to_str().unwrap_or("")).ok_or_else(|| refused("expected Basic credentials"))?)
            }
            None => None,
        },
    };
    let user = match credentials {
        None => None,
        Some((user, password)) => match on.check(&req, &user, password).await {
            true => Some(user),
            false if ask.pull_only() => None,
            false => return Err(refused("invalid username or password")),
        },
    };
    let bound = user.as_deref().and_then(|u| on.users.hash_of(u)).unwrap_or_default();
    let token = on.key.issue(user.as_deref(), &bound);
    let issued = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    Ok(HttpResponse::Ok().insert_header(header::CacheControl(vec![header::CacheDirective::NoStore])).json(
        serde_json::json!({"token": token, "access_token": token, "expires_in": LIFETIME.as_secs(), "issued_at": issued}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_values_parse_strictly() {
        let b = base64::engine::general_purpose::STANDARD.encode("alice:pass:word");
        assert_eq!(basic_credentials(&format!("Basic {b}")), Some(("alice".into(), "pass:word".into())));
        assert_eq!(basic_credentials(&format!("basic {b}")), Some(("alice".into(), "pass:word".into())));
        let nocolon = base64::engine::general_purpose::STANDARD.encode("alice");
        for bad in ["Basic", "Basic !!!", &format!("Basic {nocolon}"), &format!("Bearer {b}"), "", " "] {
            assert_eq!(basic_credentials(bad), None, "{bad}");
        }
        assert_eq!(bearer("Bearer abc.def"), Some("abc.def"));
        assert_eq!(bearer("Basic abc"), None);
    }

    #[test]
    fn token_requests_read_scopes_and_the_password_grant() {
        let r = TokenRequest::parse("service=x&scope=repository:a/b:pull&scope=repository:c:pull");
        assert!(r.pull_only());
        assert!(!TokenRequest::parse("scope=repository:a:pull,push").pull_only());
        assert!(!TokenRequest::parse("account=alice&client_id=docker").pull_only(), "docker login");
        let f = TokenRequest::parse("grant_type=password&username=al%3Aice&password=a+b%26c&scope=repository:x:push");
        assert_eq!((f.username.as_deref(), f.password.as_deref()), (Some("al:ice"), Some("a b&c")));
        assert_eq!(f.scope, ["repository:x:push"]);
    }
}
