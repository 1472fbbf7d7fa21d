//! An engine driven from its host's event loop, with no thread of its own.
//!
//! An nginx worker must not block its event loop, and threads in every
//! worker cost each of them (docs/BENCHMARKS.md). So an engine opened
//! "evented" starts no thread: the host calls [`Ticker::tick`] from a timer,
//! and each call does a bounded slice of what the watcher and detection
//! writer threads do for a threaded engine:
//!
//! - opens the store when it is not open (retried every second);
//! - checks a newer snapshot file a slice at a time ([`CHECK_PER_TICK`]
//!   bytes) and moves the lists onto it once it is whole;
//! - applies changes of the store's log for at most [`APPLY_BUDGET`] (a bulk
//!   change waits for the snapshot that holds it: a tick never reads a
//!   whole list);
//! - writes queued real-time detections to the store, without waiting for
//!   another connection's lock (kept for the next tick when busy);
//! - takes the host role when no process holds it, and only then starts the
//!   one thread that builds snapshots (`sync::host`).
//!
//! It never builds a snapshot, parses an ABS body or does network I/O.

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::clock::now_ms;
use crate::store::Store;
use crate::sync::host::{HostRole, HostStatus};
use crate::sync::snapshot::{self, Pending};
use crate::sync::watch::{DETECTION_QUEUE, DetectionMsg, Syncer, WriterMsg};

/// Snapshot bytes checked per tick: about a millisecond of checksum.
pub const CHECK_PER_TICK: usize = 4 << 20;

/// How long a tick applies log changes at most (about 1-2 µs each).
pub const APPLY_BUDGET: Duration = Duration::from_micros(500);

/// Detections written per tick at most.
const DETECTIONS_PER_TICK: usize = 256;

/// How often a missing store is tried again, and the host role.
const RETRY: Duration = Duration::from_secs(1);

/// How often expired overlay entries are dropped.
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// The state an evented engine keeps between ticks.
pub struct Ticker {
    state: Mutex<TickState>,
}

impl std::fmt::Debug for Ticker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticker").finish_non_exhaustive()
    }
}

struct TickState {
    dir: PathBuf,
    store: Option<Store>,
    last_open: Option<Instant>,
    pending: Option<Pending>,
    detections: Receiver<WriterMsg>,
    /// Detections read from the queue that the store did not take yet.
    held: Vec<DetectionMsg>,
    /// May this engine take the host role?
    host_allowed: bool,
    host: Option<HostRole>,
    last_host_try: Option<Instant>,
    last_purge: Instant,
}

impl Ticker {
    /// The ticker of an engine on `state_dir`, draining `detections`; it may
    /// take the host role when `host_allowed`.
    pub fn new(dir: PathBuf, detections: Receiver<WriterMsg>, host_allowed: bool) -> Ticker {
        Ticker {
            state: Mutex::new(TickState {
                dir,
                store: None,
                last_open: None,
                pending: None,
                detections,
                held: Vec::new(),
                host_allowed,
                host: None,
                last_host_try: None,
                last_purge: Instant::now(),
            }),
        }
    }

    /// The store the ticker opened, installed as the engine's (for opening
    /// with the lists loaded at once).
    pub fn set_store(&self, s: Store) {
        s.skip_first_write_check();
        self.lock().store = Some(s);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TickState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The host role's status, when this engine holds it.
    pub fn host_status(&self) -> Option<HostStatus> {
        self.lock().host.as_ref().map(HostRole::status)
    }

    /// One bounded step (see the module doc). A tick that finds another
    /// running (two threads ticking one engine) returns at once. Returns
    /// when to tick next.
    pub fn tick(&self, sync: &Syncer, interval: Duration) -> Duration {
        let mut st = match self.state.try_lock() {
            Ok(g) => g,
            // A tick that panicked (the C boundary caught it) left nothing
            // half-done that the next one cannot redo.
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return interval,
        };
        let st = &mut *st;
        if st.store.is_none() && st.last_open.is_none_or(|t| t.elapsed() >= RETRY) {
            st.last_open = Some(Instant::now());
            // Never waits for another process's lock: a busy store is
            // tried again on a later tick.
            match Store::open_within(&st.dir, Duration::ZERO).and_then(|s| {
                sync.start(&s)?;
                Ok(s)
            }) {
                Ok(s) => {
                    s.skip_first_write_check();
                    if sync.store().is_none() {
                        sync.set_store(s.reopen().ok().map(Arc::new));
                    }
                    st.store = Some(s);
                }
                Err(e) => sync.set_error(&e),
            }
        }
        if let Some(store) = &st.store {
            st.pending = follow(st.pending.take(), &st.dir, store, sync);
            if let Err(e) = sync.poll_bounded(store, APPLY_BUDGET) {
                sync.set_error(&e);
            }
        }
        write_detections(st, sync);
        if st.host_allowed
            && st.host.is_none()
            && st.last_host_try.is_none_or(|t| t.elapsed() >= RETRY)
        {
            st.last_host_try = Some(Instant::now());
            if let Ok(h) = HostRole::take_if_free(st.dir.clone()) {
                st.host = h;
            }
        }
        if st.last_purge.elapsed() >= PURGE_EVERY {
            st.last_purge = Instant::now();
            let now = now_ms();
            sync.enforcer().with_lists(|l| l.purge_expired(now));
        }
        if st.pending.is_some() {
            // A snapshot is being checked: come back soon for the next slice.
            return interval.min(Duration::from_millis(10));
        }
        interval
    }

    /// Writes what is queued and stops the host-role thread: for a clean
    /// shutdown (waits for the store's lock this once).
    pub fn finish(&self, sync: &Syncer, wait: Duration) {
        let mut st = self.lock();
        if let Some(s) = &st.store {
            let _ = s.set_busy_timeout(wait);
        }
        write_detections(&mut st, sync);
        if let Some(mut h) = st.host.take() {
            h.stop(wait);
        }
    }
}

/// Starts checking a new snapshot file, or checks the next slice of the one
/// being checked; installs it when whole. Returns the check in progress.
fn follow(
    pending: Option<Pending>,
    dir: &std::path::Path,
    store: &Store,
    sync: &Syncer,
) -> Option<Pending> {
    let now = snapshot::file_id(dir).ok().flatten();
    let mut p = match pending {
        // The file was replaced while being checked: start over on the new one.
        Some(p) if Some(p.id()) == now => p,
        _ => {
            if sync.snapshot_seen(now) {
                return None;
            }
            match Pending::start(dir) {
                Ok(Some(p)) => p,
                Ok(None) => return None,
                Err(e) => {
                    if let Some(id) = now {
                        sync.refuse(id, e);
                    }
                    return None;
                }
            }
        }
    };
    match p.step(dir, CHECK_PER_TICK) {
        None => Some(p),
        Some(Ok(snap)) => match sync.install(store, snap.clone(), p.id()) {
            // Another thread held the lock: installed on a later tick.
            Ok(false) => Some(Pending::checked(snap, p.id())),
            Ok(true) => None,
            Err(e) => {
                sync.set_error(&e);
                None
            }
        },
        Some(Err(e)) => {
            sync.refuse(p.id(), e);
            None
        }
    }
}

/// Moves queued detections to the store in one transaction; what the store
/// cannot take now (locked by another writer) waits for the next tick, up
/// to the queue's size, beyond which the oldest are dropped and counted.
fn write_detections(st: &mut TickState, sync: &Syncer) {
    while st.held.len() < DETECTION_QUEUE {
        match st.detections.try_recv() {
            Ok(Some(m)) => st.held.push(m),
            Ok(None) | Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
        }
    }
    if st.held.is_empty() {
        return;
    }
    let Some(store) = &st.store else {
        drop_excess(st, sync);
        return;
    };
    // A bounded transaction per tick; the rest waits for the next one.
    let now = st.held.len().min(DETECTIONS_PER_TICK);
    match store.record_detections(&st.held[..now]) {
        Ok(n) => {
            sync.health.detections_written.fetch_add(n as u64, Relaxed);
            st.held.drain(..now);
        }
        Err(e) => {
            if !e.message.contains("locked") && !e.message.contains("busy") {
                sync.set_error(&e);
            }
            drop_excess(st, sync);
        }
    }
}

fn drop_excess(st: &mut TickState, sync: &Syncer) {
    if st.held.len() > DETECTION_QUEUE {
        let n = st.held.len() - DETECTION_QUEUE;
        let ids: usize = st.held.drain(..n).map(|(ids, _)| ids.len()).sum();
        sync.health
            .detections_dropped
            .fetch_add(ids as u64, Relaxed);
    }
}
