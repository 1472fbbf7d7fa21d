//! The store watcher and the real-time detection writer.
//!
//! - The **watcher** thread applies the store's change log to the enforcer
//!   every `sync_poll_interval`, and reloads everything (built aside, swapped
//!   in) only when it fell behind the kept log. While the store cannot be
//!   opened it retries, and the enforcer follows `fail_mode` until the first
//!   load succeeds; once loaded, a later store failure keeps the last good
//!   lists in force and is reported in [`Health`].
//! - The **writer** thread receives real-time detections from the enforcer's
//!   detection sink over a bounded channel (the request path only does a
//!   `try_send`; a full channel drops and counts) and writes them to the
//!   store in batches, where every other process picks them up from the log.
//!
//! Both threads catch panics, count them and restart with a backoff.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
// std's channel rather than crossbeam's: its `try_send` does not initialise
// `thread::current()` on the host's thread (crossbeam's does, leaving an
// allocation valgrind reports in every C host that sees a detection).
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError, sync_channel};

use crate::clock::now_ms;
use crate::enforcer::Enforcer;
use crate::policy::Switch;
use crate::policy::ident::Identifier;
use crate::policy::lists::Source;
use crate::store::{Change, Changes, List, Loaded, Store, StoreError};
use crate::sync::snapshot::{self, FileId};

/// Detections waiting for the writer; beyond this they are dropped (and
/// counted) rather than slowing the request path.
pub const DETECTION_QUEUE: usize = 8192;

/// Changes applied per read of the log.
const BATCH: usize = 2_000;

/// Changes per read of the log on an event loop: about a tenth of a
/// millisecond of work, so a tick stops close to its budget.
const SMALL_BATCH: usize = 64;

/// How often the watcher retries a store it could not open.
const RETRY_OPEN: Duration = Duration::from_secs(1);

/// How long a bulk change (an ABS list, a large import) read from the log
/// waits for a snapshot that holds it before this process loads it itself
/// (the host's builder failing, or none running).
pub const BULK_WAIT: Duration = Duration::from_secs(60);

/// How often expired entries are dropped from memory and from the store.
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// A detection on its way to the store.
pub type DetectionMsg = (Vec<Identifier>, Source);

/// What the writer's channel carries: a detection, or `None` to stop.
pub type WriterMsg = Option<DetectionMsg>;

/// Counters and the last error of the sync machinery, for status.
#[derive(Debug, Default)]
pub struct Health {
    error: Mutex<Option<String>>,
    /// Log position applied to the enforcer.
    pub applied_seq: AtomicU64,
    /// Full reloads done (the first load included).
    pub full_loads: AtomicU64,
    /// Changes applied from the log.
    pub changes_applied: AtomicU64,
    /// Detection identifiers written to the store.
    pub detections_written: AtomicU64,
    /// Detections dropped (queue full, or store unavailable). Shared with
    /// the enforcer's sink, which must not hold the syncer (that would be a
    /// reference cycle: the enforcer owns its sink).
    pub detections_dropped: Arc<AtomicU64>,
    /// Panics caught in the background threads (each restarted).
    pub panics: AtomicU64,
    /// Unix ms of the last successful poll of the store.
    pub last_poll_ms: AtomicU64,
    /// The log position of the snapshot in use (0: none).
    pub snapshot_seq: AtomicU64,
    /// Snapshots installed.
    pub snapshot_installs: AtomicU64,
    /// Snapshot files refused (failed their check, or older than the lists).
    pub snapshot_refusals: AtomicU64,
    snapshot_error: Mutex<Option<String>>,
    last_refusal: Mutex<Option<String>>,
}

impl Health {
    /// The last store error, if the store is failing now.
    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_error(&self, e: Option<String>) {
        *self.error.lock().unwrap_or_else(|e| e.into_inner()) = e;
    }

    /// Why the last snapshot file was refused, until one is installed.
    pub fn snapshot_error(&self) -> Option<String> {
        self.snapshot_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_snapshot_error(&self, e: Option<String>) {
        if let Some(m) = &e {
            self.snapshot_refusals.fetch_add(1, Relaxed);
            *self.last_refusal.lock().unwrap_or_else(|e| e.into_inner()) = Some(m.clone());
        }
        *self
            .snapshot_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = e;
    }

    /// Why the last snapshot file was refused, kept after a good one
    /// replaced it (for a log line that comes later than the refusal).
    pub fn last_refusal(&self) -> Option<String> {
        self.last_refusal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// What a syncer knows of the host's snapshot file.
#[derive(Debug, Default)]
struct SnapState {
    /// The file installed.
    installed: Option<FileId>,
    /// The file last refused: not looked at again until the path changes.
    refused: Option<FileId>,
    /// The log position of the last full load: an older snapshot would
    /// drop what it loaded.
    floor: u64,
    /// A bulk change read from the log and left for the next snapshot:
    /// its position and when it was read.
    waiting: Option<(u64, Instant)>,
}

/// The part of an engine shared with its watcher: the enforcer, the store
/// connection used for API calls, the log position and the apply lock.
#[derive(Debug)]
pub struct Syncer {
    enforcer: Arc<Enforcer>,
    store: ArcSwapOption<Store>,
    /// Held while a change is written and applied (by an engine call) or a batch
    /// of the log is read and applied (by the watcher), so the enforcer sees
    /// changes in log order and an engine's direct apply never lands after a
    /// later change another process made to the same entry.
    apply: Mutex<()>,
    snap: Mutex<SnapState>,
    /// Health counters.
    pub health: Health,
    /// This engine's registration and the change notice (`presence`).
    pub presence: crate::sync::presence::Presence,
}

impl Syncer {
    /// A syncer for `enforcer`, with no store yet.
    pub fn new(enforcer: Arc<Enforcer>) -> Syncer {
        Syncer {
            presence: crate::sync::presence::Presence::new(&enforcer.config().state_dir),
            enforcer,
            store: ArcSwapOption::empty(),
            apply: Mutex::new(()),
            snap: Mutex::new(SnapState::default()),
            health: Health::default(),
        }
    }

    /// The enforcer.
    pub fn enforcer(&self) -> &Arc<Enforcer> {
        &self.enforcer
    }

    /// The store connection for calls from the host, if the store is open.
    pub fn store(&self) -> Option<Arc<Store>> {
        self.store.load_full()
    }

    /// Installs the store connection for calls from the host.
    pub fn set_store(&self, s: Option<Arc<Store>>) {
        self.store.store(s);
    }

    /// Takes the apply lock (see the field's comment).
    pub fn lock(&self) -> MutexGuard<'_, ()> {
        // The enforcer's maps are consistent after any single edit, so a panic
        // while holding this lock leaves nothing half-done to protect.
        self.apply.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a store failure.
    pub fn set_error(&self, e: &StoreError) {
        self.health.set_error(Some(e.message.clone()));
        self.publish_health();
    }

    /// The store answered: clears the error.
    fn store_answered(&self) {
        self.health.set_error(None);
        self.publish_health();
    }

    /// Puts whether the store is failing, and whether `fail_mode` decides,
    /// into this engine's presence record, for `ase-cli`.
    pub fn publish_health(&self) {
        let mut flags = 0;
        if self.health.error().is_some() {
            flags |= crate::sync::presence::STORE_FAILING;
        }
        if self.enforcer.failed() {
            flags |= crate::sync::presence::FAIL_MODE;
        }
        self.presence.set_flags(flags);
    }

    /// Loads the whole store into the enforcer: lists built aside and swapped
    /// in, then the stored switches and API overrides. Clears the failed state.
    pub fn full_load(&self, store: &Store) -> Result<(), StoreError> {
        let _g = self.lock();
        self.full_load_locked(store)
    }

    fn full_load_locked(&self, store: &Store) -> Result<(), StoreError> {
        let (lists, loaded) = store.load()?;
        self.enforcer.replace_lists(lists);
        {
            let mut st = self.snap_state();
            // The snapshot in use (if any) was dropped with the old lists:
            // the next one at least as new as this load is installed.
            st.installed = None;
            st.refused = None;
            st.floor = loaded.seq;
            st.waiting = None;
        }
        self.health.snapshot_seq.store(0, Relaxed);
        self.apply_settings(&loaded);
        self.health.applied_seq.store(loaded.seq, Relaxed);
        self.presence.published(loaded.seq);
        self.health.full_loads.fetch_add(1, Relaxed);
        self.health.last_poll_ms.store(now_ms(), Relaxed);
        self.enforcer.set_failed(false);
        self.store_answered();
        Ok(())
    }

    fn snap_state(&self) -> MutexGuard<'_, SnapState> {
        self.snap.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies stored switches and API overrides.
    fn apply_settings(&self, loaded: &Loaded) {
        for (name, on) in &loaded.switches {
            if let Some(s) = switch_named(name) {
                self.enforcer.set_switch_at(s, *on, loaded.seq);
            }
        }
        for (api, on) in &loaded.api_blocking {
            // An override for an API no longer configured is kept in the
            // store (it may come back) but has nothing to apply to.
            self.enforcer.set_api_blocking(api, *on);
        }
    }

    /// Starts an engine's lists: from the host's snapshot and the log after
    /// it when there is a good one the log still reaches back to (no list
    /// is read from the store: a new nginx worker maps what is there),
    /// else by a full load.
    pub fn start(&self, store: &Store) -> Result<(), StoreError> {
        let dir = self.enforcer.config().state_dir.clone();
        if let Ok(Some((snap, id))) = snapshot::open(&dir) {
            let reaches = snap.seq() <= store.last_seq()?
                && snap.seq() >= self.snap_state().floor
                && matches!(store.changes_since(snap.seq(), 1)?, Changes::Next(_));
            if reaches {
                let _g = self.lock();
                let settings = store.load_settings()?;
                self.enforcer.replace_lists(crate::policy::IdMap::new());
                self.install_locked(store, snap, id, Some(&settings))?;
                self.health.last_poll_ms.store(now_ms(), Relaxed);
                self.enforcer.set_failed(false);
                self.store_answered();
                drop(_g);
                self.poll(store)?;
                return Ok(());
            }
        }
        self.full_load(store)
    }

    /// Whether the lists reflect the log up to `seq`: applied, and no bulk
    /// change waiting for its snapshot.
    pub fn reflects(&self, seq: u64) -> bool {
        self.health.applied_seq.load(Relaxed) >= seq && self.snap_state().waiting.is_none()
    }

    /// Whether the snapshot file `id` is the one installed or the one last
    /// refused (nothing to do for it).
    pub fn snapshot_seen(&self, id: Option<FileId>) -> bool {
        let st = self.snap_state();
        id.is_none() || id == st.installed || id == st.refused
    }

    /// Installs a snapshot checked elsewhere (an event-loop host checks it
    /// a slice per tick).
    pub fn install(
        &self,
        store: &Store,
        snap: std::sync::Arc<crate::policy::snapshot::Snapshot>,
        id: FileId,
    ) -> Result<bool, StoreError> {
        // An event loop never waits: when another thread holds the lock,
        // the caller tries again on its next tick.
        let _g = match self.apply.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(false),
        };
        self.install_locked(store, snap, id, None)?;
        Ok(true)
    }

    /// Records that the snapshot file `id` was refused, and why.
    pub fn refuse(&self, id: FileId, why: String) {
        self.snap_state().refused = Some(id);
        self.health.set_snapshot_error(Some(why));
    }

    /// Installs the host's snapshot file when it changed since the last
    /// look: checked whole (on the watcher's thread), then the lists move
    /// onto it. A file that fails the check is refused, the reason kept in
    /// health, and not looked at again until the path holds another file.
    pub fn follow_snapshot(&self, store: &Store) -> Result<(), StoreError> {
        let dir = self.enforcer.config().state_dir.clone();
        let id = snapshot::file_id(&dir).ok().flatten();
        {
            let st = self.snap_state();
            if id.is_none() || id == st.installed || id == st.refused {
                return Ok(());
            }
        }
        match snapshot::open(&dir) {
            Ok(Some((snap, id))) => {
                let _g = self.lock();
                self.install_locked(store, snap, id, None)
            }
            Ok(None) => Ok(()),
            Err(e) => {
                self.snap_state().refused = id;
                self.health.set_snapshot_error(Some(e));
                Ok(())
            }
        }
    }

    /// Moves the lists onto `snap` (apply lock held). A snapshot ahead of
    /// what was applied holds the lists up to its position but not the
    /// switches: those are read from the store.
    fn install_locked(
        &self,
        store: &Store,
        snap: std::sync::Arc<crate::policy::snapshot::Snapshot>,
        id: FileId,
        settings: Option<&Loaded>,
    ) -> Result<(), StoreError> {
        let seq = snap.seq();
        let current = self.enforcer.snapshot().map(|s| s.seq());
        let floor = self.snap_state().floor;
        if seq > store.last_seq()? {
            // Ahead of the store: the store was reset or restored from a
            // backup after the file was built. Passed over; the builder
            // builds the store's.
            self.snap_state().refused = Some(id);
            return Ok(());
        }
        if current.is_some_and(|c| seq < c) || seq < floor {
            // Older than the lists in force (a full load read the store
            // after it was built): not wrong, just not useful. Passed over
            // until the builder replaces it.
            self.snap_state().refused = Some(id);
            return Ok(());
        }
        let applied = self.health.applied_seq.load(Relaxed);
        if seq > applied || settings.is_some() {
            let owned;
            let s = match settings {
                Some(s) => s,
                None => {
                    owned = store.load_settings()?;
                    &owned
                }
            };
            self.apply_settings(s);
        }
        self.enforcer.install_snapshot(snap);
        if seq > applied {
            self.health.applied_seq.store(seq, Relaxed);
        }
        let mut st = self.snap_state();
        st.installed = Some(id);
        st.refused = None;
        if st.waiting.is_some_and(|(w, _)| w <= seq) {
            // What waited is in force.
            st.waiting = None;
        }
        drop(st);
        self.health.snapshot_seq.store(seq, Relaxed);
        self.health.snapshot_installs.fetch_add(1, Relaxed);
        self.health.set_snapshot_error(None);
        Ok(())
    }

    /// Applies every change logged since the last one applied; reloads fully
    /// if the log no longer reaches back that far. Returns the changes applied.
    pub fn poll(&self, store: &Store) -> Result<usize, StoreError> {
        self.poll_with(store, usize::MAX, true)
    }

    /// [`Syncer::poll`] of at most about `max` changes (whole batches of the
    /// log; the rest waits for the next call). With `fallback`, a bulk
    /// change that no snapshot brought within [`BULK_WAIT`] is loaded here;
    /// an event-loop host passes false: it never reads a whole list on its
    /// loop, and waits for the snapshot however long it takes.
    pub fn poll_with(
        &self,
        store: &Store,
        max: usize,
        fallback: bool,
    ) -> Result<usize, StoreError> {
        let _g = self.lock();
        self.poll_locked(store, max, fallback, None)
    }

    /// [`Syncer::poll_with`] for an event loop: never waits for the apply
    /// lock (another thread of the process holding it: nothing this time),
    /// reads the log in small batches and stops after `budget`. A bulk
    /// change waits for its snapshot.
    pub fn poll_bounded(&self, store: &Store, budget: Duration) -> Result<usize, StoreError> {
        let _g = match self.apply.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(0),
        };
        self.poll_locked(store, usize::MAX, false, Some(Instant::now() + budget))
    }

    fn poll_locked(
        &self,
        store: &Store,
        max: usize,
        fallback: bool,
        deadline: Option<Instant>,
    ) -> Result<usize, StoreError> {
        let mut n = 0;
        while n < max {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            let from = self.health.applied_seq.load(Relaxed);
            let batch = if deadline.is_some() {
                SMALL_BATCH
            } else {
                BATCH
            };
            let want = batch.min(max - n);
            match store.changes_since(from, want)? {
                Changes::Behind if !fallback => {
                    // The log was trimmed past this process: the next
                    // snapshot (the builder makes one when the log moved)
                    // brings it up to date.
                    self.snap_state()
                        .waiting
                        .get_or_insert((from, Instant::now()));
                    return Ok(n);
                }
                Changes::Behind => {
                    self.full_load_locked(store)?;
                    return Ok(n);
                }
                Changes::Next(v) => {
                    let len = v.len();
                    for (seq, c) in v {
                        if matches!(c, Change::Reload | Change::ReloadSource(_)) {
                            // Left for the host's next snapshot: loading a
                            // million entries in every process is what the
                            // snapshot saves.
                            self.snap_state()
                                .waiting
                                .get_or_insert((seq, Instant::now()))
                                .0 = seq;
                        } else {
                            self.apply(store, &c, seq)?;
                        }
                        self.health.applied_seq.store(seq, Relaxed);
                        n += 1;
                    }
                    if len < want {
                        break;
                    }
                }
            }
        }
        let waiting = self.snap_state().waiting;
        let overdue = waiting.is_some_and(|(_, since)| since.elapsed() >= BULK_WAIT);
        if overdue && fallback {
            // No snapshot came: load it here rather than enforce an old list.
            self.full_load_locked(store)?;
        } else if let (true, Some((w, since))) = (overdue, waiting) {
            // An event loop never loads a whole list: say so, loudly (once).
            if self.health.snapshot_error().is_none() {
                self.health.set_snapshot_error(Some(format!(
                    "a bulk change (log position {w}) has waited {} s for a lists snapshot \
                     that holds it: no process of the host builds one (run ase-agent, or \
                     leave ase_host_role on) or its builds fail (see the host-role \
                     process's status)",
                    since.elapsed().as_secs()
                )));
            }
        }
        // A bulk change left for its snapshot is not in force here yet:
        // waiters for it (ase-cli, the C API) must not see it as applied.
        let applied = self.health.applied_seq.load(Relaxed);
        let in_force = match self.snap_state().waiting {
            Some((w, _)) => applied.min(w.saturating_sub(1)),
            None => applied,
        };
        self.presence.published(in_force);
        self.health.changes_applied.fetch_add(n as u64, Relaxed);
        self.health.last_poll_ms.store(now_ms(), Relaxed);
        self.store_answered();
        Ok(n)
    }

    /// Applies one change, at log position `seq`, to the enforcer.
    pub fn apply(&self, store: &Store, c: &Change, seq: u64) -> Result<(), StoreError> {
        let e = &self.enforcer;
        match c {
            Change::Add {
                list: List::Deny,
                id,
                source,
                expiry,
            } => {
                e.deny_add_at(id, *source, *expiry, seq);
            }
            Change::Add {
                list: List::Allow,
                id,
                expiry,
                ..
            } => {
                e.allow_add_at(id, *expiry, seq);
            }
            Change::Remove {
                list: List::Deny,
                id,
                mask,
            } => {
                e.deny_remove_at(id, *mask, seq);
            }
            Change::Remove {
                list: List::Allow,
                id,
                ..
            } => {
                e.allow_remove_at(id, seq);
            }
            Change::Clear {
                list: List::Deny,
                mask,
            } => {
                e.deny_clear_at(*mask, seq);
            }
            Change::Clear {
                list: List::Allow, ..
            } => {
                e.allow_clear_at(seq);
            }
            Change::Switch { name, on } => {
                if let Some(s) = switch_named(name) {
                    e.set_switch_at(s, *on, seq);
                }
            }
            Change::ApiBlocking { api, on } => {
                e.set_api_blocking(api, *on);
            }
            Change::ReloadSource(s) => {
                let entries = store.source_entries(*s)?;
                e.replace_source_at(*s, &entries, seq);
            }
            Change::Reload => self.full_load_locked(store)?,
        }
        Ok(())
    }
}

/// Fetched ABS lists go to the store in one transaction (every process
/// then switches at once through the log), then into this enforcer.
impl crate::sync::abs::AbsSink for Syncer {
    fn replace_abs(&self, entries: Vec<(Identifier, u64)>) -> Result<(), String> {
        let Some(store) = self.store() else {
            return Err("state store unavailable; the ABS list is not applied".to_string());
        };
        let digest = crate::sync::abs::attacklist::digest(&entries);
        let same = store.meta(crate::store::META_ABS_DIGEST).ok().flatten().as_deref()
            == Some(&digest)
            // Every entry still there: none cleared, deleted or expired since.
            && store
                .counts(now_ms())
                .is_ok_and(|c| c.deny[Source::Abs as usize] == entries.len() as u64);
        if same {
            // The list in force already: nothing to write or build.
            let _ = store.set_meta(crate::store::META_ABS_LAST_SYNC, &now_ms().to_string());
            return Ok(());
        }
        let rows: Vec<crate::store::NewEntry> = entries
            .into_iter()
            .map(|(id, exp)| crate::store::NewEntry::new(id, exp))
            .collect();
        // Without the apply lock: nothing is applied here, and the write of
        // a million rows takes seconds, during which an evented engine's
        // tick on the host's event loop would otherwise wait for the lock.
        store
            .replace_abs_list(&rows, &digest)
            .map_err(|e| e.message)?;
        drop(rows);
        let seq = store.last_seq().unwrap_or(0);
        // Status only: a failure here must not undo a sync that succeeded.
        let _ = store.set_meta(crate::store::META_ABS_LAST_SYNC, &now_ms().to_string());
        // Not applied here: this process reads the change from the log like
        // every other and takes it with the snapshot the host builds of it.
        // A sync is reported done once that is in force here, so that the
        // status an operator reads means "enforced".
        let deadline = Instant::now() + BULK_WAIT;
        while !self.reflects(seq) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

/// The switch with this CLI word.
pub fn switch_named(name: &str) -> Option<Switch> {
    Switch::ALL.into_iter().find(|s| s.as_str() == name)
}

/// The background threads of one engine.
#[derive(Debug)]
pub struct Background {
    /// Dropped to wake and stop the watcher.
    stop: Option<Sender<()>>,
    /// Sends the writer its stop message.
    writer: SyncSender<WriterMsg>,
    threads: Vec<JoinHandle<()>>,
}

impl Background {
    /// Starts the watcher and the writer. `store` is the watcher's own
    /// connection when the store is open; without it the watcher keeps trying
    /// to open the store in `state_dir` and loads it when it can.
    pub fn start(
        syncer: Arc<Syncer>,
        state_dir: PathBuf,
        store: Option<Store>,
        interval: Duration,
        writer_tx: SyncSender<WriterMsg>,
        detections: Receiver<WriterMsg>,
    ) -> std::io::Result<Background> {
        let (stop_tx, stop) = std::sync::mpsc::channel::<()>();
        let mut threads = Vec::new();
        {
            let syncer = syncer.clone();
            let dir = state_dir.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("ase-watch".into())
                    .spawn(move || watcher(&syncer, &dir, store, interval, &stop))?,
            );
        }
        threads.push(
            std::thread::Builder::new()
                .name("ase-detect".into())
                .spawn(move || writer(&syncer, &state_dir, &detections))?,
        );
        Ok(Background {
            stop: Some(stop_tx),
            writer: writer_tx,
            threads,
        })
    }

    /// Stops the threads, waiting up to `wait` for them. Returns whether all
    /// finished in time (a thread still blocked in I/O is left detached).
    pub fn stop(&mut self, wait: Duration) -> bool {
        // Dropping the sender wakes the watcher. The writer gets a message;
        // when its queue is full it is busy and sees the stop once it has
        // made room (the wait below is bounded either way).
        self.stop = None;
        if self.writer.try_send(None).is_err() {
            let w = self.writer.clone();
            let _ = std::thread::Builder::new().spawn(move || {
                let _ = w.send(None);
            });
        }
        let deadline = Instant::now() + wait;
        while self.threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        let all = self.threads.iter().all(|t| t.is_finished());
        for t in self.threads.drain(..) {
            if t.is_finished() {
                let _ = t.join();
            }
        }
        all
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(2));
    }
}

/// Sleeps `d` unless told to stop; true when stopping.
fn sleep_or_stop(stop: &Receiver<()>, d: Duration) -> bool {
    !matches!(stop.recv_timeout(d), Err(RecvTimeoutError::Timeout))
}

fn backoff(panics: u32) -> Duration {
    Duration::from_millis(100u64 << panics.min(6))
}

fn watcher(
    syncer: &Syncer,
    dir: &std::path::Path,
    mut store: Option<Store>,
    interval: Duration,
    stop: &Receiver<()>,
) {
    let mut last_try = Instant::now();
    let mut last_purge = Instant::now();
    let mut panics = 0u32;
    loop {
        if syncer
            .presence
            .sleep(stop, interval, &syncer.health.applied_seq)
        {
            return;
        }
        let step = catch_unwind(AssertUnwindSafe(|| {
            match &store {
                None => {
                    if last_try.elapsed() < RETRY_OPEN {
                        return;
                    }
                    last_try = Instant::now();
                    match Store::open(dir).and_then(|s| {
                        syncer.start(&s)?;
                        Ok(s)
                    }) {
                        Ok(s) => {
                            if syncer.store().is_none() {
                                syncer.set_store(s.reopen().ok().map(Arc::new));
                            }
                            store = Some(s);
                        }
                        Err(e) => syncer.set_error(&e),
                    }
                }
                Some(s) => {
                    if let Err(e) = syncer
                        .follow_snapshot(s)
                        .and_then(|()| syncer.poll(s).map(|_| ()))
                    {
                        // Keep the last good lists in force; try again next tick.
                        syncer.set_error(&e);
                    }
                }
            }
            if last_purge.elapsed() >= PURGE_EVERY {
                last_purge = Instant::now();
                let now = now_ms();
                syncer
                    .enforcer()
                    .with_lists(|lists| lists.purge_expired(now));
            }
        }));
        if step.is_err() {
            syncer.health.panics.fetch_add(1, Relaxed);
            panics += 1;
            if sleep_or_stop(stop, backoff(panics)) {
                return;
            }
        } else {
            panics = 0;
        }
    }
}

fn writer(syncer: &Syncer, dir: &std::path::Path, rx: &Receiver<WriterMsg>) {
    let mut store: Option<Store> = None;
    let mut last_purge = Instant::now();
    let mut panics = 0u32;
    loop {
        let mut batch: Vec<DetectionMsg> = Vec::new();
        let mut stopping = match rx.recv_timeout(PURGE_EVERY) {
            Ok(Some(m)) => {
                batch.push(m);
                false
            }
            Ok(None) | Err(RecvTimeoutError::Disconnected) => true,
            Err(RecvTimeoutError::Timeout) => false,
        };
        // Take whatever else is queued: one transaction for all of it.
        while batch.len() < 4096 && !stopping {
            match rx.try_recv() {
                Ok(Some(m)) => batch.push(m),
                Ok(None) | Err(TryRecvError::Disconnected) => stopping = true,
                Err(TryRecvError::Empty) => break,
            }
        }
        let step = catch_unwind(AssertUnwindSafe(|| {
            let mut reopen = false;
            // Opened when there is work for it: a host that records no
            // detection (or is stopped at once) never waits on this thread
            // opening a store.
            let purge_due = last_purge.elapsed() >= PURGE_EVERY * 5;
            if store.is_none() && (!batch.is_empty() || purge_due) {
                store = Store::open(dir).ok();
            }
            let Some(s) = &store else {
                let n: usize = batch.iter().map(|(ids, _)| ids.len()).sum();
                syncer
                    .health
                    .detections_dropped
                    .fetch_add(n as u64, Relaxed);
                return;
            };
            if !batch.is_empty() {
                match s.record_detections(&batch) {
                    Ok(n) => {
                        syncer
                            .health
                            .detections_written
                            .fetch_add(n as u64, Relaxed);
                    }
                    Err(e) => {
                        let n: usize = batch.iter().map(|(ids, _)| ids.len()).sum();
                        syncer
                            .health
                            .detections_dropped
                            .fetch_add(n as u64, Relaxed);
                        syncer.set_error(&e);
                        reopen = true;
                    }
                }
            }
            if purge_due {
                last_purge = Instant::now();
                let _ = s.purge_expired(now_ms());
            }
            if reopen {
                // The next batch opens a fresh connection (the file may
                // have been restored or its permissions fixed).
                store = None;
            }
        }));
        if stopping {
            return;
        }
        if step.is_err() {
            syncer.health.panics.fetch_add(1, Relaxed);
            panics += 1;
            std::thread::sleep(backoff(panics));
        } else {
            panics = 0;
        }
    }
}

/// The enforcer's detection sink: queue without blocking, count what is dropped.
pub fn detection_sink(
    tx: SyncSender<WriterMsg>,
    dropped: Arc<AtomicU64>,
) -> crate::enforcer::DetectionSink {
    Box::new(move |ids: &[Identifier], source: Source| {
        if tx.try_send(Some((ids.to_vec(), source))).is_err() {
            dropped.fetch_add(ids.len() as u64, Relaxed);
        }
    })
}

/// A channel for detections, sized [`DETECTION_QUEUE`].
pub fn detection_channel() -> (SyncSender<WriterMsg>, Receiver<WriterMsg>) {
    sync_channel(DETECTION_QUEUE)
}
