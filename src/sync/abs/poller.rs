//! The attack-list poller: a thread that, while `enable_abs_attack` is on and
//! this process holds the host's poll lock, fetches the ABS attack list every
//! `abs_attack_interval` and hands it to an [`AbsSink`] that replaces the
//! `abs` deny source in one step.
//!
//! A failed sync (ABS down, slow, 500, malformed or oversized body, untrusted
//! certificate) changes nothing — the last good list stays in force — and is
//! retried with exponential backoff and jitter, capped at the interval. The
//! loop body runs under `catch_unwind`: a panic is counted in status and the
//! loop goes on after a backoff. [`Poller::sync_now`] wakes the loop for one
//! sync whatever the switch and the election say (an operator asked for it).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::attacklist::{ParseOptions, parse};
use super::client::{AbsClient, ClientOptions};
use super::election::Election;
use crate::clock::now_ms;
use crate::enforcer::Enforcer;
use crate::policy::Switch;
use crate::policy::ident::Identifier;
use crate::policy::lists::Source;

/// Where a fetched attack list goes. The store implements it to replace the
/// `abs` source in one transaction (every process then switches at once);
/// [`Enforcer`] implements it directly for a process without a store.
pub trait AbsSink: Send + Sync {
    /// Replaces the whole `abs` source with `entries` (identifier, expiry in Unix
    /// ms, 0 = never). On error nothing may have changed.
    fn replace_abs(&self, entries: Vec<(Identifier, u64)>) -> Result<(), String>;

    /// Called after each sync attempt with this poller's status, so that other
    /// processes (which do not poll) can show it. Best effort; the default
    /// does nothing.
    fn publish_status(&self, _status: &AbsStatus) {}

    /// The status another process published, if any. A poller that does not
    /// poll (another process leads, or the switch is off) reads it about once
    /// per `idle_check` and shows it when it is newer than its own attempt.
    fn shared_status(&self) -> Option<AbsStatus> {
        None
    }
}

impl AbsSink for Enforcer {
    fn replace_abs(&self, entries: Vec<(Identifier, u64)>) -> Result<(), String> {
        self.replace_source(Source::Abs, &entries);
        Ok(())
    }
}

/// Timing of the poller.
#[derive(Clone, Debug)]
pub struct PollerOptions {
    /// Time between successful syncs (`abs_attack_request_minutes` / `_interval`).
    pub interval: Duration,
    /// First retry delay after a failure; doubles per failure.
    pub backoff_min: Duration,
    /// Longest retry delay (never more than `interval`).
    pub backoff_max: Duration,
    /// How often an idle poller (switch off, or another process leads)
    /// looks again at the switch and the lock.
    pub idle_check: Duration,
    /// The HTTP client's timeouts and limits.
    pub client: ClientOptions,
    /// The election lock file; `None` polls without electing (tests, one-process hosts).
    pub lock_path: Option<PathBuf>,
}

impl PollerOptions {
    /// The options a configuration implies: its interval, and the lock file in `state_dir`.
    pub fn from_config(c: &crate::policy::Config) -> PollerOptions {
        PollerOptions {
            interval: c.abs_attack_interval,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            idle_check: Duration::from_secs(1),
            client: ClientOptions::default(),
            lock_path: Some(c.state_dir.join(super::election::LOCK_FILE)),
        }
    }
}

/// What the poller has done, for `ase-cli status` and the C API.
///
/// `enabled`, `leader`, `panics` and `election_error` are this process's.
/// The sync fields (attempt, success, error, endpoint, entries, counters)
/// are those of the host's latest attempt: this process's own, or, when
/// another process made a later one, the one it published (see
/// [`AbsSink::shared_status`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct AbsStatus {
    /// `enable_abs_attack` as last seen.
    pub enabled: bool,
    /// This process holds the poll lock.
    pub leader: bool,
    /// Start of the last attempt (Unix ms, 0 = none yet).
    pub last_attempt_ms: u64,
    /// End of the last successful sync (Unix ms, 0 = none yet).
    pub last_success_ms: u64,
    /// The last failure, cleared by a success. Never holds a key or a token.
    pub last_error: Option<String>,
    /// The endpoint that served the last good list.
    pub last_endpoint: Option<String>,
    /// Entries in the last good list.
    pub entries: u64,
    /// Items of the last good list that were unreadable and skipped.
    pub bad_items: u64,
    /// Items of the last good list that had already expired.
    pub expired_items: u64,
    /// Entries of the last good list dropped because they did not fit in
    /// `attack_list_memory`.
    pub dropped_items: u64,
    /// Bytes of the entries in force in the lists snapshot (see
    /// [`crate::policy::snapshot::entry_cost`]): what `attack_list_memory`
    /// bounds.
    pub memory_bytes: u64,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Successful syncs since start.
    pub syncs: u64,
    /// Failed syncs since start.
    pub failures: u64,
    /// Times the loop panicked and was restarted.
    pub panics: u64,
    /// Why the election could not run (the poller then polls anyway).
    pub election_error: Option<String>,
}

impl AbsStatus {
    /// Age of the list in force at `now_ms`; `None` before the first success.
    pub fn age(&self, now_ms: u64) -> Option<Duration> {
        (self.last_success_ms != 0)
            .then(|| Duration::from_millis(now_ms.saturating_sub(self.last_success_ms)))
    }

    /// Records one attempt that started at `started_ms` (Unix ms): a success
    /// resets the failure streak, a failure extends it.
    pub fn record_attempt(&mut self, started_ms: u64, result: &Result<SyncReport, String>) {
        self.last_attempt_ms = started_ms;
        match result {
            Ok(r) => {
                self.last_success_ms = now_ms();
                self.last_error = None;
                self.last_endpoint = Some(r.endpoint.clone());
                self.entries = r.entries;
                self.bad_items = r.bad_items;
                self.expired_items = r.expired_items;
                self.dropped_items = r.dropped_items;
                self.memory_bytes = r.memory_bytes;
                self.consecutive_failures = 0;
                self.syncs += 1;
            }
            Err(e) => {
                self.last_error = Some(e.clone());
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.failures += 1;
            }
        }
    }

    /// Takes the sync fields of `other` when its attempt is later than ours;
    /// this process's own fields (`enabled`, `leader`, `panics`,
    /// `election_error`) stay. Returns whether it took them.
    pub fn merge_newer(&mut self, other: &AbsStatus) -> bool {
        if other.last_attempt_ms <= self.last_attempt_ms {
            return false;
        }
        *self = AbsStatus {
            enabled: self.enabled,
            leader: self.leader,
            panics: self.panics,
            election_error: self.election_error.take(),
            ..other.clone()
        };
        true
    }
}

/// What one successful sync did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncReport {
    /// The endpoint that answered.
    pub endpoint: String,
    /// Entries handed to the sink.
    pub entries: u64,
    /// Items skipped as unreadable.
    pub bad_items: u64,
    /// Items skipped as expired.
    pub expired_items: u64,
    /// Entries dropped because they did not fit in `attack_list_memory`.
    pub dropped_items: u64,
    /// Estimated memory of the entries handed to the sink, in bytes.
    pub memory_bytes: u64,
}

/// The names an unnamed ABS API key is listed under: every `apikey_header` and
/// `apikey_qs` of the loaded APIs (once each, case-insensitively, as the enforcer
/// compares them).
pub fn api_key_names(enforcer: &Enforcer) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for a in enforcer.apis().apis() {
        for n in [&a.apikey_header, &a.apikey_qs].into_iter().flatten() {
            if !names.iter().any(|x| x.eq_ignore_ascii_case(n)) {
                names.push(n.clone());
            }
        }
    }
    names
}

/// Fetches, parses and applies the attack list once, on the calling thread.
/// A body that does not parse fails over to the next endpoint.
///
/// The entries that fit in `memory_budget` bytes (`attack_list_memory`) are
/// applied, in list order, and the rest dropped ([`AttackList::limit_memory`]):
/// ABS decides how long its list is, and this bounds what it can make every
/// process on the host hold. The budget is the ABS list's alone: manual and
/// real-time entries are not counted, so a flood of detections cannot push
/// ABS entries out and a large ABS list cannot refuse an operator's entry.
/// Dropped entries are counted in the report and in a warning on stderr
/// (nginx's error log for its workers), with the budget and the counts only.
///
/// [`AttackList::limit_memory`]: super::AttackList::limit_memory
pub fn sync_once(
    client: &AbsClient,
    sink: &dyn AbsSink,
    api_key_names: &[String],
    memory_budget: u64,
) -> Result<SyncReport, String> {
    let now = now_ms();
    let (endpoint, mut list) = client
        .fetch_attacklist_with(now, |body| {
            parse(
                &body,
                ParseOptions {
                    now_ms: now,
                    api_key_names,
                },
            )
            .map_err(|e| e.to_string())
        })
        .map_err(|e| e.to_string())?;
    let fit = list.limit_memory(memory_budget);
    if fit.dropped > 0 {
        let mb = |b: u64| b as f64 / (1u64 << 20) as f64;
        eprintln!(
            "ase: warning: the ABS attack list does not fit in attack_list_memory \
             ({:.2} MB): {} entries kept (about {:.2} MB), {} dropped; raise \
             attack_list_memory to apply them all",
            mb(memory_budget),
            list.entries.len(),
            mb(fit.bytes),
            fit.dropped
        );
    }
    let report = SyncReport {
        endpoint,
        entries: list.entries.len() as u64,
        bad_items: list.bad_items,
        expired_items: list.expired_items,
        dropped_items: fit.dropped,
        memory_bytes: fit.bytes,
    };
    sink.replace_abs(list.entries)
        .map_err(|e| format!("applying the attack list: {e}"))?;
    Ok(report)
}

#[derive(Default)]
struct Ctl {
    stop: bool,
    /// Sync requests made / served (generation counters).
    requested: u64,
    served: u64,
}

struct Inner {
    enforcer: Arc<Enforcer>,
    sink: Arc<dyn AbsSink>,
    client: AbsClient,
    opts: PollerOptions,
    api_key_names: Vec<String>,
    status: Mutex<AbsStatus>,
    ctl: Mutex<Ctl>,
    cv: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data are plain counters and strings: valid after any panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running poller. Dropping it asks the thread to stop without waiting.
pub struct Poller {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller")
            .field("status", &self.status())
            .finish()
    }
}

/// State the loop keeps across iterations (and across a panic).
struct LoopState {
    election: Option<Election>,
    next_due: Instant,
    failures: u32,
    rng: u64,
}

impl LoopState {
    /// Exponential backoff with jitter: uniformly in [d/2, d], d = min·2^(n-1) capped.
    fn backoff(&mut self, opts: &PollerOptions, failures: u32) -> Duration {
        let cap = opts.backoff_max.min(opts.interval).max(opts.backoff_min);
        let d = opts
            .backoff_min
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
            .min(cap);
        // xorshift64: jitter needs spread, not cryptographic quality.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let half = d / 2;
        half + half.mul_f64((self.rng >> 11) as f64 / (1u64 << 53) as f64)
    }
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ms());
    h.write_u32(std::process::id());
    h.finish() | 1
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

impl Inner {
    fn record(&self, started: u64, result: &Result<SyncReport, String>) {
        // The streak counts on from the status shown (the host's, possibly
        // taken from an earlier leader), not only this loop's own failures.
        let published = {
            let mut s = lock(&self.status);
            s.record_attempt(started, result);
            s.clone()
        };
        // Outside the lock: a store write must not hold up status readers.
        self.sink.publish_status(&published);
    }

    /// Shows the host's latest attempt when another process made it.
    fn refresh_shared(&self) {
        if let Some(other) = self.sink.shared_status() {
            lock(&self.status).merge_newer(&other);
        }
    }

    fn sync(&self, st: &mut LoopState) {
        let started = now_ms();
        let r = sync_once(
            &self.client,
            &*self.sink,
            &self.api_key_names,
            self.enforcer.config().attack_list_memory,
        );
        match &r {
            Ok(_) => {
                st.failures = 0;
                st.next_due = Instant::now() + self.opts.interval;
            }
            Err(_) => {
                st.failures = st.failures.saturating_add(1);
                st.next_due = Instant::now() + st.backoff(&self.opts, st.failures);
            }
        }
        self.record(started, &r);
    }

    /// Waits until `deadline`, a sync request or stop. Returns (stop, forced).
    fn wait(&self, deadline: Instant) -> (bool, bool) {
        let mut c = lock(&self.ctl);
        loop {
            if c.stop {
                return (true, false);
            }
            if c.requested > c.served {
                return (false, true);
            }
            let now = Instant::now();
            if now >= deadline {
                return (false, false);
            }
            c = self
                .cv
                .wait_timeout(c, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The loop; returns when asked to stop. Panics propagate to [`Inner::run`].
    fn run_loop(&self, st: &mut LoopState) {
        loop {
            let enabled = self.enforcer.switch(Switch::AbsAttack);
            let leader = match (&mut st.election, enabled) {
                (None, _) => true,
                (Some(e), false) => {
                    // Let a process whose switch is on take over.
                    e.resign();
                    false
                }
                (Some(e), true) => match e.try_lead() {
                    Ok(l) => {
                        lock(&self.status).election_error = None;
                        l
                    }
                    Err(err) => {
                        // Polling twice is harmless; not polling at all is not.
                        lock(&self.status).election_error = Some(err);
                        true
                    }
                },
            };
            {
                let mut s = lock(&self.status);
                s.enabled = enabled;
                s.leader = leader && st.election.is_some() && enabled;
            }
            let polling = enabled && leader;
            if !polling {
                self.refresh_shared();
            }
            let idle = Instant::now() + self.opts.idle_check;
            let deadline = if polling { st.next_due.min(idle) } else { idle };
            let (stop, forced) = self.wait(deadline);
            if stop {
                return;
            }
            if forced {
                let target = lock(&self.ctl).requested;
                self.sync(st);
                lock(&self.ctl).served = target;
                self.cv.notify_all();
            } else if polling && Instant::now() >= st.next_due {
                self.sync(st);
            }
        }
    }

    fn run(self: Arc<Self>) {
        let mut st = LoopState {
            election: self.opts.lock_path.clone().map(Election::new),
            next_due: Instant::now(),
            failures: 0,
            rng: seed(),
        };
        loop {
            match catch_unwind(AssertUnwindSafe(|| self.run_loop(&mut st))) {
                Ok(()) => break,
                Err(p) => {
                    let msg = format!("ABS poller panicked: {}", panic_text(&*p));
                    st.failures = st.failures.saturating_add(1);
                    {
                        let mut s = lock(&self.status);
                        s.panics += 1;
                        s.failures += 1;
                        s.consecutive_failures = st.failures;
                        s.last_error = Some(msg);
                    }
                    // A waiter of sync_now must not hang on a panicked sync.
                    {
                        let mut c = lock(&self.ctl);
                        c.served = c.requested;
                    }
                    self.cv.notify_all();
                    let delay = st.backoff(&self.opts, st.failures);
                    st.next_due = Instant::now() + delay;
                    if self.wait(Instant::now() + delay).0 {
                        break;
                    }
                }
            }
        }
        if let Some(e) = &mut st.election {
            e.resign();
        }
    }
}

impl Poller {
    /// Starts the poller thread for `enforcer` (whose `enable_abs_attack` switch
    /// gates polling and whose APIs name unnamed API keys), applying lists to `sink`.
    /// Fails only when the client cannot be built (an unreadable `abs_ca_cert_path`).
    pub fn start(
        enforcer: Arc<Enforcer>,
        sink: Arc<dyn AbsSink>,
        opts: PollerOptions,
    ) -> Result<Poller, String> {
        let client = AbsClient::new(&enforcer.config().abs, opts.client.clone())?;
        let inner = Arc::new(Inner {
            api_key_names: api_key_names(&enforcer),
            enforcer,
            sink,
            client,
            opts,
            status: Mutex::new(AbsStatus::default()),
            ctl: Mutex::new(Ctl::default()),
            cv: Condvar::new(),
        });
        let run = inner.clone();
        let thread = crate::sync::spawn_background("ase-abs-poll", move || run.run())
            .map_err(|e| format!("starting the ABS poller thread: {e}"))?;
        Ok(Poller {
            inner,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// A copy of the status.
    pub fn status(&self) -> AbsStatus {
        lock(&self.inner.status).clone()
    }

    /// Asks for one sync now (whatever the switch and the election say). With
    /// `wait`, waits up to that long for it and returns the status after it;
    /// `Err` if it did not finish in time or the poller has stopped.
    pub fn sync_now(&self, wait: Option<Duration>) -> Result<AbsStatus, String> {
        let target = {
            let mut c = lock(&self.inner.ctl);
            if c.stop {
                return Err("the ABS poller is stopped".into());
            }
            c.requested += 1;
            c.requested
        };
        self.inner.cv.notify_all();
        let Some(wait) = wait else {
            return Ok(self.status());
        };
        let deadline = Instant::now() + wait;
        let mut c = lock(&self.inner.ctl);
        while c.served < target {
            let now = Instant::now();
            if now >= deadline || c.stop {
                return Err(format!("ABS sync did not finish within {wait:?}"));
            }
            c = self
                .inner
                .cv
                .wait_timeout(c, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        drop(c);
        Ok(self.status())
    }

    /// Stops the thread, waiting up to `wait` for it (an HTTP request in
    /// flight ends within the client's timeout). True if it has ended.
    pub fn stop(&self, wait: Duration) -> bool {
        lock(&self.inner.ctl).stop = true;
        self.inner.cv.notify_all();
        crate::sync::join_within(&self.thread, wait)
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        lock(&self.inner.ctl).stop = true;
        self.inner.cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_jitters_and_is_capped() {
        let opts = PollerOptions {
            interval: Duration::from_secs(60),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            idle_check: Duration::from_secs(1),
            client: ClientOptions::default(),
            lock_path: None,
        };
        let mut st = LoopState {
            election: None,
            next_due: Instant::now(),
            failures: 0,
            rng: 12345,
        };
        let d1 = st.backoff(&opts, 1);
        assert!(d1 >= Duration::from_millis(500) && d1 <= Duration::from_secs(1));
        let d4 = st.backoff(&opts, 4);
        assert!(d4 >= Duration::from_secs(4) && d4 <= Duration::from_secs(8));
        let seen: std::collections::HashSet<Duration> =
            (0..20).map(|_| st.backoff(&opts, 30)).collect();
        assert!(
            seen.iter().all(|d| *d <= Duration::from_secs(60)),
            "capped at the interval"
        );
        assert!(seen.len() > 1, "jittered");
    }
}
