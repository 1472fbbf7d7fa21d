//! `ase_config_check` (what `nginx -t` runs) refuses every configuration
//! that `ase_engine_new` would refuse for what the files say, with the same
//! code and message: a configuration that passes the check must not take the
//! workers down when they start.

use std::ffi::{CStr, c_char};
use std::path::Path;
use std::ptr;

use ase::ffi::*;

const API: &str = r#"{"api_metadata":{"url":"/shop","hostname":"*"}}"#;

/// `ase.conf` (with `ase_extra`), an `abs.conf` naming one endpoint (with
/// `abs_extra`), and one API, in `dir`. Returns the path of `ase.conf`.
fn write(dir: &Path, ase_extra: &str, abs_extra: &str) -> Vec<u8> {
    std::fs::create_dir_all(dir.join("api")).unwrap();
    std::fs::write(dir.join("api/shop.json"), API).unwrap();
    std::fs::write(
        dir.join("ase.conf"),
        format!("enable_abs=true\n{ase_extra}"),
    )
    .unwrap();
    std::fs::write(
        dir.join("abs.conf"),
        format!("abs_endpoint=127.0.0.1:9\naccess_key=abs_ak\nsecret_key=abs_sk\n{abs_extra}"),
    )
    .unwrap();
    dir.join("ase.conf").to_str().unwrap().as_bytes().to_vec()
}

fn text(buf: &[c_char]) -> String {
    // SAFETY: the library NUL-terminates every message it writes.
    let m = unsafe { CStr::from_ptr(buf.as_ptr()) };
    m.to_str().expect("messages are UTF-8").to_owned()
}

/// `ase_config_check`'s code and message.
fn check(path: &[u8]) -> (ase_result, String) {
    let mut buf = [0 as c_char; 512];
    let rc = ase_config_check(ase_str::from_bytes(path), buf.as_mut_ptr(), buf.len());
    (rc, text(&buf))
}

/// `ase_engine_new`'s code and message (the engine, if any, is freed).
fn open(path: &[u8]) -> (ase_result, String) {
    let mut buf = [0 as c_char; 512];
    let mut e: *mut ase_engine = ptr::null_mut();
    let rc = ase_engine_new(
        ase_str::from_bytes(path),
        buf.as_mut_ptr(),
        buf.len(),
        &mut e,
    );
    ase_engine_free(e);
    (rc, text(&buf))
}

/// Both refuse `path` with the same code and message; returns them.
fn both_refuse(path: &[u8]) -> (ase_result, String) {
    let checked = check(path);
    assert_ne!(checked.0, ASE_OK, "ase_config_check accepted it");
    assert!(!checked.1.is_empty(), "no message");
    assert_eq!(open(path), checked, "ase_engine_new disagrees");
    checked
}

#[test]
fn a_missing_abs_ca_cert_path_fails_the_check_as_it_fails_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("missing-ca.pem");
    let path = write(
        dir.path(),
        "",
        &format!("enable_ssl=true\nabs_ca_cert_path={}\n", ca.display()),
    );
    let (rc, msg) = both_refuse(&path);
    assert_eq!(rc, ASE_ERR_CONFIG);
    assert!(msg.contains("abs.conf"), "{msg}");
    assert!(msg.contains(&ca.display().to_string()), "{msg}");
    assert!(
        !dir.path().join("state").exists(),
        "the check wrote nothing"
    );
}

#[test]
fn an_abs_ca_cert_path_without_a_certificate_fails_both() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate\n").unwrap();
    let path = write(
        dir.path(),
        "",
        &format!("enable_ssl=true\nabs_ca_cert_path={}\n", ca.display()),
    );
    let (rc, msg) = both_refuse(&path);
    assert_eq!(rc, ASE_ERR_CONFIG);
    assert!(msg.contains("no usable certificate"), "{msg}");
}

#[test]
fn a_short_obfuscation_key_file_fails_both() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("abs_obfuscation.key"), "short").unwrap();
    let path = write(
        dir.path(),
        &format!(
            "abs_obfuscate_identifiers=true\nstate_dir={}\n",
            state.display()
        ),
        "enable_ssl=false\n",
    );
    let (rc, msg) = both_refuse(&path);
    assert_eq!(rc, ASE_ERR_ABS);
    assert!(msg.contains("shorter than 16 bytes"), "{msg}");
}

#[test]
fn bad_files_and_paths_fail_both_alike() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "enable_firewall=maybe\n", "");
    assert_eq!(both_refuse(&path).0, ASE_ERR_CONFIG);

    let path = write(dir.path(), "", "enable_ssl=perhaps\n");
    assert_eq!(both_refuse(&path).0, ASE_ERR_CONFIG);

    let path = write(dir.path(), "", "");
    std::fs::write(dir.path().join("api/bad.json"), "{").unwrap();
    assert_eq!(both_refuse(&path).0, ASE_ERR_API_JSON);

    assert_eq!(both_refuse(b"/nonexistent/ase.conf").0, ASE_ERR_CONFIG);
    assert_eq!(both_refuse(b"").0, ASE_ERR_CONFIG);
    assert_eq!(both_refuse(b"/tmp/\xff/ase.conf").0, ASE_ERR_INVALID_UTF8);
}

#[test]
fn a_configuration_that_passes_the_check_starts() {
    let dir = tempfile::tempdir().unwrap();
    // TLS with the built-in roots: nothing to read.
    let path = write(dir.path(), "", "enable_ssl=true\n");
    assert_eq!(check(&path), (ASE_OK, String::new()));
    assert_eq!(open(&path).0, ASE_OK);
}
