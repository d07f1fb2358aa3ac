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

/// What the registry needs to know of a manifest it stores or serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestInfo {
    /// The media type served as `Content-Type`.
    pub media_type: String,
    /// Blobs (config, layers) that must exist in the repository.
    pub blobs: Vec<Digest>,
    /// Child manifests (of an index) that must exist in the repository.
    pub manifests: Vec<Digest>,
    /// The manifest this one refers to (referrers API).
    pub subject: Option<Digest>,
    /// `artifactType`, or else the config media type (referrers API rule).
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
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

fn descriptor_digest(d: &RawDescriptor, field: &str) -> Result<Digest, ParseError> {
    if d.size < 0 {
        return Err(invalid(format!("{field}: negative size")));
    }
    d.digest.parse().map_err(|e: ParseError| invalid(format!("{field}: {}", e.message)))
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
                blobs: vec![],
                manifests: vec![],
                subject: None,
                artifact_type: None,
                annotations: None,
            });
        }
        Self::from_raw(raw, media_type)
    }

    fn from_raw(raw: RawManifest, media_type: String) -> Result<ManifestInfo, ParseError> {
        let mut blobs = Vec::new();
        let mut manifests = Vec::new();
        match media_type.as_str() {
            MediaType::DOCKER_MANIFEST | MediaType::OCI_MANIFEST => {
                let config = raw.config.as_ref().ok_or_else(|| invalid("image manifest has no config"))?;
                blobs.push(descriptor_digest(config, "config")?);
                if raw.manifests.is_some() {
                    return Err(invalid("image manifest must not have manifests"));
                }
                for layer in raw.layers.as_deref().unwrap_or_default() {
                    let d = descriptor_digest(layer, "layers")?;
                    if !non_distributable(&layer.media_type) {
                        blobs.push(d);
                    }
                }
                if media_type == MediaType::DOCKER_MANIFEST && raw.layers.is_none() {
                    return Err(invalid("image manifest has no layers"));
                }
            }
            MediaType::DOCKER_LIST | MediaType::OCI_INDEX => {
                if raw.config.is_some() || raw.layers.is_some() {
                    return Err(invalid("an index must not have config or layers"));
                }
                let list = raw.manifests.as_ref().ok_or_else(|| invalid("index has no manifests"))?;
                for m in list {
                    manifests.push(descriptor_digest(m, "manifests")?);
                }
            }
            MediaType::OCI_ARTIFACT => {
                for b in raw.blobs.as_deref().unwrap_or_default() {
                    blobs.push(descriptor_digest(b, "blobs")?);
                }
            }
            other => return Err(invalid(format!("unsupported manifest media type {other:?}"))),
        }
        let subject = raw.subject.as_ref().map(|s| descriptor_digest(s, "subject")).transpose()?;
        let artifact_type = raw
            .artifact_type
            .clone()
            .or_else(|| raw.config.as_ref().map(|c| c.media_type.clone()).filter(|m| !m.is_empty()));
        Ok(ManifestInfo { media_type, blobs, manifests, subject, artifact_type, annotations: raw.annotations })
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
        assert_eq!(m.blobs.len(), 2);
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
        assert_eq!(m.subject.unwrap().to_string(), D2);
        assert_eq!(m.artifact_type.as_deref(), Some("a/b"));
    }

    #[test]
    fn foreign_layers_are_not_required() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"c","digest":"{D1}","size":2}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"{D2}","size":3}}]}}"#,
            MediaType::DOCKER_MANIFEST
        );
        assert_eq!(ManifestInfo::parse_push(body.as_bytes(), None).unwrap().blobs.len(), 1);
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
    fn stored_manifest_without_media_type_is_oci() {
        let body =
            format!(r#"{{"schemaVersion":2,"config":{{"mediaType":"c","digest":"{D1}","size":2}},"layers":[]}}"#);
        assert_eq!(ManifestInfo::parse_stored(body.as_bytes()).unwrap().media_type, MediaType::OCI_MANIFEST);
    }
}
