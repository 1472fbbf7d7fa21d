//! The allow and deny lists.
//!
//! An [`IdMap`] is a lock-free concurrent hash map (papaya) from identifier
//! key to [`Meta`]: readers never wait, a single insert or removal costs the
//! same whatever the size of the list, and its incremental resizing has no
//! stop-the-world pause. Bulk replacement (an ABS list of a million entries)
//! builds a new map aside and the engine swaps it in whole.
//!
//! One entry carries every deny source that listed it, so a request probes
//! one map once per identifier and the switches (`enable_abs_attack`,
//! `enable_ase_detected_attack`) filter the sources at lookup time: turning a
//! switch off stops those entries from matching at once.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::ident::{IdKind, IpKeyBuf, IpNet, Key, KeyRef, PrehashedState};

/// Where a deny entry came from. The numbering is part of the C ABI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Source {
    /// Added by an operator (CLI, C API).
    Manual = 0,
    /// Fetched from ABS.
    Abs = 1,
    /// Real-time: the client probed a decoy API.
    Decoy = 2,
    /// Real-time: protocol not allowed by the API.
    InvalidProtocol = 3,
    /// Real-time: method not allowed by the API.
    InvalidMethod = 4,
    /// Real-time: content type not allowed by the API.
    InvalidContentType = 5,
}

impl Source {
    /// All sources in the order `view_blacklist all` prints them.
    pub const ALL: [Source; 6] = [
        Source::Manual,
        Source::Abs,
        Source::Decoy,
        Source::InvalidProtocol,
        Source::InvalidMethod,
        Source::InvalidContentType,
    ];

    /// The bit of this source in a source mask.
    pub const fn bit(self) -> u8 {
        1 << self as u8
    }

    /// The real-time sources (ASE detected attacks).
    pub const REALTIME: u8 = Source::Decoy.bit()
        | Source::InvalidProtocol.bit()
        | Source::InvalidMethod.bit()
        | Source::InvalidContentType.bit();

    /// Every source.
    pub const ANY: u8 = 0b11_1111;

    /// The `view_blacklist` filter word (`manual`, `abs_detected`, `decoy`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Manual => "manual",
            Source::Abs => "abs_detected",
            Source::Decoy => "decoy",
            Source::InvalidProtocol => "invalid_protocol",
            Source::InvalidMethod => "invalid_method",
            Source::InvalidContentType => "invalid_content_type",
        }
    }

    /// Parses a `view_blacklist` filter word (also accepts `abs`).
    pub fn parse(s: &str) -> Option<Source> {
        if s == "abs" {
            return Some(Source::Abs);
        }
        Source::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Converts the C ABI number.
    pub fn from_u32(v: u32) -> Option<Source> {
        Source::ALL.get(v as usize).copied()
    }

    /// Whether this is one of the four real-time sources.
    pub fn is_realtime(self) -> bool {
        Source::REALTIME & self.bit() != 0
    }

    /// The section title ASE's `view_blacklist` prints.
    pub fn title(self) -> &'static str {
        match self {
            Source::Manual => "Manual Blacklist",
            Source::Abs => "ABS Generated Blacklist",
            Source::Decoy => "Realtime Decoy Blacklist",
            Source::InvalidProtocol => "Realtime Protocol Blacklist",
            Source::InvalidMethod => "Realtime Method Blacklist",
            Source::InvalidContentType => "Realtime Content-Type Blacklist",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The bit of the allow list in [`Meta::sources`], above the six deny sources:
/// one map holds both lists, so a request probes each identifier once.
pub const ALLOW: u8 = 1 << 6;

/// Estimated bytes one entry whose key is `key_len` bytes long costs in an
/// [`IdMap`]: the key bytes plus [`ENTRY_OVERHEAD`]. This is what
/// `attack_list_memory` is measured in.
pub const fn entry_memory(key_len: usize) -> u64 {
    key_len as u64 + ENTRY_OVERHEAD
}

/// Bytes an [`IdMap`] entry costs besides its key bytes, measured with glibc
/// malloc: 1,000,000 entries of the mix in benches/abs_apply.rs (keys of 21.3
/// bytes on average) allocate 132.5 bytes each (126 MiB in all). They are the
/// papaya entry, a [`Key`] and a [`Meta`] (64 bytes, an 80-byte malloc chunk),
/// its table slot (a pointer and a control byte in a power-of-two table at
/// most 75 % full: 19 bytes each at one million), and the key's own chunk (its
/// length plus 8 rounded up to 16, at least 32). The 12 bytes of rounding of a
/// typical key are counted here, so short keys are estimated within a few
/// bytes and long ones slightly above what they cost.
pub const ENTRY_OVERHEAD: u64 = 112;

/// What the lists know of one identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Meta {
    /// Bit mask of the deny [`Source`]s listing it, plus [`ALLOW`] when it is
    /// on the allow list.
    pub sources: u8,
    /// Expiry of the allow listing in Unix milliseconds; 0 = never.
    pub allow_exp: u64,
    /// Expiry of the manual listing in Unix milliseconds; 0 = never.
    pub manual_exp: u64,
    /// Expiry of the ABS listing in Unix milliseconds; 0 = never.
    pub abs_exp: u64,
    /// Insertion order, for listing in the order entries were added.
    pub seq: u64,
}

impl Meta {
    /// Whether the identifier is on the allow list and unexpired at `now()`.
    pub fn allowed(&self, now: &mut impl FnMut() -> u64) -> bool {
        self.sources & ALLOW != 0 && (self.allow_exp == 0 || now() < self.allow_exp)
    }

    fn expiry(&self, s: Source) -> u64 {
        match s {
            Source::Manual => self.manual_exp,
            Source::Abs => self.abs_exp,
            _ => 0,
        }
    }

    /// The first source, among those in `enabled`, that lists this entry and
    /// has not expired at `now()`. The clock is read only when an expiry is set.
    pub fn active(&self, enabled: u8, now: &mut impl FnMut() -> u64) -> Option<Source> {
        let live = self.sources & enabled & Source::ANY;
        if live == 0 {
            return None;
        }
        Source::ALL.into_iter().find(|&s| {
            live & s.bit() != 0 && {
                let e = self.expiry(s);
                e == 0 || now() < e
            }
        })
    }

    /// Whether any listing of this entry (deny or allow) is unexpired at `now`.
    pub fn alive(&self, now: u64) -> bool {
        self.active(Source::ANY, &mut || now).is_some() || self.allowed(&mut || now)
    }
}

/// One list: identifier key to [`Meta`], plus what the request path needs
/// to skip probes that cannot match.
pub struct IdMap {
    map: papaya::HashMap<Key, Meta, PrehashedState>,
    /// Entries per kind; a kind with none is not probed.
    per_kind: [AtomicU64; 5],
    /// Bit `n` set: some IP range of prefix length `n` (< 128) is listed,
    /// so a lookup probes `/n` too. Words 0-1 are ranges that hold IPv4
    /// (mapped) addresses, words 2-3 ranges that hold other IPv6 addresses, so
    /// an IPv4 client never probes an IPv6-only length. Only grows until the
    /// next rebuild.
    prefixes: [AtomicU64; 4],
    seq: AtomicU64,
    /// Entries with a deny source, and entries on the allow list.
    deny_len: AtomicU64,
    allow_len: AtomicU64,
}

impl Default for IdMap {
    fn default() -> Self {
        IdMap::new()
    }
}

impl fmt::Debug for IdMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdMap").field("len", &self.len()).finish()
    }
}

impl IdMap {
    /// An empty list.
    pub fn new() -> IdMap {
        IdMap::with_capacity(0)
    }

    /// An empty list sized for `n` entries.
    pub fn with_capacity(n: usize) -> IdMap {
        IdMap {
            // Blocking resize: with incremental resizing a grown map keeps its
            // readers probing the old table until enough later writes finish
            // the migration (measured: 2 µs per lookup at 1M entries, against
            // 0.1 µs). A blocking resize happens on the writer's thread, once per
            // doubling (amortised O(1) per insert); readers never wait for it.
            map: papaya::HashMap::builder()
                .capacity(n)
                .hasher(PrehashedState)
                .resize_mode(papaya::ResizeMode::Blocking)
                .build(),
            per_kind: Default::default(),
            prefixes: Default::default(),
            seq: AtomicU64::new(1),
            deny_len: AtomicU64::new(0),
            allow_len: AtomicU64::new(0),
        }
    }

    /// Number of identifiers on either list.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Identifiers on the deny list (every source counted once).
    pub fn deny_len(&self) -> u64 {
        self.deny_len.load(Relaxed)
    }

    /// Identifiers on the allow list.
    pub fn allow_len(&self) -> u64 {
        self.allow_len.load(Relaxed)
    }

    /// Keeps the per-kind and per-list counts in step with one entry's change
    /// from `old` to `new` source bits (0 = absent).
    fn account(&self, kind: IdKind, old: u8, new: u8) {
        let step = |c: &AtomicU64, was: bool, is: bool| match (was, is) {
            (false, true) => {
                c.fetch_add(1, Relaxed);
            }
            (true, false) => {
                c.fetch_sub(1, Relaxed);
            }
            _ => {}
        };
        step(&self.per_kind[kind as usize], old != 0, new != 0);
        step(
            &self.deny_len,
            old & Source::ANY != 0,
            new & Source::ANY != 0,
        );
        step(&self.allow_len, old & ALLOW != 0, new & ALLOW != 0);
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries of one kind.
    pub fn count(&self, kind: IdKind) -> u64 {
        self.per_kind[kind as usize].load(Relaxed)
    }

    fn note_ip_net(&self, net: IpNet) {
        let len = net.len;
        if len == 128 {
            return;
        }
        let bit = 1u64 << (len % 64);
        let word = (len / 64) as usize;
        let mapped = crate::policy::ident::ip_to_u128(std::net::Ipv4Addr::UNSPECIFIED.into());
        let top = |l: u8| {
            if l == 0 {
                0
            } else {
                u128::MAX << (128 - l as u32)
            }
        };
        if (net.addr ^ mapped) & top(len.min(96)) == 0 {
            self.prefixes[word].fetch_or(bit, Relaxed);
        }
        if len < 96 || (net.addr ^ mapped) & top(96) != 0 {
            self.prefixes[2 + word].fetch_or(bit, Relaxed);
        }
    }

    /// Adds `source` (with an expiry in Unix ms, 0 = never) to the entry for `key`.
    /// Returns true when the identifier was not on the deny list before.
    pub fn add(&self, key: Key, source: Source, expiry: u64) -> bool {
        self.set(key, source.bit(), expiry) & Source::ANY == 0
    }

    /// Puts `key` on the allow list (expiry in Unix ms, 0 = never). Returns true
    /// when it was not on the allow list before.
    pub fn add_allow(&self, key: Key, expiry: u64) -> bool {
        self.set(key, ALLOW, expiry) & ALLOW == 0
    }

    /// Sets one bit (a source or [`ALLOW`]) and its expiry; returns the old bits.
    fn set(&self, key: Key, bit: u8, expiry: u64) -> u8 {
        if let Some(net) = key.ip_net() {
            self.note_ip_net(net);
        }
        let kind = key.parts().0;
        let m = self.map.pin();
        let mut before = 0u8;
        let seq = self.seq.fetch_add(1, Relaxed);
        m.compute(key, |old| {
            let mut meta = match old {
                Some((_, v)) => *v,
                None => Meta {
                    seq,
                    ..Meta::default()
                },
            };
            before = meta.sources;
            meta.sources |= bit;
            if bit == ALLOW {
                meta.allow_exp = expiry;
            } else if bit == Source::Manual.bit() {
                meta.manual_exp = expiry;
            } else if bit == Source::Abs.bit() {
                meta.abs_exp = expiry;
            }
            papaya::Operation::<Meta, ()>::Insert(meta)
        });
        self.account(kind, before, before | bit);
        before
    }

    /// Takes the bits in `mask` (deny sources and/or [`ALLOW`]) off the entry
    /// for `key`; an entry left with none is removed. Returns the bits taken off.
    pub fn remove(&self, key: &Key, mask: u8) -> u8 {
        let m = self.map.pin();
        let mut before = 0u8;
        m.compute(key.clone(), |old| match old {
            None => {
                before = 0;
                papaya::Operation::Abort(())
            }
            Some((_, v)) => {
                before = v.sources;
                let left = v.sources & !mask;
                if v.sources & mask == 0 {
                    papaya::Operation::Abort(())
                } else if left == 0 {
                    papaya::Operation::Remove
                } else {
                    let mut n = *v;
                    n.sources = left;
                    if mask & Source::Manual.bit() != 0 {
                        n.manual_exp = 0;
                    }
                    if mask & Source::Abs.bit() != 0 {
                        n.abs_exp = 0;
                    }
                    if mask & ALLOW != 0 {
                        n.allow_exp = 0;
                    }
                    papaya::Operation::Insert(n)
                }
            }
        });
        let taken = before & mask;
        if taken != 0 {
            self.account(key.parts().0, before, before & !mask);
        }
        taken
    }

    /// Takes the sources in `mask` off every entry. Returns the number of entries
    /// that lost a source. Costs time proportional to the list: for clear commands.
    pub fn remove_all(&self, mask: u8) -> usize {
        let keys: Vec<Key> = {
            let m = self.map.pin();
            m.iter()
                .filter(|(_, v)| v.sources & mask != 0)
                .map(|(k, _)| k.clone())
                .collect()
        };
        keys.iter().filter(|k| self.remove(k, mask) != 0).count()
    }

    /// The entry for a key, if listed.
    pub fn get(&self, key: &KeyRef<'_>) -> Option<Meta> {
        self.reader().get(key)
    }

    /// The first active source (within `enabled`) listing `key`.
    pub fn lookup(
        &self,
        key: &KeyRef<'_>,
        enabled: u8,
        now: &mut impl FnMut() -> u64,
    ) -> Option<Source> {
        self.reader().lookup(key, enabled, now)
    }

    /// The first active source listing the address itself or any listed range
    /// containing it (IPv4 as IPv4-mapped).
    pub fn lookup_ip(
        &self,
        addr: u128,
        enabled: u8,
        now: &mut impl FnMut() -> u64,
    ) -> Option<Source> {
        let host = IpKeyBuf::new(IpNet::of(addr, 128));
        self.reader().lookup_ip(addr, &host.key(), enabled, now)
    }

    /// Pins the list for a series of lookups (one request): the pin is the only
    /// cost a lookup shares, so it is paid once.
    pub fn reader(&self) -> Reader<'_> {
        Reader {
            list: self,
            map: self.map.pin(),
        }
    }

    /// Every entry with a source in `mask`, in the order they were first added.
    pub fn entries(&self, mask: u8) -> Vec<(Key, Meta)> {
        let m = self.map.pin();
        let mut v: Vec<(Key, Meta)> = m
            .iter()
            .filter(|(_, meta)| meta.sources & mask != 0)
            .map(|(k, meta)| (k.clone(), *meta))
            .collect();
        v.sort_by_key(|(_, meta)| meta.seq);
        v
    }

    /// A copy of this list without the sources in `mask`, with room for `extra`
    /// more entries: the start of a bulk replacement built aside.
    pub fn copy_without(&self, mask: u8, extra: usize) -> IdMap {
        let n = IdMap::with_capacity(self.len() + extra);
        let m = self.map.pin();
        let mut items: Vec<(&Key, &Meta)> = m.iter().collect();
        items.sort_by_key(|(_, meta)| meta.seq);
        for (k, meta) in items {
            let left = meta.sources & !mask;
            if left == 0 {
                continue;
            }
            let mut meta = *meta;
            meta.sources = left;
            if mask & Source::Abs.bit() != 0 {
                meta.abs_exp = 0;
            }
            if mask & Source::Manual.bit() != 0 {
                meta.manual_exp = 0;
            }
            if mask & ALLOW != 0 {
                meta.allow_exp = 0;
            }
            meta.seq = n.seq.fetch_add(1, Relaxed);
            if let Some(net) = k.ip_net() {
                n.note_ip_net(net);
            }
            n.account(k.parts().0, 0, left);
            n.map.pin().insert(k.clone(), meta);
        }
        n
    }

    /// Drops entries whose every source has expired by `now` (housekeeping;
    /// expired entries already stop matching at lookup).
    pub fn purge_expired(&self, now: u64) -> usize {
        let dead: Vec<Key> = {
            let m = self.map.pin();
            m.iter()
                .filter(|(_, v)| !v.alive(now))
                .map(|(k, _)| k.clone())
                .collect()
        };
        dead.iter()
            .filter(|k| self.remove(k, Source::ANY | ALLOW) != 0)
            .count()
    }
}

/// A pinned list: lookups for one request.
pub struct Reader<'l> {
    list: &'l IdMap,
    map: papaya::HashMapRef<'l, Key, Meta, PrehashedState, papaya::LocalGuard<'l>>,
}

impl Reader<'_> {
    /// Whether any entry of `kind` is listed (lookups of an absent kind are skipped).
    pub fn has(&self, kind: IdKind) -> bool {
        self.list.per_kind[kind as usize].load(Relaxed) != 0
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The entry for a key, if listed.
    pub fn get(&self, key: &KeyRef<'_>) -> Option<Meta> {
        if !self.has(key.kind()) {
            return None;
        }
        self.map.get(key).copied()
    }

    /// The first active source (within `enabled`) listing `key`.
    pub fn lookup(
        &self,
        key: &KeyRef<'_>,
        enabled: u8,
        now: &mut impl FnMut() -> u64,
    ) -> Option<Source> {
        self.get(key)?.active(enabled, now)
    }

    /// Calls `f` with the entry of `addr` (whose host key is `host`) and of each
    /// listed range containing it, longest prefix first, until `f` returns true.
    pub fn each_ip(&self, addr: u128, host: &KeyRef<'_>, mut f: impl FnMut(Meta) -> bool) {
        if !self.has(IdKind::Ip) {
            return;
        }
        if self.map.get(host).is_some_and(|m| f(*m)) {
            return;
        }
        let words = if crate::policy::ident::is_v4(addr) {
            &self.list.prefixes[..2]
        } else {
            &self.list.prefixes[2..]
        };
        for (word, bits) in words.iter().enumerate().rev() {
            let mut bits = bits.load(Relaxed);
            while bits != 0 {
                let top = 63 - bits.leading_zeros() as u8;
                bits &= !(1u64 << top);
                let buf = IpKeyBuf::new(IpNet::of(addr, word as u8 * 64 + top));
                if self.map.get(&buf.key()).is_some_and(|m| f(*m)) {
                    return;
                }
            }
        }
    }

    /// The first active source listing `addr` (whose host key is `host`) or a
    /// listed range containing it, longest prefix first.
    pub fn lookup_ip(
        &self,
        addr: u128,
        host: &KeyRef<'_>,
        enabled: u8,
        now: &mut impl FnMut() -> u64,
    ) -> Option<Source> {
        let mut found = None;
        self.each_ip(addr, host, |m| {
            found = m.active(enabled, now);
            found.is_some()
        });
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ident::Identifier;

    fn key(kind: IdKind, name: &str, value: &str) -> Key {
        Identifier::new(kind, name, value).unwrap().key()
    }

    #[test]
    fn sources_filter_and_expiry() {
        let l = IdMap::new();
        l.add(key(IdKind::Token, "", "t1"), Source::Abs, 1000);
        let k = KeyRef::new(IdKind::Token, b"", b"t1");
        assert_eq!(l.lookup(&k, Source::ANY, &mut || 999), Some(Source::Abs));
        assert_eq!(
            l.lookup(&k, Source::ANY, &mut || 1000),
            None,
            "expired at its instant"
        );
        assert_eq!(
            l.lookup(&k, Source::Manual.bit(), &mut || 0),
            None,
            "abs switched off"
        );
        l.add(key(IdKind::Token, "", "t1"), Source::Manual, 0);
        assert_eq!(
            l.lookup(&k, Source::ANY, &mut || 5000),
            Some(Source::Manual)
        );
        assert_eq!(l.len(), 1);
        assert_eq!(
            l.remove(&key(IdKind::Token, "", "t1"), Source::Manual.bit()),
            Source::Manual.bit()
        );
        assert_eq!(l.len(), 1, "abs listing remains");
        assert_eq!(l.remove_all(Source::Abs.bit()), 1);
        assert!(l.is_empty());
        assert_eq!(l.count(IdKind::Token), 0);
    }

    #[test]
    fn one_map_holds_both_lists() {
        let l = IdMap::new();
        let k = || key(IdKind::Token, "", "t");
        assert!(l.add(k(), Source::Manual, 0));
        assert!(l.add_allow(k(), 0));
        assert!(!l.add_allow(k(), 0), "already allowed");
        assert_eq!((l.len(), l.deny_len(), l.allow_len()), (1, 1, 1));
        let m = l.get(&KeyRef::new(IdKind::Token, b"", b"t")).unwrap();
        assert!(m.allowed(&mut || 0));
        assert_eq!(m.active(Source::ANY, &mut || 0), Some(Source::Manual));
        assert_eq!(l.remove(&k(), ALLOW), ALLOW);
        assert_eq!((l.len(), l.deny_len(), l.allow_len()), (1, 1, 0));
        assert_eq!(l.entries(ALLOW).len(), 0);
        l.add_allow(k(), 10);
        assert!(
            !l.get(&KeyRef::new(IdKind::Token, b"", b"t"))
                .unwrap()
                .allowed(&mut || 10)
        );
        assert_eq!(l.remove_all(Source::ANY), 1);
        assert_eq!((l.len(), l.deny_len(), l.allow_len()), (1, 0, 1));
        assert_eq!(l.purge_expired(11), 1);
        assert!(l.is_empty());
        assert_eq!(l.count(IdKind::Token), 0);
    }

    #[test]
    fn cidr_and_mapped_addresses() {
        let l = IdMap::new();
        l.add(key(IdKind::Ip, "", "10.0.0.0/8"), Source::Manual, 0);
        l.add(key(IdKind::Ip, "", "2001:db8::/32"), Source::Manual, 0);
        l.add(key(IdKind::Ip, "", "::ffff:7.7.7.7"), Source::Manual, 0);
        let hit = |s: &str| {
            let a = crate::policy::ident::ip_to_u128(s.parse().unwrap());
            l.lookup_ip(a, Source::ANY, &mut || 0).is_some()
        };
        assert!(hit("10.200.3.4"));
        assert!(!hit("11.0.0.1"));
        assert!(hit("2001:db8:ffff::1"));
        assert!(!hit("2001:db9::1"));
        assert!(hit("7.7.7.7"));
        assert!(hit("::ffff:10.1.1.1"));
        // Ranges written in IPv6 that hold IPv4 addresses still match IPv4 clients.
        let l2 = IdMap::new();
        l2.add(
            key(IdKind::Ip, "", "::ffff:192.168.0.0/112"),
            Source::Manual,
            0,
        );
        l2.add(key(IdKind::Ip, "", "::/1"), Source::Manual, 0);
        let hit2 = |s: &str| {
            let a = crate::policy::ident::ip_to_u128(s.parse().unwrap());
            l2.lookup_ip(a, Source::ANY, &mut || 0).is_some()
        };
        assert!(hit2("192.168.3.3"));
        assert!(hit2("8.8.8.8"), "::/1 holds every IPv4-mapped address");
        assert!(hit2("2001:db8::1"));
        assert!(!hit2("ff02::1"));
    }

    #[test]
    fn entries_in_insertion_order_and_copy_without() {
        let l = IdMap::new();
        for i in 0..50 {
            l.add(key(IdKind::Username, "", &format!("u{i}")), Source::Abs, 0);
        }
        l.add(key(IdKind::Username, "", "u7"), Source::Manual, 0);
        let e = l.entries(Source::ANY);
        assert_eq!(e.len(), 50);
        assert_eq!(e[0].0.identifier().value, "u0");
        assert_eq!(e[49].0.identifier().value, "u49");
        let c = l.copy_without(Source::Abs.bit(), 0);
        assert_eq!(c.len(), 1);
        assert_eq!(c.entries(Source::ANY)[0].0.identifier().value, "u7");
    }
}
