//! Which engines run on this host, and how far each has applied the store's
//! change log, so that a command that changes lists or switches can return
//! once the change is in force everywhere (docs/design.md, "Threads and
//! processes").
//!
//! - **Registration.** Every engine that enforces ([`Engine::open`], not
//!   `ase-cli`'s passive one) keeps one file in `state_dir/engines/`, named
//!   `<pid>-<random>`, holding a fixed-size [`RECORD_LEN`]-byte record: its
//!   pid, the log position it has applied and when it last wrote. The record
//!   is rewritten in place with one positioned write, without fsync: it
//!   describes a live process, not durable state.
//! - **Liveness by lock.** The engine holds an exclusive `flock` on its file
//!   for as long as it runs. The kernel drops the lock when the process ends,
//!   however it ends, so a reader that can take the lock knows the owner is
//!   gone and removes the file. A pid could be reused; a lock cannot outlive
//!   its holder. (A child forked without exec inherits the lock; the engine's
//!   position then stops advancing and waits report it as lagging.)
//! - **Waiting.** [`wait_applied`] reads every live engine's record every
//!   [`SCAN_EVERY`] until each has applied the change's log position or the
//!   timeout passes, and says how many lag ([`WaitOutcome`]).
//! - **Waking.** A writer raises the notice file `engines/.seq` to the
//!   position of its change ([`notify`]); each watcher reads it every
//!   [`CHECK_EVERY`] (one 16-byte `pread` on a descriptor it keeps open) and
//!   polls the store at once when it is ahead, instead of at the end of
//!   `sync_poll_interval`. The notice is a hint: a missed one costs only the
//!   usual poll interval.
//!
//! - **Health.** The record also says whether the engine can read the store
//!   ([`STORE_FAILING`], [`FAIL_MODE`]) and which API set it loaded (a count
//!   and a digest of the API files), so that `ase-cli` can refuse to report
//!   a change as made when the engines cannot read it, and say which API
//!   files the running engines have not loaded.
//!
//! Readers tolerate a torn or short record (a write racing a read): every
//! record carries a checksum and is read again until it checks. Version 1
//! records (without health) are still read, their health unknown.
//!
//! [`Engine::open`]: crate::engine::Engine::open

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt as Positional;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fs4::fs_std::FileExt as Lock;

use crate::clock::now_ms;
use crate::store::files;

/// The directory of the registration files, inside `state_dir`.
pub const DIR: &str = "engines";

/// The notice file writers raise after a change (inside [`DIR`]).
pub const NOTICE_FILE: &str = ".seq";

/// How long `ase-cli` and the C API's list and switch functions wait for
/// the host's engines to apply a change.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(1);

/// How often a watcher looks at the notice file between polls.
pub const CHECK_EVERY: Duration = Duration::from_millis(20);

/// How often a waiting command reads the registration files.
pub const SCAN_EVERY: Duration = Duration::from_millis(3);

/// Size of a registration record.
pub const RECORD_LEN: usize = 64;

/// How often an engine rewrites its record when its position did not move
/// (the heartbeat; also when it notices its file was removed).
const HEARTBEAT: Duration = Duration::from_secs(1);

/// How often a watcher reopens the notice file, in case it was replaced.
const REOPEN_NOTICE: Duration = Duration::from_secs(10);

/// A registration file being created (before its record is written and it
/// is locked) has this prefix; readers skip it.
const NEW_PREFIX: &str = ".new-";

/// An unlocked `.new-` file older than this was left by a process that died
/// while registering.
const NEW_STALE: Duration = Duration::from_secs(60);

const MAGIC: &[u8; 4] = b"ASEP";
/// Version 2 adds the health flags (bytes 12..16) and the API set (count at
/// 48..52, digest at 40..48); version 1 left those bytes zero.
const VERSION: u32 = 2;

/// Record flag: the engine cannot open or read the store now.
pub const STORE_FAILING: u32 = 1;
/// Record flag: the engine never loaded its state; `fail_mode` decides
/// every request the configuration alone lets through.
pub const FAIL_MODE: u32 = 2;
const NOTICE_LEN: usize = 16;
const NOTICE_KEY: u64 = 0x5EED_A5E0_0000_0001;

/// FNV-1a: enough to tell a torn record from a whole one.
fn checksum(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One engine's record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// The engine's process.
    pub pid: u32,
    /// Log position it has applied.
    pub applied_seq: u64,
    /// When it last wrote the record (Unix ms).
    pub heartbeat_ms: u64,
    /// When it registered (Unix ms).
    pub started_ms: u64,
    /// [`STORE_FAILING`], [`FAIL_MODE`].
    pub flags: u32,
    /// The API set it loaded: how many APIs and the digest of their files
    /// ([`ApiSet::source_digest`](crate::policy::ApiSet::source_digest));
    /// `None` from a version 1 record.
    pub apis: Option<(u32, u64)>,
}

impl Record {
    /// Whether the record says how the engine is (a version 2 record; a
    /// version 1 record has neither health flags nor an API set, so its
    /// zero flags mean nothing).
    pub fn health_known(&self) -> bool {
        self.apis.is_some()
    }

    fn encode(&self) -> [u8; RECORD_LEN] {
        let mut b = [0u8; RECORD_LEN];
        b[0..4].copy_from_slice(MAGIC);
        b[4..8].copy_from_slice(&VERSION.to_le_bytes());
        b[8..12].copy_from_slice(&self.pid.to_le_bytes());
        b[16..24].copy_from_slice(&self.applied_seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.heartbeat_ms.to_le_bytes());
        b[32..40].copy_from_slice(&self.started_ms.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        let (count, digest) = self.apis.unwrap_or_default();
        b[40..48].copy_from_slice(&digest.to_le_bytes());
        b[48..52].copy_from_slice(&count.to_le_bytes());
        let sum = checksum(&b[..RECORD_LEN - 8]);
        b[RECORD_LEN - 8..].copy_from_slice(&sum.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Record> {
        if b.len() != RECORD_LEN || &b[0..4] != MAGIC {
            return None;
        }
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        if u64_at(RECORD_LEN - 8) != checksum(&b[..RECORD_LEN - 8]) {
            return None;
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or_default());
        let version = u32_at(4);
        if version != 1 && version != VERSION {
            return None;
        }
        Some(Record {
            pid: u32_at(8),
            applied_seq: u64_at(16),
            heartbeat_ms: u64_at(24),
            started_ms: u64_at(32),
            flags: u32_at(12),
            apis: (version >= 2).then(|| (u32_at(48), u64_at(40))),
        })
    }

    /// Reads a record, again while it does not check (a write in flight).
    fn read(f: &File) -> Option<Record> {
        let mut b = [0u8; RECORD_LEN];
        for _ in 0..4 {
            if let Ok(RECORD_LEN) = f.read_at(&mut b, 0) {
                if let Some(r) = Record::decode(&b) {
                    return Some(r);
                }
            }
            std::thread::yield_now();
        }
        None
    }
}

/// This engine's file in `engines/`, locked for its life; removed on drop.
#[derive(Debug)]
pub struct Registration {
    file: File,
    path: PathBuf,
    record: Record,
    written: Instant,
}

fn random_suffix() -> String {
    let mut b = [0u8; 6];
    // Without a random source the time keeps names apart well enough: the
    // pid comes first, so only one process's own engines could collide.
    if getrandom::fill(&mut b).is_err() {
        b.copy_from_slice(&now_ms().to_le_bytes()[..6]);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Creates `state_dir/engines` (0700, handed to the owner of `state_dir` when
/// root creates it, like the store's files) unless it exists.
fn engines_dir(state_dir: &Path) -> io::Result<PathBuf> {
    let dir = state_dir.join(DIR);
    let existed = dir.is_dir();
    files::create_state_dir(&dir)?;
    if !existed {
        files::adopt_dir_owner(&dir)?;
    }
    Ok(dir)
}

impl Registration {
    /// Registers an engine of this process that has applied `applied_seq`.
    ///
    /// The file is written and locked under a temporary name and then renamed
    /// into place, so a reader never sees a registration without its lock.
    /// Also creates the notice file, which watchers read.
    pub fn register(state_dir: &Path, applied_seq: u64) -> io::Result<Registration> {
        Registration::register_with(state_dir, applied_seq, 0, None)
    }

    /// [`Registration::register`] with the engine's health flags and API set.
    pub fn register_with(
        state_dir: &Path,
        applied_seq: u64,
        flags: u32,
        apis: Option<(u32, u64)>,
    ) -> io::Result<Registration> {
        let dir = engines_dir(state_dir)?;
        // The notice file exists once any engine ran, so writers never create it.
        drop(files::open_private(&dir.join(NOTICE_FILE))?);
        let name = format!("{}-{}", std::process::id(), random_suffix());
        let tmp = dir.join(format!("{NEW_PREFIX}{name}"));
        let file = files::create_new_private(&tmp)?;
        let ready = (|| {
            if !Lock::try_lock_exclusive(&file)? {
                return Err(io::Error::other("a new registration file is locked"));
            }
            let now = now_ms();
            let record = Record {
                pid: std::process::id(),
                applied_seq,
                heartbeat_ms: now,
                started_ms: now,
                flags,
                apis,
            };
            file.write_all_at(&record.encode(), 0)?;
            let path = dir.join(&name);
            fs::rename(&tmp, &path)?;
            Ok((record, path))
        })();
        match ready {
            Ok((record, path)) => Ok(Registration {
                file,
                path,
                record,
                written: Instant::now(),
            }),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// The registration file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file name (how readers tell this engine from the others).
    pub fn name(&self) -> &str {
        self.path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
    }

    /// The position last published.
    pub fn applied_seq(&self) -> u64 {
        self.record.applied_seq
    }

    /// Publishes `applied_seq`: rewrites the record when the position moved,
    /// or as a heartbeat at most every second otherwise. A failed write is
    /// left for the next one (waiters then see this engine lag, which is
    /// the truth as far as they can know).
    pub fn publish(&mut self, applied_seq: u64) {
        if applied_seq == self.record.applied_seq && self.written.elapsed() < HEARTBEAT {
            return;
        }
        self.record.applied_seq = applied_seq;
        self.record.heartbeat_ms = now_ms();
        if let Ok(RECORD_LEN) = self.file.write_at(&self.record.encode(), 0) {
            self.written = Instant::now();
        }
    }

    /// Publishes the health flags: rewrites the record at once when they
    /// changed.
    pub fn publish_flags(&mut self, flags: u32) {
        if flags == self.record.flags {
            return;
        }
        self.record.flags = flags;
        self.record.heartbeat_ms = now_ms();
        if let Ok(RECORD_LEN) = self.file.write_at(&self.record.encode(), 0) {
            self.written = Instant::now();
        }
    }

    /// Whether the file is still in place (an operator may have removed the
    /// directory).
    fn in_place(&self) -> bool {
        !matches!(fs::metadata(&self.path), Err(e) if e.kind() == io::ErrorKind::NotFound)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Removed while still locked: a reader never finds it unlocked and
        // in place. Closing the file then drops the lock.
        let _ = fs::remove_file(&self.path);
    }
}

/// A live engine as a reader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its file name in `engines/`.
    pub name: String,
    /// Its record; `None` when it could not be read whole (it counts as
    /// lagging).
    pub record: Option<Record>,
}

impl Peer {
    /// Whether it has applied `seq`.
    pub fn has_applied(&self, seq: u64) -> bool {
        seq == 0 || self.record.is_some_and(|r| r.applied_seq >= seq)
    }
}

/// The live engines of `state_dir`, removing the files of engines that are
/// gone (their lock is free). No directory: none.
pub fn live_engines(state_dir: &Path) -> io::Result<Vec<Peer>> {
    let dir = state_dir.join(DIR);
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut v = Vec::new();
    for ent in rd {
        let ent = ent?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(NEW_PREFIX) {
            remove_if_abandoned(&ent.path());
            continue;
        }
        if name.starts_with('.') {
            continue;
        }
        let path = ent.path();
        let f = match File::open(&path) {
            Ok(f) => f,
            // Deregistered or removed by another reader meanwhile.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        match Lock::try_lock_exclusive(&f) {
            Ok(true) => {
                // Its owner is gone. Another reader may remove it first.
                let _ = fs::remove_file(&path);
                continue;
            }
            Ok(false) => {}
            // A file system without flock: believe the file.
            Err(_) => {}
        }
        v.push(Peer {
            name: name.to_string(),
            record: Record::read(&f),
        });
    }
    Ok(v)
}

/// Removes a `.new-` file whose creator died before renaming it.
fn remove_if_abandoned(path: &Path) {
    let old = fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > NEW_STALE);
    if !old {
        return;
    }
    if let Ok(f) = File::open(path) {
        if let Ok(true) = Lock::try_lock_exclusive(&f) {
            let _ = fs::remove_file(path);
        }
    }
}

/// What waiting for a change found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WaitOutcome {
    /// Live engines on the host (the waiting engine included).
    pub engines: usize,
    /// Those that had not applied the change when the wait ended.
    pub lagging: usize,
}

impl WaitOutcome {
    /// The warning `ase-cli` prints when engines lag after waiting `waited`,
    /// `None` when none lags.
    pub fn warning(&self, waited: Duration) -> Option<String> {
        if self.lagging == 0 {
            return None;
        }
        let verb = if self.lagging == 1 { "has" } else { "have" };
        let noun = if self.engines == 1 {
            "running engine"
        } else {
            "running engines"
        };
        Some(format!(
            "warning: {} of {} {noun} {verb} not applied this change within {}; \
             they will when they next read the store",
            self.lagging,
            self.engines,
            seconds(waited)
        ))
    }
}

/// `1 s`, `0.25 s`, `2.5 s`.
fn seconds(d: Duration) -> String {
    let s = format!("{:.3}", d.as_secs_f64());
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s} s")
}

/// Waits until every live engine of `state_dir` has applied log position
/// `seq`, reading their records every [`SCAN_EVERY`], for at most `timeout`.
/// `own` is the waiting engine's registration name: it counts as up to date
/// (it applied its change itself). A directory that cannot be read counts
/// no engine: there is nothing to wait for that could be seen.
pub fn wait_applied(
    state_dir: &Path,
    seq: u64,
    timeout: Duration,
    own: Option<&str>,
) -> WaitOutcome {
    let deadline = Instant::now() + timeout;
    loop {
        let peers = live_engines(state_dir).unwrap_or_default();
        let lagging = peers
            .iter()
            .filter(|p| Some(p.name.as_str()) != own && !p.has_applied(seq))
            .count();
        let out = WaitOutcome {
            engines: peers.len(),
            lagging,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if lagging == 0 || left.is_zero() {
            return out;
        }
        std::thread::sleep(left.min(SCAN_EVERY));
    }
}

fn encode_notice(seq: u64) -> [u8; NOTICE_LEN] {
    let mut b = [0u8; NOTICE_LEN];
    b[..8].copy_from_slice(&seq.to_le_bytes());
    b[8..].copy_from_slice(&(seq ^ NOTICE_KEY).to_le_bytes());
    b
}

/// The notice's position; `None` when empty or torn.
fn read_notice(f: &File) -> Option<u64> {
    let mut b = [0u8; NOTICE_LEN];
    for _ in 0..2 {
        if let Ok(NOTICE_LEN) = f.read_at(&mut b, 0) {
            let seq = u64::from_le_bytes(b[..8].try_into().unwrap_or_default());
            let key = u64::from_le_bytes(b[8..].try_into().unwrap_or_default());
            if seq ^ NOTICE_KEY == key {
                return Some(seq);
            }
        }
    }
    None
}

/// Raises the notice of `state_dir` to `seq` (never lowers it), so watchers
/// poll now. Best effort: no notice file means no engine ever ran here.
pub fn notify(state_dir: &Path, seq: u64) {
    let path = state_dir.join(DIR).join(NOTICE_FILE);
    let Ok(f) = OpenOptions::new().read(true).write(true).open(path) else {
        return;
    };
    // Writers take turns, so a slow one cannot put back a lower position.
    if Lock::lock_exclusive(&f).is_err() {
        return;
    }
    if read_notice(&f).is_none_or(|cur| seq > cur) {
        let _ = f.write_all_at(&encode_notice(seq), 0);
    }
    let _ = Lock::unlock(&f);
}

/// A watcher's view of the notice file.
#[derive(Debug, Default)]
struct NoticeReader {
    file: Option<File>,
    opened: Option<Instant>,
    /// The notice last acted on: a watcher whose poll fails does not poll
    /// again every tick for the same notice.
    acted_on: u64,
}

/// An engine's presence: its registration, the notice it raises and reads,
/// and what its last wait found. Every engine has one (a passive engine
/// never registers, but raises the notice after its changes).
#[derive(Debug)]
pub struct Presence {
    state_dir: PathBuf,
    reg: Mutex<Option<Registration>>,
    notice: Mutex<NoticeReader>,
    last_change: AtomicU64,
    wait_engines: AtomicU64,
    wait_lagging: AtomicU64,
    flags: AtomicU32,
    /// The position last published (for a registration made later).
    last_applied: AtomicU64,
    apis: Mutex<Option<(u32, u64)>>,
    /// When registering last failed: an engine whose `state_dir` it cannot
    /// reach registers once it can (tried at most every [`HEARTBEAT`]).
    register_failed: Mutex<Option<Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data: nothing is left half-done by a panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Presence {
    /// The presence of an engine whose state is in `state_dir` (nothing
    /// registered yet).
    pub fn new(state_dir: &Path) -> Presence {
        Presence {
            state_dir: state_dir.to_path_buf(),
            reg: Mutex::new(None),
            notice: Mutex::new(NoticeReader::default()),
            last_change: AtomicU64::new(0),
            wait_engines: AtomicU64::new(0),
            wait_lagging: AtomicU64::new(0),
            flags: AtomicU32::new(0),
            last_applied: AtomicU64::new(0),
            apis: Mutex::new(None),
            register_failed: Mutex::new(None),
        }
    }

    /// The API set this engine loaded (count, digest), for its record.
    pub fn set_apis(&self, count: u32, digest: u64) {
        *lock(&self.apis) = Some((count, digest));
    }

    /// The engine's health flags ([`STORE_FAILING`], [`FAIL_MODE`]): kept
    /// for the record, and written to it at once when they changed.
    /// An engine that could not register (its `state_dir` was closed to
    /// it) tries again here, at most once a second: the store may
    /// still fail while `engines/` can be written, and that is what
    /// `ase-cli` must learn from the record.
    pub fn set_flags(&self, flags: u32) {
        // Kept and written under the one lock: two callers swapping the
        // flags outside it could write their records in the other order,
        // leaving the record at one value and the flags at the other, and
        // the record would never be corrected (the flags "did not change").
        let mut g = lock(&self.reg);
        self.flags.store(flags, Relaxed);
        match g.as_mut() {
            Some(r) => r.publish_flags(flags),
            None => {
                drop(g);
                self.retry_register();
            }
        }
    }

    /// Registers again when registering failed at least [`HEARTBEAT`] ago.
    fn retry_register(&self) {
        let due = lock(&self.register_failed).is_some_and(|t| t.elapsed() >= HEARTBEAT);
        if due {
            let _ = self.register(self.last_applied.load(Relaxed));
        }
    }

    /// Registers this engine at `applied_seq`. Best effort: an engine that
    /// cannot register still enforces; waiters just do not see it. Returns
    /// why it could not.
    pub fn register(&self, applied_seq: u64) -> Result<(), String> {
        // Under the registration lock from reading the flags on, so that a
        // concurrent set_flags either lands in the new record or finds it.
        let mut g = lock(&self.reg);
        let apis = *lock(&self.apis);
        let r = Registration::register_with(
            &self.state_dir,
            applied_seq,
            self.flags.load(Relaxed),
            apis,
        )
        .map_err(|e| {
            *lock(&self.register_failed) = Some(Instant::now());
            format!(
                "cannot register in {}: {e}",
                self.state_dir.join(DIR).display()
            )
        })?;
        *lock(&self.register_failed) = None;
        *g = Some(r);
        Ok(())
    }

    /// Removes the registration (the engine stops applying changes).
    pub fn deregister(&self) {
        lock(&self.reg).take();
    }

    /// The registration file name, while registered.
    pub fn name(&self) -> Option<String> {
        lock(&self.reg).as_ref().map(|r| r.name().to_string())
    }

    /// The watcher applied the log up to `applied_seq` (called where the
    /// position is stored). Cheap when nothing moved: no I/O but the
    /// heartbeat.
    pub fn published(&self, applied_seq: u64) {
        self.last_applied.store(applied_seq, Relaxed);
        let mut g = lock(&self.reg);
        let Some(r) = g.as_mut() else {
            drop(g);
            self.retry_register();
            return;
        };
        let beat = r.applied_seq() == applied_seq && r.written.elapsed() >= HEARTBEAT;
        if beat && !r.in_place() {
            // Someone removed the file: register again so waiters see us.
            let apis = *lock(&self.apis);
            let flags = self.flags.load(Relaxed);
            if let Ok(n) = Registration::register_with(&self.state_dir, applied_seq, flags, apis) {
                *g = Some(n);
            }
            return;
        }
        r.publish(applied_seq);
    }

    /// An engine call wrote to `store`: remembers the log position the change
    /// got (the newest: at least the change's own) and raises the notice.
    pub fn changed(&self, store: &crate::store::Store) {
        if let Ok(seq) = store.last_seq() {
            self.last_change.fetch_max(seq, Relaxed);
            notify(&self.state_dir, seq);
        }
    }

    /// The log position of this engine's newest change (0: none yet).
    pub fn last_change_seq(&self) -> u64 {
        self.last_change.load(Relaxed)
    }

    /// Waits until every live engine has applied `seq` ([`wait_applied`]);
    /// this engine counts as up to date when `seq` is one of its own changes
    /// (it applied them itself) or it has applied it. The outcome is kept
    /// for [`Presence::last_wait`].
    pub fn wait(&self, seq: u64, timeout: Duration) -> WaitOutcome {
        let own = lock(&self.reg)
            .as_ref()
            .filter(|r| seq <= self.last_change_seq() || r.applied_seq() >= seq)
            .map(|r| r.name().to_string());
        let out = wait_applied(&self.state_dir, seq, timeout, own.as_deref());
        self.wait_engines.store(out.engines as u64, Relaxed);
        self.wait_lagging.store(out.lagging as u64, Relaxed);
        out
    }

    /// What the last [`Presence::wait`] found (zeros before the first).
    pub fn last_wait(&self) -> WaitOutcome {
        WaitOutcome {
            engines: self.wait_engines.load(Relaxed) as usize,
            lagging: self.wait_lagging.load(Relaxed) as usize,
        }
    }

    /// Whether the notice is ahead of `applied` (a change this engine has
    /// not applied): one `pread` of an open file. Opens the file on the
    /// first call and again every 10 s (it may have been replaced).
    pub fn notice_ahead(&self, applied: u64) -> bool {
        let mut n = lock(&self.notice);
        if n.opened.is_none_or(|t| t.elapsed() >= REOPEN_NOTICE) {
            n.opened = Some(Instant::now());
            n.file = File::open(self.state_dir.join(DIR).join(NOTICE_FILE)).ok();
        }
        let Some(seq) = n.file.as_ref().and_then(read_notice) else {
            return false;
        };
        if seq > applied && seq > n.acted_on {
            n.acted_on = seq;
            return true;
        }
        false
    }

    /// The watcher's sleep between polls: up to `interval`, cut short when
    /// the notice says a change is waiting (checked every [`CHECK_EVERY`]).
    /// True when told to stop.
    pub fn sleep(&self, stop: &Receiver<()>, interval: Duration, applied: &AtomicU64) -> bool {
        let stopped = |d| !matches!(stop.recv_timeout(d), Err(RecvTimeoutError::Timeout));
        if interval <= CHECK_EVERY {
            return stopped(interval);
        }
        let deadline = Instant::now() + interval;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if stopped(left.min(CHECK_EVERY)) {
                return true;
            }
            if self.notice_ahead(applied.load(Relaxed)) {
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    const CHILD_ENV: &str = "ASE_PRESENCE_TEST_CHILD";

    #[test]
    fn register_publish_read_and_deregister() {
        let d = tempfile::tempdir().unwrap();
        assert!(live_engines(d.path()).unwrap().is_empty(), "no directory");
        let mut r = Registration::register(d.path(), 3).unwrap();
        let peers = live_engines(d.path()).unwrap();
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].name, r.name());
        let rec = peers[0].record.unwrap();
        assert_eq!((rec.pid, rec.applied_seq), (std::process::id(), 3));
        r.publish(9);
        let rec = live_engines(d.path()).unwrap()[0].record.unwrap();
        assert_eq!(rec.applied_seq, 9);
        assert!(rec.heartbeat_ms >= rec.started_ms);
        // Modes, whatever the umask.
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&d.path().join(DIR)), 0o700);
        assert_eq!(mode(r.path()), 0o600);
        assert_eq!(mode(&d.path().join(DIR).join(NOTICE_FILE)), 0o600);
        let path = r.path().to_path_buf();
        drop(r);
        assert!(!path.exists(), "deregistered");
        assert!(live_engines(d.path()).unwrap().is_empty());
    }

    #[test]
    fn health_and_api_set_are_in_the_record_and_version_1_still_reads() {
        let d = tempfile::tempdir().unwrap();
        let p = Presence::new(d.path());
        p.set_apis(3, 0xfeed);
        p.set_flags(STORE_FAILING | FAIL_MODE);
        p.register(5).unwrap();
        let rec = live_engines(d.path()).unwrap()[0].record.unwrap();
        assert_eq!(rec.flags, STORE_FAILING | FAIL_MODE);
        assert_eq!(rec.apis, Some((3, 0xfeed)));
        // A change of health is written at once, not at the next heartbeat.
        p.set_flags(0);
        let rec = live_engines(d.path()).unwrap()[0].record.unwrap();
        assert_eq!((rec.flags, rec.applied_seq), (0, 5));

        // A version 1 record (an engine of an older library): read, health unknown.
        let mut old = Record {
            flags: 0,
            apis: None,
            ..rec
        }
        .encode();
        old[4..8].copy_from_slice(&1u32.to_le_bytes());
        let sum = checksum(&old[..RECORD_LEN - 8]);
        old[RECORD_LEN - 8..].copy_from_slice(&sum.to_le_bytes());
        let back = Record::decode(&old).unwrap();
        assert_eq!((back.flags, back.apis, back.pid), (0, None, rec.pid));
        assert!(!back.health_known(), "zero flags of version 1 say nothing");
        assert!(rec.health_known());
        old[4..8].copy_from_slice(&3u32.to_le_bytes());
        let sum = checksum(&old[..RECORD_LEN - 8]);
        old[RECORD_LEN - 8..].copy_from_slice(&sum.to_le_bytes());
        assert_eq!(Record::decode(&old), None, "a version from the future");
    }

    #[test]
    fn concurrent_health_changes_leave_the_record_as_the_flags_are() {
        let d = tempfile::tempdir().unwrap();
        let p = Presence::new(d.path());
        p.register(0).unwrap();
        // Two threads set different flags at the same moment, many times:
        // whatever the interleaving, the record ends as the flags are kept
        // (else a later set_flags of the same value would not correct it).
        let rounds = 2000;
        let go = std::sync::Barrier::new(2);
        let mismatches = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for me in [0u32, 1] {
                let (p, go, mismatches, dir) = (&p, &go, &mismatches, d.path());
                s.spawn(move || {
                    for round in 0..rounds {
                        go.wait();
                        p.set_flags(((round + me) % 2) * STORE_FAILING);
                        go.wait();
                        if me == 0 {
                            let rec = live_engines(dir).unwrap()[0].record.unwrap();
                            if rec.flags != p.flags.load(Relaxed) {
                                mismatches.fetch_add(1, Relaxed);
                            }
                        }
                        go.wait();
                    }
                });
            }
        });
        assert_eq!(mismatches.load(Relaxed), 0, "record and flags agree");
    }

    #[test]
    fn an_engine_that_could_not_register_registers_once_it_can() {
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("state");
        // A file where the directory should be: registering fails.
        fs::write(&state, "not a directory").unwrap();
        let p = Presence::new(&state);
        assert!(p.register(0).is_err());
        fs::remove_file(&state).unwrap();
        fs::create_dir(&state).unwrap();
        p.set_flags(STORE_FAILING);
        assert!(p.name().is_none(), "not before a heartbeat has passed");
        std::thread::sleep(HEARTBEAT);
        p.set_flags(STORE_FAILING);
        let peers = live_engines(&state).unwrap();
        assert_eq!(peers.len(), 1, "registered while the store still fails");
        assert_eq!(peers[0].record.unwrap().flags, STORE_FAILING);
    }

    /// The child side of `a_dead_engines_file_is_ignored_and_removed`.
    fn child(dir: &str) {
        let r = Registration::register(Path::new(dir), 1).unwrap();
        // libtest prints the test's name first, on the same line.
        println!("@@{}", r.name());
        std::thread::sleep(Duration::from_secs(60));
    }

    #[test]
    fn a_dead_engines_file_is_ignored_and_removed() {
        if let Ok(dir) = std::env::var(CHILD_ENV) {
            return child(&dir);
        }
        let d = tempfile::tempdir().unwrap();
        let mut c = Command::new(std::env::current_exe().unwrap())
            .args([
                "sync::presence::tests::a_dead_engines_file_is_ignored_and_removed",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, d.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let name = BufReader::new(c.stdout.take().unwrap())
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.split_once("@@").map(|(_, n)| n.to_string()))
            .expect("the child registers");
        let peers = live_engines(d.path()).unwrap();
        assert_eq!(peers.len(), 1, "alive: counted");
        assert_eq!(peers[0].name, name);
        assert_eq!(peers[0].record.unwrap().pid, c.id());
        let out = wait_applied(d.path(), 2, Duration::from_millis(50), None);
        assert_eq!(
            out,
            WaitOutcome {
                engines: 1,
                lagging: 1
            }
        );
        c.kill().unwrap();
        c.wait().unwrap();
        assert!(live_engines(d.path()).unwrap().is_empty(), "dead: ignored");
        assert!(!d.path().join(DIR).join(&name).exists(), "and removed");
        let t = Instant::now();
        let out = wait_applied(d.path(), 2, Duration::from_secs(1), None);
        assert_eq!(
            out,
            WaitOutcome {
                engines: 0,
                lagging: 0
            }
        );
        assert!(t.elapsed() < Duration::from_millis(100));
    }

    #[test]
    fn a_torn_or_short_record_counts_as_lagging_not_as_an_error() {
        let d = tempfile::tempdir().unwrap();
        let r = Registration::register(d.path(), 5).unwrap();
        // A second live engine whose record is short (a write in flight),
        // and a third whose record does not check.
        let dir = d.path().join(DIR);
        let short = files::create_new_private(&dir.join("1-short")).unwrap();
        assert!(Lock::try_lock_exclusive(&short).unwrap());
        short.write_all_at(&r.record.encode()[..20], 0).unwrap();
        let torn = files::create_new_private(&dir.join("1-torn")).unwrap();
        assert!(Lock::try_lock_exclusive(&torn).unwrap());
        let mut b = Record {
            applied_seq: 7,
            ..r.record
        }
        .encode();
        b[16] ^= 0xff; // half of a new position, the old checksum
        torn.write_all_at(&b, 0).unwrap();
        let peers = live_engines(d.path()).unwrap();
        assert_eq!(peers.len(), 3);
        assert_eq!(peers.iter().filter(|p| p.record.is_none()).count(), 2);
        let out = wait_applied(d.path(), 5, Duration::from_millis(20), None);
        assert_eq!(
            out,
            WaitOutcome {
                engines: 3,
                lagging: 2
            }
        );
        // Whole again: current.
        torn.write_all_at(
            &Record {
                applied_seq: 7,
                ..r.record
            }
            .encode(),
            0,
        )
        .unwrap();
        short.write_all_at(&r.record.encode(), 0).unwrap();
        let out = wait_applied(d.path(), 5, Duration::from_millis(20), None);
        assert_eq!(
            out,
            WaitOutcome {
                engines: 3,
                lagging: 0
            }
        );
    }

    #[test]
    fn an_engine_waiting_on_its_own_change_counts_itself_current() {
        let d = tempfile::tempdir().unwrap();
        let p = Presence::new(d.path());
        p.register(4).unwrap();
        p.last_change.store(6, Relaxed);
        assert_eq!(
            p.wait(6, Duration::from_millis(20)),
            WaitOutcome {
                engines: 1,
                lagging: 0
            }
        );
        // Someone else's later change: lagging until the watcher publishes it.
        assert_eq!(
            p.wait(8, Duration::from_millis(20)),
            WaitOutcome {
                engines: 1,
                lagging: 1
            }
        );
        assert_eq!(p.last_wait().lagging, 1);
        p.published(8);
        assert_eq!(p.wait(8, Duration::from_millis(20)).lagging, 0);
        p.deregister();
        assert!(live_engines(d.path()).unwrap().is_empty());
    }

    #[test]
    fn the_notice_only_rises_and_wakes_a_watcher_once() {
        let d = tempfile::tempdir().unwrap();
        notify(d.path(), 3); // no engine ever ran: nothing created
        assert!(!d.path().join(DIR).exists());
        let p = Presence::new(d.path());
        p.register(0).unwrap();
        assert!(!p.notice_ahead(0), "no notice yet");
        notify(d.path(), 5);
        notify(d.path(), 4);
        let f = File::open(d.path().join(DIR).join(NOTICE_FILE)).unwrap();
        assert_eq!(read_notice(&f), Some(5));
        assert!(!p.notice_ahead(5), "applied already");
        assert!(p.notice_ahead(2));
        assert!(!p.notice_ahead(2), "acted on once");
        notify(d.path(), 6);
        assert!(p.notice_ahead(2));
    }

    #[test]
    fn the_watcher_sleep_ends_at_a_notice() {
        let d = tempfile::tempdir().unwrap();
        let p = Presence::new(d.path());
        p.register(1).unwrap();
        let (_tx, stop) = std::sync::mpsc::channel::<()>();
        let applied = AtomicU64::new(1);
        notify(d.path(), 2);
        let t = Instant::now();
        assert!(!p.sleep(&stop, Duration::from_secs(5), &applied));
        assert!(
            t.elapsed() < Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );
        let t = Instant::now();
        assert!(!p.sleep(&stop, Duration::from_millis(60), &applied));
        assert!(
            t.elapsed() >= Duration::from_millis(60),
            "nothing new: the interval"
        );
        drop(_tx);
        assert!(p.sleep(&stop, Duration::from_secs(5), &applied), "stop");
    }

    #[test]
    fn warning_lines() {
        let w = |engines, lagging, ms| {
            WaitOutcome { engines, lagging }.warning(Duration::from_millis(ms))
        };
        assert_eq!(w(4, 0, 1000), None);
        assert_eq!(
            w(4, 2, 1000).unwrap(),
            "warning: 2 of 4 running engines have not applied this change within 1 s; \
             they will when they next read the store"
        );
        assert!(
            w(1, 1, 250)
                .unwrap()
                .starts_with("warning: 1 of 1 running engine has not")
        );
        assert!(w(2, 1, 1500).unwrap().contains("within 1.5 s"));
    }

    /// The watcher's cheap check, measured: `cargo test --lib
    /// presence::tests::cost_of_the_notice_check -- --ignored --nocapture`.
    /// Prints the check alone, and a watcher-like thread's CPU per wake-up
    /// (every 20 ms) without and with the check.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn cost_of_the_notice_check() {
        let d = tempfile::tempdir().unwrap();
        let p = Presence::new(d.path());
        p.register(1).unwrap();
        notify(d.path(), 1);
        let n = 200_000;
        let t = Instant::now();
        for _ in 0..n {
            assert!(!p.notice_ahead(1));
        }
        let per = t.elapsed() / n;
        eprintln!(
            "notice check alone: {per:?} each; every {CHECK_EVERY:?} that is {:.4}% of one core",
            per.as_secs_f64() / CHECK_EVERY.as_secs_f64() * 100.0
        );
        let cpu_ns = || {
            fs::read_to_string("/proc/thread-self/schedstat")
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let (_tx, stop) = std::sync::mpsc::channel::<()>();
        let wakeups = 250;
        for check in [false, true] {
            let before = cpu_ns();
            for _ in 0..wakeups {
                let _ = stop.recv_timeout(CHECK_EVERY);
                if check {
                    assert!(!p.notice_ahead(1));
                }
            }
            let per = (cpu_ns() - before) / wakeups;
            eprintln!(
                "wake-up every {CHECK_EVERY:?}{}: {:.1} us of CPU each, {:.3}% of one core",
                if check {
                    " with the check"
                } else {
                    ", no check"
                },
                per as f64 / 1e3,
                per as f64 / CHECK_EVERY.as_nanos() as f64 * 100.0
            );
        }
    }
}
