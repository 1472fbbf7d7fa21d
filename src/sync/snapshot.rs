//! The host's lists snapshot file: building it (by the process that holds
//! the host role) and following it (every engine).
//!
//! One file, `state_dir/lists.snap`, in the format of `policy::snapshot`.
//! It is never changed in place: a build writes `lists.snap.<pid>.tmp`,
//! syncs it and renames it over the old one, so a process that maps the
//! file sees a whole snapshot, and one that mapped the previous file keeps
//! it (the kernel keeps an unlinked file while it is mapped). A reader
//! checks a file (magic, version, sizes, checksum) before it uses it; one
//! that fails is refused with the reason in health, and the builder, which
//! checks the file whenever it is not the one it wrote, rebuilds it.

use std::collections::VecDeque;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::mapped::MappedFile;
use crate::policy::snapshot::{Builder, Snapshot, Verifier};
use crate::store::Store;

/// The snapshot's file name in `state_dir`.
pub const FILE: &str = "lists.snap";

/// The lock whose holder builds snapshots (and does the host's other
/// background work).
pub const HOST_LOCK: &str = "host.lock";

/// Changes since the last snapshot that make the builder build at once;
/// below this it waits for [`BUILD_AFTER`] (every engine holds these
/// changes in its overlay meanwhile).
pub const BUILD_AT_CHANGES: u64 = 5_000;

/// How long a change waits at most to be folded into a snapshot.
pub const BUILD_AFTER: Duration = Duration::from_secs(30);

/// Which file a path held when it was looked at: a renamed-in build or a
/// file changed in place differ in one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

/// The identity of the snapshot file in `dir`; `None` when there is none.
pub fn file_id(dir: &Path) -> std::io::Result<Option<FileId>> {
    match fs::metadata(dir.join(FILE)) {
        Ok(m) => Ok(Some(FileId {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Why a snapshot file could not be used, with the file named.
fn refused(dir: &Path, e: impl std::fmt::Display) -> String {
    format!("snapshot {} refused: {e}", dir.join(FILE).display())
}

/// Maps the snapshot file of `dir` without checking its checksum yet:
/// the caller checks it, all at once ([`open`]) or a slice per step
/// ([`Pending`]). `Ok(None)` when there is no file.
fn map(dir: &Path) -> Result<Option<(MappedFile, FileId)>, String> {
    // The identity first: a file renamed in between is taken for the
    // older identity and looked at again on the next poll.
    let Some(id) = file_id(dir).map_err(|e| refused(dir, e))? else {
        return Ok(None);
    };
    match MappedFile::open(&dir.join(FILE)) {
        Ok(m) => Ok(Some((m, id))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(refused(dir, e)),
    }
}

/// Maps and fully checks the snapshot file of `dir`.
pub fn open(dir: &Path) -> Result<Option<(Arc<Snapshot>, FileId)>, String> {
    let Some((m, id)) = map(dir)? else {
        return Ok(None);
    };
    let snap = Snapshot::open(Box::new(m)).map_err(|e| refused(dir, e))?;
    Ok(Some((Arc::new(snap), id)))
}

/// A snapshot file being checked a slice at a time (an event-loop host
/// checks a 100 MB file over several timer ticks, never stalling one).
pub struct Pending {
    map: Option<MappedFile>,
    id: FileId,
    verifier: Option<Verifier>,
    /// Checked whole, waiting to be installed.
    done: Option<Arc<Snapshot>>,
}

impl Pending {
    /// Maps the file of `dir` and checks its header. `Ok(None)` when there is none.
    pub fn start(dir: &Path) -> Result<Option<Pending>, String> {
        let Some((map, id)) = map(dir)? else {
            return Ok(None);
        };
        let verifier = Verifier::new(&map).map_err(|e| refused(dir, e))?;
        Ok(Some(Pending {
            map: Some(map),
            id,
            verifier: Some(verifier),
            done: None,
        }))
    }

    /// The identity of the file being checked.
    pub fn id(&self) -> FileId {
        self.id
    }

    /// A snapshot checked whole that could not be installed yet.
    pub fn checked(snap: Arc<Snapshot>, id: FileId) -> Pending {
        Pending {
            map: None,
            id,
            verifier: None,
            done: Some(snap),
        }
    }

    /// Checks up to `max` more bytes. `None` while not done; the snapshot,
    /// or why it was refused, when done.
    pub fn step(&mut self, dir: &Path, max: usize) -> Option<Result<Arc<Snapshot>, String>> {
        if let Some(s) = &self.done {
            return Some(Ok(s.clone()));
        }
        let map = self.map.as_ref()?;
        match self.verifier.as_mut()?.step(map, max)? {
            Err(e) => Some(Err(refused(dir, e))),
            // The checked bytes become the snapshot's.
            Ok(()) => self.map.take().map(|map| {
                Snapshot::open_verified(Box::new(map))
                    .map(Arc::new)
                    .map_err(|e| refused(dir, e))
            }),
        }
    }
}

/// What one build did, for status and the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Built {
    /// The log position the snapshot reflects.
    pub seq: u64,
    /// Entries in it.
    pub entries: u64,
    /// Its size in bytes.
    pub bytes: u64,
    /// How long the build took, in ms.
    pub took_ms: u64,
}

/// Builds the snapshot of `store` into `dir`: written aside, synced, renamed
/// over the previous one, the directory synced. Returns the previous file,
/// still open (see [`SnapshotBuilder`]'s `replaced`).
pub fn build(store: &Store, dir: &Path) -> Result<(Built, FileId, Option<fs::File>), String> {
    let started = Instant::now();
    let tmp = dir.join(format!("{FILE}.{}.tmp", std::process::id()));
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        let _ = fs::remove_file(&tmp);
        format!("snapshot build: {what}: {e}")
    };
    // Created first, so that a build in progress shows (and one killed
    // half-way leaves a file the next holder of the role removes).
    let _ = fs::remove_file(&tmp);
    let mut f = crate::store::files::create_new_private(&tmp)
        .map_err(|e| failed(&format!("creating {}", tmp.display()), &e))?;
    let mut pushed = None;
    let (b, seq, _skipped) = store
        .for_each_merged(
            |seq| Builder::new(seq, crate::clock::now_ms()),
            |b, k, m| {
                if let Err(e) = b.push(&k, m) {
                    pushed.get_or_insert(e);
                }
            },
        )
        .map_err(|e| failed("reading the store", &e.message))?;
    if let Some(e) = pushed {
        return Err(failed("building", &e));
    }
    let bytes = b.finish();
    let target = dir.join(FILE);
    let previous = fs::File::open(&target).ok();
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .and_then(|()| fs::rename(&tmp, &target))
        .and_then(|()| fs::File::open(dir)?.sync_all())
        .map_err(|e| failed(&format!("writing {}", target.display()), &e))?;
    let id = file_id(dir)
        .ok()
        .flatten()
        .ok_or_else(|| format!("snapshot build: {} vanished", target.display()))?;
    let len = bytes.len() as u64;
    let entries = Snapshot::open_verified(Box::new(bytes))
        .map(|s| s.len())
        .unwrap_or(0);
    Ok((
        Built {
            seq,
            entries,
            bytes: len,
            took_ms: started.elapsed().as_millis() as u64,
        },
        id,
        previous,
    ))
}

/// Removes what builds killed half-way left (`lists.snap.<pid>.tmp`). Only
/// the holder of the host role builds, so any such file but its own is
/// a leftover.
fn remove_leftovers(dir: &Path) {
    let own = format!("{FILE}.{}.tmp", std::process::id());
    let Ok(rd) = fs::read_dir(dir) else { return };
    for f in rd.flatten() {
        let name = f.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&format!("{FILE}.")) && name.ends_with(".tmp") && name != own {
            let _ = fs::remove_file(f.path());
        }
    }
}

/// The builder's state across steps (it runs in the host-role thread).
#[derive(Debug)]
pub struct SnapshotBuilder {
    dir: PathBuf,
    /// The file this builder last wrote or found good, and the log position it holds.
    good: Option<(FileId, u64)>,
    /// When this builder started, or last built: small changes wait
    /// [`BUILD_AFTER`] from then (a new holder of the role, after an nginx
    /// reload say, maps the file that is there rather than rebuild it).
    since: Instant,
    leftovers_removed: bool,
    failed: Option<Instant>,
    /// The last build's figures, and the last error while it lasts.
    pub last: Option<Built>,
    /// Why the last build or check failed, while it is failing.
    pub error: Option<String>,
    /// Files found bad (not the builder's own, failing their check).
    pub refusals: u64,
    /// Why the last one was refused.
    pub last_refusal: Option<String>,
    /// Files this builder replaced, held open for [`RETAIN_REPLACED`].
    /// Whoever drops the last reference to a replaced file frees its pages
    /// and blocks (milliseconds for tens of MB); held here, that is this
    /// background thread rather than an event loop moving onto the new file.
    replaced: VecDeque<(Instant, fs::File)>,
}

/// How long a replaced snapshot file is held open: far longer than
/// processes take to move onto its successor (a fraction of a second).
const RETAIN_REPLACED: Duration = Duration::from_secs(60);

/// Replaced files held at most (rebuilds in a row).
const RETAIN_MAX: usize = 4;

impl SnapshotBuilder {
    /// A builder for `state_dir`.
    pub fn new(dir: PathBuf) -> SnapshotBuilder {
        SnapshotBuilder {
            dir,
            good: None,
            since: Instant::now(),
            leftovers_removed: false,
            failed: None,
            last: None,
            error: None,
            refusals: 0,
            last_refusal: None,
            replaced: VecDeque::new(),
        }
    }

    /// One look: checks the file when it is not the one this builder knows
    /// good, and builds when it is missing or bad, when a bulk change
    /// (an ABS list, an import) is in the log after it, when
    /// [`BUILD_AT_CHANGES`] changes are, or when any change is older than
    /// [`BUILD_AFTER`]. Returns whether it built.
    pub fn step(&mut self, store: &Store) -> bool {
        if !self.leftovers_removed {
            remove_leftovers(&self.dir);
            self.leftovers_removed = true;
        }
        while self
            .replaced
            .front()
            .is_some_and(|(at, _)| at.elapsed() >= RETAIN_REPLACED)
        {
            self.replaced.pop_front();
        }
        let seen = file_id(&self.dir).ok().flatten();
        if seen.is_none() || seen != self.good.map(|g| g.0) {
            // Not the file this builder wrote or checked: check it.
            self.good = match open(&self.dir) {
                Ok(Some((s, id))) => Some((id, s.seq())),
                Ok(None) => None,
                Err(e) => {
                    self.refusals += 1;
                    self.last_refusal = Some(e.clone());
                    self.error = Some(e);
                    None
                }
            };
        }
        let due = match self.good {
            None => true,
            Some((_, seq)) => match store.pending_since(seq) {
                // The store is behind the file: reset, or restored from a
                // backup. The file is the store's no more.
                Ok((last, _, _)) if last < seq => true,
                Ok((_, 0, _)) => false,
                Ok((_, n, bulk)) => {
                    bulk || n >= BUILD_AT_CHANGES || self.since.elapsed() >= BUILD_AFTER
                }
                Err(e) => {
                    self.error = Some(format!("snapshot build: reading the store: {}", e.message));
                    return false;
                }
            },
        };
        if !due || self.failed.is_some_and(|t| t.elapsed() < RETRY_FAILED) {
            return false;
        }
        self.since = Instant::now();
        self.failed = None;
        match build(store, &self.dir) {
            Ok((b, id, previous)) => {
                if let Some(f) = previous {
                    if self.replaced.len() >= RETAIN_MAX {
                        self.replaced.pop_front();
                    }
                    self.replaced.push_back((Instant::now(), f));
                }
                self.good = Some((id, b.seq));
                self.last = Some(b);
                self.error = None;
                true
            }
            Err(e) => {
                self.error = Some(e);
                self.failed = Some(Instant::now());
                false
            }
        }
    }
}

/// How long a failed build waits before the next try (a full disk would
/// otherwise make it read the store and write a file five times a second).
const RETRY_FAILED: Duration = Duration::from_secs(10);
