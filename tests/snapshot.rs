//! One copy of the lists per host: the snapshot file every engine maps, the
//! host role that builds it, a damaged file refused and rebuilt, and the
//! role taken over when its holder is killed.
//!
//! The engine killed with `kill -9` is this test binary run again with
//! [`CHILD_ENV`] set (it opens an engine and waits).

mod store_common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ase::engine::{Engine, EngineOptions};
use ase::policy::ident::ip_to_u128;
use ase::policy::{IdKind, Identifier, Request, Source};
use ase::store::{NewEntry, Store};
use ase::sync::snapshot::{self, FILE, SnapshotBuilder};
use store_common::Env;

const CHILD_ENV: &str = "ASE_TEST_SNAPSHOT_CHILD";

fn stops(e: &Engine, ip: &str) -> bool {
    let headers: [(&[u8], &[u8]); 0] = [];
    let req = Request {
        client_ip: Some(ip_to_u128(ip.parse().unwrap())),
        method: b"GET",
        scheme: b"http",
        host: b"example.test",
        uri: b"/shop/items",
        headers: &headers,
        username: b"",
        unknown_api: None,
    };
    e.check(&req).stops()
}

fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

fn ip_of(i: u32) -> String {
    format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255)
}

/// Replaces the ABS list in the store, as the poller does.
fn abs_list(state_dir: &Path, n: u32) {
    let s = Store::open(state_dir).unwrap();
    let rows: Vec<NewEntry> = (0..n)
        .map(|i| NewEntry::new(Identifier::new(IdKind::Ip, "", &ip_of(i)).unwrap(), 0))
        .collect();
    s.replace_source(Source::Abs, &rows).unwrap();
}

fn evented(config: &Path, host_role: bool) -> Engine {
    Engine::open_with(
        config,
        EngineOptions {
            evented: true,
            host_role,
        },
    )
    .unwrap()
}

/// Ticks an evented engine until `f` holds or `limit` passes.
fn tick_until(e: &Engine, limit: Duration, mut f: impl FnMut(&Engine) -> bool) -> bool {
    eventually(limit, || {
        e.tick();
        f(e)
    })
}

/// The nice value of this process's thread called `name` (as the kernel
/// shows names: cut to 15 bytes), if there is one.
fn thread_nice(name: &str) -> Option<i64> {
    std::fs::read_dir("/proc/self/task")
        .ok()?
        .flatten()
        .find_map(|t| {
            let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
            if comm.trim_end() != name {
                return None;
            }
            nice_in(t.path().join("stat"))
        })
}

/// The nice value in a thread's `stat` file.
fn nice_in(stat: impl AsRef<Path>) -> Option<i64> {
    let stat = std::fs::read_to_string(stat).ok()?;
    // After the parenthesised name: state is field 3, nice field 19.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(16)?.parse().ok()
}

#[test]
fn a_bulk_list_reaches_every_engine_through_one_snapshot() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let env = Env::new("enable_abs_attack=true");
    let a = Engine::open(&env.config).unwrap();
    let b = Engine::open(&env.config).unwrap();
    let c = evented(&env.config, false);
    let n = 20_000;
    abs_list(&env.state_dir(), n);
    let last = ip_of(n - 1);
    for (name, e) in [("a", &a), ("b", &b), ("c", &c)] {
        assert!(
            tick_until(e, Duration::from_secs(30), |e| stops(e, &last)),
            "{name}: the last entry blocks"
        );
        let h = e.health();
        assert!(h.snapshot_seq > 0, "{name}: on a snapshot: {h:?}");
        assert!(
            h.overlay_entries < 10,
            "{name}: the list is not copied: {h:?}"
        );
        assert_eq!(h.full_loads, 1, "{name}: loaded once, at start: {h:?}");
        assert_eq!(e.enforcer().stats().deny_entries, n as u64, "{name}");
    }
    assert!(!stops(&c, "11.0.0.1"));
    let roles = [&a, &b, &c].iter().filter(|e| e.health().host_role).count();
    assert_eq!(roles, 1, "one process of the host builds");
    assert!(!c.health().host_role, "not the one told not to");
    // Builds run below the priority of the threads that check requests.
    assert_eq!(
        thread_nice("ase-host"),
        nice_in("/proc/thread-self/stat").map(|n| (n + 10).min(19)),
        "the host-role thread's nice value"
    );
    let status = env.ok(&["status"]);
    let row = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} in\n{status}"))
            .to_string()
    };
    assert!(row("host role").contains(&format!("pid {}", std::process::id())));
    assert!(
        row("lists snapshot").contains(&format!("{n} entries")),
        "{status}"
    );
    assert!(row("running engines").ends_with(": 3"), "{status}");

    // A change after the snapshot is in force everywhere at once, in the
    // overlay, until the next snapshot holds it.
    a.deny_remove(&Identifier::new(IdKind::Ip, "", &last).unwrap())
        .unwrap();
    for e in [&a, &b] {
        assert!(eventually(Duration::from_secs(5), || !stops(e, &last)));
    }
    assert!(tick_until(&c, Duration::from_secs(5), |e| !stops(e, &last)));
}

#[test]
fn a_damaged_snapshot_is_refused_shown_and_rebuilt() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let env = Env::new("enable_abs_attack=true");
    let dir = env.state_dir();
    // No builder runs: the test builds, as the host role would.
    let e = evented(&env.config, false);
    abs_list(&dir, 1_000);
    let store = Store::open(&dir).unwrap();
    snapshot::build(&store, &dir).unwrap();
    assert!(tick_until(&e, Duration::from_secs(10), |e| stops(
        e,
        "10.0.3.231"
    )));
    let good = e.health().snapshot_seq;
    assert!(good > 0);

    // Damaged copies put in place (as a bad disk or a hand would): one byte
    // flipped, and one cut short. Each is refused and named in health;
    // the lists in force stay.
    let bytes = std::fs::read(dir.join(FILE)).unwrap();
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    let cut = bytes[..bytes.len() - 100].to_vec();
    for (what, bad) in [("flipped", flipped), ("truncated", cut)] {
        let tmp = dir.join("bad.tmp");
        std::fs::write(&tmp, &bad).unwrap();
        std::fs::rename(&tmp, dir.join(FILE)).unwrap();
        assert!(
            tick_until(&e, Duration::from_secs(10), |e| e
                .health()
                .snapshot_error
                .is_some()),
            "{what}: refused"
        );
        let err = e.health().snapshot_error.unwrap();
        assert!(err.contains(FILE), "{what}: names the file: {err}");
        assert_eq!(e.health().snapshot_seq, good, "{what}: the good one stays");
        assert!(stops(&e, "10.0.3.231"), "{what}: still enforced");
        assert!(
            snapshot::open(&dir).is_err(),
            "{what}: a fresh check refuses it too"
        );

        // The builder checks a file it did not write, finds it bad and
        // builds it again.
        let mut b = SnapshotBuilder::new(dir.clone());
        assert!(b.step(&store), "{what}: rebuilt");
        assert!(snapshot::open(&dir).unwrap().is_some());
        assert!(
            tick_until(&e, Duration::from_secs(10), |e| e
                .health()
                .snapshot_error
                .is_none()),
            "{what}: the rebuilt one is taken"
        );
        assert!(stops(&e, "10.0.3.231"));
    }
}

/// The child: an engine that holds the host role until it is killed.
fn child_main(config: &str) {
    let e = Engine::open(Path::new(config)).unwrap();
    let t = Instant::now();
    while !e.health().host_role && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("@@host {}", e.health().host_role);
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn the_host_role_moves_on_when_its_holder_is_killed_mid_build() {
    if let Some(c) = std::env::var_os(CHILD_ENV) {
        child_main(c.to_str().unwrap());
        return;
    }
    let env = Env::new("enable_abs_attack=true");
    let dir = env.state_dir();
    let mut child: Child = Command::new(std::env::current_exe().unwrap())
        .args([
            "the_host_role_moves_on_when_its_holder_is_killed_mid_build",
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(CHILD_ENV, &env.config)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("@@host") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child exited");
    }
    assert_eq!(line.trim(), "@@host true");
    let e = evented(&env.config, true);
    // A list large enough that its build takes a while; the child starts
    // building it and is killed in the middle.
    abs_list(&dir, 200_000);
    let tmp_seen = eventually(Duration::from_secs(20), || {
        std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .any(|f| f.file_name().to_string_lossy().ends_with(".tmp"))
    });
    child.kill().unwrap();
    let killed = Instant::now();
    child.wait().unwrap();
    assert!(
        tick_until(&e, Duration::from_secs(5), |e| e.health().host_role),
        "the role is taken"
    );
    let took = killed.elapsed();
    assert!(took <= Duration::from_secs(2), "taken within 2 s: {took:?}");
    // The new holder builds the list, and the engine moves onto it.
    assert!(tick_until(&e, Duration::from_secs(60), |e| stops(
        e,
        &ip_of(199_999)
    )));
    assert!(e.health().snapshot_seq > 0);
    eprintln!("mid-build kill: {tmp_seen}, role taken in {took:?}");
}

#[test]
fn ase_agent_takes_the_host_role_for_thread_free_engines() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let env = Env::new("enable_abs_attack=true");
    let e = evented(&env.config, false);
    let mut agent = Command::new(env!("CARGO_BIN_EXE_ase-agent"))
        .arg("--config")
        .arg(&env.config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    abs_list(&env.state_dir(), 5_000);
    assert!(
        tick_until(&e, Duration::from_secs(30), |e| stops(e, &ip_of(4_999))),
        "the agent's snapshot reaches the engine"
    );
    assert!(!e.health().host_role);
    let pid = agent.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let t = Instant::now();
    let status = loop {
        if let Some(s) = agent.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "stops on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut agent.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("host role held"), "{err}");
    assert!(err.contains("stopping"), "{err}");
}
