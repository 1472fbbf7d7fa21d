//! Read-only memory maps of snapshot files: with `src/ffi/`, the only
//! module with `unsafe` code.
//!
//! A map's bytes are read as a `&[u8]` by the safe, bounds-checked snapshot
//! reader (`policy::snapshot`). The contract that makes that sound: a
//! snapshot file is never changed in place: it is written under another
//! name, synced and renamed into place (`sync::snapshot`), so the bytes of
//! a file a process mapped do not change while it is mapped. A file changed
//! in place anyway (by hand) can only make the reader give wrong answers; a
//! file truncated in place while mapped can raise SIGBUS on a later read,
//! as it would for any mapped file, which is why the design forbids it.

use std::fs::File;
use std::ops::Deref;
use std::path::Path;

/// A whole file mapped read-only and shared: every process that maps the
/// same file shares its pages in the page cache.
#[derive(Debug)]
pub struct MappedFile {
    map: memmap2::Mmap,
}

impl MappedFile {
    /// Maps the file at `path`. An empty file is refused (there is nothing
    /// to map, and no snapshot is empty).
    pub fn open(path: &Path) -> std::io::Result<MappedFile> {
        let f = File::open(path)?;
        if f.metadata()?.len() == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the file is empty",
            ));
        }
        // SAFETY: the map is read-only and the file is not changed while
        // mapped (module doc): its bytes stay what the reader checked.
        let map = unsafe { memmap2::Mmap::map(&f)? };
        Ok(MappedFile { map })
    }
}

impl Deref for MappedFile {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.map
    }
}
