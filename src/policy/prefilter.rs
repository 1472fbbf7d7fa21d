//! The filter in front of a list's map ([`Prefilter`]): a blocked Bloom
//! filter that says "not listed" for almost every absent key in one load,
//! with no false negatives, also while other threads insert and while it
//! grows.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Mutex, OnceLock};

/// Filter bits per entry a filter is sized for: at this load a blocked Bloom
/// filter with four bits per key in one 64-bit word says "maybe" for about
/// 0.1% of absent keys (`filter_false_positive_rate` measures it), for 4
/// bytes per entry. At 16 bits an entry it says "maybe" for about 1%, and
/// with eight probes a request, one request in twelve would pay for a pin
/// and a map probe it does not need.
const BITS_PER_ENTRY: usize = 32;
/// The smallest filter, in words (32 KiB): a short list never needs to grow.
const MIN_WORDS: usize = 4096;
/// Room for filter generations. Each at least doubles the one before, so
/// memory runs out long before these do.
const GENERATIONS: usize = 32;

/// One generation of the prefilter: a blocked Bloom filter, each key's bits
/// in one word, so a probe is a single load.
pub(super) struct Filter {
    pub(super) words: Box<[AtomicU64]>,
    /// Keys it is sized for; past this many, a larger generation replaces it.
    pub(super) cap: usize,
}

impl Filter {
    fn new(entries: usize) -> Filter {
        let n = (entries.saturating_mul(BITS_PER_ENTRY).div_ceil(64))
            // The word index is taken from 32 hash bits.
            .clamp(MIN_WORDS, 1 << 32);
        Filter {
            words: (0..n).map(|_| AtomicU64::new(0)).collect(),
            cap: n * 64 / BITS_PER_ENTRY,
        }
    }

    pub(super) fn insert(&self, hash: u64) {
        let (word, mask) = slot(self.words.len(), hash);
        if let Some(w) = self.words.get(word) {
            if w.load(Relaxed) & mask != mask {
                w.fetch_or(mask, Relaxed);
            }
        }
    }
}

/// The word and bit mask of a key in a filter of `len` words. The key's hash
/// is already a seeded 64-bit hash, so it is cut up rather than hashed again:
/// the word from the high half (multiply-shift, so any number of words and no
/// division), four bit positions from the low 24 bits, disjoint from those.
#[inline(always)]
fn slot(len: usize, hash: u64) -> (usize, u64) {
    let word = (((hash >> 32) * len as u64) >> 32) as usize;
    let bit = |shift: u32| 1u64 << ((hash >> shift) & 63);
    (word, bit(0) | bit(6) | bit(12) | bit(18))
}

/// False only if no key with this hash was inserted in `words`.
#[inline(always)]
pub(super) fn may_contain(words: &[AtomicU64], hash: u64) -> bool {
    let (word, mask) = slot(words.len(), hash);
    words
        .get(word)
        .is_none_or(|w| w.load(Relaxed) & mask == mask)
}

/// What inserters write per generation, on a cache line of its own so that
/// inserts do not evict what readers load.
#[derive(Default)]
#[repr(align(64))]
pub(super) struct Counts {
    /// Inserters registered on this generation.
    writers: AtomicUsize,
    /// Keys added to this generation (new entries; a rebuild counts its own).
    pub(super) added: AtomicUsize,
}

/// The filter in front of an [`IdMap`]'s map: a probe for an unlisted key
/// usually ends at one load, and it never says "absent" for a listed key,
/// even while other threads insert and while it grows.
///
/// A filter sized for `n` keys says "maybe" for every key once many more
/// than `n` are added (manual adds and real-time detections insert one at a
/// time, detections lock-free from request threads), so when a generation
/// has had more keys added than it was sized for, the inserting thread builds
/// a twice larger one from the map ([`Prefilter::grow`]):
///
/// - An inserter registers on the newest generation `w` (count itself in
///   `w`'s `writers`, then check `newest` is still `w`; if not, undo and
///   retry), sets its key's bits in every generation from `read` to `w`,
///   inserts into the map, and deregisters. Its bits always precede its key.
/// - The grower (one at a time) publishes `n = w + 1` as `newest`, waits until
///   no inserter is registered on `w`, sets the bits of every key in the map
///   in `n`, and then stores `n` in `read`.
/// - A reader probes generation `read`, loaded afresh for every probe.
///
/// Why a reader of `n` finds every key in the map: registration and
/// publication form a store-buffering pair (all SeqCst), so an inserter that
/// registered on `w` and then still saw `newest == w` is seen by the
/// grower's wait, and one that registered later saw `n` and set its bits in
/// `n` before inserting. The grower thus waited for every insert that may
/// lack bits in `n`; those inserts happened before its iteration, which
/// papaya guarantees reflects every write that happened before it starts.
/// Readers see `n` only through `read` (Release/Acquire), after all of that.
/// An inserter's own bits go in every generation from the `read` it loaded up
/// to `w`, and `read` cannot pass `w` while it is registered (a later grower
/// waits for it), so readers of older generations find its key too. `read` is
/// loaded per probe, not per request, so a probe never uses a generation
/// older than one an insert it has already observed put its bits in.
///
/// Old generations are kept until the map is dropped: a reader takes no pin
/// or reference count (that is the saving), so nothing says when one is
/// unused. Each generation at least doubles the one before, so together the
/// old ones are smaller than the newest. Removals leave their bits (a false
/// positive only costs a map probe) and count toward the next growth, whose
/// rebuild drops them; bulk replacements and reloads build a new `IdMap`
/// with one generation sized for them.
pub(super) struct Prefilter {
    gens: [OnceLock<Filter>; GENERATIONS],
    pub(super) counts: [Counts; GENERATIONS],
    /// The generation readers probe.
    pub(super) read: AtomicUsize,
    /// The newest generation, which inserters register on.
    pub(super) newest: AtomicUsize,
    /// Held by the one thread growing the filter.
    grow: Mutex<()>,
}

impl Prefilter {
    pub(super) fn new(entries: usize) -> Prefilter {
        let gens: [OnceLock<Filter>; GENERATIONS] = Default::default();
        let _ = gens[0].set(Filter::new(entries));
        Prefilter {
            gens,
            counts: Default::default(),
            read: AtomicUsize::new(0),
            newest: AtomicUsize::new(0),
            grow: Mutex::new(()),
        }
    }

    #[inline]
    pub(super) fn generation(&self, g: usize) -> Option<&Filter> {
        self.gens.get(g)?.get()
    }

    /// The words of generation `g` (none, so "maybe" for every key, should
    /// it not exist).
    pub(super) fn words(&self, g: usize) -> &[AtomicU64] {
        self.generation(g).map_or(&[], |f| &f.words)
    }

    /// Sets a key's bits where no other thread can look.
    pub(super) fn insert_unshared(&mut self, hash: u64) {
        let g = *self.read.get_mut();
        if let Some(f) = self.gens.get_mut(g).and_then(OnceLock::get_mut) {
            let (word, mask) = slot(f.words.len(), hash);
            if let Some(w) = f.words.get_mut(word) {
                *w.get_mut() |= mask;
            }
        }
    }

    /// Registers an inserter on the newest generation (see [`Prefilter`]).
    pub(super) fn enter(&self) -> Writing<'_> {
        loop {
            let w = self.newest.load(SeqCst);
            self.counts[w].writers.fetch_add(1, SeqCst);
            if self.newest.load(SeqCst) == w {
                return Writing {
                    filter: self,
                    generation: w,
                };
            }
            self.counts[w].writers.fetch_sub(1, Release);
        }
    }

    /// Counts a new key in generation `g`; true once it holds more than it
    /// was sized for.
    pub(super) fn added(&self, g: usize) -> bool {
        let n = self.counts[g].added.fetch_add(1, Relaxed) + 1;
        self.generation(g).is_some_and(|f| n > f.cap)
    }

    /// Replaces the newest generation by one twice as large, once it has
    /// had more keys added than it was sized for (see [`Prefilter`]): one
    /// thread at a time, the others return at once. `entries` tells how
    /// many keys the map holds; `fill` sets the bits of every key in the map
    /// in the new generation and returns how many it set.
    pub(super) fn grow(
        &self,
        entries: impl FnOnce() -> usize,
        fill: impl FnOnce(&Filter) -> usize,
    ) {
        let Ok(_only_grower) = self.grow.try_lock() else {
            return;
        };
        let old = self.newest.load(Relaxed);
        let (Some(current), Some(slot)) = (self.generation(old), self.gens.get(old + 1)) else {
            return;
        };
        if self.counts[old].added.load(Relaxed) <= current.cap {
            return; // Another thread grew it since this insert looked.
        }
        let new = old + 1;
        if slot
            .set(Filter::new(2 * current.cap.max(entries())))
            .is_err()
        {
            return;
        }
        self.newest.store(new, SeqCst);
        // Inserters registered on `old` may not have seen `new`; those that
        // register from now on put their bits in `new` themselves. Only inserts
        // already under way are waited for, so this cannot starve.
        let mut spins = 0u32;
        while self.counts[old].writers.load(SeqCst) != 0 {
            if spins < 64 {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        let Some(next) = self.generation(new) else {
            return;
        };
        let added = fill(next);
        self.counts[new].added.fetch_add(added, Relaxed);
        self.read.store(new, Release);
    }
}

/// An inserter registered on a generation; deregisters when dropped.
pub(super) struct Writing<'f> {
    filter: &'f Prefilter,
    pub(super) generation: usize,
}

impl Writing<'_> {
    /// Sets a key's bits in every generation a reader may probe.
    pub(super) fn insert(&self, hash: u64) {
        let f = self.filter;
        for g in f.read.load(Acquire)..=self.generation {
            if let Some(filter) = f.generation(g) {
                filter.insert(hash);
            }
        }
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.filter.counts[self.generation]
            .writers
            .fetch_sub(1, Release);
    }
}
