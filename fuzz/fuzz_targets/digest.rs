//! Digests: never panics; an accepted digest round-trips and its hex has the
//! algorithm's length (it names a file: nothing else may get through).
#![no_main]
use berth::oci::Digest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    if let Ok(d) = s.parse::<Digest>() {
        assert_eq!(d.to_string(), s);
        assert!(d.hex().bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{s:?}");
        assert!(matches!(d.hex().len(), 64 | 128), "{s:?}");
    }
});
