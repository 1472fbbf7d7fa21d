//! `Enforcer::check` on a request carrying five identifiers, against 1M deny
//! entries of mixed kinds, 10k allow entries and 100 APIs.
//!
//! Run: `cargo bench --bench check`. Figures go in docs/BENCHMARKS.md.

use std::hint::black_box;
use std::path::Path;

use ase::enforcer::Enforcer;
use ase::policy::decide::{Action, Request};
use ase::policy::extract::{extract, parse_ip};
use ase::policy::{Api, ApiSet, IdKind, Identifier, Source};
use criterion::{Criterion, criterion_group, criterion_main};

/// `ASE_BENCH_DENY` scales the deny list down, e.g. for a run under callgrind.
fn deny_count() -> usize {
    std::env::var("ASE_BENCH_DENY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}
const ALLOW: usize = 10_000;
const APIS: usize = 100;

fn engine() -> Enforcer {
    let conf = ase::policy::config::parse_ase_conf(
        "enable_abs_attack=true\nenable_ase_detected_attack=true\n",
        Path::new("/bench/ase.conf"),
    )
    .unwrap();
    let apis = (0..APIS)
        .map(|i| {
            let host = if i % 4 == 0 { format!("host{i}.example.com") } else { "*".into() };
            let j = format!(
                r#"{{"api_metadata":{{"url":"/api{i}","hostname":"{host}","cookie":"JSESSIONID",
                "oauth2_access_token":true,"apikey_header":"X-API-KEY","username_header":"X-User",
                "enable_blocking":true,
                "api_pattern_enforcement":{{"methods_allowed":["GET","POST"]}},
                "decoy_config":{{"decoy_enabled":true,"response_code":200,"decoy_subpaths":["/api{i}/admin"]}}}}}}"#
            );
            Api::parse(&format!("api{i}"), j.as_bytes()).unwrap()
        })
        .collect();
    let e = Enforcer::new(conf, ApiSet::new(apis).unwrap());
    // 1M deny entries: a fifth of each kind, sources mixed; plus some CIDR ranges.
    let deny = deny_count();
    let mut entries = Vec::with_capacity(deny);
    for i in 0..deny {
        let id = match i % 5 {
            0 => Identifier::new(
                IdKind::Ip,
                "",
                &format!("10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255),
            ),
            1 => Identifier::new(IdKind::Cookie, "JSESSIONID", &format!("sess{i:012}")),
            2 => Identifier::new(IdKind::Token, "", &format!("tok{i:024}")),
            3 => Identifier::new(IdKind::ApiKey, "X-API-KEY", &format!("key{i:020}")),
            _ => Identifier::new(IdKind::Username, "", &format!("user{i}@example.com")),
        }
        .unwrap();
        entries.push((id, 0u64));
    }
    e.replace_source(Source::Abs, &entries);
    for net in [
        "192.0.2.0/24",
        "198.51.100.0/22",
        "2001:db8:100::/48",
        "172.16.0.0/12",
    ] {
        e.deny_add(
            &Identifier::new(IdKind::Ip, "", net).unwrap(),
            Source::Manual,
            0,
        );
    }
    for i in 0..ALLOW {
        let id = match i % 5 {
            0 => Identifier::new(
                IdKind::Ip,
                "",
                &format!("11.0.{}.{}", i >> 8 & 255, i & 255),
            ),
            1 => Identifier::new(IdKind::Cookie, "JSESSIONID", &format!("ok{i}")),
            2 => Identifier::new(IdKind::Token, "", &format!("oktok{i}")),
            3 => Identifier::new(IdKind::ApiKey, "X-API-KEY", &format!("okkey{i}")),
            _ => Identifier::new(IdKind::Username, "", &format!("ok{i}@example.com")),
        }
        .unwrap();
        e.allow_add(&id, 0);
    }
    // `ASE_BENCH_SNAPSHOT=1` moves both lists into a lists snapshot (as a
    // host's processes map it), leaving the overlay empty.
    if std::env::var_os("ASE_BENCH_SNAPSHOT").is_some() {
        let entries = e.with_lists(|l| l.entries(Source::ANY | ase::policy::lists::ALLOW));
        let bytes = ase::policy::snapshot::build(1, 0, entries).unwrap();
        let snap = ase::policy::snapshot::Snapshot::open(Box::new(bytes)).unwrap();
        e.install_snapshot(std::sync::Arc::new(snap));
        assert_eq!(e.overlay_len(), 0);
    }
    e
}

struct Req {
    ip: &'static str,
    cookie: String,
    auth: String,
    key: String,
    user: String,
}

impl Req {
    fn miss(ip: &'static str) -> Req {
        Req {
            ip,
            cookie: "JSESSIONID=nosuchsession0001; theme=dark".into(),
            auth: "Bearer nosuchtoken000000000000000".into(),
            key: "nosuchkey0000000000000".into(),
            user: "nobody@example.com".into(),
        }
    }
}

fn bench(c: &mut Criterion) {
    let e = engine();
    let mut g = c.benchmark_group("check");
    let cases: Vec<(&str, Req, Action)> = vec![
        ("miss_ipv4_5ids", Req::miss("203.0.113.7"), Action::Allow),
        (
            "miss_ipv6_5ids",
            Req::miss("2001:db8:ffff::7"),
            Action::Allow,
        ),
        ("hit_ipv4", Req::miss("10.0.3.7"), Action::Block),
        ("hit_ipv6_cidr", Req::miss("2001:db8:100::9"), Action::Block),
        ("hit_ipv4_cidr", Req::miss("198.51.101.20"), Action::Block),
        (
            "hit_cookie",
            Req {
                cookie: "JSESSIONID=sess000000000001; theme=dark".into(),
                ..Req::miss("203.0.113.7")
            },
            Action::Block,
        ),
        (
            "hit_token",
            Req {
                auth: "Bearer tok000000000000000000000002".into(),
                ..Req::miss("203.0.113.7")
            },
            Action::Block,
        ),
        (
            "hit_api_key",
            Req {
                key: "key00000000000000000003".into(),
                ..Req::miss("203.0.113.7")
            },
            Action::Block,
        ),
        (
            "hit_username",
            Req {
                user: "user4@example.com".into(),
                ..Req::miss("203.0.113.7")
            },
            Action::Block,
        ),
        ("allow_listed_ip", Req::miss("11.0.0.5"), Action::Allow),
    ];
    for (name, r, expected) in cases {
        let hs: Vec<(&[u8], &[u8])> = vec![
            (b"Host", b"shop.example.com"),
            (b"User-Agent", b"curl/8.0"),
            (b"Accept", b"*/*"),
            (b"Cookie", r.cookie.as_bytes()),
            (b"Authorization", r.auth.as_bytes()),
            (b"X-API-KEY", r.key.as_bytes()),
            (b"X-User", r.user.as_bytes()),
        ];
        let req = Request {
            client_ip: parse_ip(r.ip.as_bytes(), false),
            method: b"GET",
            scheme: b"https",
            host: b"shop.example.com",
            uri: b"/api57/items/42?page=2",
            headers: &hs[..],
            username: b"",
            unknown_api: None,
        };
        assert_eq!(e.check(&req).action, expected, "{name}");
        // `ASE_BENCH_LOOP=NAME` runs that case 100k times without criterion, for
        // instruction counts: `valgrind --tool=callgrind --toggle-collect=*Enforcer*check*`.
        if std::env::var("ASE_BENCH_LOOP").is_ok_and(|v| v == name) {
            for _ in 0..100_000 {
                black_box(e.check(black_box(&req)));
            }
            return;
        }
        // `ASE_BENCH_TRACE=NAME` prints that case's mean time per check in
        // each of 40 windows of 0.25 s, in one process: slow windows next to
        // fast ones point at the machine (another tenant on the same core),
        // not at the code or its layout; the fastest windows are the code's.
        // `ASE_BENCH_TRACE=extract` does the same for identifier extraction
        // alone, on the first case's request.
        match std::env::var("ASE_BENCH_TRACE").as_deref() {
            Ok(t) if t == name => {
                return trace(|| {
                    black_box(e.check(black_box(&req)));
                });
            }
            Ok("extract") => {
                let api = e.apis().find(req.host, b"/api57/items/42");
                let mut s = ase::policy::Scratch::default();
                return trace(|| {
                    let ids = extract(
                        black_box(api),
                        req.client_ip,
                        false,
                        req.uri,
                        black_box(&hs[..]),
                        b"",
                        &mut s,
                    );
                    black_box(ids);
                });
            }
            _ => {}
        }
        g.bench_function(name, |b| {
            b.iter(|| black_box(e.check(black_box(&req))).action)
        });
    }
    g.finish();
}

/// Runs `f` in 40 windows of 0.25 s and prints each window's mean time per call.
fn trace(mut f: impl FnMut()) {
    for _ in 0..40 {
        let (start, mut n) = (std::time::Instant::now(), 0u32);
        while start.elapsed() < std::time::Duration::from_millis(250) {
            for _ in 0..1000 {
                f();
            }
            n += 1000;
        }
        print!("{:.0} ", start.elapsed().as_nanos() as f64 / f64::from(n));
    }
    println!();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
