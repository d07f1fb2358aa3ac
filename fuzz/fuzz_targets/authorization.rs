//! What clients put in `Authorization` and what upstreams put in
//! `WWW-Authenticate`, and berth's own tokens: never panics; no forged token
//! verifies.
#![no_main]
use berth::tokens::TokenKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|value: &str| {
    let _ = berth::api::auth::parse_authorization(value);
    let _ = berth::mirror::auth::parse_challenge(value);
    let key = TokenKey::from_bytes(&[9; 32]);
    assert!(key.verify(value, |_| Some("$2y$hash".into())).is_err(), "{value:?} verified");
});
