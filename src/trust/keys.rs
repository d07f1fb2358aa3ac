//! Trusted public keys: PEM files of SubjectPublicKeyInfo ("PUBLIC KEY", as
//! `cosign public-key` and `openssl pkey -pubout` write them), ECDSA P-256
//! or P-384, Ed25519 or RSA. Verification is ring's; parsing the key's
//! algorithm is the `spki` crate's. Keys only: no certificates, no
//! transparency log, nothing fetched.
//!
//! A `KeyRing` re-reads its files every `RECHECK` and takes them when their
//! bytes changed, and names what it holds by a fingerprint of their bytes, so a
//! verdict cached for one set of keys is never taken for another.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::SubjectPublicKeyInfoDer;
use sha2::{Digest as _, Sha256};
use spki::ObjectIdentifier;

/// How often a ring looks at its files' modification times.
pub const RECHECK: Duration = Duration::from_secs(2);

const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// One trusted key.
pub struct PublicKey {
    /// The file it came from (what a verdict names).
    pub source: String,
    /// Signature schemes tried in turn (cosign hashes with SHA-256 whatever
    /// the curve; OpenSSL users of P-384 sign with SHA-384).
    algorithms: Vec<&'static dyn VerificationAlgorithm>,
    /// The key as ring takes it (the SubjectPublicKeyInfo's bit string).
    raw: Vec<u8>,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey").field("source", &self.source).finish()
    }
}

impl PublicKey {
    /// Every public key of a PEM file (`source` names it); an error names
    /// what is wrong with it.
    pub fn parse_pem(source: &str, pem: &[u8]) -> Result<Vec<PublicKey>, String> {
        let mut keys = Vec::new();
        for der in SubjectPublicKeyInfoDer::pem_slice_iter(pem) {
            let der = der.map_err(|e| format!("{source}: not a PEM public key: {e}"))?;
            keys.push(Self::from_spki(source, der.as_ref())?);
        }
        if keys.is_empty() {
            return Err(format!("{source}: no \"PUBLIC KEY\" PEM block"));
        }
        Ok(keys)
    }

    fn from_spki(source: &str, der: &[u8]) -> Result<PublicKey, String> {
        let info = spki::SubjectPublicKeyInfoRef::try_from(der)
            .map_err(|e| format!("{source}: not a SubjectPublicKeyInfo: {e}"))?;
        let (oid, parameters) =
            info.algorithm.oids().map_err(|e| format!("{source}: unreadable key algorithm: {e}"))?;
        let algorithms: Vec<&'static dyn VerificationAlgorithm> = match (oid, parameters) {
            (EC_PUBLIC_KEY, Some(P256)) => vec![&signature::ECDSA_P256_SHA256_ASN1],
            (EC_PUBLIC_KEY, Some(P384)) => {
                vec![&signature::ECDSA_P384_SHA256_ASN1, &signature::ECDSA_P384_SHA384_ASN1]
            }
            (ED25519, _) => vec![&signature::ED25519],
            (RSA, _) => vec![&signature::RSA_PKCS1_2048_8192_SHA256, &signature::RSA_PSS_2048_8192_SHA256],
            (EC_PUBLIC_KEY, curve) => {
                return Err(format!("{source}: unsupported elliptic curve {curve:?} (P-256 and P-384 are)"))
            }
            (other, _) => {
                return Err(format!("{source}: unsupported key algorithm {other} (ECDSA, Ed25519 and RSA are)"))
            }
        };
        let raw = info
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| format!("{source}: the key's bit string is not whole bytes"))?
            .to_vec();
        Ok(PublicKey { source: source.to_string(), algorithms, raw })
    }

    /// Whether `signature` is this key's over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.algorithms.iter().any(|alg| UnparsedPublicKey::new(*alg, &self.raw).verify(message, signature).is_ok())
    }
}

/// The keys of a set of files, as last read.
#[derive(Debug)]
pub struct Keys {
    pub keys: Vec<PublicKey>,
    /// sha256 over the files' bytes, in order: what verdicts are cached under.
    pub fingerprint: [u8; 32],
}

impl Keys {
    fn read(paths: &[PathBuf]) -> Result<Keys, String> {
        let mut keys = Vec::new();
        let mut hash = Sha256::new();
        for path in paths {
            let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            hash.update(&bytes);
            keys.extend(PublicKey::parse_pem(&path.display().to_string(), &bytes)?);
        }
        Ok(Keys { keys, fingerprint: hash.finalize().into() })
    }
}

struct Loaded {
    keys: Arc<Keys>,
    checked: Instant,
}

/// Key files, re-read when they change.
pub struct KeyRing {
    paths: Vec<PathBuf>,
    loaded: Mutex<Loaded>,
}

impl KeyRing {
    /// Reads the files now: a missing or unreadable key is an error at load.
    pub fn load(paths: Vec<PathBuf>) -> Result<KeyRing, String> {
        if paths.is_empty() {
            return Err("no key files".into());
        }
        let keys = Arc::new(Keys::read(&paths)?);
        Ok(KeyRing { paths, loaded: Mutex::new(Loaded { keys, checked: Instant::now() }) })
    }

    /// A ring of no keys (a rule that asks for nothing).
    pub fn empty() -> KeyRing {
        let keys = Arc::new(Keys { keys: vec![], fingerprint: [0; 32] });
        KeyRing { paths: vec![], loaded: Mutex::new(Loaded { keys, checked: Instant::now() }) }
    }

    /// The keys as they are now: every `RECHECK` the files are read again
    /// (by content, not modification time: a file rewritten within the same
    /// clock tick still counts) outside the lock. A set that no longer reads
    /// leaves the last good keys in place (the error is logged), so a
    /// half-written key file never opens or closes the gate by itself.
    pub fn current(&self) -> Arc<Keys> {
        let current = {
            let mut loaded = self.loaded.lock().unwrap();
            if self.paths.is_empty() || loaded.checked.elapsed() < RECHECK {
                return loaded.keys.clone();
            }
            // This caller reads; the others go on with the keys they have.
            loaded.checked = Instant::now();
            loaded.keys.clone()
        };
        match Keys::read(&self.paths) {
            Ok(keys) if keys.fingerprint != current.fingerprint => {
                tracing::info!(files = ?self.paths, "signature keys changed; verdicts are judged again");
                let keys = Arc::new(keys);
                self.loaded.lock().unwrap().keys = keys.clone();
                keys
            }
            Ok(_) => current,
            Err(e) => {
                tracing::error!(error = %e, "a key file does not read; keeping the keys read before");
                current
            }
        }
    }

    /// Reads the files again at the next `current` (tests, and a reload).
    pub fn recheck_now(&self) {
        self.loaded.lock().unwrap().checked = Instant::now() - RECHECK;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    const PAYLOAD: &[u8] = include_bytes!("testdata/payload.json");

    fn key(name: &str) -> PublicKey {
        let pem = std::fs::read(format!("{}/src/trust/testdata/{name}.pub", env!("CARGO_MANIFEST_DIR"))).unwrap();
        PublicKey::parse_pem(name, &pem).unwrap().remove(0)
    }

    fn sig(name: &str) -> Vec<u8> {
        let b64 = std::fs::read_to_string(format!("{}/src/trust/testdata/{name}.sig.b64", env!("CARGO_MANIFEST_DIR")))
            .unwrap();
        base64::engine::general_purpose::STANDARD.decode(b64.trim()).unwrap()
    }

    #[test]
    fn openssl_signatures_verify_with_their_own_key_only() {
        for name in ["ec", "ed", "rsa"] {
            assert!(key(name).verify(PAYLOAD, &sig(name)), "{name}");
            let mut other = PAYLOAD.to_vec();
            other[10] ^= 1;
            assert!(!key(name).verify(&other, &sig(name)), "{name}: another payload");
            for wrong in ["ec", "ed", "rsa"].into_iter().filter(|w| *w != name) {
                assert!(!key(wrong).verify(PAYLOAD, &sig(name)), "{name}'s signature under {wrong}");
            }
        }
    }

    #[test]
    fn what_is_not_a_usable_key_is_named() {
        assert!(PublicKey::parse_pem("x.pem", b"hello").unwrap_err().contains("no \"PUBLIC KEY\""));
        let private = b"-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----\n";
        assert!(PublicKey::parse_pem("x.pem", private).unwrap_err().contains("not a SubjectPublicKeyInfo"));
        // A P-521 key (secp521r1): a curve cosign does not use.
        let p521 = "-----BEGIN PUBLIC KEY-----\nMIGbMBAGByqGSM49AgEGBSuBBAAjA4GGAAQBp5dMUwjfOG0QA8yKUa+j4rBg412S\nFYfrP2Km74cwIU+YZPcl8FwfukCp98bP7uWYsFWOy8QEQpi1aYDto0cOUm0BscFJ\nWa5bEcP6jYSrWwksi3jedKVRwCxHFi81sEblfUqXADajDp0FwyspBahfDuTALPft\n0ngTIvLLzK/gQIRsFg0=\n-----END PUBLIC KEY-----\n";
        assert!(PublicKey::parse_pem("p521.pem", p521.as_bytes()).unwrap_err().contains("unsupported elliptic curve"));
    }

    #[test]
    fn a_ring_reads_changed_files_and_keeps_good_keys_over_a_broken_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pub");
        let pem =
            |n: &str| std::fs::read(format!("{}/src/trust/testdata/{n}.pub", env!("CARGO_MANIFEST_DIR"))).unwrap();
        std::fs::write(&path, pem("ec")).unwrap();
        let ring = KeyRing::load(vec![path.clone()]).unwrap();
        let first = ring.current();
        assert!(first.keys[0].verify(PAYLOAD, &sig("ec")));
        std::fs::write(&path, pem("ed")).unwrap();
        ring.recheck_now();
        let second = ring.current();
        assert_ne!(first.fingerprint, second.fingerprint);
        assert!(second.keys[0].verify(PAYLOAD, &sig("ed")));
        std::fs::write(&path, b"half written").unwrap();
        ring.recheck_now();
        assert_eq!(ring.current().fingerprint, second.fingerprint, "the last good keys stay");
        assert!(KeyRing::load(vec![dir.path().join("missing.pub")]).is_err());
    }
}
