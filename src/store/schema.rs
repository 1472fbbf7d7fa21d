//! The store's schema and its forward migrations.
//!
//! Each migration runs once, in order, inside one write transaction that also
//! records its number in `schema_version`; a store written by a newer build
//! (a higher number than [`LATEST`]) is refused rather than misread.

/// Migrations, by version number (1-based, contiguous).
pub(crate) const MIGRATIONS: &[(u32, &str)] = &[(1, V1)];

/// The schema version this build writes.
pub const LATEST: u32 = 1;

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
