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
            body.starts_with("boundary(") || body.starts_with("run(") || body.starts_with("fill("),
            "export {name} is not wrapped in the panic boundary"
        );
        n += 1;
        rest = &after[body_start..];
    }
    // The signature of the callback type also contains `extern "C" fn(`, without a space.
    assert!(n >= 21, "found only {n} exports");
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
    // SAFETY: copy_message NUL-terminates within the buffer.
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

/// An engine over a temporary config with one API.
fn temp_engine() -> (tempfile::TempDir, *mut ase_engine) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("api")).unwrap();
    std::fs::write(
        dir.path().join("api/shop.json"),
        r#"{"api_metadata":{"url":"/shop","hostname":"*","cookie":"JSESSIONID","oauth2_access_token":true}}"#,
    )
    .unwrap();
    let conf = dir.path().join("ase.conf");
    std::fs::write(&conf, "enable_ase_detected_attack=true\n").unwrap();
    let path = conf.to_str().unwrap().as_bytes().to_vec();
    let mut e: *mut ase_engine = ptr::null_mut();
    assert_eq!(
        ase_engine_new(ase_str::from_bytes(&path), ptr::null_mut(), 0, &mut e),
        ASE_OK
    );
    assert!(!e.is_null());
    (dir, e)
}

fn s(b: &[u8]) -> ase_str {
    ase_str::from_bytes(b)
}

fn request<'a>(ip: &'a [u8], headers: &'a [ase_header]) -> ase_request {
    ase_request {
        client_ip: s(ip),
        method: s(b"GET"),
        scheme: s(b"https"),
        host: s(b"shop.example.com"),
        uri: s(b"/shop/items?x=1"),
        http_version: s(b"HTTP/1.1"),
        headers: headers.as_ptr(),
        headers_len: headers.len(),
        username: ase_str::EMPTY,
        unknown_api: ASE_UNKNOWN_API_DEFAULT,
        client_port: 0,
    }
}

fn check(e: *const ase_engine, r: &ase_request) -> Result<ase_verdict, ase_result> {
    let mut v = std::mem::MaybeUninit::<ase_verdict>::uninit();
    match ase_check_request(e, r, v.as_mut_ptr()) {
        // SAFETY: written on ASE_OK.
        ASE_OK => Ok(unsafe { v.assume_init() }),
        err => Err(err),
    }
}

#[test]
fn bad_request_bytes_give_error_codes() {
    let (_dir, e) = temp_engine();
    let ok = [ase_header {
        name: s(b"Cookie"),
        value: s(b"JSESSIONID=abc"),
    }];
    assert_eq!(
        check(e, &request(b"1.2.3.4", &ok)).unwrap().action,
        ASE_ACTION_ALLOW
    );
    let null_entry = [
        ok[0],
        ase_header {
            name: ase_str {
                len: 4,
                data: ptr::null(),
            },
            value: s(b"x"),
        },
    ];
    assert_eq!(
        check(e, &request(b"1.2.3.4", &null_entry)).unwrap_err(),
        ASE_ERR_INVALID_HEADER
    );
    let mut r = request(b"1.2.3.4", &ok);
    r.headers = ptr::null();
    assert_eq!(check(e, &r).unwrap_err(), ASE_ERR_NULL_PARAMETER);
    assert_eq!(
        check(e, &request(b"not-an-ip", &ok)).unwrap_err(),
        ASE_ERR_INVALID_CLIENT_IP
    );
    assert_eq!(
        check(e, &request(&[0xff, 0x00], &ok)).unwrap_err(),
        ASE_ERR_INVALID_CLIENT_IP
    );
    let mut r = request(b"1.2.3.4", &ok);
    r.unknown_api = 7;
    assert_eq!(check(e, &r).unwrap_err(), ASE_ERR_INVALID_ARGUMENT);
    let mut r = request(b"", &ok);
    r.uri = ase_str {
        len: 10,
        data: ptr::null(),
    };
    assert_eq!(check(e, &r).unwrap_err(), ASE_ERR_NULL_PARAMETER);
    // Non-UTF-8 header bytes are just bytes; a 1 MB cookie header is fine.
    let mut big = b"x=".to_vec();
    big.extend(std::iter::repeat_n(b'y', 1 << 20));
    big.extend_from_slice(b"; JSESSIONID=\xff\xfe");
    let hs = [ase_header {
        name: s(b"cookie"),
        value: s(&big),
    }];
    assert_eq!(
        check(e, &request(b"", &hs)).unwrap().action,
        ASE_ACTION_ALLOW
    );
    ase_engine_free(e);
}

#[test]
fn lists_through_the_c_api() {
    let (_dir, e) = temp_engine();
    let tok = ase_identifier {
        kind: ASE_ID_TOKEN,
        name: ase_str::EMPTY,
        value: s(b"token1.4"),
    };
    assert_eq!(ase_deny_add(e, &tok, 0), ASE_OK);
    let hs = [ase_header {
        name: s(b"Authorization"),
        value: s(b"Bearer token1.4"),
    }];
    let v = check(e, &request(b"1.2.3.4", &hs)).unwrap();
    assert_eq!(
        (v.action, v.status, v.reason, v.matched_kind),
        (ASE_ACTION_BLOCK, 403, ASE_REASON_DENY_LIST, ASE_ID_TOKEN)
    );
    // SAFETY: verdict strings point into the engine, alive until ase_engine_free.
    let body = unsafe { v.body.as_bytes() }.unwrap();
    assert_eq!(body, b"Error: Unauthorized");
    let api = unsafe { v.api_name.as_bytes() }.unwrap();
    assert_eq!(api, b"shop");

    let bad = |kind, name: &'static [u8], value: &'static [u8]| ase_identifier {
        kind,
        name: s(name),
        value: s(value),
    };
    assert_eq!(
        ase_deny_add(e, &bad(ASE_ID_IP, b"", b"1.2.3.4/33"), 0),
        ASE_ERR_INVALID_IDENTIFIER
    );
    assert_eq!(
        ase_deny_add(e, &bad(ASE_ID_TOKEN, b"", b""), 0),
        ASE_ERR_INVALID_IDENTIFIER
    );
    assert_eq!(
        ase_deny_add(e, &bad(ASE_ID_COOKIE, b"", b"v"), 0),
        ASE_ERR_INVALID_IDENTIFIER
    );
    assert_eq!(
        ase_deny_add(e, &bad(ASE_ID_TOKEN, b"", b"\xff"), 0),
        ASE_ERR_INVALID_UTF8
    );
    assert_eq!(
        ase_deny_add(e, &bad(99, b"", b"v"), 0),
        ASE_ERR_INVALID_ARGUMENT
    );
    assert_eq!(
        ase_deny_remove(e, &bad(ASE_ID_TOKEN, b"", b"absent")),
        ASE_ERR_NOT_FOUND
    );
    assert_eq!(ase_deny_clear(e, 42), ASE_ERR_INVALID_ARGUMENT);
    assert_eq!(ase_switch_set(e, 42, true), ASE_ERR_INVALID_ARGUMENT);
    assert_eq!(
        ase_api_set_blocking(e, s(b"nope"), true),
        ASE_ERR_UNKNOWN_API
    );

    assert_eq!(ase_allow_add(e, &tok, 0), ASE_OK);
    assert_eq!(
        check(e, &request(b"1.2.3.4", &hs)).unwrap().action,
        ASE_ACTION_ALLOW
    );

    unsafe extern "C" fn collect(ud: *mut c_void, entry: *const ase_entry) -> i32 {
        // SAFETY: ud is the Vec passed below; entry is valid during the call.
        let (v, e) = unsafe { (&mut *(ud as *mut Vec<(u32, u32, Vec<u8>)>), &*entry) };
        let value = unsafe { e.value.as_bytes() }.unwrap().to_vec();
        v.push((e.kind, e.source, value));
        0
    }
    let mut got: Vec<(u32, u32, Vec<u8>)> = Vec::new();
    let ud = &mut got as *mut _ as *mut c_void;
    assert_eq!(ase_deny_list(e, ASE_SOURCE_ALL, Some(collect), ud), ASE_OK);
    assert_eq!(
        got,
        vec![(ASE_ID_TOKEN, ASE_SOURCE_MANUAL, b"token1.4".to_vec())]
    );
    got.clear();
    assert_eq!(ase_allow_list(e, Some(collect), ud), ASE_OK);
    assert_eq!(got.len(), 1);

    let mut st = ase_stats::default();
    assert_eq!(ase_engine_stats(e, &mut st), ASE_OK);
    assert_eq!(
        (st.checked, st.blocked, st.deny_entries, st.allow_entries),
        (2, 1, 1, 1)
    );
    assert_eq!(st.blocked_by_reason[ASE_REASON_DENY_LIST as usize], 1);

    let mut on = false;
    assert_eq!(ase_switch_get(e, ASE_SWITCH_FIREWALL, &mut on), ASE_OK);
    assert!(on);
    assert_eq!(ase_deny_remove(e, &tok), ASE_OK);
    assert_eq!(ase_allow_clear(e), ASE_OK);
    assert_eq!(ase_deny_clear(e, ASE_SOURCE_ALL), ASE_OK);
    ase_engine_free(e);
}

#[test]
fn config_check_validates_without_opening_state() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("ase.conf");
    std::fs::create_dir(dir.path().join("api")).unwrap();
    std::fs::write(&conf, "enable_xff=true\n").unwrap();
    let path = conf.to_str().unwrap().as_bytes().to_vec();
    let mut msg = [0 as c_char; 256];
    assert_eq!(
        ase_config_check(s(&path), msg.as_mut_ptr(), msg.len()),
        ASE_OK
    );
    assert!(!dir.path().join("state").exists(), "no store opened");
    std::fs::write(
        dir.path().join("api/bad.json"),
        r#"{"api_metadata":{"url":"/a","hostname":"*","oauth2_access_token":"yes"}}"#,
    )
    .unwrap();
    assert_eq!(
        ase_config_check(s(&path), msg.as_mut_ptr(), msg.len()),
        ASE_ERR_API_JSON
    );
    // SAFETY: NUL-terminated by copy_message.
    let m = unsafe { CStr::from_ptr(msg.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    assert!(
        m.contains("bad") && m.contains("oauth2_access_token"),
        "{m}"
    );
}

fn message(buf: &[c_char]) -> String {
    // SAFETY: the library NUL-terminates every message buffer it fills.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

#[test]
fn abs_and_health_calls_check_their_pointers() {
    let mut st = std::mem::MaybeUninit::<ase_abs_state>::uninit();
    let mut h = std::mem::MaybeUninit::<ase_health>::uninit();
    assert_eq!(ase_abs_sync_now(ptr::null(), 1000), ASE_ERR_NULL_PARAMETER);
    assert_eq!(ase_abs_sync_now(ptr::null(), 0), ASE_ERR_NULL_PARAMETER);
    assert_eq!(
        ase_abs_status(ptr::null(), st.as_mut_ptr()),
        ASE_ERR_NULL_PARAMETER
    );
    assert_eq!(
        ase_engine_health(ptr::null(), h.as_mut_ptr()),
        ASE_ERR_NULL_PARAMETER
    );
    let (_dir, e) = temp_engine();
    let req = request(b"192.0.2.1", &[]);
    let v = check(e, &req).unwrap();
    assert_eq!(
        ase_abs_report(ptr::null(), &req, &v, 200),
        ASE_ERR_NULL_PARAMETER
    );
    assert_eq!(
        ase_abs_report(e, ptr::null(), &v, 200),
        ASE_ERR_NULL_PARAMETER
    );
    assert_eq!(
        ase_abs_report(e, &req, ptr::null(), 200),
        ASE_ERR_NULL_PARAMETER
    );
    assert_eq!(ase_abs_status(e, ptr::null_mut()), ASE_ERR_NULL_PARAMETER);
    assert_eq!(
        ase_engine_health(e, ptr::null_mut()),
        ASE_ERR_NULL_PARAMETER
    );
    ase_engine_free(e);
}

#[test]
fn without_an_abs_endpoint_abs_calls_say_so_or_do_nothing() {
    let (_dir, e) = temp_engine();
    assert_eq!(ase_abs_sync_now(e, 1000), ASE_ERR_ABS);
    assert_eq!(ase_abs_sync_now(e, 0), ASE_ERR_ABS);
    let mut st = std::mem::MaybeUninit::<ase_abs_state>::uninit();
    assert_eq!(ase_abs_status(e, st.as_mut_ptr()), ASE_OK);
    // SAFETY: written on ASE_OK.
    let st = unsafe { st.assume_init() };
    assert!(!st.configured && !st.leader);
    assert_eq!((st.last_success_ms, st.entries, st.traffic_sent), (0, 0, 0));
    assert_eq!(message(&st.last_error), "");
    // Reporting is a no-op, not an error: a host calls it unconditionally.
    let req = request(b"192.0.2.1", &[]);
    let v = check(e, &req).unwrap();
    assert_eq!(ase_abs_report(e, &req, &v, 200), ASE_OK);
    ase_engine_free(e);
}

#[test]
fn health_reports_a_loaded_store() {
    let (_dir, e) = temp_engine();
    let mut h = std::mem::MaybeUninit::<ase_health>::uninit();
    assert_eq!(ase_engine_health(e, h.as_mut_ptr()), ASE_OK);
    // SAFETY: written on ASE_OK.
    let h = unsafe { h.assume_init() };
    assert!(h.store_ok && !h.fail_mode_active, "{h:?}");
    assert!(h.full_loads >= 1);
    assert_eq!(message(&h.store_error), "");
    ase_engine_free(e);
}

#[test]
fn health_reports_a_store_that_cannot_be_opened() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("api")).unwrap();
    // state_dir is a file: the store cannot be opened, fail_mode decides.
    std::fs::write(dir.path().join("state"), "not a directory").unwrap();
    let conf = dir.path().join("ase.conf");
    std::fs::write(&conf, "fail_mode=closed\n").unwrap();
    let path = conf.to_str().unwrap().as_bytes().to_vec();
    let mut e: *mut ase_engine = ptr::null_mut();
    assert_eq!(
        ase_engine_new(ase_str::from_bytes(&path), ptr::null_mut(), 0, &mut e),
        ASE_OK
    );
    let mut h = std::mem::MaybeUninit::<ase_health>::uninit();
    assert_eq!(ase_engine_health(e, h.as_mut_ptr()), ASE_OK);
    // SAFETY: written on ASE_OK.
    let h = unsafe { h.assume_init() };
    assert!(!h.store_ok && h.fail_mode_active, "{h:?}");
    assert!(!message(&h.store_error).is_empty());
    ase_engine_free(e);
}

#[test]
fn messages_are_cut_on_a_character_and_keys_masked() {
    let mut buf = [1 as c_char; ASE_MESSAGE_LEN];
    copy_message(
        &mut buf,
        "GET failed for key sk-secret-1",
        &["sk-secret-1", ""],
    );
    assert_eq!(message(&buf), "GET failed for key ***");
    let long = "é".repeat(200); // 400 bytes
    copy_message(&mut buf, &long, &[]);
    let m = message(&buf);
    assert_eq!(m, "é".repeat(127), "254 bytes: whole characters only");
}

#[test]
fn an_error_message_cut_to_the_callers_buffer_stays_utf8() {
    // "/nonexistent/" is 13 bytes; the 15-byte buffer holds 14 and a NUL, so
    // the cut falls inside the 2-byte "é" that follows.
    let path = "/nonexistent/\u{e9}t\u{e9}/ase.conf";
    let mut buf = [1 as c_char; 15];
    let mut out: *mut ase_engine = ptr::null_mut();
    let s = ase_str::from_bytes(path.as_bytes());
    assert_eq!(
        ase_engine_new(s, buf.as_mut_ptr(), buf.len(), &mut out),
        ASE_ERR_CONFIG
    );
    assert_eq!(message(&buf), "/nonexistent/");
    buf = [1 as c_char; 15];
    assert_eq!(
        ase_config_check(s, buf.as_mut_ptr(), buf.len()),
        ASE_ERR_CONFIG
    );
    assert_eq!(message(&buf), "/nonexistent/");
}

#[test]
fn abi_enums_convert_both_ways_and_reject_unknown_values() {
    fn round_trip<T>(n: u32)
    where
        T: TryFrom<u32, Error = ase_result> + Into<u32> + std::fmt::Debug,
    {
        for v in 0..n {
            let t = T::try_from(v).unwrap_or_else(|_| panic!("{v} refused"));
            assert_eq!(t.into(), v);
        }
        assert_eq!(T::try_from(n).unwrap_err(), ASE_ERR_INVALID_ARGUMENT);
        assert_eq!(T::try_from(u32::MAX).unwrap_err(), ASE_ERR_INVALID_ARGUMENT);
    }
    round_trip::<Reason>(ASE_REASON_COUNT as u32);
    round_trip::<Action>(ASE_ACTION_REDIRECT + 1);
    round_trip::<IdKind>(ASE_ID_USERNAME + 1);
    round_trip::<Source>(ASE_SOURCE_INVALID_CONTENT_TYPE + 1);
    round_trip::<Switch>(ASE_SWITCH_ASE_DETECTED_ATTACK + 1);
    assert_eq!(ResultCode::try_from(ASE_ERR_ABS), Ok(ResultCode::Abs));
    assert_eq!(ResultCode::try_from(9), Err(ASE_ERR_INVALID_ARGUMENT));
}

fn health(e: *const ase_engine) -> ase_health {
    let mut h = std::mem::MaybeUninit::<ase_health>::uninit();
    assert_eq!(ase_engine_health(e, h.as_mut_ptr()), ASE_OK);
    // SAFETY: written on ASE_OK.
    unsafe { h.assume_init() }
}

#[test]
fn changes_wait_for_the_hosts_engines_and_health_counts_the_laggards() {
    let (dir, e) = temp_engine();
    assert_eq!(
        (
            health(e).engines_live,
            health(e).engines_lagging_last_change
        ),
        (0, 0),
        "no change yet"
    );
    let id = |v: &'static [u8]| ase_identifier {
        kind: ASE_ID_IP,
        name: ase_str::EMPTY,
        value: s(v),
    };
    // Alone on the host: this engine applied its own change.
    let t = std::time::Instant::now();
    assert_eq!(ase_deny_add(e, &id(b"10.9.9.9"), 0), ASE_OK);
    assert!(t.elapsed() < std::time::Duration::from_millis(500));
    let h = health(e);
    assert_eq!((h.engines_live, h.engines_lagging_last_change), (1, 0));
    // A second engine that never applies anything: the call waits 1 s, and
    // still succeeds (the change is durable and in force here).
    let stuck =
        crate::sync::presence::Registration::register(&dir.path().join("state"), 0).unwrap();
    let t = std::time::Instant::now();
    assert_eq!(ase_switch_set(e, ASE_SWITCH_FIREWALL, true), ASE_OK);
    assert!(t.elapsed() >= crate::sync::presence::DEFAULT_WAIT);
    let h = health(e);
    assert_eq!((h.engines_live, h.engines_lagging_last_change), (2, 1));
    drop(stuck);
    assert_eq!(ase_deny_remove(e, &id(b"10.9.9.9")), ASE_OK);
    let h = health(e);
    assert_eq!((h.engines_live, h.engines_lagging_last_change), (1, 0));
    ase_engine_free(e);
    assert_eq!(
        std::fs::read_dir(dir.path().join("state/engines"))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|f| !f.file_name().to_string_lossy().starts_with('.'))
            .count(),
        0,
        "the engine deregistered"
    );
}
