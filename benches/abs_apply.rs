//! Applying a 1M-entry ABS attack list: parse and apply time, memory (RSS, and
//! the estimate `attack_list_memory` is checked against), and the `check`
//! latency p99 while an apply is in flight compared with normal.
//! Run: `cargo bench --bench abs_apply`. Figures go to docs/BENCHMARKS.md.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use ase::enforcer::Enforcer;
use ase::policy::Request;
use ase::policy::ident::ip_to_u128;
use ase::policy::snapshot::entry_cost;
use ase::sync::abs::attacklist::{ParseOptions, parse};
use ase::sync::abs::{AbsSink, AttackList};
use criterion::{Criterion, criterion_group, criterion_main};

const N: usize = 1_000_000;

fn engine(dir: &std::path::Path) -> Arc<Enforcer> {
    std::fs::create_dir_all(dir.join("api")).unwrap();
    std::fs::write(
        dir.join("api/shop.json"),
        r#"{"api_metadata": {"url": "/shop", "hostname": "*", "cookie": "JSESSIONID",
            "oauth2_access_token": true, "apikey_header": "X-Api-Key", "enable_blocking": true}}"#,
    )
    .unwrap();
    std::fs::write(dir.join("ase.conf"), "enable_abs_attack=true\n").unwrap();
    Arc::new(Enforcer::open(&dir.join("ase.conf")).unwrap())
}

/// A section-form body of `N` entries: 60% IPs, 20% tokens (with a TTL),
/// 10% cookies, 10% users. Written as text, so building it leaves no large
/// freed heap behind to blur the RSS figures.
fn body() -> Vec<u8> {
    use std::fmt::Write;
    let (mut ips, mut toks, mut cookies, mut users) =
        (String::new(), String::new(), String::new(), String::new());
    for i in 0..N {
        let _ = match i % 10 {
            0..=5 => write!(
                ips,
                "\"10.{}.{}.{}\",",
                (i >> 16) & 255,
                (i >> 8) & 255,
                i & 255
            ),
            6 | 7 => write!(toks, "{{\"token\":\"tok-{i:016x}\",\"ttl\":120}},"),
            8 => write!(cookies, "\"sess-{i:016x}\","),
            _ => write!(users, "\"user{i}\","),
        };
    }
    for s in [&mut ips, &mut toks, &mut cookies, &mut users] {
        s.pop();
    }
    format!(
        r#"{{"attacklist": {{"ips": [{ips}], "oauth_tokens": [{toks}], "cookies": {{"JSESSIONID": [{cookies}]}}, "usernames": [{users}]}}}}"#
    )
    .into_bytes()
}

fn parse_body(b: &[u8]) -> AttackList {
    parse(
        b,
        ParseOptions {
            now_ms: ase::clock::now_ms(),
            api_key_names: &[],
        },
    )
    .unwrap()
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// p50 / p99 / max in ns of single `check` calls over `dur` (a listed and unlisted mix).
fn check_latency(e: &Enforcer, dur: Duration) -> (u64, u64, u64, usize) {
    let hdrs: [(&[u8], &[u8]); 2] = [
        (b"authorization", b"Bearer tok-0000000000000006"),
        (b"cookie", b"JSESSIONID=nope"),
    ];
    let mut lat = Vec::with_capacity(4_000_000);
    let end = Instant::now() + dur;
    let mut i = 0u32;
    while Instant::now() < end {
        for _ in 0..1000 {
            i = i.wrapping_add(7919);
            let ip = ip_to_u128(std::net::Ipv4Addr::from(0x0a00_0000 | (i & 0x1f_ffff)).into());
            let req = Request {
                client_ip: Some(ip),
                method: b"GET",
                scheme: b"http",
                host: b"shop.example",
                uri: b"/shop/items",
                headers: &hdrs,
                username: b"",
                unknown_api: None,
            };
            let t = Instant::now();
            black_box(e.check(black_box(&req)));
            lat.push(t.elapsed().as_nanos() as u64);
        }
    }
    lat.sort_unstable();
    let q = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize];
    (q(0.5), q(0.99), *lat.last().unwrap(), lat.len())
}

fn figures() {
    let mib = |kib: u64| kib as f64 / 1024.0;
    let rss0 = rss_kib();
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let b = body();
    let rss1 = rss_kib();
    let t = Instant::now();
    let list = parse_body(&b);
    let parse_t = t.elapsed();
    let entries = list.entries.len();
    let rss2 = rss_kib();
    let estimate: u64 = list
        .entries
        .iter()
        .map(|(id, _)| entry_cost(id.kind, id.name.len(), id.value.len()))
        .sum();
    let t = Instant::now();
    e.replace_abs(list.entries).unwrap();
    let apply_t = t.elapsed();
    let rss3 = rss_kib();
    println!(
        "ABS figures: body {:.1} MiB, {entries} entries; parse {parse_t:?}, first apply {apply_t:?}",
        b.len() as f64 / 1048576.0
    );
    println!(
        "ABS figures: RSS start {:.0} MiB, body built {:.0} MiB, parsed {:.0} MiB, applied {:.0} MiB (parsed Vec consumed)",
        mib(rss0),
        mib(rss1),
        mib(rss2),
        mib(rss3)
    );
    println!(
        "ABS figures: estimated list memory {:.1} MiB ({:.1} bytes an entry), attack_list_memory {:.0} MiB",
        estimate as f64 / 1048576.0,
        estimate as f64 / entries as f64,
        e.config().attack_list_memory as f64 / 1048576.0
    );

    let (p50, p99, max, n) = check_latency(&e, Duration::from_secs(3));
    println!(
        "ABS figures: check with 1M listed, idle:        p50 {p50} ns, p99 {p99} ns, max {max} ns ({n} checks)"
    );

    // Re-apply the same-size list in a loop on another thread while checking.
    let stop = Arc::new(AtomicBool::new(false));
    let applier = {
        let e = e.clone();
        let stop = stop.clone();
        let b = b.clone();
        std::thread::spawn(move || {
            let mut applies = 0;
            while !stop.load(Relaxed) {
                e.replace_abs(parse_body(&b).entries).unwrap();
                applies += 1;
            }
            applies
        })
    };
    let (p50, p99, max, n) = check_latency(&e, Duration::from_secs(6));
    stop.store(true, Relaxed);
    let applies = applier.join().unwrap();
    println!(
        "ABS figures: check while 1M lists are applied: p50 {p50} ns, p99 {p99} ns, max {max} ns ({n} checks, {applies} applies)"
    );
}

fn bench(c: &mut Criterion) {
    figures();
    if std::env::var_os("ABS_BENCH_FIGURES_ONLY").is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let b = body();
    let mut g = c.benchmark_group("abs_apply");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("parse_1m", |bn| bn.iter(|| black_box(parse_body(&b))));
    let list = parse_body(&b);
    g.bench_function("replace_1m", |bn| {
        bn.iter(|| e.replace_abs(list.entries.clone()).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
