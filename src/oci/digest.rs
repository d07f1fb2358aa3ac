//! Content digests (`sha256:<hex>`, `sha512:<hex>`) and incremental hashing.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

use super::{OciCode, ParseError};

/// A digest algorithm berth can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    pub fn hasher(self) -> DigestHasher {
        match self {
            Algorithm::Sha256 => DigestHasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => DigestHasher::Sha512(sha2::Sha512::new()),
        }
    }
}

/// A validated digest: known algorithm and lowercase hex of the right length.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The sha256 digest of `bytes` (manifests, small test content).
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        Self::of(Algorithm::Sha256, bytes)
    }

    pub fn of(algorithm: Algorithm, bytes: &[u8]) -> Digest {
        let mut h = algorithm.hasher();
        h.update(bytes);
        h.finish()
    }

    /// Checks `bytes` against this digest (with its own algorithm); on a
    /// mismatch, the digest they really have.
    pub fn check(&self, bytes: &[u8]) -> Result<(), Digest> {
        let actual = Self::of(self.algorithm(), bytes);
        if &actual == self {
            Ok(())
        } else {
            Err(actual)
        }
    }

    /// Builds a digest from an algorithm directory name and a hex directory
    /// name as found on disk; `None` when either is not valid.
    pub fn from_parts(algorithm: &str, hex: &str) -> Option<Digest> {
        format!("{algorithm}:{hex}").parse().ok()
    }
}

/// A set of digests, compact: a sha256 digest is its 32 bytes (not a
/// 64-character string on the heap), others as they are. What a GC marks
/// over a store of millions of blobs.
#[derive(Debug, Default)]
pub struct DigestSet {
    sha256: std::collections::HashSet<[u8; 32]>,
    other: std::collections::HashSet<Digest>,
}

impl DigestSet {
    fn key(d: &Digest) -> Option<[u8; 32]> {
        let mut key = [0u8; 32];
        match d.algorithm {
            Algorithm::Sha256 => hex::decode_to_slice(&d.hex, &mut key).ok().map(|()| key),
            Algorithm::Sha512 => None,
        }
    }

    /// Adds `d`; whether it was new.
    pub fn insert(&mut self, d: &Digest) -> bool {
        match Self::key(d) {
            Some(k) => self.sha256.insert(k),
            None => self.other.insert(d.clone()),
        }
    }

    pub fn contains(&self, d: &Digest) -> bool {
        match Self::key(d) {
            Some(k) => self.sha256.contains(&k),
            None => self.other.contains(d),
        }
    }

    pub fn len(&self) -> usize {
        self.sha256.len() + self.other.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl FromStr for Digest {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |why: &str| ParseError::new(OciCode::DigestInvalid, format!("invalid digest {s:?}: {why}"));
        let (alg, hex) = s.split_once(':').ok_or_else(|| invalid("expected <algorithm>:<hex>"))?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            // distribution-spec: algorithm := component ([+._-] component)*
            other
                if !other.is_empty()
                    && other
                        .split(['+', '.', '_', '-'])
                        .all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())) =>
            {
                return Err(invalid("unsupported digest algorithm (sha256 and sha512 are supported)"))
            }
            _ => return Err(invalid("malformed algorithm")),
        };
        if hex.len() != algorithm.hex_len() || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(invalid(&format!(
                "{} digests are {} lowercase hex characters",
                algorithm.as_str(),
                algorithm.hex_len()
            )));
        }
        Ok(Digest { algorithm, hex: hex.to_string() })
    }
}

/// Incremental hash for one algorithm; fed as bytes stream past.
#[derive(Clone)]
pub enum DigestHasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl DigestHasher {
    pub fn algorithm(&self) -> Algorithm {
        match self {
            DigestHasher::Sha256(_) => Algorithm::Sha256,
            DigestHasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            DigestHasher::Sha256(h) => h.update(bytes),
            DigestHasher::Sha512(h) => h.update(bytes),
        }
    }

    /// The running state, to go on with later (`resume`), in another
    /// process or on another replica: an upload's chunks are hashed once
    /// each, wherever they land.
    pub fn save(&self) -> Vec<u8> {
        use sha2::digest::common::hazmat::SerializableState;
        match self {
            DigestHasher::Sha256(h) => h.serialize().to_vec(),
            DigestHasher::Sha512(h) => h.serialize().to_vec(),
        }
    }

    /// A hasher in the state `save` returned; `None` if `state` is not one.
    pub fn resume(algorithm: Algorithm, state: &[u8]) -> Option<DigestHasher> {
        use sha2::digest::common::hazmat::SerializableState;
        Some(match algorithm {
            Algorithm::Sha256 => DigestHasher::Sha256(sha2::Sha256::deserialize(state.try_into().ok()?).ok()?),
            Algorithm::Sha512 => DigestHasher::Sha512(sha2::Sha512::deserialize(state.try_into().ok()?).ok()?),
        })
    }

    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            DigestHasher::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            DigestHasher::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest { algorithm, hex }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_set_holds_each_digest_once_whatever_its_algorithm() {
        let mut set = DigestSet::default();
        let a = Digest::sha256_of(b"a");
        let b = Digest::of(Algorithm::Sha512, b"a");
        assert!(set.insert(&a) && set.insert(&b));
        assert!(!set.insert(&a.to_string().parse().unwrap()));
        assert!(set.contains(&a) && set.contains(&b) && !set.contains(&Digest::sha256_of(b"b")));
        assert_eq!(set.len(), 2);
    }

    const EMPTY256: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_prints_sha256() {
        let d: Digest = EMPTY256.parse().unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.to_string(), EMPTY256);
        assert_eq!(Digest::sha256_of(b""), d);
    }

    #[test]
    fn a_saved_hasher_resumes_where_it_stopped() {
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let mut h = alg.hasher();
            h.update(&[7u8; 1000]);
            let mut resumed = DigestHasher::resume(alg, &h.save()).unwrap();
            resumed.update(b"tail");
            let mut whole = [7u8; 1000].to_vec();
            whole.extend_from_slice(b"tail");
            assert_eq!(resumed.finish(), Digest::of(alg, &whole));
        }
        assert!(DigestHasher::resume(Algorithm::Sha256, b"not a state").is_none());
        let sha512_state = Algorithm::Sha512.hasher().save();
        assert!(DigestHasher::resume(Algorithm::Sha256, &sha512_state).is_none());
    }

    #[test]
    fn sha512_of_empty() {
        let d = Digest::of(Algorithm::Sha512, b"");
        assert!(d.to_string().starts_with("sha512:cf83e1357eefb8bd"));
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
    }

    #[test]
    fn check_names_the_real_digest_on_a_mismatch() {
        let d = Digest::of(Algorithm::Sha512, b"abc");
        assert_eq!(d.check(b"abc"), Ok(()));
        assert_eq!(d.check(b"abd"), Err(Digest::of(Algorithm::Sha512, b"abd")));
    }

    #[test]
    fn rejects_bad_digests() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            "sha256:abc",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:../../etc/passwd",
        ] {
            let err = bad.parse::<Digest>().unwrap_err();
            assert_eq!(err.code, OciCode::DigestInvalid, "{bad}");
        }
        assert!("md5:abc".parse::<Digest>().unwrap_err().message.contains("unsupported"));
    }

    #[test]
    fn incremental_equals_one_shot() {
        let mut h = Algorithm::Sha256.hasher();
        h.update(b"hello ");
        h.update(b"world");
        assert_eq!(h.finish(), Digest::sha256_of(b"hello world"));
    }
}
