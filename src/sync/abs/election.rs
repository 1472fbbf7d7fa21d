//! One poller per host: whoever holds an exclusive `flock` on a file in
//! `state_dir` polls ABS; the others don't. The kernel frees the lock when its
//! holder exits or dies (even by `kill -9`), so another process takes over the
//! next time it tries. Locks are per open file, so two pollers in one process
//! elect each other too.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use fs4::fs_std::FileExt;

use crate::store::files;

/// Name of the lock file inside `state_dir`.
pub const LOCK_FILE: &str = "abs_poll.lock";

/// A candidate for the poll lock at one path.
#[derive(Debug)]
pub struct Election {
    path: PathBuf,
    held: Option<File>,
}

impl Election {
    /// A candidate for the lock at `path` (not yet tried).
    pub fn new(path: PathBuf) -> Election {
        Election { path, held: None }
    }

    /// The lock file of `state_dir`.
    pub fn in_dir(state_dir: &Path) -> Election {
        Election::new(state_dir.join(LOCK_FILE))
    }

    /// Takes the lock if it is free. Ok(true): this candidate is (or stays) the
    /// leader; Ok(false): another holds it; Err: the file cannot be used.
    pub fn try_lead(&mut self) -> Result<bool, String> {
        if self.held.is_some() {
            return Ok(true);
        }
        // Any user who can open the file can hold the lock and stop the
        // host's sync, so it is private to the state's owner (created 0600,
        // an existing one narrowed or refused).
        let f = files::open_private(&self.path)
            .map_err(|e| format!("opening {}: {e}", self.path.display()))?;
        match FileExt::try_lock_exclusive(&f) {
            Ok(true) => {
                // The holder's pid, for an operator wondering who polls.
                let _ = f.set_len(0);
                let _ = (&f).write_all(format!("{}\n", std::process::id()).as_bytes());
                self.held = Some(f);
                Ok(true)
            }
            Ok(false) => Ok(false),
            Err(e) => Err(format!("locking {}: {e}", self.path.display())),
        }
    }

    /// Gives the lock up (closing the file releases it).
    pub fn resign(&mut self) {
        self.held = None;
    }
}

/// The pid of the process that holds the poll lock of `state_dir`, for
/// status: `Ok(None)` when nobody holds it.
///
/// Probes with a shared lock taken and dropped at once; a candidate that
/// tries to lead in that instant waits for its next try (harmless). The pid
/// is what the holder wrote (0 if unreadable).
pub fn holder(state_dir: &Path) -> Result<Option<u32>, String> {
    holder_of(&state_dir.join(LOCK_FILE))
}

/// The pid of the process holding the lock file at `path` (as [`holder`]).
pub fn holder_of(path: &Path) -> Result<Option<u32>, String> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("opening {}: {e}", path.display())),
    };
    match FileExt::try_lock_shared(&f) {
        Ok(true) => {
            let _ = FileExt::unlock(&f);
            Ok(None)
        }
        Ok(false) => {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            Ok(Some(text.trim().parse().unwrap_or(0)))
        }
        Err(e) => Err(format!("locking {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_names_the_leader_and_none_after_it_resigns() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(holder(dir.path()).unwrap(), None, "no lock file");
        let mut e = Election::in_dir(dir.path());
        assert!(e.try_lead().unwrap());
        assert_eq!(holder(dir.path()).unwrap(), Some(std::process::id()));
        assert!(e.try_lead().unwrap(), "the probe did not take the lock");
        e.resign();
        assert_eq!(holder(dir.path()).unwrap(), None);
    }
}
