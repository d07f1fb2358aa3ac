//! `Range: bytes=…`: never panics, and a resolved range lies inside the blob.
#![no_main]
use berth::registry::RangeRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, u64)| {
    let (value, size) = input;
    if let Some(r) = RangeRequest::parse(value) {
        if let Some(b) = r.resolve(size) {
            assert!(b.start <= b.end && b.end < size, "{value:?} on {size}: {b:?}");
        }
    }
});
