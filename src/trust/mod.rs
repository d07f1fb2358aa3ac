//! Signature policy, the parts without I/O: trusted keys (`keys`), cosign's
//! signature format (`cosign`), and the judgement of one manifest from the
//! signatures found for it (`judge`). Finding them, caching verdicts and
//! refusing what a rule refuses is `registry::trust`'s.

pub mod cosign;
pub mod keys;

use bytes::Bytes;

use crate::oci::Digest;

/// What the policy makes of one manifest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "verdict", rename_all = "lowercase")]
pub enum Verdict {
    /// A valid signature by `key` (the file it came from), found `via`.
    Signed { key: String, via: String },
    /// No valid signature; `reason` says what was missing or wrong.
    Unsigned { reason: String },
}

impl Verdict {
    pub fn is_signed(&self) -> bool {
        matches!(self, Verdict::Signed { .. })
    }
}

/// A signature found for a manifest: where (`via`, e.g. "tag
/// sha256-….sig"), and the signature with its payload's bytes (checked
/// against the payload's digest), or why it could not be read.
pub struct Found {
    pub via: String,
    pub signature: Result<(cosign::Signature, Bytes), String>,
}

/// Judges manifest `digest` by the signatures found for it: signed if one
/// of them is valid (by one of `keys`, over a payload that names `digest`).
/// `looked` says where signatures were looked for (for the reason when none
/// was found).
pub fn judge(digest: &Digest, found: &[Found], keys: &keys::Keys, looked: &str) -> Verdict {
    let mut problems = Vec::new();
    for f in found {
        let (sig, payload) = match &f.signature {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!("{}: {e}", f.via));
                continue;
            }
        };
        if let Err(e) = cosign::check_payload(payload, digest) {
            problems.push(format!("{}: {e}", f.via));
            continue;
        }
        match keys.keys.iter().find(|k| k.verify(payload, &sig.signature)) {
            Some(k) => return Verdict::Signed { key: k.source.clone(), via: f.via.clone() },
            None => problems.push(format!("{}: not signed by any trusted key", f.via)),
        }
    }
    let reason = match problems.is_empty() {
        true => format!("no signature found ({looked})"),
        false => problems.join("; "),
    };
    Verdict::Unsigned { reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    const PAYLOAD: &[u8] = include_bytes!("testdata/payload.json");

    fn keys(names: &[&str]) -> keys::Keys {
        let dir = format!("{}/src/trust/testdata", env!("CARGO_MANIFEST_DIR"));
        let mut all = Vec::new();
        for n in names {
            all.extend(
                keys::PublicKey::parse_pem(&format!("{n}.pub"), &std::fs::read(format!("{dir}/{n}.pub")).unwrap())
                    .unwrap(),
            );
        }
        keys::Keys { keys: all, fingerprint: [0; 32] }
    }

    fn found(via: &str, sig_of: &str, payload: &[u8]) -> Found {
        let b64 =
            std::fs::read_to_string(format!("{}/src/trust/testdata/{sig_of}.sig.b64", env!("CARGO_MANIFEST_DIR")))
                .unwrap();
        let signature = base64::engine::general_purpose::STANDARD.decode(b64.trim()).unwrap();
        let sig =
            cosign::Signature { payload: Digest::sha256_of(payload), payload_size: payload.len() as u64, signature };
        Found { via: via.into(), signature: Ok((sig, Bytes::copy_from_slice(payload))) }
    }

    #[test]
    fn one_valid_signature_is_enough_and_every_failure_is_named() {
        let signed: Digest = "sha256:4aa3054270f7a70b4528f2064ee90961788e1e1518703592ae4463de3b889dec".parse().unwrap();
        let good = found("tag x.sig", "ed", PAYLOAD);
        let other_key = found("referrer r1", "ec", PAYLOAD);
        let broken = Found { via: "referrer r2".into(), signature: Err("no simple-signing layer".into()) };
        let v = judge(&signed, &[broken, other_key, good], &keys(&["ed", "rsa"]), "looked");
        assert_eq!(v, Verdict::Signed { key: "ed.pub".into(), via: "tag x.sig".into() });

        let v = judge(&signed, &[found("referrer r1", "ec", PAYLOAD)], &keys(&["ed"]), "looked");
        assert_eq!(v, Verdict::Unsigned { reason: "referrer r1: not signed by any trusted key".into() });
        // The right key, but the payload names another manifest.
        let v = judge(&Digest::sha256_of(b"other"), &[found("tag y.sig", "ed", PAYLOAD)], &keys(&["ed"]), "looked");
        assert!(
            matches!(&v, Verdict::Unsigned { reason } if reason.contains("the payload signs sha256:4aa3")),
            "{v:?}"
        );
        // A signature over another payload.
        let mut altered = PAYLOAD.to_vec();
        altered.push(b' ');
        let v = judge(&signed, &[found("tag z.sig", "ed", &altered)], &keys(&["ed"]), "looked");
        assert!(
            matches!(&v, Verdict::Unsigned { reason } if reason.contains("not signed by any trusted key")),
            "{v:?}"
        );
        let v = judge(&signed, &[], &keys(&["ed"]), "tag t.sig, referrers");
        assert_eq!(v, Verdict::Unsigned { reason: "no signature found (tag t.sig, referrers)".into() });
    }
}
