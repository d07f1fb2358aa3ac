//! One upstream registry: its awc client (one per worker thread, never one
//! per request), authentication with cached tokens, and the mapping of
//! transport failures and statuses to `MirrorError`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use awc::http::{header, Method, StatusCode};
use base64::Engine as _;
use moka::future::Cache;
use moka::Expiry;

use super::auth::{parse_challenge, realm_allowed, Challenge, TokenResponse};
use super::error::{MirrorError, MirrorResult};
use crate::config::UpstreamConfig;
use crate::metrics::Metrics;

/// A response whose body is still to be read.
pub type Response = awc::ClientResponse;

/// Basic credentials are reused for this long once an upstream asked for them.
const BASIC_TTL: Duration = Duration::from_secs(3600);

thread_local! {
    /// awc clients are `!Send`: each worker thread keeps one per upstream.
    static CLIENTS: RefCell<HashMap<String, awc::Client>> = RefCell::new(HashMap::new());
}

/// An `Authorization` value and how long it may be reused.
#[derive(Clone)]
struct Credential {
    header: Arc<str>,
    ttl: Duration,
}

struct CredentialExpiry;

impl Expiry<String, Credential> for CredentialExpiry {
    fn expire_after_create(&self, _: &String, value: &Credential, _: Instant) -> Option<Duration> {
        Some(value.ttl)
    }
}

pub struct Upstream {
    pub host: String,
    pub url: String,
    pub tag_ttl: Duration,
    /// This upstream's expiry, when it overrides `mirror.ttl`.
    pub ttl: Option<Duration>,
    cfg: UpstreamConfig,
    /// `Authorization` values by scope (`repository:<name>:pull`), until they expire.
    credentials: Cache<String, Credential>,
    /// Where the username and password come from, when a helper gives them.
    helper: Option<super::helper::Helper>,
    metrics: Arc<Metrics>,
    health: Mutex<Health>,
    /// The rate-limit budget the upstream last reported.
    budget: Mutex<Option<Budget>>,
    /// Reads answers awc cannot (`close_delimited`), made on first need.
    to_close: std::sync::OnceLock<Result<super::close_delimited::ToClose, String>>,
}

/// What `ratelimit-remaining` last said, and when.
#[derive(Debug, Clone, Copy)]
struct Budget {
    limit: Option<i64>,
    remaining: i64,
    /// The window the counts are over (`w=`); Docker Hub's is 6 hours.
    window: Duration,
    seen: Instant,
}

/// The window when an upstream reports counts without one.
const DEFAULT_WINDOW: Duration = Duration::from_secs(6 * 3600);

/// What berth last heard from an upstream (for `/readyz` and the web page).
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// When it last answered (any status but a 5xx or a 429).
    pub last_ok: Option<SystemTime>,
    /// The last failure and when it happened.
    pub last_error: Option<(SystemTime, String)>,
}

/// Docker Hub's `ratelimit-limit` / `ratelimit-remaining` (`100;w=21600`):
/// the count, and the window in seconds if given.
fn ratelimit(headers: &awc::http::header::HeaderMap, name: &str) -> Option<(i64, Option<u64>)> {
    parse_ratelimit(headers.get(name)?.to_str().ok()?)
}

fn parse_ratelimit(value: &str) -> Option<(i64, Option<u64>)> {
    let mut parts = value.split(';');
    let count = parts.next()?.trim().parse().ok()?;
    let window = parts.find_map(|p| p.trim().strip_prefix("w=")?.parse().ok());
    Some((count, window))
}

impl Upstream {
    pub fn new(cfg: &UpstreamConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            host: cfg.host.clone(),
            url: cfg.url.trim_end_matches('/').to_string(),
            tag_ttl: cfg.tag_ttl,
            ttl: cfg.ttl,
            cfg: cfg.clone(),
            credentials: Cache::builder().max_capacity(10_000).expire_after(CredentialExpiry).build(),
            helper: cfg.credential_helper.as_deref().map(|h| super::helper::Helper::new(h, cfg.credential_lifetime)),
            metrics,
            health: Mutex::default(),
            budget: Mutex::default(),
            to_close: std::sync::OnceLock::new(),
        }
    }

    /// Why revalidation is skipped now, if it is: the upstream reported fewer
    /// pulls left than `ratelimit_floor`, within its window.
    pub fn saving_budget(&self) -> Option<String> {
        let floor = self.cfg.ratelimit_floor as i64;
        let b = (*self.budget.lock().unwrap())?;
        (floor > 0 && b.remaining < floor && b.seen.elapsed() < b.window).then(|| {
            let of = b.limit.map(|l| format!(" of {l}")).unwrap_or_default();
            format!(
                "rate-limit budget: {} reports {}{of} pulls left, under the floor of {floor}",
                self.host, b.remaining
            )
        })
    }

    /// What berth last heard from this upstream.
    pub fn health(&self) -> Health {
        self.health.lock().unwrap().clone()
    }

    /// Counts and remembers a failure of this upstream; returns it.
    pub fn failed(&self, e: MirrorError) -> MirrorError {
        if let Some(kind) = e.kind() {
            self.metrics.upstream_errors.with_label_values(&[self.host.as_str(), kind]).inc();
            self.health.lock().unwrap().last_error = Some((SystemTime::now(), e.to_string()));
        }
        e
    }

    /// The label of the credential rate limits are counted against.
    fn credential_label(&self) -> &str {
        match (&self.cfg.username, &self.cfg.token, &self.helper) {
            (Some(u), _, _) => u,
            (None, Some(_), _) => "token",
            (None, None, Some(_)) => "helper",
            (None, None, None) => "anonymous",
        }
    }

    /// Records what an answer says: the upstream is up, and its rate-limit budget.
    fn answered(&self, resp: &Response) {
        let status = resp.status();
        if !status.is_server_error() && status != StatusCode::TOO_MANY_REQUESTS {
            self.health.lock().unwrap().last_ok = Some(SystemTime::now());
        }
        let labels = [self.host.as_str(), self.credential_label()];
        let limit = ratelimit(resp.headers(), "ratelimit-limit");
        if let Some((limit, _)) = limit {
            self.metrics.ratelimit_limit.with_label_values(&labels).set(limit);
        }
        if let Some((remaining, window)) = ratelimit(resp.headers(), "ratelimit-remaining") {
            self.metrics.ratelimit_remaining.with_label_values(&labels).set(remaining);
            let window = window.or(limit.and_then(|l| l.1)).map_or(DEFAULT_WINDOW, Duration::from_secs);
            let budget = Budget { limit: limit.map(|l| l.0), remaining, window, seen: Instant::now() };
            let was_saving = self.saving_budget().is_some();
            *self.budget.lock().unwrap() = Some(budget);
            match (was_saving, self.saving_budget()) {
                (false, Some(why)) => tracing::warn!(upstream = %self.host, "{why}: serving cached tags unrevalidated"),
                (true, None) => tracing::info!(upstream = %self.host, remaining, "rate-limit budget restored"),
                _ => {}
            }
        }
    }

    pub fn read_timeout(&self) -> Duration {
        self.cfg.read_timeout
    }

    pub fn response_timeout(&self) -> Duration {
        self.cfg.response_timeout
    }

    fn client(&self) -> awc::Client {
        CLIENTS.with(|clients| {
            clients
                .borrow_mut()
                .entry(self.host.clone())
                .or_insert_with(|| {
                    awc::Client::builder()
                        .connector(awc::Connector::new().timeout(self.cfg.connect_timeout))
                        .timeout(self.cfg.response_timeout)
                        .add_default_header((header::USER_AGENT, concat!("berth/", env!("CARGO_PKG_VERSION"))))
                        .finish()
                })
                .clone()
        })
    }

    /// Our basic credentials: configured, or from the credential helper.
    async fn basic(&self) -> MirrorResult<Option<String>> {
        let encode = |u: &str, p: &str| {
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}")))
        };
        if let Some(helper) = &self.helper {
            let (u, p) = helper
                .get(&self.host)
                .await
                .map_err(|reason| MirrorError::Unauthorized { host: self.host.clone(), reason })?;
            return Ok(Some(encode(&u, &p)));
        }
        let Some(u) = self.cfg.username.as_deref() else { return Ok(None) };
        Ok(Some(encode(u, self.cfg.password.as_deref().unwrap_or(""))))
    }

    fn transport_error(&self, e: awc::error::SendRequestError) -> MirrorError {
        use awc::error::SendRequestError as E;
        match e {
            E::Timeout => MirrorError::Timeout { host: self.host.clone(), after: self.cfg.response_timeout },
            E::Connect(awc::error::ConnectError::Timeout) => {
                MirrorError::Timeout { host: self.host.clone(), after: self.cfg.connect_timeout }
            }
            other => MirrorError::Unreachable { host: self.host.clone(), reason: other.to_string() },
        }
    }

    async fn send_once(
        &self,
        method: &Method,
        url: &str,
        accept: Option<&str>,
        auth: Option<&str>,
    ) -> MirrorResult<Response> {
        let mut req = self.client().request(method.clone(), url);
        if let Some(a) = accept {
            req = req.insert_header((header::ACCEPT, a));
        }
        if let Some(a) = auth {
            req = req.insert_header((header::AUTHORIZATION, a));
        }
        let mut resp = req.send().await.map_err(|e| self.failed(self.transport_error(e)))?;
        if super::close_delimited::applies(method, &resp) {
            resp = self.read_to_close(method, url, accept, auth, resp).await?;
        }
        self.answered(&resp);
        Ok(resp)
    }

    /// `first` again, its body read to the connection's close (see `close_delimited`).
    async fn read_to_close(
        &self,
        method: &Method,
        url: &str,
        accept: Option<&str>,
        auth: Option<&str>,
        first: Response,
    ) -> MirrorResult<Response> {
        let client = self
            .to_close
            .get_or_init(|| super::close_delimited::ToClose::new(self.cfg.connect_timeout, self.cfg.read_timeout))
            .as_ref()
            .map_err(|e| self.failed(MirrorError::Unreachable { host: self.host.clone(), reason: e.clone() }))?;
        let headers: Vec<_> = [(header::ACCEPT, accept), (header::AUTHORIZATION, auth)]
            .into_iter()
            .filter_map(|(name, value)| Some((name, value?)))
            .collect();
        client.again(method, url, &headers, first).await.map_err(|e| {
            let e = match e.is_timeout() {
                true => MirrorError::Timeout { host: self.host.clone(), after: self.cfg.read_timeout },
                false => MirrorError::Unreachable { host: self.host.clone(), reason: e.to_string() },
            };
            self.failed(e)
        })
    }

    /// Sends a request for `path` (under the upstream URL) with the
    /// credentials `scope` needs, answering a 401 challenge once: a stale
    /// cached token is dropped and a fresh one fetched. However many requests
    /// meet the challenge at once, the token for a scope is fetched once.
    pub async fn send(&self, method: Method, path: &str, accept: Option<&str>, scope: &str) -> MirrorResult<Response> {
        let url = match self.cfg.chain {
            // A mirror of several registries: which one is meant travels as `?ns=`.
            true => format!("{}{path}{}ns={}", self.url, if path.contains('?') { '&' } else { '?' }, self.host),
            false => format!("{}{path}", self.url),
        };
        if let Some(t) = &self.cfg.token {
            return self.send_once(&method, &url, accept, Some(&format!("Bearer {t}"))).await;
        }
        let cached = self.credentials.get(scope).await;
        let resp = self.send_once(&method, &url, accept, cached.as_ref().map(|c| &*c.header)).await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        // Drop the credential that was refused, unless another request replaced it already.
        if let Some(refused) = &cached {
            if self.credentials.get(scope).await.is_some_and(|now| Arc::ptr_eq(&now.header, &refused.header)) {
                self.credentials.invalidate(scope).await;
            }
        }
        let challenge = resp
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_challenge)
            .ok_or_else(|| {
                self.failed(MirrorError::Unauthorized {
                    host: self.host.clone(),
                    reason: "401 without a usable challenge".into(),
                })
            })?;
        let credential = self
            .credentials
            .try_get_with(scope.to_string(), async {
                self.credential_for(challenge, scope).await.map_err(|e| self.failed(e))
            })
            .await
            .map_err(|e| (*e).clone())?;
        let resp = self.send_once(&method, &url, accept, Some(&credential.header)).await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            return Err(self.failed(MirrorError::Unauthorized {
                host: self.host.clone(),
                reason: "a fresh credential was refused".into(),
            }));
        }
        Ok(resp)
    }

    /// What answers `challenge`: a bearer token from its realm, or our basic credentials.
    async fn credential_for(&self, challenge: Challenge, scope: &str) -> MirrorResult<Credential> {
        match challenge {
            Challenge::Bearer { realm, service, scope: asked } => {
                self.fetch_token(&realm, service.as_deref(), asked.as_deref().unwrap_or(scope)).await
            }
            Challenge::Basic => Ok(Credential {
                header: self
                    .basic()
                    .await?
                    .ok_or_else(|| MirrorError::Unauthorized {
                        host: self.host.clone(),
                        reason: "it asks for basic auth and no username is configured".into(),
                    })?
                    .into(),
                ttl: BASIC_TTL,
            }),
        }
    }

    /// The docker token flow: GET realm?service=…&scope=…, with our basic
    /// credentials only when the realm is on the upstream's own site. A token
    /// endpoint that is down or rate limiting is the upstream being
    /// unavailable (a cached copy may be served), not a refusal.
    async fn fetch_token(&self, realm: &str, service: Option<&str>, scope: &str) -> MirrorResult<Credential> {
        let mut query = vec![("scope", scope)];
        if let Some(s) = service {
            query.push(("service", s));
        }
        let mut req = self.client().get(realm);
        req = req.query(&query).map_err(|e| self.protocol(format!("bad token realm {realm}: {e}")))?;
        match self.basic().await? {
            Some(basic) if realm_allowed(&self.url, realm) => req = req.insert_header((header::AUTHORIZATION, basic)),
            Some(_) => {
                tracing::warn!(host = %self.host, realm, "token realm is on another site; asking it anonymously")
            }
            None => {}
        }
        let resp = req.send().await.map_err(|e| self.transport_error(e))?;
        self.answered(&resp);
        let status = resp.status();
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Err(self.status_error(status, resp.headers()));
        }
        if !status.is_success() {
            let reason = format!("token endpoint {realm} answered {status}");
            return Err(MirrorError::Unauthorized { host: self.host.clone(), reason });
        }
        let mut resp = resp;
        let body = resp.body().limit(1 << 20).await.map_err(|e| self.protocol(format!("token response: {e}")))?;
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| self.protocol(format!("token response is not JSON: {e}")))?;
        let (token, ttl) = parsed.into_token().ok_or_else(|| self.protocol("token response has no token".into()))?;
        tracing::debug!(host = %self.host, scope, ?ttl, "upstream token obtained");
        Ok(Credential { header: format!("Bearer {token}").into(), ttl })
    }

    pub fn protocol(&self, reason: String) -> MirrorError {
        MirrorError::Protocol { host: self.host.clone(), reason }
    }

    /// Maps a non-success status to an error; `what` names the missing thing for 404.
    pub fn check(&self, resp: Response, what: impl FnOnce() -> String) -> MirrorResult<Response> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        if status == StatusCode::NOT_FOUND {
            return Err(MirrorError::NotFound { host: self.host.clone(), what: what() });
        }
        Err(self.failed(self.status_error(status, resp.headers())))
    }

    /// A failed status as an error: rate limiting (with its Retry-After),
    /// refused credentials, or any other status.
    fn status_error(&self, status: StatusCode, headers: &awc::http::header::HeaderMap) -> MirrorError {
        let host = self.host.clone();
        match status {
            StatusCode::TOO_MANY_REQUESTS => MirrorError::TooManyRequests {
                host,
                retry_after: headers.get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_string),
            },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                MirrorError::Unauthorized { host, reason: format!("HTTP {status}") }
            }
            _ => MirrorError::Status { host, status: status.as_u16() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_s_ratelimit_headers() {
        assert_eq!(parse_ratelimit("100;w=21600"), Some((100, Some(21600))));
        assert_eq!(parse_ratelimit(" 76 ; w=21600"), Some((76, Some(21600))));
        assert_eq!(parse_ratelimit("5"), Some((5, None)));
        assert_eq!(parse_ratelimit("x;w=1"), None);
    }
}
