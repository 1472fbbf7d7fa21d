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

// Evented engines (nginx workers): the one whose process takes the host role
// ships; the others spool their records to files it uploads.

use ase::engine::{Engine, EngineOptions};
use ase::sync::abs::spool::{self, Spool, SpoolOptions};

fn evented(conf: &std::path::Path, host_role: bool) -> Engine {
    Engine::open_with(
        conf,
        EngineOptions {
            evented: true,
            host_role,
        },
    )
    .unwrap()
}

/// The `url` of every record the reference server received.
fn urls(abs: &RefServer) -> Vec<String> {
    abs.batches()
        .iter()
        .flat_map(|b| {
            let v: serde_json::Value = serde_json::from_str(b).unwrap();
            v["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["url"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The files left in the spool directory (the upload lock aside).
fn spool_files(state_dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(state_dir.join(spool::DIR))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != spool::UPLOAD_LOCK)
                .collect()
        })
        .unwrap_or_default()
}

/// Ticks `engines` until `f` holds or 15 s pass.
fn tick_until(engines: &[&Engine], mut f: impl FnMut() -> bool) -> bool {
    eventually(Duration::from_secs(15), || {
        for e in engines {
            e.tick();
        }
        f()
    })
}

/// A host-role engine that has started its shipper.
fn host_engine(conf: &std::path::Path) -> Engine {
    let host = evented(conf, true);
    assert!(
        tick_until(&[&host], || host.health().host_role
            && host.abs_shipper().is_some()),
        "the evented engine took the host role and started its shipper"
    );
    host
}

#[test]
fn evented_workers_traffic_reaches_abs_through_the_spool() {
    let abs = RefServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let conf = write_config(dir.path(), &[&abs.addr], "enable_ssl=false\n");
    let worker = evented(&conf, false);
    let host = host_engine(&conf);
    assert!(worker.abs_shipper().is_none() && worker.traffic_enabled());
    let state_dir = worker.config().state_dir.clone();

    let mut want = Vec::new();
    for i in 0..30 {
        let uri = format!("/shop/w/{i}");
        let r = check_and_record(worker.enforcer(), "192.0.2.20", &uri, &SECRET_HEADERS);
        assert!(worker.submit_traffic(r.with_status(200)));
        want.push(uri);
    }
    let st = worker.shipper_status().unwrap();
    assert_eq!((st.queued, st.accepted, st.spooled), (30, 30, 0));
    worker.tick();
    let st = worker.shipper_status().unwrap();
    assert_eq!(
        (st.queued, st.spooled, st.dropped_full),
        (0, 30, 0),
        "{st:?}"
    );

    assert!(
        tick_until(&[&host, &worker], || urls(&abs).len() >= 30),
        "the host's uploader sent the worker's records: {:?}",
        host.shipper_status()
    );
    let mut got = urls(&abs);
    got.sort();
    want.sort();
    assert_eq!(got, want, "each record once");
    let hs = host.shipper_status().unwrap();
    assert_eq!((hs.spool_shipped, hs.spool_bad), (30, 0), "{hs:?}");
    assert!(
        tick_until(&[&host], || spool_files(&state_dir).is_empty()),
        "shipped files are removed: {:?}",
        spool_files(&state_dir)
    );
    // The spool file is private to the state's owner.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(state_dir.join(spool::DIR))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");

    // More records later: the worker starts a new file after the claim.
    let r = check_and_record(worker.enforcer(), "192.0.2.20", "/shop/later", &[]);
    assert!(worker.submit_traffic(r));
    assert!(tick_until(&[&host, &worker], || urls(&abs).len() == 31));
    assert!(urls(&abs).contains(&"/shop/later".to_string()));
}

#[test]
fn a_clean_shutdown_spools_what_was_queued_since_the_last_tick() {
    let abs = RefServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let conf = write_config(dir.path(), &[&abs.addr], "enable_ssl=false\n");
    let host = host_engine(&conf);
    let worker = evented(&conf, false);
    for i in 0..5 {
        let uri = format!("/shop/bye/{i}");
        let r = check_and_record(worker.enforcer(), "192.0.2.21", &uri, &[]);
        assert!(worker.submit_traffic(r));
    }
    // No tick since: the shutdown writes them.
    drop(worker);
    assert!(
        tick_until(&[&host], || urls(&abs).len() == 5),
        "{:?} {:?}",
        urls(&abs),
        host.shipper_status()
    );
}

#[test]
fn a_spool_file_left_by_a_dead_process_is_shipped_and_removed() {
    let abs = RefServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let conf = write_config(dir.path(), &[&abs.addr], "enable_ssl=false\n");
    let e = engine(dir.path(), &[&abs.addr]);
    // What a worker killed mid-write leaves: whole records, then a torn one.
    let mut bytes = Vec::new();
    for i in 0..3 {
        let uri = format!("/shop/dead/{i}");
        assert!(spool::encode(
            &check_and_record(&e, "192.0.2.22", &uri, &[]),
            &mut bytes
        ));
    }
    let mut torn = Vec::new();
    spool::encode(&check_and_record(&e, "192.0.2.22", "/x", &[]), &mut torn);
    bytes.extend_from_slice(&torn[..torn.len() / 2]);
    let state_dir = e.config().state_dir.clone();
    std::fs::create_dir_all(state_dir.join(spool::DIR)).unwrap();
    std::fs::write(
        state_dir.join(spool::DIR).join("4000000-dead.spool"),
        &bytes,
    )
    .unwrap();

    let host = host_engine(&conf);
    assert!(tick_until(&[&host], || urls(&abs).len() == 3
        && spool_files(&state_dir).is_empty()));
    let hs = host.shipper_status().unwrap();
    assert_eq!((hs.spool_shipped, hs.spool_bad), (3, 1), "{hs:?}");
}

#[test]
fn the_spool_bounds_drop_and_count() {
    let abs = RefServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), &[&abs.addr]);
    let state_dir = e.config().state_dir.clone();
    let one = {
        let mut b = Vec::new();
        spool::encode(
            &check_and_record(&e, "192.0.2.23", "/shop/b/00", &[]),
            &mut b,
        );
        b.len() as u64
    };
    let s = Spool::new(
        e.clone(),
        SpoolOptions {
            dir: state_dir.join(spool::DIR),
            queue_capacity: 8,
            file_max: one * 4,
            total_max: one * 10 + one / 2,
        },
    );
    // The queue between ticks: 8 taken, the rest dropped without waiting.
    for i in 0..12 {
        let r = check_and_record(&e, "192.0.2.23", &format!("/shop/b/{i:02}"), &[]);
        assert_eq!(s.submit(r), i < 8);
    }
    s.flush();
    let st = s.status();
    assert_eq!((st.spooled, st.dropped_full), (8, 4), "{st:?}");
    // The directory's total: 10 records fit, the next are dropped.
    for i in 12..20 {
        let r = check_and_record(&e, "192.0.2.23", &format!("/shop/b/{i:02}"), &[]);
        assert!(s.submit(r));
        s.flush();
    }
    let st = s.status();
    assert_eq!((st.spooled, st.dropped_full, st.accepted), (10, 10, 16));
    // 8 records in one write, then a new file: a file that would pass
    // `file_max` is left for the uploader.
    assert_eq!(spool_files(&state_dir).len(), 2);

    let sh = Shipper::start(
        e.clone(),
        ShipperOptions {
            spool_dir: Some(state_dir.join(spool::DIR)),
            ..opts(false, dir.path())
        },
    )
    .unwrap();
    assert!(eventually(Duration::from_secs(10), || urls(&abs).len() == 10));
    assert_eq!(sh.status().spool_shipped, 10);
    assert!(sh.stop(Duration::from_secs(5)));
    assert!(spool_files(&state_dir).is_empty());
}
