//! Store figures (not a test): import rate through the real `ase-cli`, load
//! of a million stored entries into an engine, and propagation delay from a
//! committed change to enforcement by a running engine.
//!
//! `cargo bench --bench store` (ENTRIES=N to change the list size).

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ase::engine::Engine;
use ase::policy::ident::ip_to_u128;
use ase::policy::{IdKind, Identifier, Request, Source};
use ase::store::{List, NewEntry, Store};

fn blocked(node: &Engine, ip: &str) -> bool {
    let headers: [(&[u8], &[u8]); 0] = [];
    let req = Request {
        client_ip: Some(ip_to_u128(ip.parse().unwrap())),
        method: b"GET",
        scheme: b"http",
        host: b"h",
        uri: b"/x",
        headers: &headers,
        username: b"",
        unknown_api: None,
    };
    node.enforcer().check(&req).stops()
}

fn conf(dir: &Path, poll: &str) -> std::path::PathBuf {
    let c = dir.join(format!("ase-{poll}.conf"));
    std::fs::write(
        &c,
        format!("enable_firewall=true\nsync_poll_interval={poll}\nstate_dir=state\n"),
    )
    .unwrap();
    c
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let n: usize = std::env::var("ENTRIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let config = conf(dir.path(), "100ms");

    // 1. Import through the CLI: one transaction, prepared statements.
    let file = dir.path().join("list.txt");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        for i in 0..n {
            match i % 4 {
                0 | 1 => writeln!(f, "ip 10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255),
                2 => writeln!(f, "token tok-{i:016x}"),
                _ => writeln!(f, "cookie JSESSIONID s{i:012}"),
            }
            .unwrap();
        }
    }
    let cli = env!("CARGO_BIN_EXE_ase-cli");
    let args = [
        "--config",
        config.to_str().unwrap(),
        "-u",
        "admin",
        "-p",
        "admin",
    ];
    assert!(
        Command::new(cli)
            .args(args)
            .arg("status")
            .output()
            .unwrap()
            .status
            .success()
    );
    let t = Instant::now();
    let o = Command::new(cli)
        .args(args)
        .args(["import_blacklist", file.to_str().unwrap()])
        .output()
        .unwrap();
    let import = t.elapsed();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    println!(
        "import_blacklist {n} entries (ase-cli, one process): {:.2} s, {:.0} entries/s",
        import.as_secs_f64(),
        n as f64 / import.as_secs_f64()
    );

    // 2. Load of the stored entries by a new engine process (Engine::open).
    let t = Instant::now();
    let node = Engine::open(&config).unwrap();
    let load = t.elapsed();
    assert_eq!(node.enforcer().stats().deny_entries, n as u64);
    println!(
        "Engine::open with {n} stored entries (config + full load): {:.2} s",
        load.as_secs_f64()
    );
    let s = Store::open(&dir.path().join("state")).unwrap();
    let t = Instant::now();
    let (d, _) = s.load().unwrap();
    println!(
        "Store::load alone ({} entries into a new map): {:.2} s",
        d.len(),
        t.elapsed().as_secs_f64()
    );
    drop(d);
    drop(node);

    // 3. Propagation: commit in one connection (as the CLI does), time until
    // a running engine blocks it. The CLI's own start-up (~credential check)
    // comes before the commit and is not part of the delay.
    for (round, poll) in ["100ms", "20ms"].into_iter().enumerate() {
        let node = Engine::open(&conf(dir.path(), poll)).unwrap();
        let mut v = Vec::new();
        for i in 0..40u32 {
            let ip = format!("192.{}.{}.{}", 168 + round, i / 250, i % 250 + 1);
            let id = Identifier::new(IdKind::Ip, "", &ip).unwrap();
            let t = Instant::now();
            s.add(List::Deny, &NewEntry::new(id, 0), Source::Manual)
                .unwrap();
            let committed = t.elapsed();
            while !blocked(&node, &ip) {
                std::thread::sleep(Duration::from_micros(200));
            }
            v.push(t.elapsed() - committed);
            // Spread the samples over the poll phase.
            std::thread::sleep(Duration::from_millis(7 * (i as u64 % 5)));
        }
        println!(
            "propagation at sync_poll_interval={poll} over {n} entries: median {:.1} ms, p90 {:.1} ms, max {:.1} ms",
            percentile(&mut v, 0.5).as_secs_f64() * 1e3,
            percentile(&mut v, 0.9).as_secs_f64() * 1e3,
            percentile(&mut v, 1.0).as_secs_f64() * 1e3
        );
    }

    // The same through the real binary end to end: CLI start to enforcement.
    let node = Engine::open(&config).unwrap();
    let mut v = Vec::new();
    for i in 0..10u32 {
        let ip = format!("192.169.0.{}", i + 1);
        let t = Instant::now();
        let o = Command::new(cli)
            .args(args)
            .args(["add_blacklist", "ip", &ip])
            .output()
            .unwrap();
        assert!(o.status.success());
        let cli_done = t.elapsed();
        while !blocked(&node, &ip) {
            std::thread::sleep(Duration::from_micros(200));
        }
        v.push((cli_done, t.elapsed()));
    }
    let (cli_med, all_med) = {
        let mut a: Vec<Duration> = v.iter().map(|x| x.0).collect();
        let mut b: Vec<Duration> = v.iter().map(|x| x.1).collect();
        (percentile(&mut a, 0.5), percentile(&mut b, 0.5))
    };
    println!(
        "ase-cli add_blacklist: process run {:.0} ms (median), run + enforcement {:.0} ms (median, 100ms poll)",
        cli_med.as_secs_f64() * 1e3,
        all_med.as_secs_f64() * 1e3
    );
}
