//! Calls the C ABI from Rust: NULLs, bad bytes, and the panic boundary.

use super::*;
use std::ffi::CStr;
use std::ptr;

/// Every `extern "C"` function's body must start with `boundary(` or `run(`
/// (which wraps `boundary`). Fails if an export is added without it.
#[test]
fn every_export_is_inside_the_panic_boundary() {
    let src = include_str!("mod.rs");
    let mut n = 0;
    let mut rest = src;
    while let Some(p) = rest.find("extern \"C\" fn ") {
        let after = &rest[p..];
        let body_start = after.find('{').expect("function body");
        let body = after[body_start + 1..].trim_start();
        let name: String = after["extern \"C\" fn ".len()..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        assert!(
            body.starts_with("boundary(") || body.starts_with("run("),
            "export {name} is not wrapped in the panic boundary"
        );
        n += 1;
        rest = &after[body_start..];
    }
    // The signature of the callback type also contains `extern "C" fn(`, without a space.
    assert!(n >= 17, "found only {n} exports");
    let run_src = &src[src.find("fn run(").unwrap()..];
    assert!(
        run_src[..200].contains("boundary("),
        "run() must wrap boundary()"
    );
}

#[test]
fn the_boundary_turns_a_panic_into_an_error_code() {
    let r: ase_result = boundary(|| panic!("boom"));
    assert_eq!(r, ASE_ERR_PANIC);
    let p: *const c_char = boundary(|| panic!("boom"));
    assert!(p.is_null());
}

#[test]
fn result_strings_and_version() {
    // SAFETY: static NUL-terminated strings.
    let s = |r| {
        unsafe { CStr::from_ptr(ase_result_str(r)) }
            .to_str()
            .unwrap()
    };
    assert_eq!(s(ASE_OK), "ok");
    assert_eq!(s(ASE_ERR_NOT_FOUND), "no such entry");
    assert_eq!(s(12345), "unknown result code");
    // SAFETY: static NUL-terminated string.
    let v = unsafe { CStr::from_ptr(ase_version()) };
    assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
}

#[test]
fn nulls_give_error_codes() {
    let mut out: *mut ase_engine = ptr::null_mut();
    assert_eq!(
        ase_engine_new(ase_str::EMPTY, ptr::null_mut(), 0, ptr::null_mut()),
        ASE_ERR_NULL_PARAMETER
    );
    let bad = ase_str {
        len: 3,
        data: ptr::null(),
    };
    assert_eq!(
        ase_engine_new(bad, ptr::null_mut(), 0, &mut out),
        ASE_ERR_NULL_PARAMETER
    );
    let nonutf8 = [0xffu8, 0xfe];
    let mut msg = [0 as c_char; 64];
    assert_eq!(
        ase_engine_new(
            ase_str::from_bytes(&nonutf8),
            msg.as_mut_ptr(),
            msg.len(),
            &mut out
        ),
        ASE_ERR_INVALID_UTF8
    );
    assert!(out.is_null(), "out written only on success");
    let missing = b"/nonexistent/ase.conf";
    assert_eq!(
        ase_engine_new(
            ase_str::from_bytes(missing),
            msg.as_mut_ptr(),
            msg.len(),
            &mut out
        ),
        ASE_ERR_CONFIG
    );
    // SAFETY: write_message NUL-terminates within the buffer.
    let m = unsafe { CStr::from_ptr(msg.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    assert!(m.starts_with("/nonexistent/ase.conf"), "{m}");
    assert_eq!(m.len(), 63, "truncated to the buffer");

    let mut v = std::mem::MaybeUninit::<ase_verdict>::uninit();
    assert_eq!(
        ase_check_request(ptr::null(), ptr::null(), v.as_mut_ptr()),
        ASE_ERR_NULL_PARAMETER
    );
    assert_eq!(
        ase_deny_add(ptr::null(), ptr::null(), 0),
        ASE_ERR_NULL_PARAMETER
    );
    assert_eq!(
        ase_deny_remove(ptr::null(), ptr::null()),
        ASE_ERR_NULL_PARAMETER
    );
    assert_eq!(
        ase_deny_clear(ptr::null(), ASE_SOURCE_ALL),
        ASE_ERR_NULL_PARAMETER
    );
    assert_eq!(
        ase_allow_add(ptr::null(), ptr::null(), 0),
        ASE_ERR_NULL_PARAMETER
    );
    assert_eq!(
        ase_allow_remove(ptr::null(), ptr::null()),
        ASE_ERR_NULL_PARAMETER
    );
    assert_eq!(ase_allow_clear(ptr::null()), ASE_ERR_NULL_PARAMETER);
    assert_eq!(
        ase_deny_list(ptr::null(), 0, None, ptr::null_mut()),
        ASE_ERR_NULL_PARAMETER
    );
    assert_eq!(
        ase_allow_list(ptr::null(), None, ptr::null_mut()),
        ASE_ERR_NULL_PARAMETER
    );
    assert_eq!(ase_switch_set(ptr::null(), 0, true), ASE_ERR_NULL_PARAMETER);
    assert_eq!(
        ase_switch_get(ptr::null(), 0, ptr::null_mut()),
        ASE_ERR_NULL_PARAMETER
    );
    assert_eq!(
        ase_api_set_blocking(ptr::null(), ase_str::EMPTY, true),
        ASE_ERR_NULL_PARAMETER
    );
    assert_eq!(
        ase_engine_stats(ptr::null(), ptr::null_mut()),
        ASE_ERR_NULL_PARAMETER
    );
    ase_engine_free(ptr::null_mut());
}
