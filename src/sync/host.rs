//! The host role: the one process of a host that holds the `flock` on
//! `state_dir/host.lock` builds the lists snapshot every process maps
//! (`sync::snapshot`). Every engine with background threads is a
//! candidate; the kernel frees the lock when its holder exits or dies (even
//! by `kill -9`), and another candidate takes the role on its next try,
//! within [`TRY_EVERY`].

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::store::Store;
use crate::sync::abs::election::Election;
use crate::sync::snapshot::{Built, HOST_LOCK, SnapshotBuilder};

/// How often a candidate tries to take the role.
pub const TRY_EVERY: Duration = Duration::from_secs(1);

/// How often the holder drops expired rows from the store.
const PURGE_EVERY: Duration = Duration::from_secs(300);

/// How often the holder looks at the store and the snapshot file.
const STEP_EVERY: Duration = Duration::from_millis(200);

/// What the host role did last, for status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostStatus {
    /// Whether this process holds the role.
    pub leader: bool,
    /// Snapshots built by this process.
    pub builds: u64,
    /// The last build.
    pub last_build: Option<Built>,
    /// Why the last build or check failed, while it fails.
    pub error: Option<String>,
    /// Panics caught in the loop (each restarted).
    pub panics: u64,
    /// Snapshot files the builder found bad (and rebuilt).
    pub refusals: u64,
    /// Why the last one was refused.
    pub last_refusal: Option<String>,
}

/// A running host-role candidate.
#[derive(Debug)]
pub struct HostRole {
    stop: Option<Sender<()>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    status: Arc<Mutex<HostStatus>>,
}

impl HostRole {
    /// Starts the candidate thread for `state_dir`.
    pub fn start(dir: PathBuf) -> std::io::Result<HostRole> {
        let (tx, rx) = std::sync::mpsc::channel();
        let status = Arc::new(Mutex::new(HostStatus::default()));
        let st = status.clone();
        let thread = super::spawn_background("ase-host", move || run(&dir, &rx, &st))?;
        Ok(HostRole {
            stop: Some(tx),
            thread: Mutex::new(Some(thread)),
            status,
        })
    }

    /// Takes the host role for `state_dir` now if no process holds it, and
    /// only then starts the thread that does the role's work: an
    /// event-loop host (an nginx worker) calls this from its timer, so a
    /// process that does not hold the role has no thread at all.
    pub fn take_if_free(dir: PathBuf) -> Result<Option<HostRole>, String> {
        let mut election = Election::new(dir.join(HOST_LOCK));
        if !election.try_lead()? {
            return Ok(None);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let status = Arc::new(Mutex::new(HostStatus {
            leader: true,
            ..HostStatus::default()
        }));
        let st = status.clone();
        let thread =
            super::spawn_background("ase-host", move || run_with(&dir, election, true, &rx, &st))
                .map_err(|e| format!("starting the host-role thread: {e}"))?;
        Ok(Some(HostRole {
            stop: Some(tx),
            thread: Mutex::new(Some(thread)),
            status,
        }))
    }

    /// A copy of the status.
    pub fn status(&self) -> HostStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops the thread, waiting up to `wait` (a build in progress finishes
    /// first; a thread still busy is left detached).
    pub fn stop(&mut self, wait: Duration) -> bool {
        self.stop = None;
        crate::sync::join_within(&self.thread, wait)
    }
}

impl Drop for HostRole {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(2));
    }
}

fn run(dir: &std::path::Path, stop: &Receiver<()>, status: &Mutex<HostStatus>) {
    run_with(dir, Election::new(dir.join(HOST_LOCK)), false, stop, status);
}

fn run_with(
    dir: &std::path::Path,
    mut election: Election,
    mut leader: bool,
    stop: &Receiver<()>,
    status: &Mutex<HostStatus>,
) {
    let mut builder = SnapshotBuilder::new(dir.to_path_buf());
    let mut store: Option<Store> = None;
    let mut last_try: Option<Instant> = None;
    let mut last_purge: Option<Instant> = None;
    loop {
        if !matches!(
            stop.recv_timeout(STEP_EVERY),
            Err(RecvTimeoutError::Timeout)
        ) {
            return;
        }
        let step = catch_unwind(AssertUnwindSafe(|| {
            if !leader {
                if last_try.is_some_and(|t| t.elapsed() < TRY_EVERY) {
                    return;
                }
                last_try = Some(Instant::now());
                leader = election.try_lead().unwrap_or(false);
                if !leader {
                    return;
                }
            }
            if store.is_none() {
                match Store::open(dir) {
                    Ok(s) => store = Some(s),
                    Err(e) => {
                        lock(status).error = Some(e.message);
                        return;
                    }
                }
            }
            let Some(s) = &store else { return };
            if last_purge.is_none_or(|t| t.elapsed() >= PURGE_EVERY) {
                // Expired rows stop matching at lookup; this keeps the store
                // (and the next snapshot) from growing with them.
                last_purge = Some(Instant::now());
                let _ = s.purge_expired(crate::clock::now_ms());
            }
            let built = builder.step(s);
            let mut st = lock(status);
            st.leader = true;
            if built {
                st.builds += 1;
                st.last_build = builder.last.clone();
            }
            st.error = builder.error.clone();
            st.refusals = builder.refusals;
            st.last_refusal = builder.last_refusal.clone();
        }));
        if step.is_err() {
            let mut st = lock(status);
            st.panics += 1;
            // A fresh connection and a fresh look at the file next time.
            store = None;
            builder = SnapshotBuilder::new(dir.to_path_buf());
        }
    }
}

fn lock(m: &Mutex<HostStatus>) -> std::sync::MutexGuard<'_, HostStatus> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
