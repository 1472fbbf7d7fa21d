//! Byte-string helpers for the request path, eight bytes at a time (SWAR):
//! case-insensitive comparison and byte search over the short strings of
//! header names, cookies, hosts and paths, without a `memcpy` or `memcmp`
//! call per comparison. The tests compare them with the plain versions,
//! directly or through the functions built on them.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Lowercases the ASCII capitals of eight bytes at once (bytes above 0x7f
/// are left alone).
#[inline(always)]
pub fn lower8(x: u64) -> u64 {
    let low7 = x & (0x7f * ONES);
    let ge_a = low7 + (0x80 - b'A' as u64) * ONES;
    let gt_z = low7 + (0x7f - b'Z' as u64) * ONES;
    let upper = ge_a & !gt_z & !x & (0x80 * ONES);
    x | (upper >> 2)
}

/// Eight bytes of `c` from `at` (`at + 8 <= c.len()`), little-endian.
#[inline(always)]
pub fn word_at(c: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&c[at..at + 8]);
    u64::from_le_bytes(w)
}

/// The bytes of a slice shorter than eight, zero-padded into one word with
/// two overlapping loads instead of a byte loop or a `memcpy` call.
#[inline(always)]
pub fn short_word(c: &[u8]) -> u64 {
    let n = c.len();
    debug_assert!(n < 8);
    if n >= 4 {
        let lo = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u64;
        let hi = u32::from_le_bytes([c[n - 4], c[n - 3], c[n - 2], c[n - 1]]) as u64;
        lo | hi << ((n - 4) * 8)
    } else if n >= 2 {
        let lo = u16::from_le_bytes([c[0], c[1]]) as u64;
        let hi = u16::from_le_bytes([c[n - 2], c[n - 1]]) as u64;
        lo | hi << ((n - 2) * 8)
    } else if n == 1 {
        c[0] as u64
    } else {
        0
    }
}

/// Whether `a` equals `b` with `f` applied to each eight-byte word of `a`
/// (and `g` to each of `b`). The last partial word is compared as the last
/// eight bytes (overlapping the one before) when the slices are that long.
/// Written with `split_first_chunk` and `last_chunk`, whose lengths the
/// compiler knows: the loop carries no bounds checks.
#[inline(always)]
pub fn eq_words(a: &[u8], b: &[u8], f: impl Fn(u64) -> u64, g: impl Fn(u64) -> u64) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n < 8 {
        return f(short_word(a)) == g(short_word(b));
    }
    let (mut x, mut y) = (a, b);
    while let (Some((wx, rx)), Some((wy, ry))) = (x.split_first_chunk(), y.split_first_chunk()) {
        if f(u64::from_le_bytes(*wx)) != g(u64::from_le_bytes(*wy)) {
            return false;
        }
        (x, y) = (rx, ry);
    }
    x.is_empty()
        || match (a.last_chunk(), b.last_chunk()) {
            (Some(x), Some(y)) => f(u64::from_le_bytes(*x)) == g(u64::from_le_bytes(*y)),
            _ => false,
        }
}

/// Byte equality without a call to libc's `memcmp`/`bcmp`: their AVX-512
/// versions load through a byte mask, and a masked load from the dangling
/// pointer of an empty slice costs a fault-suppression assist of about
/// 40 ns on the machines measured (docs/BENCHMARKS.md). Long slices, which
/// are never empty, still go to `memcmp`.
#[inline]
pub fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() > 64 && a.len() == b.len() {
        return a == b;
    }
    eq_words(a, b, |w| w, |w| w)
}

/// ASCII case-insensitive equality, eight bytes at a time: the same answer as
/// `<[u8]>::eq_ignore_ascii_case` (bytes above 0x7f compare exactly), at a
/// fraction of the cost for header names.
#[inline]
pub fn eq_ignore_case(a: &[u8], b: &[u8]) -> bool {
    eq_words(a, b, lower8, lower8)
}

/// [`eq_ignore_case`] against a name already in lowercase: only `a` is lowered.
#[inline]
pub fn eq_lowered(a: &[u8], lower: &[u8]) -> bool {
    eq_words(a, lower, lower8, |w| w)
}

/// The 0x80 bit of each byte of `x` that is zero, exactly (no carries
/// across bytes, unlike the shorter has-zero test).
#[inline(always)]
pub fn zeros(x: u64) -> u64 {
    !(((x & !HIGH) + !HIGH) | x | !HIGH)
}

/// The 0x80 bit of each byte of `w` equal to `b`.
#[inline(always)]
pub fn bytes_eq(w: u64, b: u8) -> u64 {
    zeros(w ^ (b as u64 * ONES))
}

/// The first position of byte `b` in `hay`: eight bytes per step for the
/// short values of request headers, `memchr` for long ones.
#[inline]
pub fn find_byte(hay: &[u8], b: u8) -> Option<usize> {
    if hay.len() > 64 {
        return memchr::memchr(b, hay);
    }
    let mut i = 0;
    while i + 8 <= hay.len() {
        let z = bytes_eq(word_at(hay, i), b);
        if z != 0 {
            return Some(i + z.trailing_zeros() as usize / 8);
        }
        i += 8;
    }
    let tail = &hay[i..];
    let mut z = bytes_eq(short_word(tail), b);
    // The zero padding of the tail matches only a zero `b`.
    z &= (1u64 << (tail.len() * 8)).wrapping_sub(1) & HIGH;
    (z != 0).then(|| i + z.trailing_zeros() as usize / 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eq_ignore_case_matches_std_on_every_byte_pair() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                // Put the pair at every position of a 17-byte name (two chunks + rest).
                for pos in [0, 7, 8, 16] {
                    let mut x = *b"X-Forwarded-For-1";
                    let mut y = *b"x-forwarded-for-1";
                    x[pos] = a;
                    y[pos] = b;
                    assert_eq!(
                        eq_ignore_case(&x, &y),
                        x.eq_ignore_ascii_case(&y),
                        "{a} {b} @{pos}"
                    );
                }
            }
        }
        let x = b"X-Forwarded-For-12345";
        let y = b"x-forwarded-for-12345";
        for len in 0..=x.len() {
            for i in 0..len {
                let mut z = *y;
                z[i] ^= 0x01;
                assert_eq!(
                    eq_ignore_case(&x[..len], &z[..len]),
                    x[..len].eq_ignore_ascii_case(&z[..len])
                );
            }
            assert!(eq_ignore_case(&x[..len], &y[..len]));
        }
        assert!(!eq_ignore_case(b"abc", b"abcd"));
        assert!(eq_ignore_case(b"", b""));
    }

    #[test]
    fn same_matches_std_at_every_length_and_difference() {
        let x: Vec<u8> = (0..150u8).map(|i| i.wrapping_mul(29) ^ 0x5a).collect();
        for len in 0..x.len() {
            let a = &x[..len];
            let b = x[..len].to_vec();
            assert!(same(a, &b), "{len}");
            for i in 0..len {
                for bit in [0x01, 0x80] {
                    let mut c = b.clone();
                    c[i] ^= bit;
                    assert!(!same(a, &c), "{len} {i} {bit}");
                }
            }
            assert!(!same(a, &x[..len + 1]), "{len}");
        }
        // Empty slices carry a dangling pointer: never read.
        assert!(same(&[], &Vec::<u8>::new()));
        assert!(!same(b"", b"a"));
    }

    #[test]
    fn find_byte_matches_position() {
        let hay: Vec<u8> = (0..100u8).map(|i| i.wrapping_mul(37) | 1).collect();
        for len in 0..hay.len() {
            for b in [0u8, 1, b';', 0x80, 0xff, hay[len / 2]] {
                let h = &hay[..len];
                assert_eq!(find_byte(h, b), h.iter().position(|&c| c == b), "{len} {b}");
                let mut z = h.to_vec();
                if len > 3 {
                    z[len - 2] = b;
                    z[len - 1] = b.wrapping_add(0x80);
                    assert_eq!(
                        find_byte(&z, b),
                        z.iter().position(|&c| c == b),
                        "{len} {b}"
                    );
                }
            }
        }
    }
}
