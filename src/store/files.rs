//! The files and directories the library creates in `state_dir`, with their
//! modes and owners.
//!
//! Modes are set here, not left to the umask: nginx runs with umask 0, under
//! which a default-mode file is writable by every local user. The directory
//! is 0700, every file 0600; SQLite gives its `-wal` and `-shm` files the
//! mode of the database file, so they follow.
//!
//! Owners: nginx workers run unprivileged while operators run `ase-cli` as
//! root. A file root creates in another user's `state_dir` is handed to that
//! user and group (SQLite does the same for its `-wal`/`-shm` files when
//! running as root), so both keep working.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::error::{my_uid, who};

/// Mode of the files the library creates.
pub const FILE_MODE: u32 = 0o600;
/// Mode of `state_dir` when the library creates it.
pub const DIR_MODE: u32 = 0o700;

/// Creates `dir` (and missing parents) with mode 0700 unless it exists.
/// An existing directory keeps its mode: the operator chose it.
pub fn create_state_dir(dir: &Path) -> io::Result<()> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(io::Error::other(format!(
            "state_dir {} is not a directory",
            dir.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir),
        Err(e) => Err(e),
    }
}

/// Creates `path` with mode 0600, failing if it exists, and hands it to the
/// owner of its directory when root created it.
pub fn create_new_private(path: &Path) -> io::Result<File> {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)?;
    adopt_dir_owner(path)?;
    Ok(f)
}

/// Opens `path` for reading and writing, creating it 0600 if missing. An
/// existing file is checked before it is trusted: it must belong to this
/// user or to the owner of its directory, and other users must have no access
/// (a lock file anyone can open is a lock anyone can hold). Too open a mode is
/// narrowed to 0600; a foreign owner is an error naming the file.
pub fn open_private(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        create_state_dir(dir)?;
    }
    match create_new_private(path) {
        Ok(f) => return Ok(f),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let f = fs::OpenOptions::new().read(true).write(true).open(path)?;
    check_private(path, &f)?;
    Ok(f)
}

fn check_private(path: &Path, f: &File) -> io::Result<()> {
    let m = f.metadata()?;
    let dir_uid = path
        .parent()
        .and_then(|d| fs::metadata(d).ok())
        .map(|d| d.uid());
    if Some(m.uid()) != my_uid() && Some(m.uid()) != dir_uid {
        return Err(io::Error::other(format!(
            "{} is owned by {}, neither this process's user nor the owner of its \
             directory: remove it (ase creates it again)",
            path.display(),
            who(m.uid())
        )));
    }
    if m.mode() & 0o077 != 0 {
        f.set_permissions(fs::Permissions::from_mode(FILE_MODE))
            .map_err(|e| {
                io::Error::other(format!(
                    "{} has mode {:04o}, open to other users, and cannot be made 0600: {e}; \
                     remove it (ase creates it again)",
                    path.display(),
                    m.mode() & 0o7777
                ))
            })?;
    }
    Ok(())
}

/// A file root just created in another user's directory is handed to that
/// user and group, so unprivileged workers can still open it.
pub fn adopt_dir_owner(path: &Path) -> io::Result<()> {
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    let (Ok(d), Ok(f)) = (fs::metadata(dir), fs::metadata(path)) else {
        return Ok(());
    };
    if f.uid() == 0 && (d.uid() != 0 || d.gid() != f.gid()) {
        std::os::unix::fs::chown(path, Some(d.uid()), Some(d.gid())).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot hand {} to the owner of {}: {e}",
                    path.display(),
                    dir.display()
                ),
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_file_open_to_others_is_narrowed() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.lock");
        fs::write(&p, b"").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o666)).unwrap();
        open_private(&p).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn an_existing_file_of_another_user_is_refused() {
        if my_uid() != Some(0) {
            eprintln!("not root: cannot give a file to another user");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.lock");
        fs::write(&p, b"").unwrap();
        std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
        let e = open_private(&p).unwrap_err().to_string();
        assert!(e.contains("x.lock") && e.contains("uid 65534"), "{e}");
    }
}
