//! The lists snapshot format: both lists (allow and deny, every source) of
//! a host in one immutable file that every process maps read-only and
//! probes on the request path.
//!
//! One process builds the file ([`Builder`], [`build`]) from the store;
//! the others open it ([`Snapshot::open`]) over bytes they do not copy (a
//! memory map in production, see `crate::mapped`). This module is the
//! format only: pure, safe code with no I/O, threads or clock.
//!
//! # Layout
//!
//! Everything is little-endian and read with `from_le_bytes` over
//! bounds-checked slices. The file is a fixed header followed by three
//! hash tables and a heap, each section starting on an 8-byte boundary:
//!
//! | offset | bytes | field |
//! |---:|---:|---|
//! | 0 | 8 | [`MAGIC`] |
//! | 8 | 4 | [`VERSION`] |
//! | 12 | 4 | header length ([`HEADER_LEN`]) |
//! | 16 | 8 | file length |
//! | 24 | 8 | checksum: XXH3-64 of every byte from offset 32 to the end |
//! | 32 | 8 | store change-log position (`seq`) |
//! | 40 | 8 | build time, Unix ms |
//! | 48 | 32 | four hash seed words |
//! | 80 | 8 | entries |
//! | 88 | 40 | entries per [`IdKind`] |
//! | 128 | 32 | IP prefix lengths listed (as `IdMap`'s `prefixes`) |
//! | 160 | 72 | per table (IPv4, IPv6, strings): groups, control offset, slots offset |
//! | 232 | 16 | heap offset and length |
//! | 248 | 1024 | entries per `sources` byte value (128 words) |
//! | 1272 | | IPv4 control bytes, IPv4 slots, IPv6 control bytes, IPv6 slots, string control bytes, string slots, heap |
//!
//! The fields before the checksum are not covered by it, but each is
//! checked exactly (magic, version, header length, and the file length
//! against the bytes); every later byte is covered.
//!
//! **Tables.** One open-addressing table per class of key, in the manner of
//! SwissTable: slots come in groups of 8; a separate array holds one
//! control byte per slot (`0x80` empty, else the low 7 bits of the key's
//! hash); a probe starts at group `(hash * groups) >> 64` (multiply-shift, so
//! any number of groups and no power-of-two rounding) and reads the 8
//! control bytes of a group as one `u64`, finds the slots whose byte equals
//! the tag with SWAR byte compares, and compares only those slots' keys. A
//! group with an empty slot ends the probe; otherwise it goes on to the next
//! group (wrapping), never more than the number of groups. Almost every
//! request probe misses, and a miss usually ends at the first control word:
//! the control array is one byte an entry, so it tends to stay in cache even
//! when the slots (20 to 30 times larger) do not. A tag matches an absent
//! key's with probability 1/128 per slot, so one miss in ten or so reads a
//! slot. Tables are sized to at most 85 % load ([`LOAD_PERCENT`]): groups of
//! 8 keep the probes short at that load where single slots would not.
//!
//! **Slots** are fixed-size records (so a slot's position is arithmetic):
//!
//! - IPv4 (24 bytes): address `u32`, prefix length in the 128-bit space
//!   (96..=128), then the entry's 19 meta bytes.
//! - IPv6 (36 bytes): address `u128`, prefix length (0..=128), meta. Ranges
//!   shorter than /96 are here even when they hold IPv4-mapped addresses.
//! - strings (28 bytes): heap offset `u32`, name length `u16`, value length
//!   `u16`, kind, meta; the key's name then value bytes are in the heap.
//!
//! The meta bytes are `sources` then three 48-bit expiries (allow, manual,
//! ABS) in absolute Unix milliseconds. 48 bits reach the year 10889
//! ([`MAX_EXPIRY`]); a later expiry is stored as [`MAX_EXPIRY`], which never
//! comes either, and every expiry up to it round-trips exactly.
//!
//! **Compactness.** Bytes a slot costs, control byte included, over the 85 %
//! load: IPv4 25 / 0.85 ≈ 29.4, IPv6 37 / 0.85 ≈ 43.5, strings
//! 29 / 0.85 ≈ 34.1 plus the key's name and value bytes. So [`entry_cost`]
//! (48 for IP entries, 64 plus name and value for the others) bounds what
//! an entry costs in the file, table slack included, and 128 MB (ASE's
//! default `attack_list_memory`) holds 2.79 million IP entries by that
//! bound and about 4.5 million in fact.
//!
//! **Hashing.** A process's key hashes ([`KeyRef::hash`]) are keyed by a
//! per-process secret and mean nothing to another process, so the file
//! carries its own four seed words, drawn at build time, and lookups hash
//! with those through the crate's one keyed hash (`hash.rs`). String keys are
//! hashed as `ident.rs` does (kind and name first, API-key names lowercase,
//! then the value); IP keys are two folded multiplies of the address words,
//! with the prefix length in the last one.
//!
//! **Damage.** [`Snapshot::open`] checks the checksum of the whole file
//! and then every size and offset. [`Snapshot::open_verified`] skips the
//! checksum (already checked by a [`Verifier`], a few megabytes at a time
//! on an event loop). A file changed after it was checked can give wrong
//! answers but never a panic or an endless loop: every read is a checked
//! slice and every probe loop is bounded by the group count.
//!
//! **Duplicates.** A key pushed twice keeps the later entry (its bytes in the
//! heap from the first push stay, unreferenced). Entries without a source
//! bit are skipped.

use std::fmt;
use std::ops::Deref;

use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use super::bytes::{self, bytes_eq, lower8};
use super::hash::{fold, hash_bytes, random_secret};
use super::ident::{IdKind, IpNet, Key, KeyRef, is_v4};
use super::lists::{ALLOW, Meta, Source};

/// The first 8 bytes of every snapshot file.
pub const MAGIC: [u8; 8] = *b"ASESNAP\0";
/// The format version this code writes and reads.
pub const VERSION: u32 = 2;
/// Bytes of the header; the tables start here.
pub const HEADER_LEN: usize = off::END;
/// The latest expiry a snapshot stores exactly (Unix ms, 48 bits: the year
/// 10889). Later ones are stored as this.
pub const MAX_EXPIRY: u64 = (1 << 48) - 1;
/// The largest heap (string key bytes) a snapshot can address: slots hold
/// `u32` heap offsets.
pub const MAX_HEAP: u64 = u32::MAX as u64;
/// The most entries a table holds per 100 slots.
pub const LOAD_PERCENT: usize = 85;

/// Bytes an entry is charged against `attack_list_memory` when the lists
/// live in a snapshot: 48 for an IP entry (v4 or v6, any prefix), 64 plus
/// the name and value length for the others. An upper bound on what the
/// entry costs in the file, table slack and control bytes included (module
/// doc, "Compactness"; `entry_cost_bounds_the_file` checks it).
pub const fn entry_cost(kind: IdKind, name_len: usize, value_len: usize) -> u64 {
    match kind {
        IdKind::Ip => 48,
        _ => 64 + name_len as u64 + value_len as u64,
    }
}

/// Header field offsets.
mod off {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 8;
    pub const HEADER_LEN: usize = 12;
    pub const FILE_LEN: usize = 16;
    pub const CHECKSUM: usize = 24;
    /// The checksum covers every byte from here to the end.
    pub const CHECKED: usize = 32;
    pub const SEQ: usize = 32;
    pub const BUILT: usize = 40;
    pub const SEEDS: usize = 48;
    pub const ENTRIES: usize = 80;
    pub const COUNTS: usize = 88;
    pub const PREFIXES: usize = 128;
    /// Per table: groups, control offset, slots offset.
    pub const TABLES: usize = 160;
    pub const HEAP: usize = 232;
    pub const BY_SOURCES: usize = 248;
    pub const END: usize = 248 + 128 * 8;
}

/// Slots per group: one `u64` of control bytes.
const GROUP: usize = 8;
/// The control byte of an empty slot; an occupied one holds a 7-bit tag.
const EMPTY: u8 = 0x80;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The three tables, in file order.
const V4: usize = 0;
const V6: usize = 1;
const STR: usize = 2;
/// Slot bytes per table.
const REC: [usize; 3] = [24, 36, 28];
/// Where a slot's meta bytes start, per table.
const META_AT: [usize; 3] = [5, 17, 9];
/// `sources` and three 48-bit expiries.
const META_LEN: usize = 19;

const V4_MAPPED: u128 = 0xffff_u128 << 32;

/// Why a snapshot could not be built or opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotError {
    /// Fewer bytes than the header.
    TooShort {
        /// Bytes there are.
        len: usize,
    },
    /// The file does not start with [`MAGIC`].
    BadMagic,
    /// A format version this code does not read.
    Version {
        /// The version in the file.
        found: u32,
    },
    /// A size or offset disagrees with the bytes or with the layout.
    Size {
        /// Which (`"file"` for the file length).
        what: &'static str,
        /// What there is.
        found: u64,
        /// What the header implies.
        expected: u64,
    },
    /// The header's counts do not add up.
    Inconsistent {
        /// Which counts.
        what: &'static str,
    },
    /// The contents do not hash to the header's checksum.
    Checksum {
        /// The checksum in the header.
        expected: u64,
        /// The checksum of the contents.
        found: u64,
    },
    /// Building: more than the format can address.
    TooLarge {
        /// What is too large.
        what: &'static str,
        /// Its size in bytes.
        bytes: u64,
        /// The largest the format allows.
        max: u64,
    },
    /// Building: a key that is not a well-formed list key.
    BadKey {
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::TooShort { len } => write!(
                f,
                "snapshot: file is {len} bytes, shorter than its {HEADER_LEN}-byte header (truncated)"
            ),
            SnapshotError::BadMagic => f.write_str("snapshot: not a lists snapshot (bad magic)"),
            SnapshotError::Version { found } => write!(
                f,
                "snapshot: format version {found}, this build reads version {VERSION}"
            ),
            SnapshotError::Size {
                what: "file",
                found,
                expected,
            } => write!(
                f,
                "snapshot: file is {found} bytes, header says {expected} ({})",
                if found < expected {
                    "truncated"
                } else {
                    "trailing bytes"
                }
            ),
            SnapshotError::Size {
                what,
                found,
                expected,
            } => write!(
                f,
                "snapshot: {what} is {found}, the layout says {expected} (header damaged)"
            ),
            SnapshotError::Inconsistent { what } => {
                write!(f, "snapshot: {what} do not add up (header damaged)")
            }
            SnapshotError::Checksum { expected, found } => write!(
                f,
                "snapshot: checksum mismatch (file damaged): header says {expected:016x}, contents hash to {found:016x}"
            ),
            SnapshotError::TooLarge { what, bytes, max } => write!(
                f,
                "snapshot: {what} of {bytes} bytes is more than the format's {max}"
            ),
            SnapshotError::BadKey { reason } => write!(f, "snapshot: cannot store key: {reason}"),
        }
    }
}

impl std::error::Error for SnapshotError {}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..)
        .and_then(|s| s.first_chunk::<8>())
        .map_or(0, |w| u64::from_le_bytes(*w))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..)
        .and_then(|s| s.first_chunk::<4>())
        .map_or(0, |w| u32::from_le_bytes(*w))
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    b.get(at..)
        .and_then(|s| s.first_chunk::<2>())
        .map_or(0, |w| u16::from_le_bytes(*w))
}

fn put(b: &mut [u8], at: usize, v: &[u8]) {
    b[at..at + v.len()].copy_from_slice(v);
}

fn u48_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(s) = b.get(at..at + 6) {
        w[..6].copy_from_slice(s);
    }
    u64::from_le_bytes(w)
}

/// The 19 meta bytes of an entry (its `seq` is not stored).
fn meta_bytes(m: &Meta) -> [u8; META_LEN] {
    let mut b = [0u8; META_LEN];
    b[0] = m.sources;
    for (i, e) in [m.allow_exp, m.manual_exp, m.abs_exp]
        .into_iter()
        .enumerate()
    {
        b[1 + 6 * i..7 + 6 * i].copy_from_slice(&e.min(MAX_EXPIRY).to_le_bytes()[..6]);
    }
    b
}

fn meta_of(b: &[u8]) -> Meta {
    Meta {
        sources: b.first().copied().unwrap_or(0),
        allow_exp: u48_at(b, 1),
        manual_exp: u48_at(b, 7),
        abs_exp: u48_at(b, 13),
        seq: 0,
        changed: 0,
        local: 0,
    }
}

/// The bits `net` sets in a list's `prefixes` words: as `IdMap` keeps them,
/// words 0-1 for ranges holding IPv4-mapped addresses, 2-3 for ranges
/// holding other addresses; a /128 sets none (it is always probed).
fn prefix_bits(net: IpNet) -> [u64; 4] {
    let mut w = [0u64; 4];
    let len = net.len;
    if len >= 128 {
        return w;
    }
    let bit = 1u64 << (len % 64);
    let word = (len / 64) as usize;
    let top = |l: u8| {
        if l == 0 {
            0
        } else {
            u128::MAX << (128 - l as u32)
        }
    };
    if (net.addr ^ V4_MAPPED) & top(len.min(96)) == 0 {
        w[word] |= bit;
    }
    if len < 96 || (net.addr ^ V4_MAPPED) & top(96) != 0 {
        w[2 + word] |= bit;
    }
    w
}

/// The hash seeds of one snapshot, and the prefixes every lookup of a
/// nameless kind shares.
#[derive(Clone, Copy, Debug)]
struct Seeds {
    k: [u64; 4],
    token: u64,
    username: u64,
}

impl Seeds {
    fn new(k: [u64; 4]) -> Seeds {
        Seeds {
            k,
            token: Seeds::prefix(k, IdKind::Token, b""),
            username: Seeds::prefix(k, IdKind::Username, b""),
        }
    }

    /// The hash of a key's kind and name, as `ident.rs`'s `prefix_hash`.
    fn prefix(k: [u64; 4], kind: IdKind, name: &[u8]) -> u64 {
        let [k0, k1, k2, k3] = k;
        let seed = fold(k3 ^ kind as u64, k1);
        if kind == IdKind::ApiKey {
            hash_bytes(seed, [k0, k1, k2], name, lower8)
        } else {
            hash_bytes(seed, [k0, k1, k2], name, |w| w)
        }
    }

    #[inline(always)]
    fn v4(&self, addr: u32, len: u8) -> u64 {
        let [k0, k1, k2, _] = self.k;
        fold(fold(addr as u64 ^ k0, k1), k2 ^ len as u64)
    }

    #[inline(always)]
    fn v6(&self, addr: u128, len: u8) -> u64 {
        let [k0, k1, k2, _] = self.k;
        fold(
            fold((addr >> 64) as u64 ^ k0, addr as u64 ^ k1),
            k2 ^ len as u64,
        )
    }

    #[inline]
    fn string(&self, kind: IdKind, name: &[u8], value: &[u8]) -> u64 {
        let [k0, k1, k2, _] = self.k;
        let p = match kind {
            IdKind::Token if name.is_empty() => self.token,
            IdKind::Username if name.is_empty() => self.username,
            _ => Seeds::prefix(self.k, kind, name),
        };
        hash_bytes(p, [k0, k1, k2], value, |w| w)
    }
}

/// Where one table is in the file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Table {
    /// Groups of [`GROUP`] slots.
    groups: usize,
    /// Offset of the control bytes.
    ctrl: usize,
    /// Offset of the slots.
    slots: usize,
    /// Bytes a slot.
    rec: usize,
}

impl Table {
    fn slot_count(&self) -> usize {
        self.groups * GROUP
    }

    /// The first group of a probe for `hash`.
    #[inline(always)]
    fn home(&self, hash: u64) -> usize {
        ((hash as u128 * self.groups as u128) >> 64) as usize
    }

    /// The groups a probe for `hash` visits, in order: double hashing over
    /// the groups, whose number is prime ([`groups_for`]), so any step
    /// visits every group once. Linear probing at 85 % load made long
    /// clusters (a miss visited 7 groups on average in the check bench);
    /// with its own step per key a miss ends after about 1.4.
    #[inline(always)]
    fn probe(&self, hash: u64) -> Probe {
        Probe {
            g: self.home(hash),
            step: 0,
            hash,
            groups: self.groups,
            left: self.groups,
        }
    }

    /// The slot whose key `eq` accepts, probing from `hash`'s group. Bounded
    /// by the group count whatever the bytes hold.
    #[inline(always)]
    fn find<'b>(&self, b: &'b [u8], hash: u64, eq: impl Fn(&[u8]) -> bool) -> Option<&'b [u8]> {
        if self.groups == 0 {
            return None;
        }
        let tag = (hash & 0x7f) as u8;
        for g in self.probe(hash) {
            let at = self.ctrl + g * GROUP;
            let w = u64::from_le_bytes(*b.get(at..)?.first_chunk::<8>()?);
            let mut m = bytes_eq(w, tag);
            while m != 0 {
                let i = g * GROUP + m.trailing_zeros() as usize / 8;
                m &= m - 1;
                let s = self.slots + i * self.rec;
                let slot = b.get(s..s + self.rec)?;
                if eq(slot) {
                    return Some(slot);
                }
            }
            if w & HIGH != 0 {
                return None;
            }
        }
        None
    }
}

/// The groups of one probe (see [`Table::probe`]); at most `groups` of them.
struct Probe {
    g: usize,
    /// 0 until the probe leaves its first group (most end there).
    step: usize,
    hash: u64,
    groups: usize,
    left: usize,
}

impl Iterator for Probe {
    type Item = usize;

    #[inline(always)]
    fn next(&mut self) -> Option<usize> {
        if self.left == 0 {
            return None;
        }
        if self.left < self.groups {
            if self.step == 0 {
                self.step = self.first_step();
            }
            self.g += self.step;
            if self.g >= self.groups {
                self.g -= self.groups;
            }
        }
        self.left -= 1;
        Some(self.g)
    }
}

impl Probe {
    /// The step of this key's probe, in `1..groups`.
    #[cold]
    fn first_step(&self) -> usize {
        1 + ((self.hash.rotate_left(29) as u128 * (self.groups as u128 - 1)) >> 64) as usize
    }
}

/// The file's sections for the given table sizes and heap length: header,
/// then each table's control bytes and slots, then the heap. `None` when
/// the sizes overflow.
fn layout(groups: [u64; 3], heap_len: u64) -> Option<([Table; 3], usize, usize)> {
    let mut at = HEADER_LEN;
    let mut t = [Table::default(); 3];
    for i in 0..3 {
        let g = usize::try_from(groups[i]).ok()?;
        let slots = g.checked_mul(GROUP)?;
        let ctrl = at;
        let s = ctrl.checked_add(slots)?;
        at = s.checked_add(slots.checked_mul(REC[i])?)?;
        t[i] = Table {
            groups: g,
            ctrl,
            slots: s,
            rec: REC[i],
        };
    }
    let heap = at;
    let end = heap.checked_add(usize::try_from(heap_len).ok()?)?;
    Some((t, heap, end))
}

/// Groups a table of `n` entries gets: at most [`LOAD_PERCENT`] full, so
/// there is always an empty slot to end a probe.
fn groups_for(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        next_prime((n * 100).div_ceil(LOAD_PERCENT * GROUP))
    }
}

/// The smallest prime at least `n` (2 for less): a probe's step then visits
/// every group. The gap between primes near a million is under 200, so the
/// table grows by a fraction of a percent.
fn next_prime(n: usize) -> usize {
    let is_prime = |p: usize| p >= 2 && (2..).take_while(|d| d * d <= p).all(|d| p % d != 0);
    (n.max(2)..).find(|&p| is_prime(p)).unwrap_or(n)
}

/// The header, parsed and checked against the bytes.
#[derive(Clone, Debug)]
struct Header {
    checksum: u64,
    seq: u64,
    built_ms: u64,
    seeds: [u64; 4],
    entries: u64,
    counts: [u64; 5],
    prefixes: [u64; 4],
    by_sources: [u64; 128],
    tables: [Table; 3],
    heap: usize,
    heap_len: usize,
}

/// The fields before the checksum: what a checksum check needs.
fn check_front(b: &[u8]) -> Result<u64, SnapshotError> {
    if b.len() < HEADER_LEN {
        return Err(SnapshotError::TooShort { len: b.len() });
    }
    if b[off::MAGIC..off::MAGIC + 8] != MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    let version = u32_at(b, off::VERSION);
    if version != VERSION {
        return Err(SnapshotError::Version { found: version });
    }
    let header_len = u32_at(b, off::HEADER_LEN);
    if header_len as usize != HEADER_LEN {
        return Err(SnapshotError::Size {
            what: "header length",
            found: header_len as u64,
            expected: HEADER_LEN as u64,
        });
    }
    let file_len = u64_at(b, off::FILE_LEN);
    if file_len != b.len() as u64 {
        return Err(SnapshotError::Size {
            what: "file",
            found: b.len() as u64,
            expected: file_len,
        });
    }
    Ok(u64_at(b, off::CHECKSUM))
}

fn checksum_of(b: &[u8]) -> u64 {
    xxh3_64(b.get(off::CHECKED..).unwrap_or_default())
}

/// Everything after the checksum: the layout against the file length and
/// the counts against each other.
fn parse_header(b: &[u8], checksum: u64) -> Result<Header, SnapshotError> {
    let words = |at: usize, out: &mut [u64]| {
        for (i, w) in out.iter_mut().enumerate() {
            *w = u64_at(b, at + 8 * i);
        }
    };
    let mut h = Header {
        checksum,
        seq: u64_at(b, off::SEQ),
        built_ms: u64_at(b, off::BUILT),
        seeds: [0; 4],
        entries: u64_at(b, off::ENTRIES),
        counts: [0; 5],
        prefixes: [0; 4],
        by_sources: [0; 128],
        tables: [Table::default(); 3],
        heap: 0,
        heap_len: 0,
    };
    words(off::SEEDS, &mut h.seeds);
    words(off::COUNTS, &mut h.counts);
    words(off::PREFIXES, &mut h.prefixes);
    words(off::BY_SOURCES, &mut h.by_sources);
    let mut t = [0u64; 9];
    words(off::TABLES, &mut t);
    let heap_off = u64_at(b, off::HEAP);
    let heap_len = u64_at(b, off::HEAP + 8);
    let file_len = b.len() as u64;
    if heap_len > MAX_HEAP {
        return Err(SnapshotError::Size {
            what: "heap length",
            found: heap_len,
            expected: MAX_HEAP,
        });
    }
    let (tables, heap, end) = layout([t[0], t[3], t[6]], heap_len).ok_or(SnapshotError::Size {
        what: "table size",
        found: t[0].max(t[3]).max(t[6]),
        expected: file_len,
    })?;
    const NAMES: [[&str; 2]; 3] = [
        ["IPv4 control offset", "IPv4 slots offset"],
        ["IPv6 control offset", "IPv6 slots offset"],
        ["string control offset", "string slots offset"],
    ];
    for (i, tb) in tables.iter().enumerate() {
        for (j, want) in [tb.ctrl, tb.slots].into_iter().enumerate() {
            if t[3 * i + 1 + j] != want as u64 {
                return Err(SnapshotError::Size {
                    what: NAMES[i][j],
                    found: t[3 * i + 1 + j],
                    expected: want as u64,
                });
            }
        }
    }
    if heap_off != heap as u64 {
        return Err(SnapshotError::Size {
            what: "heap offset",
            found: heap_off,
            expected: heap as u64,
        });
    }
    if end as u64 != file_len {
        return Err(SnapshotError::Size {
            what: "end of the heap",
            found: end as u64,
            expected: file_len,
        });
    }
    let sum = |w: &[u64]| w.iter().try_fold(0u64, |a, &c| a.checked_add(c));
    if sum(&h.counts) != Some(h.entries) {
        return Err(SnapshotError::Inconsistent {
            what: "entry counts per kind",
        });
    }
    if sum(&h.by_sources) != Some(h.entries) || h.by_sources[0] != 0 {
        return Err(SnapshotError::Inconsistent {
            what: "entry counts per source",
        });
    }
    let ip = h.counts[IdKind::Ip as usize];
    let ip_slots = (tables[V4].slot_count() + tables[V6].slot_count()) as u64;
    if ip > ip_slots || h.entries - ip > tables[STR].slot_count() as u64 {
        return Err(SnapshotError::Inconsistent {
            what: "entry counts and table sizes",
        });
    }
    h.tables = tables;
    h.heap = heap;
    h.heap_len = heap_len as usize;
    Ok(h)
}

/// The bytes a [`Snapshot`] reads: a memory map in production, a `Vec` in
/// tests.
pub type SnapshotBytes = Box<dyn Deref<Target = [u8]> + Send + Sync>;

/// A validated snapshot over bytes it owns.
pub struct Snapshot {
    bytes: SnapshotBytes,
    h: Header,
    seeds: Seeds,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("seq", &self.h.seq)
            .field("built_ms", &self.h.built_ms)
            .field("entries", &self.h.entries)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

/// Bytes of each section of a snapshot file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footprint {
    /// The header.
    pub header: u64,
    /// The IPv4 table (control bytes and slots).
    pub ipv4: u64,
    /// The IPv6 table.
    pub ipv6: u64,
    /// The string table (cookie, token, API key and user-name entries).
    pub strings: u64,
    /// The string keys' bytes.
    pub heap: u64,
}

/// Whether string slot `s` holds the key `kind`, `name`, `value`, its bytes
/// in `heap`. API-key names compare in any case, like `KeyRef`'s.
#[inline(always)]
fn str_matches(s: &[u8], heap: &[u8], kind: IdKind, name: &[u8], value: &[u8]) -> bool {
    if s.get(8) != Some(&(kind as u8))
        || u16_at(s, 4) as usize != name.len()
        || u16_at(s, 6) as usize != value.len()
    {
        return false;
    }
    let at = u32_at(s, 0) as usize;
    let Some(k) = heap.get(at..at.saturating_add(name.len() + value.len())) else {
        return false;
    };
    let (n, v) = k.split_at(name.len());
    bytes::same(v, value)
        && if kind == IdKind::ApiKey {
            bytes::eq_ignore_case(n, name)
        } else {
            bytes::same(n, name)
        }
}

impl Snapshot {
    /// Checks magic, version, the checksum of the whole file, then every
    /// size and offset against the byte length.
    pub fn open(bytes: SnapshotBytes) -> Result<Snapshot, SnapshotError> {
        let expected = check_front(&bytes)?;
        let found = checksum_of(&bytes);
        if found != expected {
            return Err(SnapshotError::Checksum { expected, found });
        }
        Snapshot::parsed(bytes, expected)
    }

    /// [`Snapshot::open`] trusting a checksum a [`Verifier`] has checked
    /// (magic, version, sizes and offsets are still checked).
    pub fn open_verified(bytes: SnapshotBytes) -> Result<Snapshot, SnapshotError> {
        let checksum = check_front(&bytes)?;
        Snapshot::parsed(bytes, checksum)
    }

    fn parsed(bytes: SnapshotBytes, checksum: u64) -> Result<Snapshot, SnapshotError> {
        let h = parse_header(&bytes, checksum)?;
        Ok(Snapshot {
            seeds: Seeds::new(h.seeds),
            bytes,
            h,
        })
    }

    /// The store change-log position the snapshot reflects.
    pub fn seq(&self) -> u64 {
        self.h.seq
    }

    /// When it was built, Unix ms.
    pub fn built_ms(&self) -> u64 {
        self.h.built_ms
    }

    /// The checksum in its header: tells two snapshots apart.
    pub fn checksum(&self) -> u64 {
        self.h.checksum
    }

    /// Entries (allow and deny).
    pub fn len(&self) -> u64 {
        self.h.entries
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.h.entries == 0
    }

    /// Bytes of the file.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// Entries of one kind.
    pub fn count(&self, kind: IdKind) -> u64 {
        self.h.counts[kind as usize]
    }

    /// Entries per `sources` byte value (bits 0-5 the deny sources, bit 6
    /// [`ALLOW`]): an overlay computes exact list sizes after a clear from
    /// these without a scan.
    pub fn by_sources(&self) -> &[u64; 128] {
        &self.h.by_sources
    }

    /// The same meaning and layout as `IdMap`'s `prefixes`: bit `n` of words
    /// 0-1 set when some IP range of length `n` (< 128) holding IPv4-mapped
    /// addresses is listed, words 2-3 for ranges holding other addresses.
    pub fn prefixes(&self) -> [u64; 4] {
        self.h.prefixes
    }

    /// Bytes of each section.
    pub fn footprint(&self) -> Footprint {
        let t = |i: usize| (self.h.tables[i].slot_count() * (1 + REC[i])) as u64;
        Footprint {
            header: HEADER_LEN as u64,
            ipv4: t(V4),
            ipv6: t(V6),
            strings: t(STR),
            heap: self.h.heap_len as u64,
        }
    }

    fn heap<'b>(&self, b: &'b [u8]) -> &'b [u8] {
        b.get(self.h.heap..self.h.heap + self.h.heap_len)
            .unwrap_or_default()
    }

    /// The entry for a key (an IP key as [`Snapshot::get_ip`]); API-key names
    /// compare in any case. `Meta::seq` is 0.
    #[inline]
    pub fn get(&self, key: &KeyRef<'_>) -> Option<Meta> {
        let (kind, name, value) = (key.kind(), key.name(), key.value());
        if kind == IdKind::Ip {
            let (&[len], Ok(addr)) = (name, <[u8; 16]>::try_from(value)) else {
                return None;
            };
            return self.get_ip(IpNet {
                addr: u128::from_be_bytes(addr),
                len,
            });
        }
        let t = self.h.tables[STR];
        if t.groups == 0 {
            return None;
        }
        let b: &[u8] = &self.bytes;
        let heap = self.heap(b);
        let hash = self.seeds.string(kind, name, value);
        let s = t.find(b, hash, |s| str_matches(s, heap, kind, name, value))?;
        Some(meta_of(&s[META_AT[STR]..]))
    }

    /// The entry for an IP network: this address and prefix length exactly
    /// (the address masked to it, as [`IpNet::of`] and [`IpNet::parse`] give).
    #[inline]
    pub fn get_ip(&self, net: IpNet) -> Option<Meta> {
        let b: &[u8] = &self.bytes;
        let len = net.len;
        if len >= 96 && is_v4(net.addr) {
            let t = self.h.tables[V4];
            let a = net.addr as u32;
            let s = t.find(b, self.seeds.v4(a, len), |s| {
                s.first_chunk() == Some(&a.to_le_bytes()) && s.get(4) == Some(&len)
            })?;
            Some(meta_of(&s[META_AT[V4]..]))
        } else {
            let t = self.h.tables[V6];
            let a = net.addr;
            let s = t.find(b, self.seeds.v6(a, len), |s| {
                s.first_chunk() == Some(&a.to_le_bytes()) && s.get(16) == Some(&len)
            })?;
            Some(meta_of(&s[META_AT[V6]..]))
        }
    }

    /// Calls `f` with the entry of `addr` and of each listed range holding
    /// it, longest prefix first, until `f` returns true (as `IdMap`'s
    /// reader does).
    pub fn each_ip(&self, addr: u128, mut f: impl FnMut(IpNet, Meta) -> bool) {
        if self.h.counts[IdKind::Ip as usize] == 0 {
            return;
        }
        crate::policy::lists::each_net(addr, self.h.prefixes, |net| {
            self.get_ip(net).is_some_and(|m| f(net, m))
        });
    }

    /// Every entry as an owned key (table order: IPv4, IPv6, strings; the
    /// same for the same file). Slots a damaged file makes unreadable are
    /// skipped.
    pub fn iter(&self) -> impl Iterator<Item = (Key, Meta)> + '_ {
        let b: &[u8] = &self.bytes;
        let [t4, t6, ts] = self.h.tables;
        let heap = self.heap(b);
        let slot = move |t: Table, i: usize| -> Option<&[u8]> {
            if *b.get(t.ctrl + i)? & EMPTY != 0 {
                return None;
            }
            b.get(t.slots + i * t.rec..t.slots + (i + 1) * t.rec)
        };
        let v4 = (0..t4.slot_count()).filter_map(move |i| {
            let s = slot(t4, i)?;
            let len = s[4];
            if !(96..=128).contains(&len) {
                return None;
            }
            let net = IpNet {
                addr: V4_MAPPED | u32_at(s, 0) as u128,
                len,
            };
            Some((Key::ip(net), meta_of(&s[META_AT[V4]..])))
        });
        let v6 = (0..t6.slot_count()).filter_map(move |i| {
            let s = slot(t6, i)?;
            let len = s[16];
            if len > 128 {
                return None;
            }
            let net = IpNet {
                addr: u128::from_le_bytes(*s.first_chunk()?),
                len,
            };
            Some((Key::ip(net), meta_of(&s[META_AT[V6]..])))
        });
        let strs = (0..ts.slot_count()).filter_map(move |i| {
            let s = slot(ts, i)?;
            let kind = IdKind::ALL.get(s[8] as usize).copied()?;
            if kind == IdKind::Ip {
                return None;
            }
            let (at, n, v) = (u32_at(s, 0) as usize, u16_at(s, 4) as usize, u16_at(s, 6));
            let k = heap.get(at..at.saturating_add(n + v as usize))?;
            let (name, value) = k.split_at(n);
            Some((
                Key::new(KeyRef::new(kind, name, value)),
                meta_of(&s[META_AT[STR]..]),
            ))
        });
        v4.chain(v6).chain(strs)
    }
}

/// Checks a snapshot's checksum a step at a time, so a host on an event
/// loop can check a large file a few megabytes per timer tick and then
/// open it with [`Snapshot::open_verified`].
pub struct Verifier {
    hasher: Box<Xxh3>,
    pos: usize,
    end: usize,
    expected: u64,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("pos", &self.pos)
            .field("end", &self.end)
            .finish()
    }
}

impl Verifier {
    /// Checks the header, sizes and offsets of `bytes` and starts on the
    /// checksum.
    pub fn new(bytes: &[u8]) -> Result<Verifier, SnapshotError> {
        let expected = check_front(bytes)?;
        parse_header(bytes, expected)?;
        Ok(Verifier {
            hasher: Box::new(Xxh3::new()),
            pos: off::CHECKED,
            end: bytes.len(),
            expected,
        })
    }

    /// Hashes up to `max` more bytes (at least one) of the same `bytes`
    /// given to [`Verifier::new`]: `None` while there are more, then the
    /// verdict (and the same verdict on every later call).
    pub fn step(&mut self, bytes: &[u8], max: usize) -> Option<Result<(), SnapshotError>> {
        if bytes.len() != self.end {
            return Some(Err(SnapshotError::Size {
                what: "file",
                found: bytes.len() as u64,
                expected: self.end as u64,
            }));
        }
        let to = self.pos.saturating_add(max.max(1)).min(self.end);
        self.hasher.update(&bytes[self.pos..to]);
        self.pos = to;
        if self.pos < self.end {
            return None;
        }
        let found = self.hasher.digest();
        Some(if found == self.expected {
            Ok(())
        } else {
            Err(SnapshotError::Checksum {
                expected: self.expected,
                found,
            })
        })
    }

    /// Bytes hashed so far and in all, for progress reports.
    pub fn progress(&self) -> (usize, usize) {
        (self.pos, self.end)
    }
}

/// Builds a snapshot from entries pushed one at a time (the builder process
/// reads them from the store).
pub struct Builder {
    seq: u64,
    built_ms: u64,
    seeds: Seeds,
    /// Slot records and their hashes, per table, in push order.
    recs: [Vec<u8>; 3],
    hashes: [Vec<u64>; 3],
    heap: Vec<u8>,
    max_heap: u64,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("seq", &self.seq)
            .field("pushed", &self.pushed())
            .finish()
    }
}

/// What placing one record did.
enum Placed {
    New,
    /// Replaced an entry with these sources.
    Replaced(u8),
}

impl Builder {
    /// A builder for a snapshot as of change-log position `seq`, built at
    /// `built_ms` (Unix ms), with fresh random hash seeds.
    pub fn new(seq: u64, built_ms: u64) -> Builder {
        Builder::with_seeds(seq, built_ms, random_secret())
    }

    fn with_seeds(seq: u64, built_ms: u64, k: [u64; 4]) -> Builder {
        Builder {
            seq,
            built_ms,
            seeds: Seeds::new(k),
            recs: Default::default(),
            hashes: Default::default(),
            heap: Vec::new(),
            max_heap: MAX_HEAP,
        }
    }

    /// Entries pushed so far (duplicates and all; entries without a source
    /// are not counted).
    pub fn pushed(&self) -> usize {
        self.hashes.iter().map(Vec::len).sum()
    }

    /// Adds one entry: its key and its [`Meta`] (sources, [`ALLOW`] among
    /// them, and expiries; `seq` is not kept). A later push of the same key
    /// replaces it; an entry with no source is skipped. Refused: an IP key
    /// that is not 1 + 16 bytes with a length up to 128, a value longer
    /// than 65,535 bytes, and key bytes past [`MAX_HEAP`] in all.
    pub fn push(&mut self, key: &Key, meta: Meta) -> Result<(), SnapshotError> {
        let mut m = meta;
        m.sources &= Source::ANY | ALLOW;
        if m.sources == 0 {
            return Ok(());
        }
        let tail = meta_bytes(&m);
        let (kind, name, value) = key.parts();
        if kind == IdKind::Ip {
            let (&[len], Ok(a)) = (name, <[u8; 16]>::try_from(value)) else {
                return Err(SnapshotError::BadKey {
                    reason: "an IP key is a length byte and 16 address bytes",
                });
            };
            if len > 128 {
                return Err(SnapshotError::BadKey {
                    reason: "IP prefix length above 128",
                });
            }
            let addr = u128::from_be_bytes(a);
            if len >= 96 && is_v4(addr) {
                let r = &mut self.recs[V4];
                r.extend_from_slice(&(addr as u32).to_le_bytes());
                r.push(len);
                r.extend_from_slice(&tail);
                self.hashes[V4].push(self.seeds.v4(addr as u32, len));
            } else {
                let r = &mut self.recs[V6];
                r.extend_from_slice(&addr.to_le_bytes());
                r.push(len);
                r.extend_from_slice(&tail);
                self.hashes[V6].push(self.seeds.v6(addr, len));
            }
            return Ok(());
        }
        let (Ok(n), Ok(v)) = (u16::try_from(name.len()), u16::try_from(value.len())) else {
            return Err(SnapshotError::BadKey {
                reason: "name or value longer than 65535 bytes",
            });
        };
        let at = self.heap.len() as u64;
        let heap = at + name.len() as u64 + value.len() as u64;
        if heap > self.max_heap {
            return Err(SnapshotError::TooLarge {
                what: "key bytes",
                bytes: heap,
                max: self.max_heap,
            });
        }
        self.heap.extend_from_slice(name);
        self.heap.extend_from_slice(value);
        let r = &mut self.recs[STR];
        r.extend_from_slice(&(at as u32).to_le_bytes());
        r.extend_from_slice(&n.to_le_bytes());
        r.extend_from_slice(&v.to_le_bytes());
        r.push(kind as u8);
        r.extend_from_slice(&tail);
        self.hashes[STR].push(self.seeds.string(kind, name, value));
        Ok(())
    }

    /// Places one record in table `t` of `out`: over an equal key's entry
    /// (its meta replaced) or in the first empty slot of its probe.
    fn place(
        out: &mut [u8],
        t: Table,
        meta: usize,
        hash: u64,
        rec: &[u8],
        same: impl Fn(&[u8]) -> bool,
    ) -> Placed {
        let tag = (hash & 0x7f) as u8;
        for g in t.probe(hash) {
            let w = u64_at(out, t.ctrl + g * GROUP);
            let mut m = bytes_eq(w, tag);
            while m != 0 {
                let i = g * GROUP + m.trailing_zeros() as usize / 8;
                m &= m - 1;
                let s = t.slots + i * t.rec;
                if same(&out[s..s + t.rec]) {
                    let old = out[s + meta];
                    put(out, s + meta, &rec[meta..]);
                    return Placed::Replaced(old);
                }
            }
            let empty = w & HIGH;
            if empty != 0 {
                let i = g * GROUP + empty.trailing_zeros() as usize / 8;
                out[t.ctrl + i] = tag;
                put(out, t.slots + i * t.rec, rec);
                return Placed::New;
            }
        }
        // The table is at most 85 % full and the probe visits every group
        // (their number is prime): some group had an empty slot.
        unreachable!("a snapshot table with no empty slot")
    }

    /// The snapshot file.
    pub fn finish(self) -> Vec<u8> {
        let n: [usize; 3] = std::array::from_fn(|i| self.hashes[i].len());
        let groups = n.map(|n| groups_for(n) as u64);
        let (tables, heap_at, end) =
            layout(groups, self.heap.len() as u64).expect("sizes of entries held in memory");
        let mut out = vec![0u8; end];
        for t in &tables {
            out[t.ctrl..t.slots].fill(EMPTY);
        }
        let mut counts = [0u64; 5];
        let mut by_sources = [0u64; 128];
        let mut prefixes = [0u64; 4];
        for (ti, t) in tables.iter().enumerate() {
            let rec_len = REC[ti];
            let meta = META_AT[ti];
            for (rec, &hash) in self.recs[ti].chunks_exact(rec_len).zip(&self.hashes[ti]) {
                let placed = match ti {
                    V4 | V6 => {
                        let key = &rec[..meta];
                        Builder::place(&mut out, *t, meta, hash, rec, |s| &s[..meta] == key)
                    }
                    _ => {
                        let kind = IdKind::ALL[rec[8] as usize];
                        let (at, nl, vl) = (
                            u32_at(rec, 0) as usize,
                            u16_at(rec, 4) as usize,
                            u16_at(rec, 6) as usize,
                        );
                        let (name, value) = self.heap[at..at + nl + vl].split_at(nl);
                        let heap = &self.heap;
                        Builder::place(&mut out, *t, meta, hash, rec, |s| {
                            str_matches(s, heap, kind, name, value)
                        })
                    }
                };
                let sources = rec[meta] as usize;
                by_sources[sources] += 1;
                match placed {
                    Placed::New => {
                        let kind = if ti == STR { rec[8] } else { IdKind::Ip as u8 };
                        counts[kind as usize] += 1;
                        if ti == V4 {
                            let net = IpNet {
                                addr: V4_MAPPED | u32_at(rec, 0) as u128,
                                len: rec[4],
                            };
                            prefixes = or4(prefixes, prefix_bits(net));
                        } else if ti == V6 {
                            let net = IpNet {
                                addr: u128::from_le_bytes(*rec.first_chunk().expect("36 bytes")),
                                len: rec[16],
                            };
                            prefixes = or4(prefixes, prefix_bits(net));
                        }
                    }
                    Placed::Replaced(old) => by_sources[old as usize] -= 1,
                }
            }
        }
        out[heap_at..].copy_from_slice(&self.heap);

        put(&mut out, off::MAGIC, &MAGIC);
        put(&mut out, off::VERSION, &VERSION.to_le_bytes());
        put(
            &mut out,
            off::HEADER_LEN,
            &(HEADER_LEN as u32).to_le_bytes(),
        );
        put(&mut out, off::FILE_LEN, &(end as u64).to_le_bytes());
        let words = |out: &mut [u8], at: usize, w: &[u64]| {
            for (i, w) in w.iter().enumerate() {
                put(out, at + 8 * i, &w.to_le_bytes());
            }
        };
        words(&mut out, off::SEQ, &[self.seq, self.built_ms]);
        words(&mut out, off::SEEDS, &self.seeds.k);
        words(&mut out, off::ENTRIES, &[counts.iter().sum()]);
        words(&mut out, off::COUNTS, &counts);
        words(&mut out, off::PREFIXES, &prefixes);
        let t: Vec<u64> = tables
            .iter()
            .flat_map(|t| [t.groups as u64, t.ctrl as u64, t.slots as u64])
            .collect();
        words(&mut out, off::TABLES, &t);
        words(
            &mut out,
            off::HEAP,
            &[heap_at as u64, self.heap.len() as u64],
        );
        words(&mut out, off::BY_SOURCES, &by_sources);
        let sum = checksum_of(&out);
        put(&mut out, off::CHECKSUM, &sum.to_le_bytes());
        out
    }
}

fn or4(a: [u64; 4], b: [u64; 4]) -> [u64; 4] {
    std::array::from_fn(|i| a[i] | b[i])
}

/// Builds a snapshot of `entries` as of store change-log position `seq`,
/// built at `built_ms` (Unix ms): [`Builder::push`] for each, then
/// [`Builder::finish`].
pub fn build(
    seq: u64,
    built_ms: u64,
    entries: impl IntoIterator<Item = (Key, Meta)>,
) -> Result<Vec<u8>, SnapshotError> {
    let mut b = Builder::new(seq, built_ms);
    for (k, m) in entries {
        b.push(&k, m)?;
    }
    Ok(b.finish())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::policy::ident::{Identifier, ip_to_u128};
    use crate::policy::lists::IdMap;
    use crate::policy::testing::Rng;

    fn key(kind: IdKind, name: &str, value: &str) -> Key {
        Identifier::new(kind, name, value).unwrap().key()
    }

    fn meta(sources: u8, allow_exp: u64, manual_exp: u64, abs_exp: u64) -> Meta {
        Meta {
            sources,
            allow_exp,
            manual_exp,
            abs_exp,
            seq: 0,
            changed: 0,
            local: 0,
        }
    }

    fn open(bytes: Vec<u8>) -> Snapshot {
        Snapshot::open(Box::new(bytes)).unwrap()
    }

    fn kref(k: &Key) -> KeyRef<'_> {
        let (kind, name, value) = k.parts();
        KeyRef::new(kind, name, value)
    }

    /// One entry of every kind and shape.
    fn every_kind() -> Vec<(Key, Meta)> {
        let d = Source::Manual.bit();
        vec![
            (key(IdKind::Ip, "", "1.2.3.4"), meta(d, 0, 5, 0)),
            (
                key(IdKind::Ip, "", "10.0.0.0/8"),
                meta(Source::Abs.bit(), 0, 0, 7),
            ),
            (key(IdKind::Ip, "", "0.0.0.0/0"), meta(d, 0, 0, 0)),
            (key(IdKind::Ip, "", "2001:db8::1"), meta(ALLOW, 9, 0, 0)),
            (
                key(IdKind::Ip, "", "2001:db8::/32"),
                meta(d | ALLOW, 1, 2, 3),
            ),
            (
                key(IdKind::Ip, "", "::/0"),
                meta(Source::Decoy.bit(), 0, 0, 0),
            ),
            (key(IdKind::Ip, "", "::/80"), meta(d, 0, 0, 0)),
            (key(IdKind::Cookie, "JSESSIONID", "abc"), meta(d, 0, 0, 0)),
            (
                key(IdKind::Token, "", "tok-1"),
                meta(Source::Abs.bit(), 0, 0, MAX_EXPIRY),
            ),
            (
                key(IdKind::ApiKey, "X-Api-Key", "k1"),
                meta(ALLOW, MAX_EXPIRY, 0, 0),
            ),
            (
                key(IdKind::Username, "", "bob smith"),
                meta(Source::InvalidMethod.bit(), 0, 0, 0),
            ),
        ]
    }

    #[test]
    fn every_kind_round_trips() {
        let entries = every_kind();
        let s = open(build(42, 1_700_000_000_000, entries.clone()).unwrap());
        assert_eq!(
            (s.seq(), s.built_ms(), s.len()),
            (42, 1_700_000_000_000, 11)
        );
        assert_eq!(
            s.byte_len(),
            s.footprint().header as usize + {
                let f = s.footprint();
                (f.ipv4 + f.ipv6 + f.strings + f.heap) as usize
            }
        );
        for (k, m) in &entries {
            assert_eq!(s.get(&kref(k)), Some(*m), "{}", k.identifier());
            if let Some(net) = k.ip_net() {
                assert_eq!(s.get_ip(net), Some(*m), "{net}");
            }
        }
        // API-key names in any case; cookie names exactly; values exactly.
        assert!(
            s.get(&KeyRef::new(IdKind::ApiKey, b"x-API-key", b"k1"))
                .is_some()
        );
        assert!(
            s.get(&KeyRef::new(IdKind::ApiKey, b"X-Api-Key", b"K1"))
                .is_none()
        );
        assert!(
            s.get(&KeyRef::new(IdKind::Cookie, b"jsessionid", b"abc"))
                .is_none()
        );
        assert!(s.get(&KeyRef::token(b"tok-1")).is_some());
        assert!(s.get(&KeyRef::username(b"bob smith")).is_some());
        // Misses of every kind, and the same value under another kind.
        for (kind, name, value) in [
            (IdKind::Token, "", "tok-2"),
            (IdKind::Token, "", "tok-"),
            (IdKind::Username, "", "tok-1"),
            (IdKind::Cookie, "JSESSIONID", "abd"),
            (IdKind::ApiKey, "X-Api-Keys", "k1"),
            (IdKind::Ip, "", "1.2.3.5"),
            (IdKind::Ip, "", "1.2.3.4/31"),
            (IdKind::Ip, "", "10.0.0.0/9"),
            (IdKind::Ip, "", "2001:db8::2"),
            (IdKind::Ip, "", "::ffff:0:0/95"),
        ] {
            let k = key(kind, name, value);
            assert_eq!(s.get(&kref(&k)), None, "{}", k.identifier());
        }
        let mut got: Vec<_> = s.iter().map(|(k, m)| (k.identifier(), m)).collect();
        let mut want: Vec<_> = entries.iter().map(|(k, m)| (k.identifier(), *m)).collect();
        got.sort_by_key(|(i, _)| i.to_string());
        want.sort_by_key(|(i, _)| i.to_string());
        assert_eq!(got, want);
        // The keys iter gives are the process's keys: equal to the input.
        for (k, _) in s.iter() {
            assert!(entries.iter().any(|(e, _)| *e == k));
        }
        assert_eq!(s.count(IdKind::Ip), 7);
        for kind in [
            IdKind::Cookie,
            IdKind::Token,
            IdKind::ApiKey,
            IdKind::Username,
        ] {
            assert_eq!(s.count(kind), 1);
        }
        let mut by = [0u64; 128];
        for (_, m) in &entries {
            by[m.sources as usize] += 1;
        }
        assert_eq!(s.by_sources(), &by);
        // IPv4 words: ::/0, 10.0.0.0/8 (/104), 0.0.0.0/0 (/96), ::/80 (it
        // holds ::ffff:0:0/96). Others: ::/0, 2001:db8::/32, ::/80.
        let want = [
            1 << 0,
            (1 << (104 - 64)) | (1 << (96 - 64)) | (1 << (80 - 64)),
            (1 << 0) | (1 << 32),
            1 << (80 - 64),
        ];
        assert_eq!(s.prefixes(), want);
    }

    #[test]
    fn every_source_combination_and_expiry_round_trips() {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        let mut entries = Vec::new();
        for sources in 1..128u8 {
            for exp in [
                0,
                1,
                1_700_000_000_000,
                MAX_EXPIRY - 1,
                MAX_EXPIRY,
                r.next() % MAX_EXPIRY,
            ] {
                let m = meta(sources, exp, r.next() % MAX_EXPIRY, exp ^ 1);
                let v = format!("t{sources}-{exp}-{}", entries.len());
                entries.push((key(IdKind::Token, "", &v), m));
                entries.push((
                    key(
                        IdKind::Ip,
                        "",
                        &format!("10.{sources}.{}.1", entries.len() % 250),
                    ),
                    m,
                ));
            }
        }
        let s = open(build(1, 2, entries.clone()).unwrap());
        for (k, m) in &entries {
            assert_eq!(s.get(&kref(k)), Some(*m));
        }
        // Sources beyond the seven bits are dropped; expiries past 48 bits are
        // stored as the last one; no source at all is no entry.
        let s = open(
            build(
                1,
                2,
                [
                    (
                        key(IdKind::Token, "", "a"),
                        meta(0x80 | ALLOW, u64::MAX, 1 << 48, 0),
                    ),
                    (key(IdKind::Token, "", "b"), meta(0x80, 0, 0, 0)),
                    (key(IdKind::Token, "", "c"), meta(0, 0, 0, 0)),
                ],
            )
            .unwrap(),
        );
        assert_eq!(s.len(), 1);
        assert_eq!(
            s.get(&KeyRef::token(b"a")),
            Some(meta(ALLOW, MAX_EXPIRY, MAX_EXPIRY, 0))
        );
        assert_eq!(s.get(&KeyRef::token(b"b")), None);
    }

    #[test]
    fn duplicates_keep_the_later_entry() {
        let s = open(
            build(
                0,
                0,
                [
                    (key(IdKind::Ip, "", "1.1.1.1"), meta(1, 0, 5, 0)),
                    (key(IdKind::ApiKey, "KEY", "v"), meta(2, 0, 0, 1)),
                    (key(IdKind::Ip, "", "1.1.1.1"), meta(ALLOW, 3, 0, 0)),
                    (key(IdKind::ApiKey, "key", "v"), meta(4, 0, 0, 0)),
                    (key(IdKind::Ip, "", "1.1.1.1"), meta(0, 0, 0, 0)),
                ],
            )
            .unwrap(),
        );
        assert_eq!(s.len(), 2);
        assert_eq!(
            s.get_ip(IpNet::parse("1.1.1.1").unwrap()),
            Some(meta(ALLOW, 3, 0, 0))
        );
        assert_eq!(
            s.get(&KeyRef::new(IdKind::ApiKey, b"Key", b"v")),
            Some(meta(4, 0, 0, 0))
        );
        let mut by = [0u64; 128];
        by[ALLOW as usize] = 1;
        by[4] = 1;
        assert_eq!(s.by_sources(), &by);
        assert_eq!(s.iter().count(), 2);
    }

    #[test]
    fn empty_snapshot() {
        let bytes = build(7, 8, []).unwrap();
        assert_eq!(bytes.len(), HEADER_LEN);
        let s = open(bytes);
        assert!(s.is_empty());
        assert_eq!(s.get(&KeyRef::token(b"x")), None);
        assert_eq!(s.get_ip(IpNet::parse("1.2.3.4").unwrap()), None);
        assert_eq!(s.iter().count(), 0);
        assert_eq!(s.prefixes(), [0; 4]);
        let mut n = 0;
        s.each_ip(ip_to_u128("1.2.3.4".parse().unwrap()), |_, _| {
            n += 1;
            false
        });
        assert_eq!(n, 0);
    }

    fn random_key(r: &mut Rng) -> Key {
        let v = r.next();
        match r.below(10) {
            0..=3 => Key::ip(IpNet::of(V4_MAPPED | (v as u32) as u128, 128)),
            4 => Key::ip(IpNet::of(
                V4_MAPPED | (v as u32) as u128,
                96 + r.below(33) as u8,
            )),
            5 => Key::ip(IpNet::of(
                ((v as u128) << 64) | r.next() as u128,
                r.below(129) as u8,
            )),
            6 => Key::new(KeyRef::token(
                format!("tok{v:x}{}", "x".repeat(r.below(40))).as_bytes(),
            )),
            7 => Key::new(KeyRef::new(
                IdKind::Cookie,
                b"SID",
                format!("c{v}").as_bytes(),
            )),
            8 => {
                let name = ["X-Api-Key", "apikey", "K"][r.below(3)];
                Key::new(KeyRef::new(
                    IdKind::ApiKey,
                    name.as_bytes(),
                    format!("{v:x}").as_bytes(),
                ))
            }
            _ => Key::new(KeyRef::username(format!("user {v}").as_bytes())),
        }
    }

    #[test]
    fn many_random_entries_found_and_absent_ones_not() {
        let mut r = Rng(0x2545_f491_4f6c_dd1d);
        let mut want: HashMap<Key, Meta> = HashMap::new();
        let mut b = Builder::new(3, 4);
        while want.len() < 100_000 {
            let k = random_key(&mut r);
            let m = meta(
                1 + r.below(127) as u8,
                r.next() % MAX_EXPIRY,
                0,
                r.next() % 3,
            );
            b.push(&k, m).unwrap();
            want.insert(k, m);
        }
        let s = open(b.finish());
        assert_eq!(s.len(), want.len() as u64);
        for (k, m) in &want {
            assert_eq!(s.get(&kref(k)), Some(*m), "{}", k.identifier());
        }
        let mut absent = 0;
        while absent < 100_000 {
            let k = random_key(&mut r);
            if !want.contains_key(&k) {
                assert_eq!(s.get(&kref(&k)), None, "{}", k.identifier());
                absent += 1;
            }
        }
        let got: HashMap<Key, Meta> = s.iter().collect();
        assert_eq!(got, want);
        let mut counts = [0u64; 5];
        let mut by = [0u64; 128];
        for (k, m) in &want {
            counts[k.parts().0 as usize] += 1;
            by[m.sources as usize] += 1;
        }
        for kind in IdKind::ALL {
            assert_eq!(s.count(kind), counts[kind as usize], "{kind}");
        }
        assert_eq!(s.by_sources(), &by);
    }

    #[test]
    fn each_ip_agrees_with_the_in_memory_list() {
        // The same ranges in an IdMap and a snapshot: every address finds the
        // same entries, longest prefix first, and the prefix words agree.
        let mut r = Rng(0x1234_5678_9abc_def1);
        let l = IdMap::new();
        let mut b = Builder::new(0, 0);
        let mut nets = Vec::new();
        let mut sources = HashMap::new();
        for i in 0..3000 {
            let net = if i % 2 == 0 {
                IpNet::of(
                    V4_MAPPED | (r.next() as u32 & 0xff0f_0f0f) as u128,
                    96 + r.below(33) as u8,
                )
            } else if i % 7 == 0 {
                IpNet::of(0, r.below(97) as u8)
            } else {
                IpNet::of(
                    (0x2001_0db8u128 << 96) | (r.next() as u128 & 0xff),
                    32 + r.below(97) as u8,
                )
            };
            let src = Source::ALL[r.below(6)];
            l.add(Key::ip(net), src, 0);
            // The map adds a source to a listed key; the builder replaces it.
            *sources.entry(net).or_insert(0) |= src.bit();
            nets.push(net);
        }
        for (net, s) in &sources {
            b.push(&Key::ip(*net), meta(*s, 0, 0, 0)).unwrap();
        }
        let s = open(b.finish());
        let reader = l.reader();
        for i in 0..20_000 {
            let addr = if i % 2 == 0 {
                V4_MAPPED | (r.next() as u32 & 0xff0f_0f0f) as u128
            } else {
                let n = nets[r.below(nets.len())];
                n.addr | (r.next() as u128 & 0xffff)
            };
            let mut a = Vec::new();
            reader.each_ip(addr, |m| {
                a.push(m.sources);
                false
            });
            let mut bs = Vec::new();
            let mut lens = Vec::new();
            s.each_ip(addr, |net, m| {
                bs.push(m.sources);
                lens.push(net.len);
                false
            });
            assert_eq!(a, bs, "{addr:x}");
            assert!(lens.windows(2).all(|w| w[0] > w[1]));
        }
    }

    /// Groups each entry of table `ti` lies past its home group, averaged.
    fn mean_displacement(s: &Snapshot, ti: usize) -> f64 {
        let t = s.h.tables[ti];
        let b: &[u8] = &s.bytes;
        let (mut sum, mut n) = (0usize, 0usize);
        for (k, _) in s.iter() {
            let net = k.ip_net().unwrap();
            let hash = if ti == V4 {
                s.seeds.v4(net.addr as u32, net.len)
            } else {
                s.seeds.v6(net.addr, net.len)
            };
            let want: Vec<u8> = if ti == V4 {
                [&(net.addr as u32).to_le_bytes()[..], &[net.len]].concat()
            } else {
                [&net.addr.to_le_bytes()[..], &[net.len]].concat()
            };
            let slot = t.find(b, hash, |s| s[..META_AT[ti]] == want[..]).unwrap();
            // The slot index from the record's place in the slots array.
            let i = (slot.as_ptr() as usize - b[t.slots..].as_ptr() as usize) / t.rec;
            sum += t.probe(hash).take_while(|&g| g != i / GROUP).count();
            n += 1;
        }
        sum as f64 / n as f64
    }

    #[test]
    fn sequential_keys_spread_like_random_ones() {
        // Feeds list neighbouring addresses; they must not cluster.
        let mut r = Rng(3);
        for (ti, nets) in [
            (
                V4,
                (0..50_000u128)
                    .map(|i| IpNet::of(V4_MAPPED | (0x0a00_0000 + i), 128))
                    .collect::<Vec<_>>(),
            ),
            (
                V6,
                (0..50_000u128)
                    .map(|i| IpNet::of((0x2001_0db8u128 << 96) | i << 64, 64))
                    .collect(),
            ),
        ] {
            let mut b = Builder::new(0, 0);
            for net in &nets {
                b.push(&Key::ip(*net), meta(1, 0, 0, 0)).unwrap();
            }
            let d = mean_displacement(&open(b.finish()), ti);
            let mut b = Builder::new(0, 0);
            for _ in &nets {
                let a = r.next() as u128;
                let net = if ti == V4 {
                    IpNet::of(V4_MAPPED | (a as u32) as u128, 128)
                } else {
                    IpNet::of(a << 64, 64)
                };
                b.push(&Key::ip(net), meta(1, 0, 0, 0)).unwrap();
            }
            let random = mean_displacement(&open(b.finish()), ti);
            assert!(
                d < random * 1.3 + 0.02,
                "table {ti}: {d} groups from home on average, random keys {random}"
            );
        }
    }

    #[test]
    fn entry_cost_bounds_the_file() {
        // Bytes per entry of each table, slack and control bytes included,
        // at sizes from one group up; bounded from a thousand entries (below,
        // rounding the group count up to a prime weighs more than the 48
        // bytes allow, on tables of a few kilobytes).
        for n in [1usize, 7, 100, 1000, 5_000, 30_000] {
            let mut b = Builder::new(0, 0);
            let mut key_bytes = 0;
            for i in 0..n {
                b.push(
                    &Key::ip(IpNet::of(V4_MAPPED | i as u128, 128)),
                    meta(1, 0, 0, 0),
                )
                .unwrap();
                b.push(
                    &Key::ip(IpNet::of((1u128 << 100) | i as u128, 128)),
                    meta(1, 0, 0, 0),
                )
                .unwrap();
                let v = format!("token-{i}");
                key_bytes += v.len();
                b.push(&Key::new(KeyRef::token(v.as_bytes())), meta(1, 0, 0, 0))
                    .unwrap();
            }
            let f = open(b.finish()).footprint();
            if n >= 1000 {
                assert!(
                    f.ipv4 <= n as u64 * entry_cost(IdKind::Ip, 1, 16),
                    "{n}: {f:?}"
                );
                assert!(
                    f.ipv6 <= n as u64 * entry_cost(IdKind::Ip, 1, 16),
                    "{n}: {f:?}"
                );
                assert!(
                    f.strings + f.heap
                        <= n as u64 * entry_cost(IdKind::Token, 0, 0) + key_bytes as u64,
                    "{n}: {f:?}"
                );
            }
            assert_eq!(f.heap, key_bytes as u64);
        }
    }

    #[test]
    fn bad_keys_and_a_heap_past_its_limit_are_refused() {
        let mut b = Builder::new(0, 0);
        let bad_ip = Key::new(KeyRef::new(IdKind::Ip, b"", b"1.2.3.4"));
        assert!(matches!(
            b.push(&bad_ip, meta(1, 0, 0, 0)),
            Err(SnapshotError::BadKey { .. })
        ));
        let long = Key::new(KeyRef::new(IdKind::Ip, &[129], &[0; 16]));
        assert!(matches!(
            b.push(&long, meta(1, 0, 0, 0)),
            Err(SnapshotError::BadKey { .. })
        ));
        let big = vec![b'x'; 70_000];
        let e = b
            .push(&Key::new(KeyRef::token(&big)), meta(1, 0, 0, 0))
            .unwrap_err();
        assert!(matches!(e, SnapshotError::BadKey { .. }), "{e}");
        b.max_heap = 100;
        b.push(&Key::new(KeyRef::token(&[b'a'; 60])), meta(1, 0, 0, 0))
            .unwrap();
        let e = b
            .push(&Key::new(KeyRef::token(&[b'b'; 60])), meta(1, 0, 0, 0))
            .unwrap_err();
        assert_eq!(
            e,
            SnapshotError::TooLarge {
                what: "key bytes",
                bytes: 120,
                max: 100
            }
        );
        assert_eq!(
            e.to_string(),
            "snapshot: key bytes of 120 bytes is more than the format's 100"
        );
        let s = open(b.finish());
        assert_eq!(s.len(), 1);
    }

    fn small() -> Vec<u8> {
        build(5, 6, every_kind()).unwrap()
    }

    /// The kind of error `open` must give for a byte of `small()` changed at `at`.
    fn flip_kind(at: usize) -> &'static str {
        match at {
            0..8 => "magic",
            8..12 => "version",
            12..24 => "size",
            _ => "checksum",
        }
    }

    fn kind_of(e: &SnapshotError) -> &'static str {
        match e {
            SnapshotError::TooShort { .. } => "short",
            SnapshotError::BadMagic => "magic",
            SnapshotError::Version { .. } => "version",
            SnapshotError::Size { .. } => "size",
            SnapshotError::Inconsistent { .. } => "inconsistent",
            SnapshotError::Checksum { .. } => "checksum",
            SnapshotError::TooLarge { .. } | SnapshotError::BadKey { .. } => "build",
        }
    }

    /// Every reader operation, on whatever a damaged file holds.
    fn exercise(s: &Snapshot) {
        for (k, _) in every_kind() {
            s.get(&kref(&k));
        }
        s.get(&KeyRef::token(b"zz"));
        s.each_ip(ip_to_u128("10.1.2.3".parse().unwrap()), |_, _| false);
        s.each_ip(ip_to_u128("2001:db8::5".parse().unwrap()), |_, _| false);
        for (k, m) in s.iter() {
            let _ = (k.identifier(), m);
        }
        let _ = (s.len(), s.prefixes(), s.footprint(), s.by_sources()[1]);
    }

    #[test]
    fn every_truncation_is_refused() {
        let b = small();
        for len in 0..b.len() {
            let e = Snapshot::open(Box::new(b[..len].to_vec())).unwrap_err();
            if len < HEADER_LEN {
                assert_eq!(e, SnapshotError::TooShort { len });
            } else {
                assert_eq!(
                    e,
                    SnapshotError::Size {
                        what: "file",
                        found: len as u64,
                        expected: b.len() as u64
                    }
                );
                assert_eq!(
                    e.to_string(),
                    format!(
                        "snapshot: file is {len} bytes, header says {} (truncated)",
                        b.len()
                    )
                );
            }
            assert_eq!(
                Snapshot::open_verified(Box::new(b[..len].to_vec())).unwrap_err(),
                e
            );
            assert_eq!(Verifier::new(&b[..len]).unwrap_err(), e);
        }
        let mut longer = b.clone();
        longer.push(0);
        let e = Snapshot::open(Box::new(longer)).unwrap_err();
        assert!(e.to_string().ends_with("(trailing bytes)"), "{e}");
    }

    #[test]
    fn every_changed_byte_is_refused_and_never_panics_unchecked() {
        let b = small();
        for at in 0..b.len() {
            for x in [0x01u8, 0x80, 0xff] {
                let mut d = b.clone();
                d[at] ^= x;
                let e = Snapshot::open(Box::new(d.clone())).unwrap_err();
                assert_eq!(kind_of(&e), flip_kind(at), "byte {at} ^ {x:#x}: {e}");
                // Changed after a check: any answer, no panic.
                if let Ok(s) = Snapshot::open_verified(Box::new(d)) {
                    exercise(&s);
                }
            }
        }
        let mut d = b.clone();
        d[HEADER_LEN + 3] ^= 1;
        let e = Snapshot::open(Box::new(d)).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("snapshot: checksum mismatch (file damaged)"),
            "{e}"
        );
    }

    #[test]
    fn damaged_tables_never_panic_or_loop() {
        // Every control byte full (no empty slot to end a probe), and random
        // slot and heap bytes: lookups are bounded by the group count.
        let mut r = Rng(77);
        let mut b = Builder::new(0, 0);
        for _ in 0..500 {
            b.push(&random_key(&mut r), meta(1, 0, 0, 0)).unwrap();
        }
        let clean = b.finish();
        let s = open(clean.clone());
        let tables = s.h.tables;
        for round in 0..20 {
            let mut d = clean.clone();
            for t in tables {
                for c in &mut d[t.ctrl..t.slots] {
                    *c = if round % 2 == 0 {
                        (r.next() & 0x7f) as u8
                    } else {
                        r.next() as u8
                    };
                }
            }
            for x in d[HEADER_LEN..].iter_mut() {
                if r.chance(10) {
                    *x = r.next() as u8;
                }
            }
            // A prefix word with every bit set probes every length.
            d[off::PREFIXES..off::PREFIXES + 32].fill(0xff);
            let s = Snapshot::open_verified(Box::new(d)).unwrap();
            exercise(&s);
            for _ in 0..200 {
                s.get(&kref(&random_key(&mut r)));
            }
        }
    }

    #[test]
    fn verifier_in_steps_equals_one_shot() {
        let mut r = Rng(5);
        let mut b = Builder::new(0, 0);
        let mut keys = std::collections::HashSet::new();
        while keys.len() < 2000 {
            let k = random_key(&mut r);
            b.push(&k, meta(1, 0, 0, 0)).unwrap();
            keys.insert(k);
        }
        let good = b.finish();
        let mut bad = good.clone();
        *bad.last_mut().unwrap() ^= 4;
        for bytes in [&good, &bad] {
            let one = Snapshot::open(Box::new(bytes.clone())).map(|_| ());
            for step in [1usize, 7, 4096, 1 << 20] {
                let mut v = Verifier::new(bytes).unwrap();
                let mut calls = 0;
                let got = loop {
                    calls += 1;
                    if let Some(r) = v.step(bytes, step) {
                        break r;
                    }
                };
                assert_eq!(got, one, "step {step}");
                assert_eq!(
                    calls,
                    (bytes.len() - off::CHECKED).div_ceil(step),
                    "step {step}"
                );
                assert_eq!(v.step(bytes, step), Some(one.clone()));
                if got.is_ok() {
                    assert_eq!(
                        Snapshot::open_verified(Box::new(bytes.clone()))
                            .unwrap()
                            .len(),
                        2000
                    );
                }
            }
            // Other bytes than it started on are refused, not hashed.
            let mut v = Verifier::new(bytes).unwrap();
            assert!(matches!(
                v.step(&bytes[..100], 10),
                Some(Err(SnapshotError::Size { .. }))
            ));
        }
    }

    #[test]
    fn messages_name_what_is_wrong() {
        for (e, m) in [
            (
                SnapshotError::TooShort { len: 3 },
                "snapshot: file is 3 bytes, shorter than its 1272-byte header (truncated)",
            ),
            (
                SnapshotError::BadMagic,
                "snapshot: not a lists snapshot (bad magic)",
            ),
            (
                SnapshotError::Version { found: 9 },
                "snapshot: format version 9, this build reads version 2",
            ),
            (
                SnapshotError::Size {
                    what: "file",
                    found: 1234,
                    expected: 5678,
                },
                "snapshot: file is 1234 bytes, header says 5678 (truncated)",
            ),
            (
                SnapshotError::Size {
                    what: "heap offset",
                    found: 1,
                    expected: 2,
                },
                "snapshot: heap offset is 1, the layout says 2 (header damaged)",
            ),
            (
                SnapshotError::Inconsistent {
                    what: "entry counts per kind",
                },
                "snapshot: entry counts per kind do not add up (header damaged)",
            ),
            (
                SnapshotError::Checksum {
                    expected: 1,
                    found: 2,
                },
                "snapshot: checksum mismatch (file damaged): header says 0000000000000001, contents hash to 0000000000000002",
            ),
        ] {
            assert_eq!(e.to_string(), m);
        }
    }

    #[test]
    fn header_fields_are_checked_without_the_checksum() {
        // open_verified skips the checksum, not the layout.
        let b = small();
        for (at, what) in [
            (off::TABLES, "kind"),
            (off::TABLES + 8, "size"),
            (off::HEAP, "size"),
            (off::HEAP + 8, "size"),
            (off::ENTRIES, "inconsistent"),
            (off::COUNTS + 8, "inconsistent"),
            (off::BY_SOURCES + 8, "inconsistent"),
        ] {
            let mut d = b.clone();
            d[at] ^= 1;
            let e = Snapshot::open_verified(Box::new(d.clone())).unwrap_err();
            if what != "kind" {
                assert_eq!(kind_of(&e), what, "{at}: {e}");
            }
            assert_eq!(Verifier::new(&d).unwrap_err(), e);
        }
    }

    /// Writes the fuzz target's seeds (fuzz/seeds/snapshot): run by hand
    /// with `cargo test --lib write_fuzz_seeds -- --ignored` after a format
    /// change. Even mode bytes: a file; odd: entries to build from, in the
    /// target's encoding (fuzz/fuzz_targets/snapshot.rs).
    #[test]
    #[ignore]
    fn write_fuzz_seeds() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/snapshot");
        std::fs::create_dir_all(&dir).unwrap();
        let file = |mode: u8, bytes: &[u8]| [&[mode][..], bytes].concat();
        let mut entries = vec![1u8];
        for (k, m) in every_kind() {
            let (kind, name, value) = k.parts();
            entries.push(kind as u8);
            if kind == IdKind::Ip {
                entries.extend_from_slice(name);
                entries.extend_from_slice(value);
            } else {
                if kind.has_name() {
                    entries.push(name.len() as u8);
                }
                entries.push(value.len() as u8);
                entries.extend_from_slice(name);
                entries.extend_from_slice(value);
            }
            entries.extend_from_slice(&meta_bytes(&m));
        }
        for (name, bytes) in [
            ("every-kind.snap", file(0, &small())),
            ("empty.snap", file(2, &build(0, 0, []).unwrap())),
            ("every-kind.entries", entries),
        ] {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}
