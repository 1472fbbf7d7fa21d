//! ABS attack-list bodies: `attacklist::parse`.
//!
//! Input: one response body. Parsed with a fixed fetch time and two API-key
//! names (so keys without a name are listed), then fitted into a memory
//! budget.

#![no_main]

use ase::sync::abs::ParseOptions;
use ase::sync::abs::attacklist::parse;
use libfuzzer_sys::fuzz_target;

/// 2024-01-01T00:00:00Z in Unix milliseconds.
const NOW_MS: u64 = 1_704_067_200_000;

fuzz_target!(|data: &[u8]| {
    let names = ["X-API-KEY".to_string(), "key".to_string()];
    let opts = ParseOptions {
        now_ms: NOW_MS,
        api_key_names: &names,
    };
    let Ok(mut list) = parse(data, opts) else {
        return;
    };
    // Expired items are dropped, never listed.
    for (id, expires) in &list.entries {
        assert!(
            *expires == 0 || *expires > NOW_MS,
            "{id:?} expired at {expires}"
        );
    }
    assert_eq!(
        list.first_bad.is_some(),
        list.bad_items > 0,
        "first_bad vs bad_items"
    );
    // Parsing is a function of the body: the same body, the same list.
    assert_eq!(parse(data, opts).as_ref(), Ok(&list));
    let n = list.entries.len() as u64;
    let fit = list.limit_memory(1024);
    assert_eq!(
        fit.dropped + list.entries.len() as u64,
        n,
        "limit_memory lost entries"
    );
    assert!(
        fit.bytes <= 1024 || list.entries.is_empty(),
        "{} bytes kept",
        fit.bytes
    );
});
