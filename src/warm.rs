//! Prefetch: fills a running server's mirror with images before anyone pulls
//! them, by pulling them from that server like a client would (so the
//! mirror's coalescing, verification and bookkeeping all apply). Used by
//! `berth warm` and by the server itself for `mirror.warm`.

use std::io::IsTerminal;

use crate::local_server;
use crate::oci::reach;
use crate::oci::{Descriptor, Digest, ManifestInfo, MediaType, Platform};
use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// Layers of one image fetched at once.
const PARALLEL_BLOBS: usize = 4;

/// An image as people write it: `alpine`, `alpine:3.20`, `ghcr.io/org/app@sha256:…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The upstream registry (`docker.io` for names without one).
    pub host: String,
    /// The repository there (`library/alpine`).
    pub remote: String,
    /// A tag or a digest.
    pub reference: String,
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sep = if self.reference.contains(':') { '@' } else { ':' };
        write!(f, "{}/{}{sep}{}", self.host, self.remote, self.reference)
    }
}

/// Parses an image reference the way docker does: the first component is a
/// registry if it has a `.` or a `:` or is `localhost`; Docker Hub's
/// one-component names are under `library/`.
pub fn parse_image(s: &str) -> Result<ImageRef, String> {
    let bad = || format!("{s:?} is not an image reference (e.g. alpine:3.20, ghcr.io/org/app@sha256:…)");
    let (name, reference) = match s.split_once('@') {
        Some((n, d)) => (n, d.parse::<Digest>().map_err(|_| bad())?.to_string()),
        None => match s.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, t.to_string()),
            _ => (s, "latest".to_string()),
        },
    };
    let (host, remote) = match name.split_once('/') {
        Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            (first.to_ascii_lowercase(), rest.to_string())
        }
        _ => ("docker.io".to_string(), name.to_string()),
    };
    let host = match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io".to_string(),
        _ => host,
    };
    let remote = if host == "docker.io" && !remote.contains('/') { format!("library/{remote}") } else { remote };
    if remote.is_empty() || reference.is_empty() || remote.parse::<crate::oci::RepoName>().is_err() {
        return Err(bad());
    }
    Ok(ImageRef { host, remote, reference })
}

pub fn parse_platforms(s: &str) -> Result<Vec<Platform>, String> {
    s.split(',').filter(|p| !p.trim().is_empty()).map(str::parse).collect()
}

/// Where to warm and how.
pub struct Warmer {
    /// The server's base URL (`http://127.0.0.1:5000`).
    pub server: String,
    /// Only these platforms of an index (all when empty).
    pub platforms: Vec<Platform>,
    /// Basic credentials for the server, if it asks for them.
    pub user: Option<(String, String)>,
    pub client: awc::Client,
    /// Progress bars (a terminal); `None`: quiet.
    pub bars: Option<MultiProgress>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WarmReport {
    pub images: usize,
    pub manifests: usize,
    pub blobs: usize,
    pub bytes: u64,
}

impl Warmer {
    /// A warmer for `server`; TLS to a loopback server accepts its certificate
    /// whatever it names (it is this machine's berth), elsewhere the web PKI.
    pub fn new(server: &str, platforms: Vec<Platform>, user: Option<(String, String)>, progress: bool) -> Self {
        let server = local_server::base_url(server);
        let client = local_server::client(local_server::is_loopback(&server), None);
        let bars = (progress && std::io::stderr().is_terminal()).then(MultiProgress::new);
        Warmer { server, platforms, user, client, bars }
    }

    fn get(&self, path: &str) -> awc::ClientRequest {
        let req = self.client.get(format!("{}{path}", self.server));
        match &self.user {
            Some((u, p)) => req.basic_auth(u, p),
            None => req,
        }
    }

    /// Pulls `image` through the server: its manifest, the platforms wanted
    /// of an index (the one walk, `oci::reach`), and every blob they reach,
    /// each once (verified here too).
    pub async fn warm(&self, image: &ImageRef) -> Result<WarmReport, String> {
        let (root_digest, root) = self.manifest(image, &image.reference).await?;
        let wanted = |entry: &Descriptor| {
            self.platforms.is_empty()
                || entry.platform.as_ref().is_some_and(|p| self.platforms.iter().any(|w| w.matches(p)))
        };
        let mut root = Some(root);
        let load = |d: Digest| {
            let first = if d == root_digest { root.take() } else { None };
            async move {
                match first {
                    Some(m) => Ok(Some(m)),
                    None => self.manifest(image, &d.to_string()).await.map(|(_, m)| Some(m)),
                }
            }
        };
        let reach = reach::reach([root_digest.clone()], wanted, load).await?;
        let results: Vec<Result<u64, String>> = futures::stream::iter(&reach.blobs)
            .map(|(d, size)| self.blob(image, d, *size))
            .buffer_unordered(PARALLEL_BLOBS)
            .collect()
            .await;
        let mut report = WarmReport { images: 1, manifests: reach.manifests.len(), ..Default::default() };
        for r in results {
            report.bytes += r?;
            report.blobs += 1;
        }
        Ok(report)
    }

    fn path(image: &ImageRef, kind: &str, reference: &str) -> String {
        format!("/v2/{}/{kind}/{reference}?ns={}", image.remote, image.host)
    }

    /// The manifest `reference` names, verified and parsed, with its digest.
    async fn manifest(&self, image: &ImageRef, reference: &str) -> Result<(Digest, ManifestInfo), String> {
        let mut resp = self
            .get(&Self::path(image, "manifests", reference))
            .insert_header(("Accept", MediaType::ALL.join(", ")))
            .send()
            .await
            .map_err(|e| format!("{}: {e}", self.server))?;
        let body = resp.body().limit(16 << 20).await.map_err(|e| format!("{image}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("{image}: the server answered {}: {}", resp.status(), String::from_utf8_lossy(&body)));
        }
        let digest = match reference.parse::<Digest>() {
            Ok(d) => {
                d.check(&body).map_err(|actual| format!("{image}: manifest {d} arrived as {actual}"))?;
                d
            }
            Err(_) => Digest::sha256_of(&body),
        };
        let info = ManifestInfo::parse_stored(&body).map_err(|e| format!("{image}: {}", e.message))?;
        Ok((digest, info))
    }

    /// Reads blob `d` to the end, checking its digest; returns its size.
    async fn blob(&self, image: &ImageRef, d: &Digest, size: u64) -> Result<u64, String> {
        let mut resp = self
            .get(&Self::path(image, "blobs", &d.to_string()))
            .send()
            .await
            .map_err(|e| format!("{}: {e}", self.server))?;
        if !resp.status().is_success() {
            return Err(format!("{image}: blob {d}: the server answered {}", resp.status()));
        }
        let bar = self.bars.as_ref().map(|m| {
            let bar = m.add(ProgressBar::new(size));
            bar.set_style(
                ProgressStyle::with_template("{msg:20} {bar:30} {bytes:>10}/{total_bytes:10} {bytes_per_sec}")
                    .expect("a valid template"),
            );
            bar.set_message(d.hex()[..12].to_string());
            bar
        });
        let (mut hasher, mut n) = (d.algorithm().hasher(), 0u64);
        while let Some(chunk) = resp.next().await {
            let chunk = chunk.map_err(|e| format!("{image}: blob {d}: {e}"))?;
            hasher.update(&chunk);
            n += chunk.len() as u64;
            if let Some(b) = &bar {
                b.set_position(n);
            }
        }
        if let Some(b) = bar {
            b.finish();
        }
        let actual = hasher.finish();
        if &actual != d {
            return Err(format!("{image}: blob {d} arrived as {actual}"));
        }
        Ok(n)
    }
}

/// Warms each image in turn (a failure is reported and the rest go on);
/// returns the totals and the failures.
pub async fn warm_all(w: &Warmer, images: &[ImageRef]) -> (WarmReport, Vec<String>) {
    let (mut total, mut failures) = (WarmReport::default(), Vec::new());
    for image in images {
        match w.warm(image).await {
            Ok(r) => {
                total.images += r.images;
                total.manifests += r.manifests;
                total.blobs += r.blobs;
                total.bytes += r.bytes;
            }
            Err(e) => failures.push(e),
        }
    }
    (total, failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(host: &str, remote: &str, reference: &str) -> ImageRef {
        ImageRef { host: host.into(), remote: remote.into(), reference: reference.into() }
    }

    #[test]
    fn images_as_docker_reads_them() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(parse_image("alpine").unwrap(), r("docker.io", "library/alpine", "latest"));
        assert_eq!(parse_image("alpine:3.20").unwrap(), r("docker.io", "library/alpine", "3.20"));
        assert_eq!(parse_image("bitnami/redis:7").unwrap(), r("docker.io", "bitnami/redis", "7"));
        assert_eq!(parse_image("docker.io/library/alpine").unwrap(), r("docker.io", "library/alpine", "latest"));
        assert_eq!(parse_image("index.docker.io/nginx:1").unwrap(), r("docker.io", "library/nginx", "1"));
        assert_eq!(parse_image("ghcr.io/org/app:v1").unwrap(), r("ghcr.io", "org/app", "v1"));
        assert_eq!(parse_image(&format!("quay.io/a/b@{d}")).unwrap(), r("quay.io", "a/b", &d));
        assert_eq!(parse_image("localhost:5001/x:1").unwrap(), r("localhost:5001", "x", "1"));
        assert_eq!(parse_image("registry.k8s.io/pause:3.9").unwrap(), r("registry.k8s.io", "pause", "3.9"));
        assert!(parse_image("UPPER/case").is_err());
        assert!(parse_image("alpine@sha256:short").is_err());
        assert_eq!(r("docker.io", "library/alpine", &d).to_string(), format!("docker.io/library/alpine@{d}"));
    }

    #[test]
    fn platforms() {
        let p = parse_platforms("linux/amd64, linux/arm64/v8").unwrap();
        assert_eq!(p.len(), 2);
        let entry = |p: &str| p.parse::<Platform>().unwrap();
        assert!(p[1].matches(&entry("linux/arm64/v8")));
        assert!(!p[1].matches(&entry("linux/arm64/v7")));
        assert!(p[0].matches(&entry("linux/amd64")));
        assert!(parse_platforms("linux").is_err());
    }
}
