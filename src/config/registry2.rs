//! registry:2's configuration, as is: its `config.yml` and its `REGISTRY_*`
//! environment variables become a berth `Config`. Every key ends in one of
//! three places: honoured (the note says what it became), not supported
//! (named in one warning at startup: nothing berth does depends on it), or an
//! error (it would change behaviour in a way berth cannot honour).
//!
//! Keys are matched case-insensitively, as registry:2 does. An environment
//! variable `REGISTRY_A_B_C=value` sets `a.b.c`; the value is read as YAML
//! (`true`, `[a, b]`), and `REGISTRY_AUTH=htpasswd` / `REGISTRY_STORAGE=filesystem`
//! choose the section, as in registry:2.

use std::path::PathBuf;

use serde_json::{Map, Value};

use super::{Config, ConfigError, HtpasswdConfig, TlsConfig};

/// What became of one registry:2 key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// The key is honoured: what it became in berth's terms.
    Honoured { key: String, became: String },
    /// Accepted and not needed: berth does the thing without it (why).
    NotNeeded { key: String, why: String },
    /// Not supported: ignored, and named in the startup warning.
    Unsupported { key: String },
}

/// Whether `path` names a registry:2 configuration (YAML) rather than berth's TOML.
pub fn is_registry2(path: &std::path::Path) -> bool {
    matches!(path.extension().and_then(|e| e.to_str()), Some("yml" | "yaml"))
}

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

fn parse_yaml(text: &str, what: &str) -> Result<Value, ConfigError> {
    let parsed = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Yaml))
        .build()
        .map_err(|e| err(format!("{what}: {e}")))?;
    parsed.try_deserialize::<Value>().map_err(|e| err(format!("{what}: {e}")))
}

/// Keys in lowercase all the way down, as registry:2 matches them (header
/// names too: they are case-insensitive, and the YAML reader lowercases them).
fn lowercase_keys(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            Value::Object(m.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), lowercase_keys(v))).collect())
        }
        other => other,
    }
}

/// Sets `path` to `value` in `root`, making maps on the way (a scalar on the
/// way is replaced: `REGISTRY_AUTH=htpasswd` then `…_AUTH_HTPASSWD_PATH=…`).
fn set_path(root: &mut Value, path: &[String], value: Value) {
    let mut node = root;
    for part in &path[..path.len() - 1] {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        node = node.as_object_mut().expect("made an object above").entry(part.clone()).or_insert(Value::Null);
    }
    if !node.is_object() {
        *node = Value::Object(Map::new());
    }
    let last = path.last().expect("a path has a key").clone();
    let map = node.as_object_mut().expect("made an object above");
    // A section chosen by name (`REGISTRY_AUTH=htpasswd`): an empty section of that name.
    let section_choice = matches!(path, [one] if one == "auth" || one == "storage");
    match (section_choice, value) {
        (true, Value::String(name)) => {
            let section = map.entry(last).or_insert(Value::Object(Map::new()));
            if !section.is_object() {
                *section = Value::Object(Map::new());
            }
            section.as_object_mut().expect("an object").entry(name.to_ascii_lowercase()).or_insert(Value::Null);
        }
        (_, value) => {
            map.insert(last, value);
        }
    }
}

/// Applies `REGISTRY_*` variables (shorter paths first, so a section chosen
/// by name is there before its keys are set).
fn apply_env(root: &mut Value, env: &[(String, String)]) -> Result<(), ConfigError> {
    let mut vars: Vec<(Vec<String>, &str, &str)> = env
        .iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix("REGISTRY_")?;
            Some((rest.to_ascii_lowercase().split('_').map(str::to_string).collect(), k.as_str(), v.as_str()))
        })
        .collect();
    vars.sort_by_key(|(path, _, _)| path.len());
    for (path, name, value) in vars {
        if path.iter().any(String::is_empty) {
            return Err(err(format!("{name}: not a registry:2 key")));
        }
        let parsed =
            parse_yaml(&format!("v: {value}"), name).map(|v| v["v"].clone()).unwrap_or(Value::String(value.into()));
        set_path(root, &path, parsed);
    }
    Ok(())
}

/// Every leaf of the tree as (dotted key, value); an empty map is a leaf too.
fn leaves(prefix: &str, v: &Value, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                leaves(&key, v, out);
            }
        }
        other => out.push((prefix.to_string(), other.clone())),
    }
}

fn text(key: &str, v: &Value) -> Result<String, ConfigError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(err(format!("{key}: expected a value, found {v}"))),
    }
}

fn flag(key: &str, v: &Value) -> Result<bool, ConfigError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(err(format!("{key}: expected true or false, found {v}"))),
    }
}

fn duration(key: &str, v: &Value) -> Result<std::time::Duration, ConfigError> {
    let s = text(key, v)?;
    humantime::parse_duration(&s).map_err(|e| err(format!("{key}: {s:?} is not a duration: {e}")))
}

/// `:5000` (registry:2's form for every interface) → `0.0.0.0:5000`.
fn listen_addr(addr: &str) -> String {
    match addr.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => addr.to_string(),
    }
}

/// The upstream host berth names a proxy's remote by (`registry-1.docker.io` is `docker.io`).
fn proxy_host(url: &str) -> Result<String, ConfigError> {
    let rest =
        url.split_once("://").map(|(_, r)| r).ok_or_else(|| err(format!("proxy.remoteurl: {url:?} is not a URL")))?;
    let host = rest.split('/').next().unwrap_or("").to_ascii_lowercase();
    Ok(match host.as_str() {
        "registry-1.docker.io" | "index.docker.io" | "registry.hub.docker.com" => "docker.io".into(),
        _ => host,
    })
}

/// One key of registry:2's S3 driver (`storage.s3.*`), into `s3`.
fn s3_key(notes: &mut Vec<Note>, s3: &mut super::S3Config, key: &str, v: &Value) -> Result<(), ConfigError> {
    let name = key.strip_prefix("storage.s3").unwrap_or("").trim_start_matches('.');
    let mut honour = |became: &str| notes.push(Note::Honoured { key: key.into(), became: became.into() });
    match name {
        "" => {}
        "regionendpoint" => {
            s3.endpoint = text(key, v)?;
            honour("storage.s3.endpoint");
        }
        "region" => {
            s3.region = text(key, v)?;
            honour("storage.s3.region");
        }
        "bucket" => {
            s3.bucket = text(key, v)?;
            honour("storage.s3.bucket");
        }
        "rootdirectory" => {
            s3.prefix = text(key, v)?.trim_matches('/').to_string();
            honour("storage.s3.prefix");
        }
        "accesskey" => {
            s3.access_key = text(key, v)?;
            honour("storage.s3.access_key");
        }
        "secretkey" => {
            s3.secret_key = text(key, v)?;
            honour("storage.s3.secret_key");
        }
        "forcepathstyle" => {
            s3.path_style = flag(key, v)?;
            honour("storage.s3.path_style");
        }
        // A regionendpoint carries its scheme; without one, AWS is HTTPS.
        "secure" | "v4auth" if flag(key, v)? => notes.push(Note::NotNeeded {
            key: key.into(),
            why: "berth always signs with SigV4, over the endpoint's own scheme".into(),
        }),
        "secure" | "v4auth" => {
            return Err(err(format!(
                "{key}: false is not supported (berth signs with SigV4; put http:// in regionendpoint)"
            )))
        }
        "encrypt" | "skipverify" if flag(key, v)? => {
            return Err(err(format!("{key}: not supported by berth's S3 backend")));
        }
        "encrypt" | "skipverify" => notes.push(Note::NotNeeded { key: key.into(), why: "off, as berth's".into() }),
        "chunksize" | "multipartcopychunksize" | "multipartcopymaxconcurrency" | "multipartcopythresholdsize" => {
            notes.push(Note::NotNeeded { key: key.into(), why: "berth sizes its own multipart uploads".into() })
        }
        _ => notes.push(Note::Unsupported { key: key.into() }),
    }
    Ok(())
}

/// One of registry:2's `notifications.endpoints`.
fn notify_endpoint(key: &str, e: &Value) -> Result<super::NotifyEndpoint, ConfigError> {
    let Value::Object(fields) = e else { return Err(err(format!("{key}: an entry that is not a map: {e}"))) };
    let mut out = super::NotifyEndpoint::default();
    let list = |k: &str, v: &Value| -> Result<Vec<String>, ConfigError> {
        match v {
            Value::Array(a) => a.iter().map(|x| text(k, x)).collect(),
            other => Ok(vec![text(k, other)?]),
        }
    };
    for (name, v) in fields {
        let k = format!("{key}.{name}");
        match name.to_ascii_lowercase().as_str() {
            "name" => out.name = text(&k, v)?,
            "url" => out.url = text(&k, v)?,
            "disabled" => out.disabled = flag(&k, v)?,
            "timeout" => out.timeout = duration(&k, v)?,
            "backoff" => out.backoff = duration(&k, v)?,
            "threshold" => out.threshold = text(&k, v)?.parse().map_err(|_| err(format!("{k}: not a count: {v}")))?,
            "ignoredmediatypes" => out.ignore_media_types.extend(list(&k, v)?),
            "ignore" => {
                let Value::Object(ignore) = v else { return Err(err(format!("{k}: expected a map, found {v}"))) };
                for (what, v) in ignore {
                    match what.to_ascii_lowercase().as_str() {
                        "mediatypes" => out.ignore_media_types.extend(list(&k, v)?),
                        "actions" => out.ignore_actions.extend(list(&k, v)?),
                        other => return Err(err(format!("{k}.{other}: unknown (mediatypes or actions)"))),
                    }
                }
            }
            "headers" => {
                let Value::Object(h) = v else { return Err(err(format!("{k}: expected a map, found {v}"))) };
                for (header, values) in h {
                    out.headers.insert(header.clone(), list(&k, values)?.join(", "));
                }
            }
            other => return Err(err(format!("{key}: unknown endpoint key {other:?}"))),
        }
    }
    Ok(out)
}

/// Translates registry:2's configuration `yaml` with `env` applied over it.
pub fn translate(yaml: &str, env: &[(String, String)]) -> Result<(Config, Vec<Note>), ConfigError> {
    let mut root = lowercase_keys(parse_yaml(yaml, "registry:2 configuration")?);
    apply_env(&mut root, env)?;
    let mut cfg = Config::default();
    // registry:2's defaults where they differ from berth's: no mirroring
    // without a proxy section, deletes off, its data directory.
    cfg.mirror.enabled = false;
    cfg.storage.delete.enabled = false;
    cfg.storage.root = PathBuf::from("/var/lib/registry");
    let mut notes = Vec::new();
    let mut all = Vec::new();
    leaves("", &root, &mut all);
    let mut htpasswd = (None::<PathBuf>, None::<String>);
    let mut tls = (None::<PathBuf>, None::<PathBuf>, None::<PathBuf>);
    let mut proxy = (None::<String>, None::<String>, None::<String>);
    let mut proxy_exec = (None::<String>, None::<std::time::Duration>);
    let mut s3 = None::<super::S3Config>;
    let mut redirect_disable = None::<bool>;
    for (key, v) in &all {
        let honour = |notes: &mut Vec<Note>, became: String| notes.push(Note::Honoured { key: key.clone(), became });
        let not_needed =
            |notes: &mut Vec<Note>, why: &str| notes.push(Note::NotNeeded { key: key.clone(), why: why.into() });
        match key.as_str() {
            "version" => {
                if text(key, v)? != "0.1" {
                    return Err(err(format!("version: registry:2 configurations are version 0.1, found {v}")));
                }
            }
            "log.level" | "loglevel" => {
                cfg.log.level = match text(key, v)?.as_str() {
                    "warning" => "warn".into(),
                    "panic" | "fatal" => "error".into(),
                    other => other.into(),
                };
                honour(&mut notes, format!("log.level = {:?}", cfg.log.level));
            }
            "validation.manifests.urls.allow" | "validation.manifests.urls.deny" => {
                let list = match v {
                    Value::Array(a) => a.iter().map(|r| text(key, r)).collect::<Result<Vec<_>, _>>()?,
                    other => vec![text(key, other)?],
                };
                let (target, name) = match key.ends_with(".allow") {
                    true => (&mut cfg.validation.urls_allow, "validation.urls_allow"),
                    false => (&mut cfg.validation.urls_deny, "validation.urls_deny"),
                };
                *target = list;
                honour(&mut notes, name.into());
            }
            // registry:2 then checks nothing; berth's default checks only
            // that URLs are http(s), which a client fetching them needs anyway.
            "validation.disabled" | "validation.enabled" => {
                not_needed(&mut notes, "berth checks foreign-layer URLs only as validation.urls_* say")
            }
            k if k.starts_with("log.fields.") => {
                let name = k.trim_start_matches("log.fields.").to_string();
                cfg.log.fields.insert(name, text(key, v)?);
                honour(&mut notes, format!("{k} (on every log line)"));
            }
            "log.formatter" => {
                cfg.log.format = match text(key, v)?.as_str() {
                    "json" | "logstash" => super::LogFormat::Json,
                    _ => super::LogFormat::Text,
                };
                honour(&mut notes, format!("log.format = {:?}", cfg.log.format).to_lowercase());
            }
            "storage.filesystem" => not_needed(&mut notes, "the filesystem driver is berth's own"),
            "storage.filesystem.rootdirectory" => {
                cfg.storage.root = PathBuf::from(text(key, v)?);
                honour(&mut notes, format!("storage.root = {:?}", cfg.storage.root));
            }
            "storage.filesystem.maxthreads" => not_needed(&mut notes, "berth bounds its own blocking pool"),
            "storage.delete.enabled" => {
                cfg.storage.delete.enabled = flag(key, v)?;
                honour(&mut notes, format!("storage.delete.enabled = {}", cfg.storage.delete.enabled));
            }
            "storage.cache" | "storage.cache.blobdescriptor" | "storage.cache.blobdescriptorsize" => {
                not_needed(&mut notes, "berth keeps its own in-memory caches (cache.*)")
            }
            "storage.maintenance.uploadpurging.enabled" if !flag(key, v)? => {
                return Err(err(format!("{key}: berth always purges abandoned uploads (uploads.max_age)")));
            }
            "storage.maintenance.uploadpurging.enabled" | "storage.maintenance.uploadpurging.interval" => {
                not_needed(&mut notes, "berth purges abandoned uploads on its own schedule")
            }
            "storage.maintenance.uploadpurging.dryrun" if flag(key, v)? => {
                return Err(err(format!("{key}: berth has no dry-run upload purging")));
            }
            "storage.maintenance.uploadpurging.dryrun" => not_needed(&mut notes, "off, as berth's"),
            "storage.maintenance.uploadpurging.age" => {
                cfg.uploads.max_age = duration(key, v)?;
                honour(&mut notes, format!("uploads.max_age = {}", humantime::format_duration(cfg.uploads.max_age)));
            }
            "storage.maintenance.readonly.enabled" => {
                cfg.storage.read_only = flag(key, v)?;
                honour(&mut notes, format!("storage.read_only = {}", cfg.storage.read_only));
            }
            "storage.redirect.disable" => {
                redirect_disable = Some(flag(key, v)?);
                honour(&mut notes, "storage.redirect.enabled (with storage.s3; files are served by berth)".into());
            }
            "middleware.storage" => {
                let Value::Array(list) = v else { return Err(err(format!("{key}: expected a list, found {v}"))) };
                for m in list {
                    let name = m.get("name").map(|n| text(key, n)).transpose()?.unwrap_or_default();
                    match name.as_str() {
                        "redirect" => {
                            let base = m.get("options").and_then(|o| o.get("baseurl"));
                            let base = base
                                .ok_or_else(|| err(format!("{key}: the redirect middleware needs options.baseurl")))?;
                            cfg.storage.redirect.base_url = text(key, base)?;
                            cfg.storage.redirect.enabled = true;
                        }
                        "cloudfront" => {
                            return Err(err(format!(
                                "{key}: the cloudfront middleware signs URLs with RSA-SHA1, which berth does not; \
                                 use storage.redirect (presigned S3 URLs) or a CDN with origin access and base_url"
                            )))
                        }
                        other => return Err(err(format!("{key}: the {other:?} storage middleware is not supported"))),
                    }
                }
                honour(&mut notes, "storage.redirect.base_url".into());
            }
            "storage.tag.concurrencylimit" => not_needed(&mut notes, "berth lists tags without a limit"),
            k if k.starts_with("storage.s3") => s3_key(&mut notes, s3.get_or_insert_with(Default::default), key, v)?,
            k if k.starts_with("storage.azure") => {
                let a = cfg.storage.azure.get_or_insert_with(Default::default);
                let field = match k.trim_start_matches("storage.azure").trim_start_matches('.') {
                    "" => continue,
                    "accountname" => &mut a.account_name,
                    "accountkey" => &mut a.account_key,
                    "container" => &mut a.container,
                    "realm" => &mut a.realm,
                    "rootdirectory" => &mut a.prefix,
                    _ => {
                        notes.push(Note::Unsupported { key: key.clone() });
                        continue;
                    }
                };
                *field = text(key, v)?.trim_matches('/').to_string();
                honour(
                    &mut notes,
                    key.replace("accountname", "account_name")
                        .replace("accountkey", "account_key")
                        .replace("rootdirectory", "prefix"),
                );
            }
            k if k.starts_with("storage.gcs") => {
                let g = cfg.storage.gcs.get_or_insert_with(Default::default);
                match k.trim_start_matches("storage.gcs").trim_start_matches('.') {
                    "" => {}
                    "bucket" => g.bucket = text(key, v)?,
                    "keyfile" => g.keyfile = Some(PathBuf::from(text(key, v)?)),
                    "rootdirectory" => g.prefix = text(key, v)?.trim_matches('/').to_string(),
                    "chunksize" => {
                        not_needed(&mut notes, "berth sizes its own uploads");
                        continue;
                    }
                    _ => {
                        notes.push(Note::Unsupported { key: key.clone() });
                        continue;
                    }
                }
                honour(&mut notes, key.replace("rootdirectory", "prefix"));
            }
            k if k.starts_with("storage.") => {
                let driver = k.split('.').nth(1).unwrap_or("");
                return Err(err(format!(
                    "{k}: the {driver} storage driver is not supported; berth stores on a filesystem, in S3, Azure or GCS"
                )));
            }
            "http.addr" => {
                cfg.server.listen = listen_addr(&text(key, v)?);
                honour(&mut notes, format!("server.listen = {:?}", cfg.server.listen));
            }
            "http.net" if text(key, v)? != "tcp" => {
                return Err(err(format!("{key}: berth listens on TCP only")));
            }
            "http.net" => not_needed(&mut notes, "tcp, as berth's"),
            "http.prefix" => {
                cfg.server.prefix = text(key, v)?;
                honour(&mut notes, format!("server.prefix = {:?}", cfg.server.prefix));
            }
            "http.secret" => not_needed(&mut notes, "berth keeps upload state on the server, no signed state to share"),
            "http.draintimeout" => {
                cfg.server.shutdown_timeout = duration(key, v)?;
                honour(
                    &mut notes,
                    format!("server.shutdown_timeout = {}", humantime::format_duration(cfg.server.shutdown_timeout)),
                );
            }
            k if k.starts_with("http.debug") => {
                not_needed(&mut notes, "/metrics (Prometheus) is served on the registry's own port; no pprof port")
            }
            "http.http2.disabled" => {
                not_needed(&mut notes, "berth speaks HTTP/2 only to clients that ask for it (ALPN on TLS)")
            }
            k if k == "redis" || k.starts_with("redis.") => not_needed(
                &mut notes,
                "berth caches in memory per process; replicas share the bucket and its leases, not a cache",
            ),
            k if k.starts_with("reporting.") => {
                not_needed(&mut notes, "bugsnag/newrelic: berth reports through /metrics and its logs")
            }
            "log.accesslog.disabled" => not_needed(
                &mut notes,
                "berth writes no access log; /metrics counts requests by endpoint, method and status",
            ),
            k if k.starts_with("compatibility.schema1") => {
                not_needed(&mut notes, "berth never converts manifests to schema 1 (and refuses schema 1 pushes)")
            }
            "catalog.maxentries" => not_needed(&mut notes, "berth pages the catalog (n, last) without an upper bound"),
            "http.host" | "http.relativeurls" => not_needed(
                &mut notes,
                "berth's Location headers follow the request's host (and X-Forwarded-* behind a proxy)",
            ),
            "http.tls.certificate" => {
                tls.0 = Some(PathBuf::from(text(key, v)?));
                honour(&mut notes, "server.tls.certificate".into());
            }
            "http.tls.key" => {
                tls.1 = Some(PathBuf::from(text(key, v)?));
                honour(&mut notes, "server.tls.key".into());
            }
            "http.tls.clientcas" => {
                let cas = match v {
                    Value::Array(a) => a.iter().map(|c| text(key, c)).collect::<Result<Vec<_>, _>>()?,
                    other => vec![text(key, other)?],
                };
                match cas.as_slice() {
                    [one] => tls.2 = Some(PathBuf::from(one)),
                    [] => {}
                    _ => return Err(err(format!("{key}: berth takes one client CA file (concatenate them)"))),
                }
                honour(&mut notes, "server.tls.client_ca".into());
            }
            k if k.starts_with("http.tls.letsencrypt") => {
                return Err(err(format!("{k}: berth does not obtain certificates; give it certificate and key files")));
            }
            k if k.starts_with("http.headers.") => {
                let name = &k["http.headers.".len()..];
                let values = match v {
                    Value::Array(a) => a.iter().map(|x| text(key, x)).collect::<Result<Vec<_>, _>>()?,
                    other => vec![text(key, other)?],
                };
                cfg.server.headers.insert(name.to_string(), values.join(", "));
                honour(&mut notes, format!("server.headers.{name:?}"));
            }
            "health.storagedriver.threshold" => {
                cfg.health.storage_threshold =
                    text(key, v)?.parse().map_err(|_| err(format!("{key}: not a count: {v}")))?;
                honour(&mut notes, format!("health.storage_threshold = {}", cfg.health.storage_threshold));
            }
            "health.storagedriver.enabled" | "health.storagedriver.interval" => {
                not_needed(&mut notes, "/readyz checks the data directory (write, sync, read back) on every probe")
            }
            "health.file" | "health.http" | "health.tcp" => {
                let Value::Array(checks) = v else { return Err(err(format!("{key}: expected a list, found {v}"))) };
                for c in checks {
                    let field = |name: &str| c.get(name).map(|f| text(&format!("{key}.{name}"), f)).transpose();
                    let threshold = field("threshold")?.map(|t| t.parse().unwrap_or(1)).unwrap_or(1);
                    let timeout = match c.get("timeout") {
                        Some(t) => duration(&format!("{key}.timeout"), t)?,
                        None => std::time::Duration::from_secs(1),
                    };
                    let required =
                        |name: &str| field(name)?.ok_or_else(|| err(format!("{key}: an entry without {name}")));
                    match key.as_str() {
                        "health.file" => cfg.health.files.push(PathBuf::from(required("file")?)),
                        "health.tcp" => {
                            cfg.health.tcp.push(super::TcpCheck { addr: required("addr")?, timeout, threshold })
                        }
                        _ => {
                            let mut headers = std::collections::BTreeMap::new();
                            if let Some(Value::Object(h)) = c.get("headers") {
                                for (name, values) in h {
                                    let values = match values {
                                        Value::Array(a) => {
                                            a.iter().map(|x| text(key, x)).collect::<Result<Vec<_>, _>>()?
                                        }
                                        other => vec![text(key, other)?],
                                    };
                                    headers.insert(name.clone(), values.join(", "));
                                }
                            }
                            let status = field("statuscode")?.map(|s| s.parse().unwrap_or(200)).unwrap_or(200);
                            cfg.health.http.push(super::HttpCheck {
                                uri: required("uri")?,
                                headers,
                                status,
                                timeout,
                                threshold,
                            });
                        }
                    }
                }
                honour(&mut notes, format!("{key} (checked on each /readyz probe; interval not needed)"));
            }
            "notifications.events.includereferences" => {
                cfg.notifications.include_references = flag(key, v)?;
                honour(&mut notes, "notifications.include_references".into());
            }
            "notifications.endpoints" => {
                let Value::Array(list) = v else { return Err(err(format!("{key}: expected a list, found {v}"))) };
                for e in list {
                    cfg.notifications.endpoints.push(notify_endpoint(key, e)?);
                }
                honour(&mut notes, "notifications.endpoints (queued on disk, retried, sent once)".into());
            }
            "auth.htpasswd" => {}
            "auth.htpasswd.path" => {
                htpasswd.0 = Some(PathBuf::from(text(key, v)?));
                honour(&mut notes, "auth.htpasswd.path".into());
            }
            "auth.htpasswd.realm" => {
                htpasswd.1 = Some(text(key, v)?);
                honour(&mut notes, "auth.htpasswd.realm".into());
            }
            "auth.token" => {}
            k if k.starts_with("auth.token.") => {
                let t = cfg.auth.token.get_or_insert_with(Default::default);
                let name = &k["auth.token.".len()..];
                match name {
                    "realm" => t.realm = text(key, v)?,
                    "service" => t.service = text(key, v)?,
                    "issuer" => t.issuer = text(key, v)?,
                    "rootcertbundle" => t.rootcertbundle = Some(PathBuf::from(text(key, v)?)),
                    "jwks" => t.jwks = Some(PathBuf::from(text(key, v)?)),
                    "autoredirect" => t.autoredirect = flag(key, v)?,
                    "autoredirectpath" => t.autoredirect_path = text(key, v)?,
                    // Signing algorithms are the keys' own (RS256/384/512, ES256/384).
                    "signingalgorithms" => {
                        not_needed(&mut notes, "berth takes RS256/384/512 and ES256/384 by the key's type");
                        continue;
                    }
                    _ => {
                        notes.push(Note::Unsupported { key: key.clone() });
                        continue;
                    }
                }
                honour(
                    &mut notes,
                    format!("auth.token.{}", if name == "autoredirectpath" { "autoredirect_path" } else { name }),
                );
            }
            k if k.starts_with("auth.") => {
                let kind = k.split('.').nth(1).unwrap_or("");
                return Err(err(format!(
                    "{k}: {kind} authentication is not supported; berth authenticates with htpasswd"
                )));
            }
            "proxy.remoteurl" => {
                proxy.0 = Some(text(key, v)?);
                honour(&mut notes, "mirror.enabled = true, the upstream's url".into());
            }
            "proxy.username" => {
                proxy.1 = Some(text(key, v)?);
                honour(&mut notes, "the upstream's username".into());
            }
            "proxy.password" => {
                proxy.2 = Some(text(key, v)?);
                honour(&mut notes, "the upstream's password".into());
            }
            "proxy.exec.command" => {
                proxy_exec.0 = Some(text(key, v)?);
                honour(&mut notes, "the upstream's credential_helper".into());
            }
            "proxy.exec.lifetime" => {
                proxy_exec.1 = Some(duration(key, v)?);
                honour(&mut notes, "the upstream's credential_lifetime".into());
            }
            "proxy.ttl" => {
                cfg.mirror.ttl = duration(key, v)?;
                honour(&mut notes, format!("mirror.ttl = {}", humantime::format_duration(cfg.mirror.ttl)));
            }
            _ => notes.push(Note::Unsupported { key: key.clone() }),
        }
    }
    if let Some(s3) = s3 {
        if s3.bucket.is_empty() {
            return Err(err("storage.s3.bucket is required"));
        }
        // The local directory keeps only berth's own state beside a bucket.
        cfg.storage.s3 = Some(s3);
        // registry:2 redirects from S3 unless told not to; berth only when asked.
        if redirect_disable == Some(false) {
            cfg.storage.redirect.enabled = true;
        }
    }
    match htpasswd {
        (Some(path), realm) => {
            cfg.auth.htpasswd = Some(HtpasswdConfig { path, realm: realm.unwrap_or_else(|| "berth".into()) })
        }
        (None, Some(_)) => return Err(err("auth.htpasswd.realm without auth.htpasswd.path")),
        (None, None) => {}
    }
    match tls {
        (Some(certificate), Some(key), client_ca) => cfg.server.tls = Some(TlsConfig { certificate, key, client_ca }),
        (None, None, None) => {}
        _ => return Err(err("http.tls needs both certificate and key")),
    }
    if let (Some(url), username, password) = proxy {
        let host = proxy_host(&url)?;
        cfg.mirror.enabled = true;
        cfg.mirror.default = host.clone();
        cfg.mirror.upstreams.retain(|u| u.host == host);
        cfg.mirror.set_upstream(&host, &url);
        let up = cfg.mirror.upstreams.iter_mut().find(|u| u.host == host).expect("set above");
        up.username = username;
        up.password = password;
        up.credential_helper = proxy_exec.0;
        if let Some(lifetime) = proxy_exec.1 {
            up.credential_lifetime = lifetime;
        }
    } else if proxy.1.is_some() || proxy.2.is_some() || proxy_exec.0.is_some() {
        return Err(err("proxy.username, proxy.password and proxy.exec need proxy.remoteurl"));
    }
    Ok((cfg, notes))
}

/// The startup warning: every key berth does not support, in one line.
pub fn unsupported(notes: &[Note]) -> Option<String> {
    let keys: Vec<&str> = notes
        .iter()
        .filter_map(|n| match n {
            Note::Unsupported { key } => Some(key.as_str()),
            _ => None,
        })
        .collect();
    (!keys.is_empty()).then(|| format!("registry:2 keys berth does not support (ignored): {}", keys.join(", ")))
}

/// `berth config check`'s account of each key, as TOML comments.
/// `REGISTRY_*` variables set without a registry:2 configuration file:
/// nothing reads them (registry:2's variables override its `config.yml`;
/// berth's own are `BERTH_*`). The warning naming them, if there are any.
pub fn stray_variables(file: Option<&std::path::Path>, env: &[(String, String)]) -> Option<String> {
    if file.is_some_and(is_registry2) {
        return None;
    }
    let mut names: Vec<&str> =
        env.iter().map(|(k, _)| k.as_str()).filter(|k| k.starts_with("REGISTRY_") && k.len() > 9).collect();
    names.sort_unstable();
    (!names.is_empty()).then(|| {
        format!(
            "{} set, but registry:2's variables apply only with its config.yml (serve --config config.yml); \
             ignored: {}",
            if names.len() == 1 { "a REGISTRY_* variable is" } else { "REGISTRY_* variables are" },
            names.join(", ")
        )
    })
}

pub fn describe(notes: &[Note]) -> String {
    let mut out = String::from("# from registry:2's configuration:\n");
    for n in notes {
        out.push_str(&match n {
            Note::Honoured { key, became } => format!("#   {key} -> {became}\n"),
            Note::NotNeeded { key, why } => format!("#   {key}: not needed ({why})\n"),
            Note::Unsupported { key } => format!("#   {key}: NOT SUPPORTED, ignored\n"),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The registry:2 image's own `config.yml`.
    const TUTORIAL: &str = include_str!("../../config/registry2.yml");

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_image_s_default_config_is_a_private_registry_on_5000() {
        let (cfg, notes) = translate(TUTORIAL, &[]).unwrap();
        assert_eq!(cfg.server.listen, "0.0.0.0:5000");
        assert_eq!(cfg.storage.root, PathBuf::from("/var/lib/registry"));
        assert!(!cfg.mirror.enabled, "no proxy section: no mirroring");
        assert!(!cfg.storage.delete.enabled, "registry:2's default");
        assert_eq!(cfg.server.headers.get("x-content-type-options").map(String::as_str), Some("nosniff"));
        assert_eq!(unsupported(&notes), None, "the image's own file starts clean");
        assert_eq!(cfg.log.fields.get("service").map(String::as_str), Some("registry"));
        assert!(describe(&notes).contains("health.storagedriver.enabled: not needed"));
    }

    #[test]
    fn the_compose_environment_of_the_tutorials() {
        let vars = env(&[
            ("REGISTRY_AUTH", "htpasswd"),
            ("REGISTRY_AUTH_HTPASSWD_REALM", "Registry Realm"),
            ("REGISTRY_AUTH_HTPASSWD_PATH", "/auth/htpasswd"),
            ("REGISTRY_HTTP_TLS_CERTIFICATE", "/certs/domain.crt"),
            ("REGISTRY_HTTP_TLS_KEY", "/certs/domain.key"),
            ("REGISTRY_STORAGE_DELETE_ENABLED", "true"),
            ("REGISTRY_HTTP_ADDR", "0.0.0.0:443"),
            ("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", "/data"),
            ("PATH", "/usr/bin"),
        ]);
        let (cfg, _) = translate(TUTORIAL, &vars).unwrap();
        let h = cfg.auth.htpasswd.unwrap();
        assert_eq!((h.path, h.realm.as_str()), (PathBuf::from("/auth/htpasswd"), "Registry Realm"));
        let tls = cfg.server.tls.unwrap();
        assert_eq!(tls.certificate, PathBuf::from("/certs/domain.crt"));
        assert!(cfg.storage.delete.enabled);
        assert_eq!(cfg.server.listen, "0.0.0.0:443");
        assert_eq!(cfg.storage.root, PathBuf::from("/data"));
    }

    #[test]
    fn a_proxy_is_a_mirror_of_its_remote() {
        let vars = env(&[
            ("REGISTRY_PROXY_REMOTEURL", "https://registry-1.docker.io"),
            ("REGISTRY_PROXY_USERNAME", "me"),
            ("REGISTRY_PROXY_PASSWORD", "secret"),
            ("REGISTRY_PROXY_TTL", "72h"),
        ]);
        let (cfg, _) = translate("version: 0.1\n", &vars).unwrap();
        assert!(cfg.mirror.enabled);
        assert_eq!(cfg.mirror.default, "docker.io");
        assert_eq!(cfg.mirror.upstreams.len(), 1);
        let up = &cfg.mirror.upstreams[0];
        assert_eq!(
            (up.url.as_str(), up.username.as_deref(), up.password.as_deref()),
            ("https://registry-1.docker.io", Some("me"), Some("secret"))
        );
        assert_eq!(cfg.mirror.ttl, std::time::Duration::from_secs(72 * 3600));
        let (cfg, _) = translate("version: 0.1\nproxy:\n  remoteurl: https://ghcr.io\n", &[]).unwrap();
        assert_eq!(cfg.mirror.default, "ghcr.io");
    }

    #[test]
    fn proxy_exec_is_the_upstream_s_credential_helper() {
        let yaml = "version: 0.1\nproxy:\n  remoteurl: https://registry.corp\n  exec:\n    command: docker-credential-corp\n    lifetime: 30m\n";
        let cfg = translate(yaml, &[]).unwrap().0;
        let up = cfg.mirror.upstreams.iter().find(|u| u.host == "registry.corp").unwrap();
        assert_eq!(up.credential_helper.as_deref(), Some("docker-credential-corp"));
        assert_eq!(up.credential_lifetime, std::time::Duration::from_secs(1800));
        assert!(translate("version: 0.1\nproxy:\n  exec:\n    command: x\n", &[]).is_err(), "exec without remoteurl");
    }

    #[test]
    fn health_checks_are_berth_s() {
        let yaml = "version: 0.1\nhealth:\n  storagedriver:\n    enabled: true\n    threshold: 3\n  file:\n    - file: /tmp/down\n      interval: 10s\n  http:\n    - uri: http://127.0.0.1:9/ok\n      headers:\n        Authorization: [Basic eA==]\n      statuscode: 204\n      timeout: 3s\n      threshold: 2\n  tcp:\n    - addr: 127.0.0.1:6379\n";
        let h = translate(yaml, &[]).unwrap().0.health;
        assert_eq!(h.storage_threshold, 3);
        assert_eq!(h.files, vec![PathBuf::from("/tmp/down")]);
        assert_eq!((h.http[0].status, h.http[0].threshold, h.http[0].timeout.as_secs()), (204, 2, 3));
        assert_eq!(h.http[0].headers.values().collect::<Vec<_>>(), ["Basic eA=="]);
        assert_eq!((h.tcp[0].addr.as_str(), h.tcp[0].threshold), ("127.0.0.1:6379", 1));
    }

    #[test]
    fn notifications_are_berth_s_with_every_endpoint_key() {
        let yaml = "version: 0.1\nnotifications:\n  events:\n    includereferences: true\n  endpoints:\n    - name: alistener\n      disabled: false\n      url: https://my.listener.com/event\n      headers:\n        Authorization: [Bearer x]\n      timeout: 500ms\n      threshold: 5\n      backoff: 2s\n      ignoredmediatypes:\n        - application/octet-stream\n      ignore:\n        mediatypes:\n          - application/vnd.oci.image.config.v1+json\n        actions:\n          - pull\n";
        let (cfg, notes) = translate(yaml, &[]).unwrap();
        assert!(unsupported(&notes).is_none(), "{notes:?}");
        let n = cfg.notifications;
        assert!(n.include_references);
        let e = &n.endpoints[0];
        assert_eq!(
            (e.name.as_str(), e.url.as_str(), e.disabled),
            ("alistener", "https://my.listener.com/event", false)
        );
        assert_eq!((e.timeout.as_millis(), e.threshold, e.backoff.as_secs()), (500, 5, 2));
        assert_eq!(e.headers.get("Authorization").map(String::as_str), Some("Bearer x"));
        let mut types = e.ignore_media_types.clone();
        types.sort();
        assert_eq!(types, ["application/octet-stream", "application/vnd.oci.image.config.v1+json"]);
        assert_eq!(e.ignore_actions, ["pull"]);
        let bad = "version: 0.1\nnotifications:\n  endpoints:\n    - name: a\n      url: http://x\n      queue: 3\n";
        assert!(translate(bad, &[]).unwrap_err().to_string().contains("queue"));
    }

    #[test]
    fn token_auth_is_berth_s_auth_token() {
        let yaml = "version: 0.1\nauth:\n  token:\n    realm: https://auth.example.com/token\n    service: registry.example.com\n    issuer: auth.example.com\n    rootcertbundle: /certs/bundle.pem\n    jwks: /certs/jwks.json\n    autoredirect: false\n";
        let (cfg, notes) = translate(yaml, &[]).unwrap();
        assert!(unsupported(&notes).is_none(), "{notes:?}");
        let t = cfg.auth.token.unwrap();
        assert_eq!((t.realm.as_str(), t.service.as_str()), ("https://auth.example.com/token", "registry.example.com"));
        assert_eq!(t.issuer, "auth.example.com");
        assert_eq!(t.rootcertbundle, Some(PathBuf::from("/certs/bundle.pem")));
        assert_eq!(t.jwks, Some(PathBuf::from("/certs/jwks.json")));
        let env = env(&[("REGISTRY_AUTH_TOKEN_SERVICE", "other")]);
        assert_eq!(translate(yaml, &env).unwrap().0.auth.token.unwrap().service, "other");
    }

    #[test]
    fn redirects_are_berth_s_storage_redirect() {
        let s3 = "version: 0.1\nstorage:\n  s3:\n    bucket: b\n    region: r\n  redirect:\n    disable: false\n";
        let r = translate(s3, &[]).unwrap().0.storage.redirect;
        assert!(r.enabled && r.base_url.is_empty());
        let off = "version: 0.1\nstorage:\n  s3:\n    bucket: b\n  redirect:\n    disable: true\n";
        assert!(!translate(off, &[]).unwrap().0.storage.redirect.enabled);
        let files = "version: 0.1\nstorage:\n  redirect:\n    disable: false\n";
        assert!(!translate(files, &[]).unwrap().0.storage.redirect.enabled, "files are served by berth, as registry:2");
        let cdn = "version: 0.1\nmiddleware:\n  storage:\n    - name: redirect\n      options:\n        baseurl: https://cdn.example.com/\n";
        let r = translate(cdn, &[]).unwrap().0.storage.redirect;
        assert!(r.enabled);
        assert_eq!(r.base_url, "https://cdn.example.com/");
        let cf = "version: 0.1\nmiddleware:\n  storage:\n    - name: cloudfront\n      options:\n        baseurl: x\n";
        assert!(translate(cf, &[]).unwrap_err().to_string().contains("RSA-SHA1"));
    }

    #[test]
    fn the_azure_and_gcs_drivers_are_berth_s() {
        let azure = "version: 0.1\nstorage:\n  azure:\n    accountname: acct\n    accountkey: a2V5\n    container: reg\n    realm: core.chinacloudapi.cn\n    rootdirectory: /dist/\n";
        let (cfg, notes) = translate(azure, &[]).unwrap();
        assert!(unsupported(&notes).is_none(), "{notes:?}");
        let a = cfg.storage.azure.unwrap();
        assert_eq!((a.account_name.as_str(), a.account_key.as_str(), a.container.as_str()), ("acct", "a2V5", "reg"));
        assert_eq!((a.realm.as_str(), a.prefix.as_str()), ("core.chinacloudapi.cn", "dist"));
        let env = env(&[
            ("REGISTRY_STORAGE", "gcs"),
            ("REGISTRY_STORAGE_GCS_BUCKET", "b"),
            ("REGISTRY_STORAGE_GCS_KEYFILE", "/k.json"),
        ]);
        let (cfg, notes) = translate("version: 0.1\n", &env).unwrap();
        assert!(unsupported(&notes).is_none(), "{notes:?}");
        assert!(cfg.validate().is_ok());
        let g = cfg.storage.gcs.unwrap();
        assert_eq!((g.bucket.as_str(), g.keyfile), ("b", Some(PathBuf::from("/k.json"))));
    }

    #[test]
    fn manifest_url_validation_is_berth_s() {
        let yaml = "version: 0.1\nvalidation:\n  manifests:\n    urls:\n      allow:\n        - ^https?://([^/]+\\.)*example\\.com/\n      deny:\n        - ^https?://www\\.example\\.com/\n";
        let cfg = translate(yaml, &[]).unwrap().0;
        assert_eq!(cfg.validation.urls_allow, vec!["^https?://([^/]+\\.)*example\\.com/"]);
        assert_eq!(cfg.validation.urls_deny, vec!["^https?://www\\.example\\.com/"]);
    }

    #[test]
    fn read_only_maintenance_mode_is_berth_s_read_only() {
        let yaml = "version: 0.1\nstorage:\n  maintenance:\n    readonly:\n      enabled: true\n";
        assert!(translate(yaml, &[]).unwrap().0.storage.read_only);
        let env = env(&[("REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED", "false")]);
        assert!(!translate(yaml, &env).unwrap().0.storage.read_only);
    }

    #[test]
    fn what_berth_cannot_honour_is_an_error() {
        for (yaml, says) in [
            ("version: 0.1\nstorage:\n  swift:\n    container: b\n", "swift storage driver"),
            ("version: 0.1\nstorage:\n  s3:\n    region: r\n", "bucket is required"),
            ("version: 0.1\nstorage:\n  s3:\n    bucket: b\n    encrypt: true\n", "not supported"),
            ("version: 0.1\nauth:\n  silly:\n    realm: x\n", "silly authentication"),
            ("version: 0.2\n", "version 0.1"),
            ("version: 0.1\nhttp:\n  tls:\n    certificate: /a.crt\n", "both certificate and key"),
        ] {
            let e = translate(yaml, &[]).unwrap_err().to_string();
            assert!(e.contains(says), "{yaml}: {e}");
        }
        let e = translate("version: 0.1\n", &env(&[("REGISTRY_STORAGE", "s3")])).unwrap_err().to_string();
        assert!(e.contains("bucket is required"), "{e}");
    }

    #[test]
    fn the_s3_driver_settings_configure_the_bucket_from_yaml_or_environment() {
        let yaml = "version: 0.1\nstorage:\n  s3:\n    regionendpoint: http://127.0.0.1:8333\n    region: us-east-1\n    bucket: reg\n    rootdirectory: /dist\n    accesskey: AK\n    secretkey: SK\n    secure: true\n    v4auth: true\n    chunksize: 10485760\n";
        let from_env = env(&[
            ("REGISTRY_STORAGE", "s3"),
            ("REGISTRY_STORAGE_S3_REGIONENDPOINT", "http://127.0.0.1:8333"),
            ("REGISTRY_STORAGE_S3_REGION", "us-east-1"),
            ("REGISTRY_STORAGE_S3_BUCKET", "reg"),
            ("REGISTRY_STORAGE_S3_ROOTDIRECTORY", "/dist"),
            ("REGISTRY_STORAGE_S3_ACCESSKEY", "AK"),
            ("REGISTRY_STORAGE_S3_SECRETKEY", "SK"),
            ("REGISTRY_STORAGE_S3_FORCEPATHSTYLE", "true"),
        ]);
        for (yaml, vars) in [(yaml, vec![]), ("version: 0.1\n", from_env)] {
            let (cfg, notes) = translate(yaml, &vars).unwrap();
            let s3 = cfg.storage.s3.expect("storage.s3");
            assert_eq!(
                (s3.endpoint.as_str(), s3.region.as_str(), s3.bucket.as_str(), s3.prefix.as_str()),
                ("http://127.0.0.1:8333", "us-east-1", "reg", "dist")
            );
            assert_eq!((s3.access_key.as_str(), s3.secret_key.as_str(), s3.path_style), ("AK", "SK", true));
            assert!(unsupported(&notes).is_none(), "{notes:?}");
        }
    }

    #[test]
    fn registry2_variables_without_its_file_are_named() {
        let env = vec![
            ("REGISTRY_HTTP_ADDR".to_string(), ":5000".to_string()),
            ("BERTH_SERVER__LISTEN".to_string(), ":5000".to_string()),
            ("REGISTRY_AUTH".to_string(), "htpasswd".to_string()),
        ];
        let w = stray_variables(None, &env).unwrap();
        assert!(w.ends_with("ignored: REGISTRY_AUTH, REGISTRY_HTTP_ADDR"), "{w}");
        assert_eq!(stray_variables(None, &env[1..2]), None);
        let dir = tempfile::tempdir().unwrap();
        let toml = dir.path().join("berth.toml");
        std::fs::write(&toml, "").unwrap();
        assert!(stray_variables(Some(&toml), &env).is_some(), "a TOML file does not read them either");
        let yml = dir.path().join("config.yml");
        std::fs::write(&yml, "version: 0.1\n").unwrap();
        assert_eq!(stray_variables(Some(&yml), &env), None);
    }
}
