//! The `berth` command line: parses arguments and calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use berth::config::Config;

#[derive(Parser)]
#[command(name = "berth", version, about = "A container registry and pull-through caching mirror")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry.
    Serve {
        #[command(flatten)]
        common: CommonArgs,
        /// Address to listen on (overrides server.listen).
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Data directory (overrides storage.root).
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// Add or override an upstream, e.g. docker.io=http://127.0.0.1:5001 (repeatable).
        #[arg(long = "mirror", value_name = "HOST=URL", value_parser = parse_mirror)]
        mirrors: Vec<(String, String)>,
        /// Run as a plain private registry: no upstream, no protected prefixes.
        #[arg(long, conflicts_with = "mirrors")]
        no_mirror: bool,
    },
    /// Garbage-collect pushed content: remove the blobs (and, with
    /// --delete-untagged, the manifests) that no tag or manifest reaches.
    /// Safe while a server serves the directory: the run happens inside it.
    Gc {
        #[command(flatten)]
        common: CommonArgs,
        /// Data directory (overrides storage.root).
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// Report what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also remove manifests that no tag reaches (through indexes too).
        #[arg(long)]
        delete_untagged: bool,
        /// Keep blobs and manifests linked more recently than this (overrides gc.grace), e.g. 0s.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        grace: Option<std::time::Duration>,
    },
    /// Apply the [[retention]] rules to pushed repositories: remove the tags
    /// (and untagged manifests) they say go, each with the rule that decided.
    /// Safe while a server serves the directory: the run happens inside it.
    Retention {
        #[command(flatten)]
        common: CommonArgs,
        /// Data directory (overrides storage.root).
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// Say what would go; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// The report as JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Each [[quota]]'s use (every blob counted once per quota) and limit.
    Usage {
        #[command(flatten)]
        common: CommonArgs,
        /// Data directory (overrides storage.root).
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// The use as JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Fill a running server's mirror with images before anyone pulls them
    /// (pulled through the server: coalesced, verified, counted as use).
    Warm {
        /// The server (berth) to fill.
        #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:5000")]
        server: String,
        /// Only these platforms of a multi-platform image, e.g. linux/amd64,linux/arm64 (default: all).
        #[arg(long, value_name = "OS/ARCH[,…]")]
        platform: Option<String>,
        /// Credentials for the server, if it asks (USER:PASSWORD).
        #[arg(long, value_name = "USER:PASSWORD")]
        user: Option<String>,
        /// Images: alpine:3.20, ghcr.io/org/app:v1, quay.io/x/y@sha256:…
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
    },
    /// Write images with all their platforms, referrers and signatures into
    /// one bundle (an OCI image layout directory, or a tar) that `berth
    /// import` reads into a berth with no way to its upstreams. Reads from a
    /// running berth (mirrored images not cached yet are fetched through it).
    /// Resumable: run it again after an interruption.
    Export {
        #[command(flatten)]
        common: CommonArgs,
        /// The bundle: a directory, or FILE.tar.
        #[arg(long, short, value_name = "DIR|FILE.tar")]
        output: PathBuf,
        /// The server (berth) to read from.
        #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:5000")]
        server: String,
        /// Credentials for the server, if it asks (USER:PASSWORD).
        #[arg(long, value_name = "USER:PASSWORD")]
        user: Option<String>,
        /// Also every image the configuration's mirror.pin patterns name.
        #[arg(long)]
        pinned: bool,
        /// Also every cached tag of everything mirrored from HOST (repeatable).
        #[arg(long, value_name = "HOST")]
        upstream: Vec<String>,
        /// Leave out the blobs an earlier bundle holds (an incremental bundle).
        #[arg(long, value_name = "BUNDLE")]
        since: Option<PathBuf>,
        /// Images: alpine:3.20, ghcr.io/org/app:v1, quay.io/x/y@sha256:…
        #[arg(value_name = "IMAGE")]
        images: Vec<String>,
    },
    /// Read a bundle from `berth export` into the mirror of this data
    /// directory (inside the server that serves it, if one does), verified:
    /// clients then pull its images by their upstream names, upstream or not.
    Import {
        #[command(flatten)]
        common: CommonArgs,
        /// Data directory (overrides storage.root).
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// Send the bundle (a tar) to the berth at URL over the network
        /// instead; it needs authentication on and push rights there.
        #[arg(long, value_name = "URL")]
        server: Option<String>,
        /// Credentials for --server (USER:PASSWORD).
        #[arg(long, value_name = "USER:PASSWORD", requires = "server")]
        user: Option<String>,
        /// The bundle: a directory or a tar.
        #[arg(value_name = "DIR|FILE.tar")]
        bundle: PathBuf,
    },
    /// What the signature policy says of an image: the rule that covers it
    /// and its verdict with the reason (exit 1 when it is unsigned). The
    /// server looks signatures up as a pull would (through its upstream for
    /// mirrored images).
    Verify {
        /// The server (berth) to ask.
        #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:5000")]
        server: String,
        /// Credentials for the server, if it asks (USER:PASSWORD).
        #[arg(long, value_name = "USER:PASSWORD")]
        user: Option<String>,
        /// The image as a client names it to berth: alpine:3.20, docker.io/library/alpine@sha256:…, team/app:v1
        #[arg(value_name = "IMAGE")]
        image: String,
    },
    /// Turn read-only mode on or off on the server running on this data
    /// directory, without a restart (registry:2's maintenance read-only mode:
    /// pushes and deletes answer 405, pulls go on); without on/off, say which.
    Readonly {
        #[command(flatten)]
        common: CommonArgs,
        /// Data directory (overrides storage.root).
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        #[arg(value_parser = ["on", "off"])]
        state: Option<String>,
    },
    /// Exit 0 when the server running on this data directory answers /readyz
    /// with 200 (a container HEALTHCHECK): it finds the server's address in
    /// `<root>/.berth/server.addr`, so it follows whatever port and TLS it serves.
    Ready {
        #[command(flatten)]
        common: CommonArgs,
        /// Data directory (overrides storage.root).
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
    },
    /// Check that the configured storage does what berth needs (ranged
    /// reads, writers, conditional puts, listing, deletes), under a scratch
    /// prefix it removes: run it once against a new S3-compatible server.
    CheckStorage {
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Print an htpasswd line (bcrypt) for USER, for `auth.htpasswd.path`.
    Htpasswd {
        /// The user name.
        user: String,
        /// Read the password from standard input (one line) instead of prompting.
        #[arg(long)]
        stdin: bool,
        /// bcrypt cost: each step doubles the time a check takes.
        #[arg(long, default_value_t = berth::htpasswd::DEFAULT_COST)]
        cost: u32,
    },
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the merged configuration (defaults, file, environment), or the error.
    Check {
        #[command(flatten)]
        common: CommonArgs,
    },
}

#[derive(clap::Args)]
struct CommonArgs {
    /// Configuration file: berth's TOML (see config/berth.toml), or registry:2's
    /// config.yml (`.yml`/`.yaml`, with its REGISTRY_* variables).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

fn parse_mirror(s: &str) -> Result<(String, String), String> {
    let (host, url) = s.split_once('=').ok_or("expected HOST=URL, e.g. docker.io=http://127.0.0.1:5001")?;
    Ok((host.to_string(), url.to_string()))
}

fn load(common: &CommonArgs) -> Result<Config, String> {
    load_noted(common).map(|(cfg, _)| cfg)
}

fn load_noted(common: &CommonArgs) -> Result<(Config, Vec<berth::config::registry2::Note>), String> {
    Config::load_noted(common.config.as_deref(), std::env::vars()).map_err(|e| e.to_string())
}

/// What the configuration's sources leave unread: registry:2 keys berth does
/// not support, and `REGISTRY_*` variables without registry:2's file.
fn warnings(common: &CommonArgs, notes: &[berth::config::registry2::Note]) -> Vec<String> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let stray = berth::config::registry2::stray_variables(common.config.as_deref(), &env);
    berth::config::registry2::unsupported(notes).into_iter().chain(stray).collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { common, listen, data, mirrors, no_mirror } => {
            load_noted(&common).and_then(|(mut cfg, notes)| {
                if let Some(listen) = listen {
                    cfg.server.listen = listen;
                }
                if let Some(data) = data {
                    cfg.storage.root = data;
                }
                for (host, url) in &mirrors {
                    cfg.mirror.set_upstream(host, url);
                }
                // Asked for on the command line, mirroring is on, whatever the
                // file said (a registry:2 config.yml without `proxy` turns it off).
                if !mirrors.is_empty() {
                    cfg.mirror.enabled = true;
                }
                if no_mirror {
                    cfg.mirror.enabled = false;
                }
                cfg.validate().map_err(|e| e.to_string())?;
                serve(cfg, warnings(&common, &notes))
            })
        }
        Command::Gc { common, data, dry_run, delete_untagged, grace } => load(&common).and_then(|mut cfg| {
            if let Some(data) = data {
                cfg.storage.root = data;
            }
            let opts =
                berth::registry::gc::GcOptions { dry_run, delete_untagged, grace: grace.unwrap_or(cfg.gc.grace) };
            let report = berth::gc_command::run(&cfg, opts)?;
            println!("{}", berth::gc_command::summary(&report));
            Ok(())
        }),
        Command::Retention { common, data, dry_run, json } => load(&common).and_then(|mut cfg| {
            if let Some(data) = data {
                cfg.storage.root = data;
            }
            let report = berth::gc_command::retention(&cfg, dry_run)?;
            match json {
                true => println!("{}", serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?),
                false => println!("{}", berth::gc_command::retention_summary(&report)),
            }
            Ok(())
        }),
        Command::Usage { common, data, json } => load(&common).and_then(|mut cfg| {
            if let Some(data) = data {
                cfg.storage.root = data;
            }
            let usage = berth::gc_command::usage(&cfg)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&usage).map_err(|e| e.to_string())?);
                return Ok(());
            }
            if usage.is_empty() {
                println!("no quotas configured ([[quota]])");
            }
            for u in usage {
                let pct = if u.max == 0 { 100.0 } else { u.used as f64 * 100.0 / u.max as f64 };
                println!(
                    "{}: {} of {} ({pct:.0}%) for {}",
                    u.quota,
                    bytesize::ByteSize::b(u.used),
                    bytesize::ByteSize::b(u.max),
                    u.repositories.join(", ")
                );
            }
            Ok(())
        }),
        Command::Htpasswd { user, stdin, cost } => htpasswd(&user, stdin, cost),
        Command::Ready { common, data } => load(&common).and_then(|mut cfg| {
            if let Some(data) = data {
                cfg.storage.root = data;
            }
            actix_web::rt::System::new().block_on(berth::local_server::ready(&cfg.storage.root))
        }),
        Command::CheckStorage { common } => load(&common).and_then(|cfg| check_storage(&cfg)),
        Command::Verify { server, user, image } => verify(&server, user.as_deref(), &image),
        Command::Readonly { common, data, state } => load(&common).and_then(|mut cfg| {
            if let Some(data) = data {
                cfg.storage.root = data;
            }
            let on = berth::gc_command::read_only(&cfg.storage.root, state.map(|s| s == "on"))?;
            println!("read-only mode is {}", if on { "on: pushes and deletes are refused" } else { "off" });
            Ok(())
        }),
        Command::Export { common, output, server, user, pinned, upstream, since, images } => {
            load(&common).and_then(|cfg| {
                let pins = if pinned { cfg.mirror.pin.clone() } else { vec![] };
                export(&server, user.as_deref(), &images, &pins, &upstream, &output, since.as_deref())
            })
        }
        Command::Import { common, data, server, user, bundle } => load(&common).and_then(|mut cfg| {
            if let Some(data) = data {
                cfg.storage.root = data;
            }
            let r = match server {
                Some(server) => berth::gc_command::import_to(&server, user_password(user.as_deref())?, &bundle)?,
                None => berth::gc_command::import(&cfg, &bundle)?,
            };
            println!(
                "imported {} images and {} signature tags: {} manifests, {} blobs written ({}), {} already here",
                r.images,
                r.signatures,
                r.manifests,
                r.blobs_written,
                bytesize::ByteSize::b(r.bytes_written),
                r.blobs_present
            );
            for host in r.unserved_hosts {
                println!("warning: no upstream for {host} in mirror.upstreams: its images are stored but not served");
            }
            Ok(())
        }),
        Command::Warm { server, platform, user, images } => {
            warm(&server, platform.as_deref(), user.as_deref(), &images)
        }
        Command::Config { command: ConfigCommand::Check { common } } => load_noted(&common).and_then(|(cfg, notes)| {
            // What `serve` would refuse to start with, refused here too.
            berth::preflight(&cfg)?;
            let patterns = berth::registry::describe_patterns(&cfg)?;
            if !notes.is_empty() {
                print!("{}", berth::config::registry2::describe(&notes));
            }
            for w in warnings(&common, &notes) {
                println!("# warning: {w}");
            }
            print!("{}", cfg.to_toml());
            if !patterns.is_empty() {
                println!("\n# Repository patterns as berth reads them (canonical form):");
                patterns.iter().for_each(|p| println!("#   {p}"));
            }
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {e}");
            ExitCode::FAILURE
        }
    }
}

fn htpasswd(user: &str, stdin: bool, cost: u32) -> Result<(), String> {
    let password = if stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map_err(|e| e.to_string())?;
        line.trim_end_matches(['\n', '\r']).to_string()
    } else {
        // rpassword reads the terminal itself; without one (a script, a pipe,
        // `docker exec` without -t) say what to do instead of "os error 6".
        let no_terminal = |e: std::io::Error| {
            format!("cannot ask for the password ({e}): no terminal; pipe it in with --stdin, e.g. `echo \"$PASSWORD\" | berth htpasswd {user} --stdin`")
        };
        let first = rpassword::prompt_password("Password: ").map_err(no_terminal)?;
        if rpassword::prompt_password("Again: ").map_err(no_terminal)? != first {
            return Err("the passwords differ".into());
        }
        first
    };
    if password.is_empty() {
        return Err("an empty password is not accepted".into());
    }
    println!("{}", berth::htpasswd::line(user, &password, cost)?);
    Ok(())
}

fn warm(server: &str, platform: Option<&str>, user: Option<&str>, images: &[String]) -> Result<(), String> {
    use berth::warm;
    let platforms = platform.map(warm::parse_platforms).transpose()?.unwrap_or_default();
    let images = images.iter().map(|i| warm::parse_image(i)).collect::<Result<Vec<_>, _>>()?;
    let user = user_password(user)?;
    actix_web::rt::System::new().block_on(async {
        let w = warm::Warmer::new(server, platforms, user, true);
        let (report, failures) = warm::warm_all(&w, &images).await;
        println!(
            "warmed {} of {} images: {} manifests, {} blobs, {} bytes",
            report.images,
            images.len(),
            report.manifests,
            report.blobs,
            report.bytes
        );
        match failures.as_slice() {
            [] => Ok(()),
            _ => Err(failures.join("\n")),
        }
    })
}

/// `berth export`: the images named, pinned or mirrored from the upstreams given, into one bundle.
/// `--user USER:PASSWORD`, split.
fn user_password(user: Option<&str>) -> Result<Option<(String, String)>, String> {
    user.map(|u| u.split_once(':').map(|(a, b)| (a.to_string(), b.to_string())).ok_or("--user takes USER:PASSWORD"))
        .transpose()
        .map_err(String::from)
}

fn export(
    server: &str,
    user: Option<&str>,
    images: &[String],
    pins: &[String],
    upstreams: &[String],
    output: &std::path::Path,
    since: Option<&std::path::Path>,
) -> Result<(), String> {
    use berth::warm;
    let mut refs = images.iter().map(|i| warm::parse_image(i)).collect::<Result<Vec<_>, _>>()?;
    let user = user_password(user)?;
    actix_web::rt::System::new().block_on(async {
        let e = berth::bundle::export::Exporter::new(server, user, true);
        for image in e.expand(upstreams, pins).await? {
            if !refs.contains(&image) {
                refs.push(image);
            }
        }
        if refs.is_empty() {
            return Err("nothing to export: name images, or use --pinned or --upstream HOST".into());
        }
        let r = e.export(&refs, output, since).await?;
        println!(
            "exported {} images to {}: {} manifests, {} blobs written ({}), {} resumed, {} left to the earlier bundle",
            r.images,
            output.display(),
            r.manifests,
            r.blobs_written,
            bytesize::ByteSize::b(r.bytes_written),
            r.blobs_resumed,
            r.blobs_in_earlier
        );
        Ok(())
    })
}

/// `berth verify`: asks the server, prints the verdict.
fn verify(server: &str, user: Option<&str>, image: &str) -> Result<(), String> {
    let base = berth::local_server::base_url(server);
    let local = berth::local_server::is_loopback(&base);
    actix_web::rt::System::new().block_on(async {
        let client = berth::local_server::client(local, Some(std::time::Duration::from_secs(120)));
        let mut request =
            client.get(format!("{base}/_berth/verify")).query(&[("image", image)]).map_err(|e| e.to_string())?;
        if let Some(u) = user {
            let (name, password) = u.split_once(':').ok_or("--user takes USER:PASSWORD")?;
            request = request.basic_auth(name, password);
        }
        let mut resp = request.send().await.map_err(|e| format!("cannot reach {base}: {e}"))?;
        let body = resp.body().await.map_err(|e| e.to_string())?;
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| format!("{base} answered {}: {}", resp.status(), String::from_utf8_lossy(&body)))?;
        if !resp.status().is_success() {
            let message = v["errors"][0]["message"].as_str().unwrap_or("unknown error");
            return Err(format!("{image}: {message}"));
        }
        let (repository, digest) = (v["repository"].as_str().unwrap_or(""), v["digest"].as_str().unwrap_or(""));
        let s = &v["signature"];
        if s.is_null() {
            println!("{repository}@{digest}: no signature rule covers {repository}");
            return Ok(());
        }
        let (rule, mode) = (s["rule"].as_str().unwrap_or(""), s["mode"].as_str().unwrap_or(""));
        match s["verdict"].as_str() {
            Some("signed") => {
                println!(
                    "{repository}@{digest}: signed by {} ({}); {rule}, mode {mode}",
                    s["key"].as_str().unwrap_or(""),
                    s["via"].as_str().unwrap_or("")
                );
                Ok(())
            }
            _ => {
                println!(
                    "{repository}@{digest}: unsigned: {}; {rule}, mode {mode}",
                    s["reason"].as_str().unwrap_or("")
                );
                Err(format!("{image} is not signed as {rule} requires"))
            }
        }
    })
}

fn serve(mut cfg: Config, warnings: Vec<String>) -> Result<(), String> {
    berth::telemetry::init(&cfg.log);
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    cfg.ignored = warnings;
    actix_web::rt::System::new().block_on(async move {
        let bound = berth::bind(&cfg).map_err(|e| e.to_string())?;
        tracing::info!(addr = %bound.addr, data = %cfg.storage.root.display(), "berth listening");
        for line in berth::startup_summary(&cfg) {
            tracing::info!("{line}");
        }
        // actix-web stops gracefully on SIGTERM and SIGINT.
        let stopped = bound.server.await.map_err(|e| e.to_string());
        // Events emitted until the end are queued; the envelopes in flight finish.
        bound.registry.events().close().await;
        // The last minute's uses of mirrored content outlive the restart.
        if let Err(e) = bound.registry.lifecycle().flush_uses().await {
            tracing::warn!(error = %e, "could not record the last uses of mirrored content");
        }
        stopped
    })
}

/// `berth check-storage`: the backend conformance checks, one line each.
fn check_storage(cfg: &berth::config::Config) -> Result<(), String> {
    let backend = berth::backend(cfg).map_err(|e| e.to_string())?;
    let scratch = berth::store::layout::probe(&format!("check-storage-{}", uuid::Uuid::new_v4().simple()));
    let outcomes = actix_web::rt::System::new().block_on(berth::store::conformance::run(backend, &scratch));
    let mut failed = 0;
    for (name, result, took) in &outcomes {
        let took = format!("{:.2}s", took.as_secs_f64());
        match result {
            Ok(()) => println!("ok      {took:>7}  {name}"),
            Err(e) => {
                failed += 1;
                // One line per check: server answers (XML) carry newlines.
                println!("FAILED  {took:>7}  {name}: {}", e.split_whitespace().collect::<Vec<_>>().join(" "));
            }
        }
    }
    match failed {
        0 => Ok(()),
        n => Err(format!("{n} of {} storage checks failed", outcomes.len())),
    }
}
