//! The C API request path: `ase_check_request` and `ase_abs_report` on one
//! engine, with requests built from the input.
//!
//! Input: lines separated by `\n`.
//! - line 0: options. Its first byte picks `unknown_api` (`1` pass, `2`
//!   reject, `x` an out-of-range value, anything else the default); the rest
//!   of the line is the authenticated user name.
//! - lines 1 to 5: client address, method, scheme, host, URI.
//! - each further line (at most [`MAX_HEADERS`]): a header, `name:value`
//!   split at the first `:` (a line without one is a name with an empty
//!   value). Header bytes are passed as they are, spaces included.
//!
//! A missing line is an empty string. The engine is built once, from a
//! configuration written to a temporary directory: the example APIs, X-Forwarded-For
//! on, and a few deny and allow entries added through the C API.

#![no_main]

use std::net::IpAddr;
use std::ptr;
use std::sync::OnceLock;

use ase::ffi::*;
use libfuzzer_sys::fuzz_target;

/// Bound on headers per input, above the 64 that `ase_abs_report` keeps.
const MAX_HEADERS: usize = 80;

/// The example API files, under the names the engine gets them by.
const APIS: &[(&str, &[u8])] = &[
    (
        "shop.json",
        include_bytes!("../../examples/config/api/shop.json"),
    ),
    (
        "trading.json",
        include_bytes!("../../examples/config/api/trading.json"),
    ),
    (
        "account.json",
        include_bytes!("../../examples/demo/api/account.json"),
    ),
    (
        "monitor.json",
        include_bytes!("../../examples/demo/api/monitor.json"),
    ),
    (
        "partner.json",
        include_bytes!("../../examples/demo/api/partner.json"),
    ),
    (
        "secure.json",
        include_bytes!("../../examples/demo/api/secure.json"),
    ),
    (
        "shop_demo.json",
        include_bytes!("../../examples/demo/api/shop.json"),
    ),
    (
        "tls.json",
        include_bytes!("../../examples/demo/api/tls.json"),
    ),
    (
        "trap.json",
        include_bytes!("../../examples/demo/api/trap.json"),
    ),
];

/// Real-time detection is off: a detection writes to the store from a
/// background thread, and the lists would then change from one input to the
/// next, so a crash would not reproduce from its input alone. No
/// `abs.conf`: the ABS poller and shipper stay off.
const ASE_CONF: &str = "enable_firewall=true
enable_abs=false
enable_abs_attack=false
enable_ase_detected_attack=false
enable_xff=true
unknown_api=pass
api_dir=api
state_dir=state
";

/// Deny entries (kind, name, value); the first IPv4 and IPv6 ones also
/// match in the seeds.
const DENY: &[(ase_id_kind, &str, &str)] = &[
    (ASE_ID_IP, "", "203.0.113.66"),
    (ASE_ID_IP, "", "198.51.100.0/24"),
    (ASE_ID_IP, "", "2001:db8:bad::/48"),
    (ASE_ID_COOKIE, "JSESSIONID", "stolen-session"),
    (ASE_ID_TOKEN, "", "eyJleaked"),
    (ASE_ID_API_KEY, "X-API-KEY", "key-123"),
    (ASE_ID_API_KEY, "key", "qs-key-1"),
    (ASE_ID_USERNAME, "", "Mallory Mal"),
];

const ALLOW: &[(ase_id_kind, &str, &str)] = &[
    (ASE_ID_IP, "", "10.0.0.0/8"),
    (ASE_ID_COOKIE, "JSESSIONID", "trusted-session"),
];

struct Fixture {
    engine: *mut ase_engine,
    /// Keeps the state directory for the life of the process.
    _dir: tempfile::TempDir,
}

// SAFETY: the engine is used through `const ase_engine *` calls only, which
// the C API documents as callable from any number of threads at once.
unsafe impl Send for Fixture {}
// SAFETY: as above.
unsafe impl Sync for Fixture {}

fn id(kind: ase_id_kind, name: &str, value: &str) -> ase_identifier {
    ase_identifier {
        kind,
        name: ase_str::from_bytes(name.as_bytes()),
        value: ase_str::from_bytes(value.as_bytes()),
    }
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let api = dir.path().join("api");
        std::fs::create_dir(&api).expect("api dir");
        for (name, json) in APIS {
            std::fs::write(api.join(name), json).expect("api file");
        }
        let conf = dir.path().join("ase.conf");
        std::fs::write(&conf, ASE_CONF).expect("ase.conf");
        let path = conf.to_str().expect("UTF-8 temp path");
        let mut err = [0 as std::ffi::c_char; 512];
        let mut engine = ptr::null_mut();
        let rc = ase_engine_new(
            ase_str::from_bytes(path.as_bytes()),
            err.as_mut_ptr(),
            err.len(),
            &mut engine,
        );
        assert_eq!(rc, ASE_OK, "ase_engine_new: {:?}", unsafe_cstr(&err));
        for &(k, n, v) in DENY {
            assert_eq!(ase_deny_add(engine, &id(k, n, v), 0), ASE_OK, "deny {v}");
        }
        for &(k, n, v) in ALLOW {
            assert_eq!(ase_allow_add(engine, &id(k, n, v), 0), ASE_OK, "allow {v}");
        }
        Fixture { engine, _dir: dir }
    })
}

fn unsafe_cstr(buf: &[std::ffi::c_char]) -> String {
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The bytes of a verdict string, read in full (under AddressSanitizer a
/// dangling or short string is reported here).
fn read(s: &ase_str, what: &str) -> Vec<u8> {
    // SAFETY: the verdict's strings live until `ase_engine_free`, which the
    // fuzzer never calls.
    let b = unsafe { s.as_bytes() }.unwrap_or_else(|| panic!("{what}: NULL data, len {}", s.len));
    b.to_vec()
}

/// An address as the C API documents it: IPv4 or IPv6, surrounding ASCII
/// spaces ignored, IPv6 optionally in brackets.
fn std_ip(b: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(b.trim_ascii()) else {
        return false;
    };
    let inner = s.strip_prefix('[').and_then(|r| r.strip_suffix(']'));
    s.parse::<IpAddr>().is_ok() || inner.is_some_and(|i| i.parse::<std::net::Ipv6Addr>().is_ok())
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let mut lines = data.split(|&b| b == b'\n');
    let opts = lines.next().unwrap_or(&[]);
    let unknown_api = match opts.first() {
        Some(b'1') => ASE_UNKNOWN_API_PASS,
        Some(b'2') => ASE_UNKNOWN_API_REJECT,
        Some(b'x') => 7,
        _ => ASE_UNKNOWN_API_DEFAULT,
    };
    let username = opts.get(1..).unwrap_or(&[]);
    let mut field = || ase_str::from_bytes(lines.next().unwrap_or(&[]));
    let (client_ip, method, scheme, host, uri) = (field(), field(), field(), field(), field());
    let headers: Vec<ase_header> = lines
        .take(MAX_HEADERS)
        .map(|l| {
            let (n, v) = match l.iter().position(|&b| b == b':') {
                Some(i) => (&l[..i], &l[i + 1..]),
                None => (l, &[][..]),
            };
            ase_header {
                name: ase_str::from_bytes(n),
                value: ase_str::from_bytes(v),
            }
        })
        .collect();
    let req = ase_request {
        client_ip,
        method,
        scheme,
        host,
        uri,
        http_version: ase_str::from_bytes(b"HTTP/1.1"),
        headers: if headers.is_empty() {
            ptr::null()
        } else {
            headers.as_ptr()
        },
        headers_len: headers.len(),
        username: ase_str::from_bytes(username),
        unknown_api,
        client_port: 40000,
    };

    let mut v = std::mem::MaybeUninit::<ase_verdict>::uninit();
    let rc = ase_check_request(f.engine, &req, v.as_mut_ptr());
    // SAFETY: the request's strings borrow `data` and `headers`, alive here.
    let ip = unsafe { req.client_ip.as_bytes() }.unwrap();
    if rc != ASE_OK {
        // Only the errors a well-formed request can get: no NULL anywhere,
        // so an address that is not one, or the out-of-range `unknown_api`.
        match rc {
            ASE_ERR_INVALID_CLIENT_IP => {
                assert!(!ip.is_empty() && !std_ip(ip), "address refused: {ip:?}")
            }
            ASE_ERR_INVALID_ARGUMENT => assert_eq!(unknown_api, 7),
            _ => panic!("ase_check_request returned {rc}"),
        }
        return;
    }
    assert!(
        ip.is_empty() || std_ip(ip),
        "not an address, accepted: {ip:?}"
    );
    assert_ne!(unknown_api, 7, "out-of-range unknown_api accepted");
    // SAFETY: ASE_OK: the verdict was written.
    let v = unsafe { v.assume_init() };
    assert!(v.action <= ASE_ACTION_REDIRECT, "action {}", v.action);
    assert!(
        (v.reason as usize) < ASE_REASON_COUNT,
        "reason {}",
        v.reason
    );
    assert!(v.matched_kind <= ASE_ID_USERNAME || v.matched_kind == ASE_ID_NONE);
    assert!(v.source <= ASE_SOURCE_INVALID_CONTENT_TYPE || v.source == ASE_SOURCE_ALL);
    if v.action == ASE_ACTION_ALLOW {
        assert_eq!(v.status, 0, "allowed with a status");
    } else {
        assert!((100..=999).contains(&v.status), "status {}", v.status);
    }
    if v.reason == ASE_REASON_DENY_LIST || v.reason == ASE_REASON_ALLOW_LIST {
        assert_ne!(v.matched_kind, ASE_ID_NONE, "list reason without a kind");
    }
    for (s, what) in [
        (&v.status_text, "status_text"),
        (&v.body, "body"),
        (&v.location, "location"),
    ] {
        let b = read(s, what);
        assert!(std::str::from_utf8(&b).is_ok(), "{what} not UTF-8");
    }
    let name = read(&v.api_name, "api_name");
    let name = std::str::from_utf8(&name).expect("api_name not UTF-8");
    assert!(
        name.is_empty()
            || APIS
                .iter()
                .any(|(f, _)| f.strip_suffix(".json") == Some(name)),
        "unknown api_name {name:?}"
    );

    // Nothing changes the lists between two checks: the same verdict.
    let mut again = std::mem::MaybeUninit::<ase_verdict>::uninit();
    assert_eq!(
        ase_check_request(f.engine, &req, again.as_mut_ptr()),
        ASE_OK
    );
    // SAFETY: ASE_OK: the verdict was written.
    let again = unsafe { again.assume_init() };
    assert_eq!(
        (
            again.action,
            again.reason,
            again.status,
            again.would_block,
            again.matched_kind,
            again.source
        ),
        (
            v.action,
            v.reason,
            v.status,
            v.would_block,
            v.matched_kind,
            v.source
        ),
        "second check differs"
    );

    // No ABS endpoint: a no-op, but it still checks its own arguments.
    assert_eq!(ase_abs_report(f.engine, &req, &v, 200), ASE_OK);
    assert_eq!(
        ase_abs_report(f.engine, &req, &v, 1000),
        ASE_ERR_INVALID_ARGUMENT
    );
});
