//! What a manifest references, in the compact form berth's index keeps it:
//! its blobs (config, layers but foreign ones, artifact blobs) and its child
//! manifests, each a digest and a size. A pure function of the manifest's
//! bytes, so a stored copy can never go stale: GC marks from it instead of
//! reading and parsing every manifest of the store.
//!
//! Encoding, per entry: a kind byte, the size (8 bytes, little endian), then
//! the digest: 32 raw bytes for sha256 (kinds 0 blob, 1 manifest), or a
//! length byte and the digest's text for any other algorithm (kinds 2, 3).

use super::manifest::{Descriptor, ManifestInfo};
use super::{Algorithm, Digest};

const BLOB: u8 = 0;
const MANIFEST: u8 = 1;
const TEXT: u8 = 2;

/// A manifest's references, as the walk needs them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Edges {
    pub blobs: Vec<(Digest, u64)>,
    pub manifests: Vec<(Digest, u64)>,
}

impl Edges {
    pub fn of(info: &ManifestInfo) -> Edges {
        let pair = |d: &Descriptor| (d.digest.clone(), d.size);
        Edges { blobs: info.blobs().map(pair).collect(), manifests: info.children().map(pair).collect() }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity((self.blobs.len() + self.manifests.len()) * 41);
        let entries = self.blobs.iter().map(|e| (BLOB, e)).chain(self.manifests.iter().map(|e| (MANIFEST, e)));
        for (kind, (d, size)) in entries {
            let mut raw = [0u8; 32];
            let compact = d.algorithm() == Algorithm::Sha256 && hex::decode_to_slice(d.hex(), &mut raw).is_ok();
            out.push(if compact { kind } else { kind | TEXT });
            out.extend_from_slice(&size.to_le_bytes());
            if compact {
                out.extend_from_slice(&raw);
            } else {
                let text = d.to_string();
                out.push(text.len() as u8);
                out.extend_from_slice(text.as_bytes());
            }
        }
        out
    }

    /// `None` for bytes `encode` did not write (the caller reads the manifest).
    pub fn decode(mut bytes: &[u8]) -> Option<Edges> {
        let mut out = Edges::default();
        while let Some((&kind, rest)) = bytes.split_first() {
            let size = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
            let rest = &rest[8..];
            let (digest, rest) = if kind & TEXT == 0 {
                let raw = rest.get(..32)?;
                (format!("sha256:{}", hex::encode(raw)).parse::<Digest>().ok()?, &rest[32..])
            } else {
                let (&len, rest) = rest.split_first()?;
                let text = std::str::from_utf8(rest.get(..len as usize)?).ok()?;
                (text.parse::<Digest>().ok()?, &rest[len as usize..])
            };
            match kind & !TEXT {
                BLOB => out.blobs.push((digest, size)),
                MANIFEST => out.manifests.push((digest, size)),
                _ => return None,
            }
            bytes = rest;
        }
        Some(out)
    }

    /// A manifest with only these references, for the walk (`oci::reach`).
    pub fn skeleton(&self) -> ManifestInfo {
        let descriptor = |(d, size): &(Digest, u64)| Descriptor {
            media_type: String::new(),
            digest: d.clone(),
            size: *size,
            platform: None,
            urls: vec![],
        };
        ManifestInfo {
            media_type: String::new(),
            config: None,
            layers: self.blobs.iter().map(descriptor).collect(),
            manifests: self.manifests.iter().map(descriptor).collect(),
            artifact_blobs: vec![],
            subject: None,
            artifact_type: None,
            annotations: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_and_an_image_round_trip_and_walk_the_same() {
        let sha512: Digest = format!("sha512:{}", "ab".repeat(64)).parse().unwrap();
        let body = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"c","digest":"{}","size":2}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{sha512}","size":30}},
                      {{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar","digest":"{}","size":9,"urls":["http://x"]}}]}}"#,
            Digest::sha256_of(b"config"),
            Digest::sha256_of(b"foreign"),
        );
        let image = ManifestInfo::parse_stored(body.as_bytes()).unwrap();
        let edges = Edges::of(&image);
        assert_eq!(edges.blobs, vec![(Digest::sha256_of(b"config"), 2), (sha512, 30)], "foreign layers are not edges");
        let decoded = Edges::decode(&edges.encode()).unwrap();
        assert_eq!(decoded, edges);
        let walked: Vec<_> = decoded.skeleton().blobs().map(|b| (b.digest.clone(), b.size)).collect();
        assert_eq!(walked, edges.blobs);

        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"m","digest":"{}","size":7}}]}}"#,
            Digest::sha256_of(b"child")
        );
        let edges = Edges::of(&ManifestInfo::parse_stored(index.as_bytes()).unwrap());
        let decoded = Edges::decode(&edges.encode()).unwrap();
        assert_eq!(decoded.manifests, vec![(Digest::sha256_of(b"child"), 7)]);
        assert_eq!(decoded.skeleton().children().count(), 1);
        assert_eq!(Edges::decode(&[]), Some(Edges::default()), "a manifest with no references");
    }

    #[test]
    fn bytes_it_did_not_write_are_refused() {
        let edges = Edges { blobs: vec![(Digest::sha256_of(b"a"), 1)], manifests: vec![] };
        let bytes = edges.encode();
        assert_eq!(Edges::decode(&bytes[..bytes.len() - 1]), None, "truncated");
        let mut odd = bytes.clone();
        odd[0] = 9;
        assert_eq!(Edges::decode(&odd), None, "an unknown kind");
    }
}
