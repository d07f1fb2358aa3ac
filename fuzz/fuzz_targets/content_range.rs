//! An upload chunk's `Content-Range`: never panics (nor overflows), and an
//! accepted range has a length of at least one byte that fits in u64.
#![no_main]
use berth::api::headers::parse_chunk_range;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|value: &str| {
    if let Some((start, len)) = parse_chunk_range(value) {
        assert!(len >= 1);
        assert!(start.checked_add(len - 1).is_some(), "{value:?}");
    }
});
