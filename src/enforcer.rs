//! The enforcer: configuration, APIs, lists, switches and counters, and the
//! request check.
//!
//! Readers (`check`) take no lock: the lists sit behind `ArcSwap` and are
//! lock-free maps, switches and counters are atomics. Writers — list edits,
//! switch changes, bulk replacement — serialise on one mutex that readers
//! never touch. A bulk replacement builds a new map aside and swaps it in, so
//! a request sees either the whole old list or the whole new one.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;

use crate::clock::now_ms;
use crate::load::{LoadError, load};
use crate::policy::Lists;
use crate::policy::decide::{Decision, Detection, Reason, Request, decide};
use crate::policy::extract::{Headers, Scratch};
use crate::policy::ident::{IdKind, Identifier, IpNet, Key, KeyRef};
use crate::policy::lists::{ALLOW, IdMap, Meta, Source};
use crate::policy::snapshot::Snapshot;
use crate::policy::switches::{Switch, Switches};
use crate::policy::{ApiSet, Config, DuplicateIds};

/// Request counters. Every request lands in exactly one of `allowed` and
/// `blocked` (by its reason), so the number checked is their sum: one atomic
/// add per request, not two.
#[derive(Default, Debug)]
struct Counters {
    allowed: [AtomicU64; Reason::COUNT],
    blocked: [AtomicU64; Reason::COUNT],
    would_block: [AtomicU64; Reason::COUNT],
    detections: AtomicU64,
}

/// A copy of the enforcer's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests checked.
    pub checked: u64,
    /// Requests allowed (monitor-mode "would block" included).
    pub allowed: u64,
    /// Requests allowed, by [`Reason`] (a monitor-mode "would block" by the
    /// reason it would have been stopped for).
    pub allowed_by_reason: [u64; Reason::COUNT],
    /// Requests stopped (block, decoy or error response, redirect), by [`Reason`].
    pub blocked: [u64; Reason::COUNT],
    /// Monitor mode: requests that would have been stopped, by [`Reason`].
    pub would_block: [u64; Reason::COUNT],
    /// Real-time detections recorded on the deny list.
    pub detections: u64,
    /// Deny-list entries.
    pub deny_entries: u64,
    /// Allow-list entries.
    pub allow_entries: u64,
}

impl Stats {
    /// Stopped requests of every reason.
    pub fn blocked_total(&self) -> u64 {
        self.blocked.iter().sum()
    }
}

/// Called with each real-time detection (identifier, source) after the enforcer
/// has listed it; the store uses it to make detections durable and shared.
pub type DetectionSink = Box<dyn Fn(&[Identifier], Source) + Send + Sync>;

/// The live state requests are checked against. Shared by reference between threads.
pub struct Enforcer {
    config: Config,
    apis: ApiSet,
    /// Both lists: the host's snapshot under this process's overlay (see
    /// `policy::overlay`); one probe per identifier.
    lists: ArcSwap<Lists>,
    switches: [AtomicBool; Switch::ALL.len()],
    counters: Counters,
    writer: Mutex<()>,
    sink: OnceLock<DetectionSink>,
    /// Set when the state could not be loaded: `fail_mode` decides every request.
    failed: AtomicBool,
}

impl std::fmt::Debug for Enforcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enforcer")
            .field("config", &self.config.path)
            .field("apis", &self.apis.apis().len())
            .finish()
    }
}

impl Enforcer {
    /// Loads `ase.conf` at `path`, its `abs.conf` and its API directory.
    pub fn open(path: &Path) -> Result<Enforcer, LoadError> {
        let (config, apis) = load(path)?;
        Ok(Enforcer::new(config, apis))
    }

    /// An enforcer over an already loaded configuration, with empty lists.
    pub fn new(config: Config, apis: ApiSet) -> Enforcer {
        let switches = Switch::ALL.map(|s| AtomicBool::new(s.configured(&config)));
        Enforcer {
            config,
            apis,
            lists: ArcSwap::from_pointee(Lists::default()),
            switches,
            counters: Counters::default(),
            writer: Mutex::new(()),
            sink: OnceLock::new(),
            failed: AtomicBool::new(false),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The APIs.
    pub fn apis(&self) -> &ApiSet {
        &self.apis
    }

    /// The current switches as a decision sees them.
    pub fn switches(&self) -> Switches {
        Switches {
            firewall: self.switch(Switch::Firewall),
            abs_attack: self.switch(Switch::AbsAttack),
            ase_detected: self.switch(Switch::AseDetectedAttack),
            xff: self.config.enable_xff,
            reject_duplicates: self.config.duplicate_identifiers == DuplicateIds::Reject,
        }
    }

    /// One switch.
    pub fn switch(&self, s: Switch) -> bool {
        self.switches[s as usize].load(Relaxed)
    }

    /// Sets a switch (`changed`: the log position of the change). Turning
    /// `ase_detected_attack` off deletes every real-time entry from the deny
    /// list, as ASE does.
    pub fn set_switch_at(&self, s: Switch, on: bool, changed: u64) {
        let _w = self.lock();
        self.switches[s as usize].store(on, Relaxed);
        if s == Switch::AseDetectedAttack && !on {
            self.lists.load().remove_all(Source::REALTIME, changed);
        }
    }

    /// Sets `enable_blocking` of API `name`; false if there is no such API.
    pub fn set_api_blocking(&self, name: &str, on: bool) -> bool {
        match self.apis.get(name) {
            Some(a) => {
                a.set_blocking(on);
                true
            }
            None => false,
        }
    }

    /// Installs the detection sink (once).
    pub fn set_detection_sink(&self, sink: DetectionSink) -> bool {
        self.sink.set(sink).is_ok()
    }

    /// Marks the state as unavailable (`true`) or loaded (`false`); while
    /// unavailable every request is decided by `fail_mode`.
    pub fn set_failed(&self, failed: bool) {
        self.failed.store(failed, Relaxed);
    }

    /// Whether the state is unavailable.
    pub fn failed(&self) -> bool {
        self.failed.load(Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // A writer that panicked leaves the maps consistent (each edit is atomic),
        // so a poisoned lock is safe to take.
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides one request and counts it. Takes no lock, does no I/O and
    /// allocates nothing unless the request is a real-time attack to record.
    pub fn check<H: Headers + ?Sized>(&self, req: &Request<'_, H>) -> Decision<'_> {
        let lists = self.lists.load();
        let mut scratch = Scratch::default();
        let mut now = {
            let mut cached = 0u64;
            move || {
                if cached == 0 {
                    cached = now_ms();
                }
                cached
            }
        };
        let (d, det) = decide(
            &self.apis,
            &lists,
            self.switches(),
            self.config.unknown_api,
            req,
            &mut scratch,
            &mut now,
        );
        if let Some(det) = det {
            self.record(&lists, det);
        }
        let d = if self.failed.load(Relaxed) {
            self.without_state(d)
        } else {
            d
        };
        self.count(&d);
        d
    }

    /// The decision while the state could not be loaded: what the
    /// configuration alone decides stands (firewall off, a decoy's answer,
    /// a pattern violation, an unknown API refused, a real-time detection
    /// this process made), and `fail_mode` decides every request that would
    /// have gone on to meet the lists and pass (docs/design.md, Decision
    /// order).
    fn without_state<'e>(&self, d: Decision<'e>) -> Decision<'e> {
        if d.stops() || d.reason == Reason::FirewallOff {
            return d;
        }
        Decision {
            api: d.api,
            ..crate::policy::decide::fail_mode(self.config.fail_mode)
        }
    }

    fn count(&self, d: &Decision<'_>) {
        let c = &self.counters;
        if d.stops() {
            c.blocked[d.reason as usize].fetch_add(1, Relaxed);
        } else {
            c.allowed[d.reason as usize].fetch_add(1, Relaxed);
            if d.would_block {
                c.would_block[d.reason as usize].fetch_add(1, Relaxed);
            }
        }
    }

    /// Lists a detection's identifiers under its source (lock-free insert), then
    /// hands them to the sink. The keys are made from the request's bytes, so
    /// a token or cookie that is not UTF-8 is blocked on its next request too;
    /// the sink (the store) gets the identifiers in text, with such bytes
    /// replaced.
    fn record(&self, lists: &Lists, det: Detection<'_>) {
        let mut ids: Vec<Identifier> = Vec::with_capacity(3);
        let mut keys: Vec<Key> = Vec::with_capacity(3);
        if let Some(ip) = det.ids.ip {
            let key = Key::ip(IpNet::of(ip, 128));
            ids.push(key.identifier());
            keys.push(key);
        }
        if let Some(t) = det.ids.token {
            if let Ok(id) = Identifier::new(IdKind::Token, "", &String::from_utf8_lossy(t)) {
                ids.push(id);
                keys.push(Key::new(KeyRef::token(t)));
            }
        }
        if let Some((n, v)) = det.ids.cookie {
            if let Ok(id) = Identifier::new(
                IdKind::Cookie,
                &String::from_utf8_lossy(n),
                &String::from_utf8_lossy(v),
            ) {
                ids.push(id);
                keys.push(Key::new(KeyRef::new(IdKind::Cookie, n, v)));
            }
        }
        for key in keys {
            lists.record(key, det.source);
        }
        self.counters.detections.fetch_add(1, Relaxed);
        if let Some(sink) = self.sink.get() {
            sink(&ids, det.source);
        }
    }

    // The list edits below take `changed`: the store log position of the
    // change (see `Meta::changed`; 0 for one not from the store).

    /// Adds `id` to the deny list under `source`, with an expiry in Unix ms
    /// (0 = never). Returns true if the identifier was not listed before.
    pub fn deny_add_at(&self, id: &Identifier, source: Source, expiry: u64, changed: u64) -> bool {
        let _w = self.lock();
        self.lists.load().add(id.key(), source, expiry, changed)
    }

    /// Removes `id` from the deny sources in `mask`; returns the sources it was removed from.
    pub fn deny_remove_at(&self, id: &Identifier, mask: u8, changed: u64) -> u8 {
        let _w = self.lock();
        self.lists
            .load()
            .remove(&id.key(), mask & Source::ANY, changed)
    }

    /// Removes every entry's deny sources in `mask`; returns how many entries changed.
    pub fn deny_clear_at(&self, mask: u8, changed: u64) -> usize {
        let _w = self.lock();
        self.lists.load().remove_all(mask & Source::ANY, changed)
    }

    /// Adds `id` to the allow list (expiry in Unix ms, 0 = never).
    pub fn allow_add_at(&self, id: &Identifier, expiry: u64, changed: u64) -> bool {
        let _w = self.lock();
        self.lists.load().add_allow(id.key(), expiry, changed)
    }

    /// Removes `id` from the allow list; true if it was listed.
    pub fn allow_remove_at(&self, id: &Identifier, changed: u64) -> bool {
        let _w = self.lock();
        self.lists.load().remove(&id.key(), ALLOW, changed) != 0
    }

    /// Empties the allow list; returns how many entries it had.
    pub fn allow_clear_at(&self, changed: u64) -> usize {
        let _w = self.lock();
        self.lists.load().remove_all(ALLOW, changed)
    }

    /// Deny entries with a source in `mask` (snapshot entries first, then
    /// the rest in insertion order).
    pub fn deny_entries(&self, mask: u8) -> Vec<(Identifier, Meta)> {
        self.entries(mask & Source::ANY)
    }

    /// Allow entries (their expiry is `Meta::allow_exp`).
    pub fn allow_entries(&self) -> Vec<(Identifier, Meta)> {
        self.entries(ALLOW)
    }

    fn entries(&self, mask: u8) -> Vec<(Identifier, Meta)> {
        self.lists
            .load()
            .entries(mask)
            .into_iter()
            .map(|(k, m)| (k.identifier(), m))
            .collect()
    }

    /// Replaces every entry of `source` with `entries` (identifier, expiry in
    /// Unix ms): the new list is built aside and swapped in at once.
    pub fn replace_source_at(&self, source: Source, entries: &[(Identifier, u64)], changed: u64) {
        let _w = self.lock();
        let next = self.lists.load().with_source_replaced(
            source,
            entries.iter().map(|(id, exp)| (id.key(), *exp)),
            changed,
        );
        retire(self.lists.swap(Arc::new(next)));
    }

    /// Replaces both lists whole (a full reload from the store): `lists` holds
    /// deny entries (`IdMap::add`) and allow entries (`IdMap::add_allow`).
    pub fn replace_lists(&self, lists: IdMap) {
        let _w = self.lock();
        retire(self.lists.swap(Arc::new(Lists::new(None, lists))));
    }

    /// Moves the lists onto a newer snapshot of the host (see
    /// `Lists::rebased`), swapped in at once.
    pub fn install_snapshot(&self, snap: Arc<Snapshot>) {
        let _w = self.lock();
        let next = self.lists.load().rebased(snap);
        retire(self.lists.swap(Arc::new(next)));
    }

    /// The snapshot the lists stand on, if any.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.lists.load().snapshot().cloned()
    }

    /// Entries in the overlay above the snapshot.
    pub fn overlay_len(&self) -> usize {
        self.lists.load().overlay_len()
    }

    /// Runs `f` with the writer lock held: a batch of edits that no other
    /// writer interleaves with.
    pub fn with_lists<R>(&self, f: impl FnOnce(&Lists) -> R) -> R {
        let _w = self.lock();
        f(&self.lists.load())
    }

    // The same edits for a host without a store (tests, benches): no log
    // position, so `changed` is 0.

    /// [`Enforcer::deny_add_at`] with no log position.
    pub fn deny_add(&self, id: &Identifier, source: Source, expiry: u64) -> bool {
        self.deny_add_at(id, source, expiry, 0)
    }

    /// [`Enforcer::deny_remove_at`] with no log position.
    pub fn deny_remove(&self, id: &Identifier, mask: u8) -> u8 {
        self.deny_remove_at(id, mask, 0)
    }

    /// [`Enforcer::deny_clear_at`] with no log position.
    pub fn deny_clear(&self, mask: u8) -> usize {
        self.deny_clear_at(mask, 0)
    }

    /// [`Enforcer::allow_add_at`] with no log position.
    pub fn allow_add(&self, id: &Identifier, expiry: u64) -> bool {
        self.allow_add_at(id, expiry, 0)
    }

    /// [`Enforcer::allow_remove_at`] with no log position.
    pub fn allow_remove(&self, id: &Identifier) -> bool {
        self.allow_remove_at(id, 0)
    }

    /// [`Enforcer::allow_clear_at`] with no log position.
    pub fn allow_clear(&self) -> usize {
        self.allow_clear_at(0)
    }

    /// [`Enforcer::set_switch_at`] with no log position.
    pub fn set_switch(&self, s: Switch, on: bool) {
        self.set_switch_at(s, on, 0)
    }

    /// [`Enforcer::replace_source_at`] with no log position.
    pub fn replace_source(&self, source: Source, entries: &[(Identifier, u64)]) {
        self.replace_source_at(source, entries, 0)
    }

    /// A copy of the counters and list sizes.
    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        let mut s = Stats {
            detections: c.detections.load(Relaxed),
            deny_entries: self.lists.load().deny_len(),
            allow_entries: self.lists.load().allow_len(),
            ..Stats::default()
        };
        for i in 0..Reason::COUNT {
            s.blocked[i] = c.blocked[i].load(Relaxed);
            s.would_block[i] = c.would_block[i].load(Relaxed);
            s.allowed_by_reason[i] = c.allowed[i].load(Relaxed);
        }
        s.allowed = s.allowed_by_reason.iter().sum();
        s.checked = s.allowed + s.blocked_total();
        s
    }
}

/// Frees a replaced list on the writer's thread. A request that still holds
/// it would otherwise be the last owner and free a million entries inside
/// `check` (a stall of about a second, measured by benches/abs_apply.rs).
/// Readers hold a list for well under a microsecond, so this waits briefly;
/// after a bound it gives up and lets the last reader free it.
fn retire(mut old: Arc<Lists>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        match Arc::try_unwrap(old) {
            Ok(map) => return drop(map),
            Err(still_shared) if std::time::Instant::now() < deadline => {
                old = still_shared;
                std::thread::yield_now();
            }
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Action, Api};

    #[test]
    fn a_recorded_token_or_cookie_that_is_not_utf8_blocks_its_next_request() {
        let conf = crate::policy::config::parse_ase_conf(
            "enable_ase_detected_attack=true\n",
            Path::new("/etc/ase/ase.conf"),
        )
        .unwrap();
        let j = r#"{"api_metadata":{"url":"/shop","hostname":"*","cookie":"SID",
            "oauth2_access_token":true,
            "api_pattern_enforcement":{"methods_allowed":["GET"]}}}"#;
        let api = Api::parse("shop", j.as_bytes()).unwrap();
        let e = Enforcer::new(conf, ApiSet::new(vec![api]).unwrap());
        let req =
            |method: &'static [u8], ip: &str, h: &'static [(&'static [u8], &'static [u8])]| {
                let hs: Vec<(&[u8], &[u8])> = h.to_vec();
                let r = Request {
                    client_ip: crate::policy::extract::parse_ip(ip.as_bytes(), false),
                    method,
                    scheme: b"https",
                    host: b"shop.example.com",
                    uri: b"/shop/x",
                    headers: &hs[..],
                    username: b"",
                    unknown_api: None,
                };
                e.check(&r).action
            };
        const TOKEN: &[(&[u8], &[u8])] = &[(b"Authorization", b"Bearer t\xff\xfe1")];
        const COOKIE: &[(&[u8], &[u8])] = &[(b"Cookie", b"SID=s\xc3\x28")];
        // A method violation records the token (and the cookie) of the request.
        assert_eq!(req(b"DELETE", "10.0.0.1", TOKEN), Action::Respond);
        assert_eq!(req(b"DELETE", "10.0.0.2", COOKIE), Action::Respond);
        // From other addresses, the same raw bytes are now blocked.
        assert_eq!(req(b"GET", "10.0.0.3", TOKEN), Action::Block);
        assert_eq!(req(b"GET", "10.0.0.4", COOKIE), Action::Block);
        assert_eq!(req(b"GET", "10.0.0.5", &[]), Action::Allow);
    }
}
