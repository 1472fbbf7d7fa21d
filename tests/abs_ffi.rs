//! The ABS part of the C API against the reference server on loopback:
//! `ase_abs_sync_now`, `ase_abs_status` and `ase_abs_report`, as a C host
//! (nginx) calls them.

mod common;

use std::ffi::{CStr, c_char};
use std::path::Path;
use std::ptr;
use std::time::Duration;

use ase::ffi::*;
use common::{RefServer, eventually, write_config};

/// ase.conf + abs.conf for `abs` with a one-hour poll interval, so that only
/// the startup sync and explicit ones happen.
fn config(dir: &Path, abs: &RefServer) -> Vec<u8> {
    let conf = write_config(dir, &[&abs.addr], "enable_ssl=false\n");
    let text = std::fs::read_to_string(&conf).unwrap().replace(
        "abs_attack_request_interval=1s",
        "abs_attack_request_interval=1h",
    );
    std::fs::write(&conf, text).unwrap();
    conf.to_str().unwrap().as_bytes().to_vec()
}

fn engine(conf: &[u8]) -> *mut ase_engine {
    let mut e: *mut ase_engine = ptr::null_mut();
    let mut err = [0 as c_char; 256];
    let rc = ase_engine_new(
        ase_str::from_bytes(conf),
        err.as_mut_ptr(),
        err.len(),
        &mut e,
    );
    // SAFETY: NUL-terminated by the library.
    let msg = unsafe { CStr::from_ptr(err.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    assert_eq!(rc, ASE_OK, "{msg}");
    e
}

fn status(e: *const ase_engine) -> ase_abs_state {
    let mut st = std::mem::MaybeUninit::<ase_abs_state>::uninit();
    assert_eq!(ase_abs_status(e, st.as_mut_ptr()), ASE_OK);
    // SAFETY: written on ASE_OK.
    unsafe { st.assume_init() }
}

fn last_error(st: &ase_abs_state) -> String {
    // SAFETY: NUL-terminated by the library.
    unsafe { CStr::from_ptr(st.last_error.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

fn s(b: &[u8]) -> ase_str {
    ase_str::from_bytes(b)
}

fn request<'a>(ip: &'a [u8], headers: &'a [ase_header]) -> ase_request {
    ase_request {
        client_ip: s(ip),
        method: s(b"POST"),
        scheme: s(b"http"),
        host: s(b"shop.example"),
        uri: s(b"/shop/cart?x=1"),
        http_version: s(b"HTTP/1.1"),
        headers: headers.as_ptr(),
        headers_len: headers.len(),
        username: ase_str::EMPTY,
        unknown_api: ASE_UNKNOWN_API_DEFAULT,
        client_port: 0,
    }
}

fn check(e: *const ase_engine, r: &ase_request) -> ase_verdict {
    let mut v = std::mem::MaybeUninit::<ase_verdict>::uninit();
    assert_eq!(ase_check_request(e, r, v.as_mut_ptr()), ASE_OK);
    // SAFETY: written on ASE_OK.
    unsafe { v.assume_init() }
}

fn blocked(e: *const ase_engine, ip: &[u8]) -> bool {
    check(e, &request(ip, &[])).action != ASE_ACTION_ALLOW
}

#[test]
fn sync_now_status_and_traffic_reports_through_the_c_api() {
    let abs = RefServer::start(&[]);
    abs.set_list(r#"{"ips": ["10.0.0.1"]}"#);
    let dir = tempfile::tempdir().unwrap();
    let conf = config(dir.path(), &abs);
    let e = engine(&conf);

    // The one engine of the host leads and syncs at start.
    assert!(
        eventually(Duration::from_secs(10), || status(e).last_success_ms != 0),
        "startup sync"
    );
    assert!(blocked(e, b"10.0.0.1"));

    // A new list takes effect on ase_abs_sync_now, not an hour later.
    abs.set_list(r#"{"ips": ["10.0.0.7", "10.0.0.8"], "usernames": ["mallory"]}"#);
    assert_eq!(ase_abs_sync_now(e, 10_000), ASE_OK);
    assert!(blocked(e, b"10.0.0.7") && blocked(e, b"10.0.0.8"));
    assert!(!blocked(e, b"10.0.0.1"), "dropped from the list: unblocked");
    let st = status(e);
    assert!(st.configured && st.enabled && st.leader && st.traffic_enabled);
    assert_eq!(st.entries, 3);
    assert_eq!((st.bad_items, st.consecutive_failures), (0, 0));
    assert!(st.syncs >= 2, "startup and this one");
    assert!(st.last_success_ms >= st.last_attempt_ms && st.last_attempt_ms != 0);
    assert_eq!(last_error(&st), "");

    // Traffic: the record carries the status the host answered with.
    let hs = [
        ase_header {
            name: s(b"Authorization"),
            value: s(b"Bearer tok-ffi-1"),
        },
        ase_header {
            name: s(b"User-Agent"),
            value: s(b"curl/8"),
        },
    ];
    let req = ase_request {
        client_port: 51234,
        ..request(b"192.0.2.44", &hs)
    };
    let v = check(e, &req);
    assert_eq!(v.action, ASE_ACTION_ALLOW);
    assert_eq!(ase_abs_report(e, &req, &v, 201), ASE_OK);
    let req_blocked = request(b"10.0.0.7", &[]);
    let vb = check(e, &req_blocked);
    assert_eq!(ase_abs_report(e, &req_blocked, &vb, 403), ASE_OK);
    assert!(
        eventually(Duration::from_secs(10), || status(e).traffic_sent >= 2),
        "records sent"
    );
    let all = abs.batches().join("\n");
    let records: Vec<serde_json::Value> = abs
        .batches()
        .iter()
        .flat_map(|b| {
            serde_json::from_str::<serde_json::Value>(b).unwrap()["records"]
                .as_array()
                .unwrap()
                .clone()
        })
        .collect();
    let allowed = records
        .iter()
        .find(|r| r["client_ip"] == "192.0.2.44")
        .unwrap_or_else(|| panic!("no record of 192.0.2.44 in {all}"));
    assert_eq!(allowed["response_code"], 201);
    assert_eq!(allowed["method"], "POST");
    assert_eq!(allowed["url"], "/shop/cart?x=1");
    assert_eq!(allowed["http_version"], "1.1");
    assert_eq!(allowed["api_name"], "shop");
    assert_eq!(allowed["client_port"], 51234);
    assert_eq!(allowed["access_token"], "tok-ffi-1");
    assert_eq!(allowed["verdict"], "allow");
    let denied = records
        .iter()
        .find(|r| r["client_ip"] == "10.0.0.7")
        .unwrap_or_else(|| panic!("no record of 10.0.0.7 in {all}"));
    assert_eq!(denied["response_code"], 403);
    assert_eq!(denied["client_port"], 0, "0: unknown");
    assert_eq!(
        (&denied["verdict"], &denied["reason"]),
        (&"block".into(), &"deny_list".into())
    );

    // A verdict the library never returns is refused.
    let mut bad = v;
    bad.action = 77;
    assert_eq!(ase_abs_report(e, &req, &bad, 200), ASE_ERR_INVALID_ARGUMENT);
    assert_eq!(ase_abs_report(e, &req, &v, 1000), ASE_ERR_INVALID_ARGUMENT);

    // enable_abs off: reporting is a no-op; nothing more reaches ABS.
    assert_eq!(ase_switch_set(e, ASE_SWITCH_ABS, false), ASE_OK);
    let sent = status(e).traffic_sent;
    let batches = abs.batches().len();
    assert_eq!(ase_abs_report(e, &req, &v, 200), ASE_OK);
    std::thread::sleep(Duration::from_millis(1500));
    let st = status(e);
    assert!(!st.traffic_enabled);
    assert_eq!((st.traffic_sent, st.traffic_queued), (sent, 0));
    assert_eq!(abs.batches().len(), batches);

    // ABS failing: an error code, the reason in status (without the keys),
    // and the last good list stays in force.
    abs.control("500", "");
    assert_eq!(ase_abs_sync_now(e, 10_000), ASE_ERR_ABS);
    let st = status(e);
    let err = last_error(&st);
    assert!(err.contains("500"), "{err}");
    assert!(!err.contains("abs_sk") && !err.contains("abs_ak"), "{err}");
    assert_eq!(st.consecutive_failures, 1);
    assert!(st.failures >= 1);
    assert_eq!(st.entries, 3, "the list in force");
    assert!(blocked(e, b"10.0.0.7"));

    // Back up: the error clears.
    abs.control("ok", "");
    assert_eq!(ase_abs_sync_now(e, 10_000), ASE_OK);
    let st = status(e);
    assert_eq!((last_error(&st).as_str(), st.consecutive_failures), ("", 0));
    ase_engine_free(e);
}

#[test]
fn an_engine_that_does_not_poll_shows_the_leaders_sync() {
    let abs = RefServer::start(&[]);
    abs.set_list(r#"{"ips": ["10.1.0.1", "10.1.0.2"]}"#);
    let dir = tempfile::tempdir().unwrap();
    let conf = config(dir.path(), &abs);
    // Two engines on one state_dir, as two nginx workers: one polls.
    let a = engine(&conf);
    let b = engine(&conf);
    assert!(
        eventually(Duration::from_secs(10), || {
            let (sa, sb) = (status(a), status(b));
            sa.leader != sb.leader && sa.entries == 2 && sb.entries == 2
        }),
        "one leader; both show its sync: {:?} / {:?}",
        status(a),
        status(b)
    );
    let (sa, sb) = (status(a), status(b));
    let follower = if sa.leader { sb } else { sa };
    assert!(follower.last_success_ms != 0 && follower.syncs >= 1);
    assert_eq!(abs.stats()["attacklist"], 1, "only the leader fetched");
    // The status and the list reach the follower by different paths (the
    // shared status and the store's change log): the list is enforced within
    // the watcher's poll, which may come a little after the status.
    assert!(
        eventually(Duration::from_secs(3), || blocked(a, b"10.1.0.1")
            && blocked(b, b"10.1.0.2")),
        "both engines enforce the leader's list"
    );

    // A failure of the leader shows on the follower too.
    abs.control("500", "");
    let leader = if sa.leader { a } else { b };
    let other = if sa.leader { b } else { a };
    assert_eq!(ase_abs_sync_now(leader, 10_000), ASE_ERR_ABS);
    assert!(
        eventually(Duration::from_secs(5), || last_error(&status(other))
            .contains("500")),
        "follower shows the error: {:?}",
        status(other)
    );
    ase_engine_free(a);
    ase_engine_free(b);
}
