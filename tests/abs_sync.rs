//! ABS attack-list sync against the reference server on loopback: what a user
//! notices is which requests are blocked, and what status says.

mod common;

use std::sync::Arc;
use std::time::Duration;

use ase::clock::now_ms;
use ase::policy::Switch;
use ase::sync::abs::{AbsSink, Poller, PollerOptions};
use common::*;

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

fn poller(e: &Arc<ase::enforcer::Enforcer>, opts: PollerOptions) -> Poller {
    Poller::start(e.clone(), e.clone() as Arc<dyn AbsSink>, opts).unwrap()
}

const SECTION_FORM: &str = r#"{"attacklist": {
    "ips": ["10.0.0.1", {"ip": "172.16.0.0/12"}],
    "cookies": {"JSESSIONID": ["sess-bad", {"value": "sess-ttl", "ttl": 60}]},
    "oauth_tokens": [{"token": "tok-bad", "expires_at": "2999-01-01T00:00:00Z"}],
    "api_keys": ["key-unnamed", {"api_key": "key-named", "name": "x-api-key"}],
    "usernames": ["mallory"],
    "note": "unknown fields are ignored"
}}"#;

const REPORT_FORM: &str = r#"{"company": "ping identity", "attack_type": "Invalid API Activity",
    "cookie": "JSESSIONID", "api_name": "shop",
    "ips": [{"ip": "10.0.0.2", "details": [{"access_time": "Fri Jan 26 21:17:10:662 2018", "attack_code": "method"}]}],
    "cookies": [{"cookie": "sess-report", "details": []}],
    "access_tokens": [{"access_token": "tok-report", "details": []}]}"#;

/// One request per identifier kind of the section form; true = blocked.
fn section_kinds(e: &ase::enforcer::Enforcer) -> Vec<bool> {
    vec![
        blocked(e, "10.0.0.1", &[]),
        blocked(e, "172.20.1.1", &[]),
        blocked(e, "192.0.2.1", &[("Cookie", "JSESSIONID=sess-bad")]),
        blocked(e, "192.0.2.1", &[("Cookie", "a=b; JSESSIONID=sess-ttl")]),
        blocked(e, "192.0.2.1", &[("Authorization", "Bearer tok-bad")]),
        blocked(e, "192.0.2.1", &[("X-Api-Key", "key-unnamed")]),
        blocked(e, "192.0.2.1", &[("x-api-key", "key-named")]),
        blocked(e, "192.0.2.1", &[("X-User", "mallory")]),
    ]
}

fn report_kinds(e: &ase::enforcer::Enforcer) -> Vec<bool> {
    vec![
        blocked(e, "10.0.0.2", &[]),
        blocked(e, "192.0.2.1", &[("Cookie", "JSESSIONID=sess-report")]),
        blocked(e, "192.0.2.1", &[("Authorization", "Bearer tok-report")]),
    ]
}

#[test]
fn every_kind_in_both_shapes_blocks_and_dropped_entries_unblock() {
    let abs = RefServer::start(&[]);
    abs.set_list(SECTION_FORM);
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), &[&abs.addr]);
    let p = poller(&e, fast_poller());

    let st = p.sync_now(WAIT).unwrap();
    assert_eq!(st.last_error, None);
    assert_eq!(
        section_kinds(&e),
        vec![true; 8],
        "each section-form kind blocks"
    );
    assert!(
        !blocked(&e, "192.0.2.1", &[("X-User", "alice")]),
        "others pass"
    );
    assert_eq!(st.bad_items, 0);
    assert!(st.entries >= 8, "{st:?}");
    let q = abs.stats()["last_query"].as_str().unwrap().to_string();
    for part in ["earlier_date=", "later_date=", "status=active"] {
        assert!(q.contains(part), "query {q:?} lacks {part}");
    }

    // The regular loop (no sync_now) picks up the next list: the report form
    // blocks, and what the new list dropped is unblocked.
    abs.set_list(REPORT_FORM);
    assert!(
        eventually(Duration::from_secs(10), || report_kinds(&e)
            == vec![true; 3]),
        "report-form kinds block after the next poll"
    );
    assert_eq!(section_kinds(&e), vec![false; 8], "dropped entries unblock");
    assert!(p.stop(Duration::from_secs(5)));
}

#[test]
fn an_expired_entry_stops_blocking_before_the_next_sync() {
    let abs = RefServer::start(&[]);
    let expiry = now_ms() + 1500;
    abs.set_list(&format!(
        r#"{{"ips": [{{"ip": "10.9.9.9", "expiry": {expiry}}}, "10.9.9.8"]}}"#
    ));
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), &[&abs.addr]);
    let p = poller(
        &e,
        PollerOptions {
            interval: Duration::from_secs(3600),
            ..fast_poller()
        },
    );
    // The poller's own first sync may run before or together with this one.
    let syncs = p.sync_now(WAIT).unwrap().syncs;
    assert!(blocked(&e, "10.9.9.9", &[]));
    assert!(eventually(Duration::from_secs(10), || !blocked(
        &e,
        "10.9.9.9",
        &[]
    )));
    assert!(
        blocked(&e, "10.9.9.8", &[]),
        "the entry without expiry stays"
    );
    assert_eq!(p.status().syncs, syncs, "no sync happened in between");
}

#[test]
fn abs_failures_keep_the_last_good_list_and_show_in_status() {
    let abs = RefServer::start(&[]);
    abs.set_list(r#"{"ips": ["10.1.1.1"]}"#);
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), &[&abs.addr]);
    let p = poller(
        &e,
        PollerOptions {
            interval: Duration::from_secs(3600),
            ..fast_poller()
        },
    );
    assert_eq!(p.sync_now(WAIT).unwrap().last_error, None);
    assert!(blocked(&e, "10.1.1.1", &[]));

    let cases: [(&str, &str, &str); 5] = [
        ("down", "", "network error"),
        ("500", "", "HTTP 500"),
        ("slow", "3", "timed out"),
        ("malformed", "", "not valid JSON"),
        ("oversized", "2000000", "limit"),
    ];
    let mut failures = 0;
    for (mode, arg, want) in cases {
        abs.control(mode, arg);
        let st = p.sync_now(WAIT).unwrap();
        failures += 1;
        let err = st.last_error.clone().unwrap_or_default();
        assert!(
            err.to_lowercase().contains(&want.to_lowercase()),
            "{mode}: error {err:?} should mention {want:?}"
        );
        assert_eq!(st.consecutive_failures, failures, "{mode}");
        assert!(
            blocked(&e, "10.1.1.1", &[]),
            "{mode}: last good list in force"
        );
        assert_eq!(st.entries, 1, "{mode}");
    }
    abs.control("ok", "");

    // Wrong types: a section that is not a list refuses the whole body.
    abs.set_list(r#"{"ips": "10.2.2.2", "usernames": ["x"]}"#);
    let st = p.sync_now(WAIT).unwrap();
    assert!(
        st.last_error
            .as_deref()
            .unwrap_or("")
            .contains("ips is a string"),
        "{st:?}"
    );
    assert!(blocked(&e, "10.1.1.1", &[]) && !blocked(&e, "192.0.2.1", &[("X-User", "x")]));

    // Bad items are skipped and counted; the good ones apply.
    abs.set_list(r#"{"ips": ["10.3.3.3", "not-an-ip", 42]}"#);
    let st = p.sync_now(WAIT).unwrap();
    assert_eq!(
        (st.last_error.as_deref(), st.bad_items, st.entries),
        (None, 2, 1)
    );
    assert!(blocked(&e, "10.3.3.3", &[]) && !blocked(&e, "10.1.1.1", &[]));
    assert_eq!(st.consecutive_failures, 0);
    assert!(st.age(now_ms()).is_some());
}

#[test]
fn a_list_over_attack_list_memory_keeps_its_first_entries_and_counts_the_rest() {
    // 64MB, the smallest budget, holds 1,398,101 IP entries of 48 bytes
    // (policy::snapshot::entry_cost); the list has 1,410,000.
    const N: u32 = 1_410_000;
    const KEPT: u64 = (64 << 20) / 48;
    let ips: Vec<String> = (0..N)
        .map(|i| format!("\"10.{}.{}.{}\"", i >> 16, (i >> 8) & 255, i & 255))
        .collect();
    let abs = RefServer::start(&[]);
    abs.set_list(&format!(r#"{{"ips": [{}]}}"#, ips.join(",")));
    let dir = tempfile::tempdir().unwrap();
    let conf = write_config(dir.path(), &[&abs.addr], "enable_ssl=false\n");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("attack_list_memory=64MB\n");
    std::fs::write(&conf, text).unwrap();
    let e = Arc::new(ase::enforcer::Enforcer::open(&conf).unwrap());
    let mut opts = fast_poller();
    opts.client.max_body = 32 << 20;
    opts.client.request_timeout = Duration::from_secs(30);
    let p = poller(&e, opts);
    let st = p.sync_now(Some(Duration::from_secs(60))).unwrap();
    assert_eq!(st.last_error, None);
    assert_eq!(
        (st.entries, st.dropped_items, st.memory_bytes),
        (KEPT, N as u64 - KEPT, KEPT * 48)
    );
    let ip = |i: u64| format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
    assert!(blocked(&e, &ip(0), &[]) && blocked(&e, &ip(KEPT - 1), &[]));
    assert!(!blocked(&e, &ip(KEPT), &[]) && !blocked(&e, &ip(N as u64 - 1), &[]));
    assert_eq!(e.stats().deny_entries, KEPT);
}

#[test]
fn wrong_keys_are_refused_and_reported_without_the_keys() {
    let abs = RefServer::start(&["--access-key", "other_ak", "--secret-key", "other_sk"]);
    abs.set_list(r#"{"ips": ["10.1.1.1"]}"#);
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), &[&abs.addr]);
    let p = poller(&e, fast_poller());
    let st = p.sync_now(WAIT).unwrap();
    let err = st.last_error.unwrap();
    assert!(err.contains("401"), "{err}");
    assert!(!err.contains("abs_ak") && !err.contains("abs_sk"), "{err}");
    assert!(!blocked(&e, "10.1.1.1", &[]));
}

#[test]
fn fails_over_to_the_next_endpoint() {
    let sick = RefServer::start(&[]);
    sick.control("malformed", "");
    let good = RefServer::start(&[]);
    good.set_list(r#"{"usernames": ["eve"]}"#);
    let dead = dead_endpoint();
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), &[&dead, &sick.addr, &good.addr]);
    let p = poller(&e, fast_poller());
    let st = p.sync_now(WAIT).unwrap();
    assert_eq!(st.last_error, None);
    assert_eq!(st.last_endpoint.as_deref(), Some(good.addr.as_str()));
    assert!(blocked(&e, "192.0.2.1", &[("X-User", "eve")]));
}

#[test]
fn disable_abs_attack_stops_polling_and_abs_entries_stop_blocking() {
    let abs = RefServer::start(&[]);
    abs.set_list(r#"{"ips": ["10.4.4.4"]}"#);
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), &[&abs.addr]);
    let p = poller(&e, fast_poller());
    assert!(eventually(Duration::from_secs(10), || blocked(
        &e,
        "10.4.4.4",
        &[]
    )));
    e.set_switch(Switch::AbsAttack, false);
    assert!(
        !blocked(&e, "10.4.4.4", &[]),
        "abs entries stop blocking at once"
    );
    std::thread::sleep(Duration::from_millis(300));
    let hits = abs.stats()["attacklist"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        abs.stats()["attacklist"].as_u64().unwrap(),
        hits,
        "no polling while off"
    );
    assert!(!p.status().enabled);
    e.set_switch(Switch::AbsAttack, true);
    assert!(blocked(&e, "10.4.4.4", &[]));
    assert!(eventually(Duration::from_secs(10), || {
        abs.stats()["attacklist"].as_u64().unwrap() > hits
    }));
}

/// A CA and a server certificate for 127.0.0.1 signed by it: (ca pem, cert pem, key pem).
fn tls_material() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca_cert, &ca_key)
        .unwrap();
    (ca_cert.pem(), leaf.pem(), key.serialize_pem())
}

#[test]
fn tls_is_verified_and_an_untrusted_certificate_keeps_the_last_list() {
    let files = tempfile::tempdir().unwrap();
    let write = |name: &str, s: &str| {
        let p = files.path().join(name);
        std::fs::write(&p, s).unwrap();
        p.to_string_lossy().into_owned()
    };
    let (ca, cert, key) = tls_material();
    let (ca_pem, cert_pem, key_pem) = (
        write("ca.pem", &ca),
        write("a.pem", &cert),
        write("a.key", &key),
    );
    let mut abs = RefServer::start(&["--tls-cert", &cert_pem, "--tls-key", &key_pem]);
    abs.set_list(r#"{"ips": ["10.5.5.5"]}"#);

    let dir = tempfile::tempdir().unwrap();
    let conf = write_config(
        dir.path(),
        &[&abs.addr],
        &format!("enable_ssl=true\nabs_ca_cert_path={ca_pem}\n"),
    );
    let e = Arc::new(ase::enforcer::Enforcer::open(&conf).unwrap());
    let p = poller(&e, fast_poller());
    assert_eq!(p.sync_now(WAIT).unwrap().last_error, None);
    assert!(blocked(&e, "10.5.5.5", &[]));

    // The same address now presents a certificate from another CA.
    let (_, cert2, key2) = tls_material();
    let (cert2, key2) = (write("b.pem", &cert2), write("b.key", &key2));
    let addr = abs.addr.clone();
    abs.kill();
    let list_dir = tempfile::tempdir().unwrap();
    let abs2 = RefServer::start_in(
        list_dir,
        &["--listen", &addr, "--tls-cert", &cert2, "--tls-key", &key2],
    );
    abs2.set_list(r#"{"ips": []}"#);
    let st = p.sync_now(WAIT).unwrap();
    let err = st.last_error.unwrap_or_default();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert!(blocked(&e, "10.5.5.5", &[]), "last good list in force");

    // Without abs_ca_cert_path the built-in public roots do not trust a private CA.
    let dir2 = tempfile::tempdir().unwrap();
    let conf2 = write_config(dir2.path(), &[&addr], "enable_ssl=true\n");
    let e2 = Arc::new(ase::enforcer::Enforcer::open(&conf2).unwrap());
    let p2 = poller(&e2, fast_poller());
    let err2 = p2.sync_now(WAIT).unwrap().last_error.unwrap_or_default();
    assert!(err2.to_lowercase().contains("certificate"), "{err2}");
}

#[test]
fn the_same_list_again_is_not_written_again_unless_entries_went_missing() {
    let abs = RefServer::start(&[]);
    abs.set_list(r#"{"ips": ["10.9.0.1", "10.9.0.2"]}"#);
    let dir = tempfile::tempdir().unwrap();
    let conf = write_config(dir.path(), &[&abs.addr], "enable_ssl=false\n");
    let e = ase::engine::Engine::open(&conf).unwrap();
    let store = ase::store::Store::open(&e.config().state_dir).unwrap();
    let sync = |what: &str| {
        let st = e.abs_sync_now(Duration::from_secs(10)).unwrap();
        assert_eq!(st.last_error, None, "{what}");
        store.last_seq().unwrap()
    };
    let first = sync("first");
    assert_eq!(sync("same list"), first, "not written again");
    // A clear takes the entries away: the same list is written again.
    e.deny_clear(ase::policy::Source::ANY).unwrap();
    let cleared = store.last_seq().unwrap();
    assert!(sync("after a clear") > cleared, "written again");
    let ip = |s: &str| {
        let h: [(&[u8], &[u8]); 0] = [];
        e.check(&ase::policy::Request {
            client_ip: Some(ase::policy::ident::ip_to_u128(s.parse().unwrap())),
            method: b"GET",
            scheme: b"http",
            host: b"x",
            uri: b"/shop/a",
            headers: &h,
            username: b"",
            unknown_api: None,
        })
        .stops()
    };
    assert!(ip("10.9.0.2"), "enforced again");
    // Another list is written.
    abs.set_list(r#"{"ips": ["10.9.0.3"]}"#);
    let before = store.last_seq().unwrap();
    assert!(sync("new list") > before);
    assert!(ip("10.9.0.3") && !ip("10.9.0.2"));
}
