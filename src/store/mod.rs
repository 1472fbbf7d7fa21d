//! The durable state shared by every process on a host: one SQLite database
//! (`ase.db`) in `state_dir` (docs/design.md, "State store").
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
//! [`BUSY_TIMEOUT`](crate::store::BUSY_TIMEOUT) for it, so two writers never fail each other; readers
//! never wait in WAL mode.
//!
//! Where to look:
//! - [`open`](crate::store::Store::open): finding or creating the file, its health checks;
//!   `files`: the modes and owners of everything created in `state_dir`;
//! - `entries`: the list rows and their queries; `bulk`: imports, whole-source
//!   replacement and the full load;
//! - `log`: the change log; `settings`: switches, `enable_blocking` overrides
//!   and the meta table; `auth`: the admin credential;
//! - `schema`: the tables and their migrations; `error`: what a failure means.

mod auth;
mod bulk;
mod entries;
mod error;
pub mod files;
mod log;
mod open;
mod schema;
mod settings;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, Transaction, TransactionBehavior};

pub use auth::DEFAULT_USER;
pub use bulk::{LOG_EACH_MAX, Loaded};
pub use entries::{Counts, List, NewEntry, StoredEntry, attack_code};
pub use error::{StoreError, StoreErrorKind, who};
pub use log::{Change, Changes, LOG_KEEP};
pub use schema::LATEST as SCHEMA_VERSION;
pub use settings::{META_ABS_DIGEST, META_ABS_LAST_SYNC};

use error::sql_error;

/// The database file name inside `state_dir`.
pub const STORE_FILE: &str = "ase.db";

/// How long a writer waits for another process's write transaction.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// One connection to the store. Methods take `&self`; a mutex serialises
/// this connection's use between threads. Use one `Store` per thread that
/// works independently (see [`Store::reopen`]).
pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// Whether this connection checked the file before its first write.
    verified: AtomicBool,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Skips the integrity check this connection would make before its
    /// first write: for an event loop's connection, whose first write (a
    /// detection) must not scan the whole database. The process's other
    /// connection checks it.
    pub fn skip_first_write_check(&self) {
        self.verified.store(true, Ordering::Relaxed);
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the connection leaves SQLite consistent (an open
        // transaction is rolled back when its guard drops), so poisoning is ignored.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        sql_error(&self.path, e)
    }

    /// Runs `f` in one write transaction (taken up front, so it waits for
    /// other writers instead of failing) and commits. The first write of a
    /// connection checks the whole file first (see [`Store::verify`]).
    fn write<R>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<R>,
    ) -> Result<R, StoreError> {
        if !self.verified.load(Ordering::Relaxed) {
            self.verify()?;
            self.verified.store(true, Ordering::Relaxed);
        }
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
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn now_ms() -> u64 {
    crate::clock::now_ms()
}
