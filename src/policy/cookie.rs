//! Finding one cookie in a `Cookie` header value.

use super::bytes::{eq_words, find_byte};

/// The value of cookie `name` in one `Cookie` header value.
///
/// For an ordinary name (not empty, no `=` or `;`, no surrounding
/// whitespace: every name an API JSON gives) one pass compares the name in
/// place at the start of each pair and jumps from `;` to `;`, instead of
/// splitting and trimming every pair; other names take the general path.
/// Both give the same answer.
pub(crate) fn cookie_in<'v>(v: &'v [u8], name: &[u8]) -> Option<&'v [u8]> {
    cookie_in_as(v, name, plain_cookie_name(name))
}

/// Whether a cookie name can take the fast path of [`cookie_in`].
pub(crate) fn plain_cookie_name(name: &[u8]) -> bool {
    !name.is_empty()
        && !name.iter().any(|&c| c == b'=' || c == b';')
        && name.trim_ascii().len() == name.len()
}

/// [`cookie_in`] with `plain` = [`plain_cookie_name`]`(name)` known.
#[inline]
pub(crate) fn cookie_in_as<'v>(v: &'v [u8], name: &[u8], plain: bool) -> Option<&'v [u8]> {
    if !plain {
        return cookie_in_general(v, name);
    }
    let mut rest = v;
    loop {
        let pair = rest.trim_ascii_start();
        let end = find_byte(pair, b';').unwrap_or(pair.len());
        if pair.len() > name.len() && eq_words(&pair[..name.len()], name, |w| w, |w| w) {
            // `name` holds no `=`, so the first `=` of the pair follows it.
            if let Some(val) = pair[name.len()..end].trim_ascii_start().strip_prefix(b"=") {
                let val = val.trim_ascii();
                if !val.is_empty() {
                    return Some(val);
                }
            }
        }
        if end == pair.len() {
            return None;
        }
        rest = &pair[end + 1..];
    }
}

fn cookie_in_general<'v>(v: &'v [u8], name: &[u8]) -> Option<&'v [u8]> {
    for pair in v.split(|&c| c == b';') {
        let pair = pair.trim_ascii();
        let Some(p) = pair.iter().position(|&c| c == b'=') else {
            continue;
        };
        if pair[..p].trim_ascii() == name {
            let val = pair[p + 1..].trim_ascii();
            if !val.is_empty() {
                return Some(val);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_fast_path_matches_general() {
        let vals = [
            "a=1; b=2",
            " JSESSIONID = abc ; c=3",
            "JSESSIONID=; JSESSIONID=x",
            "JSESSIONIDX=1; JSESSIONID=2",
            "xJSESSIONID=1;JSESSIONID\t=\t2\t",
            "JSESSIONID",
            "JSESSIONID x=1; JSESSIONID=y=z",
            ";;=;JSESSIONID=;",
            "",
            "a=b=c; a=b",
            " a b = 1",
        ];
        let names = ["JSESSIONID", "a", "a b", "a=b", " a", "", "b;", "c"];
        for v in vals {
            for n in names {
                assert_eq!(
                    cookie_in(v.as_bytes(), n.as_bytes()),
                    cookie_in_general(v.as_bytes(), n.as_bytes()),
                    "{v:?} {n:?}"
                );
            }
        }
    }
}
