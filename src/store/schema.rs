//! The store's schema and its forward migrations.
//!
//! Each migration runs once, in order, inside one write transaction that also
//! records its number in `schema_version`; a store written by a newer build
//! (a higher number than [`LATEST`]) is refused rather than misread.

use rusqlite::{Connection, TransactionBehavior, params};

use super::{auth, ms, now_ms};

/// Migrations, by version number (1-based, contiguous).
pub(crate) const MIGRATIONS: &[(u32, &str)] = &[(1, V1)];

/// The schema version this build writes.
pub const LATEST: u32 = 1;

pub(crate) enum MigrateError {
    Sql(rusqlite::Error),
    TooNew(u32),
}

impl From<rusqlite::Error> for MigrateError {
    fn from(e: rusqlite::Error) -> Self {
        MigrateError::Sql(e)
    }
}

/// The schema version of the open database; 0 when it has no tables yet.
pub(crate) fn version(c: &Connection) -> rusqlite::Result<u32> {
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

/// Applies the migrations the database has not had yet.
pub(crate) fn migrate(c: &mut Connection) -> Result<(), MigrateError> {
    // Check with a read first: every worker opens the store at start and most
    // must not queue for the write lock just to learn there is nothing to do.
    let v = version(c)?;
    if v > LATEST {
        return Err(MigrateError::TooNew(v));
    }
    if v == LATEST {
        return Ok(());
    }
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let v = version(&tx)?;
    if v > LATEST {
        return Err(MigrateError::TooNew(v));
    }
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied INTEGER NOT NULL)",
    )?;
    for (n, sql) in MIGRATIONS {
        if *n <= v {
            continue;
        }
        tx.execute_batch(sql)?;
        if *n == 1 {
            // A new store accepts the credential ASE ships with.
            auth::set_user(&tx, auth::DEFAULT_USER, &auth::default_hash())?;
        }
        tx.execute(
            "INSERT INTO schema_version (version, applied) VALUES (?1, ?2)",
            params![n, ms(now_ms())],
        )?;
    }
    tx.commit()?;
    Ok(())
}

const V1: &str = "
CREATE TABLE entries (
    id          INTEGER PRIMARY KEY,
    list        INTEGER NOT NULL,          -- 0 deny, 1 allow
    kind        INTEGER NOT NULL,          -- IdKind
    name        TEXT    NOT NULL,          -- as given
    name_key    TEXT    NOT NULL,          -- name, ASCII-lowercased for api_key
    value       TEXT    NOT NULL,          -- canonical for ip
    source      INTEGER NOT NULL,          -- Source (allow entries: manual)
    added       INTEGER NOT NULL,          -- Unix ms
    expiry      INTEGER NOT NULL DEFAULT 0,-- Unix ms, 0 = never
    api         TEXT    NOT NULL DEFAULT '',
    attack_code TEXT    NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX entries_key ON entries (list, kind, name_key, value, source);
CREATE INDEX entries_source ON entries (list, source);
CREATE INDEX entries_expiry ON entries (expiry) WHERE expiry != 0;

CREATE TABLE switches (
    name TEXT PRIMARY KEY,
    on_  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE api_blocking (
    api TEXT PRIMARY KEY,
    on_ INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE users (
    name   TEXT PRIMARY KEY,
    salt   BLOB NOT NULL,
    rounds INTEGER NOT NULL,
    hash   BLOB NOT NULL
) WITHOUT ROWID;

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- AUTOINCREMENT: sequence numbers are never reused, even after trimming, so a
-- watcher can tell that it fell behind the kept log.
CREATE TABLE changes (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    op     INTEGER NOT NULL,
    list   INTEGER NOT NULL DEFAULT 0,
    kind   INTEGER NOT NULL DEFAULT 0,
    name   TEXT    NOT NULL DEFAULT '',
    value  TEXT    NOT NULL DEFAULT '',
    source INTEGER NOT NULL DEFAULT 0,     -- a source, or a mask for remove/clear
    num    INTEGER NOT NULL DEFAULT 0,     -- expiry, or on/off
    at     INTEGER NOT NULL
);
";
