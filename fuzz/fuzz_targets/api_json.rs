//! API JSON files: `Api::parse`, then `ApiSet::new` on what it accepted.
//!
//! Input: the bytes of one API JSON file, parsed as the API `fuzz`.

#![no_main]

use ase::policy::{Api, ApiSet};
use libfuzzer_sys::fuzz_target;

/// A host a request could carry as it is: DNS letters, digits, dots and
/// dashes, at most 253 bytes (longer hosts and ports are another matter).
fn plain_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
}

fuzz_target!(|data: &[u8]| {
    let Ok(api) = Api::parse("fuzz", data) else {
        return;
    };
    assert_eq!(api.name, "fuzz");
    assert!(api.url.starts_with('/'), "url {:?}", api.url);
    assert!(!api.hostname.is_empty());
    let (hostname, url) = (api.hostname.clone(), api.url.clone());
    // One API alone never conflicts with another.
    let set = ApiSet::new(vec![api]).expect("a single parsed API is a valid set");
    assert!(set.get("fuzz").is_some());
    // A request to the API's own host and base path finds it.
    let host = if hostname == "*" {
        "any.example"
    } else {
        hostname.as_str()
    };
    if plain_host(host) {
        let found = set
            .find(host.as_bytes(), url.as_bytes())
            .map(|a| a.name.as_str());
        assert_eq!(found, Some("fuzz"), "host {host:?} url {url:?}");
    }
});
