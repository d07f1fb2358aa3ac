//! berth: a container registry and pull-through caching mirror with one
//! content-addressed store. `main.rs` parses the command line; everything
//! else, including `bind`, which the integration tests call, lives here.
//!
//! Layers, each calling only the one below: `api` (actix-web edge) →
//! `registry` (the façade and its rules, owning `cache`) → `store` (registry:2
//! layout over a `Backend`). `oci` holds the pure types every layer uses.

pub mod api;
pub mod cache;
pub mod config;
pub mod mirror;
pub mod oci;
pub mod registry;
pub mod store;
pub mod telemetry;

use std::net::{SocketAddr, TcpListener};

use actix_web::middleware::DefaultHeaders;
use actix_web::{web, App, HttpServer};
use tracing_actix_web::TracingLogger;

use crate::config::Config;
use crate::registry::Registry;

/// A server bound to its port, not yet running: `.server` is the future to
/// await (or spawn), `.addr` the address it listens on.
pub struct Bound {
    pub addr: SocketAddr,
    pub server: actix_web::dev::Server,
}

/// Binds the listen address and builds the HTTP server over the configured store.
pub fn bind(cfg: &Config) -> std::io::Result<Bound> {
    std::fs::create_dir_all(&cfg.storage.root).map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot create data directory {}: {e}", cfg.storage.root.display()))
    })?;
    let registry = web::Data::new(Registry::new(cfg));
    let listener = TcpListener::bind(&cfg.server.listen)
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", cfg.server.listen)))?;
    let addr = listener.local_addr()?;
    let workers = match cfg.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let server = HttpServer::new(move || {
        App::new()
            .app_data(registry.clone())
            .wrap(DefaultHeaders::new().add(api::headers::API_VERSION))
            .wrap(TracingLogger::default())
            .configure(api::configure)
    })
    .workers(workers)
    .shutdown_timeout(cfg.server.shutdown_timeout.as_secs())
    .listen(listener)?
    .run();
    Ok(Bound { addr, server })
}
