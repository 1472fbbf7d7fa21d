//! The lists as a request sees them: the host's snapshot under this
//! process's overlay.
//!
//! The snapshot ([`Snapshot`]) is an immutable file every process on the
//! host maps, so the page cache holds one copy of a million entries whatever
//! the number of processes. The overlay is a small [`IdMap`] of the changes
//! made since that snapshot was built (list edits read from the store's log,
//! real-time detections of this process). An overlay entry holds the whole
//! state of its identifier and hides the snapshot's entry for the same key;
//! an overlay entry with no source left ("hiding") says the snapshot's entry
//! was removed. A clear (`clear_blacklist`, `disable_ase_detected_attack`)
//! would have to hide every snapshot entry; instead the cleared sources are
//! masked off every snapshot entry at lookup ([`Lists::cleared`]).
//!
//! Readers take no lock (the overlay is lock-free, the rest is immutable or
//! atomic). Writers go through the enforcer's writer lock; a real-time
//! detection on the request path ([`Lists::record`]) is a lock-free update
//! like any overlay insert.
//!
//! Without a snapshot (a host where none was built yet, or tests) the
//! overlay is the whole list and this is the plain [`IdMap`] it wraps.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU8, AtomicU64};

use super::ident::{IdKind, IpNet, Key, KeyRef};
use super::lists::{ALLOW, IdMap, Meta, Reader, Source, each_net, with_bit};
use super::snapshot::Snapshot;

/// The bits a clear can take off snapshot entries: the deny sources and the allow list.
const ALL_BITS: u8 = Source::ANY | ALLOW;

/// Both lists: an optional snapshot, the overlay of later changes and the
/// sources cleared since the snapshot.
pub struct Lists {
    snap: Option<Arc<Snapshot>>,
    /// The snapshot's IP range lengths and kinds, read once.
    snap_prefixes: [u64; 4],
    snap_kinds: [bool; 5],
    overlay: IdMap,
    /// Overlay entries per kind, hiding ones included: a kind with any is
    /// probed in the overlay.
    overlay_kinds: [AtomicU64; 5],
    /// Bits (deny sources, [`ALLOW`]) taken off every snapshot entry since
    /// the snapshot was built.
    cleared: AtomicU8,
    /// The log position of the last clear of each bit of `cleared`.
    cleared_at: [AtomicU64; 7],
    /// Snapshot entries hidden by an overlay entry, by the snapshot
    /// entry's source bits: the list sizes stay exact without a scan.
    hidden: Box<[AtomicU64; 128]>,
}

impl std::fmt::Debug for Lists {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lists")
            .field("snapshot_seq", &self.snap.as_ref().map(|s| s.seq()))
            .field("overlay", &self.overlay.len())
            .field("cleared", &self.cleared.load(Relaxed))
            .finish()
    }
}

/// The room an overlay on a snapshot starts with. The host rebuilds the
/// snapshot after 5,000 changes, so an overlay seldom outgrows it; growing
/// rehashes the whole map in one go (about 1 ms at 8,000 entries), which an
/// event loop applying changes would feel as one long tick. 16,384 entries
/// cost about 180 KB a process; lookups probe the overlay only for kinds
/// it holds.
const OVERLAY_CAPACITY: usize = 16_384;

impl Default for Lists {
    fn default() -> Self {
        Lists::new(None, IdMap::new())
    }
}

impl Lists {
    /// The lists of `snap` (if any) under `overlay`. `overlay` must hold
    /// only entries made through [`Lists`] for this snapshot, or, without a
    /// snapshot, any entries (a full load).
    pub fn new(snap: Option<Arc<Snapshot>>, overlay: IdMap) -> Lists {
        let (snap_prefixes, snap_kinds) = match &snap {
            Some(s) => (s.prefixes(), IdKind::ALL.map(|k| s.count(k) != 0)),
            None => ([0; 4], [false; 5]),
        };
        // With a snapshot, hiding entries count too (they must be probed);
        // without one, there is nothing to hide and the listed ones suffice.
        let overlay_kinds: [AtomicU64; 5] = if snap.is_some() {
            let kinds: [AtomicU64; 5] = Default::default();
            for (k, _) in overlay.all_entries() {
                kinds[k.parts().0 as usize].fetch_add(1, Relaxed);
            }
            kinds
        } else {
            IdKind::ALL.map(|k| AtomicU64::new(overlay.count(k)))
        };
        Lists {
            snap,
            snap_prefixes,
            snap_kinds,
            overlay,
            overlay_kinds,
            cleared: AtomicU8::new(0),
            cleared_at: Default::default(),
            hidden: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }

    /// The snapshot, if any.
    pub fn snapshot(&self) -> Option<&Arc<Snapshot>> {
        self.snap.as_ref()
    }

    /// Entries in the overlay (hiding ones included).
    pub fn overlay_len(&self) -> usize {
        self.overlay.len()
    }

    /// The bits cleared from every snapshot entry.
    pub fn cleared(&self) -> u8 {
        self.cleared.load(Relaxed)
    }

    /// Starts a series of lookups (one request).
    #[inline]
    pub fn reader(&self) -> ListsReader<'_> {
        ListsReader {
            lists: self,
            overlay: self.overlay.reader(),
        }
    }

    /// The overlay's entry for `key`, hiding ones included.
    fn overlay_get(&self, key: &KeyRef<'_>) -> Option<Meta> {
        self.overlay.reader().probe(key)
    }

    /// The snapshot's entry for `key` with the cleared bits off, and its
    /// bits as stored (0: not in the snapshot).
    fn snap_entry(&self, key: &KeyRef<'_>) -> (Option<Meta>, u8) {
        let Some(s) = &self.snap else {
            return (None, 0);
        };
        let m = if key.kind() == IdKind::Ip {
            key_net(key).and_then(|n| s.get_ip(n))
        } else {
            s.get(key)
        };
        match m {
            Some(m) => {
                let raw = m.sources;
                (Some(m.without(self.cleared.load(Relaxed))), raw)
            }
            None => (None, 0),
        }
    }

    /// Sets the entry for `key` to `f(current)`, where the current entry is
    /// the overlay's or else the snapshot's; `changed` is the log position
    /// of a change read from the log (`None`: a detection of this process,
    /// which keeps the entry's). Keeps the counts of hidden snapshot
    /// entries. Returns the entry before and after.
    fn change(&self, key: Key, changed: Option<u64>, f: impl Fn(Meta) -> Meta) -> (Meta, Meta) {
        let kind = key.parts().0;
        let (base, raw) = self.snap_entry(&key.borrowed());
        let base = base.unwrap_or_default();
        let (old, new) = self.overlay.update(key, |old| {
            let m = f(old.unwrap_or(base));
            Meta {
                changed: changed.unwrap_or(m.changed),
                ..m
            }
        });
        if old.is_none() {
            self.overlay_kinds[kind as usize].fetch_add(1, Relaxed);
            if raw != 0 {
                self.hidden[raw as usize & 127].fetch_add(1, Relaxed);
            }
        }
        (old.unwrap_or(base), new)
    }

    /// Adds `source` (expiry in Unix ms, 0 = never) to `key`'s entry.
    /// Returns true when the identifier was not on the deny list before.
    pub fn add(&self, key: Key, source: Source, expiry: u64, changed: u64) -> bool {
        let bit = source.bit();
        let (old, _) = self.change(key, Some(changed), |m| Meta {
            local: m.local & !bit,
            ..with_bit(m, bit, expiry)
        });
        old.sources & Source::ANY == 0
    }

    /// Puts `key` on the allow list. Returns true when it was not on it before.
    pub fn add_allow(&self, key: Key, expiry: u64, changed: u64) -> bool {
        let (old, _) = self.change(key, Some(changed), |m| with_bit(m, ALLOW, expiry));
        old.sources & ALLOW == 0
    }

    /// Lists a real-time detection from the request path (lock-free). It is
    /// this process's until the log brings it back (see [`Meta::local`]).
    pub fn record(&self, key: Key, source: Source) {
        let bit = source.bit();
        self.change(key, None, |m| Meta {
            local: m.local | bit,
            ..with_bit(m, bit, 0)
        });
    }

    /// Takes the bits in `mask` off `key`'s entry; returns the bits taken off.
    pub fn remove(&self, key: &Key, mask: u8, changed: u64) -> u8 {
        let kref = key.borrowed();
        let present = self.overlay_get(&kref).or_else(|| self.snap_entry(&kref).0);
        if present.is_none_or(|m| m.sources & mask == 0) {
            return 0;
        }
        let (old, _) = self.change(key.clone(), Some(changed), |m| Meta {
            local: m.local & !mask,
            ..m.without(mask)
        });
        old.sources & mask
    }

    /// Takes the bits in `mask` off every entry; returns how many entries
    /// lost one. Snapshot entries are masked, not visited, so this costs
    /// time in the overlay's size.
    pub fn remove_all(&self, mask: u8, changed: u64) -> usize {
        let mask = mask & ALL_BITS;
        let mut n = self.snap_count(|c| c & mask != 0);
        self.cleared.fetch_or(mask, Relaxed);
        for bit in 0..7 {
            if mask & (1 << bit) != 0 {
                self.cleared_at[bit].store(changed, Relaxed);
            }
        }
        for (key, m) in self.overlay.entries(ALL_BITS) {
            if m.sources & mask != 0 {
                self.overlay.put_full(
                    key,
                    Meta {
                        changed,
                        ..m.without(mask)
                    },
                );
                n += 1;
            }
        }
        n
    }

    /// Snapshot entries not hidden by the overlay whose bits, with the
    /// cleared ones off, satisfy `pred`.
    fn snap_count(&self, pred: impl Fn(u8) -> bool) -> usize {
        let Some(s) = &self.snap else { return 0 };
        let by = s.by_sources();
        let cleared = self.cleared.load(Relaxed);
        (0..128usize)
            .filter(|&c| pred(c as u8 & !cleared))
            .map(|c| by[c].saturating_sub(self.hidden[c].load(Relaxed)) as usize)
            .sum()
    }

    /// Identifiers on the deny list.
    pub fn deny_len(&self) -> u64 {
        (self.overlay.deny_len() as usize + self.snap_count(|c| c & Source::ANY != 0)) as u64
    }

    /// Identifiers on the allow list.
    pub fn allow_len(&self) -> u64 {
        (self.overlay.allow_len() as usize + self.snap_count(|c| c & ALLOW != 0)) as u64
    }

    /// Every entry with a bit in `mask`: the snapshot's (in its order), then
    /// the overlay's (in the order they were added).
    pub fn entries(&self, mask: u8) -> Vec<(Key, Meta)> {
        let mut v = Vec::new();
        if let Some(s) = &self.snap {
            let cleared = self.cleared.load(Relaxed);
            for (k, m) in s.iter() {
                if m.sources & !cleared & mask != 0 && self.overlay_get(&k.borrowed()).is_none() {
                    v.push((k, m.without(cleared)));
                }
            }
        }
        v.extend(self.overlay.entries(mask));
        v
    }

    /// Drops overlay entries whose every listing expired by `now`; one that
    /// hides a snapshot entry stays, emptied (expired entries already stop
    /// matching at lookup: this is housekeeping).
    pub fn purge_expired(&self, now: u64) -> usize {
        let dead: Vec<(Key, Meta)> = self
            .overlay
            .entries(ALL_BITS)
            .into_iter()
            .filter(|(_, m)| !m.alive(now))
            .collect();
        let mut n = 0;
        for (k, m) in dead {
            if self.snap_entry(&k.borrowed()).1 != 0 {
                self.overlay.put_full(k, m.without(ALL_BITS));
            } else {
                self.overlay.remove(&k, ALL_BITS);
            }
            n += 1;
        }
        n
    }

    /// These lists on `snap` instead: the overlay entries changed after the
    /// snapshot's log position (and local detections) carried over, the
    /// rest dropped (the snapshot holds them). A snapshot ahead of what this
    /// process applied holds everything up to its own position, so then only
    /// local detections are carried.
    pub fn rebased(&self, snap: Arc<Snapshot>) -> Lists {
        let at = snap.seq();
        let next = Lists::new(Some(snap), IdMap::with_capacity(OVERLAY_CAPACITY));
        let cleared = self.cleared.load(Relaxed);
        for bit in 0..7 {
            let when = self.cleared_at[bit].load(Relaxed);
            if cleared & (1 << bit) != 0 && when > at {
                next.cleared.fetch_or(1 << bit, Relaxed);
                next.cleared_at[bit].store(when, Relaxed);
            }
        }
        // Hiding entries too: entries(mask) lists only listed ones.
        for (k, m) in self.overlay.all_entries() {
            if m.changed > at {
                next.change(k, Some(m.changed), |_| m);
            } else if m.local != 0 {
                // Detections the log has not brought back: only what they
                // added is this process's to keep over the snapshot.
                let local = m.local;
                next.change(k, None, |b| Meta {
                    sources: b.sources | local,
                    local,
                    ..b
                });
            }
        }
        next
    }

    /// These lists with every `source` entry replaced by `entries`
    /// (identifier key, expiry): built aside, for the caller to swap in.
    /// Costs time in the overlay's size plus `entries`: the path of a host
    /// without a snapshot.
    pub fn with_source_replaced(
        &self,
        source: Source,
        entries: impl ExactSizeIterator<Item = (Key, u64)>,
        changed: u64,
    ) -> Lists {
        let bit = source.bit();
        if self.snap.is_none() {
            let mut overlay = self.overlay.copy_without(bit, entries.len());
            for (k, exp) in entries {
                overlay.add_unshared(k, source, exp);
            }
            return Lists::new(None, overlay);
        }
        let overlay = IdMap::with_capacity(self.overlay.len() + entries.len());
        for (k, m) in self.overlay.all_entries() {
            let m = m.without(bit);
            // Emptied: kept only where it hides a snapshot entry.
            if m.sources != 0 || self.snap_entry(&k.borrowed()).1 != 0 {
                overlay.put_full(k, m);
            }
        }
        let next = Lists::new(self.snap.clone(), overlay);
        next.cleared
            .store(self.cleared.load(Relaxed) | bit, Relaxed);
        for (i, c) in self.cleared_at.iter().enumerate() {
            next.cleared_at[i].store(c.load(Relaxed), Relaxed);
        }
        next.cleared_at[source as usize].store(changed, Relaxed);
        for c in 0..128 {
            next.hidden[c].store(self.hidden[c].load(Relaxed), Relaxed);
        }
        for (k, exp) in entries {
            next.change(k, Some(changed), |m| with_bit(m, bit, exp));
        }
        next
    }
}

/// The network of an IP key (name: the prefix length, value: 16 bytes).
fn key_net(key: &KeyRef<'_>) -> Option<IpNet> {
    let (name, value) = key.name_value();
    let addr: [u8; 16] = value.try_into().ok()?;
    Some(IpNet {
        addr: u128::from_be_bytes(addr),
        len: *name.first()?,
    })
}

/// Lookups for one request.
pub struct ListsReader<'l> {
    lists: &'l Lists,
    overlay: Reader<'l>,
}

impl ListsReader<'_> {
    /// Whether any entry of `kind` may be listed (a kind with none is not probed).
    #[inline(always)]
    pub fn has(&self, kind: IdKind) -> bool {
        if self.lists.snap.is_none() {
            // Nothing to hide: the overlay is the whole list.
            return self.overlay.has(kind);
        }
        self.lists.snap_kinds[kind as usize]
            || self.lists.overlay_kinds[kind as usize].load(Relaxed) != 0
    }

    /// The entry for `key`: the overlay's if it has one, else the snapshot's.
    #[inline(always)]
    pub fn probe(&self, key: &KeyRef<'_>) -> Option<Meta> {
        if self.lists.snap.is_none() {
            return self.overlay.probe(key);
        }
        if self.lists.overlay_kinds[key.kind() as usize].load(Relaxed) != 0 {
            if let Some(m) = self.overlay.probe(key) {
                return Some(m);
            }
        }
        if self.lists.snap.is_some() {
            return self.lists.snap_entry(key).0;
        }
        None
    }

    /// One probe for an IP network.
    #[inline(always)]
    fn probe_ip(&self, net: IpNet) -> Option<Meta> {
        if self.lists.overlay_kinds[IdKind::Ip as usize].load(Relaxed) != 0 {
            if let Some(m) = self.overlay.probe_ip(net) {
                return Some(m);
            }
        }
        let s = self.lists.snap.as_ref()?;
        s.get_ip(net)
            .map(|m| m.without(self.lists.cleared.load(Relaxed)))
    }

    /// Calls `f` with the entry of `addr` and of each listed range containing
    /// it, longest prefix first, until `f` returns true.
    pub fn each_ip(&self, addr: u128, mut f: impl FnMut(Meta) -> bool) {
        if self.lists.snap.is_none() {
            return self.overlay.each_ip(addr, f);
        }
        if !self.has(IdKind::Ip) {
            return;
        }
        let (ov, sp) = (self.lists.overlay.prefixes(), self.lists.snap_prefixes);
        let words = std::array::from_fn(|i| ov[i] | sp[i]);
        each_net(addr, words, |net| self.probe_ip(net).is_some_and(&mut f));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ident::{Identifier, ip_to_u128};
    use crate::policy::snapshot::build;

    fn key(kind: IdKind, name: &str, value: &str) -> Key {
        Identifier::new(kind, name, value).unwrap().key()
    }

    fn ip(s: &str) -> Key {
        key(IdKind::Ip, "", s)
    }

    fn snap(seq: u64, entries: Vec<(Key, u8)>) -> Arc<Snapshot> {
        let v = entries.into_iter().map(|(k, sources)| {
            (
                k,
                Meta {
                    sources,
                    ..Meta::default()
                },
            )
        });
        let bytes = build(seq, 0, v).unwrap();
        Arc::new(Snapshot::open(Box::new(bytes)).unwrap())
    }

    /// The first active source (any) listing `addr`, as a request sees it.
    fn ip_source(l: &Lists, addr: &str) -> Option<Source> {
        let a = ip_to_u128(addr.parse().unwrap());
        let mut found = None;
        l.reader().each_ip(a, |m| {
            found = m.active(Source::ANY, &mut || 1);
            found.is_some()
        });
        found
    }

    fn token(l: &Lists, t: &str) -> Option<Meta> {
        l.reader().probe(&KeyRef::token(t.as_bytes()))
    }

    const M: u8 = Source::Manual.bit();
    const A: u8 = Source::Abs.bit();
    const D: u8 = Source::Decoy.bit();

    fn base() -> Lists {
        let s = snap(
            10,
            vec![
                (ip("1.1.1.1"), M),
                (ip("2.2.2.2"), A),
                (ip("10.0.0.0/8"), A),
                (key(IdKind::Token, "", "t1"), M | A),
                (key(IdKind::Token, "", "ok"), ALLOW),
            ],
        );
        Lists::new(Some(s), IdMap::new())
    }

    #[test]
    fn the_snapshot_answers_what_the_overlay_does_not_hold() {
        let l = base();
        assert_eq!(ip_source(&l, "1.1.1.1"), Some(Source::Manual));
        assert_eq!(ip_source(&l, "10.9.9.9"), Some(Source::Abs), "a range");
        assert_eq!(ip_source(&l, "3.3.3.3"), None);
        assert!(token(&l, "ok").unwrap().allowed(&mut || 1));
        assert_eq!((l.deny_len(), l.allow_len()), (4, 1));
    }

    #[test]
    fn overlay_changes_hide_the_snapshot_entry() {
        let l = base();
        // A removal leaves a hiding entry: the snapshot's stops matching.
        assert_eq!(l.remove(&ip("1.1.1.1"), M, 11), M);
        assert_eq!(ip_source(&l, "1.1.1.1"), None);
        assert_eq!(l.remove(&ip("1.1.1.1"), M, 12), 0, "already gone");
        // An addition keeps the snapshot's other sources.
        assert!(!l.add(key(IdKind::Token, "", "t1"), Source::Decoy, 0, 13));
        let m = token(&l, "t1").unwrap();
        assert_eq!(m.sources, M | A | D);
        assert_eq!(l.remove(&key(IdKind::Token, "", "t1"), M | A, 14), M | A);
        assert_eq!(token(&l, "t1").unwrap().sources, D);
        assert!(l.add(ip("3.3.3.3"), Source::Manual, 0, 15));
        assert_eq!(ip_source(&l, "3.3.3.3"), Some(Source::Manual));
        assert_eq!(l.deny_len(), 4, "1.1.1.1 gone, 3.3.3.3 new");
        let listed: Vec<String> = l
            .entries(Source::ANY)
            .into_iter()
            .map(|(k, _)| k.identifier().value)
            .collect();
        assert_eq!(listed.len(), 4, "{listed:?}");
        assert!(!listed.contains(&"1.1.1.1".to_string()));
    }

    #[test]
    fn a_clear_masks_the_snapshot_without_visiting_it() {
        let l = base();
        assert!(l.add(ip("4.4.4.4"), Source::Abs, 0, 11));
        assert_eq!(l.remove_all(A, 12), 4, "2.2.2.2, the range, t1 and 4.4.4.4");
        assert_eq!(ip_source(&l, "2.2.2.2"), None);
        assert_eq!(ip_source(&l, "10.1.1.1"), None);
        assert_eq!(ip_source(&l, "4.4.4.4"), None);
        assert_eq!(token(&l, "t1").unwrap().sources, M, "manual stays");
        assert_eq!(l.deny_len(), 2, "1.1.1.1 and t1");
        // Listed again after the clear.
        assert!(l.add(ip("2.2.2.2"), Source::Abs, 0, 13));
        assert_eq!(ip_source(&l, "2.2.2.2"), Some(Source::Abs));
        assert_eq!(l.deny_len(), 3);
    }

    #[test]
    fn a_newer_snapshot_keeps_only_what_it_does_not_hold() {
        let l = base();
        l.add(ip("5.5.5.5"), Source::Manual, 0, 11);
        l.remove(&ip("1.1.1.1"), M, 12);
        l.remove_all(A, 13);
        l.record(ip("6.6.6.6"), Source::Decoy);
        // Built at 12: holds the add and the removal, not the clear.
        let next = snap(
            12,
            vec![
                (ip("5.5.5.5"), M),
                (ip("2.2.2.2"), A),
                (key(IdKind::Token, "", "t1"), M | A),
            ],
        );
        let r = l.rebased(next);
        assert_eq!(ip_source(&r, "5.5.5.5"), Some(Source::Manual));
        assert_eq!(ip_source(&r, "1.1.1.1"), None);
        assert_eq!(ip_source(&r, "2.2.2.2"), None, "the clear at 13 carried");
        assert_eq!(token(&r, "t1").unwrap().sources, M);
        assert_eq!(
            ip_source(&r, "6.6.6.6"),
            Some(Source::Decoy),
            "local detection"
        );
        assert_eq!(r.overlay_len(), 1, "only the detection is left above it");
        assert_eq!(r.deny_len(), 3, "5.5.5.5, t1, 6.6.6.6");
    }

    #[test]
    fn a_detection_does_not_bring_back_what_the_log_removed() {
        let l = base();
        // The log removes 1.1.1.1's manual listing at 15; then the client
        // probes a decoy here.
        l.remove(&ip("1.1.1.1"), M, 15);
        l.record(ip("1.1.1.1"), Source::Decoy);
        // A snapshot built at 14 still has the manual listing.
        let r = l.rebased(snap(14, vec![(ip("1.1.1.1"), M)]));
        let m = r.reader().probe(&ip("1.1.1.1").borrowed()).unwrap();
        assert_eq!(
            m.sources, D,
            "the removal (after 14) holds, the detection too"
        );
        // One built after both: only the detection is this process's.
        let r = l.rebased(snap(20, vec![]));
        assert_eq!(ip_source(&r, "1.1.1.1"), Some(Source::Decoy));
        // The log brings the detection back: it is no longer local.
        r.add(ip("1.1.1.1"), Source::Decoy, 0, 21);
        let r = r.rebased(snap(21, vec![(ip("1.1.1.1"), D)]));
        assert_eq!(r.overlay_len(), 0);
        assert_eq!(ip_source(&r, "1.1.1.1"), Some(Source::Decoy));
    }

    #[test]
    fn replacing_a_source_over_a_snapshot() {
        let l = base();
        let r = l.with_source_replaced(
            Source::Abs,
            vec![(ip("7.7.7.7"), 0), (key(IdKind::Token, "", "t1"), 0)].into_iter(),
            11,
        );
        assert_eq!(ip_source(&r, "2.2.2.2"), None);
        assert_eq!(ip_source(&r, "10.1.1.1"), None);
        assert_eq!(ip_source(&r, "7.7.7.7"), Some(Source::Abs));
        assert_eq!(token(&r, "t1").unwrap().sources, M | A);
        assert_eq!(r.deny_len(), 3, "1.1.1.1, t1, 7.7.7.7");
    }

    #[test]
    fn purging_an_expired_overlay_entry_keeps_it_hiding() {
        let l = base();
        l.add(ip("1.1.1.1"), Source::Abs, 5, 11);
        l.remove(&ip("1.1.1.1"), M, 12);
        assert_eq!(l.purge_expired(10), 1);
        assert_eq!(
            ip_source(&l, "1.1.1.1"),
            None,
            "the snapshot's entry stays hidden"
        );
    }
}
