//! One poller per host: two processes share a `state_dir`; only the holder of
//! the lock file polls ABS, and when it is killed the other takes over.
//!
//! The processes are this test binary re-run with `--ignored --exact
//! election_child`; each child reports what its poller does in a status file.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use ase::enforcer::Enforcer;
use ase::policy::Identifier;
use ase::sync::abs::{AbsSink, Poller, PollerOptions, election::LOCK_FILE};
use common::*;

/// Counts the lists this process applied, then applies them to the engine.
struct Counting(Arc<Enforcer>, AtomicU64);

impl AbsSink for Counting {
    fn replace_abs(&self, entries: Vec<(Identifier, u64)>) -> Result<(), String> {
        self.1.fetch_add(1, Relaxed);
        self.0.replace_abs(entries)
    }
}

/// Not a test: the body of a child process (run by the test below).
#[test]
#[ignore = "helper process of only_one_process_polls_and_another_takes_over"]
fn election_child() {
    let (Ok(conf), Ok(out)) = (
        std::env::var("ASE_ABS_CHILD_CONF"),
        std::env::var("ASE_ABS_CHILD_OUT"),
    ) else {
        return;
    };
    let e = Arc::new(Enforcer::open(Path::new(&conf)).unwrap());
    let sink = Arc::new(Counting(e.clone(), AtomicU64::new(0)));
    let p = Poller::start(
        e.clone(),
        sink.clone(),
        PollerOptions {
            lock_path: Some(e.config().state_dir.join(LOCK_FILE)),
            ..fast_poller()
        },
    )
    .unwrap();
    let out = PathBuf::from(out);
    for _ in 0..1500 {
        let st = p.status();
        let line = format!(
            "leader={} syncs={} blocks={}\n",
            st.leader,
            sink.1.load(Relaxed),
            blocked(&e, "10.7.7.7", &[])
        );
        let tmp = out.with_extension("tmp");
        std::fs::write(&tmp, line).unwrap();
        std::fs::rename(&tmp, &out).unwrap();
        std::thread::sleep(Duration::from_millis(40));
    }
}

struct Proc {
    child: Child,
    out: PathBuf,
}

impl Proc {
    fn spawn(conf: &Path, out: PathBuf) -> Proc {
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "election_child", "--test-threads=1"])
            .env("ASE_ABS_CHILD_CONF", conf)
            .env("ASE_ABS_CHILD_OUT", &out)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Proc { child, out }
    }

    /// (leader, syncs, blocks) as last reported.
    fn report(&self) -> Option<(bool, u64, bool)> {
        let t = std::fs::read_to_string(&self.out).ok()?;
        let mut f = t
            .split_whitespace()
            .map(|kv| kv.split_once('=').map(|(_, v)| v.to_string()));
        let leader = f.next()??.parse().ok()?;
        let syncs = f.next()??.parse().ok()?;
        let blocks = f.next()??.parse().ok()?;
        Some((leader, syncs, blocks))
    }

    fn syncs(&self) -> u64 {
        self.report().map_or(0, |r| r.1)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn only_one_process_polls_and_another_takes_over() {
    let abs = RefServer::start(&[]);
    abs.set_list(r#"{"ips": ["10.7.7.7"]}"#);
    let dir = tempfile::tempdir().unwrap();
    let conf = write_config(dir.path(), &[&abs.addr], "enable_ssl=false\n");
    let mut procs = [
        Proc::spawn(&conf, dir.path().join("a.status")),
        Proc::spawn(&conf, dir.path().join("b.status")),
    ];
    assert!(
        eventually(Duration::from_secs(20), || procs
            .iter()
            .any(|p| p.syncs() >= 3)),
        "one process polls"
    );
    let (leader, other) = if procs[0].syncs() >= 3 {
        (0, 1)
    } else {
        (1, 0)
    };
    assert!(
        eventually(Duration::from_secs(10), || procs[other].report().is_some()),
        "the other process runs"
    );
    let lr = procs[leader].report().unwrap();
    let or = procs[other].report().unwrap();
    assert!(
        lr.0 && lr.2,
        "the leader holds the lock and enforces: {lr:?}"
    );
    assert_eq!((or.0, or.1), (false, 0), "the other does not poll");

    // kill -9 the leader: the kernel frees its lock and the other takes over.
    let _ = procs[leader].child.kill();
    let _ = procs[leader].child.wait();
    assert!(
        eventually(Duration::from_secs(10), || procs[other]
            .report()
            .is_some_and(|r| r.0 && r.1 >= 1 && r.2)),
        "the other process took over: {:?}",
        procs[other].report()
    );
}
