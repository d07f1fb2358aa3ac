//! cosign's signature format (also containers/image's "sigstore" one), read
//! without I/O: where signatures of a manifest are found, what a signature
//! manifest carries, and what its payload must say.
//!
//! A signature of manifest `D` is an OCI image manifest, tagged
//! `sha256-<hex of D>.sig` in the same repository or (OCI 1.1, `cosign
//! --registry-referrers-mode=oci-1-1`) a referrer of `D` of artifact type
//! `application/vnd.dev.cosign.artifact.sig.v1+json`. Each of its layers of
//! type `application/vnd.dev.cosign.simplesigning.v1+json` is a payload
//! (JSON: `critical.image.docker-manifest-digest` names the manifest signed,
//! `critical.type` is "cosign container image signature"), signed by the
//! base64 signature in the layer's `dev.cosignproject.cosign/signature`
//! annotation.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::oci::{Digest, ManifestInfo, Tag};

pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The artifact type of cosign's OCI 1.1 signature referrers.
pub const SIGNATURE_ARTIFACT: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
const PAYLOAD_TYPE: &str = "cosign container image signature";
/// Most signature layers read from one signature manifest.
const MAX_SIGNATURES: usize = 64;

/// The tag cosign stores the signatures of `d` under.
pub fn signature_tag(d: &Digest) -> Tag {
    format!("{}.sig", d.to_string().replacen(':', "-", 1)).parse().expect("a digest makes a valid tag")
}

/// The manifest a `sha256-<hex>.sig` tag holds signatures of.
pub fn signed_by_tag(tag: &Tag) -> Option<Digest> {
    let hex = tag.as_str().strip_prefix("sha256-")?.strip_suffix(".sig")?;
    format!("sha256:{hex}").parse().ok()
}

/// One signature: its payload blob and the signature over it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub payload: Digest,
    pub payload_size: u64,
    pub signature: Vec<u8>,
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(default)]
    layers: Vec<Layer>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Layer {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// The signatures a signature manifest carries; an error says how it is
/// malformed (no simple-signing layer, a layer without a signature, a
/// signature that is not base64).
pub fn signatures(manifest: &[u8]) -> Result<Vec<Signature>, String> {
    use base64::Engine as _;
    let parsed: Manifest = serde_json::from_slice(manifest).map_err(|e| format!("not a signature manifest: {e}"))?;
    let mut out = Vec::new();
    for layer in parsed.layers.iter().filter(|l| l.media_type == SIMPLE_SIGNING).take(MAX_SIGNATURES) {
        let payload: Digest =
            layer.digest.parse().map_err(|_| format!("a payload layer's digest {:?} is not a digest", layer.digest))?;
        let b64 = layer
            .annotations
            .get(SIGNATURE_ANNOTATION)
            .ok_or_else(|| format!("payload {payload} has no {SIGNATURE_ANNOTATION} annotation"))?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| format!("the signature of payload {payload} is not base64: {e}"))?;
        out.push(Signature { payload, payload_size: layer.size, signature });
    }
    if out.is_empty() {
        return Err(format!("no {SIMPLE_SIGNING} layer"));
    }
    Ok(out)
}

#[derive(Deserialize)]
struct Payload {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    image: Image,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    digest: String,
}

/// Whether a (verified) payload says it signs `expected`; if not, why.
pub fn check_payload(payload: &[u8], expected: &Digest) -> Result<(), String> {
    let parsed: Payload = serde_json::from_slice(payload).map_err(|e| format!("not a simple-signing payload: {e}"))?;
    if parsed.critical.kind != PAYLOAD_TYPE {
        return Err(format!("payload type {:?}, not {PAYLOAD_TYPE:?}", parsed.critical.kind));
    }
    if parsed.critical.image.digest != expected.to_string() {
        return Err(format!("the payload signs {}, not {expected}", parsed.critical.image.digest));
    }
    Ok(())
}

/// Whether a manifest is an image a runtime could run: an index (its
/// platforms are), or an image with a file-system layer. Signatures, SBOMs
/// and attestations are not, and are served without a signature of their
/// own (a client that verifies for itself needs them).
pub fn is_runnable(info: &ManifestInfo) -> bool {
    info.is_index()
        || info.layers.iter().any(|l| {
            l.media_type.starts_with("application/vnd.oci.image.layer.")
                || l.media_type.starts_with("application/vnd.docker.image.rootfs.")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAYLOAD: &[u8] = include_bytes!("testdata/payload.json");

    fn sig_manifest(layers: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest::sha256_of(b"{}").to_string(), "size": 2},
            "layers": layers,
        }))
        .unwrap()
    }

    #[test]
    fn cosigns_payload_names_its_digest() {
        let signed: Digest = "sha256:4aa3054270f7a70b4528f2064ee90961788e1e1518703592ae4463de3b889dec".parse().unwrap();
        assert_eq!(check_payload(PAYLOAD, &signed), Ok(()));
        let other = Digest::sha256_of(b"other");
        assert!(check_payload(PAYLOAD, &other).unwrap_err().contains("signs sha256:4aa3"));
        let wrong_type = br#"{"critical":{"identity":{},"image":{"docker-manifest-digest":"x"},"type":"attestation"}}"#;
        assert!(check_payload(wrong_type, &signed).unwrap_err().contains("payload type"));
        assert!(check_payload(b"[]", &signed).is_err());
    }

    #[test]
    fn signature_manifests_give_their_payloads_and_signatures() {
        let payload = Digest::sha256_of(PAYLOAD);
        let layer = |annotations: serde_json::Value| serde_json::json!([{"mediaType": SIMPLE_SIGNING, "digest": payload.to_string(), "size": PAYLOAD.len(), "annotations": annotations}]);
        let got = signatures(&sig_manifest(layer(serde_json::json!({SIGNATURE_ANNOTATION: "AQID"})))).unwrap();
        assert_eq!(
            got,
            vec![Signature { payload: payload.clone(), payload_size: PAYLOAD.len() as u64, signature: vec![1, 2, 3] }]
        );
        assert!(signatures(&sig_manifest(layer(serde_json::json!({})))).unwrap_err().contains("annotation"));
        assert!(signatures(&sig_manifest(layer(serde_json::json!({SIGNATURE_ANNOTATION: "!!"}))))
            .unwrap_err()
            .contains("base64"));
        assert!(signatures(&sig_manifest(serde_json::json!([])))
            .unwrap_err()
            .contains("no application/vnd.dev.cosign"));
        assert!(signatures(b"{").is_err());
        assert_eq!(signature_tag(&payload).as_str(), format!("sha256-{}.sig", payload.hex()));
        assert_eq!(signed_by_tag(&signature_tag(&payload)), Some(payload));
        assert_eq!(signed_by_tag(&"latest".parse().unwrap()), None);
    }

    #[test]
    fn images_run_signatures_do_not() {
        let image = ManifestInfo::parse_stored(&sig_manifest(serde_json::json!([
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": Digest::sha256_of(b"l").to_string(), "size": 1}
        ])))
        .unwrap();
        assert!(is_runnable(&image));
        let signature = ManifestInfo::parse_stored(&sig_manifest(serde_json::json!([
            {"mediaType": SIMPLE_SIGNING, "digest": Digest::sha256_of(b"p").to_string(), "size": 1}
        ])))
        .unwrap();
        assert!(!is_runnable(&signature));
    }
}
