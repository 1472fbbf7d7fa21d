//! The shared store across processes: propagation to running engines,
//! real-time detections shared between engines, durability under `kill -9`,
//! concurrent writers, a corrupt store and `fail_mode`, file ownership.
//!
//! Engines in other processes are this test binary run again with
//! [`CHILD_ENV`] set: the test that spawned it then acts as a small engine
//! host driven over stdin/stdout (lines starting with `@@`; libtest's own
//! output is ignored).

mod store_common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ase::enforcer::Enforcer;
use ase::engine::Engine;
use ase::policy::ident::ip_to_u128;
use ase::policy::{IdKind, Identifier, Reason, Request, Source};
use ase::store::{List, NewEntry, Store};
use store_common::{Env, assert_success};

const CHILD_ENV: &str = "ASE_TEST_CHILD_CONFIG";

/// Whether a request from `ip` to `uri` is stopped (blocked or answered).
fn stops(e: &Enforcer, ip: &str, uri: &str) -> bool {
    let headers: [(&[u8], &[u8]); 0] = [];
    let req = Request {
        client_ip: Some(ip_to_u128(ip.parse().unwrap())),
        method: b"GET",
        scheme: b"http",
        host: b"example.test",
        uri: uri.as_bytes(),
        headers: &headers,
        username: b"",
        unknown_api: None,
    };
    e.check(&req).stops()
}

/// Polls until `stops(ip)` equals `want` or `limit` passes; the time it took.
fn wait_for(e: &Enforcer, ip: &str, want: bool, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if stops(e, ip, "/shop/items") == want {
            return Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

/// The child side: an engine in its own process.
fn child_main(config: &str) {
    let engine = Engine::open(Path::new(config)).unwrap();
    println!("@@ready");
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["wait", ip, want, ms] => {
                let r = wait_for(
                    engine.enforcer(),
                    ip,
                    *want == "block",
                    Duration::from_millis(ms.parse().unwrap()),
                );
                match r {
                    Some(d) => println!("@@ok {}", d.as_millis()),
                    None => println!("@@timeout"),
                }
            }
            ["request", ip, uri] => println!("@@{}", stops(engine.enforcer(), ip, uri)),
            _ => break,
        }
    }
}

/// An engine process; killed when dropped.
struct ChildEngine {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl ChildEngine {
    fn spawn(test: &str, config: &Path) -> ChildEngine {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([test, "--exact", "--nocapture", "--test-threads=1", "-q"])
            .env(CHILD_ENV, config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                if let Some(l) = l.strip_prefix("@@") {
                    let _ = tx.send(l.to_string());
                }
            }
        });
        let c = ChildEngine {
            child,
            stdin,
            lines,
        };
        assert_eq!(c.next(), "ready");
        c
    }

    fn next(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(20))
            .expect("child engine answers")
    }

    fn ask(&mut self, cmd: &str) -> String {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        self.next()
    }
}

impl Drop for ChildEngine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn millis(answer: &str) -> u64 {
    answer
        .strip_prefix("ok ")
        .unwrap_or_else(|| panic!("engine did not see the change in time: {answer}"))
        .parse()
        .unwrap()
}

#[test]
fn cli_change_is_enforced_by_an_engine_in_another_process() {
    if let Ok(c) = std::env::var(CHILD_ENV) {
        return child_main(&c);
    }
    let e = Env::new("");
    // The engine process creates the store; the CLI then changes it.
    let mut engine = ChildEngine::spawn(
        "cli_change_is_enforced_by_an_engine_in_another_process",
        &e.config,
    );
    assert_eq!(engine.ask("request 9.9.9.9 /shop/items"), "false");
    e.ok(&["add_blacklist", "ip", "9.9.9.9"]);
    let added = millis(&engine.ask("wait 9.9.9.9 block 1000"));
    e.ok(&["delete_blacklist", "ip", "9.9.9.9"]);
    let deleted = millis(&engine.ask("wait 9.9.9.9 allow 1000"));
    e.ok(&["add_blacklist", "ip", "9.9.0.0/16"]);
    millis(&engine.ask("wait 9.9.200.1 block 1000"));
    e.ok(&["disable_firewall"]);
    millis(&engine.ask("wait 9.9.200.1 allow 1000"));
    eprintln!("propagation: add {added} ms, delete {deleted} ms (sync_poll_interval 20ms)");
    drop(engine);

    // A restarted engine loads the same state.
    e.ok(&["enable_firewall"]);
    let engine = Engine::open(&e.config).unwrap();
    assert!(stops(engine.enforcer(), "9.9.1.1", "/shop/items"));
    assert!(!stops(engine.enforcer(), "9.8.1.1", "/shop/items"));
}

#[test]
fn detection_in_one_engine_is_enforced_by_another_process() {
    if let Ok(c) = std::env::var(CHILD_ENV) {
        return child_main(&c);
    }
    let e = Env::new("enable_ase_detected_attack=true");
    let here = Engine::open(&e.config).unwrap();
    let mut there = ChildEngine::spawn(
        "detection_in_one_engine_is_enforced_by_another_process",
        &e.config,
    );
    assert!(!stops(here.enforcer(), "7.7.7.7", "/shop/items"));
    // The other process serves the decoy and records the client.
    assert_eq!(there.ask("request 7.7.7.7 /shop/admin"), "true");
    let took = wait_for(here.enforcer(), "7.7.7.7", true, Duration::from_secs(1))
        .expect("a detection made in another process blocks here within 1 s");
    eprintln!("detection shared in {} ms", took.as_millis());
    assert_eq!(
        e.ok(&["view_blacklist", "decoy"]),
        "Realtime Decoy Blacklist\n1) type : ip, value : 7.7.7.7\n"
    );
    // Turning detection off deletes the entry everywhere.
    e.ok(&["disable_ase_detected_attack"]);
    assert!(wait_for(here.enforcer(), "7.7.7.7", false, Duration::from_secs(1)).is_some());
    millis(&there.ask("wait 7.7.7.7 allow 1000"));
    e.ok(&["enable_ase_detected_attack"]);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !stops(here.enforcer(), "7.7.7.7", "/shop/items"),
        "deleted entries do not come back when detection is enabled again"
    );
}

#[test]
fn kill_9_loses_no_acknowledged_add() {
    // One `ase-cli batch` process runs 10,000 adds, printing each after its
    // commit; it is killed mid-way. Every address it printed must be stored.
    // One process rather than 10,000 keeps the test short; the acknowledgement
    // path (commit, then print) is the same as for a single add.
    let e = Env::new("");
    e.ok(&["status"]); // create the store first
    let mut child = Command::new(store_common::CLI)
        .args([
            "--config",
            e.config.to_str().unwrap(),
            "-u",
            "admin",
            "-p",
            "admin",
            "batch",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        for i in 0..10_000u32 {
            let line = format!(
                "add_blacklist ip 10.{}.{}.{}\n",
                i >> 16,
                (i >> 8) & 255,
                i & 255
            );
            if stdin.write_all(line.as_bytes()).is_err() {
                break;
            }
        }
    });
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut acked = Vec::new();
    let mut line = String::new();
    while acked.len() < 300 {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "batch ended early");
        acked.push(line.trim_end().to_string());
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Whatever it printed before dying counts as acknowledged too.
    for l in out.lines() {
        let l = l.unwrap();
        if l.ends_with(" added to blacklist") {
            acked.push(l);
        }
    }
    let _ = feeder.join();
    assert!(acked.len() < 10_000, "the kill must land mid-way");
    let s = Store::open(&e.state_dir()).unwrap();
    let stored: std::collections::HashSet<String> = s
        .entries(List::Deny, Source::ANY, 0)
        .unwrap()
        .into_iter()
        .map(|x| format!("{} added to blacklist", x.id))
        .collect();
    for a in &acked {
        assert!(stored.contains(a), "acknowledged but lost: {a}");
    }
    eprintln!(
        "{} acknowledged before kill -9, {} stored",
        acked.len(),
        stored.len()
    );
    let ok: String = rusqlite::Connection::open(store_common::store_path(&e.state_dir()))
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
}

#[test]
fn two_clis_writing_at_once_corrupt_nothing() {
    let e = Env::new("");
    e.ok(&["status"]);
    let batch = |prefix: u8| {
        let mut s = String::new();
        for i in 0..300u32 {
            s.push_str(&format!(
                "add_blacklist ip {prefix}.0.{}.{}\n",
                i / 256,
                i % 256
            ));
            if i % 10 == 0 {
                s.push_str(&format!("add_whitelist username u{prefix}-{i}\n"));
            }
        }
        s.push_str(&format!("delete_blacklist ip {prefix}.0.0.0\n"));
        s
    };
    let (a, b) = (batch(11), batch(12));
    let ea = &e;
    std::thread::scope(|sc| {
        let ta = sc.spawn(move || ea.cli_in(&["batch"], &a));
        let tb = sc.spawn(move || ea.cli_in(&["batch"], &b));
        for o in [ta.join().unwrap(), tb.join().unwrap()] {
            assert_success(&o, &["batch"]);
            assert_eq!(String::from_utf8(o.stdout).unwrap().lines().count(), 331);
        }
    });
    let s = Store::open(&e.state_dir()).unwrap();
    let c = s.counts(0).unwrap();
    assert_eq!(c.deny[Source::Manual as usize], 598);
    assert_eq!(c.allow, 60);
    let conn = rusqlite::Connection::open(store_common::store_path(&e.state_dir())).unwrap();
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    // The log holds every change once, in a gapless order an engine can replay.
    let (n, min, max): (i64, i64, i64) = conn
        .query_row(
            "SELECT count(*), min(seq), max(seq) FROM changes",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((n, max - min + 1), (662, 662));
    let engine = Engine::open(&e.config).unwrap();
    assert!(stops(engine.enforcer(), "12.0.1.20", "/shop/items"));
    assert!(!stops(engine.enforcer(), "11.0.0.0", "/shop/items"));
}

/// Every nginx worker opens the store at start, so the first open of a new
/// store races with others. Switching a new file to WAL while another
/// process does the same can fail at once with "database is locked" (about
/// one open in seventy without a retry), and a worker that hit it would
/// decide by `fail_mode` until its next poll.
#[test]
fn processes_creating_one_store_at_once_all_open_it() {
    let e = Env::new("");
    for round in 0..30 {
        let _ = std::fs::remove_dir_all(e.state_dir());
        let ea = &e;
        let outs: Vec<_> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..6)
                .map(|_| sc.spawn(move || ea.cli(&["view_whitelist"])))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for o in outs {
            assert!(
                o.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
}

#[test]
fn corrupt_store_is_reported_and_fail_mode_decides() {
    for (mode, blocks) in [("open", false), ("closed", true)] {
        let e = Env::new(&format!("fail_mode={mode}"));
        std::fs::create_dir(e.state_dir()).unwrap();
        let db = store_common::store_path(&e.state_dir());
        std::fs::write(&db, vec![0x42; 16384]).unwrap();

        let engine = Engine::open(&e.config).unwrap();
        let h = engine.health();
        assert!(h.failed, "{mode}");
        let err = h.store_error.unwrap();
        assert!(
            err.contains(db.to_str().unwrap()) && err.contains("corrupt"),
            "{err}"
        );
        assert_eq!(
            stops(engine.enforcer(), "1.2.3.4", "/shop/items"),
            blocks,
            "{mode}"
        );
        let id = Identifier::new(IdKind::Ip, "", "1.1.1.1").unwrap();
        assert!(
            engine.deny_add(&id, Source::Manual, 0).is_err(),
            "no write without a store"
        );

        let o = e.cli(&["status"]);
        let msg = String::from_utf8(o.stderr).unwrap();
        assert_eq!(o.status.code(), Some(1));
        assert!(
            msg.contains("corrupt") && msg.contains(&format!("fail_mode={mode}")),
            "{msg}"
        );
        assert_eq!(msg.lines().count(), 1);

        // Once the operator moves the file aside, the watcher loads a fresh store.
        std::fs::rename(&db, db.with_extension("bad")).unwrap();
        let t = Instant::now();
        while engine.health().failed && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!engine.health().failed, "{mode}: recovered");
        assert!(!stops(engine.enforcer(), "1.2.3.4", "/shop/items"));
        engine.deny_add(&id, Source::Manual, 0).unwrap();
        assert!(stops(engine.enforcer(), "1.1.1.1", "/shop/items"));
    }
}

/// Without a store the lists are unknown, but decoys and API patterns come
/// from the configuration: they keep answering, and `fail_mode` decides only
/// what they let through.
#[test]
fn without_a_store_decoys_and_patterns_still_answer() {
    for (mode, passes) in [("open", true), ("closed", false)] {
        let e = Env::new(&format!(
            "fail_mode={mode}\nenable_ase_detected_attack=true"
        ));
        std::fs::write(
            e.dir.path().join("api/trading.json"),
            r#"{ "api_metadata": { "protocol": "http", "url": "/trade", "hostname": "*",
                 "enable_blocking": true,
                 "api_pattern_enforcement": { "methods_allowed": ["GET"] } } }"#,
        )
        .unwrap();
        // state_dir is a file: the store cannot be opened.
        std::fs::write(e.state_dir(), "not a directory").unwrap();
        let engine = Engine::open(&e.config).unwrap();
        assert!(engine.health().failed, "{mode}");
        let check = |ip: &str, method: &[u8], uri: &str| {
            let headers: [(&[u8], &[u8]); 0] = [];
            let req = Request {
                client_ip: Some(ip_to_u128(ip.parse().unwrap())),
                method,
                scheme: b"http",
                host: b"example.test",
                uri: uri.as_bytes(),
                headers: &headers,
                username: b"",
                unknown_api: None,
            };
            let d = engine.enforcer().check(&req);
            (d.stops(), d.reason)
        };
        assert_eq!(
            check("1.2.3.4", b"GET", "/shop/admin"),
            (true, Reason::Decoy),
            "{mode}: the decoy answers"
        );
        assert_eq!(
            check("1.2.3.5", b"POST", "/trade/x"),
            (true, Reason::Method),
            "{mode}: the pattern is enforced"
        );
        assert_eq!(
            check("1.2.3.6", b"GET", "/trade/x"),
            (!passes, Reason::FailMode),
            "{mode}: fail_mode decides the rest"
        );
        // The decoy's client is blocked by this process (the store is down).
        assert_eq!(
            check("1.2.3.4", b"GET", "/shop/items"),
            (true, Reason::DenyList),
            "{mode}"
        );
        let st = engine.enforcer().stats();
        assert_eq!(
            st.allowed_by_reason[Reason::FailMode as usize],
            u64::from(passes),
            "{mode}"
        );
        assert_eq!(st.blocked[Reason::FailMode as usize], u64::from(!passes));
    }
}

#[test]
fn engine_falls_behind_the_log_and_reloads() {
    let e = Env::new("");
    let mut engine = Engine::open(&e.config).unwrap();
    engine.shutdown(); // drive it by hand
    engine.shutdown(); // idempotent
    let s = Store::open(&e.state_dir()).unwrap();
    let n = ase::store::LOG_KEEP as u32 + 1000;
    for chunk in 0..n / 1000 {
        let v: Vec<NewEntry> = (0..1000)
            .map(|i| {
                let x = chunk * 1000 + i;
                let ip = format!("172.{}.{}.{}", x >> 16, (x >> 8) & 255, x & 255);
                NewEntry::new(Identifier::new(IdKind::Ip, "", &ip).unwrap(), 0)
            })
            .collect();
        s.add_many(List::Deny, &v, Source::Manual, &mut |_| {})
            .unwrap();
    }
    let before = engine.health().full_loads;
    engine.sync_now().unwrap();
    assert_eq!(
        engine.health().full_loads,
        before + 1,
        "reloaded, not replayed"
    );
    assert_eq!(engine.enforcer().stats().deny_entries, n as u64);
    assert!(stops(engine.enforcer(), "172.0.0.5", "/shop/items"));
}

#[test]
fn files_belong_to_the_state_dir_owner() {
    // Root creating the store in a directory owned by the workers' user must
    // hand the file over; that user is told when it cannot open the store.
    if std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .ok()
        != Some(0)
    {
        eprintln!("not root: ownership hand-over not exercised");
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let e = Env::new("");
    let dir = e.state_dir();
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    Store::open(&dir).unwrap().set_meta("k", "v").unwrap();
    let m = std::fs::metadata(store_common::store_path(&dir)).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (65534, 65534, 0o600));

    // A root-only store refused to an unprivileged user, with both named.
    let e2 = Env::new("");
    e2.ok(&["status"]);
    std::fs::set_permissions(
        e2.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let o = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            store_common::CLI,
        ])
        .args([
            "--config",
            e2.config.to_str().unwrap(),
            "-u",
            "admin",
            "-p",
            "admin",
            "status",
        ])
        .output();
    let Ok(o) = o else {
        eprintln!("setpriv unavailable: refusal message not exercised");
        return;
    };
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("uid 0 (root)") && err.contains("uid 65534"),
        "{err}"
    );
}

/// Runs this test binary's test `name` again in a child process under
/// `umask 0`, as nginx runs, with [`CHILD_ENV`] set to `arg`; stdin and
/// stdout piped.
fn rerun_under_umask_0(name: &str, arg: &Path) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(r#"umask 0 && exec "$0" "$@""#)
        .arg(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(CHILD_ENV, arg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Everything the library creates in `state_dir` gets its mode from the
/// library, not from the umask: under nginx's umask 0 a default-mode lock
/// file would let any local user hold the ABS poll lock.
#[test]
fn files_are_private_under_umask_0() {
    use ase::sync::abs::{election::Election, shipper};
    use std::os::unix::fs::MetadataExt;
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let dir = Path::new(&dir);
        let s = Store::open(dir).unwrap();
        s.set_meta("k", "v").unwrap(); // the -wal and -shm files
        assert!(Election::in_dir(dir).try_lead().unwrap());
        shipper::Obfuscator::from_key_file(&dir.join(shipper::KEY_FILE)).unwrap();
        // Hold everything open (the -wal and -shm files last as long as a
        // connection) until the parent has looked.
        println!("@@done");
        let _ = std::io::stdin().lines().next();
        return;
    }
    let top = tempfile::tempdir().unwrap();
    let dir = top.path().join("state");
    let mut child = rerun_under_umask_0("files_are_private_under_umask_0", &dir);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let done = (&mut out)
        .lines()
        .map_while(Result::ok)
        .any(|l| l == "@@done");
    assert!(done, "the child made the files");
    assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
    let mut seen = Vec::new();
    for f in std::fs::read_dir(&dir).unwrap() {
        let f = f.unwrap();
        let name = f.file_name().into_string().unwrap();
        assert_eq!(f.metadata().unwrap().mode() & 0o777, 0o600, "{name}");
        seen.push(name);
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "abs_obfuscation.key",
            "abs_poll.lock",
            "ase.db",
            "ase.db-shm",
            "ase.db-wal"
        ],
        "every file the library makes was checked"
    );
    drop(child.stdin.take());
    let rest: Vec<String> = out.lines().map_while(Result::ok).collect();
    assert!(child.wait().unwrap().success(), "{rest:?}");
}

/// A store emptied to 0 bytes (by `> ase.db`, a full disk, a bad copy) is
/// refused by engines and the CLI alike; nothing starts a new, empty store
/// over it.
#[test]
fn an_emptied_store_is_refused_not_started_afresh() {
    let e = Env::new("fail_mode=closed");
    e.ok(&["add_blacklist", "ip", "7.7.7.7"]);
    let db = store_common::store_path(&e.state_dir());
    std::fs::write(&db, b"").unwrap();

    let node = Engine::open(&e.config).unwrap();
    let err = node.health().store_error.expect("store refused");
    assert!(
        err.contains(db.to_str().unwrap()) && err.contains("0 bytes"),
        "{err}"
    );
    assert!(
        stops(node.enforcer(), "1.2.3.4", "/shop/items"),
        "fail_mode=closed"
    );
    let o = e.cli(&["add_blacklist", "ip", "8.8.8.8"]);
    let msg = String::from_utf8(o.stderr).unwrap();
    assert_eq!(o.status.code(), Some(1), "{msg}");
    assert!(
        msg.contains("0 bytes") && msg.contains("move it aside"),
        "{msg}"
    );
    assert_eq!(
        std::fs::metadata(&db).unwrap().len(),
        0,
        "left for the operator"
    );
}

/// A store damaged in its middle still reads its credential, so the CLI gets
/// as far as writing; the write must fail rather than report a change that
/// no engine (which cannot load the store) enforces.
#[test]
fn a_damaged_store_refuses_writes_from_the_cli_and_engines() {
    let e = Env::new("");
    let mut list = String::new();
    for i in 0..20_000u32 {
        list.push_str(&format!(
            "ip 10.{}.{}.{}\n",
            i >> 16,
            (i >> 8) & 255,
            i & 255
        ));
    }
    let o = e.cli_in(&["import_blacklist", "-"], &list);
    assert_success(&o, &["import_blacklist"]);
    let db = store_common::store_path(&e.state_dir());
    let mut bytes = std::fs::read(&db).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid..mid + 40_000].fill(0x5a);
    std::fs::write(&db, bytes).unwrap();

    let o = e.cli(&["add_blacklist", "ip", "9.9.9.9"]);
    let msg = String::from_utf8(o.stderr).unwrap();
    assert_eq!(o.status.code(), Some(1), "{msg}");
    assert!(
        msg.contains(db.to_str().unwrap()) && msg.contains("corrupt"),
        "{msg}"
    );
    let node = Engine::open_passive(&e.config).unwrap();
    let id = Identifier::new(IdKind::Ip, "", "9.9.9.9").unwrap();
    let err = node.deny_add(&id, Source::Manual, 0).unwrap_err();
    assert!(err.to_string().contains("corrupt"), "{err}");
}

/// A small tmpfs mounted for one test and unmounted when dropped, even when
/// the test fails.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    /// `None` (with the reason printed) when this process may not mount.
    fn mount(size: &str) -> Option<Tmpfs> {
        let is_root = std::fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
            .unwrap_or(false);
        if !is_root {
            eprintln!("not root: full and read-only file systems not exercised");
            return None;
        }
        let d = tempfile::tempdir().unwrap();
        let o = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(d.path())
            .output();
        match o {
            Ok(o) if o.status.success() => Some(Tmpfs(d)),
            Ok(o) => {
                eprintln!(
                    "cannot mount a tmpfs ({}): full and read-only file systems not exercised",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("no mount command ({e}): full and read-only file systems not exercised");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    fn remount(&self, opts: &str) {
        let o = Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(self.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

/// A full disk and a read-only file system are named as such, with the
/// directory, instead of "disk I/O error" or advice about file ownership.
#[test]
fn full_and_read_only_file_systems_are_named() {
    let Some(fs) = Tmpfs::mount("2m") else {
        return;
    };
    let dir = fs.path().join("state");
    let s = Store::open(&dir).unwrap();
    let ip = |i: u32| {
        let v = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
        NewEntry::new(Identifier::new(IdKind::Ip, "", &v).unwrap(), 0)
    };
    s.add(List::Deny, &ip(0), Source::Manual).unwrap();
    // Fill the file system, then write.
    let filler = fs.path().join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    drop(f);
    let v: Vec<NewEntry> = (1..20_000).map(ip).collect();
    let e = s
        .add_many(List::Deny, &v, Source::Manual, &mut |_| {})
        .unwrap_err();
    assert!(
        e.message.contains(&format!(
            "the file system holding {} is full",
            dir.display()
        )),
        "{e}"
    );
    std::fs::remove_file(&filler).unwrap();
    drop(s);

    fs.remount("ro");
    let err = match Store::open(&dir) {
        Ok(s) => s
            .add(List::Deny, &ip(1), Source::Manual)
            .map(|_| ())
            .unwrap_err(),
        Err(e) => e,
    };
    assert!(
        err.message
            .contains(&format!("{} is on a read-only file system", dir.display()))
            && !err.message.contains("owned by"),
        "{err}"
    );
}
