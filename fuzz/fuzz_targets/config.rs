//! The configuration files: `parse_ase_conf` and `parse_abs_conf`.
//!
//! Input: the text of one file (lossy UTF-8), given to both parsers.
//!
//! Besides "no panic", an error must name the file and a line of it, and
//! must never show a credential: the text is parsed again with every
//! credential's letters replaced, and the outcome and message must not
//! change.

#![no_main]

use std::path::Path;

use ase::policy::config::{ConfigError, parse_abs_conf, parse_ase_conf};
use libfuzzer_sys::fuzz_target;

/// Keys whose values are credentials (`sender_password` is an ASE key the
/// parser accepts and ignores).
const SECRET_KEYS: &[&str] = &[
    "access_key",
    "secret_key",
    "sender_password",
    "gateway_credential",
];

/// `text` with the value of every credential line masked: each character
/// other than `:`, `;` and white space (which the parsers look at) becomes `Q`.
fn mask(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        match line.split_once('=') {
            Some((k, v)) if SECRET_KEYS.contains(&k.trim()) => {
                out.push_str(k);
                out.push('=');
                out.extend(v.chars().map(|c| {
                    if c == ':' || c == ';' || c.is_whitespace() {
                        c
                    } else {
                        'Q'
                    }
                }));
            }
            _ => out.push_str(line),
        }
    }
    out
}

fn check<T>(
    parse: fn(&str, &Path) -> Result<T, ConfigError>,
    text: &str,
    masked: &str,
    path: &Path,
) {
    let a = parse(text, path).err();
    let b = parse(masked, path).err();
    if let Some(e) = &a {
        assert_eq!(e.file, path);
        assert!(
            e.line <= text.lines().count(),
            "line {} of {}",
            e.line,
            text.lines().count()
        );
        assert!(e.to_string().starts_with("/etc/ase/fuzz.conf"), "{e}");
    }
    assert_eq!(
        a.map(|e| e.to_string()),
        b.map(|e| e.to_string()),
        "a credential's value changes the outcome or shows in the message"
    );
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let masked = mask(&text);
    let path = Path::new("/etc/ase/fuzz.conf");
    check(parse_ase_conf, &text, &masked, path);
    check(parse_abs_conf, &text, &masked, path);
});
