//! `berth export`: writes images from a running berth into a bundle, over
//! the registry API (so a mirrored image not cached yet is fetched through
//! the server, verified and kept there as any pull would). For each image:
//! its manifest, every platform of an index, every referrer of each (the
//! referrers API) and cosign's `sha256-<hex>.sig` tag, and every blob they
//! reach; each blob is checked against its digest before it is kept.
//!
//! Resumable: blobs are written whole or not at all (a temp file renamed),
//! and a blob already in the output (checked again) is not fetched again;
//! `index.json` is written last, so a layout without it is unfinished. A tar
//! is made from a directory beside it (`FILE.tar.partial`), packed at the end.
//! Incremental: with `--since` an earlier bundle, blobs it holds are left out
//! (manifests, small, are always written).

use std::collections::{BTreeMap, HashSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use super::{Bundle, Entry, LayoutIndex, IMAGE, REF_NAME, REPOSITORY, SINCE};
use crate::local_server;
use crate::oci::{Digest, ManifestInfo, MediaType};
use crate::warm::ImageRef;

/// Blobs fetched at once.
const PARALLEL_BLOBS: usize = 4;
/// The largest manifest read (berth's own default limit is 4 MiB).
const MANIFEST_LIMIT: usize = 16 << 20;

#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExportReport {
    pub images: usize,
    pub manifests: usize,
    /// Blobs fetched and written by this run.
    pub blobs_written: usize,
    /// Blobs an earlier, interrupted run had written (checked, kept).
    pub blobs_resumed: usize,
    /// Blobs left out because the `--since` bundle holds them.
    pub blobs_in_earlier: usize,
    pub bytes_written: u64,
}

/// A blob to write, and a repository of the server it can be read from.
struct Wanted {
    size: u64,
    from: ImageRef,
}

/// What the walk of the images found.
#[derive(Default)]
struct Found {
    entries: Vec<Entry>,
    manifests: BTreeMap<Digest, Bytes>,
    blobs: BTreeMap<Digest, Wanted>,
}

pub struct Exporter {
    server: String,
    user: Option<(String, String)>,
    client: awc::Client,
    progress: bool,
}

impl Exporter {
    /// An exporter reading from `server` (TLS to a loopback server accepts
    /// its certificate whatever it names, as `berth warm` does).
    pub fn new(server: &str, user: Option<(String, String)>, progress: bool) -> Self {
        let server = local_server::base_url(server);
        let client = local_server::client(local_server::is_loopback(&server), None);
        Exporter { server, user, client, progress: progress && std::io::stderr().is_terminal() }
    }

    fn get(&self, path: &str) -> awc::ClientRequest {
        let req = self.client.get(format!("{}{path}", self.server));
        match &self.user {
            Some((u, p)) => req.basic_auth(u, p),
            None => req,
        }
    }

    fn path(image: &ImageRef, kind: &str, reference: &str) -> String {
        format!("/v2/{}/{kind}/{reference}?ns={}", image.remote, image.host)
    }

    /// GETs `path` as JSON (`None` on a 404).
    async fn json(&self, path: &str) -> Result<Option<serde_json::Value>, String> {
        let mut resp = self.get(path).send().await.map_err(|e| format!("{}: {e}", self.server))?;
        let body = resp.body().limit(MANIFEST_LIMIT).await.map_err(|e| format!("{path}: {e}"))?;
        match resp.status().as_u16() {
            404 => Ok(None),
            s if (200..300).contains(&s) => {
                serde_json::from_slice(&body).map(Some).map_err(|e| format!("{path}: not JSON: {e}"))
            }
            s => Err(format!("{path}: the server answered {s}: {}", String::from_utf8_lossy(&body))),
        }
    }

    /// The manifest `reference` names (`None` on a 404), verified: against
    /// the digest it was asked by, else against `Docker-Content-Digest`.
    async fn manifest(&self, image: &ImageRef, reference: &str) -> Result<Option<(Digest, Bytes)>, String> {
        let mut resp = self
            .get(&Self::path(image, "manifests", reference))
            .insert_header(("Accept", MediaType::ALL.join(", ")))
            .send()
            .await
            .map_err(|e| format!("{}: {e}", self.server))?;
        let body = resp.body().limit(MANIFEST_LIMIT).await.map_err(|e| format!("{image}: {e}"))?;
        if resp.status().as_u16() == 404 {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(format!("{image}: the server answered {}: {}", resp.status(), String::from_utf8_lossy(&body)));
        }
        let announced = resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()?.parse().ok());
        let digest = match reference.parse::<Digest>().ok().or(announced) {
            Some(d) => {
                d.check(&body).map_err(|actual| format!("{image}: manifest {d} arrived as {actual}"))?;
                d
            }
            None => Digest::sha256_of(&body),
        };
        Ok(Some((digest, body)))
    }

    /// The images `--upstream HOST` (every cached tag of every repository
    /// mirrored from it) and `--pinned` (the configured `mirror.pin`
    /// patterns) name, from the server's catalog and tag lists.
    pub async fn expand(&self, upstreams: &[String], pins: &[String]) -> Result<Vec<ImageRef>, String> {
        if upstreams.is_empty() && pins.is_empty() {
            return Ok(vec![]);
        }
        let catalog = self.json("/v2/_catalog?n=100000").await?.unwrap_or_default();
        let names: Vec<String> = catalog["repositories"]
            .as_array()
            .map(|a| a.iter().filter_map(|n| n.as_str().map(String::from)).collect())
            .unwrap_or_default();
        let mut out = Vec::new();
        for name in &names {
            let Some((host, remote)) = name.split_once('/').filter(|(h, _)| h.contains('.') || h.contains(':')) else {
                continue;
            };
            // A pin with a tag names one image (added below); without one, every tag.
            let whole = upstreams.iter().any(|u| u == host)
                || pins.iter().any(|p| !has_tag(p) && glob(&canonical_pin(p), name));
            if !whole {
                continue;
            }
            let tags = self.json(&format!("/v2/{name}/tags/list")).await?.unwrap_or_default();
            for tag in tags["tags"].as_array().into_iter().flatten().filter_map(|t| t.as_str()) {
                // cosign's signature tags travel with the image they sign.
                if tag.starts_with("sha256-") {
                    continue;
                }
                out.push(ImageRef { host: host.into(), remote: remote.into(), reference: tag.into() });
            }
        }
        // Pins of one tag: asked for by name (the server fetches them if not cached).
        for p in pins.iter().filter(|p| has_tag(p) && !p.contains('*')) {
            let image = crate::warm::parse_image(p)?;
            if !out.contains(&image) {
                out.push(image);
            }
        }
        Ok(out)
    }

    /// Writes `images` into a bundle at `output` (a directory, or a tar when
    /// it ends in `.tar`), leaving out blobs the `since` bundle holds.
    pub async fn export(
        &self,
        images: &[ImageRef],
        output: &Path,
        since: Option<&Path>,
    ) -> Result<ExportReport, String> {
        let earlier = match since {
            Some(p) => {
                let p = p.to_path_buf();
                let b = tokio::task::spawn_blocking(move || Bundle::open(&p)).await.map_err(|e| e.to_string())??;
                Some((b.id.clone(), b.blobs()?.into_iter().collect::<HashSet<Digest>>()))
            }
            None => None,
        };
        let tar = output.extension().is_some_and(|e| e == "tar");
        let dir = match tar {
            true => PathBuf::from(format!("{}.partial", output.display())),
            false => output.to_path_buf(),
        };
        for alg in ["sha256", "sha512"] {
            std::fs::create_dir_all(dir.join("blobs").join(alg)).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let mut found = Found::default();
        let mut report = ExportReport::default();
        for image in images {
            self.walk(image, &mut found).await?;
            report.images += 1;
        }
        report.manifests = found.manifests.len();
        // Manifests are in hand (verified when they arrived), and always
        // written: small, and an import plans from them even when incremental.
        for (d, bytes) in &found.manifests {
            let path = dir.join(super::blob_rel(d));
            if !path.is_file() {
                super::write_atomic(&path, bytes)?;
            }
        }
        let mut to_fetch = Vec::new();
        for (d, w) in &found.blobs {
            if earlier.as_ref().is_some_and(|(_, held)| held.contains(d)) {
                report.blobs_in_earlier += 1;
            } else if verified_file(&dir.join(super::blob_rel(d)), d).await? {
                report.blobs_resumed += 1;
            } else {
                to_fetch.push((d, w));
            }
        }
        let total: u64 = to_fetch.iter().map(|(_, w)| w.size).sum();
        let bar = self.progress.then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template("export {bar:40} {bytes:>10}/{total_bytes:10} {bytes_per_sec} {msg}")
                    .expect("a valid template"),
            );
            bar
        });
        let results: Vec<Result<u64, String>> = futures::stream::iter(to_fetch)
            .map(|(d, w)| self.blob(&dir, d, w, bar.as_ref()))
            .buffer_unordered(PARALLEL_BLOBS)
            .collect()
            .await;
        if let Some(b) = &bar {
            b.finish_and_clear();
        }
        for r in results {
            report.bytes_written += r?;
            report.blobs_written += 1;
        }
        let mut index = LayoutIndex { manifests: found.entries, ..Default::default() };
        if let Some((id, _)) = earlier {
            index.annotations.insert(SINCE.into(), id.to_string());
        }
        super::write_layout_files(&dir, &index)?;
        if tar {
            let (d, out) = (dir.clone(), output.to_path_buf());
            tokio::task::spawn_blocking(move || super::pack_tar(&d, &out)).await.map_err(|e| e.to_string())??;
            std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        Ok(report)
    }

    /// Finds everything `image` needs: its manifests (every platform), their
    /// referrers and cosign signature tag, and the blobs they reach.
    async fn walk(&self, image: &ImageRef, found: &mut Found) -> Result<(), String> {
        let (root, bytes) =
            self.manifest(image, &image.reference).await?.ok_or_else(|| format!("{image}: no such image"))?;
        let identity = image.to_string();
        let tagged = image.reference.parse::<Digest>().is_err();
        let mut annotations = BTreeMap::from([(IMAGE.to_string(), identity.clone())]);
        if tagged {
            annotations.insert(REF_NAME.into(), identity.clone());
        }
        found.entries.push(entry(&root, &bytes, annotations)?);
        let mut queue = vec![(root.clone(), Some(bytes))];
        // cosign's signature of the image, by its tag schema.
        let sig_tag = format!("{}-{}.sig", root.algorithm().as_str(), root.hex());
        if let Some((d, bytes)) = self.manifest(image, &sig_tag).await? {
            let name = format!("{}/{}:{sig_tag}", image.host, image.remote);
            let annotations = BTreeMap::from([(IMAGE.to_string(), name.clone()), (REF_NAME.to_string(), name)]);
            found.entries.push(entry(&d, &bytes, annotations)?);
            queue.push((d, Some(bytes)));
        }
        let repository = format!("{}/{}", image.host, image.remote);
        let mut seen: HashSet<Digest> = HashSet::new();
        while let Some((d, bytes)) = queue.pop() {
            if !seen.insert(d.clone()) {
                continue;
            }
            let bytes = match bytes.or_else(|| found.manifests.get(&d).cloned()) {
                Some(b) => b,
                None => {
                    self.manifest(image, &d.to_string()).await?.ok_or_else(|| format!("{image}: no manifest {d}"))?.1
                }
            };
            let info = ManifestInfo::parse_stored(&bytes).map_err(|e| format!("{image}: {d}: {}", e.message))?;
            for child in info.children() {
                queue.push((child.digest.clone(), None));
            }
            for b in info.blobs() {
                found.blobs.entry(b.digest.clone()).or_insert(Wanted { size: b.size, from: image.clone() });
            }
            found.manifests.insert(d.clone(), bytes);
            // Signatures, attestations, SBOMs that refer to it.
            let referrers = self.json(&Self::path(image, "referrers", &d.to_string())).await?;
            for r in referrers.as_ref().and_then(|v| v["manifests"].as_array()).into_iter().flatten() {
                let Some(rd) = r["digest"].as_str().and_then(|s| s.parse::<Digest>().ok()) else { continue };
                if seen.contains(&rd) || found.entries.iter().any(|e| e.digest == rd.to_string()) {
                    continue;
                }
                let (rd, rbytes) = self
                    .manifest(image, &rd.to_string())
                    .await?
                    .ok_or_else(|| format!("{image}: referrer {rd} is listed but not served"))?;
                let annotations = BTreeMap::from([(REPOSITORY.to_string(), repository.clone())]);
                found.entries.push(entry(&rd, &rbytes, annotations)?);
                queue.push((rd, Some(rbytes)));
            }
        }
        Ok(())
    }

    /// Fetches blob `d` into the layout, checking it; returns its size.
    async fn blob(&self, dir: &Path, d: &Digest, w: &Wanted, bar: Option<&ProgressBar>) -> Result<u64, String> {
        use tokio::io::AsyncWriteExt;
        let image = &w.from;
        let mut resp = self
            .get(&Self::path(image, "blobs", &d.to_string()))
            .send()
            .await
            .map_err(|e| format!("{}: {e}", self.server))?;
        if !resp.status().is_success() {
            return Err(format!("{image}: blob {d}: the server answered {}", resp.status()));
        }
        let path = dir.join(super::blob_rel(d));
        let partial = path.with_extension("partial");
        let what = |e: std::io::Error| format!("{}: {e}", partial.display());
        let mut file = tokio::fs::File::create(&partial).await.map_err(what)?;
        let (mut hasher, mut n) = (d.algorithm().hasher(), 0u64);
        while let Some(chunk) = resp.next().await {
            let chunk = chunk.map_err(|e| format!("{image}: blob {d}: {e}"))?;
            hasher.update(&chunk);
            n += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(what)?;
            if let Some(b) = bar {
                b.inc(chunk.len() as u64);
            }
        }
        let actual = hasher.finish();
        if &actual != d || n != w.size {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(format!("{image}: blob {d} arrived as {actual} ({n} bytes, {} expected)", w.size));
        }
        file.sync_all().await.map_err(what)?;
        drop(file);
        tokio::fs::rename(&partial, &path).await.map_err(what)?;
        Ok(n)
    }
}

/// An `index.json` entry for manifest `d`.
fn entry(d: &Digest, bytes: &[u8], annotations: BTreeMap<String, String>) -> Result<Entry, String> {
    let info = ManifestInfo::parse_stored(bytes).map_err(|e| format!("{d}: {}", e.message))?;
    Ok(Entry { media_type: info.media_type, digest: d.to_string(), size: bytes.len() as u64, annotations })
}

/// Whether `path` holds exactly the blob `d` (an earlier run's, resumed).
async fn verified_file(path: &Path, d: &Digest) -> Result<bool, String> {
    let (path, d) = (path.to_path_buf(), d.clone());
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let Ok(mut f) = std::fs::File::open(&path) else { return false };
        let mut hasher = d.algorithm().hasher();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => hasher.update(&buf[..n]),
                Err(_) => return false,
            }
        }
        if hasher.finish() == d {
            return true;
        }
        // Not the blob: it goes, and is fetched again.
        let _ = std::fs::remove_file(&path);
        false
    })
    .await
    .map_err(|e| e.to_string())
}

/// A pin as the catalog names repositories (`alpine` is `docker.io/library/alpine`),
/// without a tag.
fn canonical_pin(p: &str) -> String {
    let name = match p.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => n,
        _ => p,
    };
    let first = name.split('/').next().unwrap_or("");
    if first.contains('.') || first.contains(':') || first == "localhost" {
        return name.to_string();
    }
    match name.contains('/') {
        true => format!("docker.io/{name}"),
        false => format!("docker.io/library/{name}"),
    }
}

/// `*` matches any characters (as `mirror.pin` reads it).
fn glob(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((head, tail)) => {
            let Some(rest) = s.strip_prefix(head) else { return false };
            (0..=rest.len()).filter(|&i| rest.is_char_boundary(i)).any(|i| glob(tail, &rest[i..]))
        }
    }
}

/// Whether a pin names one tag (`alpine:3.20`), not a whole repository.
fn has_tag(p: &str) -> bool {
    p.rsplit_once(':').is_some_and(|(_, t)| !t.contains('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_as_the_catalog_names_them() {
        assert_eq!(canonical_pin("alpine"), "docker.io/library/alpine");
        assert_eq!(canonical_pin("docker.io/library/alpine:3.20"), "docker.io/library/alpine");
        assert_eq!(canonical_pin("bitnami/redis"), "docker.io/bitnami/redis");
        assert_eq!(canonical_pin("ghcr.io/owner/*"), "ghcr.io/owner/*");
        assert!(glob("ghcr.io/owner/*", "ghcr.io/owner/a/b"));
        assert!(!glob("ghcr.io/owner/*", "ghcr.io/other/a"));
        assert!(glob("docker.io/library/alpine", "docker.io/library/alpine"));
        assert!(has_tag("docker.io/library/alpine:3.20") && !has_tag("localhost:5000/x") && !has_tag("alpine"));
    }
}
