//! An engine: one enforcer plus everything that keeps it in step with the host's
//! shared state (the store, the watcher, ABS sync). The C API and `ase-cli`
//! change lists and switches through an engine, so every change is made durable
//! first and then applied to the enforcer.
//!
//! Two kinds of engine:
//! - [`Engine::open`](crate::engine::Engine::open) (enforcers in nginx workers and gateways): loads the store
//!   into the enforcer and starts the watcher and detection-writer threads. Call
//!   it after the host forks. A store that cannot be opened does not stop the
//!   engine: the enforcer follows `fail_mode` and the watcher keeps retrying.
//! - [`Engine::open_passive`](crate::engine::Engine::open_passive) (`ase-cli`): the store and the configuration, no
//!   threads, and the enforcer's lists are neither loaded nor kept (nothing reads
//!   them); a store that cannot be opened is an error.

use std::fmt;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::enforcer::{Enforcer, Stats};
use crate::load::{LoadError, abs_conf_path, load};
use crate::policy::{
    ApiSet, Config, ConfigError, Decision, Headers, Identifier, Meta, Request, Source, Switch,
};
use crate::store::{List, NewEntry, Store, StoreError};
use crate::sync::abs::shipper::Obfuscator;
use crate::sync::abs::{
    AbsClient, AbsSink, AbsStatus, ClientOptions, Poller, PollerOptions, Shipper, ShipperOptions,
    ShipperStatus, Spool, SpoolOptions, TrafficRecord, shared, sync_once,
};
use crate::sync::host::{HostRole, HostStatus};
use crate::sync::presence::{Presence, WaitOutcome};
use crate::sync::tick::Ticker;
use crate::sync::watch::{Background, Syncer, detection_channel, detection_sink};

/// Why an engine operation failed.
#[derive(Debug)]
pub enum EngineError {
    /// The configuration could not be loaded.
    Load(LoadError),
    /// No API has this name.
    UnknownApi(String),
    /// The state store failed (message says how).
    Store(String),
    /// Nothing to delete.
    NotFound,
    /// An ABS operation failed (message says how; never holds a key).
    Abs(String),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::Load(e) => e.fmt(f),
            EngineError::UnknownApi(n) => write!(f, "unknown API: {n}"),
            EngineError::Store(m) => f.write_str(m),
            EngineError::NotFound => f.write_str("no such entry"),
            EngineError::Abs(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for EngineError {}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        EngineError::Store(e.message)
    }
}

/// How often an evented engine holding the host role tries again to start
/// the ABS poller after starting it failed.
pub const ABS_START_RETRY: Duration = Duration::from_secs(10);

/// How long [`Engine::shutdown`] waits for the background threads.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// An engine's sync state, for status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineHealth {
    /// The store error, while the store is failing.
    pub store_error: Option<String>,
    /// Whether the enforcer is deciding by `fail_mode` (state never loaded).
    pub failed: bool,
    /// Log position applied.
    pub applied_seq: u64,
    /// Full loads done.
    pub full_loads: u64,
    /// Changes applied from the log.
    pub changes_applied: u64,
    /// Real-time detection identifiers written to the store.
    pub detections_written: u64,
    /// Real-time detection identifiers dropped (queue full or store down).
    pub detections_dropped: u64,
    /// Panics caught (and restarted from) in background threads.
    pub panics: u64,
    /// Unix ms of the last successful look at the store (0: never).
    pub last_poll_ms: u64,
    /// The log position of the host snapshot the lists stand on (0: none).
    pub snapshot_seq: u64,
    /// Snapshots installed.
    pub snapshot_installs: u64,
    /// Why the last snapshot file was refused, until a good one is installed.
    pub snapshot_error: Option<String>,
    /// Entries in this process's overlay above the snapshot.
    pub overlay_entries: u64,
    /// Whether this process holds the host role.
    pub host_role: bool,
    /// Why the host role's last snapshot build or check failed, while it fails.
    pub build_error: Option<String>,
    /// Snapshot files refused by this engine, or found bad by this
    /// process's builder.
    pub snapshot_refusals: u64,
    /// Why the last one was refused (kept after a good file replaced it).
    pub last_refusal: Option<String>,
}

/// One enforcer and its background machinery.
#[derive(Debug)]
pub struct Engine {
    enforcer: Arc<Enforcer>,
    sync: Arc<Syncer>,
    /// Passive engines keep no lists in their enforcer.
    passive: bool,
    background: Mutex<Option<Background>>,
    /// The ABS attack-list poller, when `abs.conf` names an endpoint (an
    /// evented engine starts it when its process takes the host role).
    abs: OnceLock<Poller>,
    /// The ABS traffic shipper, likewise.
    shipper: OnceLock<Shipper>,
    /// The candidate for the host role (snapshot builds).
    host: Option<HostRole>,
    /// Why starting the ABS poller failed in this process's host role, and
    /// when: shown as the ABS status's error, never as the store's (the
    /// store answers), and tried again every [`ABS_START_RETRY`].
    abs_start_error: Mutex<Option<(String, Instant)>>,
    /// An evented engine's state between ticks (no threads).
    ticker: Option<Ticker>,
    /// An evented engine's traffic queue and spool file, when `abs.conf`
    /// names an endpoint: its records reach ABS through the host's uploader
    /// (`sync::abs::spool`).
    spool: Option<Spool>,
}

/// How an engine runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineOptions {
    /// No threads: the host calls [`Engine::tick`] from its event loop.
    pub evented: bool,
    /// May take the host role (build snapshots). Off where a separate
    /// process (`ase-agent`) does the host's background work.
    pub host_role: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            evented: false,
            host_role: true,
        }
    }
}

/// Where an engine's poller puts what it fetched: the store (then this enforcer),
/// and its status into the store's meta table for the other processes.
struct EngineAbsSink(Arc<Syncer>);

impl AbsSink for EngineAbsSink {
    fn replace_abs(&self, entries: Vec<(Identifier, u64)>) -> Result<(), String> {
        self.0.replace_abs(entries)
    }

    fn publish_status(&self, status: &AbsStatus) {
        if let Some(s) = self.0.store() {
            // Status only: a failed write leaves the previous one.
            let _ = shared::publish(&s, status);
        }
    }

    fn shared_status(&self) -> Option<AbsStatus> {
        let s = self.0.store()?;
        shared::load(&s).ok().flatten().map(|p| p.status)
    }
}

/// Where `ase-cli`'s sync puts a fetched list: the store only (a passive
/// engine's enforcer keeps no lists), plus the time of the last good sync.
struct StoreAbsSink(Arc<Store>);

impl AbsSink for StoreAbsSink {
    fn replace_abs(&self, entries: Vec<(Identifier, u64)>) -> Result<(), String> {
        let digest = crate::sync::abs::attacklist::digest(&entries);
        let rows: Vec<NewEntry> = entries
            .into_iter()
            .map(|(id, exp)| NewEntry::new(id, exp))
            .collect();
        self.0
            .replace_abs_list(&rows, &digest)
            .map_err(|e| e.message)?;
        let _ = self.0.set_meta(
            crate::store::META_ABS_LAST_SYNC,
            &crate::clock::now_ms().to_string(),
        );
        Ok(())
    }
}

/// Reads the configuration at `path` and checks everything in it that
/// [`Engine::open`] would otherwise find wrong only when starting: the files
/// parse, and when `abs.conf` names an endpoint, the TLS client to ABS can be
/// built (`abs_ca_cert_path` readable and holding a usable certificate) and
/// an existing obfuscation key file in `state_dir` is usable. It writes
/// nothing.
///
/// `Engine::open` starts with this, and `ase_config_check` (so `nginx -t`)
/// is this, so a configuration that passes the check cannot fail at start
/// for a reason the check could see, and a failure gives the same message
/// in both. What only starting can find (threads, creating the key file)
/// is left to `open`.
pub fn check_config(path: &Path) -> Result<(Config, ApiSet), EngineError> {
    let (config, apis) = load(path).map_err(EngineError::Load)?;
    if !config.abs.endpoints.is_empty() {
        AbsClient::new(&config.abs, ClientOptions::default()).map_err(|message| {
            EngineError::Load(LoadError::Config(ConfigError {
                file: abs_conf_path(path),
                line: 0,
                key: String::new(),
                message,
            }))
        })?;
        let opts = ShipperOptions::from_config(&config);
        if let (true, Some(key)) = (opts.obfuscate, &opts.key_path) {
            Obfuscator::check_key_file(key).map_err(EngineError::Abs)?;
        }
    }
    Ok((config, apis))
}

impl Engine {
    /// Checks the configuration at `path` ([`check_config`]), opens the store
    /// in its `state_dir`, loads it into the enforcer and starts the watcher
    /// and detection-writer threads. A store that cannot be opened is not an
    /// error here: the enforcer follows `fail_mode` (see [`Engine::health`])
    /// until the watcher manages to load it.
    pub fn open(path: &Path) -> Result<Engine, EngineError> {
        Engine::open_with(path, EngineOptions::default())
    }

    /// [`Engine::open`] with options: an evented engine starts no thread
    /// and is driven by [`Engine::tick`].
    pub fn open_with(path: &Path, opts: EngineOptions) -> Result<Engine, EngineError> {
        if opts.evented {
            return Engine::open_evented(path, opts);
        }
        let (config, apis) = check_config(path)?;
        let enforcer = Arc::new(Enforcer::new(config, apis));
        let sync = Arc::new(Syncer::new(enforcer.clone()));
        let dir = enforcer.config().state_dir.clone();
        let watcher_store = match Store::open(&dir).and_then(|s| {
            sync.start(&s)?;
            Ok(s)
        }) {
            Ok(s) => {
                sync.set_store(Some(Arc::new(s.reopen()?)));
                Some(s)
            }
            Err(e) => {
                enforcer.set_failed(true);
                sync.set_error(&e);
                None
            }
        };
        let (tx, rx) = detection_channel();
        enforcer.set_detection_sink(detection_sink(
            tx.clone(),
            sync.health.detections_dropped.clone(),
        ));
        let apis = enforcer.apis();
        sync.presence
            .set_apis(apis.apis().len() as u32, apis.source_digest());
        sync.publish_health();
        // Best effort: an engine that cannot register still enforces.
        let _ = sync
            .presence
            .register(sync.health.applied_seq.load(Relaxed));
        let bg = Background::start(
            sync.clone(),
            dir,
            watcher_store,
            enforcer.config().sync_poll_interval,
            tx,
            rx,
        )
        .map_err(|e| EngineError::Store(format!("cannot start the store watcher: {e}")))?;
        // Every process runs a poller; the election lock in state_dir makes
        // one of them fetch, and the others get the list from the store's log
        // and its status from the store's meta table. Every process ships
        // its own traffic (while `enable_abs` is on: the shipper follows the
        // switch live).
        let (abs, shipper) = if enforcer.config().abs.endpoints.is_empty() {
            (None, None)
        } else {
            let sink: Arc<dyn AbsSink> = Arc::new(EngineAbsSink(sync.clone()));
            let poller = Poller::start(
                enforcer.clone(),
                sink,
                PollerOptions::from_config(enforcer.config()),
            )
            .map_err(EngineError::Abs)?;
            let shipper = match Shipper::start(
                enforcer.clone(),
                ShipperOptions::from_config(enforcer.config()),
            ) {
                Ok(s) => s,
                Err(e) => {
                    poller.stop(SHUTDOWN_WAIT);
                    return Err(EngineError::Abs(e));
                }
            };
            (Some(poller), Some(shipper))
        };
        let host = if opts.host_role {
            Some(
                HostRole::start(enforcer.config().state_dir.clone()).map_err(|e| {
                    EngineError::Store(format!("cannot start the host-role thread: {e}"))
                })?,
            )
        } else {
            None
        };
        Ok(Engine {
            enforcer,
            sync,
            passive: false,
            background: Mutex::new(Some(bg)),
            abs: once(abs),
            abs_start_error: Mutex::new(None),
            shipper: once(shipper),
            host,
            ticker: None,
            spool: None,
        })
    }

    fn open_evented(path: &Path, opts: EngineOptions) -> Result<Engine, EngineError> {
        let (config, apis) = check_config(path)?;
        let enforcer = Arc::new(Enforcer::new(config, apis));
        let sync = Arc::new(Syncer::new(enforcer.clone()));
        let dir = enforcer.config().state_dir.clone();
        let (tx, rx) = detection_channel();
        enforcer.set_detection_sink(detection_sink(tx, sync.health.detections_dropped.clone()));
        let ticker = Ticker::new(dir.clone(), rx, opts.host_role);
        // Loaded now, as a threaded engine is: the first request is checked
        // against the lists, not by `fail_mode`.
        match Store::open(&dir).and_then(|s| {
            sync.start(&s)?;
            Ok(s)
        }) {
            Ok(s) => {
                sync.set_store(Some(Arc::new(s.reopen()?)));
                let _ = s.set_busy_timeout(Duration::ZERO);
                ticker.set_store(s);
            }
            Err(e) => {
                enforcer.set_failed(true);
                sync.set_error(&e);
            }
        }
        let apis = enforcer.apis();
        sync.presence
            .set_apis(apis.apis().len() as u32, apis.source_digest());
        sync.publish_health();
        // Best effort: an engine that cannot register still enforces.
        let _ = sync
            .presence
            .register(sync.health.applied_seq.load(Relaxed));
        let spool = (!enforcer.config().abs.endpoints.is_empty()).then(|| {
            Spool::new(
                enforcer.clone(),
                SpoolOptions::from_config(enforcer.config()),
            )
        });
        Ok(Engine {
            enforcer,
            sync,
            passive: false,
            background: Mutex::new(None),
            abs: OnceLock::new(),
            abs_start_error: Mutex::new(None),
            shipper: OnceLock::new(),
            host: None,
            ticker: Some(ticker),
            spool,
        })
    }

    /// One bounded step of an evented engine's background work (see
    /// `sync::tick`); returns when to call it again. A threaded engine has
    /// nothing to do here.
    pub fn tick(&self) -> Duration {
        let interval = self.enforcer.config().sync_poll_interval;
        let Some(t) = &self.ticker else {
            return interval;
        };
        let next = t.tick(&self.sync, interval);
        if let Some(s) = &self.spool {
            s.flush();
        }
        if t.host_status().is_some() && self.abs.get().is_none() {
            // This process took the host role: it polls ABS and ships
            // traffic for the host from now on.
            let mut failed = self
                .abs_start_error
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if failed
                .as_ref()
                .is_none_or(|(_, at)| at.elapsed() >= ABS_START_RETRY)
            {
                *failed = self
                    .start_abs()
                    .err()
                    .map(|e| (e.to_string(), Instant::now()));
            }
        }
        next
    }

    /// Starts the ABS poller and traffic shipper when `abs.conf` names an
    /// endpoint (once).
    fn start_abs(&self) -> Result<(), EngineError> {
        if self.enforcer.config().abs.endpoints.is_empty() || self.abs.get().is_some() {
            return Ok(());
        }
        let sink: Arc<dyn AbsSink> = Arc::new(EngineAbsSink(self.sync.clone()));
        let poller = Poller::start(
            self.enforcer.clone(),
            sink,
            PollerOptions::from_config(self.enforcer.config()),
        )
        .map_err(EngineError::Abs)?;
        let shipper = Shipper::start(
            self.enforcer.clone(),
            ShipperOptions::from_config(self.enforcer.config()),
        )
        .map_err(EngineError::Abs)?;
        let _ = self.abs.set(poller);
        let _ = self.shipper.set(shipper);
        Ok(())
    }

    /// Waits up to `wait` until this engine's lists reflect the store's log
    /// up to `seq`, bulk changes included (their snapshot installed).
    /// Returns whether they do.
    pub fn wait_reflects(&self, seq: u64, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            if self.sync.reflects(seq) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            if self.ticker.is_some() {
                self.tick();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The host role's status, when this engine's process holds it.
    pub fn host_status(&self) -> Option<HostStatus> {
        match (&self.host, &self.ticker) {
            (Some(h), _) => Some(h.status()),
            (None, Some(t)) => t.host_status(),
            _ => None,
        }
    }

    /// Loads the configuration and opens the store, without loading lists or
    /// starting threads (for `ase-cli`). A store that cannot be opened is an error.
    pub fn open_passive(path: &Path) -> Result<Engine, EngineError> {
        let enforcer = Arc::new(Enforcer::open(path).map_err(EngineError::Load)?);
        let sync = Arc::new(Syncer::new(enforcer.clone()));
        let s = Store::open(&enforcer.config().state_dir)?;
        sync.set_store(Some(Arc::new(s)));
        Ok(Engine {
            enforcer,
            sync,
            passive: true,
            background: Mutex::new(None),
            abs: OnceLock::new(),
            abs_start_error: Mutex::new(None),
            shipper: OnceLock::new(),
            host: None,
            ticker: None,
            spool: None,
        })
    }

    /// The enforcer, for what the engine does not pass on (tests, traffic records).
    pub fn enforcer(&self) -> &Arc<Enforcer> {
        &self.enforcer
    }

    /// Decides one request and counts it ([`Enforcer::check`]).
    pub fn check<H: Headers + ?Sized>(&self, req: &Request<'_, H>) -> Decision<'_> {
        self.enforcer.check(req)
    }

    /// A copy of the counters and list sizes.
    pub fn stats(&self) -> Stats {
        self.enforcer.stats()
    }

    /// One switch, as requests see it now.
    pub fn switch(&self, s: Switch) -> bool {
        self.enforcer.switch(s)
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        self.enforcer.config()
    }

    /// The APIs.
    pub fn apis(&self) -> &ApiSet {
        self.enforcer.apis()
    }

    /// Deny entries with a source in `mask`, in insertion order (expired ones included).
    pub fn deny_entries(&self, mask: u8) -> Vec<(Identifier, Meta)> {
        self.enforcer.deny_entries(mask)
    }

    /// Allow entries, in insertion order (expired ones included).
    pub fn allow_entries(&self) -> Vec<(Identifier, Meta)> {
        self.enforcer.allow_entries()
    }

    /// The store, when it is open.
    pub fn store(&self) -> Option<Arc<Store>> {
        self.sync.store()
    }

    /// The sync state.
    pub fn health(&self) -> EngineHealth {
        let h = &self.sync.health;
        let host = self.host_status();
        EngineHealth {
            store_error: h.error(),
            failed: self.enforcer.failed(),
            applied_seq: h.applied_seq.load(Relaxed),
            full_loads: h.full_loads.load(Relaxed),
            changes_applied: h.changes_applied.load(Relaxed),
            detections_written: h.detections_written.load(Relaxed),
            detections_dropped: h.detections_dropped.load(Relaxed),
            panics: h.panics.load(Relaxed),
            last_poll_ms: h.last_poll_ms.load(Relaxed),
            snapshot_seq: h.snapshot_seq.load(Relaxed),
            snapshot_installs: h.snapshot_installs.load(Relaxed),
            snapshot_error: h.snapshot_error(),
            overlay_entries: self.enforcer.overlay_len() as u64,
            host_role: host.as_ref().is_some_and(|s| s.leader),
            snapshot_refusals: h.snapshot_refusals.load(Relaxed)
                + host.as_ref().map_or(0, |s| s.refusals),
            last_refusal: host
                .as_ref()
                .and_then(|s| s.last_refusal.clone())
                .or_else(|| h.last_refusal()),
            build_error: host.and_then(|s| s.error),
        }
    }

    /// Applies any changes other processes logged, now, instead of at the
    /// next poll. Returns how many were applied.
    pub fn sync_now(&self) -> Result<usize, EngineError> {
        match self.sync.store() {
            Some(s) if !self.passive => Ok(self.sync.poll(&s)?),
            _ => Ok(0),
        }
    }

    /// Waits until every live engine of the host has applied log position
    /// `seq` (this one counts as up to date for its own changes), for at
    /// most `timeout`; says how many engines there are and how many lag.
    /// See [`crate::sync::presence`].
    pub fn wait_applied(&self, seq: u64, timeout: Duration) -> WaitOutcome {
        self.sync.presence.wait(seq, timeout)
    }

    /// This engine's presence: the log position of its last change
    /// ([`Presence::last_change_seq`]) and what its last wait found.
    pub fn presence(&self) -> &Presence {
        &self.sync.presence
    }

    /// The ABS poller's status, when ABS is configured. Its sync fields are
    /// the host's latest attempt, whichever process made it (a poller that
    /// does not lead reads them from the store about once a second). No I/O.
    pub fn abs_status(&self) -> Option<AbsStatus> {
        if let Some(p) = self.abs.get() {
            return Some(p.status());
        }
        // An evented engine whose process does not hold the host role: ABS
        // is configured and another process polls; the status is that
        // process's, as it published it.
        if self.ticker.is_none() || self.enforcer.config().abs.endpoints.is_empty() {
            return None;
        }
        let published = self
            .sync
            .store()
            .and_then(|s| shared::load(&s).ok().flatten())
            .map(|p| p.status)
            .unwrap_or_default();
        let start_error = self
            .abs_start_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(m, _)| m.clone());
        Some(AbsStatus {
            leader: false,
            last_error: start_error.or(published.last_error),
            ..published
        })
    }

    /// Asks the ABS poller for a sync now, whatever `enable_abs_attack` and
    /// the election say, without waiting for it ([`Engine::abs_sync_now`]
    /// waits). `EngineError::Abs` when `abs.conf` names no endpoint.
    pub fn abs_request_sync(&self) -> Result<(), EngineError> {
        let p = self.abs.get().ok_or_else(not_configured)?;
        p.sync_now(None).map(|_| ()).map_err(EngineError::Abs)
    }

    /// The ABS traffic shipper, when ABS is configured (to submit records).
    pub fn abs_shipper(&self) -> Option<&Shipper> {
        self.shipper.get()
    }

    /// The traffic counters, when ABS is configured: the shipper's, plus
    /// the spool's for an evented engine (`spooled` counts the records it
    /// wrote for the host's uploader).
    pub fn shipper_status(&self) -> Option<ShipperStatus> {
        match (self.shipper.get(), &self.spool) {
            (Some(s), spool) => {
                let mut st = s.status();
                if let Some(sp) = spool {
                    sp.add_to(&mut st);
                }
                Some(st)
            }
            (None, Some(sp)) => Some(sp.status()),
            (None, None) => None,
        }
    }

    /// Whether traffic records are wanted now: ABS is configured (this
    /// engine has a shipper or a spool) and `enable_abs` is on. Lets a host
    /// skip building a record.
    pub fn traffic_enabled(&self) -> bool {
        (self.shipper.get().is_some() || self.spool.is_some()) && self.enforcer.switch(Switch::Abs)
    }

    /// Queues a traffic record for ABS without ever waiting: to the shipper
    /// when this engine has one, else (an evented engine whose process does
    /// not hold the host role) to its spool, which the next tick writes to
    /// its file. False when not queued (`enable_abs` off, ABS not
    /// configured, or the queue full: then counted as dropped).
    pub fn submit_traffic(&self, rec: TrafficRecord) -> bool {
        match (self.shipper.get(), &self.spool) {
            (Some(s), _) => s.submit(rec),
            (None, Some(sp)) => sp.submit(rec),
            (None, None) => false,
        }
    }

    /// Fetches the ABS attack list now, whatever `enable_abs_attack` and the
    /// election say (an operator asked), and applies it to the store, so
    /// every process switches to it. Returns the status after the attempt.
    ///
    /// An engine with a poller asks it and waits up to `wait`. A passive engine
    /// (`ase-cli`) fetches on the calling thread, within the client's own
    /// timeouts, and publishes the attempt for the other processes.
    /// `EngineError::Abs` when `abs.conf` names no endpoint, the sync failed
    /// (the last good list stays) or it did not finish in time.
    pub fn abs_sync_now(&self, wait: Duration) -> Result<AbsStatus, EngineError> {
        let cfg = self.enforcer.config();
        if cfg.abs.endpoints.is_empty() {
            return Err(not_configured());
        }
        let st = match self.abs.get() {
            Some(p) => {
                let started = std::time::Instant::now();
                let st = p.sync_now(Some(wait)).map_err(EngineError::Abs)?;
                // In force when this returns: the list reaches this engine
                // through the host's snapshot, which takes a moment more.
                if let Some(store) = self.sync.store() {
                    if let Ok(seq) = store.last_seq() {
                        let left = wait.saturating_sub(started.elapsed());
                        self.wait_reflects(seq, left);
                    }
                }
                st
            }
            None => {
                let store = self
                    .sync
                    .store()
                    .ok_or_else(|| EngineError::Store("no state store".to_string()))?;
                let client =
                    AbsClient::new(&cfg.abs, ClientOptions::default()).map_err(EngineError::Abs)?;
                let names = crate::sync::abs::poller::api_key_names(&self.enforcer);
                let started = crate::clock::now_ms();
                let r = sync_once(
                    &client,
                    &StoreAbsSink(store.clone()),
                    &names,
                    cfg.attack_list_memory,
                );
                // Continue the host's counters from what was published last.
                let mut st = shared::load(&store)?.map(|p| p.status).unwrap_or_default();
                st.enabled = self.enforcer.switch(Switch::AbsAttack);
                st.leader = false;
                st.record_attempt(started, &r);
                let _ = shared::publish(&store, &st);
                st
            }
        };
        match &st.last_error {
            Some(e) => Err(EngineError::Abs(e.clone())),
            None => Ok(st),
        }
    }

    /// The ABS status as the host's processes published it: the latest sync
    /// attempt and the pid that made it (`None`: never). Reads the store.
    pub fn abs_shared_status(&self) -> Result<Option<shared::SharedStatus>, EngineError> {
        match self.sync.store() {
            Some(s) => Ok(shared::load(&s)?),
            None => Ok(None),
        }
    }

    /// Stops the background threads (waiting at most [`SHUTDOWN_WAIT`]) after
    /// the detection writer has flushed what it holds. Idempotent.
    pub fn shutdown(&mut self) {
        self.sync.presence.deregister();
        if let Some(t) = self.ticker.take() {
            t.finish(&self.sync, SHUTDOWN_WAIT);
        }
        // Records queued since the last tick reach the spool file, for the
        // host's uploader (this process's own shipper, if any, included).
        if let Some(s) = &self.spool {
            s.finish(SHUTDOWN_WAIT);
        }
        if let Some(mut h) = self.host.take() {
            h.stop(SHUTDOWN_WAIT);
        }
        // The shipper first: its last flush may take a moment.
        if let Some(s) = self.shipper.take() {
            s.stop(SHUTDOWN_WAIT);
        }
        if let Some(p) = self.abs.take() {
            p.stop(SHUTDOWN_WAIT);
        }
        let bg = self
            .background
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut bg) = bg {
            bg.stop(SHUTDOWN_WAIT);
        }
    }

    /// Writes through the store (when there is one) under the apply lock, then
    /// applies to the enforcer unless passive.
    fn change<R>(
        &self,
        write: impl FnOnce(&Store) -> Result<R, StoreError>,
        apply: impl FnOnce(&Enforcer, &R, u64),
    ) -> Result<R, EngineError> {
        let store = self.sync.store();
        let _g = self.sync.lock();
        match store {
            Some(s) => {
                let r = write(&s)?;
                self.sync.presence.changed(&s);
                if !self.passive {
                    // The change's log position, for the overlay (see
                    // `Meta::changed`); read under the apply lock, so at
                    // worst a later one, which only keeps the entry in the
                    // overlay a snapshot longer.
                    let seq = s.last_seq().unwrap_or(0);
                    apply(&self.enforcer, &r, seq);
                }
                Ok(r)
            }
            None if self.enforcer.failed() => Err(EngineError::Store(
                self.sync
                    .health
                    .error()
                    .unwrap_or_else(|| "state store unavailable".to_string()),
            )),
            None => Err(EngineError::Store("no state store".to_string())),
        }
    }

    fn has_store(&self) -> bool {
        self.sync.store().is_some() || self.enforcer.failed()
    }

    /// Adds `id` to the deny list under `source` (expiry in Unix ms, 0 = never).
    /// Returns true if it was not listed before.
    pub fn deny_add(
        &self,
        id: &Identifier,
        source: Source,
        expiry: u64,
    ) -> Result<bool, EngineError> {
        if !self.has_store() {
            return Ok(self.enforcer.deny_add_at(id, source, expiry, 0));
        }
        self.change(
            |s| {
                Ok(
                    s.add(List::Deny, &NewEntry::new(id.clone(), expiry), source)?
                        .0,
                )
            },
            |e, _, seq| {
                e.deny_add_at(id, source, expiry, seq);
            },
        )
    }

    /// Adds many entries under `source` in one transaction (an import);
    /// `progress` gets the count done so far. Returns how many were new.
    pub fn deny_add_many(
        &self,
        entries: &[NewEntry],
        source: Source,
        progress: &mut dyn FnMut(usize),
    ) -> Result<usize, EngineError> {
        if !self.has_store() {
            return Ok(entries
                .iter()
                .filter(|e| self.enforcer.deny_add_at(&e.id, source, e.expiry, 0))
                .count());
        }
        self.change(
            |s| s.add_many(List::Deny, entries, source, progress),
            |e, _, seq| {
                e.with_lists(|lists| {
                    for n in entries {
                        lists.add(n.id.key(), source, n.expiry, seq);
                    }
                })
            },
        )
    }

    /// Removes `id` from every deny source. `NotFound` if it was not listed.
    pub fn deny_remove(&self, id: &Identifier) -> Result<(), EngineError> {
        if !self.has_store() {
            return match self.enforcer.deny_remove_at(id, Source::ANY, 0) {
                0 => Err(EngineError::NotFound),
                _ => Ok(()),
            };
        }
        let (taken, _) = self.change(
            |s| s.remove(List::Deny, id, Source::ANY),
            |e, _, seq| {
                e.deny_remove_at(id, Source::ANY, seq);
            },
        )?;
        if taken == 0 {
            Err(EngineError::NotFound)
        } else {
            Ok(())
        }
    }

    /// Removes the sources in `mask` from every deny entry; returns how many changed.
    pub fn deny_clear(&self, mask: u8) -> Result<usize, EngineError> {
        if !self.has_store() {
            return Ok(self.enforcer.deny_clear_at(mask, 0));
        }
        self.change(
            |s| s.clear(List::Deny, mask),
            |e, _, seq| {
                e.deny_clear_at(mask, seq);
            },
        )
    }

    /// Replaces every deny entry of `source` (an ABS list fetched whole):
    /// stored in one transaction, then swapped into the enforcer at once.
    pub fn replace_source(&self, source: Source, entries: &[NewEntry]) -> Result<(), EngineError> {
        let apply = |e: &Enforcer, seq: u64| {
            let v: Vec<(Identifier, u64)> =
                entries.iter().map(|n| (n.id.clone(), n.expiry)).collect();
            e.replace_source_at(source, &v, seq);
        };
        if !self.has_store() {
            apply(&self.enforcer, 0);
            return Ok(());
        }
        self.change(
            |s| s.replace_source(source, entries),
            |e, _, seq| apply(e, seq),
        )
        .map(|_| ())
    }

    /// Adds `id` to the allow list (expiry in Unix ms, 0 = never).
    pub fn allow_add(&self, id: &Identifier, expiry: u64) -> Result<bool, EngineError> {
        if !self.has_store() {
            return Ok(self.enforcer.allow_add_at(id, expiry, 0));
        }
        self.change(
            |s| {
                Ok(s.add(
                    List::Allow,
                    &NewEntry::new(id.clone(), expiry),
                    Source::Manual,
                )?
                .0)
            },
            |e, _, seq| {
                e.allow_add_at(id, expiry, seq);
            },
        )
    }

    /// Removes `id` from the allow list. `NotFound` if it was not listed.
    pub fn allow_remove(&self, id: &Identifier) -> Result<(), EngineError> {
        if !self.has_store() {
            return if self.enforcer.allow_remove_at(id, 0) {
                Ok(())
            } else {
                Err(EngineError::NotFound)
            };
        }
        let (taken, _) = self.change(
            |s| s.remove(List::Allow, id, Source::ANY),
            |e, _, seq| {
                e.allow_remove_at(id, seq);
            },
        )?;
        if taken == 0 {
            Err(EngineError::NotFound)
        } else {
            Ok(())
        }
    }

    /// Empties the allow list; returns how many entries it had.
    pub fn allow_clear(&self) -> Result<usize, EngineError> {
        if !self.has_store() {
            return Ok(self.enforcer.allow_clear_at(0));
        }
        self.change(
            |s| s.clear(List::Allow, Source::ANY),
            |e, _, seq| {
                e.allow_clear_at(seq);
            },
        )
    }

    /// Sets a switch. Turning `ase_detected_attack` off deletes every
    /// real-time deny entry, in the store and in every enforcer.
    pub fn set_switch(&self, s: Switch, on: bool) -> Result<(), EngineError> {
        if !self.has_store() {
            self.enforcer.set_switch_at(s, on, 0);
            return Ok(());
        }
        self.change(
            |st| st.set_switch(s.as_str(), on),
            |e, _, seq| e.set_switch_at(s, on, seq),
        )
        .map(|_| ())
    }

    /// Sets `enable_blocking` of API `name`.
    pub fn set_api_blocking(&self, name: &str, on: bool) -> Result<(), EngineError> {
        if self.enforcer.apis().get(name).is_none() {
            return Err(EngineError::UnknownApi(name.to_string()));
        }
        if !self.has_store() {
            self.enforcer.set_api_blocking(name, on);
            return Ok(());
        }
        self.change(
            |s| s.set_api_blocking(name, on),
            |e, _, _| {
                e.set_api_blocking(name, on);
            },
        )
        .map(|_| ())
    }
}

fn once<T>(v: Option<T>) -> OnceLock<T> {
    let l = OnceLock::new();
    if let Some(v) = v {
        let _ = l.set(v);
    }
    l
}

fn not_configured() -> EngineError {
    EngineError::Abs("abs.conf names no abs_endpoint: ABS is not configured".to_string())
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}
