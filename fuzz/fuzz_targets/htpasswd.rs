//! htpasswd files: never panics; an accepted file holds only bcrypt hashes
//! under non-empty user names without ':'.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|content: &str| {
    if let Ok(users) = berth::htpasswd::parse(content) {
        for (user, hash) in users {
            assert!(!user.is_empty() && !user.contains(':'), "{user:?}");
            assert!(hash.starts_with("$2"), "{hash:?}");
        }
    }
});
