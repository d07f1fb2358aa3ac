//! Air-gapped bundles: images with their upstream identities in one OCI
//! image layout (a directory, or the same as one tar), so that a berth with
//! no way to its upstreams can serve `alpine` to `registry-mirrors` clients.
//! `export` writes a bundle from a running berth over its registry API;
//! `registry::import` reads one into a berth's mirror name space.
//!
//! The layout is a plain one (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`),
//! so skopeo and oras read it; berth's part is in annotations of
//! `index.json`'s entries:
//! - an image exported by reference carries `io.berth.image` (its identity,
//!   `docker.io/library/alpine:3.20` or `…@sha256:…`) and, for a tag, the
//!   same as `org.opencontainers.image.ref.name` (what `oci:DIR:REF` names);
//! - a referrer (a signature, an attestation) carries `io.berth.repository`;
//! - an incremental bundle (`--since`) carries, on the index itself,
//!   `io.berth.bundle.since`: the digest of the earlier bundle's `index.json`,
//!   whose blobs it leaves out.

pub mod export;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::oci::Digest;

pub const IMAGE: &str = "io.berth.image";
pub const REPOSITORY: &str = "io.berth.repository";
pub const SINCE: &str = "io.berth.bundle.since";
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
const LAYOUT_FILE: &str = "oci-layout";
const LAYOUT_VERSION: &str = "{\"imageLayoutVersion\":\"1.0.0\"}";
const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// `index.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LayoutIndex {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Entry>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Default for LayoutIndex {
    fn default() -> Self {
        LayoutIndex {
            schema_version: 2,
            media_type: Some(INDEX_MEDIA_TYPE.into()),
            manifests: vec![],
            annotations: BTreeMap::new(),
        }
    }
}

/// One entry of `index.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Entry {
    pub fn digest(&self) -> Result<Digest, String> {
        self.digest.parse().map_err(|_| format!("index.json names {:?}, which is no digest", self.digest))
    }
}

/// Where a blob's bytes are in a bundle.
enum Source {
    Dir(PathBuf),
    /// A tar: each blob's offset and size in the file (its entries are
    /// stored, not compressed, so a blob is read in place).
    Tar {
        file: PathBuf,
        blobs: HashMap<Digest, (u64, u64)>,
    },
}

/// A bundle opened for reading.
pub struct Bundle {
    source: Source,
    pub index: LayoutIndex,
    /// The digest of its `index.json` (what a later `--since` names).
    pub id: Digest,
}

fn blob_rel(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm().as_str(), d.hex())
}

/// The digest a layout path names (`blobs/sha256/<hex>`).
fn parse_blob_path(path: &str) -> Option<Digest> {
    let rest = path.trim_start_matches("./").strip_prefix("blobs/")?;
    let (alg, hex) = rest.split_once('/')?;
    format!("{alg}:{hex}").parse().ok()
}

impl Bundle {
    /// Opens a bundle directory or tar (blocking: reads a tar's headers).
    pub fn open(path: &Path) -> Result<Bundle, String> {
        let what = |e: std::io::Error| format!("{}: {e}", path.display());
        let meta = std::fs::metadata(path).map_err(what)?;
        let (source, index_bytes) = if meta.is_dir() {
            let bytes =
                std::fs::read(path.join("index.json")).map_err(|e| format!("{}/index.json: {e}", path.display()))?;
            (Source::Dir(path.to_path_buf()), bytes)
        } else {
            let mut archive = tar::Archive::new(std::fs::File::open(path).map_err(what)?);
            let (mut blobs, mut index) = (HashMap::new(), None);
            for entry in archive.entries().map_err(what)? {
                let mut entry = entry.map_err(what)?;
                let name = entry.path().map_err(what)?.to_string_lossy().trim_start_matches("./").to_string();
                if name == "index.json" {
                    let mut bytes = Vec::new();
                    entry.read_to_end(&mut bytes).map_err(what)?;
                    index = Some(bytes);
                } else if let Some(d) = parse_blob_path(&name) {
                    blobs.insert(d, (entry.raw_file_position(), entry.size()));
                }
            }
            let index = index.ok_or_else(|| format!("{}: no index.json in the tar", path.display()))?;
            (Source::Tar { file: path.to_path_buf(), blobs }, index)
        };
        let index: LayoutIndex = serde_json::from_slice(&index_bytes)
            .map_err(|e| format!("{}: index.json is not an OCI image index: {e}", path.display()))?;
        Ok(Bundle { source, index, id: Digest::sha256_of(&index_bytes) })
    }

    /// Blob `d`'s size, if the bundle holds it.
    pub fn blob_size(&self, d: &Digest) -> Option<u64> {
        match &self.source {
            Source::Dir(dir) => std::fs::metadata(dir.join(blob_rel(d))).ok().filter(|m| m.is_file()).map(|m| m.len()),
            Source::Tar { blobs, .. } => blobs.get(d).map(|(_, size)| *size),
        }
    }

    /// Every blob the bundle holds.
    pub fn blobs(&self) -> Result<Vec<Digest>, String> {
        match &self.source {
            Source::Dir(dir) => {
                let mut out = Vec::new();
                for alg in ["sha256", "sha512"] {
                    let Ok(entries) = std::fs::read_dir(dir.join("blobs").join(alg)) else { continue };
                    for e in entries.flatten() {
                        if let Some(d) = parse_blob_path(&format!("blobs/{alg}/{}", e.file_name().to_string_lossy())) {
                            out.push(d);
                        }
                    }
                }
                Ok(out)
            }
            Source::Tar { blobs, .. } => Ok(blobs.keys().cloned().collect()),
        }
    }

    /// Blob `d`'s bytes as a reader (blocking), with its size; not verified
    /// here: whoever reads it checks the digest.
    pub fn open_blob(&self, d: &Digest) -> Result<(Box<dyn Read + Send>, u64), String> {
        let missing = || format!("the bundle has no blob {d}");
        match &self.source {
            Source::Dir(dir) => {
                let path = dir.join(blob_rel(d));
                let f = std::fs::File::open(&path).map_err(|_| missing())?;
                let size = f.metadata().map_err(|e| format!("{}: {e}", path.display()))?.len();
                Ok((Box::new(f), size))
            }
            Source::Tar { file, blobs } => {
                let (offset, size) = *blobs.get(d).ok_or_else(missing)?;
                let mut f = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
                f.seek(SeekFrom::Start(offset)).map_err(|e| format!("{}: {e}", file.display()))?;
                Ok((Box::new(f.take(size)), size))
            }
        }
    }

    /// A small blob (a manifest), read whole and checked against its digest.
    pub fn read_verified(&self, d: &Digest, limit: u64) -> Result<Vec<u8>, String> {
        let (r, size) = self.open_blob(d)?;
        if size > limit {
            return Err(format!("the bundle's manifest {d} is {size} bytes, more than the limit of {limit}"));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        r.take(limit).read_to_end(&mut bytes).map_err(|e| format!("blob {d}: {e}"))?;
        d.check(&bytes).map_err(|actual| format!("the bundle's blob {d} hashes to {actual}"))?;
        Ok(bytes)
    }
}

/// Writes `bytes` to `path` whole or not at all (temp file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let what = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(what)?;
    tmp.write_all(bytes).map_err(what)?;
    tmp.as_file().sync_all().map_err(what)?;
    tmp.persist(path).map_err(|e| what(e.error))?;
    Ok(())
}

/// Writes the layout's two small files (`oci-layout`, then `index.json`).
pub fn write_layout_files(dir: &Path, index: &LayoutIndex) -> Result<(), String> {
    write_atomic(&dir.join(LAYOUT_FILE), LAYOUT_VERSION.as_bytes())?;
    let bytes = serde_json::to_vec_pretty(index).map_err(|e| e.to_string())?;
    write_atomic(&dir.join("index.json"), &bytes)
}

/// Packs a layout directory into one tar at `out` (whole or not at all):
/// `oci-layout` and `index.json` first, so a reader learns what the bundle
/// holds before its blobs.
pub fn pack_tar(dir: &Path, out: &Path) -> Result<(), String> {
    let what = |e: std::io::Error| format!("{}: {e}", out.display());
    let parent = out.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(parent).map_err(what)?;
    let mut builder = tar::Builder::new(std::io::BufWriter::with_capacity(1 << 20, tmp.as_file()));
    builder.mode(tar::HeaderMode::Deterministic);
    for name in [LAYOUT_FILE, "index.json"] {
        builder.append_path_with_name(dir.join(name), name).map_err(what)?;
    }
    let mut blobs: Vec<PathBuf> = Vec::new();
    for alg in ["sha256", "sha512"] {
        let Ok(entries) = std::fs::read_dir(dir.join("blobs").join(alg)) else { continue };
        for e in entries.flatten() {
            if parse_blob_path(&format!("blobs/{alg}/{}", e.file_name().to_string_lossy())).is_some() {
                blobs.push(e.path());
            }
        }
    }
    blobs.sort();
    for path in blobs {
        let rel = path.strip_prefix(dir).expect("listed under dir").to_string_lossy().to_string();
        builder.append_path_with_name(&path, rel).map_err(what)?;
    }
    let writer = builder.into_inner().map_err(what)?;
    writer.into_inner().map_err(|e| what(e.into_error()))?;
    tmp.as_file().sync_all().map_err(what)?;
    tmp.persist(out).map_err(|e| what(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_and_its_tar_read_the_same() {
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join("layout");
        let blob = b"some layer".to_vec();
        let d = Digest::sha256_of(&blob);
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join(blob_rel(&d)), &blob).unwrap();
        let mut index = LayoutIndex::default();
        index.manifests.push(Entry {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: d.to_string(),
            size: blob.len() as u64,
            annotations: [(IMAGE.to_string(), "docker.io/library/x:1".to_string())].into(),
        });
        write_layout_files(&dir, &index).unwrap();
        let tar = work.path().join("bundle.tar");
        pack_tar(&dir, &tar).unwrap();
        for path in [&dir, &tar] {
            let b = Bundle::open(path).unwrap();
            assert_eq!(b.index, index);
            assert_eq!(b.blob_size(&d), Some(blob.len() as u64));
            assert_eq!(b.blobs().unwrap(), vec![d.clone()]);
            assert_eq!(b.read_verified(&d, 1 << 20).unwrap(), blob);
            let other = Digest::sha256_of(b"other");
            assert!(b.open_blob(&other).is_err());
        }
        // Corrupt bytes do not pass as the blob.
        std::fs::write(dir.join(blob_rel(&d)), b"some layeR").unwrap();
        let err = Bundle::open(&dir).unwrap().read_verified(&d, 1 << 20).unwrap_err();
        assert!(err.contains("hashes to"), "{err}");
    }
}
