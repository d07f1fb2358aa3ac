//! Manifest media types and the parts of a manifest the registry acts on:
//! the blobs and child manifests it references, its subject and artifact type.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Digest, OciCode, ParseError};

/// Manifest media types berth knows by name.
pub struct MediaType;

impl MediaType {
    pub const DOCKER_MANIFEST: &'static str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_LIST: &'static str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_SCHEMA1_SIGNED: &'static str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
    pub const DOCKER_SCHEMA1: &'static str = "application/vnd.docker.distribution.manifest.v1+json";
    pub const OCI_MANIFEST: &'static str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &'static str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_ARTIFACT: &'static str = "application/vnd.oci.artifact.manifest.v1+json";

    /// Every manifest type, for an `Accept` header sent upstream.
    pub const ALL: [&'static str; 6] = [
        Self::OCI_INDEX,
        Self::OCI_MANIFEST,
        Self::DOCKER_LIST,
        Self::DOCKER_MANIFEST,
        Self::OCI_ARTIFACT,
        Self::DOCKER_SCHEMA1_SIGNED,
    ];
}

/// Layers that registries never hold (they carry `urls` to fetch from elsewhere).
fn non_distributable(media_type: &str) -> bool {
    media_type == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
        || media_type.starts_with("application/vnd.oci.image.layer.nondistributable.")
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: i64,
    platform: Option<RawPlatform>,
    #[serde(default)]
    urls: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct RawPlatform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    variant: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
    blobs: Option<Vec<RawDescriptor>>,
    subject: Option<RawDescriptor>,
    artifact_type: Option<String>,
    annotations: Option<BTreeMap<String, String>>,
}

/// `os/architecture[/variant]` of an index entry (or of a platform wanted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// Whether `entry` is this platform (any variant when this names none).
    pub fn matches(&self, entry: &Platform) -> bool {
        self.os == entry.os
            && self.architecture == entry.architecture
            && self.variant.as_ref().is_none_or(|v| entry.variant.as_ref() == Some(v))
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(v) if !v.is_empty() => write!(f, "/{v}"),
            _ => Ok(()),
        }
    }
}

impl std::str::FromStr for Platform {
    type Err = String;

    fn from_str(p: &str) -> Result<Self, String> {
        let parts: Vec<&str> = p.trim().split('/').collect();
        let (os, architecture, variant) = match parts.as_slice() {
            [os, arch] => (os, arch, None),
            [os, arch, v] => (os, arch, Some(v.to_string())),
            _ => return Err(format!("{p:?} is not a platform (os/arch or os/arch/variant, e.g. linux/arm64/v8)")),
        };
        if os.is_empty() || architecture.is_empty() {
            return Err(format!("{p:?} is not a platform (os/arch or os/arch/variant, e.g. linux/arm64/v8)"));
        }
        Ok(Platform { os: os.to_string(), architecture: architecture.to_string(), variant })
    }
}

/// A content descriptor: what a manifest references, and how big it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    /// For the entries of an index.
    pub platform: Option<Platform>,
    /// Where a foreign (non-distributable) layer is fetched from instead.
    pub urls: Vec<String>,
}

impl Descriptor {
    /// A layer registries never hold (it carries `urls` to fetch from elsewhere).
    pub fn non_distributable(&self) -> bool {
        non_distributable(&self.media_type)
    }
}

/// A manifest, parsed once: the one model the API, the mirror, GC, eviction,
/// pins, the web page and warm read (walked by `oci::reach`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestInfo {
    /// The media type served as `Content-Type`.
    pub media_type: String,
    /// An image's configuration.
    pub config: Option<Descriptor>,
    /// An image's layers, foreign ones included (see `blobs()`).
    pub layers: Vec<Descriptor>,
    /// An index's entries: child manifests.
    pub manifests: Vec<Descriptor>,
    /// An artifact manifest's blobs.
    pub artifact_blobs: Vec<Descriptor>,
    /// The manifest this one refers to (referrers API).
    pub subject: Option<Digest>,
    /// `artifactType`, or else the config media type (referrers API rule).
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

impl ManifestInfo {
    /// Blobs (config, layers) that must exist in the repository: every
    /// referenced blob but foreign layers.
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.config.iter().chain(self.layers.iter().filter(|l| !l.non_distributable())).chain(&self.artifact_blobs)
    }

    /// Child manifests (of an index) that must exist in the repository.
    pub fn children(&self) -> impl Iterator<Item = &Descriptor> {
        self.manifests.iter()
    }

    /// Whether this is an index (it has child manifests, or is typed as one).
    pub fn is_index(&self) -> bool {
        !self.manifests.is_empty()
            || self.media_type == MediaType::OCI_INDEX
            || self.media_type == MediaType::DOCKER_LIST
    }

    /// Every digest this manifest references directly (blobs and children).
    pub fn references(&self) -> impl Iterator<Item = &Digest> {
        self.blobs().chain(self.children()).map(|d| &d.digest)
    }
}

fn invalid(msg: impl Into<String>) -> ParseError {
    ParseError::new(OciCode::ManifestInvalid, msg)
}

/// The deepest JSON nesting Go's encoding/json accepts (its scanner's
/// `maxNestingDepth`): docker, containerd and registry:2 refuse anything
/// deeper, so a manifest nested deeper would be stored yet unpullable.
pub const MAX_JSON_DEPTH: usize = 10_000;

/// Refuses JSON nested deeper than `MAX_JSON_DEPTH` (arrays and objects),
/// in one pass without recursion. serde skips unknown fields without a depth
/// limit, so without this check a deep unknown field would be accepted.
fn check_depth(bytes: &[u8]) -> Result<(), ParseError> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(invalid(format!("manifest JSON is nested deeper than {MAX_JSON_DEPTH} levels")));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn descriptor(d: RawDescriptor, field: &str) -> Result<Descriptor, ParseError> {
    let size = u64::try_from(d.size).map_err(|_| invalid(format!("{field}: negative size")))?;
    let digest = d.digest.parse().map_err(|e: ParseError| invalid(format!("{field}: {}", e.message)))?;
    let platform = d.platform.map(|p| Platform { os: p.os, architecture: p.architecture, variant: p.variant });
    Ok(Descriptor { media_type: d.media_type, digest, size, platform, urls: d.urls })
}

fn descriptors(list: Option<Vec<RawDescriptor>>, field: &str) -> Result<Vec<Descriptor>, ParseError> {
    list.unwrap_or_default().into_iter().map(|d| descriptor(d, field)).collect()
}

/// A media type the client may send that says nothing about the manifest.
fn generic_content_type(ct: &str) -> bool {
    ct.is_empty() || ct == "application/json" || ct == "application/octet-stream"
}

impl ManifestInfo {
    /// Parses a manifest being pushed with the given `Content-Type`.
    /// Rejects what is not a schema 2 manifest, list, index or artifact.
    pub fn parse_push(bytes: &[u8], content_type: Option<&str>) -> Result<ManifestInfo, ParseError> {
        check_depth(bytes)?;
        let raw: RawManifest =
            serde_json::from_slice(bytes).map_err(|e| invalid(format!("manifest is not valid JSON: {e}")))?;
        let ct = content_type.map(|c| c.split(';').next().unwrap_or("").trim()).unwrap_or("");
        if ct == MediaType::DOCKER_SCHEMA1 || ct == MediaType::DOCKER_SCHEMA1_SIGNED || raw.schema_version == Some(1) {
            return Err(invalid("schema 1 manifests are not accepted; push a schema 2 or OCI manifest"));
        }
        if raw.schema_version != Some(2) && ct != MediaType::OCI_ARTIFACT {
            return Err(invalid("schemaVersion must be 2"));
        }
        let media_type = match (&raw.media_type, ct) {
            (Some(body), ct) if !generic_content_type(ct) && body != ct => {
                return Err(invalid(format!("Content-Type {ct} does not match the manifest's mediaType {body}")))
            }
            (Some(body), _) => body.clone(),
            (None, ct) if !generic_content_type(ct) => ct.to_string(),
            (None, _) => structural_media_type(&raw).to_string(),
        };
        Self::from_raw(raw, media_type)
    }

    /// Reads a stored manifest leniently: its media type and references.
    /// Stored bytes were checked on the way in (or written by registry:2).
    pub fn parse_stored(bytes: &[u8]) -> Result<ManifestInfo, ParseError> {
        check_depth(bytes)?;
        let raw: RawManifest =
            serde_json::from_slice(bytes).map_err(|e| invalid(format!("stored manifest is not valid JSON: {e}")))?;
        let media_type = match &raw.media_type {
            Some(m) => m.clone(),
            None => structural_media_type(&raw).to_string(),
        };
        if raw.schema_version == Some(1) {
            return Ok(ManifestInfo {
                media_type,
                config: None,
                layers: vec![],
                manifests: vec![],
                artifact_blobs: vec![],
                subject: None,
                artifact_type: None,
                annotations: None,
            });
        }
        Self::from_raw(raw, media_type)
    }

    fn from_raw(raw: RawManifest, media_type: String) -> Result<ManifestInfo, ParseError> {
        let (has_manifests, has_layers) = (raw.manifests.is_some(), raw.layers.is_some());
        let config = raw.config.map(|c| descriptor(c, "config")).transpose()?;
        let layers = descriptors(raw.layers, "layers")?;
        let manifests = descriptors(raw.manifests, "manifests")?;
        let artifact_blobs = descriptors(raw.blobs, "blobs")?;
        match media_type.as_str() {
            MediaType::DOCKER_MANIFEST | MediaType::OCI_MANIFEST => {
                if config.is_none() {
                    return Err(invalid("image manifest has no config"));
                }
                if has_manifests {
                    return Err(invalid("image manifest must not have manifests"));
                }
                if media_type == MediaType::DOCKER_MANIFEST && !has_layers {
                    return Err(invalid("image manifest has no layers"));
                }
            }
            MediaType::DOCKER_LIST | MediaType::OCI_INDEX => {
                if config.is_some() || has_layers {
                    return Err(invalid("an index must not have config or layers"));
                }
                if !has_manifests {
                    return Err(invalid("index has no manifests"));
                }
            }
            MediaType::OCI_ARTIFACT => {}
            other => return Err(invalid(format!("unsupported manifest media type {other:?}"))),
        }
        // Only the fields its type has count (an artifact's stray `layers` reference nothing).
        let (layers, manifests, artifact_blobs) = match media_type.as_str() {
            MediaType::OCI_ARTIFACT => (vec![], vec![], artifact_blobs),
            MediaType::DOCKER_LIST | MediaType::OCI_INDEX => (vec![], manifests, vec![]),
            _ => (layers, vec![], vec![]),
        };
        let subject = raw.subject.map(|s| descriptor(s, "subject")).transpose()?.map(|s| s.digest);
        let artifact_type =
            raw.artifact_type.or_else(|| config.as_ref().map(|c| c.media_type.clone()).filter(|m| !m.is_empty()));
        let config = if media_type == MediaType::OCI_ARTIFACT { None } else { config };
        Ok(ManifestInfo {
            media_type,
            config,
            layers,
            manifests,
            artifact_blobs,
            subject,
            artifact_type,
            annotations: raw.annotations,
        })
    }
}

/// The media type a manifest without `mediaType` has, judged by its fields.
fn structural_media_type(raw: &RawManifest) -> &'static str {
    if raw.schema_version == Some(1) {
        MediaType::DOCKER_SCHEMA1_SIGNED
    } else if raw.manifests.is_some() {
        MediaType::OCI_INDEX
    } else {
        MediaType::OCI_MANIFEST
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn image(mt: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{mt}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{D2}","size":3}}]}}"#
        )
    }

    #[test]
    fn image_manifest_references_config_and_layers() {
        let m =
            ManifestInfo::parse_push(image(MediaType::OCI_MANIFEST).as_bytes(), Some(MediaType::OCI_MANIFEST)).unwrap();
        assert_eq!(m.media_type, MediaType::OCI_MANIFEST);
        assert_eq!(m.blobs().count(), 2);
        assert_eq!(m.layers[0].size, 3);
        assert_eq!(m.artifact_type.as_deref(), Some("application/vnd.oci.image.config.v1+json"));
    }

    #[test]
    fn content_type_must_match_media_type() {
        let e = ManifestInfo::parse_push(image(MediaType::OCI_MANIFEST).as_bytes(), Some(MediaType::DOCKER_MANIFEST))
            .unwrap_err();
        assert_eq!(e.code, OciCode::ManifestInvalid);
    }

    #[test]
    fn rejects_non_json_and_unknown_types() {
        assert!(ManifestInfo::parse_push(b"not json", None).is_err());
        assert!(ManifestInfo::parse_push(image("text/plain").as_bytes(), None).is_err());
        assert!(ManifestInfo::parse_push(br#"{"schemaVersion":1,"name":"x"}"#, None).is_err());
    }

    #[test]
    fn index_lists_children_and_subject() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{D1}","size":1}}],"subject":{{"mediaType":"x","digest":"{D2}","size":1}},"artifactType":"a/b"}}"#,
            MediaType::OCI_INDEX,
            MediaType::OCI_MANIFEST
        );
        let m = ManifestInfo::parse_push(body.as_bytes(), None).unwrap();
        assert_eq!(m.manifests.len(), 1);
        assert!(m.is_index());
        assert_eq!(m.references().count(), 1);
        assert_eq!(m.subject.unwrap().to_string(), D2);
        assert_eq!(m.artifact_type.as_deref(), Some("a/b"));
    }

    #[test]
    fn foreign_layers_are_not_required() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"c","digest":"{D1}","size":2}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"{D2}","size":3}}]}}"#,
            MediaType::DOCKER_MANIFEST
        );
        let m = ManifestInfo::parse_push(body.as_bytes(), None).unwrap();
        assert_eq!(m.blobs().count(), 1);
        assert_eq!(m.layers.len(), 1, "kept in the model, not required");
    }

    #[test]
    fn nesting_deeper_than_go_accepts_is_refused() {
        let nested = |depth: usize| {
            let body = image(MediaType::OCI_MANIFEST);
            let deep = format!("{}{}", "[".repeat(depth - 1), "]".repeat(depth - 1));
            format!("{},\"x-unknown\":{deep}}}", &body[..body.len() - 1])
        };
        // The manifest object itself is one level: the unknown field brings it to exactly the limit.
        assert!(ManifestInfo::parse_push(nested(MAX_JSON_DEPTH).as_bytes(), None).is_ok());
        let e = ManifestInfo::parse_push(nested(MAX_JSON_DEPTH + 1).as_bytes(), None).unwrap_err();
        assert_eq!(e.code, OciCode::ManifestInvalid);
        assert!(ManifestInfo::parse_stored(nested(100_000).as_bytes()).is_err(), "an upstream's too");
        // Brackets inside strings do not count.
        let quoted = format!(r#"{{"schemaVersion":2,"annotations":{{"a":"{}\"]"}}}}"#, "[".repeat(20_000));
        assert!(check_depth(quoted.as_bytes()).is_ok());
    }

    #[test]
    fn index_entries_carry_their_platforms() {
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"m","digest":"{D1}","size":7,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},{{"mediaType":"m","digest":"{D2}","size":1}}]}}"#
        );
        let m = ManifestInfo::parse_stored(body.as_bytes()).unwrap();
        let p = m.manifests[0].platform.as_ref().unwrap();
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert!("linux/arm64".parse::<Platform>().unwrap().matches(p));
        assert!(!"linux/arm64/v7".parse::<Platform>().unwrap().matches(p));
        assert!(m.manifests[1].platform.is_none());
        assert_eq!(m.manifests[0].size, 7);
        assert!("linux".parse::<Platform>().is_err());
        assert!("/amd64".parse::<Platform>().is_err());
    }

    #[test]
    fn stored_manifest_without_media_type_is_oci() {
        let body =
            format!(r#"{{"schemaVersion":2,"config":{{"mediaType":"c","digest":"{D1}","size":2}},"layers":[]}}"#);
        assert_eq!(ManifestInfo::parse_stored(body.as_bytes()).unwrap().media_type, MediaType::OCI_MANIFEST);
    }
}
