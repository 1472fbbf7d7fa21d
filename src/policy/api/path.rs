//! Request paths as API matching reads them: the query string cut off,
//! `%XX` decoded, `//`, `.` and `..` resolved ([`NormPath`]), and the
//! `/`-boundary prefix test of urls and decoy paths ([`under`]).

use crate::policy::bytes;
use crate::policy::decode::{self, Plus};

/// `s` without trailing `/`s, or `/` if that is all it is.
pub(super) fn trim_slash(s: &str) -> &str {
    let t = s.trim_end_matches('/');
    if t.is_empty() { "/" } else { t }
}

/// Whether `path` is `base` or below it on a `/` boundary (`/` is above everything).
/// The boundary byte is checked before the bytes, as it settles most
/// misses, and the bytes are compared with [`bytes::same`], not `memcmp`.
#[inline]
pub(super) fn under(path: &[u8], base: &[u8]) -> bool {
    let n = base.len();
    if n == 1 && base[0] == b'/' {
        return true;
    }
    n <= path.len() && (n == path.len() || path[n] == b'/') && bytes::same(&path[..n], base)
}

/// A path normalised for matching: the request's own bytes when they need no
/// change (the common case, no copy), else a normalised copy on the stack.
#[allow(
    clippy::large_enum_variant,
    reason = "the copy lives on the request's stack on purpose: the request path never allocates"
)]
pub(crate) enum NormPath<'a> {
    /// The path as received (no query, already normal).
    Borrowed(&'a [u8]),
    /// A normalised copy.
    Owned {
        /// Buffer.
        buf: [u8; NORM_CAP],
        /// Bytes used.
        len: usize,
    },
}

/// Paths longer than this are matched as given, without normalisation.
pub(crate) const NORM_CAP: usize = 2048;

impl<'a> NormPath<'a> {
    /// Cuts the query string and fragment off `uri`, decodes `%XX`, merges `//`
    /// and resolves `.` and `..` segments. Never allocates. Inline, with the
    /// copy out of line: most paths need none, and then this is one scan
    /// without the copy's stack frame.
    #[inline]
    pub(crate) fn new(uri: &'a [u8]) -> NormPath<'a> {
        let (end, needs) = path_end(uri);
        let raw = &uri[..end];
        if raw.is_empty() {
            return NormPath::Borrowed(b"/");
        }
        if !needs || raw[0] != b'/' || raw.len() > NORM_CAP {
            return NormPath::Borrowed(raw);
        }
        NormPath::normalised(raw)
    }

    /// The normalised copy of `raw` (at most [`NORM_CAP`] bytes, starting
    /// with `/`).
    #[inline(never)]
    fn normalised(raw: &'a [u8]) -> NormPath<'a> {
        let mut buf = [0u8; NORM_CAP];
        // `raw` is at most `NORM_CAP` bytes: its decoding always fits.
        let Some(d) = decode::percent(raw, &mut buf, Plus::Kept) else {
            return NormPath::Borrowed(raw);
        };
        let len = fold_segments(&mut buf[..d]);
        NormPath::Owned { buf, len }
    }

    /// The normalised path.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            NormPath::Borrowed(b) => b,
            NormPath::Owned { buf, len } => &buf[..*len],
        }
    }
}

/// Where the path of `uri` ends (its `?` or `#`, else its length), and
/// whether the path needs normalising: it holds a `%`, or a `/` followed by
/// `/` or `.`. Eight bytes per step; a last partial word is the last eight
/// bytes shifted down, so its top bytes are zero, and zero is none of the
/// bytes looked for.
#[inline(always)]
fn path_end(uri: &[u8]) -> (usize, bool) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let n = uri.len();
    let mut needs = 0u64;
    // The 0x80 bit set when the byte before the current word is a `/`.
    let mut carry = 0u64;
    let mut i = 0;
    while i < n {
        let w = if i + 8 <= n {
            bytes::word_at(uri, i)
        } else if n >= 8 {
            bytes::word_at(uri, n - 8) >> ((i + 8 - n) * 8)
        } else {
            bytes::short_word(uri)
        };
        // `.` and `/` differ only in their low bit: one test finds both, and
        // the low bit, moved to the top of its byte, tells them apart. With
        // the low bit set, no byte is 1 after the XOR, so the short test's
        // borrow marks no byte falsely.
        let slash_dot = first_eq(w | ONES, b'/') & HIGH;
        let slash = slash_dot & w << 7;
        let stop = (first_eq(w, b'?') | first_eq(w, b'#')) & HIGH;
        // A false `%` lies after a true one, so it changes no answer.
        let bad = (first_eq(w, b'%') & HIGH) | ((slash << 8 | carry) & slash_dot);
        if stop != 0 {
            // Only the bytes before the first stop count.
            let before = (stop & stop.wrapping_neg()) - 1;
            needs |= bad & before;
            return (i + stop.trailing_zeros() as usize / 8, needs != 0);
        }
        needs |= bad;
        carry = slash >> 56;
        i += 8;
    }
    (n, needs != 0)
}

/// The bytes of `w` equal to `b` by the short zero-byte test (the 0x80 bit
/// of each, among other bits): exact up to the first one; past it, the
/// subtraction's borrow may mark a byte that is not `b`. Cheaper than
/// [`bytes::bytes_eq`] where only the first match counts.
#[inline(always)]
fn first_eq(w: u64, b: u8) -> u64 {
    let x = w ^ (b as u64 * 0x0101_0101_0101_0101);
    x.wrapping_sub(0x0101_0101_0101_0101) & !x
}

/// Merges `//`, drops `.` segments and resolves `..` in place; returns the new length.
fn fold_segments(p: &mut [u8]) -> usize {
    let n = p.len();
    let mut out = 0usize; // write cursor; p[..out] is the folded prefix, always starting with '/'
    let mut i = 0usize;
    while i < n {
        // p[i] == '/' here; find the segment after it.
        let start = i + 1;
        let mut end = start;
        while end < n && p[end] != b'/' {
            end += 1;
        }
        let seg_len = end - start;
        let is_dot = seg_len == 1 && p[start] == b'.';
        let is_dotdot = seg_len == 2 && p[start] == b'.' && p[start + 1] == b'.';
        if is_dotdot {
            // Drop the last folded segment.
            while out > 0 {
                out -= 1;
                if p[out] == b'/' {
                    break;
                }
            }
            if end == n {
                p[out] = b'/';
                out += 1;
            }
        } else if is_dot || (seg_len == 0 && end < n) {
            if end == n {
                p[out] = b'/';
                out += 1;
            }
        } else {
            p[out] = b'/';
            out += 1;
            p.copy_within(start..end, out);
            out += seg_len;
        }
        i = end;
    }
    if out == 0 {
        p[0] = b'/';
        out = 1;
    }
    out
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::policy::testing::Rng;

    #[test]
    fn path_end_matches_a_byte_loop() {
        fn plain(uri: &[u8]) -> (usize, bool) {
            let mut needs = false;
            let mut prev = 0u8;
            for (i, &c) in uri.iter().enumerate() {
                match c {
                    b'?' | b'#' => return (i, needs),
                    b'%' => needs = true,
                    b'/' | b'.' if prev == b'/' => needs = true,
                    _ => {}
                }
                prev = c;
            }
            (uri.len(), needs)
        }
        // `$`, `"` and `>` are one below `%`, `#` and `?`: where the short
        // zero-byte test can mark falsely.
        let alphabet = b"/.?#%a/$\">";
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 30) as usize;
            let uri: Vec<u8> = (0..len)
                .map(|k| alphabet[((state >> (k * 5 % 60)) % alphabet.len() as u64) as usize])
                .collect();
            assert_eq!(
                path_end(&uri),
                plain(&uri),
                "{:?}",
                String::from_utf8_lossy(&uri)
            );
        }
    }

    /// Plain path normalisation, written from the rules rather than from
    /// [`NormPath`]: cut at `?`/`#`; paths not starting with `/` or longer
    /// than [`NORM_CAP`] as they are; else decode `%XX`, then drop empty
    /// and `.` segments, let `..` remove the segment before, and keep a
    /// trailing `/` when the last segment was empty, `.` or `..`.
    fn plain_norm(uri: &[u8]) -> Vec<u8> {
        let end = uri
            .iter()
            .position(|&c| c == b'?' || c == b'#')
            .unwrap_or(uri.len());
        let raw = &uri[..end];
        if raw.is_empty() {
            return b"/".to_vec();
        }
        if raw[0] != b'/' || raw.len() > NORM_CAP {
            return raw.to_vec();
        }
        let mut dec = Vec::new();
        let mut i = 0;
        while i < raw.len() {
            if raw[i] == b'%' && i + 2 < raw.len() {
                let hex = std::str::from_utf8(&raw[i + 1..i + 3]).ok();
                if let Some(b) = hex
                    .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    dec.push(b);
                    i += 3;
                    continue;
                }
            }
            dec.push(raw[i]);
            i += 1;
        }
        let segs: Vec<&[u8]> = dec[1..].split(|&c| c == b'/').collect();
        let mut stack: Vec<&[u8]> = Vec::new();
        let mut trailing = false;
        for (i, s) in segs.iter().enumerate() {
            let last = i + 1 == segs.len();
            match *s {
                b"" | b"." => trailing = last,
                b".." => {
                    stack.pop();
                    trailing = last;
                }
                _ => {
                    stack.push(s);
                    trailing = false;
                }
            }
        }
        let mut out = b"/".to_vec();
        out.extend(stack.join(&b'/'));
        if trailing && !stack.is_empty() {
            out.push(b'/');
        }
        out
    }

    /// A request URI: segments that need normalising, queries,
    /// fragments, stray `%`s and now and then one past [`NORM_CAP`].
    pub(in crate::policy::api) fn gen_uri(r: &mut Rng) -> String {
        let parts = [
            "a", "b", "ab", "api57", "x", "A", "items", "", ".", "..", "%2F", "%2f", "%61", "%",
            "%4", "a%2Fb", "%2e%2E", "42",
        ];
        let mut u = String::new();
        if !r.chance(5) {
            u.push('/');
        }
        for i in 0..r.below(6) {
            if i > 0 {
                u.push('/');
            }
            u.push_str(r.pick(&parts));
        }
        match r.below(8) {
            0 => u.push_str("?page=/a/../b"),
            1 => u.push_str("#x/y"),
            2 => u.push('/'),
            3 => u.insert(u.len() / 2, '?'),
            _ => {}
        }
        if r.chance(1) {
            u = format!("/a{}", "/b".repeat(1100));
        }
        u
    }

    #[test]
    fn norm_path_matches_a_plain_normaliser() {
        let mut r = Rng(0x2545_f491_4f6c_dd1d);
        for _ in 0..200_000 {
            let uri = gen_uri(&mut r);
            assert_eq!(
                NormPath::new(uri.as_bytes()).as_bytes(),
                plain_norm(uri.as_bytes()),
                "{uri:?}"
            );
        }
    }

    #[test]
    fn path_normalisation() {
        for (i, o) in [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a//b/", "/a/b/"),
            ("/a/./b", "/a/b"),
            ("/a/../../b", "/b"),
            ("/a/b/..", "/a/"),
            ("/%2e%2e/x", "/x"),
            ("/a%", "/a%"),
            ("/a%4", "/a%4"),
            ("/a%41", "/aA"),
            ("", "/"),
            ("*", "*"),
        ] {
            assert_eq!(
                std::str::from_utf8(NormPath::new(i.as_bytes()).as_bytes()).unwrap(),
                o,
                "{i}"
            );
        }
    }
}
