//! What the signature policy reads from upstreams and key files: signature
//! manifests, simple-signing payloads, PEM public keys, and the index's
//! encoded manifest references. Never panics; edges that decode encode back
//! to the same bytes.
#![no_main]
use berth::oci::{Digest, Edges, ManifestInfo};
use berth::trust::{cosign, keys::PublicKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(signatures) = cosign::signatures(bytes) {
        for s in signatures {
            assert!(s.payload.to_string().parse::<Digest>().is_ok());
        }
    }
    let _ = cosign::check_payload(bytes, &Digest::sha256_of(b"x"));
    if let Ok(keys) = PublicKey::parse_pem("fuzz.pem", bytes) {
        for k in keys {
            let _ = k.verify(bytes, bytes);
        }
    }
    if let Some(edges) = Edges::decode(bytes) {
        assert_eq!(Edges::decode(&edges.encode()), Some(edges.clone()));
        let _ = edges.skeleton();
    }
    if let Ok(info) = ManifestInfo::parse_stored(bytes) {
        let edges = Edges::of(&info);
        assert_eq!(Edges::decode(&edges.encode()), Some(edges));
        let _ = cosign::is_runnable(&info);
    }
});
