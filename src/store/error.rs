//! What went wrong with the store, in words that name the file and say what
//! to do.
//!
//! SQLite reports a full disk or a read-only file system in several ways
//! (`SQLITE_FULL`, an I/O error while growing the `-shm` file, `SQLITE_READONLY`
//! after it fell back to a read-only open, `SQLITE_CANTOPEN`), and its own
//! text ("disk I/O error", "attempt to write a readonly database") points
//! nowhere useful. So after a failure the file system itself is asked: is it
//! mounted read-only, is it out of space. Only when neither holds is an
//! open or write failure blamed on ownership and permissions.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use rusqlite::ErrorCode;

/// What went wrong with the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// The file or directory cannot be opened or written by this user.
    Access,
    /// The file is not a database, is damaged, or was emptied.
    Corrupt,
    /// Written by a newer build with a schema this one does not know.
    TooNew,
    /// The file system holding the store is full.
    Full,
    /// The store is on a file system mounted read-only.
    ReadOnlyFs,
    /// Any other failure (I/O error, ...).
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

impl StoreError {
    pub(crate) fn new(kind: StoreErrorKind, message: String) -> StoreError {
        StoreError { kind, message }
    }
}

fn user_name(uid: u32) -> Option<String> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id: u32 = f.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_string())
    })
}

/// A user for a message: `uid 33 (www-data)`, or `uid 33` when
/// `/etc/passwd` does not name it.
pub fn who(uid: u32) -> String {
    match user_name(uid) {
        Some(n) => format!("uid {uid} ({n})"),
        None => format!("uid {uid}"),
    }
}

/// The effective uid of this process, without `unsafe`: `/proc/self` belongs to it.
pub(crate) fn my_uid() -> Option<u32> {
    fs::metadata("/proc/self").ok().map(|m| m.uid())
}

fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Free space below which a failed write is put down to a full file system:
/// SQLite needs a few pages (16 KiB each) of WAL and `-shm` for any commit.
const NEARLY_FULL: u64 = 256 * 1024;

/// Distinct names for probes made at once by threads of one process.
static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The cause the file system gives for a failure on `path`, if it is one of
/// the two SQLite words badly: mounted read-only, or full.
fn file_system_cause(path: &Path) -> Option<StoreErrorKind> {
    // The question goes to the directory, by creating a file of our own in
    // it: EROFS comes before any permission check, so this holds for root
    // too. Never the database file itself: closing any descriptor of it
    // would drop the POSIX locks SQLite holds on it in this process.
    let dir = if path.is_dir() { path } else { dir_of(path) };
    let p = dir.join(format!(
        ".ase-probe-{}-{}",
        std::process::id(),
        PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let opened = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&p)
        .map(drop);
    if opened.is_ok() {
        let _ = fs::remove_file(&p);
    }
    match opened {
        Err(e) if e.kind() == io::ErrorKind::ReadOnlyFilesystem => {
            return Some(StoreErrorKind::ReadOnlyFs);
        }
        Err(e) if e.kind() == io::ErrorKind::StorageFull => return Some(StoreErrorKind::Full),
        _ => {}
    }
    match fs4::available_space(dir) {
        Ok(n) if n < NEARLY_FULL => Some(StoreErrorKind::Full),
        _ => None,
    }
}

fn read_only_fs(path: &Path) -> StoreError {
    let dir = dir_of(path);
    StoreError::new(
        StoreErrorKind::ReadOnlyFs,
        format!(
            "state store {}: {} is on a read-only file system; ase writes its state there: \
             remount it read-write or set state_dir to a writable directory",
            path.display(),
            dir.display()
        ),
    )
}

fn full(path: &Path) -> StoreError {
    let dir = dir_of(path);
    StoreError::new(
        StoreErrorKind::Full,
        format!(
            "state store {}: the file system holding {} is full; free space there \
             (nothing was written)",
            path.display(),
            dir.display()
        ),
    )
}

/// A file or directory of the state that cannot be opened or created.
pub(crate) fn access_error(path: &Path, detail: &str) -> StoreError {
    match file_system_cause(path) {
        Some(StoreErrorKind::ReadOnlyFs) => return read_only_fs(path),
        Some(StoreErrorKind::Full) => return full(path),
        _ => {}
    }
    // Name the owner of whatever exists (the file, else its directory) and
    // this process's user, so the operator knows whose access to fix.
    let parent = dir_of(path);
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
    StoreError::new(StoreErrorKind::Access, m)
}

/// Maps a SQLite failure on the store at `path` to its cause.
pub(crate) fn sql_error(path: &Path, e: rusqlite::Error) -> StoreError {
    classify(path, e, file_system_cause)
}

/// [`sql_error`] with the file system question given, so the mapping can be
/// tested for causes a test cannot always produce.
fn classify(
    path: &Path,
    e: rusqlite::Error,
    fs_cause: impl FnOnce(&Path) -> Option<StoreErrorKind>,
) -> StoreError {
    let code = e.sqlite_error_code();
    match code {
        Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => {
            return StoreError::new(
                StoreErrorKind::Corrupt,
                format!(
                    "state store {} is corrupt ({e}); move it aside to start empty, \
                     or restore it from a backup",
                    path.display()
                ),
            );
        }
        Some(ErrorCode::DiskFull) => return full(path),
        _ => {}
    }
    let io_or_access = matches!(
        code,
        Some(ErrorCode::SystemIoFailure)
            | Some(ErrorCode::CannotOpen)
            | Some(ErrorCode::PermissionDenied)
            | Some(ErrorCode::ReadOnly)
    );
    if io_or_access {
        match fs_cause(path) {
            Some(StoreErrorKind::ReadOnlyFs) => return read_only_fs(path),
            Some(StoreErrorKind::Full) => return full(path),
            _ => {}
        }
    }
    match code {
        Some(ErrorCode::CannotOpen)
        | Some(ErrorCode::PermissionDenied)
        | Some(ErrorCode::ReadOnly) => access_error(path, &e.to_string()),
        _ => StoreError::new(
            StoreErrorKind::Other,
            format!("state store {}: {e}", path.display()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::ffi;

    fn failure(extended: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(ffi::Error::new(extended), None)
    }

    const DB: &str = "/var/lib/ase/ase.db";

    #[test]
    fn full_disk_is_named_whatever_sqlite_calls_it() {
        let p = Path::new(DB);
        for code in [
            ffi::SQLITE_FULL,
            ffi::SQLITE_IOERR_SHMSIZE,
            ffi::SQLITE_IOERR_WRITE,
        ] {
            let e = classify(p, failure(code), |_| Some(StoreErrorKind::Full));
            assert_eq!(e.kind, StoreErrorKind::Full, "{code}");
            assert!(
                e.message
                    .contains("the file system holding /var/lib/ase is full"),
                "{e}"
            );
        }
        // SQLITE_FULL needs no confirmation from the file system.
        let e = classify(p, failure(ffi::SQLITE_FULL), |_| None);
        assert_eq!(e.kind, StoreErrorKind::Full);
    }

    #[test]
    fn read_only_file_system_is_not_blamed_on_ownership() {
        let p = Path::new(DB);
        for code in [
            ffi::SQLITE_READONLY,
            ffi::SQLITE_READONLY_CANTINIT,
            ffi::SQLITE_CANTOPEN,
            ffi::SQLITE_IOERR_SHMOPEN,
        ] {
            let e = classify(p, failure(code), |_| Some(StoreErrorKind::ReadOnlyFs));
            assert_eq!(e.kind, StoreErrorKind::ReadOnlyFs, "{code}");
            assert!(
                e.message
                    .contains("/var/lib/ase is on a read-only file system")
                    && !e.message.contains("owned by"),
                "{e}"
            );
        }
    }

    #[test]
    fn other_io_errors_stay_io_errors() {
        let e = classify(Path::new(DB), failure(ffi::SQLITE_IOERR_READ), |_| None);
        assert_eq!(e.kind, StoreErrorKind::Other);
        assert!(e.message.contains(DB), "{e}");
        let e = classify(Path::new(DB), failure(ffi::SQLITE_CORRUPT), |_| {
            Some(StoreErrorKind::Full)
        });
        assert_eq!(
            e.kind,
            StoreErrorKind::Corrupt,
            "corruption is said as such"
        );
    }
}
