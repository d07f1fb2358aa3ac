//! cosign-format signatures made in tests (cosign is not packaged here):
//! keys and signatures from the `openssl` command line, so berth's
//! verification is checked against another implementation; signature
//! manifests as cosign writes them (`sha256-<hex>.sig` tags, or OCI 1.1
//! referrers of artifact type `application/vnd.dev.cosign.artifact.sig.v1+json`).

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::json;

use super::upstream::{FakeUpstream, OCI_MANIFEST};
use super::{Client, Digest, OCI_INDEX};

pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ARTIFACT: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";

/// A key pair in files: `key` (private), `public` (PEM SubjectPublicKeyInfo).
pub struct SigningKey {
    pub key: PathBuf,
    pub public: PathBuf,
    ed25519: bool,
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl").args(args).output().expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

impl SigningKey {
    /// `kind`: "ec" (P-256), "ed25519" or "rsa" (2048 bits); files `<name>.key`/`.pub` in `dir`.
    pub fn new(dir: &Path, name: &str, kind: &str) -> SigningKey {
        let key = dir.join(format!("{name}.key"));
        let public = dir.join(format!("{name}.pub"));
        let k = key.to_str().unwrap();
        match kind {
            "ec" => openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", k]),
            "ed25519" => openssl(&["genpkey", "-algorithm", "ed25519", "-out", k]),
            "rsa" => openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", k]),
            other => panic!("no key kind {other}"),
        };
        openssl(&["pkey", "-in", k, "-pubout", "-out", public.to_str().unwrap()]);
        SigningKey { key, public, ed25519: kind == "ed25519" }
    }

    /// The signature over `payload`, as cosign makes it (ECDSA: ASN.1 DER over SHA-256).
    pub fn sign(&self, payload: &[u8]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("payload");
        std::fs::write(&input, payload).unwrap();
        let (k, i) = (self.key.to_str().unwrap(), input.to_str().unwrap());
        match self.ed25519 {
            true => openssl(&["pkeyutl", "-sign", "-inkey", k, "-rawin", "-in", i]),
            false => openssl(&["dgst", "-sha256", "-sign", k, i]),
        }
    }
}

/// cosign's tag for the signatures of `d`: `sha256-<hex>.sig`.
pub fn signature_tag(d: &Digest) -> String {
    format!("{}.sig", d.to_string().replacen(':', "-", 1))
}

/// cosign's simple-signing payload for `digest` of `reference`.
pub fn payload(reference: &str, digest: &Digest) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "critical": {"identity": {"docker-reference": reference}, "image": {"docker-manifest-digest": digest.to_string()},
                     "type": "cosign container image signature"},
        "optional": null
    }))
    .unwrap()
}

/// A signature manifest over (payload, signature) pairs; `subject` makes it an OCI 1.1 referrer.
fn signature_manifest(signatures: &[(&[u8], &[u8])], subject: Option<(&Digest, usize)>) -> Bytes {
    let layers: Vec<_> = signatures
        .iter()
        .map(|(p, s)| {
            json!({"mediaType": SIMPLE_SIGNING, "digest": Digest::sha256_of(p).to_string(), "size": p.len(),
                   "annotations": {"dev.cosignproject.cosign/signature": base64::engine::general_purpose::STANDARD.encode(s)}})
        })
        .collect();
    let mut m = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest::sha256_of(b"{}").to_string(), "size": 2},
        "layers": layers,
    });
    if let Some((d, size)) = subject {
        m["artifactType"] = json!(SIGNATURE_ARTIFACT);
        m["subject"] = json!({"mediaType": OCI_MANIFEST, "digest": d.to_string(), "size": size});
    }
    Bytes::from(serde_json::to_vec(&m).unwrap())
}

impl FakeUpstream {
    fn put_signature_blobs(&self, repo: &str, signatures: &[(&[u8], &[u8])]) {
        let mut s = self.state();
        let blobs = signatures.iter().map(|(p, _)| Bytes::copy_from_slice(p)).chain([Bytes::from_static(b"{}")]);
        for b in blobs {
            let d = Digest::sha256_of(&b).to_string();
            s.blobs.insert(d.clone(), b);
            s.blob_repos.entry(d).or_default().insert(repo.to_string());
        }
    }

    /// cosign's `sha256-<hex>.sig` tag for `signed`, holding the given
    /// (payload, signature) pairs; the signature manifest's digest.
    pub fn add_signature_tag(&self, repo: &str, signed: &Digest, signatures: &[(&[u8], &[u8])]) -> Digest {
        self.put_signature_blobs(repo, signatures);
        let m = signature_manifest(signatures, None);
        let d = Digest::sha256_of(&m);
        let tag = signature_tag(signed);
        let mut s = self.state();
        for reference in [tag, d.to_string()] {
            s.manifests.insert((repo.to_string(), reference), (OCI_MANIFEST.to_string(), m.clone()));
        }
        d
    }

    /// A cosign OCI 1.1 signature referrer of `signed`.
    pub fn add_signature_referrer(&self, repo: &str, signed: &Digest, signatures: &[(&[u8], &[u8])]) -> Digest {
        self.put_signature_blobs(repo, signatures);
        let size = self.state().manifests.get(&(repo.to_string(), signed.to_string())).unwrap().1.len();
        let m = signature_manifest(signatures, Some((signed, size)));
        let d = Digest::sha256_of(&m);
        self.state().manifests.insert((repo.to_string(), d.to_string()), (OCI_MANIFEST.to_string(), m));
        d
    }

    /// Replaces the stored manifest bytes under `repo:reference` (a malformed signature manifest).
    pub fn put_raw_manifest(&self, repo: &str, reference: &str, body: &[u8]) {
        self.state().manifests.insert(
            (repo.to_string(), reference.to_string()),
            (OCI_MANIFEST.to_string(), Bytes::copy_from_slice(body)),
        );
    }
}

/// Pushes cosign's signature of `signed` (in `repo` of the registry at `addr`) made with `key`.
pub async fn push_signature(addr: &str, repo: &str, signed: &Digest, key: &SigningKey) {
    let c = Client::new(&format!("http://{addr}"));
    let p = payload(&format!("docker.io/{repo}"), signed);
    let payload_digest = c.push_blob_two_step(repo, &p).await;
    c.push_blob_two_step(repo, b"{}").await;
    let sig = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest::sha256_of(b"{}").to_string(), "size": 2},
        "layers": [{"mediaType": SIMPLE_SIGNING, "digest": payload_digest.to_string(), "size": p.len(),
                    "annotations": {"dev.cosignproject.cosign/signature":
                        base64::engine::general_purpose::STANDARD.encode(key.sign(&p))}}]
    }))
    .unwrap();
    let r = c.put_manifest(repo, &signature_tag(signed), OCI_MANIFEST, &sig).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
}

/// Pushes an SBOM artifact whose subject is `subject`, and (Distribution 2.8
/// has no referrers API) the referrers tag schema's index that lists it, as
/// oras and cosign do against such registries.
pub async fn push_sbom_with_tag_schema(addr: &str, repo: &str, subject: &Digest) -> Digest {
    let c = Client::new(&format!("http://{addr}"));
    let body = b"{\"spdxVersion\":\"SPDX-2.3\"}";
    let layer = c.push_blob_two_step(repo, body).await;
    let empty = c.push_blob_two_step(repo, b"{}").await;
    let subject_size = c.req("HEAD", &format!("/v2/{repo}/manifests/{subject}"), &[("Accept", OCI_INDEX)], "").await;
    let size: u64 = subject_size.header("content-length").unwrap().parse().unwrap();
    let sbom = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/spdx+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.to_string(), "size": 2},
        "layers": [{"mediaType": "application/spdx+json", "digest": layer.to_string(), "size": body.len()}],
        "subject": {"mediaType": OCI_INDEX, "digest": subject.to_string(), "size": size}
    }))
    .unwrap();
    let d = Digest::sha256_of(&sbom);
    assert_eq!(c.put_manifest(repo, &d.to_string(), OCI_MANIFEST, &sbom).await.status, 201);
    let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": d.to_string(), "size": sbom.len(), "artifactType": "application/spdx+json"}]}))
    .unwrap();
    let tag = subject.to_string().replacen(':', "-", 1);
    assert_eq!(c.put_manifest(repo, &tag, OCI_INDEX, &index).await.status, 201);
    d
}
