//! Finding or creating the database file, and the checks made before it is
//! trusted.
//!
//! A store is created whole under a temporary name and linked into place, so
//! `ase.db` either does not exist or holds a complete schema. That tells the
//! two apart that SQLite cannot: a file that does not exist is created, while
//! an existing file with no schema (most often 0 bytes, emptied by a `>` or a
//! full disk) lost its contents and is refused rather than silently started
//! afresh. It also means processes starting together never see another's
//! half-created store: whoever links first wins and the others open it.
//!
//! SQLite reads only the pages a statement needs, so a damaged file can
//! accept writes to its healthy pages while the full load every engine makes
//! fails. A change written there would be reported done yet enforced
//! nowhere, so each connection checks the whole file (`PRAGMA quick_check`)
//! before its first write. It is not repeated on later writes: damage comes
//! from outside (a disk, an editor, a copy) and a running connection's own
//! writes go through SQLite's checks.

use std::fs;
use std::io;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::error::{StoreError, StoreErrorKind, access_error, sql_error};
use super::{BUSY_TIMEOUT, STORE_FILE, Store, files, schema};

impl Store {
    /// Opens the store in `state_dir`, creating it (the directory 0700, the
    /// file 0600) only if the file does not exist; the schema is migrated
    /// forward. An existing file that is empty, damaged or from a newer build
    /// is an error naming it.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        Store::open_within(state_dir, BUSY_TIMEOUT)
    }

    /// [`Store::open`] that waits at most `wait` for another connection's
    /// lock while opening (an event loop passes zero: a busy store is an
    /// error to try again later, not a stalled loop). The connection keeps
    /// `wait` as its busy timeout.
    pub fn open_within(state_dir: &Path, wait: Duration) -> Result<Store, StoreError> {
        let path = state_dir.join(STORE_FILE);
        files::create_state_dir(state_dir).map_err(|e| dir_error(state_dir, e))?;
        // The file can vanish between creating it and opening it (an operator
        // moving a damaged store aside): try again, a few times.
        let mut tries = 0;
        loop {
            if !path.exists() {
                create(state_dir, &path)?;
            }
            match Store::connect(&path, wait) {
                Err(_) if tries < 3 && !path.exists() => tries += 1,
                r => return r,
            }
        }
    }

    /// Another connection to the same file (for another thread). The file
    /// must still exist: a store moved aside is not created again here.
    pub fn reopen(&self) -> Result<Store, StoreError> {
        Store::connect(&self.path, BUSY_TIMEOUT)
    }

    /// Opens the existing file at `path` and checks it holds a store.
    fn connect(path: &Path, wait: Duration) -> Result<Store, StoreError> {
        // No SQLITE_OPEN_CREATE: a missing file is an error, never a new
        // empty database under the store's name.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| sql_error(path, e))?;
        let s = Store {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            verified: AtomicBool::new(false),
        };
        s.setup(false, wait)?;
        Ok(s)
    }

    fn setup(&self, new: bool, wait: Duration) -> Result<(), StoreError> {
        let mut c = self.conn();
        c.busy_timeout(wait).map_err(|e| self.err(e))?;
        if !new && schema::version(&c).map_err(|e| self.err(e))? == 0 {
            return Err(emptied(&self.path));
        }
        if new {
            // 16 KiB pages: a bulk import writes a quarter as many pages (each
            // page is one write to the WAL and one to the database). Only
            // takes effect before the first table is created.
            c.pragma_update(None, "page_size", 16384)
                .map_err(|e| self.err(e))?;
        }
        // Switching a file to WAL takes its lock without SQLite's busy
        // handler, so while another process opens it at that moment it fails
        // at once with "database is locked". Retried for as long as the busy
        // timeout would have waited.
        let start = Instant::now();
        let mode: String = loop {
            match c.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)) {
                Err(e)
                    if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy)
                        && start.elapsed() < wait =>
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                r => break r.map_err(|e| self.err(e))?,
            }
        };
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::new(
                StoreErrorKind::Other,
                format!(
                    "state store {}: cannot use WAL mode (got {mode})",
                    self.path.display()
                ),
            ));
        }
        c.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| self.err(e))?;
        schema::migrate(&mut c).map_err(|e| match e {
            schema::MigrateError::Sql(e) => self.err(e),
            schema::MigrateError::TooNew(v) => StoreError::new(
                StoreErrorKind::TooNew,
                format!(
                    "state store {} has schema version {v}, newer than this build supports \
                     ({}): upgrade ase",
                    self.path.display(),
                    schema::LATEST
                ),
            ),
        })
    }

    /// Checks every page of the file, so a damaged store refuses writes
    /// instead of accepting changes no engine can load.
    pub(super) fn verify(&self) -> Result<(), StoreError> {
        let c = self.conn();
        let first: String = c
            .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if first == "ok" {
            return Ok(());
        }
        Err(StoreError::new(
            StoreErrorKind::Corrupt,
            format!(
                "state store {} is corrupt ({first}); nothing was written: move it aside to \
                 start empty, or restore it from a backup",
                self.path.display()
            ),
        ))
    }
}

/// Creates a complete store at `path`, built under a temporary name in the
/// same directory and linked into place. Another process linking first is
/// not an error: its store is as good.
fn create(dir: &Path, path: &Path) -> Result<(), StoreError> {
    remove_abandoned(dir);
    // Threads of one process may create at once (the watcher and the
    // detection writer both reopen a store moved aside): the counter keeps
    // their names apart, so neither removes the other's file.
    let tmp = dir.join(format!(
        "{TMP_PREFIX}{}-{}-{}",
        std::process::id(),
        crate::clock::now_ms(),
        CREATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let built = build(&tmp);
    let linked = built.and_then(|()| match fs::hard_link(&tmp, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        // File systems without hard links: a rename is as atomic but
        // replaces, so it is only done while nothing is there yet.
        Err(_) if !path.exists() => {
            fs::rename(&tmp, path).map_err(|e| access_error(path, &e.to_string()))
        }
        Err(e) => Err(access_error(path, &e.to_string())),
    });
    let _ = fs::remove_file(&tmp);
    linked
}

/// Temporary stores are named this, then the pid, the time and a count.
const TMP_PREFIX: &str = ".ase.db.new-";

/// Stores this process began creating.
static CREATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Removes temporary stores (and their `-wal`/`-shm`) that a process killed
/// while creating one left behind. Creating takes well under a second; one
/// older than the busy timeout has no creator left.
fn remove_abandoned(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > BUSY_TIMEOUT);
        if old && e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            let _ = fs::remove_file(e.path());
        }
    }
}

fn build(tmp: &Path) -> Result<(), StoreError> {
    drop(files::create_new_private(tmp).map_err(|e| access_error(tmp, &e.to_string()))?);
    let conn = Connection::open_with_flags(
        tmp,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sql_error(tmp, e))?;
    let s = Store {
        path: tmp.to_path_buf(),
        conn: Mutex::new(conn),
        verified: AtomicBool::new(true),
    };
    s.setup(true, BUSY_TIMEOUT)?;
    // Closing the only connection checkpoints the WAL into the file and
    // removes the `-wal` and `-shm` files, so the file linked into place is
    // complete on its own.
    let conn = s.conn.into_inner().unwrap_or_else(|e| e.into_inner());
    conn.close().map_err(|(_, e)| sql_error(tmp, e))
}

fn emptied(path: &Path) -> StoreError {
    let what = match fs::metadata(path) {
        Ok(m) if m.len() == 0 => "is empty (0 bytes): it was emptied or truncated",
        _ => "holds no ase tables: it is not a store or was emptied",
    };
    StoreError::new(
        StoreErrorKind::Corrupt,
        format!(
            "state store {} {what}; restore it from a backup, or move it aside to start \
             with an empty store",
            path.display()
        ),
    )
}

fn dir_error(dir: &Path, e: io::Error) -> StoreError {
    if e.kind() == io::ErrorKind::Other {
        StoreError::new(StoreErrorKind::Access, e.to_string())
    } else {
        access_error(dir, &format!("cannot create directory: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::policy::ident::{IdKind, Identifier};
    use crate::policy::lists::Source;
    use crate::store::{List, NewEntry};

    fn ip(s: &str) -> Identifier {
        Identifier::new(IdKind::Ip, "", s).unwrap()
    }

    #[test]
    fn files_are_private_and_newer_schema_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("state");
        let s = Store::open(&dir).unwrap();
        s.set_meta("k", "v").unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        let mut names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["ase.db", "ase.db-shm", "ase.db-wal"],
            "no temporary left"
        );
        for f in names {
            let m = fs::metadata(dir.join(&f)).unwrap();
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

    /// A store that lost its contents is refused, not started afresh: the
    /// entries it held would be gone without a word.
    #[test]
    fn an_emptied_file_is_refused_and_left_as_it_is() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join(STORE_FILE);
        let s = Store::open(d.path()).unwrap();
        s.add(List::Deny, &NewEntry::new(ip("1.1.1.1"), 0), Source::Manual)
            .unwrap();
        drop(s);
        fs::write(&path, b"").unwrap();
        let e = Store::open(d.path()).unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::Corrupt);
        assert!(
            e.message.contains(path.to_str().unwrap())
                && e.message.contains("empty (0 bytes)")
                && e.message.contains("move it aside"),
            "{e}"
        );
        assert_eq!(fs::metadata(&path).unwrap().len(), 0, "not initialised");
        // Moved aside, a new store is created in its place.
        fs::rename(&path, path.with_extension("bad")).unwrap();
        let s = Store::open(d.path()).unwrap();
        assert_eq!(s.counts(0).unwrap().deny[Source::Manual as usize], 0);
    }

    #[test]
    fn a_creation_killed_midway_is_cleaned_up_by_the_next() {
        let d = tempfile::tempdir().unwrap();
        let left = d.path().join(format!("{TMP_PREFIX}1-1"));
        let recent = d.path().join(format!("{TMP_PREFIX}2-2"));
        fs::write(&left, b"").unwrap();
        fs::write(&recent, b"").unwrap();
        let f = fs::File::options().write(true).open(&left).unwrap();
        f.set_modified(std::time::SystemTime::now() - 2 * BUSY_TIMEOUT)
            .unwrap();
        Store::open(d.path()).unwrap();
        assert!(!left.exists(), "abandoned");
        assert!(recent.exists(), "maybe still being created");
    }

    #[test]
    fn a_store_moved_aside_is_not_created_again_by_reopen() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        fs::rename(s.path(), d.path().join("moved")).unwrap();
        assert!(s.reopen().is_err());
        assert!(!s.path().exists());
    }

    /// SQLite reads only the pages a statement needs, so without the check
    /// a damaged file takes this write although no engine can load it.
    #[test]
    fn a_damaged_store_refuses_writes() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join(STORE_FILE);
        let s = Store::open(d.path()).unwrap();
        let v: Vec<NewEntry> = (0..20_000u32)
            .map(|i| {
                NewEntry::new(
                    ip(&format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255)),
                    0,
                )
            })
            .collect();
        s.add_many(List::Deny, &v, Source::Manual, &mut |_| {})
            .unwrap();
        drop(s);
        // Damage pages in the middle of the file (entries and their index),
        // leaving the header, the schema and the credential readable.
        let len = fs::metadata(&path).unwrap().len();
        let mut bytes = fs::read(&path).unwrap();
        let mid = (len / 2) as usize;
        bytes[mid..mid + 40_000].fill(0x5a);
        fs::write(&path, bytes).unwrap();

        let s = Store::open(d.path()).unwrap();
        assert!(s.verify_password("admin", "admin").unwrap());
        assert!(s.load().is_err(), "an engine cannot load it");
        let e = s
            .add(List::Deny, &NewEntry::new(ip("9.9.9.9"), 0), Source::Manual)
            .unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::Corrupt);
        assert!(
            e.message.contains(path.to_str().unwrap()) && e.message.contains("move it aside"),
            "{e}"
        );
        let e = s.set_switch("firewall", false).unwrap_err();
        assert_eq!(
            e.kind,
            StoreErrorKind::Corrupt,
            "every write, not only the first"
        );
    }
}
