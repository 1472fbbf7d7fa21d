//! The keyed hash of the policy layer: folded multiplies over 16 bytes per
//! step, in the manner of wyhash and foldhash. The list keys
//! ([`ident`](super::ident)) and the API lookup tables
//! ([`api`](super::api)) both hash client bytes with it, each under its own
//! secret: hosts, paths and identifiers come from clients, so where they
//! land must not be predictable (hash flooding).

use std::hash::BuildHasher;

use super::bytes::{short_word, word_at};

/// Four odd secret words for [`hash_prefix`], drawn from std's
/// `RandomState` (operating-system randomness).
pub(crate) fn random_secret() -> [u64; 4] {
    let rs = std::collections::hash_map::RandomState::new();
    std::array::from_fn(|i| rs.hash_one(i as u64) | 1)
}

/// The 128-bit product of `a` and `b`, its halves folded together.
#[inline(always)]
pub(crate) fn fold(a: u64, b: u64) -> u64 {
    let r = a as u128 * b as u128;
    r as u64 ^ (r >> 64) as u64
}

/// The hash of some bytes and the two words it was finished from.
#[derive(Clone, Copy)]
pub(crate) struct Hashed {
    /// The hash.
    pub hash: u64,
    /// The first eight bytes (for a short key, all of it, zero-padded),
    /// after the word function.
    pub a: u64,
    /// The last eight bytes of a key longer than eight, else 0, after the
    /// word function.
    pub b: u64,
}

/// Hashes `buf[..len]` under `seed` and secret `k`, with `f` applied to
/// every eight-byte word (ASCII lowercasing for hosts and API-key names).
/// Bytes of up to 16 cost two loads and two multiplies, and they are
/// wholly in the two words returned, so a table can compare keys of that
/// length by words and length alone.
///
/// It takes the whole buffer rather than the prefix because a prefix
/// shorter than eight bytes of a longer buffer is one word load and a mask,
/// where a short slice needs the branches of
/// [`short_word`]; both give the same zero-padded word, so a url
/// reads the same as a path prefix holding it, and [`hash_bytes`] (the
/// whole of a slice) computes the same as this.
#[inline(always)]
pub(crate) fn hash_prefix(
    seed: u64,
    k: [u64; 3],
    buf: &[u8],
    len: usize,
    f: impl Fn(u64) -> u64,
) -> Hashed {
    let v = &buf[..len];
    let mut acc = seed;
    let (a, b) = if len <= 16 {
        if len >= 8 {
            (f(word_at(v, 0)), f(word_at(v, len - 8)))
        } else if buf.len() >= 8 {
            // `len` is below 8: the mask keeps its bytes, zeroes the rest.
            let keep = (1u64 << (len * 8)) - 1;
            (f(word_at(buf, 0) & keep), 0)
        } else {
            (f(short_word(v)), 0)
        }
    } else {
        let mut i = 0;
        while len - i > 16 {
            acc = fold(f(word_at(v, i)) ^ k[0], f(word_at(v, i + 8)) ^ acc);
            i += 16;
        }
        (f(word_at(v, len - 16)), f(word_at(v, len - 8)))
    };
    // The length goes into the last multiply, not into a lane the data is
    // XORed into: there a length difference could cancel a data difference.
    // Its own secret word, so no lane shares the length multiplier's; and
    // values that differ only in zero padding hash apart.
    Hashed {
        hash: fold(fold(a ^ k[0], b ^ acc ^ k[1]), k[2] ^ len as u64),
        a,
        b,
    }
}

/// [`hash_prefix`] of the whole of `v`.
#[inline(always)]
pub(crate) fn hash_bytes(seed: u64, k: [u64; 3], v: &[u8], f: impl Fn(u64) -> u64) -> u64 {
    hash_prefix(seed, k, v, v.len(), f).hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::bytes::lower8;
    use crate::policy::testing::Rng;

    #[test]
    fn a_prefix_hashes_as_the_same_bytes_alone() {
        // A url is hashed alone, a path's prefix inside the path: the two
        // must agree, or a request would miss its API.
        let k = [
            0x1234_5678_9abc_def1,
            0x0fed_cba9_8765_4321,
            0x1111_2222_3333_4445,
        ];
        let mut r = Rng(0x2545_f491_4f6c_dd1d);
        for _ in 0..20_000 {
            let n = r.below(48);
            let buf: Vec<u8> = (0..n).map(|_| b"aZ/.-0\0\xff"[r.below(8)]).collect();
            let len = r.below(n + 1);
            let fs: [fn(u64) -> u64; 2] = [|w| w, lower8];
            for f in fs {
                let p = hash_prefix(7, k, &buf, len, f);
                let whole = hash_prefix(7, k, &buf[..len], len, f);
                assert_eq!(p.hash, whole.hash, "{buf:?} {len}");
                assert_eq!((p.a, p.b), (whole.a, whole.b), "{buf:?} {len}");
                assert_eq!(hash_bytes(7, k, &buf[..len], f), p.hash);
            }
            // Zero padding is not the same bytes.
            if len < n && buf[len] == 0 {
                assert_ne!(
                    hash_bytes(7, k, &buf[..len], |w| w),
                    hash_bytes(7, k, &buf[..=len], |w| w)
                );
            }
        }
    }
}
