//! Repository names: never panics; an accepted name is at most 255
//! characters, round-trips, and cannot leave its directory.
#![no_main]
use berth::oci::RepoName;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    if let Ok(n) = s.parse::<RepoName>() {
        assert_eq!(n.as_str(), s);
        assert!(s.len() <= 255);
        assert!(s.split('/').all(|c| !c.is_empty() && c != "." && c != ".." && !c.starts_with('_')), "{s:?}");
        assert!(!s.contains(['\0', '\\', '%']), "{s:?}");
    }
});
