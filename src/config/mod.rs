//! berth's configuration: a typed struct whose `Default` is the product
//! (`berth serve` alone works), layered as defaults → `--config FILE` →
//! `BERTH_…` environment → command-line flags. `config/berth.toml` documents
//! every key with its default value; a test keeps the two equal.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Environment variables that override the file: `BERTH_<SECTION>__<KEY>`,
/// e.g. `BERTH_SERVER__LISTEN=127.0.0.1:5000`, `BERTH_STORAGE__DELETE__ENABLED=false`.
pub const ENV_PREFIX: &str = "BERTH";

pub mod registry2;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub uploads: UploadsConfig,
    pub cache: CacheConfig,
    pub mirror: MirrorConfig,
    pub gc: GcConfig,
    pub auth: AuthConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
    pub validation: ValidationConfig,
    pub health: HealthConfig,
    pub notifications: NotificationsConfig,
    /// Tags that may not move once pushed (`[[immutable]]`).
    pub immutable: Vec<ImmutableRule>,
    /// Which pushed tags and untagged manifests go (`[[retention]]`).
    pub retention: Vec<RetentionRule>,
    /// Byte limits on pushed repositories (`[[quota]]`).
    pub quota: Vec<QuotaRule>,
    /// What the configuration named that berth does not honour (the startup
    /// warning's lines), repeated in `/readyz`'s body. Not a setting.
    #[serde(skip)]
    pub ignored: Vec<String>,
}

/// What `/readyz` checks besides the storage (registry:2's `health`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Not ready while any of these files exists (an operator takes an
    /// instance out of rotation by creating one).
    pub files: Vec<PathBuf>,
    /// Ready only while each answers (`status`, 200 by default).
    pub http: Vec<HttpCheck>,
    /// Ready only while each accepts a TCP connection.
    pub tcp: Vec<TcpCheck>,
    /// Failed storage probes in a row before `/readyz` says not ready.
    pub storage_threshold: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self { files: vec![], http: vec![], tcp: vec![], storage_threshold: 1 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheck {
    pub uri: String,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    #[serde(default = "ok_status")]
    pub status: u16,
    #[serde(default = "one_second", with = "humantime_serde")]
    pub timeout: Duration,
    /// Failures in a row before the check counts.
    #[serde(default = "one")]
    pub threshold: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpCheck {
    pub addr: String,
    #[serde(default = "one_second", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "one")]
    pub threshold: u32,
}

fn ok_status() -> u16 {
    200
}
fn one_second() -> Duration {
    Duration::from_secs(1)
}
fn one() -> u32 {
    1
}

/// Checks of pushed manifests beyond the spec's (registry:2's `validation`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidationConfig {
    /// Foreign (non-distributable) layers name URLs to fetch them from. A
    /// pushed manifest's URLs must be http(s) without a fragment, match one of
    /// these regular expressions (when any are given) and none of `urls_deny`.
    pub urls_allow: Vec<String>,
    pub urls_deny: Vec<String>,
}

/// Tags of pushed repositories that, once pushed, keep naming the same
/// manifest: `repositories` (patterns, as in auth.rules), `tags` (patterns;
/// `!pattern` is a mutable exception), whether they may be deleted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImmutableRule {
    pub repositories: Vec<String>,
    pub tags: Vec<String>,
    pub allow_delete: bool,
}

/// A byte limit over pushed repositories (see `registry::quota`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaRule {
    pub repositories: Vec<String>,
    pub max_size: bytesize::ByteSize,
}

/// A retention rule over pushed repositories (see `registry::retention`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionRule {
    pub repositories: Vec<String>,
    /// Keep the N newest tags by push time (the rest: removable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<usize>,
    /// Keep tags matching these patterns (`v*`, `latest`).
    pub keep_tags: Vec<String>,
    /// Removable once pushed longer ago than this.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub remove_older_than: Option<Duration>,
    /// Removable once not pulled (nor pushed) for this long.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub unpulled_for: Option<Duration>,
    /// Untagged manifests go once this old (unless a remaining tag reaches them).
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub untagged_after: Option<Duration>,
}

/// Webhooks told of pushes, pulls, deletes and the mirror's fetches and
/// evictions (registry:2's `notifications`, in its event envelope).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationsConfig {
    pub endpoints: Vec<NotifyEndpoint>,
    /// Each manifest event lists the manifest's references (registry:2's
    /// `events.includereferences`).
    pub include_references: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyEndpoint {
    /// Names the endpoint in metrics, logs and the queue's bookkeeping (its
    /// place in the queue is kept under this name across restarts).
    pub name: String,
    pub url: String,
    /// Sent with every delivery (e.g. `Authorization`).
    pub headers: std::collections::BTreeMap<String, String>,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Failures in a row before deliveries wait `backoff` between attempts.
    pub threshold: u32,
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
    /// Events whose target has one of these media types are not sent.
    pub ignore_media_types: Vec<String>,
    /// Events of these actions (push, pull, mount, delete, fetch, evict) are not sent.
    pub ignore_actions: Vec<String>,
    pub disabled: bool,
}

impl Default for NotifyEndpoint {
    fn default() -> Self {
        NotifyEndpoint {
            name: String::new(),
            url: String::new(),
            headers: Default::default(),
            timeout: Duration::from_secs(1),
            threshold: 10,
            backoff: Duration::from_secs(1),
            ignore_media_types: Vec::new(),
            ignore_actions: Vec::new(),
            disabled: false,
        }
    }
}

/// Prometheus metrics at `/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics` (to anyone who can reach the port, as Prometheus scrapes).
    pub enabled: bool,
    /// Client addresses counted as a team in the per-client byte counters
    /// (`team = ["10.0.0.0/8", "192.168.1.7"]`); an authenticated user is
    /// counted by name, anyone else as `other`.
    pub teams: std::collections::BTreeMap<String, Vec<String>>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { enabled: true, teams: Default::default() }
    }
}

/// Who may pull, push and delete (see `registry::access`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Basic authentication against an htpasswd file (bcrypt lines, as
    /// `htpasswd -B` or `berth htpasswd` write them). Unset: no authentication.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub htpasswd: Option<HtpasswdConfig>,
    /// Tokens from an external issuer instead (registry:2's `auth.token`):
    /// what a token's `access` claim grants is what its bearer may do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenAuthConfig>,
    /// How a 401 asks clients to log in: `token` (a Bearer challenge pointing
    /// at berth's `/v2/token`, which takes the htpasswd users' passwords or
    /// none) lets dockerd pull anonymously through `registry-mirrors` and still
    /// `docker login`; `basic` is registry:2's `Basic realm` challenge exactly
    /// (dockerd then cannot pull from berth without logging in).
    pub challenge: ChallengeScheme,
    /// Rules by repository name, first match wins; with none matching,
    /// mirrored content is everyone's to pull and pushed content needs a user.
    pub rules: Vec<AccessRule>,
}

/// An external token server (docker_auth, an SSO's registry endpoint, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenAuthConfig {
    /// Where clients get tokens (the challenge's `realm`).
    pub realm: String,
    /// This registry's name at the issuer (the challenge's `service`, the tokens' audience).
    pub service: String,
    /// The tokens' `iss`.
    pub issuer: String,
    /// PEM certificates whose keys sign tokens (by libtrust `kid`, or roots of an `x5c` chain).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rootcertbundle: Option<PathBuf>,
    /// A JSON Web Key Set file of signing keys (by `kid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks: Option<PathBuf>,
    /// Name the realm by the request's own host and `autoredirect_path`
    /// instead of `realm` (registry:2's `autoredirect`, for a token server
    /// behind the same host name).
    pub autoredirect: bool,
    pub autoredirect_path: String,
}

impl Default for TokenAuthConfig {
    fn default() -> Self {
        TokenAuthConfig {
            realm: String::new(),
            service: String::new(),
            issuer: String::new(),
            rootcertbundle: None,
            jwks: None,
            autoredirect: false,
            autoredirect_path: "/auth/token/".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChallengeScheme {
    #[default]
    Token,
    Basic,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HtpasswdConfig {
    /// The htpasswd file; reloaded when it changes.
    pub path: PathBuf,
    /// The realm of the `WWW-Authenticate: Basic` challenge.
    pub realm: String,
}

impl Default for HtpasswdConfig {
    fn default() -> Self {
        Self { path: PathBuf::from("/etc/berth/htpasswd"), realm: "berth".into() }
    }
}

/// One access rule: the repositories it covers (`*` patterns) and who may
/// pull, push and delete there: user names, `"*"` (any logged-in user) or
/// `"anonymous"` (everyone).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessRule {
    pub repositories: Vec<String>,
    pub pull: Vec<String>,
    pub push: Vec<String>,
    pub delete: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcConfig {
    /// Run garbage collection of pushed content every this long while serving
    /// (e.g. "1day"); unset: only when `berth gc` asks.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Duration>,
    /// Scheduled runs also delete manifests no tag reaches (as `--delete-untagged`).
    pub delete_untagged: bool,
    /// Blobs and manifests linked more recently than this are kept: a push
    /// uploads its layers before the manifest that references them.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
}

impl Default for GcConfig {
    fn default() -> Self {
        Self { schedule: None, delete_untagged: false, grace: Duration::from_secs(600) }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port to listen on (registry:2 uses port 5000).
    pub listen: String,
    /// HTTP worker threads; 0 means one per CPU core.
    pub workers: usize,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Most client connections served at once (all workers together). berth
    /// lowers it to fit the open-files limit, so that a flood of connections
    /// is refused at the door instead of starving the connections already in.
    pub max_connections: usize,
    /// Longest silence allowed while a client sends a request body (an upload
    /// or a manifest): a stalled body ends the request with 408.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Slowest request body accepted, in bytes a second averaged over 10 s
    /// (408 below it): one byte a second does not hold a connection for long.
    pub body_min_rate: bytesize::ByteSize,
    /// Time allowed to send the request line and headers (408, connection closed).
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// How long an idle keep-alive connection stays open ("0s": one request per connection).
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Longest request URI, path and query (414 above it).
    pub max_url_length: usize,
    /// Most request headers (431 above it; at most 96, which the HTTP parser allows).
    pub max_headers: usize,
    /// Most bytes of request headers, names and values together (431 above it;
    /// at most 96 KiB, under the HTTP parser's own 128 KiB).
    pub max_header_bytes: bytesize::ByteSize,
    /// Serve HTTPS (HTTP/1.1 and HTTP/2) instead of plain HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Headers added to every response (registry:2's `http.headers`), name → value.
    pub headers: std::collections::BTreeMap<String, String>,
    /// Reverse proxies (networks or addresses) whose `X-Forwarded-For` names
    /// the client, for per-client limits, metrics and logs.
    pub trusted_proxies: Vec<String>,
    /// Serve the API under this path (`/registry` → `/registry/v2/…`;
    /// registry:2's `http.prefix`); empty: at `/v2/`.
    pub prefix: String,
}

/// The most headers actix-web's HTTP/1 parser takes (it refuses more with a bare 431).
const MAX_HEADERS_PARSED: usize = 96;
/// The most header bytes `server.max_header_bytes` may allow: under the parser's 128 KiB head.
const MAX_HEADER_BYTES_PARSED: u64 = 96 * 1024;

/// Native TLS: PEM files, read again when they change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain (leaf first).
    pub certificate: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Clients must present a certificate issued by this CA (mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UploadsConfig {
    /// Upload sessions idle for longer than this are purged with their data
    /// (registry:2's `uploadpurging.age`); so are mirror downloads cut off by a crash.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Most upload sessions one client address may hold open; beyond it, 429 TOOMANYREQUESTS.
    pub max_per_client: usize,
    /// Largest blob a client may push, over all its chunks (413 TOO_LARGE above it).
    pub max_blob_size: bytesize::ByteSize,
}

impl Default for UploadsConfig {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(24 * 3600),
            max_per_client: crate::store::DEFAULT_MAX_UPLOADS_PER_CLIENT,
            max_blob_size: bytesize::ByteSize::gib(50),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Data directory; registry:2's tree lives under `<root>/docker/registry/v2`,
    /// so pointing this at an existing `/var/lib/registry` serves it unchanged.
    pub root: PathBuf,
    pub delete: DeleteConfig,
    /// Largest manifest accepted on push, in bytes (the spec asks for at least 4 MiB).
    pub max_manifest_size: u64,
    /// Keep the registry in an S3-compatible bucket instead of under `root`
    /// (which then holds only berth's local state: its index, spool, token).
    pub s3: Option<S3Config>,
    /// Or an Azure Blob Storage container (registry:2's `storage.azure`).
    pub azure: Option<AzureConfig>,
    /// Or a Google Cloud Storage bucket (registry:2's `storage.gcs`).
    pub gcs: Option<GcsConfig>,
    /// Read-only mode (registry:2's `storage.maintenance.readonly.enabled`):
    /// pushes and deletes answer 405; `berth readonly on|off` toggles it
    /// while the server runs.
    pub read_only: bool,
    /// Blob downloads by redirect (registry:2's `storage.redirect` and its
    /// `redirect` middleware).
    pub redirect: RedirectConfig,
}

/// Blob GETs answered with a 307 to a presigned URL of the object store (or
/// to `base_url`, a CDN in front of the storage), so the bytes do not pass
/// through berth. Off by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedirectConfig {
    pub enabled: bool,
    /// How long a presigned URL is good for (registry:2's 20 minutes).
    #[serde(with = "humantime_serde")]
    pub expiry: Duration,
    /// A CDN (or web server) that serves the tree: the redirect goes to
    /// `<base_url>/docker/registry/v2/blobs/…/data`, unsigned.
    pub base_url: String,
}

impl Default for RedirectConfig {
    fn default() -> Self {
        RedirectConfig { enabled: false, expiry: Duration::from_secs(20 * 60), base_url: String::new() }
    }
}

/// An Azure Blob Storage container (`storage.azure`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AzureConfig {
    pub account_name: String,
    /// The storage account's shared key (base64), or `account_key_file`.
    pub account_key: String,
    pub account_key_file: Option<PathBuf>,
    pub container: String,
    /// The cloud's domain (`core.windows.net`; `core.chinacloudapi.cn`, …).
    pub realm: String,
    /// The blob service's URL, overriding `https://<account>.blob.<realm>`
    /// (Azurite: `http://127.0.0.1:10000/devstoreaccount1`).
    pub endpoint: String,
    /// Key prefix of the tree (registry:2's `rootdirectory`).
    pub prefix: String,
}

impl Default for AzureConfig {
    fn default() -> Self {
        AzureConfig {
            account_name: String::new(),
            account_key: String::new(),
            account_key_file: None,
            container: String::new(),
            realm: "core.windows.net".into(),
            endpoint: String::new(),
            prefix: String::new(),
        }
    }
}

impl std::fmt::Debug for AzureConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureConfig")
            .field("account_name", &self.account_name)
            .field("account_key", &if self.account_key.is_empty() { "" } else { "***" })
            .field("container", &self.container)
            .field("realm", &self.realm)
            .field("endpoint", &self.endpoint)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// A Google Cloud Storage bucket (`storage.gcs`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcsConfig {
    pub bucket: String,
    /// A service account's JSON key file; unset: the environment's
    /// (`GOOGLE_APPLICATION_CREDENTIALS`, or the metadata server on GCE/GKE).
    pub keyfile: Option<PathBuf>,
    /// Key prefix of the tree (registry:2's `rootdirectory`).
    pub prefix: String,
}

/// An S3-compatible bucket (`storage.s3`); registry:2's S3 driver settings
/// translate to it (`config::registry2`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// `http(s)://host:port` of an S3-compatible server; empty for AWS itself.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    /// Key prefix of the registry tree (registry:2's `rootdirectory`), so
    /// Distribution and berth can share a bucket.
    pub prefix: String,
    /// Credentials; when empty, `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`
    /// (or the instance's role) are used.
    pub access_key: String,
    pub secret_key: String,
    /// A file holding the secret key (a Docker or Kubernetes secret), read at start.
    pub secret_key_file: Option<PathBuf>,
    /// Path-style requests (`endpoint/bucket/key`), which most S3-compatible
    /// servers want; off for virtual-hosted style (`bucket.endpoint/key`).
    pub path_style: bool,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret: configs are logged.
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("access_key", &self.access_key)
            .field("path_style", &self.path_style)
            .finish_non_exhaustive()
    }
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            region: "us-east-1".into(),
            bucket: String::new(),
            prefix: String::new(),
            access_key: String::new(),
            secret_key: String::new(),
            secret_key_file: None,
            path_style: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeleteConfig {
    /// Allow DELETE of manifests, tags and blobs (as registry:2's
    /// `storage.delete.enabled`); when off, deletes answer 405 UNSUPPORTED.
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// How many tag → digest resolutions to keep in memory.
    pub tags: u64,
    /// How long a cached tag resolution is trusted before the store is read
    /// again; bounds staleness when another process writes the same directory.
    #[serde(with = "humantime_serde")]
    pub tag_ttl: Duration,
    /// How many blob and manifest link lookups (repository, digest) to keep.
    pub links: u64,
    /// Memory for manifest bodies, in bytes.
    pub manifest_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MirrorConfig {
    /// Serve as a pull-through mirror (`berth serve --no-mirror` turns it off:
    /// a plain private registry, no upstream, no protected prefixes).
    pub enabled: bool,
    /// The upstream for names that carry no registry host and no `?ns=`.
    pub default: String,
    /// Name prefixes no client may push into, so that pushed images never
    /// shadow mirrored ones (Docker Hub's official images live under `library/`).
    pub protected_prefixes: Vec<String>,
    /// Refuse pushes to one-component names (`alpine`): on Docker Hub they are
    /// the official images (`library/alpine`), which a push would shadow.
    pub protect_short_names: bool,
    /// Allow a push into a name whose mirrored copy holds content (the pushed
    /// image then shadows the mirrored one for every client).
    pub allow_shadowing: bool,
    /// Mirrored content not served for this long is evicted (tags, then the
    /// manifests and blobs nothing kept refers to); every use refreshes it.
    /// An upstream's own `ttl` overrides it.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Most bytes held only by mirrored content (blobs pushed content also
    /// uses do not count); above it the least recently used mirrored images
    /// are evicted down to 90% of it. Unset: no cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_size: Option<bytesize::ByteSize>,
    /// Images that never expire and are never evicted for the cap:
    /// `docker.io/library/alpine:3.20` (one tag), `docker.io/library/alpine`
    /// (every tag), `ghcr.io/owner/*` (`*` matches any characters).
    pub pin: Vec<String>,
    /// How often expiry and the cap are enforced.
    #[serde(with = "humantime_serde")]
    pub eviction_interval: Duration,
    /// Images pulled through the mirror at startup and every `warm_interval`
    /// (as `berth warm` does): `docker.io/library/alpine:3.20`, `ghcr.io/org/app:v1`.
    pub warm: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub warm_interval: Duration,
    /// The upstream registries, by host. A list given in a file replaces this default.
    pub upstreams: Vec<UpstreamConfig>,
    /// Signature policy (`[[mirror.verify]]`), first matching rule decides;
    /// none matching: no signature is asked for.
    pub verify: Vec<VerifyRule>,
    /// An admission webhook asked before a mirrored image is first served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admission: Option<AdmissionConfig>,
    /// Sibling berths asked before the upstream for a cold blob or manifest
    /// by digest: `http://host:port`, `dns://name:port` for every address
    /// the name resolves to (A/AAAA), or `srv://name` for every target and
    /// port of the name's SRV records. The same list may go to every
    /// sibling: each one knows itself among them.
    pub peers: Vec<String>,
    /// The name server `srv://` peers are looked up at (`host:port`, e.g.
    /// Consul's DNS on 127.0.0.1:8600); the system's resolver without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_dns: Option<std::net::SocketAddr>,
    /// The secret siblings present to each other (`peer_token` or `peer_tls`
    /// is required with `peers`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_token: Option<String>,
    /// Mutual TLS between siblings (`[mirror.peer_tls]`): each presents this
    /// client certificate, and trusts (as siblings' servers and clients) what
    /// `ca` issued. Needs `server.tls`; siblings are then `https://`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_tls: Option<PeerTlsConfig>,
    /// How long a sibling may take to answer, or stay silent mid-transfer,
    /// before it is skipped (for a while) and the next source asked.
    #[serde(with = "humantime_serde")]
    pub peer_timeout: Duration,
}

/// A sibling mirror's TLS identity (`[mirror.peer_tls]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerTlsConfig {
    /// This berth's client certificate (PEM, leaf first).
    pub certificate: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The CA that issued every sibling's certificates, client and server.
    pub ca: PathBuf,
}

/// The admission webhook (`[mirror.admission]`): a scanner or policy
/// service that allows or denies each mirrored image (see `registry::admission`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdmissionConfig {
    /// Where berth POSTs its question (http or https).
    pub url: String,
    /// How long berth waits for an answer.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// What a timeout, an error or an unreadable answer means: `closed`
    /// refuses the image (503, asked again at the next pull), `open` serves it.
    pub failure: AdmissionFailure,
    /// How long an answer stands before the hook is asked again.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Patterns over repository identities the hook is asked about (all
    /// mirrored repositories when empty).
    pub repositories: Vec<String>,
    /// A shared secret: sent to the hook (`Authorization: Bearer`), and what
    /// the hook sends to revoke an answer (`POST /_berth/admission/forget`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            timeout: Duration::from_secs(5),
            failure: AdmissionFailure::Closed,
            ttl: Duration::from_secs(3600),
            repositories: vec![],
            token: None,
        }
    }
}

/// Shown without its secret, wherever it is printed.
impl std::fmt::Debug for AdmissionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdmissionConfig")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .field("failure", &self.failure)
            .field("ttl", &self.ttl)
            .field("repositories", &self.repositories)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdmissionFailure {
    Open,
    Closed,
}

/// A signature policy rule: manifests of the repositories it covers must
/// carry a cosign signature by one of `keys` (see `trust`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VerifyRule {
    /// Patterns over repository identities, as in `auth.rules`.
    pub repositories: Vec<String>,
    /// PEM files of trusted public keys (ECDSA P-256/P-384, Ed25519, RSA).
    pub keys: Vec<PathBuf>,
    pub mode: VerifyMode,
    pub scope: VerifyScope,
}

impl Default for VerifyRule {
    fn default() -> Self {
        Self { repositories: vec![], keys: vec![], mode: VerifyMode::Enforce, scope: VerifyScope::Mirrored }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyMode {
    /// Unsigned manifests (and their blobs) are refused with 403.
    Enforce,
    /// Served, but logged, counted and shown.
    Warn,
    /// The rule matches and asks for nothing (an exception to a later rule).
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyScope {
    Mirrored,
    Pushed,
    All,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The registry host clients name (`docker.io`, `ghcr.io`, …): matched
    /// against `?ns=` and a first path component.
    pub host: String,
    /// Where that registry's API is (`https://registry-1.docker.io`).
    pub url: String,
    /// Credentials for the upstream (basic auth, or to obtain bearer tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// A bearer token to send as is, instead of username and password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A docker credential helper that gives the username and password
    /// instead (`docker-credential-pass`, or a path): run as `<helper> get`
    /// with the host on stdin, JSON `{"Username", "Secret"}` on stdout
    /// (registry:2's `proxy.exec`). Never logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_helper: Option<String>,
    /// How long the helper's answer is used before it is asked again.
    #[serde(with = "humantime_serde")]
    pub credential_lifetime: Duration,
    /// How long a mirrored tag is served without asking the upstream again.
    #[serde(with = "humantime_serde")]
    pub tag_ttl: Duration,
    /// This upstream's content expires after this long unused (overrides `mirror.ttl`).
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
    /// Time allowed to connect to the upstream.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time allowed from sending a request to the response headers.
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
    /// Longest silence allowed between two chunks of a blob body.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// When the upstream reports fewer pulls left than this (Docker Hub's
    /// `ratelimit-remaining`), cached tags are served without revalidation
    /// until its window has passed; cold pulls still go through. 0: never.
    pub ratelimit_floor: u64,
    /// `url` is another mirror (a berth, or any registry that reads
    /// containerd's `?ns=`) that mirrors `host` among others: every request
    /// to it names `host` with `?ns=<host>` (edge → central → Docker Hub).
    pub chain: bool,
}

/// Shown without its secrets, wherever it is printed.
impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |s: &Option<String>| s.as_ref().map(|_| "***");
        f.debug_struct("UpstreamConfig")
            .field("host", &self.host)
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &hidden(&self.password))
            .field("token", &hidden(&self.token))
            .field("credential_helper", &self.credential_helper)
            .field("credential_lifetime", &self.credential_lifetime)
            .field("tag_ttl", &self.tag_ttl)
            .field("ttl", &self.ttl)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("ratelimit_floor", &self.ratelimit_floor)
            .field("chain", &self.chain)
            .finish()
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            host: String::new(),
            url: String::new(),
            username: None,
            password: None,
            token: None,
            credential_helper: None,
            credential_lifetime: Duration::from_secs(3600),
            tag_ttl: Duration::from_secs(300),
            ttl: None,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            ratelimit_floor: 10,
            chain: false,
        }
    }
}

impl UpstreamConfig {
    pub fn new(host: &str, url: &str) -> Self {
        Self { host: host.into(), url: url.trim_end_matches('/').into(), ..Default::default() }
    }
}

impl Default for MirrorConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            default: "docker.io".into(),
            protected_prefixes: vec!["library/".into()],
            protect_short_names: true,
            allow_shadowing: false,
            ttl: Duration::from_secs(7 * 24 * 3600),
            max_size: None,
            pin: vec![],
            eviction_interval: Duration::from_secs(60),
            warm: vec![],
            warm_interval: Duration::from_secs(6 * 3600),
            upstreams: vec![UpstreamConfig::new("docker.io", "https://registry-1.docker.io")],
            verify: vec![],
            admission: None,
            peers: vec![],
            peer_token: None,
            peer_tls: None,
            peer_dns: None,
            peer_timeout: Duration::from_secs(2),
        }
    }
}

impl MirrorConfig {
    /// Adds an upstream, or points an existing one (same host) at `url`
    /// (`--mirror HOST=URL`).
    pub fn set_upstream(&mut self, host: &str, url: &str) {
        let host = host.to_ascii_lowercase();
        let host = host.as_str();
        match self.upstreams.iter_mut().find(|u| u.host == host) {
            Some(u) => u.url = url.trim_end_matches('/').into(),
            None => self.upstreams.push(UpstreamConfig::new(host, url)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Log filter: a level (`info`, `debug`, …) or a tracing `EnvFilter`
    /// directive; `RUST_LOG` overrides it.
    pub level: String,
    /// `text` for people, `json` for log collectors.
    pub format: LogFormat,
    /// Fields added to every log line (registry:2's `log.fields`), e.g.
    /// `{ service = "registry", environment = "prod" }`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub fields: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:5000".into(),
            workers: 0,
            shutdown_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            body_timeout: Duration::from_secs(60),
            body_min_rate: bytesize::ByteSize::kib(1),
            header_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(75),
            max_url_length: 8192,
            max_headers: 64,
            max_header_bytes: bytesize::ByteSize::kib(32),
            tls: None,
            headers: Default::default(),
            trusted_proxies: vec![],
            prefix: String::new(),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            root: PathBuf::from("./data"),
            delete: DeleteConfig::default(),
            max_manifest_size: 4 * 1024 * 1024,
            s3: None,
            azure: None,
            gcs: None,
            read_only: false,
            redirect: RedirectConfig::default(),
        }
    }
}

impl Default for DeleteConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self { tags: 100_000, tag_ttl: Duration::from_secs(10), links: 1_000_000, manifest_bytes: 64 * 1024 * 1024 }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into(), format: LogFormat::Text, fields: Default::default() }
    }
}

/// A network in CIDR form, or one address.
pub fn parse_network(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{s:?} is not a network (CIDR) or an address"))
}

/// A configuration that could not be loaded; the message names the bad key or file.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(String);

impl Config {
    /// Loads defaults, then `file` (if any), then `BERTH_…` variables from `env`.
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        Self::load_noted(file, env).map(|(cfg, _)| cfg)
    }

    /// As `load`; a registry:2 `config.yml` (with its `REGISTRY_*`
    /// variables) is translated first, and what became of each of its keys
    /// is returned beside the configuration.
    pub fn load_noted(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Config, Vec<registry2::Note>), ConfigError> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let defaults = config::Config::try_from(&Config::default()).map_err(|e| ConfigError(e.to_string()))?;
        let mut builder = config::Config::builder().add_source(defaults);
        let mut notes = Vec::new();
        if let Some(file) = file {
            if !file.is_file() {
                return Err(ConfigError(format!("config file {} not found", file.display())));
            }
            if registry2::is_registry2(file) {
                let yaml = std::fs::read_to_string(file)
                    .map_err(|e| ConfigError(format!("cannot read {}: {e}", file.display())))?;
                let (translated, n) = registry2::translate(&yaml, &env)
                    .map_err(|e| ConfigError(format!("{}: {}", file.display(), e.0)))?;
                notes = n;
                let as_source = config::Config::try_from(&translated).map_err(|e| ConfigError(e.to_string()))?;
                builder = builder.add_source(as_source);
            } else {
                builder = builder.add_source(config::File::from(file).format(config::FileFormat::Toml));
            }
        }
        let env: config::Map<String, String> =
            env.into_iter().filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}_"))).collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .source(Some(env)),
        );
        let merged = builder.build().map_err(|e| ConfigError(e.to_string()))?;
        let mut cfg: Config = merged.try_deserialize().map_err(|e| ConfigError(e.to_string()))?;
        cfg.normalize();
        cfg.validate()?;
        Ok((cfg, notes))
    }

    /// The merged configuration as TOML, for `berth config check`; secrets
    /// are shown as `***`.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        for u in &mut shown.mirror.upstreams {
            for secret in [&mut u.password, &mut u.token] {
                if secret.is_some() {
                    *secret = Some("***".into());
                }
            }
        }
        if let Some(token) = shown.mirror.peer_token.as_mut() {
            *token = "***".into();
        }
        if let Some(token) = shown.mirror.admission.as_mut().and_then(|a| a.token.as_mut()) {
            *token = "***".into();
        }
        if let Some(a) = shown.storage.azure.as_mut().filter(|a| !a.account_key.is_empty()) {
            a.account_key = "***".into();
        }
        // Webhook headers carry credentials (Authorization, API keys).
        for e in &mut shown.notifications.endpoints {
            e.headers.values_mut().for_each(|v| *v = "***".into());
        }
        toml::to_string_pretty(&shown).expect("config serializes")
    }

    /// Host names are case-insensitive: they are kept in lowercase, as the
    /// mirror's storage directories are named.
    pub fn normalize(&mut self) {
        for u in &mut self.mirror.upstreams {
            u.host = u.host.to_ascii_lowercase();
        }
        self.mirror.default = self.mirror.default.to_ascii_lowercase();
    }

    /// Checks what serde cannot: upstream URLs and hosts, the default upstream, limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::metrics::Teams::new(&self.metrics.teams).map_err(ConfigError)?;
        for image in &self.mirror.warm {
            crate::warm::parse_image(image).map_err(|e| ConfigError(format!("mirror.warm: {e}")))?;
        }
        if !self.mirror.warm.is_empty() && self.mirror.warm_interval.is_zero() {
            return Err(ConfigError("mirror.warm_interval must be more than 0s".into()));
        }
        for p in &self.server.trusted_proxies {
            parse_network(p).map_err(|e| ConfigError(format!("server.trusted_proxies: {e}")))?;
        }
        crate::api::prefix::Prefix::parse(&self.server.prefix).map_err(ConfigError)?;
        for (name, value) in &self.server.headers {
            use actix_web::http::header::{HeaderName, HeaderValue};
            if HeaderName::from_bytes(name.as_bytes()).is_err() || HeaderValue::from_str(value).is_err() {
                return Err(ConfigError(format!("server.headers: {name:?}: {value:?} is not a valid header")));
            }
        }
        let m = &self.mirror;
        for (i, u) in m.upstreams.iter().enumerate() {
            if !valid_host(&u.host) {
                return Err(ConfigError(format!(
                    "mirror.upstreams: invalid host {:?}: expected a lowercase host name or IP address, \
                     optionally with :port (e.g. docker.io, registry.corp:5000)",
                    u.host
                )));
            }
            if m.upstreams[..i].iter().any(|o| o.host == u.host) {
                return Err(ConfigError(format!("mirror.upstreams: host {:?} is configured twice", u.host)));
            }
            if !(u.url.starts_with("http://") || u.url.starts_with("https://")) {
                return Err(ConfigError(format!(
                    "mirror.upstreams.url for {}: {:?} is not an http(s) URL",
                    u.host, u.url
                )));
            }
        }
        for p in &m.peers {
            let rest = ["http://", "https://", "dns://", "srv://"].iter().find_map(|s| p.strip_prefix(s));
            if rest.is_none_or(|r| r.is_empty() || r.contains('/')) {
                return Err(ConfigError(format!(
                    "mirror.peers: {p:?} is not http://host:port, https://host:port, dns://name:port or srv://name"
                )));
            }
        }
        if m.peer_token.as_deref().is_some_and(|t| t.len() < 16) {
            return Err(ConfigError("mirror.peer_token: 16 characters or more (the same on every sibling)".into()));
        }
        if !m.peers.is_empty() && m.peer_token.is_none() && m.peer_tls.is_none() {
            return Err(ConfigError(
                "mirror.peers needs mirror.peer_token (the same secret on every sibling, 16 characters or more) \
                 or mirror.peer_tls (siblings' certificates)"
                    .into(),
            ));
        }
        if m.peer_tls.is_some() && self.server.tls.is_none() {
            return Err(ConfigError(
                "mirror.peer_tls needs server.tls: siblings reach this berth over TLS to present their certificates"
                    .into(),
            ));
        }
        let endpoints = &self.notifications.endpoints;
        for (i, e) in endpoints.iter().enumerate() {
            if e.name.is_empty() || endpoints[..i].iter().any(|o| o.name == e.name) {
                return Err(ConfigError(format!(
                    "notifications.endpoints: each needs a name of its own ({:?})",
                    e.name
                )));
            }
            if !(e.url.starts_with("http://") || e.url.starts_with("https://")) {
                return Err(ConfigError(format!(
                    "notifications.endpoints {:?}: url {:?} is not http(s)",
                    e.name, e.url
                )));
            }
            if e.timeout.is_zero() {
                return Err(ConfigError(format!("notifications.endpoints {:?}: timeout must be more than 0", e.name)));
            }
            for (name, value) in &e.headers {
                use actix_web::http::header::{HeaderName, HeaderValue};
                if HeaderName::from_bytes(name.as_bytes()).is_err() || HeaderValue::from_str(value).is_err() {
                    return Err(ConfigError(format!(
                        "notifications.endpoints {:?}: {name:?} is not a valid header",
                        e.name
                    )));
                }
            }
            for a in &e.ignore_actions {
                if !crate::events::ACTIONS.contains(&a.as_str()) {
                    return Err(ConfigError(format!(
                        "notifications.endpoints {:?}: unknown action {a:?} (one of {})",
                        e.name,
                        crate::events::ACTIONS.join(", ")
                    )));
                }
            }
        }
        let r = &self.storage.redirect;
        let st = &self.storage;
        let buckets = [st.s3.is_some(), st.azure.is_some(), st.gcs.is_some()].iter().filter(|b| **b).count();
        if buckets > 1 {
            return Err(ConfigError("storage: one of s3, azure and gcs, not several".into()));
        }
        if r.enabled && r.base_url.is_empty() && buckets == 0 {
            return Err(ConfigError(
                "storage.redirect needs object storage (storage.s3, azure or gcs) to presign URLs, or a base_url that serves the tree"
                    .into(),
            ));
        }
        if let Some(a) = &st.azure {
            if a.account_name.is_empty() || a.container.is_empty() {
                return Err(ConfigError("storage.azure needs account_name and container".into()));
            }
            if !(a.endpoint.is_empty() || a.endpoint.starts_with("http://") || a.endpoint.starts_with("https://")) {
                return Err(ConfigError("storage.azure.endpoint must start with http:// or https://".into()));
            }
        }
        if st.gcs.as_ref().is_some_and(|g| g.bucket.is_empty()) {
            return Err(ConfigError("storage.gcs.bucket is required".into()));
        }
        if !(r.base_url.is_empty() || r.base_url.starts_with("http://") || r.base_url.starts_with("https://")) {
            return Err(ConfigError(format!("storage.redirect.base_url {:?} is not an http(s) URL", r.base_url)));
        }
        if r.enabled && r.expiry.is_zero() {
            return Err(ConfigError("storage.redirect.expiry must be more than 0".into()));
        }
        if let Some(t) = &self.auth.token {
            if self.auth.htpasswd.is_some() {
                return Err(ConfigError("auth.token and auth.htpasswd: choose one".into()));
            }
            if (t.realm.is_empty() && !t.autoredirect) || t.service.is_empty() || t.issuer.is_empty() {
                return Err(ConfigError("auth.token needs realm, service and issuer".into()));
            }
            if t.rootcertbundle.is_none() && t.jwks.is_none() {
                return Err(ConfigError("auth.token needs rootcertbundle or jwks (the issuer's keys)".into()));
            }
            if !self.auth.rules.is_empty() {
                return Err(ConfigError(
                    "auth.rules apply to htpasswd users; with auth.token the tokens' access claims decide".into(),
                ));
            }
        }
        if let Some(a) = &m.admission {
            if !(a.url.starts_with("http://") || a.url.starts_with("https://")) {
                return Err(ConfigError(format!("mirror.admission.url: {:?} is not an http(s) URL", a.url)));
            }
            if a.timeout.is_zero() {
                return Err(ConfigError("mirror.admission.timeout must be more than 0".into()));
            }
        }
        if m.enabled && !m.upstreams.iter().any(|u| u.host == m.default) {
            return Err(ConfigError(format!("mirror.default: {:?} is not one of mirror.upstreams", m.default)));
        }
        if self.server.max_connections == 0 {
            return Err(ConfigError("server.max_connections must be at least 1".into()));
        }
        if !(1..=MAX_HEADERS_PARSED).contains(&self.server.max_headers) {
            return Err(ConfigError(format!("server.max_headers must be between 1 and {MAX_HEADERS_PARSED}")));
        }
        if self.server.max_header_bytes.as_u64() > MAX_HEADER_BYTES_PARSED
            || self.server.max_header_bytes.as_u64() < 1024
        {
            return Err(ConfigError("server.max_header_bytes must be between 1 KiB and 96 KiB".into()));
        }
        if self.server.max_url_length < 512 {
            return Err(ConfigError("server.max_url_length must be at least 512".into()));
        }
        if self.server.header_timeout.is_zero() {
            return Err(ConfigError("server.header_timeout must be longer than zero".into()));
        }
        if self.server.body_timeout.is_zero() {
            return Err(ConfigError("server.body_timeout must be longer than zero".into()));
        }
        if m.eviction_interval.is_zero() {
            return Err(ConfigError("mirror.eviction_interval must be longer than zero".into()));
        }
        if let Some(s3) = &self.storage.s3 {
            if s3.bucket.is_empty() {
                return Err(ConfigError("storage.s3.bucket is required".into()));
            }
            if !(s3.endpoint.is_empty() || s3.endpoint.starts_with("http://") || s3.endpoint.starts_with("https://")) {
                return Err(ConfigError("storage.s3.endpoint must start with http:// or https://".into()));
            }
        }
        if self.uploads.max_age.is_zero() || self.uploads.max_per_client == 0 {
            return Err(ConfigError("uploads.max_age and uploads.max_per_client must be above zero".into()));
        }
        Ok(())
    }
}

/// `host[:port]`: a DNS name (lowercase labels of letters, digits and
/// inner hyphens), an IPv4 address or a bracketed IPv6 address.
fn valid_host(s: &str) -> bool {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') && (h.starts_with('[') == h.ends_with(']')) && !p.contains(']') => {
            (h, Some(p))
        }
        _ => (s, None),
    };
    if let Some(p) = port {
        if !matches!(p.parse::<u16>(), Ok(1..)) || p.starts_with('0') {
            return false;
        }
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    !host.is_empty() && host.len() <= 253 && host.split('.').all(label)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn documented_file_equals_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/berth.toml");
        assert_eq!(Config::load(Some(&path), vec![]).unwrap(), Config::default());
    }

    #[test]
    fn env_overrides_nested_keys() {
        let c = Config::load(
            None,
            env(&[
                ("BERTH_SERVER__LISTEN", "127.0.0.1:6000"),
                ("BERTH_STORAGE__DELETE__ENABLED", "false"),
                ("BERTH_CACHE__TAG_TTL", "1m"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:6000");
        assert!(!c.storage.delete.enabled);
        assert_eq!(c.cache.tag_ttl, Duration::from_secs(60));
    }

    #[test]
    fn unknown_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("b.toml");
        std::fs::write(&f, "[server]\nlisten_addr = \"x\"\n").unwrap();
        let e = Config::load(Some(&f), vec![]).unwrap_err().to_string();
        assert!(e.contains("listen_addr"), "{e}");
        let e = Config::load(None, env(&[("BERTH_STORAGE__DELETE__ENABLED", "maybe")])).unwrap_err().to_string();
        assert!(e.contains("enabled"), "{e}");
    }

    #[test]
    fn upstreams_from_file_and_flags_and_secrets_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("b.toml");
        std::fs::write(
            &f,
            "[[mirror.upstreams]]\nhost = \"docker.io\"\nurl = \"http://127.0.0.1:1\"\npassword = \"hunter2\"\ntag_ttl = \"1s\"\n",
        )
        .unwrap();
        let mut c = Config::load(Some(&f), vec![]).unwrap();
        assert_eq!(c.mirror.upstreams.len(), 1);
        assert_eq!(c.mirror.upstreams[0].tag_ttl, Duration::from_secs(1));
        assert_eq!(c.mirror.upstreams[0].read_timeout, Duration::from_secs(30), "unset keys keep defaults");
        assert!(!c.to_toml().contains("hunter2"));
        assert!(c.to_toml().contains("password = \"***\""));
        assert!(!format!("{c:?}").contains("hunter2"), "nor in debug output");
        c.mirror.set_upstream("ghcr.io", "http://127.0.0.1:2/");
        c.mirror.set_upstream("docker.io", "http://127.0.0.1:3");
        assert_eq!(c.mirror.upstreams[1].url, "http://127.0.0.1:2");
        assert_eq!(c.mirror.upstreams[0].url, "http://127.0.0.1:3");
    }

    #[test]
    fn bad_upstreams_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("b.toml");
        std::fs::write(&f, "[[mirror.upstreams]]\nhost = \"docker.io\"\nurl = \"ftp://x\"\n").unwrap();
        assert!(Config::load(Some(&f), vec![]).unwrap_err().to_string().contains("ftp://x"));
        std::fs::write(&f, "[mirror]\ndefault = \"quay.io\"\n").unwrap();
        assert!(Config::load(Some(&f), vec![]).unwrap_err().to_string().contains("quay.io"));
    }

    #[test]
    fn peers_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.toml");
        let token = "peer_token = \"0123456789abcdef\"\n";
        std::fs::write(
            &f,
            format!("[mirror]\npeers = [\"srv://berth.service.consul\"]\npeer_dns = \"127.0.0.1:8600\"\n{token}"),
        )
        .unwrap();
        let c = Config::load(Some(&f), vec![]).unwrap();
        assert_eq!(c.mirror.peer_dns, Some("127.0.0.1:8600".parse().unwrap()));
        assert!(!c.to_toml().contains("0123456789abcdef"), "the token is redacted");
        std::fs::write(&f, "[mirror]\npeers = [\"http://a:5000\"]\n").unwrap();
        assert!(Config::load(Some(&f), vec![]).unwrap_err().to_string().contains("peer_tls"));
        std::fs::write(
            &f,
            "[mirror]\npeers = [\"http://a:5000\"]\n[mirror.peer_tls]\ncertificate = \"c\"\nkey = \"k\"\nca = \"a\"\n",
        )
        .unwrap();
        assert!(Config::load(Some(&f), vec![]).unwrap_err().to_string().contains("needs server.tls"));
        std::fs::write(&f, "[mirror]\npeers = [\"http://a:5000\"]\npeer_token = \"short\"\n").unwrap();
        assert!(Config::load(Some(&f), vec![]).unwrap_err().to_string().contains("16 characters"));
        std::fs::write(&f, format!("[mirror]\npeers = [\"ftp://a:5000\"]\n{token}")).unwrap();
        assert!(Config::load(Some(&f), vec![]).unwrap_err().to_string().contains("ftp://a:5000"));
        std::fs::write(&f, format!("[mirror]\npeer_dns = \"consul\"\n{token}")).unwrap();
        assert!(Config::load(Some(&f), vec![]).is_err(), "peer_dns is host:port");
    }

    #[test]
    fn hosts_are_validated_and_lowercased() {
        for ok in ["docker.io", "registry.corp:5000", "localhost", "127.0.0.1:5001", "[::1]:5000", "a-b.c"] {
            assert!(valid_host(ok), "{ok}");
        }
        for bad in ["", "a/b", "-a.io", "a..b", "UPPER.io", "a:0", "a:99999", "a:x", "::1", "[::1", "a_b", "a:05"] {
            assert!(!valid_host(bad), "{bad}");
        }
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("b.toml");
        std::fs::write(
            &f,
            "[mirror]\ndefault = \"Docker.IO\"\n[[mirror.upstreams]]\nhost = \"Docker.IO\"\nurl = \"http://x\"\n\
             [[mirror.upstreams]]\nhost = \"Registry.Corp:5000\"\nurl = \"http://y\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&f), vec![]).unwrap();
        assert_eq!(c.mirror.upstreams[1].host, "registry.corp:5000");
        assert_eq!(c.mirror.default, "docker.io");
        std::fs::write(&f, "[[mirror.upstreams]]\nhost = \"docker.io\"\nurl = \"http://x\"\n[[mirror.upstreams]]\nhost = \"DOCKER.io\"\nurl = \"http://y\"\n").unwrap();
        assert!(Config::load(Some(&f), vec![]).unwrap_err().to_string().contains("twice"));
        std::fs::write(&f, "[[mirror.upstreams]]\nhost = \"bad host\"\nurl = \"http://x\"\n").unwrap();
        assert!(Config::load(Some(&f), vec![]).unwrap_err().to_string().contains("bad host"));
    }

    /// Every example in `config/examples` (and registry:2's config) loads as shipped.
    #[test]
    fn the_example_configs_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            Config::load(Some(&path), Vec::new()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
        assert!(n >= 3);
        let r2 = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/registry2.yml");
        let (cfg, _) = Config::load_noted(Some(&r2), Vec::new()).unwrap();
        assert_eq!(cfg.server.listen, "0.0.0.0:5000");
    }

    /// The README's `berth.toml` examples load as they are shown.
    #[test]
    fn readme_config_examples_load() {
        let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut seen = 0;
        for block in readme.split("```toml\n").skip(1) {
            let block = block.split("```").next().unwrap();
            if !block.starts_with("# berth.toml") {
                continue;
            }
            let f = dir.path().join(format!("example-{seen}.toml"));
            std::fs::write(&f, block).unwrap();
            let c = Config::load(Some(&f), vec![]).unwrap_or_else(|e| panic!("{e}:\n{block}"));
            if block.contains("with their defaults") {
                assert_eq!(c, Config::default(), "the README's defaults are the defaults");
            }
            seen += 1;
        }
        assert!(seen >= 2, "the README shows its configuration examples");
    }

    #[test]
    fn missing_file_is_an_error() {
        assert!(Config::load(Some(Path::new("/nonexistent/berth.toml")), vec![]).is_err());
    }
}
