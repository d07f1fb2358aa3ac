//! Tags and references (tag or digest): never panics; accepted ones round-trip.
#![no_main]
use berth::oci::{Reference, Tag};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    if let Ok(t) = s.parse::<Tag>() {
        assert_eq!(t.to_string(), s);
        assert!(s.len() <= 128 && !s.contains(['/', '\0', '\\']) && !s.starts_with(['.', '-']), "{s:?}");
    }
    if let Ok(r) = s.parse::<Reference>() {
        assert_eq!(r.to_string(), s);
    }
});
