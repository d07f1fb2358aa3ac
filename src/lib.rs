//! berth: a container registry and pull-through caching mirror with one
//! content-addressed store. `main.rs` parses the command line; everything
//! else, including `bind`, which the integration tests call, lives here.
//!
//! Layers, each calling only the one below: `api` (actix-web edge) →
//! `registry` (the façade and its rules, owning `cache`) → `store` (registry:2
//! layout over a `Backend`). `oci` holds the pure types every layer uses.
//! A request's repository is resolved once, by `registry::namespace`, into a
//! `registry::RepoId`; every policy after that (access, pins, expiry, the
//! catalog and the page) takes the identity, never the name as spelled.
//! The registry is three parts over one `Core`: `Registry` (serving),
//! `Lifecycle` (expiry, the cap, GC, uses, purges) and `Browsing` (the
//! catalog and the web page); `background` starts every loop that drives
//! them. A manifest is parsed once into `oci::ManifestInfo`, and what it
//! keeps alive is the one walk, `oci::reach`.

pub mod api;
mod background;
pub mod bundle;
pub mod config;
pub mod events;
pub mod gc_command;
pub mod htpasswd;
pub mod jwt;
pub mod limits;
pub mod local_server;
pub mod metrics;
pub mod mirror;
pub mod oci;
pub mod registry;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod tokens;
pub mod traffic;
pub mod trust;
pub mod ui;
pub mod warm;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::middleware::DefaultHeaders;
use actix_web::{web, App, HttpServer};

use crate::config::Config;
use crate::registry::Registry;
use crate::store::{Backend, Store};

/// A server bound to its port, not yet running: `.server` is the future to
/// await (or spawn), `.addr` the address it listens on.
pub struct Bound {
    pub addr: SocketAddr,
    pub server: actix_web::dev::Server,
    /// The registry the server serves (for work after it stops; dropping it
    /// lets the background tasks end once the server has stopped).
    pub registry: Arc<Registry>,
}

/// What `serve` checks before it binds, for `berth config check` to check
/// the same: the htpasswd file (readable, bcrypt lines only), the TLS
/// certificate and key, and the configured patterns and signature keys.
pub fn preflight(cfg: &Config) -> Result<(), String> {
    if let Some(h) = &cfg.auth.htpasswd {
        htpasswd::Htpasswd::load(&h.path).map_err(|e| format!("auth.htpasswd: {e}"))?;
    }
    if let Some(t) = &cfg.server.tls {
        tls::server_config(t, cfg.mirror.peer_tls.as_ref().map(|p| p.ca.as_path()))
            .map_err(|e| format!("server.tls: {e}"))?;
    }
    if let Some(t) = &cfg.mirror.peer_tls {
        tls::PeerTls::load(&t.certificate, &t.key, &t.ca)?;
    }
    if let Some(t) = &cfg.auth.token {
        token_verifier(t)?;
    }
    registry::describe_patterns(cfg).map(|_| ())
}

/// The external token issuer's keys (`auth.token`).
fn token_verifier(t: &config::TokenAuthConfig) -> Result<jwt::Verifier, String> {
    jwt::Verifier::load(&t.issuer, &t.service, t.rootcertbundle.as_deref(), t.jwks.as_deref())
        .map_err(|e| format!("auth.token: {e}"))
}

/// One line each, for the startup log: TLS, authentication, what is mirrored.
pub fn startup_summary(cfg: &Config) -> Vec<String> {
    let tls = match &cfg.server.tls {
        Some(t) => format!(
            "TLS: on ({}){}",
            t.certificate.display(),
            if t.client_ca.is_some() { ", client certificates required" } else { "" }
        ),
        None => "TLS: off (plain HTTP; set server.tls to serve HTTPS)".into(),
    };
    let auth = match (&cfg.auth.htpasswd, &cfg.auth.token) {
        (Some(h), _) => {
            format!("authentication: on (users from {}, {} access rules)", h.path.display(), cfg.auth.rules.len())
        }
        (None, Some(t)) => format!(
            "authentication: tokens from {} (issuer {:?}, service {:?}); their access claims decide",
            if t.autoredirect { t.autoredirect_path.as_str() } else { t.realm.as_str() },
            t.issuer,
            t.service
        ),
        (None, None) => "authentication: off (anyone who reaches the port may pull and push)".into(),
    };
    let mirror = match cfg.mirror.enabled {
        true => {
            let ups: Vec<String> = cfg.mirror.upstreams.iter().map(|u| format!("{} ({})", u.host, u.url)).collect();
            format!("mirroring: {}; default {}", ups.join(", "), cfg.mirror.default)
        }
        false => "mirroring: off (a private registry only)".into(),
    };
    vec![tls, auth, mirror]
}

/// Binds the listen address and builds the HTTP server over the configured
/// data directory.
pub fn bind(cfg: &Config) -> std::io::Result<Bound> {
    std::fs::create_dir_all(&cfg.storage.root).map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot create data directory {}: {e}", cfg.storage.root.display()))
    })?;
    bind_with(cfg, backend(cfg)?)
}

/// The storage backend the configuration names: a bucket (`storage.s3`) or
/// the data directory.
pub fn backend(cfg: &Config) -> std::io::Result<Arc<dyn Backend>> {
    let st = &cfg.storage;
    let object = match (&st.s3, &st.azure, &st.gcs) {
        (Some(s3), _, _) => Some(store::object::s3(s3)),
        (_, Some(azure), _) => Some(store::object::azure(azure)),
        (_, _, Some(gcs)) => Some(store::object::gcs(gcs)),
        _ => None,
    };
    Ok(match object {
        Some(backend) => Arc::new(backend.map_err(std::io::Error::other)?),
        None => Arc::new(store::fs::FsBackend::new(&cfg.storage.root)),
    })
}

/// As `bind`, over any storage backend (tests use doubles that inject faults).
pub fn bind_with(cfg: &Config, backend: Arc<dyn Backend>) -> std::io::Result<Bound> {
    let index = store::index::Index::open(&store::index_path(&cfg.storage.root))
        .map_err(|e| std::io::Error::other(format!("cannot open berth's index: {e}")))?;
    let htpasswd = match &cfg.auth.htpasswd {
        Some(h) => Some(Arc::new(
            htpasswd::Htpasswd::load(&h.path).map_err(|e| std::io::Error::other(format!("auth.htpasswd: {e}")))?,
        )),
        None => None,
    };
    let store = Store::new(backend, index, cfg.uploads.max_per_client)
        .with_max_blob_size(cfg.uploads.max_blob_size.as_u64())
        .with_spool_dir(cfg.storage.root.join(store::layout::SPOOL_DIR));
    let registry = Arc::new(Registry::with_store(cfg, store).map_err(std::io::Error::other)?);
    let listener = TcpListener::bind(&cfg.server.listen)
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", cfg.server.listen)))?;
    limits::widen_backlog(&listener)?;
    let addr = listener.local_addr()?;
    let workers = match cfg.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let open_files = limits::raise_open_files_limit();
    let connections = limits::connection_cap(cfg.server.max_connections, open_files);
    if connections < cfg.server.max_connections {
        let msg = "server.max_connections lowered to fit the open-files limit (raise `ulimit -n` for more)";
        if connections < 1024 {
            tracing::warn!(open_files, connections, "{msg}");
        } else {
            tracing::info!(open_files, connections, "{msg}");
        }
    }
    // `berth gc` finds a server running on this directory here, with the
    // token that lets it in.
    let token = api::admin::write_token(&cfg.storage.root)?;
    let tls = match &cfg.server.tls {
        Some(t) => Some(
            tls::server_config(t, cfg.mirror.peer_tls.as_ref().map(|p| p.ca.as_path()))
                .map_err(std::io::Error::other)?,
        ),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    if let Err(e) = std::fs::write(api::admin::server_addr_file(&cfg.storage.root), format!("{scheme}://{addr}")) {
        tracing::warn!(error = %e, "cannot record the server address for `berth gc`");
    }
    let warm = (cfg.mirror.enabled && !cfg.mirror.warm.is_empty()).then(|| background::Warm {
        server: format!("{scheme}://{addr}"),
        images: cfg.mirror.warm.iter().filter_map(|i| warm::parse_image(i).ok()).collect(),
        interval: cfg.mirror.warm_interval,
    });
    registry.events().start(addr.port());
    background::start(&registry, warm, htpasswd.as_ref(), tls.as_ref().map(|t| &t.1));
    let token = web::Data::new(token);
    let auth = web::Data::new(api::auth::Auth {
        htpasswd: match (htpasswd, &cfg.auth.htpasswd) {
            (Some(users), Some(h)) => Some(api::auth::AuthOn {
                users,
                key: tokens::TokenKey::load_or_create(&cfg.storage.root)?,
                scheme: cfg.auth.challenge,
                realm: h.realm.clone(),
            }),
            _ => None,
        },
        token: match &cfg.auth.token {
            Some(t) => {
                Some(api::auth::TokenOn { verifier: token_verifier(t).map_err(std::io::Error::other)?, cfg: t.clone() })
            }
            None => None,
        },
    });
    let data = web::Data::from(registry.clone());
    let edge = web::Data::new(api::EdgeConfig::new(cfg));
    let extra_headers = cfg.server.headers.clone();
    let prefix = web::Data::new(api::prefix::Prefix::parse(&cfg.server.prefix).map_err(std::io::Error::other)?);
    let prefixed = !prefix.0.is_empty();
    let ignored = web::Data::new(api::health::Ignored(cfg.ignored.clone()));
    let checks = web::Data::new(api::health::Checks::new(&cfg.health));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(prefix.clone())
            .app_data(ignored.clone())
            .app_data(checks.clone())
            .app_data(edge.clone())
            .app_data(token.clone())
            .app_data(auth.clone())
            .wrap(actix_web::middleware::from_fn(api::limits::shape))
            .wrap(DefaultHeaders::new().add(api::headers::API_VERSION))
            .wrap(
                extra_headers
                    .iter()
                    .fold(DefaultHeaders::new(), |h, (name, value)| h.add((name.as_str(), value.as_str()))),
            )
            .wrap(actix_web::middleware::from_fn(api::metrics::observe))
            .wrap(actix_web::middleware::from_fn(telemetry::request_span))
            // Outermost: every layer inside sees the path without the prefix
            // (and without one configured, the hot path pays nothing for it).
            .wrap(actix_web::middleware::Condition::new(prefixed, actix_web::middleware::from_fn(api::prefix::strip)))
            .configure(api::configure)
            .configure(ui::configure)
    })
    .workers(workers)
    .max_connections(connections.div_ceil(workers).max(1))
    .shutdown_timeout(cfg.server.shutdown_timeout.as_secs())
    .client_request_timeout(cfg.server.header_timeout)
    .keep_alive(match cfg.server.keep_alive {
        d if d.is_zero() => actix_web::http::KeepAlive::Disabled,
        d => actix_web::http::KeepAlive::Timeout(d),
    });
    let server = match tls {
        // A sibling mirror may authenticate by its client certificate (`mirror.peer_tls`).
        Some((config, _)) => server.on_connect(tls::keep_client_chain).listen_rustls_0_23(listener, config)?,
        None => server.listen(listener)?,
    }
    .run();
    Ok(Bound { addr, server, registry })
}
