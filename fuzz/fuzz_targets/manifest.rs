//! Manifest parsing, as pushed (with any Content-Type) and as stored: never
//! panics, however deep or odd the JSON, and never names a bad digest.
#![no_main]
use berth::oci::ManifestInfo;
use libfuzzer_sys::fuzz_target;

const TYPES: [Option<&str>; 5] = [
    None,
    Some("application/vnd.oci.image.manifest.v1+json"),
    Some("application/vnd.oci.image.index.v1+json"),
    Some("application/vnd.docker.distribution.manifest.v2+json"),
    Some("application/json"),
];

fuzz_target!(|input: (u8, &[u8])| {
    let (t, bytes) = input;
    if let Ok(m) = ManifestInfo::parse_push(bytes, TYPES[t as usize % TYPES.len()]) {
        for d in m.references().chain(&m.subject) {
            assert!(d.to_string().parse::<berth::oci::Digest>().is_ok());
        }
        for platform in m.manifests.iter().filter_map(|e| e.platform.as_ref()) {
            let _ = platform.to_string();
        }
    }
    let _ = ManifestInfo::parse_stored(bytes);
});
