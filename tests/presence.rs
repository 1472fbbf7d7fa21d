//! A change is in force when the command that made it returns: `ase-cli`
//! waits until every running engine of the host has applied it, or says on
//! stderr how many lag (docs/cli.md, "Changes and running engines").
//!
//! The engine runs in this process with `sync_poll_interval=5s`, so only the
//! change notice can make it apply within the CLI's wait; the CLI is the
//! real binary. An engine that never applies is this test binary run again
//! with [`CHILD_ENV`] set: it registers and waits for its stdin to close.

mod store_common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ase::engine::Engine;
use ase::policy::ident::ip_to_u128;
use ase::policy::{Request, Switch};
use ase::sync::presence;
use store_common::{Env, assert_success};

const CHILD_ENV: &str = "ASE_TEST_STUCK_ENGINE_STATE";
/// The stuck engine's health flags (`presence::STORE_FAILING`, ...).
const CHILD_FLAGS: &str = "ASE_TEST_STUCK_ENGINE_FLAGS";
/// The log position the stuck engine says it applied.
const CHILD_SEQ: &str = "ASE_TEST_STUCK_ENGINE_SEQ";

/// Whether `engine` stops a request from `ip` to `uri` (blocked or answered).
fn stops(engine: &Engine, ip: &str, uri: &str) -> bool {
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
    engine.check(&req).stops()
}

/// The shared test setup, with the engines polling every `poll`.
fn env_polling(poll: &str) -> Env {
    let e = Env::new("");
    std::fs::write(
        &e.config,
        format!("enable_firewall=true\nsync_poll_interval={poll}\n"),
    )
    .unwrap();
    e
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_cli_change_is_in_force_in_a_running_engine_when_the_cli_returns() {
    let e = env_polling("5s");
    let engine = Engine::open(&e.config).unwrap();
    assert!(!engine.switch(Switch::AseDetectedAttack));

    let t = Instant::now();
    let out = e.ok(&["add_blacklist", "ip", "10.1.1.1"]);
    let took = t.elapsed();
    assert_eq!(out, "ip 10.1.1.1 added to blacklist\n");
    assert!(
        stops(&engine, "10.1.1.1", "/shop/items"),
        "blocked as soon as the CLI returned"
    );

    // A decoy probe right after enable_ase_detected_attack is recorded.
    assert_eq!(
        e.ok(&["enable_ase_detected_attack"]),
        "ASE Detected Attack is now enabled\n"
    );
    assert!(engine.switch(Switch::AseDetectedAttack));
    assert!(stops(&engine, "10.2.2.2", "/shop/admin"), "decoy answered");
    let t2 = Instant::now();
    loop {
        let v = e.ok(&["view_blacklist", "decoy"]);
        if v.contains("value : 10.2.2.2") {
            break;
        }
        assert!(t2.elapsed() < Duration::from_secs(10), "not recorded: {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        stops(&engine, "10.2.2.2", "/shop/items"),
        "and blocked from then on"
    );

    // Switched off: the real-time entry is gone here too, at once.
    e.ok(&["disable_ase_detected_attack"]);
    assert!(!stops(&engine, "10.2.2.2", "/shop/items"));
    e.ok(&["disable_blocking", "shop"]);
    assert!(!stops(&engine, "10.1.1.1", "/shop/items"), "monitor mode");
    eprintln!(
        "add_blacklist with a running engine polling every 5 s: {} ms",
        took.as_millis()
    );
}

/// The stuck engine's side: registered at position 0, never advancing.
fn stuck_engine(state_dir: &str) {
    let flags = std::env::var(CHILD_FLAGS).map_or(0, |f| f.parse().unwrap());
    let seq = std::env::var(CHILD_SEQ).map_or(0, |f| f.parse().unwrap());
    let r = presence::Registration::register_with(Path::new(state_dir), seq, flags, None).unwrap();
    // libtest prints the test's name first, on the same line.
    println!("@@{}", r.name());
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

struct Stuck(Child);

impl Stuck {
    fn spawn(state_dir: &Path) -> Stuck {
        Stuck::spawn_with(state_dir, 0)
    }

    /// An engine whose record carries `flags`.
    fn spawn_with(state_dir: &Path, flags: u32) -> Stuck {
        Stuck::spawn_at(state_dir, flags, 0)
    }

    /// An engine whose record carries `flags` and says it applied `seq`.
    fn spawn_at(state_dir: &Path, flags: u32, seq: u64) -> Stuck {
        let mut c = Command::new(std::env::current_exe().unwrap())
            .args([
                "an_engine_that_does_not_apply_gives_a_warning_and_exit_status_0",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, state_dir)
            .env(CHILD_FLAGS, flags.to_string())
            .env(CHILD_SEQ, seq.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        BufReader::new(c.stdout.take().unwrap())
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("@@"))
            .expect("the stuck engine registers");
        Stuck(c)
    }
}

impl Drop for Stuck {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_engine_that_does_not_apply_gives_a_warning_and_exit_status_0() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        return stuck_engine(&dir);
    }
    let e = env_polling("5s");
    let engine = Engine::open(&e.config).unwrap();
    let stuck = Stuck::spawn(&e.state_dir());

    let t = Instant::now();
    let o = e.cli(&["add_blacklist", "ip", "10.3.3.3"]);
    let took = t.elapsed();
    assert!(o.status.success(), "the change is durable: exit 0");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "ip 10.3.3.3 added to blacklist\n"
    );
    assert_eq!(
        stderr(&o),
        "ase-cli: warning: 1 of 2 running engines has not applied this change within 1 s; \
         they will when they next read the store\n"
    );
    assert!(took >= presence::DEFAULT_WAIT, "waited the full second");
    assert!(
        stops(&engine, "10.3.3.3", "/shop/items"),
        "the live one has it"
    );

    // --wait bounds the wait; 0s does not wait.
    let o = e.cli(&["--wait", "200ms", "enable_firewall"]);
    assert!(o.status.success());
    assert!(stderr(&o).contains("1 of 2 running engines has not applied this change within 0.2 s"));
    let t = Instant::now();
    let o = e.cli(&["delete_blacklist", "ip", "10.3.3.3", "--wait=0s"]);
    assert_success(&o, &["delete_blacklist --wait=0s"]);
    assert!(t.elapsed() < presence::DEFAULT_WAIT);
    // A read-only command never waits.
    e.ok(&["view_blacklist"]);

    // Once the stuck engine is gone (killed: its lock is freed), nobody lags
    // and its file is removed.
    drop(stuck);
    let o = e.cli(&["add_blacklist", "ip", "10.4.4.4"]);
    assert_success(&o, &["add_blacklist after the stuck engine died"]);
    assert!(stops(&engine, "10.4.4.4", "/shop/items"));
    let peers = presence::live_engines(&e.state_dir()).unwrap();
    assert_eq!(peers.len(), 1, "{peers:?}");
    let files = std::fs::read_dir(e.state_dir().join(presence::DIR))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|f| !f.file_name().to_string_lossy().starts_with('.'))
        .count();
    assert_eq!(files, 1, "the dead engine's file was removed");

    // Without any running engine a change does not wait either.
    drop(engine);
    assert!(presence::live_engines(&e.state_dir()).unwrap().is_empty());
    e.ok(&["delete_blacklist", "ip", "10.4.4.4"]);
}

/// The idle watcher's cost with the notice checked every 20 ms: run with
/// `cargo test --release --test presence -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn idle_watcher_cpu() {
    // 5s: the notice checks alone (a poll every 5 s); 20ms: polls alone (no
    // checks at or below 20 ms); 100ms: the default, both.
    for poll in ["5s", "20ms", "100ms"] {
        let e = env_polling(poll);
        let engine = Engine::open(&e.config).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let before = watcher_cpu_ns();
        let secs = 10;
        std::thread::sleep(Duration::from_secs(secs));
        let used = watcher_cpu_ns() - before;
        eprintln!(
            "sync_poll_interval={poll}{}: watcher thread {:.1} us of CPU per second ({:.4}% of a core)",
            match poll {
                "5s" => " (notice checks every 20 ms, almost no polls)",
                "20ms" => " (polls only)",
                _ => " (polls and notice checks)",
            },
            used as f64 / 1e3 / secs as f64,
            used as f64 / 1e9 / secs as f64 * 100.0
        );
        drop(engine);
    }
}

/// CPU time of this process's `ase-watch` threads, in ns (schedstat).
fn watcher_cpu_ns() -> u64 {
    let mut total = 0;
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() == "ase-watch" {
            let s = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
            total += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

/// An engine whose record says the store failed (a detection it could not
/// write, say) but that applied the change has it in force: the change is
/// made, exit status 0, nothing on stderr.
#[test]
fn an_engine_with_a_store_error_that_applied_the_change_does_not_fail_it() {
    let e = env_polling("5s");
    let engine = Engine::open(&e.config).unwrap();
    let _applied = Stuck::spawn_at(&e.state_dir(), presence::STORE_FAILING, 1 << 40);
    let o = e.cli(&["--wait=0s", "add_blacklist", "ip", "10.5.5.6"]);
    assert_success(&o, &["add_blacklist with an engine that applied it"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "ip 10.5.5.6 added to blacklist\n"
    );
    drop(engine);
}

/// An engine that cannot read the store (its record says so) has not got a
/// change: `ase-cli` does not report success, says why, and `status` shows
/// that engine's health.
#[test]
fn an_engine_that_cannot_read_the_store_makes_a_change_fail_loudly() {
    let e = env_polling("5s");
    let engine = Engine::open(&e.config).unwrap();
    let blind = Stuck::spawn_with(
        &e.state_dir(),
        presence::STORE_FAILING | presence::FAIL_MODE,
    );
    let o = e.cli(&["--wait=0s", "add_blacklist", "ip", "10.5.5.5"]);
    assert_eq!(o.status.code(), Some(1), "not a success");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "ip 10.5.5.5 added to blacklist\n",
        "stored all the same"
    );
    let err = stderr(&o);
    assert!(
        err.starts_with("ase-cli: the change is stored, but 1 of 2 running engines cannot read the state store (pid ")
            && err.contains(&blind.0.id().to_string()),
        "{err}"
    );
    let st = e.ok(&["status"]);
    assert!(
        st.contains("running engines         : 2 (1 cannot read the state store)\n"),
        "{st}"
    );
    let line = st
        .lines()
        .find(|l| l.contains(&format!("pid {},", blind.0.id())))
        .unwrap_or_else(|| panic!("no line for the blind engine in\n{st}"));
    assert!(
        line.contains("cannot read the state store, fail_mode decides"),
        "{line}"
    );
    let healthy = st
        .lines()
        .find(|l| l.contains(&format!("pid {},", std::process::id())))
        .unwrap_or_else(|| panic!("no line for this process's engine in\n{st}"));
    assert!(
        healthy.contains("store ok, 1 APIs as in api_dir"),
        "{healthy}"
    );

    drop(blind);
    e.ok(&["add_blacklist", "ip", "10.6.6.6"]);
    drop(engine);
}

/// `list_api` says which API files the running engines have not loaded.
#[test]
fn list_api_says_what_the_running_engines_loaded() {
    let e = env_polling("5s");
    let engine = Engine::open(&e.config).unwrap();
    assert_eq!(
        e.ok(&["list_api"]),
        "shop ( loaded ), http, decoy: in-context\n"
    );
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(
        e.dir.path().join("api/trade.json"),
        r#"{ "api_metadata": { "protocol": "http", "url": "/trade", "hostname": "*" } }"#,
    )
    .unwrap();
    assert_eq!(
        e.ok(&["list_api"]),
        "shop ( loaded ), http, decoy: in-context\n\
         trade ( not loaded: changed after the running engines started ), http\n\
         1 of 1 running engines enforce another set of API files (1 APIs): reload them \
         (nginx -s reload) to apply api_dir\n"
    );
    drop(engine);
    let engine = Engine::open(&e.config).unwrap();
    assert_eq!(
        e.ok(&["list_api"]),
        "shop ( loaded ), http, decoy: in-context\ntrade ( loaded ), http\n"
    );
    drop(engine);
}
