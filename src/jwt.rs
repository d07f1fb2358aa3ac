//! Tokens from an external issuer (registry:2's `auth.token`): JWS compact
//! tokens signed with RS256/384/512 or ES256/384, checked as Distribution 2.8
//! checks them: the issuer, the audience (the service), the expiry and
//! not-before times with 60 s of leeway, and the signature by a trusted key.
//! A key is trusted when it is a certificate's in `rootcertbundle` (found by
//! the token's `kid`, libtrust's key id, or by the `jwk` it carries), a key of
//! the `jwks` file (by `kid`), or the leaf of an `x5c` chain that verifies to
//! one of the bundle's certificates. What the token grants is its `access`
//! claim; what that allows is `registry::access`'s to decide.
//!
//! Pure: no I/O once loaded; verification is ring's, chains are webpki's.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine as _;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

/// How far past `exp` (and before `nbf`) a token is still taken (Distribution's leeway).
pub const LEEWAY_SECS: u64 = 60;

const EC_PUBLIC_KEY: spki::ObjectIdentifier = spki::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const P256: spki::ObjectIdentifier = spki::ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: spki::ObjectIdentifier = spki::ObjectIdentifier::new_unwrap("1.3.132.0.34");
const RSA: spki::ObjectIdentifier = spki::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// Why a token was refused (what the log says; the client hears `invalid_token`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("issuer {0:?} is not the trusted issuer")]
    Issuer(String),
    #[error("audience {0:?} does not name this service")]
    Audience(String),
    #[error("expired")]
    Expired,
    #[error("not valid yet")]
    NotYet,
    #[error("signed by no trusted key: {0}")]
    Signature(String),
}

/// A public key as ring takes it.
#[derive(Clone)]
enum Key {
    Ec { curve: Curve, point: Vec<u8> },
    Rsa { der: Vec<u8> },
    RsaParts { n: Vec<u8>, e: Vec<u8> },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
}

impl Key {
    /// From a DER SubjectPublicKeyInfo.
    fn from_spki(der: &[u8]) -> Result<Key, String> {
        let info = spki::SubjectPublicKeyInfoRef::try_from(der).map_err(|e| e.to_string())?;
        let (oid, params) = info.algorithm.oids().map_err(|e| e.to_string())?;
        let raw = info.subject_public_key.as_bytes().ok_or("a key that is not whole bytes")?.to_vec();
        match (oid, params) {
            (EC_PUBLIC_KEY, Some(P256)) => Ok(Key::Ec { curve: Curve::P256, point: raw }),
            (EC_PUBLIC_KEY, Some(P384)) => Ok(Key::Ec { curve: Curve::P384, point: raw }),
            (RSA, _) => Ok(Key::Rsa { der: raw }),
            (other, _) => Err(format!("unsupported key algorithm {other} (ECDSA P-256/P-384 and RSA are)")),
        }
    }

    /// Whether `sig` is this key's signature over `msg` by JWS algorithm `alg`.
    fn verify(&self, alg: &str, msg: &[u8], sig: &[u8]) -> bool {
        let rsa = match alg {
            "RS256" => Some(&signature::RSA_PKCS1_2048_8192_SHA256),
            "RS384" => Some(&signature::RSA_PKCS1_2048_8192_SHA384),
            "RS512" => Some(&signature::RSA_PKCS1_2048_8192_SHA512),
            _ => None,
        };
        match (self, alg, rsa) {
            // JWS ECDSA signatures are r || s, fixed width: ring's FIXED forms.
            (Key::Ec { curve: Curve::P256, point }, "ES256", _) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point).verify(msg, sig).is_ok()
            }
            (Key::Ec { curve: Curve::P384, point }, "ES384", _) => {
                UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point).verify(msg, sig).is_ok()
            }
            (Key::Rsa { der }, _, Some(params)) => UnparsedPublicKey::new(params, der).verify(msg, sig).is_ok(),
            (Key::RsaParts { n, e }, _, Some(params)) => {
                RsaPublicKeyComponents { n, e }.verify(params, msg, sig).is_ok()
            }
            _ => false,
        }
    }
}

/// libtrust's key id of a DER SubjectPublicKeyInfo (what registry:2 and
/// docker_auth put in `kid`): SHA-256 of it, the first 240 bits in base32,
/// in twelve groups of four joined by colons.
pub fn libtrust_key_id(spki_der: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let hash = Sha256::digest(spki_der);
    let bytes = &hash[..30];
    let mut out = String::with_capacity(59);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    let chars: Vec<char> = out.chars().collect();
    chars.chunks(4).map(|c| c.iter().collect::<String>()).collect::<Vec<_>>().join(":")
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    x5c: Option<Vec<String>>,
    #[serde(default)]
    jwk: Option<Jwk>,
}

/// A JSON Web Key (the `jwks` file's entries, a token's `jwk` header).
#[derive(Deserialize, Clone)]
struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
}

fn b64url(s: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).map_err(|e| e.to_string())
}

impl Jwk {
    fn key(&self) -> Result<Key, String> {
        let field = |v: &Option<String>, name: &str| -> Result<Vec<u8>, String> {
            b64url(v.as_deref().ok_or_else(|| format!("a {} key without {name}", self.kty))?)
        };
        match (self.kty.as_str(), self.crv.as_deref()) {
            ("EC", Some(crv @ ("P-256" | "P-384"))) => {
                let (x, y) = (field(&self.x, "x")?, field(&self.y, "y")?);
                let mut point = vec![4u8];
                point.extend(x);
                point.extend(y);
                let curve = if crv == "P-256" { Curve::P256 } else { Curve::P384 };
                Ok(Key::Ec { curve, point })
            }
            ("RSA", _) => Ok(Key::RsaParts { n: field(&self.n, "n")?, e: field(&self.e, "e")? }),
            (kty, crv) => Err(format!("unsupported JWK {kty} {crv:?}")),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    iss: String,
    #[serde(default)]
    sub: String,
    aud: Option<Audience>,
    exp: Option<u64>,
    nbf: Option<u64>,
    #[serde(default)]
    access: Vec<Grant>,
}

/// One entry of the `access` claim: `repository` (or `registry`) `name`, and its actions.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Grant {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub actions: Vec<String>,
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub subject: String,
    pub access: Vec<Grant>,
}

/// The trusted issuer, service and keys.
pub struct Verifier {
    issuer: String,
    service: String,
    /// Trusted keys by id (libtrust ids of the bundle's certificates, the jwks file's `kid`s).
    keys: HashMap<String, Key>,
    /// The bundle's certificates, as anchors for `x5c` chains.
    anchors: Vec<rustls::pki_types::TrustAnchor<'static>>,
}

impl Verifier {
    /// From `rootcertbundle` (PEM certificates) and/or `jwks` (a JSON Web Key Set file).
    pub fn load(issuer: &str, service: &str, bundle: Option<&Path>, jwks: Option<&Path>) -> Result<Verifier, String> {
        let mut v =
            Verifier { issuer: issuer.into(), service: service.into(), keys: HashMap::new(), anchors: Vec::new() };
        if let Some(path) = bundle {
            let pem = std::fs::read(path).map_err(|e| format!("rootcertbundle {}: {e}", path.display()))?;
            v.add_bundle(&pem).map_err(|e| format!("rootcertbundle {}: {e}", path.display()))?;
        }
        if let Some(path) = jwks {
            let json = std::fs::read(path).map_err(|e| format!("jwks {}: {e}", path.display()))?;
            v.add_jwks(&json).map_err(|e| format!("jwks {}: {e}", path.display()))?;
        }
        if v.keys.is_empty() {
            return Err("no trusted keys (give rootcertbundle or jwks)".into());
        }
        Ok(v)
    }

    fn add_bundle(&mut self, pem: &[u8]) -> Result<(), String> {
        for der in CertificateDer::pem_slice_iter(pem) {
            let der = der.map_err(|e| format!("not a PEM certificate: {e}"))?;
            let cert = webpki::EndEntityCert::try_from(&der).map_err(|e| format!("unreadable certificate: {e}"))?;
            let spki = cert.subject_public_key_info();
            self.keys.insert(libtrust_key_id(spki.as_ref()), Key::from_spki(spki.as_ref())?);
            let anchor = webpki::anchor_from_trusted_cert(&der).map_err(|e| format!("not a usable root: {e}"))?;
            self.anchors.push(anchor.to_owned());
        }
        if self.anchors.is_empty() {
            return Err("no certificate".into());
        }
        Ok(())
    }

    fn add_jwks(&mut self, json: &[u8]) -> Result<(), String> {
        #[derive(Deserialize)]
        struct Set {
            keys: Vec<Jwk>,
        }
        let set: Set = serde_json::from_slice(json).map_err(|e| format!("not a JSON Web Key Set: {e}"))?;
        for k in set.keys {
            let kid = k.kid.clone().ok_or("a key without kid")?;
            self.keys.insert(kid, k.key()?);
        }
        Ok(())
    }

    /// The claims of `token` at unix time `now`, if it is one this registry takes.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let malformed = |what: &str| TokenError::Malformed(what.to_string());
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(malformed("not three dot-separated parts"));
        };
        let header: Header = serde_json::from_slice(&b64url(h).map_err(|e| malformed(&e))?)
            .map_err(|e| malformed(&format!("header: {e}")))?;
        let claims: RawClaims = serde_json::from_slice(&b64url(c).map_err(|e| malformed(&e))?)
            .map_err(|e| malformed(&format!("claims: {e}")))?;
        let sig = b64url(s).map_err(|e| malformed(&e))?;
        if claims.iss != self.issuer {
            return Err(TokenError::Issuer(claims.iss));
        }
        let audiences = match &claims.aud {
            Some(Audience::One(a)) => vec![a.clone()],
            Some(Audience::Many(a)) => a.clone(),
            None => Vec::new(),
        };
        if !audiences.contains(&self.service) {
            return Err(TokenError::Audience(audiences.join(",")));
        }
        match claims.exp {
            Some(exp) if now <= exp + LEEWAY_SECS => {}
            _ => return Err(TokenError::Expired),
        }
        if claims.nbf.is_some_and(|nbf| now + LEEWAY_SECS < nbf) {
            return Err(TokenError::NotYet);
        }
        let signed = &token.as_bytes()[..h.len() + 1 + c.len()];
        let key = self.signing_key(&header, now)?;
        if !key.verify(&header.alg, signed, &sig) {
            return Err(TokenError::Signature(format!("the {} signature does not verify", header.alg)));
        }
        Ok(Claims { subject: claims.sub, access: claims.access })
    }

    /// The trusted key the header names: an `x5c` chain's leaf (verified to
    /// the bundle), a `jwk` that is one of the trusted keys, or a `kid`.
    fn signing_key(&self, header: &Header, now: u64) -> Result<Key, TokenError> {
        let refuse = |why: String| TokenError::Signature(why);
        if let Some(chain) = &header.x5c {
            let ders: Vec<CertificateDer<'static>> = chain
                .iter()
                .map(|c| base64::engine::general_purpose::STANDARD.decode(c).map(CertificateDer::from))
                .collect::<Result<_, _>>()
                .map_err(|e| refuse(format!("x5c: {e}")))?;
            let (leaf, intermediates) = ders.split_first().ok_or_else(|| refuse("x5c is empty".into()))?;
            let cert = webpki::EndEntityCert::try_from(leaf).map_err(|e| refuse(format!("x5c: {e}")))?;
            let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(now));
            let verified =
                [webpki::KeyUsage::server_auth(), webpki::KeyUsage::client_auth()].into_iter().any(|usage| {
                    cert.verify_for_usage(
                        webpki::ALL_VERIFICATION_ALGS,
                        &self.anchors,
                        intermediates,
                        time,
                        usage,
                        None,
                        None,
                    )
                    .is_ok()
                });
            if !verified {
                return Err(refuse("the x5c chain does not lead to a rootcertbundle certificate".into()));
            }
            return Key::from_spki(cert.subject_public_key_info().as_ref()).map_err(refuse);
        }
        if let Some(jwk) = &header.jwk {
            // Trusted only if it is one of the trusted keys (compared by what it is, not what it says).
            let key = jwk.key().map_err(refuse)?;
            let same = |k: &Key| match (k, &key) {
                (Key::Ec { point: a, .. }, Key::Ec { point: b, .. }) => a == b,
                (Key::RsaParts { n: a, .. }, Key::RsaParts { n: b, .. }) => a == b,
                _ => false,
            };
            return match self.keys.values().any(same) {
                true => Ok(key),
                false => Err(refuse("the jwk header is not a trusted key".into())),
            };
        }
        let kid = header.kid.as_deref().ok_or_else(|| refuse("no kid, x5c or jwk names the key".into()))?;
        self.keys.get(kid).cloned().ok_or_else(|| refuse(format!("no trusted key has id {kid}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair};

    fn b64(v: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
    }

    struct Issuer {
        pair: EcdsaKeyPair,
        kid: String,
    }

    impl Issuer {
        fn new(kid: &str) -> Issuer {
            let rng = SystemRandom::new();
            let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
            Issuer { pair: EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap(), kid: kid.into() }
        }

        fn jwks(&self) -> String {
            let p = self.pair.public_key().as_ref();
            serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": self.kid, "x": b64(&p[1..33]), "y": b64(&p[33..])}]})
                .to_string()
        }

        fn token(&self, claims: serde_json::Value) -> String {
            let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "kid": self.kid});
            let signed = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
            let sig = self.pair.sign(&SystemRandom::new(), signed.as_bytes()).unwrap();
            format!("{signed}.{}", b64(sig.as_ref()))
        }
    }

    fn verifier(issuer: &Issuer) -> Verifier {
        let mut v =
            Verifier { issuer: "auth".into(), service: "registry".into(), keys: HashMap::new(), anchors: vec![] };
        v.add_jwks(issuer.jwks().as_bytes()).unwrap();
        v
    }

    #[test]
    fn a_token_is_taken_only_from_its_issuer_for_this_service_in_its_time() {
        let issuer = Issuer::new("k1");
        let v = verifier(&issuer);
        let now = 1_800_000_000;
        let claims = |iss: &str, aud: serde_json::Value, exp: u64| {
            serde_json::json!({"iss": iss, "sub": "alice", "aud": aud, "exp": exp, "nbf": now - 10,
                "access": [{"type": "repository", "name": "team/app", "actions": ["pull", "push"]}]})
        };
        let ok = v.verify(&issuer.token(claims("auth", "registry".into(), now + 300)), now).unwrap();
        assert_eq!(ok.subject, "alice");
        assert_eq!(ok.access[0].actions, ["pull", "push"]);
        assert!(v.verify(&issuer.token(claims("auth", serde_json::json!(["x", "registry"]), now + 300)), now).is_ok());
        assert_eq!(
            v.verify(&issuer.token(claims("evil", "registry".into(), now + 300)), now),
            Err(TokenError::Issuer("evil".into()))
        );
        assert!(matches!(
            v.verify(&issuer.token(claims("auth", "other".into(), now + 300)), now),
            Err(TokenError::Audience(_))
        ));
        assert_eq!(v.verify(&issuer.token(claims("auth", "registry".into(), now - 61)), now), Err(TokenError::Expired));
        assert!(v.verify(&issuer.token(claims("auth", "registry".into(), now - 59)), now).is_ok(), "leeway");
        // Another key with the same kid, and a token altered after signing.
        let forger = Issuer::new("k1");
        assert!(matches!(
            v.verify(&forger.token(claims("auth", "registry".into(), now + 300)), now),
            Err(TokenError::Signature(_))
        ));
        let t = issuer.token(claims("auth", "registry".into(), now + 300));
        let mut parts: Vec<&str> = t.split('.').collect();
        let altered = b64(claims("auth", "registry".into(), now + 9999).to_string().as_bytes());
        parts[1] = &altered;
        assert!(matches!(v.verify(&parts.join("."), now), Err(TokenError::Signature(_))));
        assert!(matches!(v.verify("a.b", now), Err(TokenError::Malformed(_))));
    }

    #[test]
    fn libtrust_key_ids_are_twelve_groups_of_four_base32_characters() {
        let id = libtrust_key_id(b"anything");
        assert_eq!(id.len(), 59);
        assert_eq!(id.split(':').count(), 12);
        assert!(id
            .split(':')
            .all(|g| g.len() == 4 && g.bytes().all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))));
    }
}
