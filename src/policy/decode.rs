//! Decoding of request bytes: percent-encoding (paths and query strings)
//! and base64 (JWT payloads). Both write into a caller's buffer, so the
//! request path never allocates.

/// What a `+` means to [`percent`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plus {
    /// A `+` is itself: in a path it is an ordinary character.
    Kept,
    /// A `+` is a space: form encoding, as query strings use it.
    Space,
}

/// Percent-decodes `v` into `buf` and returns the number of bytes written,
/// or `None` when they do not fit. `%XX` with two hex digits (any case)
/// becomes its byte; any other `%` is kept as it is; `+` as `plus` says.
/// Inline: with `plus` a constant, the `+` test goes away.
#[inline(always)]
pub(crate) fn percent(v: &[u8], buf: &mut [u8], plus: Plus) -> Option<usize> {
    let mut o = 0;
    let mut i = 0;
    while i < v.len() {
        if o == buf.len() {
            return None;
        }
        let c = v[i];
        if c == b'%' && i + 2 < v.len() {
            if let (Some(h), Some(l)) = (hex(v[i + 1]), hex(v[i + 2])) {
                buf[o] = h << 4 | l;
                o += 1;
                i += 3;
                continue;
            }
        }
        buf[o] = if plus == Plus::Space && c == b'+' {
            b' '
        } else {
            c
        };
        o += 1;
        i += 1;
    }
    Some(o)
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes base64 into `buf`, in either alphabet (`-_` or `+/`), padded
/// or not (decoding stops at the first `=`); `None` for a byte outside the
/// alphabets, a dangling sixth bit group, or output that may not fit.
pub(crate) fn base64url<'b>(v: &[u8], buf: &'b mut [u8]) -> Option<&'b [u8]> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        } as u32)
    };
    let v = match v.iter().position(|&c| c == b'=') {
        Some(p) => &v[..p],
        None => v,
    };
    if v.len() / 4 * 3 + 3 > buf.len() {
        return None;
    }
    let mut o = 0;
    for chunk in v.chunks(4) {
        let mut n = 0u32;
        for (j, &c) in chunk.iter().enumerate() {
            n |= val(c)? << (18 - 6 * j);
        }
        let bytes = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        for j in 0..bytes {
            buf[o] = (n >> (16 - 8 * j)) as u8;
            o += 1;
        }
    }
    Some(&buf[..o])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(v: &str, plus: Plus, cap: usize) -> Option<String> {
        let mut buf = vec![0u8; cap];
        let n = percent(v.as_bytes(), &mut buf, plus)?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    #[test]
    fn percent_decoding_of_paths_and_of_query_strings() {
        for (v, path, query) in [
            ("a%2Bb+c", "a+b+c", "a+b c"),
            ("%41%62%2f", "Ab/", "Ab/"),
            ("a%", "a%", "a%"),
            ("a%4", "a%4", "a%4"),
            ("%4g%zz%", "%4g%zz%", "%4g%zz%"),
            ("+", "+", " "),
            ("", "", ""),
        ] {
            assert_eq!(dec(v, Plus::Kept, 64).as_deref(), Some(path), "{v:?}");
            assert_eq!(dec(v, Plus::Space, 64).as_deref(), Some(query), "{v:?}");
        }
        // What fits exactly fits; one byte more does not.
        assert_eq!(dec("a%41b", Plus::Kept, 3).as_deref(), Some("aAb"));
        assert_eq!(dec("a%41bc", Plus::Kept, 3), None);
    }

    #[test]
    fn base64_in_both_alphabets() {
        let mut buf = [0u8; 16];
        assert_eq!(base64url(b"aGk_Pw", &mut buf), Some(&b"hi??"[..]));
        assert_eq!(base64url(b"aGk/Pw==", &mut buf), Some(&b"hi??"[..]));
        assert_eq!(base64url(b"aGk-", &mut buf), Some(&b"hi>"[..]));
        assert_eq!(base64url(b"a", &mut buf), None);
        assert_eq!(base64url(b"a!bc", &mut buf), None);
        assert_eq!(base64url(&[b'A'; 20], &mut buf), None);
    }
}
