//! The durable state shared by every process on a host: one SQLite database
//! (`ase.db`) in `state_dir`.
//!
//! It holds the allow and deny entries, the switches, per-API
//! `enable_blocking` overrides, the admin credential and an ordered change
//! log. Every write is one transaction that changes the tables *and* appends
//! to the log, so a process that applies the log in order reaches the same
//! state as one that reloads the tables.
//!
//! Durability: WAL mode with `synchronous=FULL` syncs the log on every commit,
//! so a change whose call returned survives `kill -9` and power loss. Writers
//! take the write lock up front (`BEGIN IMMEDIATE`) and wait up to
//! `BUSY_TIMEOUT` for it, so two writers never fail each other; readers
//! never wait in WAL mode.
//!
//! Ownership: nginx workers run unprivileged while operators run `ase-cli` as
//! root. Files created by root are given the owner and group of `state_dir`
//! (SQLite does the same for its `-wal`/`-shm` files when running as root), so
//! both keep working.

mod auth;
mod schema;

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{
    Connection, ErrorCode, OptionalExtension, Transaction, TransactionBehavior, params,
};

use crate::policy::ident::{IdKind, Identifier, IpNet, Key, KeyRef};
use crate::policy::lists::{IdMap, Source};

pub use schema::LATEST as SCHEMA_VERSION;

/// The database file name inside `state_dir`.
pub const STORE_FILE: &str = "ase.db";

/// How long a writer waits for another process's write transaction.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Changes kept in the log. A process that falls further behind reloads the
/// whole store instead of replaying.
pub const LOG_KEEP: i64 = 20_000;

/// Bulk adds larger than this are logged as one "reload" instead of one
/// change per entry, so a million-entry import does not flood the log.
pub const LOG_EACH_MAX: usize = 1_000;

/// The meta key the ABS poller writes the time of its last successful sync to.
pub const META_ABS_LAST_SYNC: &str = "abs_last_sync";

/// The default credential, as ASE ships it.
pub const DEFAULT_USER: &str = "admin";
const DEFAULT_PASSWORD: &str = "admin";

/// Which list an entry is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum List {
    /// The deny list (ASE: blacklist).
    Deny = 0,
    /// The allow list (ASE: whitelist).
    Allow = 1,
}

impl List {
    fn from_i64(v: i64) -> Option<List> {
        match v {
            0 => Some(List::Deny),
            1 => Some(List::Allow),
            _ => None,
        }
    }
}

/// What went wrong with the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// The file or directory cannot be opened or written by this user.
    Access,
    /// The file is not a database or is damaged.
    Corrupt,
    /// Written by a newer build with a schema this one does not know.
    TooNew,
    /// Any other failure (disk full, I/O error, ...).
    Other,
}

/// A store failure; the message names the file and, for access problems, the
/// user that needs access.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreError {
    /// The category.
    pub kind: StoreErrorKind,
    /// A one-line explanation naming the store file.
    pub message: String,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StoreError {}

fn user_name(uid: u32) -> Option<String> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id: u32 = f.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_string())
    })
}

fn who(uid: u32) -> String {
    match user_name(uid) {
        Some(n) => format!("uid {uid} ({n})"),
        None => format!("uid {uid}"),
    }
}

/// The effective uid of this process, without `unsafe`: `/proc/self` belongs to it.
fn my_uid() -> Option<u32> {
    fs::metadata("/proc/self").ok().map(|m| m.uid())
}

fn access_error(path: &Path, detail: &str) -> StoreError {
    // Name the owner of whatever exists (the file, else its directory) and
    // this process's user, so the operator knows whose access to fix.
    let parent = path.parent().unwrap_or(Path::new("."));
    let owner = fs::metadata(path)
        .map(|m| (path, m))
        .or_else(|_| fs::metadata(parent).map(|m| (parent, m)))
        .ok();
    let me = my_uid().map(who).unwrap_or_else(|| "this user".to_string());
    let mut m = format!("cannot open state store {}: {detail}", path.display());
    if let Some((p, o)) = owner {
        m.push_str(&format!(
            "; {} is owned by {} (mode {:04o}) and this process runs as {me}: \
             run as that user or give {me} read and write access",
            p.display(),
            who(o.uid()),
            o.mode() & 0o7777
        ));
    }
    StoreError {
        kind: StoreErrorKind::Access,
        message: m,
    }
}

fn sql_error(path: &Path, e: rusqlite::Error) -> StoreError {
    let code = e.sqlite_error_code();
    match code {
        Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => StoreError {
            kind: StoreErrorKind::Corrupt,
            message: format!(
                "state store {} is corrupt ({e}); move it aside to start empty, \
                 or restore it from a backup",
                path.display()
            ),
        },
        Some(ErrorCode::CannotOpen)
        | Some(ErrorCode::PermissionDenied)
        | Some(ErrorCode::ReadOnly) => access_error(path, &e.to_string()),
        _ => StoreError {
            kind: StoreErrorKind::Other,
            message: format!("state store {}: {e}", path.display()),
        },
    }
}

/// An entry to add, with what the store keeps beside the identifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEntry {
    /// The identifier.
    pub id: Identifier,
    /// Expiry in Unix ms; 0 = never.
    pub expiry: u64,
    /// The API it was detected on, if known.
    pub api: String,
    /// The attack code (ABS attack type, or the real-time source word).
    pub attack_code: String,
}

impl NewEntry {
    /// An entry with only an identifier and an expiry.
    pub fn new(id: Identifier, expiry: u64) -> NewEntry {
        NewEntry {
            id,
            expiry,
            api: String::new(),
            attack_code: String::new(),
        }
    }
}

/// An entry as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEntry {
    /// Which list.
    pub list: List,
    /// The identifier.
    pub id: Identifier,
    /// The deny source (`Manual` for allow entries).
    pub source: Source,
    /// When it was first added, Unix ms.
    pub added: u64,
    /// Expiry in Unix ms; 0 = never.
    pub expiry: u64,
    /// The API it was detected on, or empty.
    pub api: String,
    /// The attack code, or empty.
    pub attack_code: String,
}

/// One change from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// An identifier was added under a source (allow entries: `Manual`).
    Add {
        /// Which list.
        list: List,
        /// The identifier.
        id: Identifier,
        /// The source.
        source: Source,
        /// Expiry in Unix ms, 0 = never.
        expiry: u64,
    },
    /// An identifier was taken off the sources in `mask`.
    Remove {
        /// Which list.
        list: List,
        /// The identifier.
        id: Identifier,
        /// Source mask.
        mask: u8,
    },
    /// Every entry of the sources in `mask` was removed.
    Clear {
        /// Which list.
        list: List,
        /// Source mask.
        mask: u8,
    },
    /// A switch was set (by its CLI word: `firewall`, `abs`, ...).
    Switch {
        /// The switch word.
        name: String,
        /// On or off.
        on: bool,
    },
    /// `enable_blocking` of an API was set.
    ApiBlocking {
        /// The API name.
        api: String,
        /// On or off.
        on: bool,
    },
    /// Every deny entry of this source was replaced: reload that source.
    ReloadSource(Source),
    /// Too much changed to log: reload everything.
    Reload,
}

const OP_ADD: i64 = 1;
const OP_REMOVE: i64 = 2;
const OP_CLEAR: i64 = 3;
const OP_SWITCH: i64 = 4;
const OP_API: i64 = 5;
const OP_RELOAD_SOURCE: i64 = 6;
const OP_RELOAD: i64 = 7;

/// What a watcher gets when it asks for changes.
#[derive(Debug)]
pub enum Changes {
    /// The changes after the given sequence number, in order (possibly none).
    Next(Vec<(u64, Change)>),
    /// The log no longer holds the changes right after the given sequence
    /// number: reload everything.
    Behind,
}

/// What a full load read besides the lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    /// The log position the load reflects.
    pub seq: u64,
    /// Stored switches (word, on); switches never set keep their config value.
    pub switches: Vec<(String, bool)>,
    /// Stored `enable_blocking` overrides (API, on).
    pub api_blocking: Vec<(String, bool)>,
    /// Stored rows that no longer parse (skipped).
    pub skipped: u64,
}

/// Entry counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Unexpired deny rows per [`Source`] (indexed by its number).
    pub deny: [u64; 6],
    /// Unexpired allow rows.
    pub allow: u64,
}

fn source_from(v: i64) -> Option<Source> {
    u32::try_from(v).ok().and_then(Source::from_u32)
}

fn kind_from(v: i64) -> Option<IdKind> {
    u32::try_from(v).ok().and_then(IdKind::from_u32)
}

fn name_key(id: &Identifier) -> std::borrow::Cow<'_, str> {
    // API key names compare case-insensitively (as HTTP header names do).
    if id.kind == IdKind::ApiKey {
        std::borrow::Cow::Owned(id.name.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(&id.name)
    }
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn now_ms() -> u64 {
    crate::clock::now_ms()
}

/// The list key of a stored row, built without an intermediate
/// [`Identifier`] but checked as one: a row another writer made with an
/// empty or too long value is skipped, as `Identifier::new` would refuse it.
fn row_key(kind: IdKind, name: &str, value: &str) -> Option<Key> {
    Identifier::check(kind, name, value).ok()?;
    if kind == IdKind::Ip {
        IpNet::parse(value).ok().map(Key::ip)
    } else {
        Some(Key::new(KeyRef::new(
            kind,
            name.as_bytes(),
            value.as_bytes(),
        )))
    }
}

/// One connection to the store. Methods take `&self`; a mutex serialises
/// this connection's use between threads. Use one `Store` per thread that
/// works independently (see [`Store::reopen`]).
pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `state_dir`: the directory is
    /// created 0700, the file 0600, the schema migrated forward.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        let path = state_dir.join(STORE_FILE);
        prepare_files(state_dir, &path)?;
        let conn = Connection::open(&path).map_err(|e| sql_error(&path, e))?;
        let s = Store {
            path,
            conn: Mutex::new(conn),
        };
        s.setup()?;
        Ok(s)
    }

    /// Another connection to the same file (for another thread).
    pub fn reopen(&self) -> Result<Store, StoreError> {
        let conn = Connection::open(&self.path).map_err(|e| sql_error(&self.path, e))?;
        let s = Store {
            path: self.path.clone(),
            conn: Mutex::new(conn),
        };
        s.setup()?;
        Ok(s)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the connection leaves SQLite consistent (an open
        // transaction is rolled back when its guard drops), so poisoning is ignored.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        sql_error(&self.path, e)
    }

    fn setup(&self) -> Result<(), StoreError> {
        let mut c = self.conn();
        c.busy_timeout(BUSY_TIMEOUT).map_err(|e| self.err(e))?;
        // 16 KiB pages: a bulk import writes a quarter as many pages (each
        // page is one write to the WAL and one to the database). Only takes
        // effect on a new, empty database; a no-op otherwise.
        c.pragma_update(None, "page_size", 16384)
            .map_err(|e| self.err(e))?;
        // Switching a new file to WAL takes its lock without SQLite's busy
        // handler: while another process does the same at that moment, it
        // fails at once with "database is locked" (six processes creating
        // one store: 7 failures in 480 opens, all at this step, which left
        // nginx workers in fail mode until their next poll). Retried for as
        // long as the busy timeout would have waited.
        let start = std::time::Instant::now();
        let mode: String = loop {
            match c.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)) {
                Err(e)
                    if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy)
                        && start.elapsed() < BUSY_TIMEOUT =>
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                r => break r.map_err(|e| self.err(e))?,
            }
        };
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError {
                kind: StoreErrorKind::Other,
                message: format!(
                    "state store {}: cannot use WAL mode (got {mode})",
                    self.path.display()
                ),
            });
        }
        c.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| self.err(e))?;
        migrate(&mut c).map_err(|e| match e {
            MigrateError::Sql(e) => self.err(e),
            MigrateError::TooNew(v) => StoreError {
                kind: StoreErrorKind::TooNew,
                message: format!(
                    "state store {} has schema version {v}, newer than this build supports \
                     ({}): upgrade ase",
                    self.path.display(),
                    schema::LATEST
                ),
            },
            MigrateError::Other(m) => StoreError {
                kind: StoreErrorKind::Other,
                message: format!("state store {}: {m}", self.path.display()),
            },
        })
    }

    /// For a bulk write, a page cache big enough to hold the indexes being
    /// built, so SQLite does not spill half-built pages to the WAL and write
    /// them again; restored to the default when the guard drops (engines keep
    /// their connections, and their memory, for a long time).
    fn bulk_cache(&self, n: usize) -> Option<BulkCache<'_>> {
        (n > 10_000).then(|| {
            // KiB: about 200 bytes of table and index per entry.
            let kib = (n / 5).clamp(16_384, 512 * 1024);
            let _ = self.conn().pragma_update(None, "cache_size", -(kib as i64));
            BulkCache(self)
        })
    }

    /// Runs `f` in one write transaction (taken up front, so it waits for
    /// other writers instead of failing) and commits.
    fn write<R>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<R>,
    ) -> Result<R, StoreError> {
        self.transaction(TransactionBehavior::Immediate, f)
    }

    /// Runs `f` in one read transaction: a consistent snapshot.
    fn read<R>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<R>,
    ) -> Result<R, StoreError> {
        self.transaction(TransactionBehavior::Deferred, f)
    }

    fn transaction<R>(
        &self,
        how: TransactionBehavior,
        f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<R>,
    ) -> Result<R, StoreError> {
        let mut c = self.conn();
        let tx = c.transaction_with_behavior(how).map_err(|e| self.err(e))?;
        let r = f(&tx).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(r)
    }

    /// Adds one entry; returns whether the identifier was not on `list` before
    /// (under any source) and the change's sequence number.
    pub fn add(&self, list: List, e: &NewEntry, source: Source) -> Result<(bool, u64), StoreError> {
        let now = now_ms();
        self.write(|tx| {
            let existed = exists(tx, list, &e.id, now)?;
            upsert(tx, list, e, source, now)?;
            let seq = log(
                tx,
                &Change::Add {
                    list,
                    id: e.id.clone(),
                    source,
                    expiry: e.expiry,
                },
            )?;
            Ok((!existed, seq))
        })
    }

    /// Adds many entries in one transaction; `progress` is called with the
    /// number done so far every few thousand entries. Returns how many were new.
    pub fn add_many(
        &self,
        list: List,
        entries: &[NewEntry],
        source: Source,
        progress: &mut dyn FnMut(usize),
    ) -> Result<usize, StoreError> {
        let now = now_ms();
        let _big = self.bulk_cache(entries.len());
        self.write(|tx| {
            let mut new = 0;
            for (i, e) in entries.iter().enumerate() {
                if !exists(tx, list, &e.id, now)? {
                    new += 1;
                }
                upsert(tx, list, e, source, now)?;
                if entries.len() <= LOG_EACH_MAX {
                    log(
                        tx,
                        &Change::Add {
                            list,
                            id: e.id.clone(),
                            source,
                            expiry: e.expiry,
                        },
                    )?;
                }
                if i % 4096 == 4095 {
                    progress(i + 1);
                }
            }
            if entries.len() > LOG_EACH_MAX {
                log(tx, &Change::Reload)?;
            }
            progress(entries.len());
            Ok(new)
        })
    }

    /// Records real-time detections (identifiers, source) in one transaction.
    /// Nothing is written when `enable_ase_detected_attack` is stored as off:
    /// a detection made just before another process turned it off must not
    /// bring deleted entries back. Returns the number of identifiers written.
    pub fn record_detections(
        &self,
        batch: &[(Vec<Identifier>, Source)],
    ) -> Result<usize, StoreError> {
        let now = now_ms();
        self.write(|tx| {
            let off: Option<bool> = tx
                .query_row(
                    "SELECT on_ = 0 FROM switches WHERE name = 'ase_detected_attack'",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            if off == Some(true) {
                return Ok(0);
            }
            let mut n = 0;
            for (ids, source) in batch {
                for id in ids {
                    let e = NewEntry {
                        id: id.clone(),
                        expiry: 0,
                        api: String::new(),
                        attack_code: attack_code(*source).to_string(),
                    };
                    upsert(tx, List::Deny, &e, *source, now)?;
                    log(
                        tx,
                        &Change::Add {
                            list: List::Deny,
                            id: id.clone(),
                            source: *source,
                            expiry: 0,
                        },
                    )?;
                    n += 1;
                }
            }
            Ok(n)
        })
    }

    /// Takes `id` off the sources in `mask` of `list`. Returns the sources it
    /// was removed from (0: it was not listed; nothing is logged then).
    pub fn remove(&self, list: List, id: &Identifier, mask: u8) -> Result<(u8, u64), StoreError> {
        self.write(|tx| {
            let mut st = tx.prepare_cached(
                "DELETE FROM entries WHERE list = ?1 AND kind = ?2 AND name_key = ?3 \
                 AND value = ?4 AND ((1 << source) & ?5) != 0 RETURNING source",
            )?;
            let rows = st.query_map(
                params![
                    list as i64,
                    id.kind as i64,
                    name_key(id),
                    id.value,
                    mask as i64
                ],
                |r| r.get::<_, i64>(0),
            )?;
            let mut removed = 0u8;
            for s in rows {
                if let Some(s) = source_from(s?) {
                    removed |= s.bit();
                }
            }
            if removed == 0 {
                return Ok((0, 0));
            }
            let seq = log(
                tx,
                &Change::Remove {
                    list,
                    id: id.clone(),
                    mask,
                },
            )?;
            Ok((removed, seq))
        })
    }

    /// Removes every entry of `list` with a source in `mask`; returns how many
    /// distinct identifiers lost a source.
    pub fn clear(&self, list: List, mask: u8) -> Result<usize, StoreError> {
        self.write(|tx| clear_in(tx, list, mask))
    }

    /// Sets a switch by its CLI word. Turning `ase_detected_attack` off also
    /// deletes every real-time deny entry, as ASE does.
    pub fn set_switch(&self, name: &str, on: bool) -> Result<u64, StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO switches (name, on_) VALUES (?1, ?2) \
                 ON CONFLICT (name) DO UPDATE SET on_ = excluded.on_",
                params![name, on],
            )?;
            let seq = log(
                tx,
                &Change::Switch {
                    name: name.to_string(),
                    on,
                },
            )?;
            if name == "ase_detected_attack" && !on {
                clear_in(tx, List::Deny, Source::REALTIME)?;
            }
            Ok(seq)
        })
    }

    /// Stores the `enable_blocking` override of an API.
    pub fn set_api_blocking(&self, api: &str, on: bool) -> Result<u64, StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO api_blocking (api, on_) VALUES (?1, ?2) \
                 ON CONFLICT (api) DO UPDATE SET on_ = excluded.on_",
                params![api, on],
            )?;
            log(
                tx,
                &Change::ApiBlocking {
                    api: api.to_string(),
                    on,
                },
            )
        })
    }

    /// Replaces every deny entry of `source` (an ABS list fetched whole).
    pub fn replace_source(&self, source: Source, entries: &[NewEntry]) -> Result<u64, StoreError> {
        let now = now_ms();
        let _big = self.bulk_cache(entries.len());
        self.write(|tx| {
            tx.execute(
                "DELETE FROM entries WHERE list = 0 AND source = ?1",
                params![source as i64],
            )?;
            for e in entries {
                upsert(tx, List::Deny, e, source, now)?;
            }
            log(tx, &Change::ReloadSource(source))
        })
    }

    /// Deletes entries that expired before `now` (they stopped matching at
    /// their expiry already; this only reclaims space). Not logged.
    pub fn purge_expired(&self, now: u64) -> Result<usize, StoreError> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM entries WHERE expiry != 0 AND expiry <= ?1",
                params![ms(now)],
            )
        })
    }

    /// Stored switches (word, on).
    pub fn switches(&self) -> Result<Vec<(String, bool)>, StoreError> {
        self.read(|tx| pairs(tx, "SELECT name, on_ FROM switches ORDER BY name"))
    }

    /// Stored `enable_blocking` overrides (API, on).
    pub fn api_blocking(&self) -> Result<Vec<(String, bool)>, StoreError> {
        self.read(|tx| pairs(tx, "SELECT api, on_ FROM api_blocking ORDER BY api"))
    }

    /// Entries of `list` with a source in `mask`, unexpired at `now`, in the
    /// order they were first added.
    pub fn entries(&self, list: List, mask: u8, now: u64) -> Result<Vec<StoredEntry>, StoreError> {
        self.read(|tx| {
            let mut st = tx.prepare_cached(
                "SELECT list, kind, name, value, source, added, expiry, api, attack_code \
                 FROM entries WHERE list = ?1 AND ((1 << source) & ?2) != 0 \
                 AND (expiry = 0 OR expiry > ?3) ORDER BY id",
            )?;
            let rows = st.query_map(params![list as i64, mask as i64, ms(now)], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, String>(7)?,
                    r.get::<_, String>(8)?,
                ))
            })?;
            let mut v = Vec::new();
            for row in rows {
                let (l, k, name, value, s, added, expiry, api, attack_code) = row?;
                let (Some(list), Some(kind), Some(source)) =
                    (List::from_i64(l), kind_from(k), source_from(s))
                else {
                    continue;
                };
                let Ok(id) = Identifier::new(kind, &name, &value) else {
                    continue;
                };
                v.push(StoredEntry {
                    list,
                    id,
                    source,
                    added: added as u64,
                    expiry: expiry as u64,
                    api,
                    attack_code,
                });
            }
            Ok(v)
        })
    }

    /// Unexpired entries per source.
    pub fn counts(&self, now: u64) -> Result<Counts, StoreError> {
        self.read(|tx| {
            let mut st = tx.prepare_cached(
                "SELECT list, source, count(*) FROM entries \
                 WHERE expiry = 0 OR expiry > ?1 GROUP BY list, source",
            )?;
            let mut c = Counts::default();
            let rows = st.query_map(params![ms(now)], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            for row in rows {
                let (l, s, n) = row?;
                match (List::from_i64(l), source_from(s)) {
                    (Some(List::Deny), Some(s)) => c.deny[s as usize] += n as u64,
                    (Some(List::Allow), _) => c.allow += n as u64,
                    _ => {}
                }
            }
            Ok(c)
        })
    }

    /// A value from the meta table.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.read(|tx| {
            tx.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()
        })
    }

    /// Sets a value in the meta table (not logged: no engine state depends on it).
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [key, value],
            )
            .map(|_| ())
        })
    }

    /// Whether `user` / `password` is the stored credential.
    pub fn verify_password(&self, user: &str, password: &str) -> Result<bool, StoreError> {
        let row: Option<(Vec<u8>, i64, Vec<u8>)> = self.read(|tx| {
            tx.query_row(
                "SELECT salt, rounds, hash FROM users WHERE name = ?1",
                [user],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
        })?;
        Ok(match row {
            Some((salt, rounds, hash)) => {
                let rounds = u32::try_from(rounds).unwrap_or(auth::ROUNDS);
                auth::same(&auth::derive(password, &salt, rounds), &hash)
            }
            None => {
                // Same work for an unknown user, so timing does not tell users apart.
                let _ = auth::derive(password, b"0123456789abcdef", auth::ROUNDS);
                false
            }
        })
    }

    /// Sets the password of `user` (created if absent).
    pub fn set_password(&self, user: &str, password: &str) -> Result<(), StoreError> {
        let h = auth::hash_new(password).map_err(|m| StoreError {
            kind: StoreErrorKind::Other,
            message: m,
        })?;
        self.write(|tx| set_user(tx, user, &h))
    }

    /// The sequence number of the newest change (0 when none was ever made).
    pub fn last_seq(&self) -> Result<u64, StoreError> {
        self.read(last_seq)
    }

    /// Changes after `seq`, at most `limit`, or [`Changes::Behind`] when the
    /// log was trimmed past `seq`.
    pub fn changes_since(&self, seq: u64, limit: usize) -> Result<Changes, StoreError> {
        self.read(|tx| {
            let mut st = tx.prepare_cached(
                "SELECT seq, op, list, kind, name, value, source, num FROM changes \
                 WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = st.query_map(params![ms(seq), limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, i64>(7)?,
                ))
            })?;
            let mut v = Vec::new();
            for row in rows {
                let (s, op, l, k, name, value, src, num) = row?;
                let s = s as u64;
                if v.is_empty() && s != seq + 1 {
                    // Sequence numbers are contiguous (AUTOINCREMENT, and a
                    // rolled-back insert does not consume one): a gap means
                    // the entries in between were trimmed.
                    return Ok(Changes::Behind);
                }
                // A row this build cannot read forces a reload rather than
                // being silently skipped.
                let Some(c) = decode(op, l, k, name, value, src, num) else {
                    return Ok(Changes::Behind);
                };
                v.push((s, c));
            }
            Ok(Changes::Next(v))
        })
    }

    /// Loads every unexpired entry into one new map holding both lists, built
    /// aside in one consistent snapshot, in insertion order.
    pub fn load(&self) -> Result<(IdMap, Loaded), StoreError> {
        let now = now_ms();
        self.read(|tx| {
            let mut loaded = Loaded {
                seq: last_seq(tx)?,
                switches: pairs(tx, "SELECT name, on_ FROM switches ORDER BY name")?,
                api_blocking: pairs(tx, "SELECT api, on_ FROM api_blocking ORDER BY api")?,
                skipped: 0,
            };
            let (nd, na): (i64, i64) = tx.query_row(
                "SELECT count(*) FILTER (WHERE list = 0), count(*) FILTER (WHERE list = 1) \
                 FROM entries",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let mut lists = IdMap::with_capacity((nd + na) as usize);
            let mut st = tx.prepare(
                "SELECT list, kind, name, value, source, expiry FROM entries \
                 WHERE expiry = 0 OR expiry > ?1 ORDER BY id",
            )?;
            let mut rows = st.query(params![ms(now)])?;
            while let Some(r) = rows.next()? {
                let list = List::from_i64(r.get(0)?);
                let kind = kind_from(r.get(1)?);
                let source = source_from(r.get(4)?);
                let expiry: i64 = r.get(5)?;
                let key = match kind {
                    Some(k) => {
                        let name = r.get_ref(2)?.as_str()?;
                        let value = r.get_ref(3)?.as_str()?;
                        row_key(k, name, value)
                    }
                    None => None,
                };
                match (list, key, source) {
                    (Some(List::Deny), Some(key), Some(s)) => {
                        lists.add_unshared(key, s, expiry as u64);
                    }
                    (Some(List::Allow), Some(key), Some(_)) => {
                        lists.add_allow_unshared(key, expiry as u64);
                    }
                    _ => loaded.skipped += 1,
                }
            }
            Ok((lists, loaded))
        })
    }

    /// Deny entries of one source with their expiries (for reloading a source).
    pub fn source_entries(&self, source: Source) -> Result<Vec<(Identifier, u64)>, StoreError> {
        Ok(self
            .entries(List::Deny, source.bit(), now_ms())?
            .into_iter()
            .map(|e| (e.id, e.expiry))
            .collect())
    }
}

/// Restores the default page cache size when dropped.
struct BulkCache<'a>(&'a Store);

impl Drop for BulkCache<'_> {
    fn drop(&mut self) {
        let _ = self.0.conn().pragma_update(None, "cache_size", -2000);
    }
}

/// The attack code recorded for a real-time source (as ABS reports them).
pub fn attack_code(s: Source) -> &'static str {
    match s {
        Source::Decoy => "decoy",
        Source::InvalidProtocol => "protocol",
        Source::InvalidMethod => "method",
        Source::InvalidContentType => "content_type",
        Source::Manual => "manual",
        Source::Abs => "abs",
    }
}

fn prepare_files(dir: &Path, path: &Path) -> Result<(), StoreError> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(StoreError {
                kind: StoreErrorKind::Access,
                message: format!("state_dir {} is not a directory", dir.display()),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| access_error(dir, &format!("cannot create directory: {e}")))?;
        }
        Err(e) => return Err(access_error(dir, &e.to_string())),
    }
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => {
            drop(f);
            adopt_dir_owner(dir, path)?;
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(access_error(path, &e.to_string())),
    }
    Ok(())
}

/// A file root just created in another user's `state_dir` is handed to that
/// user and group, so unprivileged workers can still open it.
fn adopt_dir_owner(dir: &Path, path: &Path) -> Result<(), StoreError> {
    let (Ok(d), Ok(f)) = (fs::metadata(dir), fs::metadata(path)) else {
        return Ok(());
    };
    if f.uid() == 0 && (d.uid() != 0 || d.gid() != f.gid()) {
        std::os::unix::fs::chown(path, Some(d.uid()), Some(d.gid())).map_err(|e| {
            access_error(
                path,
                &format!(
                    "cannot hand the file to the owner of {}: {e}",
                    dir.display()
                ),
            )
        })?;
    }
    Ok(())
}

enum MigrateError {
    Sql(rusqlite::Error),
    TooNew(u32),
    Other(String),
}

impl From<rusqlite::Error> for MigrateError {
    fn from(e: rusqlite::Error) -> Self {
        MigrateError::Sql(e)
    }
}

fn version(c: &Connection) -> rusqlite::Result<u32> {
    let has: bool = c.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
        [],
        |r| r.get(0),
    )?;
    if !has {
        return Ok(0);
    }
    c.query_row(
        "SELECT coalesce(max(version), 0) FROM schema_version",
        [],
        |r| r.get(0),
    )
}

fn migrate(c: &mut Connection) -> Result<(), MigrateError> {
    // Check with a read first: every worker opens the store at start and most
    // must not queue for the write lock just to learn there is nothing to do.
    let v = version(c)?;
    if v > schema::LATEST {
        return Err(MigrateError::TooNew(v));
    }
    if v == schema::LATEST {
        return Ok(());
    }
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let v = version(&tx)?;
    if v > schema::LATEST {
        return Err(MigrateError::TooNew(v));
    }
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied INTEGER NOT NULL)",
    )?;
    for (n, sql) in schema::MIGRATIONS {
        if *n <= v {
            continue;
        }
        tx.execute_batch(sql)?;
        if *n == 1 {
            let h = auth::hash_new(DEFAULT_PASSWORD).map_err(MigrateError::Other)?;
            set_user(&tx, DEFAULT_USER, &h)?;
        }
        tx.execute(
            "INSERT INTO schema_version (version, applied) VALUES (?1, ?2)",
            params![n, ms(now_ms())],
        )?;
    }
    tx.commit()?;
    Ok(())
}

fn set_user(tx: &Transaction<'_>, user: &str, h: &auth::Hashed) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO users (name, salt, rounds, hash) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (name) DO UPDATE SET salt = excluded.salt, rounds = excluded.rounds, \
         hash = excluded.hash",
        params![user, h.salt, h.rounds, h.hash],
    )
    .map(|_| ())
}

fn pairs(tx: &Transaction<'_>, sql: &str) -> rusqlite::Result<Vec<(String, bool)>> {
    let mut st = tx.prepare_cached(sql)?;
    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

fn last_seq(tx: &Transaction<'_>) -> rusqlite::Result<u64> {
    let s: Option<i64> = tx
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'changes'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(s.unwrap_or(0) as u64)
}

fn exists(tx: &Transaction<'_>, list: List, id: &Identifier, now: u64) -> rusqlite::Result<bool> {
    let mut st = tx.prepare_cached(
        "SELECT 1 FROM entries WHERE list = ?1 AND kind = ?2 AND name_key = ?3 AND value = ?4 \
         AND (expiry = 0 OR expiry > ?5) LIMIT 1",
    )?;
    st.exists(params![
        list as i64,
        id.kind as i64,
        name_key(id),
        id.value,
        ms(now)
    ])
}

fn upsert(
    tx: &Transaction<'_>,
    list: List,
    e: &NewEntry,
    source: Source,
    now: u64,
) -> rusqlite::Result<()> {
    let mut st = tx.prepare_cached(
        "INSERT INTO entries (list, kind, name, name_key, value, source, added, expiry, api, attack_code) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
         ON CONFLICT (list, kind, name_key, value, source) DO UPDATE SET \
         expiry = excluded.expiry, api = excluded.api, attack_code = excluded.attack_code",
    )?;
    st.execute(params![
        list as i64,
        e.id.kind as i64,
        e.id.name,
        name_key(&e.id),
        e.id.value,
        source as i64,
        ms(now),
        ms(e.expiry),
        e.api,
        e.attack_code
    ])?;
    Ok(())
}

fn clear_in(tx: &Transaction<'_>, list: List, mask: u8) -> rusqlite::Result<usize> {
    // Count identifiers, not rows: an IP listed by two sources is one entry.
    let n: i64 = tx.query_row(
        "SELECT count(*) FROM (SELECT DISTINCT kind, name_key, value FROM entries \
         WHERE list = ?1 AND ((1 << source) & ?2) != 0)",
        params![list as i64, mask as i64],
        |r| r.get(0),
    )?;
    tx.execute(
        "DELETE FROM entries WHERE list = ?1 AND ((1 << source) & ?2) != 0",
        params![list as i64, mask as i64],
    )?;
    log(tx, &Change::Clear { list, mask })?;
    Ok(n as usize)
}

/// Appends a change and trims the log to [`LOG_KEEP`] entries.
fn log(tx: &Transaction<'_>, c: &Change) -> rusqlite::Result<u64> {
    let (op, list, kind, name, value, source, num): (i64, i64, i64, &str, &str, i64, i64) = match c
    {
        Change::Add {
            list,
            id,
            source,
            expiry,
        } => (
            OP_ADD,
            *list as i64,
            id.kind as i64,
            &id.name,
            &id.value,
            *source as i64,
            ms(*expiry),
        ),
        Change::Remove { list, id, mask } => (
            OP_REMOVE,
            *list as i64,
            id.kind as i64,
            &id.name,
            &id.value,
            *mask as i64,
            0,
        ),
        Change::Clear { list, mask } => (OP_CLEAR, *list as i64, 0, "", "", *mask as i64, 0),
        Change::Switch { name, on } => (OP_SWITCH, 0, 0, name, "", 0, *on as i64),
        Change::ApiBlocking { api, on } => (OP_API, 0, 0, api, "", 0, *on as i64),
        Change::ReloadSource(s) => (OP_RELOAD_SOURCE, 0, 0, "", "", *s as i64, 0),
        Change::Reload => (OP_RELOAD, 0, 0, "", "", 0, 0),
    };
    let mut st = tx.prepare_cached(
        "INSERT INTO changes (op, list, kind, name, value, source, num, at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    st.execute(params![
        op,
        list,
        kind,
        name,
        value,
        source,
        num,
        ms(now_ms())
    ])?;
    let seq = tx.last_insert_rowid();
    let mut trim = tx.prepare_cached("DELETE FROM changes WHERE seq <= ?1")?;
    trim.execute([seq - LOG_KEEP])?;
    Ok(seq as u64)
}

fn decode(
    op: i64,
    l: i64,
    k: i64,
    name: String,
    value: String,
    src: i64,
    num: i64,
) -> Option<Change> {
    let id = || kind_from(k).and_then(|k| Identifier::new(k, &name, &value).ok());
    Some(match op {
        OP_ADD => Change::Add {
            list: List::from_i64(l)?,
            id: id()?,
            source: source_from(src)?,
            expiry: num as u64,
        },
        OP_REMOVE => Change::Remove {
            list: List::from_i64(l)?,
            id: id()?,
            mask: src as u8,
        },
        OP_CLEAR => Change::Clear {
            list: List::from_i64(l)?,
            mask: src as u8,
        },
        OP_SWITCH => Change::Switch { name, on: num != 0 },
        OP_API => Change::ApiBlocking {
            api: name,
            on: num != 0,
        },
        OP_RELOAD_SOURCE => Change::ReloadSource(source_from(src)?),
        OP_RELOAD => Change::Reload,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Identifier {
        Identifier::new(IdKind::Ip, "", s).unwrap()
    }

    #[test]
    fn log_replays_what_tables_hold() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let (new, seq1) = s
            .add(List::Deny, &NewEntry::new(ip("1.1.1.1"), 0), Source::Manual)
            .unwrap();
        assert!(new);
        let (new, _) = s
            .add(List::Deny, &NewEntry::new(ip("1.1.1.1"), 0), Source::Decoy)
            .unwrap();
        assert!(!new, "already listed under another source");
        let key = Identifier::new(IdKind::ApiKey, "X-API-KEY", "k").unwrap();
        s.add(List::Allow, &NewEntry::new(key, 0), Source::Manual)
            .unwrap();
        let lower = Identifier::new(IdKind::ApiKey, "x-api-key", "k").unwrap();
        assert_eq!(
            s.remove(List::Allow, &lower, Source::ANY).unwrap().0,
            1,
            "api_key names ignore case"
        );
        assert_eq!(s.remove(List::Allow, &lower, Source::ANY).unwrap().0, 0);
        let Changes::Next(c) = s.changes_since(seq1 - 1, 100).unwrap() else {
            panic!("behind")
        };
        assert_eq!(c.len(), 4);
        assert!(matches!(
            &c[3].1,
            Change::Remove {
                list: List::Allow,
                ..
            }
        ));
        assert_eq!(s.clear(List::Deny, Source::ANY).unwrap(), 1);
        assert_eq!(s.counts(0).unwrap(), Counts::default());
    }

    /// A row no `Identifier` could be made from (written by another tool,
    /// or by hand) is skipped on load, not listed: the request path does
    /// not probe values longer than `MAX_FIELD`, so such an entry could
    /// never match.
    #[test]
    fn load_skips_rows_an_identifier_would_refuse() {
        use crate::policy::ident::MAX_FIELD;
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let longest = "t".repeat(MAX_FIELD);
        let tok = Identifier::new(IdKind::Token, "", &longest).unwrap();
        s.add(List::Deny, &NewEntry::new(tok, 0), Source::Manual)
            .unwrap();
        let too_long = format!("{longest}t");
        s.write(|tx| {
            tx.execute(
                "INSERT INTO entries (list, kind, name, name_key, value, source, added, expiry) \
                 SELECT list, kind, name, name_key, ?1, source, added, expiry FROM entries",
                params![too_long],
            )?;
            tx.execute(
                "INSERT INTO entries (list, kind, name, name_key, value, source, added, expiry) \
                 SELECT list, kind, name, name_key, '', source, added, expiry FROM entries LIMIT 1",
                [],
            )
        })
        .unwrap();
        let (lists, loaded) = s.load().unwrap();
        assert_eq!(loaded.skipped, 2, "the too long and the empty value");
        assert_eq!(lists.deny_len(), 1);
        assert!(lists.get(&KeyRef::token(longest.as_bytes())).is_some());
    }

    #[test]
    fn trimmed_log_says_behind() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let v: Vec<NewEntry> = (0..10)
            .map(|i| NewEntry::new(ip(&format!("10.0.0.{i}")), 0))
            .collect();
        s.add_many(List::Deny, &v, Source::Manual, &mut |_| {})
            .unwrap();
        s.write(|tx| tx.execute("DELETE FROM changes WHERE seq <= 5", []))
            .unwrap();
        assert!(matches!(s.changes_since(2, 10).unwrap(), Changes::Behind));
        assert!(matches!(s.changes_since(5, 10).unwrap(), Changes::Next(v) if v.len() == 5));
        assert_eq!(s.last_seq().unwrap(), 10);
    }

    #[test]
    fn credential_default_and_update() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        assert!(s.verify_password("admin", "admin").unwrap());
        assert!(!s.verify_password("admin", "x").unwrap());
        assert!(!s.verify_password("root", "admin").unwrap());
        s.set_password("admin", "n3w").unwrap();
        let s2 = Store::open(d.path()).unwrap();
        assert!(s2.verify_password("admin", "n3w").unwrap());
        assert!(!s2.verify_password("admin", "admin").unwrap());
    }

    #[test]
    fn files_are_private_and_newer_schema_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("state");
        let s = Store::open(&dir).unwrap();
        s.set_meta("k", "v").unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        for f in ["ase.db", "ase.db-wal", "ase.db-shm"] {
            let m = fs::metadata(dir.join(f)).unwrap();
            assert_eq!(m.mode() & 0o777, 0o600, "{f}");
        }
        s.write(|tx| tx.execute("INSERT INTO schema_version VALUES (99, 0)", []))
            .unwrap();
        drop(s);
        let e = Store::open(&dir).unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::TooNew);
        assert!(e.message.contains("schema version 99"), "{e}");
    }

    #[test]
    fn corrupt_file_is_named() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join(STORE_FILE), vec![0x5a; 8192]).unwrap();
        let e = Store::open(d.path()).unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::Corrupt);
        assert!(
            e.message.contains(STORE_FILE) && e.message.contains("corrupt"),
            "{e}"
        );
    }

    #[test]
    fn detections_are_dropped_once_switched_off() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let b = vec![(vec![ip("5.5.5.5")], Source::Decoy)];
        assert_eq!(s.record_detections(&b).unwrap(), 1);
        s.set_switch("ase_detected_attack", false).unwrap();
        assert_eq!(
            s.counts(0).unwrap().deny[Source::Decoy as usize],
            0,
            "off deletes them"
        );
        assert_eq!(s.record_detections(&b).unwrap(), 0);
        assert_eq!(s.counts(0).unwrap().deny[Source::Decoy as usize], 0);
    }
}
