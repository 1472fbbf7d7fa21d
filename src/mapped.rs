//! A read-only shared memory map of a whole file: how every process of a
//! host reads the one lists snapshot (`policy::snapshot`) without a copy.
//!
//! This is the one module besides `ffi` that uses `unsafe`: mapping a file
//! is `unsafe` in Rust because the compiler cannot know what else writes to
//! the file while it is mapped. The contract that makes it sound is stated
//! at the one `unsafe` block below; everything that reads the bytes is safe
//! code.

use std::fs::File;
use std::io;
use std::ops::Deref;
use std::path::Path;

use memmap2::Mmap;

/// A whole file mapped read-only and shared. Dereferences to its bytes.
#[derive(Debug)]
pub struct MappedFile {
    map: Mmap,
}

impl MappedFile {
    /// Maps the file at `path`. An empty file is refused (there is nothing
    /// to map, and a snapshot is never empty).
    pub fn open(path: &Path) -> io::Result<MappedFile> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a regular file, cannot map it", path.display()),
            ));
        }
        if meta.len() == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: empty file (0 bytes), nothing to map", path.display()),
            ));
        }
        // SAFETY: a mapped file's bytes may change under a `&[u8]` if someone
        // writes the file, which Rust's aliasing rules do not allow. The
        // contract: snapshot files are never modified in place. They are
        // written under another name, synced and renamed into place, so a
        // mapping keeps the old inode's bytes, which nobody writes again.
        // Should a file be changed in place anyway, the bytes are read only
        // through the bounds-checked safe reader of `policy::snapshot`, which
        // can give wrong answers but neither reads out of bounds nor loops.
        // A file truncated in place while mapped makes a read past its new
        // end raise SIGBUS; the design forbids truncating a snapshot (it is
        // replaced by rename, and removed only by unlinking).
        #[allow(unsafe_code)]
        let map = unsafe { Mmap::map(&file)? };
        Ok(MappedFile { map })
    }
}

impl Deref for MappedFile {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.map
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::snapshot::{self, Snapshot};
    use crate::policy::{IdKind, Identifier, KeyRef, Meta, Source};

    #[test]
    fn maps_a_snapshot_and_refuses_an_empty_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lists.snap");
        let key = Identifier::new(IdKind::Token, "", "t1").unwrap().key();
        let m = Meta {
            sources: Source::Manual.bit(),
            ..Meta::default()
        };
        std::fs::write(&path, snapshot::build(3, 4, [(key, m)]).unwrap()).unwrap();
        let f = MappedFile::open(&path).unwrap();
        assert_eq!(&f[..8], &snapshot::MAGIC);
        let s = Snapshot::open(Box::new(f)).unwrap();
        assert_eq!(s.get(&KeyRef::token(b"t1")), Some(m));
        // The mapping outlives the name: a snapshot is replaced by rename.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(s.get(&KeyRef::token(b"t1")), Some(m));

        let empty = dir.path().join("empty.snap");
        std::fs::write(&empty, b"").unwrap();
        let e = MappedFile::open(&empty).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("empty file"), "{e}");
        assert!(e.to_string().contains("empty.snap"), "{e}");
        assert_eq!(
            MappedFile::open(&dir.path().join("absent"))
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
        assert!(MappedFile::open(dir.path()).is_err());
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<MappedFile>();
        check::<Snapshot>();
    }
}
