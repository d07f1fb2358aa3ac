//! The `/v2/…` route parser: never panics, and what it accepts is well formed.
#![no_main]
use berth::api::route::Endpoint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|tail: &str| {
    if let Ok(e) = Endpoint::parse(tail) {
        if let Some(name) = e.name() {
            let n = name.as_str();
            assert!(n.len() <= 255 && !n.contains("..") && !n.starts_with('/') && !n.contains('\\'), "{n:?}");
        }
    }
});
