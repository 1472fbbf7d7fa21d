//! Traffic reporting to the reference ABS server: batches arrive in the
//! documented format, a flood drops with a count without slowing checks, and
//! obfuscation hides token, cookie and API key values.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ase::enforcer::Enforcer;
use ase::policy::Request;
use ase::policy::Switch;
use ase::policy::ident::ip_to_u128;
use ase::sync::abs::{ClientOptions, Shipper, ShipperOptions, TrafficRecord};
use common::*;

fn opts(obfuscate: bool, key_dir: &std::path::Path) -> ShipperOptions {
    ShipperOptions {
        queue_capacity: 1000,
        batch_max: 50,
        batch_interval: Duration::from_millis(100),
        tries: 2,
        retry_delay: Duration::from_millis(50),
        client: ClientOptions {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(2),
            ..ClientOptions::default()
        },
        obfuscate,
        key_path: Some(key_dir.join("abs_obfuscation.key")),
        spool_dir: None,
    }
}

const SECRET_HEADERS: [(&str, &str); 4] = [
    ("Authorization", "Bearer TOKEN-SECRET-1"),
    ("Cookie", "JSESSIONID=COOKIE-SECRET-2; lang=en"),
    ("X-Api-Key", "APIKEY-SECRET-3"),
    ("User-Agent", "test-agent/1"),
];

/// Checks one request and builds its record, as a host would.
fn check_and_record(e: &Enforcer, ip: &str, uri: &str, headers: &[(&str, &str)]) -> TrafficRecord {
    let h: Vec<(&[u8], &[u8])> = headers
        .iter()
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
        .collect();
    let req = Request {
        client_ip: Some(ip_to_u128(ip.parse().unwrap())),
        method: b"POST",
        scheme: b"http",
        host: b"shop.example",
        uri: uri.as_bytes(),
        headers: &h[..],
        username: b"",
        unknown_api: None,
    };
    let d = e.check(&req);
    TrafficRecord::from_check(e, &req, &d, 40000, "1.1")
}

#[test]
fn records_reach_abs_in_batches_with_the_documented_fields() {
    let abs = RefServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), &[&abs.addr]);
    e.deny_add(
        &ase::policy::Identifier::new(ase::policy::IdKind::Ip, "", "10.6.6.6").unwrap(),
        ase::policy::Source::Manual,
        0,
    );
    let s = Shipper::start(e.clone(), opts(false, dir.path())).unwrap();
    for i in 0..120 {
        let ip = if i == 0 { "10.6.6.6" } else { "192.0.2.7" };
        let r = check_and_record(&e, ip, "/shop/cart?x=1", &SECRET_HEADERS);
        assert!(s.submit(r.with_status(201)));
    }
    assert!(eventually(Duration::from_secs(10), || s
        .status()
        .sent_records
        == 120));
    let st = s.status();
    assert!(st.sent_batches >= 3, "batched by size (50): {st:?}");
    assert_eq!(
        (st.dropped_full, st.dropped_failed, st.last_error.clone()),
        (0, 0, None)
    );
    let batches: Vec<serde_json::Value> = abs
        .batches()
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    let records: Vec<&serde_json::Value> = batches
        .iter()
        .flat_map(|b| b["records"].as_array().unwrap())
        .collect();
    assert_eq!(records.len(), 120);
    let first = records[0];
    assert_eq!(first["client_ip"], "10.6.6.6");
    assert_eq!(first["verdict"], "block");
    assert_eq!(first["reason"], "deny_list");
    assert_eq!(records[1]["verdict"], "allow");
    for (k, v) in [
        ("client_port", serde_json::json!(40000)),
        ("method", "POST".into()),
        ("url", "/shop/cart?x=1".into()),
        ("http_version", "1.1".into()),
        ("host", "shop.example".into()),
        ("api_name", "shop".into()),
        ("response_code", 201.into()),
        ("access_token", "TOKEN-SECRET-1".into()),
    ] {
        assert_eq!(first[k], v, "{k}");
    }
    assert_eq!(first["cookie"]["value"], "COOKIE-SECRET-2");
    assert_eq!(first["api_key"]["name"], "X-Api-Key");
    assert!(first["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(batches[0]["obfuscated"], false);
    assert!(s.stop(Duration::from_secs(5)));
}

#[test]
fn obfuscation_hides_token_cookie_and_api_key_values() {
    let abs = RefServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), &[&abs.addr]);
    let s = Shipper::start(e.clone(), opts(true, dir.path())).unwrap();
    for _ in 0..2 {
        let r = check_and_record(
            &e,
            "192.0.2.8",
            "/shop/x?access_token=TOKEN-SECRET-1",
            &SECRET_HEADERS,
        );
        assert!(s.submit(r));
    }
    assert!(s.stop(Duration::from_secs(5)), "stop flushes");
    let all = abs.batches().join("\n");
    assert!(!all.is_empty(), "the batch arrived");
    for secret in ["TOKEN-SECRET-1", "COOKIE-SECRET-2", "APIKEY-SECRET-3"] {
        assert!(!all.contains(secret), "{secret} reached ABS: {all}");
    }
    let v: serde_json::Value = serde_json::from_str(&abs.batches()[0]).unwrap();
    let r = &v["records"];
    assert_eq!(v["obfuscated"], true);
    let tok = r[0]["access_token"].as_str().unwrap();
    assert!(tok.starts_with("obf:"), "{tok}");
    assert_eq!(r[1]["access_token"], tok, "one value, one pseudonym");
    assert_eq!(r[0]["cookie"]["name"], "JSESSIONID", "names stay readable");
    assert!(all.contains("test-agent/1"), "other headers are untouched");

    // Another process of the host (same state_dir key) makes the same pseudonym.
    let s2 = Shipper::start(e.clone(), opts(true, dir.path())).unwrap();
    let r = check_and_record(&e, "192.0.2.8", "/shop/x", &SECRET_HEADERS);
    assert!(s2.submit(r));
    assert!(s2.stop(Duration::from_secs(5)));
    assert!(abs.batches().last().unwrap().contains(tok));
}

#[test]
fn a_flood_drops_with_a_count_and_checks_stay_fast() {
    let abs = RefServer::start(&[]);
    abs.control("slow", "5"); // the shipper thread is stuck posting
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), &[&abs.addr]);
    let s = Shipper::start(
        e.clone(),
        ShipperOptions {
            queue_capacity: 64,
            batch_max: 8,
            ..opts(false, dir.path())
        },
    )
    .unwrap();
    let h = s.handle();
    let n = 20_000u64;
    let mut accepted = 0u64;
    let mut slowest = Duration::ZERO;
    for i in 0..n {
        let t = Instant::now();
        let r = check_and_record(&e, "192.0.2.9", &format!("/shop/{i}"), &SECRET_HEADERS);
        if h.submit(r) {
            accepted += 1;
        }
        slowest = slowest.max(t.elapsed());
    }
    let st = s.status();
    assert!(st.dropped_full > 0, "{st:?}");
    assert_eq!(st.accepted + st.dropped_full, n);
    assert_eq!(st.accepted, accepted);
    assert!(accepted <= 64 + 8 * 2, "bounded queue: {accepted} accepted");
    // Generous bound: a blocking submit would wait for the 5 s ABS.
    assert!(
        slowest < Duration::from_secs(1),
        "slowest check+submit took {slowest:?}"
    );
    abs.control("ok", "");
    drop(s);
}

#[test]
fn nothing_is_queued_while_enable_abs_is_off() {
    let abs = RefServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let e: Arc<Enforcer> = engine(dir.path(), &[&abs.addr]);
    e.set_switch(Switch::Abs, false);
    let s = Shipper::start(e.clone(), opts(false, dir.path())).unwrap();
    let r = check_and_record(&e, "192.0.2.10", "/shop/x", &[]);
    assert!(!s.submit(r));
    assert!(s.stop(Duration::from_secs(5)));
    let st = s.status();
    assert_eq!((st.accepted, st.dropped_full, st.sent_records), (0, 0, 0));
    assert!(abs.batches().is_empty());
}
