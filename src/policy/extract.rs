//! Reading client identifiers out of a request, as an API's JSON says.
//!
//! One pass over the headers picks up everything the API asks for; values
//! that need decoding (a percent-encoded API key in the query string, a JWT
//! claim) are decoded into a caller-provided [`Scratch`] on the stack, so
//! extraction never allocates. Header names compare case-insensitively;
//! values are exact.

use std::net::IpAddr;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::api::{Api, JwtLocation};
use super::ident::ip_to_u128;

/// Request headers as name/value byte pairs, in the order received.
pub trait Headers {
    /// Number of headers.
    fn count(&self) -> usize;
    /// Header `i` (`i < count()`).
    fn at(&self, i: usize) -> (&[u8], &[u8]);
}

impl Headers for [(&[u8], &[u8])] {
    fn count(&self) -> usize {
        self.len()
    }
    fn at(&self, i: usize) -> (&[u8], &[u8]) {
        self[i]
    }
}

impl<const N: usize> Headers for [(&[u8], &[u8]); N] {
    fn count(&self) -> usize {
        N
    }
    fn at(&self, i: usize) -> (&[u8], &[u8]) {
        self[i]
    }
}

/// ASCII case-insensitive equality, eight bytes at a time: the same answer as
/// `<[u8]>::eq_ignore_ascii_case` (bytes above 0x7f compare exactly), at a
/// fraction of the cost for header names. The tail is zero-padded into one
/// more word rather than compared byte by byte.
#[inline]
pub fn eq_ignore_case(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    // Lowercases the ASCII capitals of eight bytes at once.
    #[inline(always)]
    fn lower(x: u64) -> u64 {
        const ONES: u64 = 0x0101_0101_0101_0101;
        let low7 = x & (0x7f * ONES);
        let ge_a = low7 + (0x80 - b'A' as u64) * ONES;
        let gt_z = low7 + (0x7f - b'Z' as u64) * ONES;
        let upper = ge_a & !gt_z & !x & (0x80 * ONES);
        x | (upper >> 2)
    }
    #[inline(always)]
    fn word(c: &[u8]) -> u64 {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        u64::from_le_bytes(w)
    }
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        if lower(word(x)) != lower(word(y)) {
            return false;
        }
    }
    lower(word(ca.remainder())) == lower(word(cb.remainder()))
}

/// The first value of header `name` (any case).
pub fn header<'h, H: Headers + ?Sized>(h: &'h H, name: &[u8]) -> Option<&'h [u8]> {
    (0..h.count())
        .map(|i| h.at(i))
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// Buffers for decoded values, on the caller's stack. Each is zeroed only
/// when a request needs it, so the common request pays nothing for them.
#[derive(Default)]
pub struct Scratch {
    qs: Option<[u8; 1024]>,
    jwt: Option<[u8; 4096]>,
    user: Option<[u8; 512]>,
}

/// Identifiers found in one request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Ids<'a> {
    /// Client address in the 128-bit mapped space.
    pub ip: Option<u128>,
    /// Cookie name and value.
    pub cookie: Option<(&'a [u8], &'a [u8])>,
    /// Bearer token.
    pub token: Option<&'a [u8]>,
    /// API key name (as the API JSON names it) and value.
    pub api_key: Option<(&'a [u8], &'a [u8])>,
    /// User name.
    pub username: Option<&'a [u8]>,
}

/// Parses a client address: `1.2.3.4`, `2001:db8::1`, `[2001:db8::1]`, and with
/// `allow_port` also `1.2.3.4:5678` / `[::1]:80` (as X-Forwarded-For may carry).
pub fn parse_ip(v: &[u8], allow_port: bool) -> Option<u128> {
    let s = std::str::from_utf8(v.trim_ascii()).ok()?;
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip_to_u128(ip));
    }
    let inner = if let Some(rest) = s.strip_prefix('[') {
        let (a, tail) = rest.split_once(']')?;
        if !(tail.is_empty() || allow_port && tail.strip_prefix(':')?.parse::<u16>().is_ok()) {
            return None;
        }
        a
    } else if allow_port {
        let (a, p) = s.rsplit_once(':')?;
        p.parse::<u16>().ok()?;
        a
    } else {
        return None;
    };
    inner.parse::<IpAddr>().ok().map(ip_to_u128)
}

/// The first address of `X-Forwarded-For`, if it parses.
pub fn xff_first<H: Headers + ?Sized>(h: &H) -> Option<u128> {
    let v = header(h, b"x-forwarded-for")?;
    let first = v.split(|&c| c == b',').next()?;
    parse_ip(first, true)
}

/// The value of cookie `name` across all `Cookie` headers (first occurrence).
pub fn cookie<'h, H: Headers + ?Sized>(h: &'h H, name: &[u8]) -> Option<&'h [u8]> {
    (0..h.count())
        .map(|i| h.at(i))
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"cookie"))
        .find_map(|(_, v)| cookie_in(v, name))
}

/// The value of cookie `name` in one `Cookie` header value.
///
/// For an ordinary name (not empty, no `=` or `;`, no surrounding
/// whitespace: every name an API JSON gives) one pass jumps from `;` to `;`
/// (memchr) and compares the name in place, instead of splitting and trimming
/// every pair; other names take the general path. Both give the same answer.
fn cookie_in<'v>(v: &'v [u8], name: &[u8]) -> Option<&'v [u8]> {
    let plain = !name.is_empty()
        && !name.iter().any(|&c| c == b'=' || c == b';')
        && name.trim_ascii().len() == name.len();
    if !plain {
        return cookie_in_general(v, name);
    }
    let mut rest = v;
    loop {
        let end = memchr::memchr(b';', rest).unwrap_or(rest.len());
        let pair = &rest[..end];
        if let Some(after) = pair.trim_ascii_start().strip_prefix(name) {
            // `name` holds no `=`, so the first `=` of the pair follows it.
            if let Some(val) = after.trim_ascii_start().strip_prefix(b"=") {
                let val = val.trim_ascii();
                if !val.is_empty() {
                    return Some(val);
                }
            }
        }
        if end == rest.len() {
            return None;
        }
        rest = &rest[end + 1..];
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

/// The token of `Authorization: Bearer <token>` (scheme in any case).
pub fn bearer<H: Headers + ?Sized>(h: &H) -> Option<&[u8]> {
    strip_bearer(header(h, b"authorization")?)
}

fn strip_bearer(v: &[u8]) -> Option<&[u8]> {
    let v = v.trim_ascii();
    if v.len() > 7 && eq_ignore_case(&v[..6], b"bearer") && v[6] == b' ' {
        let t = v[7..].trim_ascii();
        (!t.is_empty()).then_some(t)
    } else {
        None
    }
}

/// The raw value of query parameter `name` in `uri` (first occurrence).
pub fn query_param<'u>(uri: &'u [u8], name: &[u8]) -> Option<&'u [u8]> {
    let q = uri.iter().position(|&c| c == b'?')?;
    let q = &uri[q + 1..];
    let q = &q[..q.iter().position(|&c| c == b'#').unwrap_or(q.len())];
    for pair in q.split(|&c| c == b'&') {
        let (k, v) = match pair.iter().position(|&c| c == b'=') {
            Some(p) => (&pair[..p], &pair[p + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        if k == name {
            return Some(v);
        }
    }
    None
}

/// Percent-decodes (`+` as space) into `buf`; `None` when it does not fit.
fn url_decode<'b>(v: &[u8], buf: &'b mut [u8]) -> Option<&'b [u8]> {
    if !v.iter().any(|&c| c == b'%' || c == b'+') {
        return None;
    }
    let mut o = 0;
    let mut i = 0;
    while i < v.len() {
        if o == buf.len() {
            return None;
        }
        let c = v[i];
        let hx = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        if c == b'%' && i + 2 < v.len() {
            if let (Some(h), Some(l)) = (hx(v[i + 1]), hx(v[i + 2])) {
                buf[o] = h << 4 | l;
                o += 1;
                i += 3;
                continue;
            }
        }
        buf[o] = if c == b'+' { b' ' } else { c };
        o += 1;
        i += 1;
    }
    Some(&buf[..o])
}

fn b64url_decode<'b>(v: &[u8], buf: &'b mut [u8]) -> Option<&'b [u8]> {
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

/// Finds the string claim `claim` at the top level of a JSON object (the first
/// element if it is an array of strings), copying it into `out`.
fn json_claim<'o>(json: &[u8], claim: &str, out: &'o mut [u8]) -> Option<&'o [u8]> {
    struct Root<'c, 'o> {
        claim: &'c str,
        out: &'o mut [u8],
        len: Option<usize>,
    }
    struct KeyIs<'c>(&'c str);
    impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
        type Value = bool;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
            d.deserialize_str(self)
        }
    }
    impl<'de> Visitor<'de> for KeyIs<'_> {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a key")
        }
        fn visit_str<E>(self, v: &str) -> Result<bool, E> {
            Ok(v == self.0)
        }
    }
    struct Val<'b>(&'b mut [u8]);
    impl<'de> DeserializeSeed<'de> for Val<'_> {
        type Value = Option<usize>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Val<'_> {
        type Value = Option<usize>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string or an array of strings")
        }
        fn visit_str<E>(self, v: &str) -> Result<Option<usize>, E> {
            if v.is_empty() || v.len() > self.0.len() {
                return Ok(None);
            }
            self.0[..v.len()].copy_from_slice(v.as_bytes());
            Ok(Some(v.len()))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Option<usize>, A::Error> {
            let first = s.next_element_seed(Val(self.0))?.flatten();
            while s.next_element::<IgnoredAny>()?.is_some() {}
            Ok(first)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Option<usize>, A::Error> {
            while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Option<usize>, E> {
            Ok(None)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Option<usize>, E> {
            Ok(None)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Option<usize>, E> {
            Ok(None)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Option<usize>, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Option<usize>, E> {
            Ok(None)
        }
    }
    impl<'de> Visitor<'de> for &mut Root<'_, '_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
            while let Some(is) = m.next_key_seed(KeyIs(self.claim))? {
                if is && self.len.is_none() {
                    self.len = m.next_value_seed(Val(self.out))?;
                } else {
                    m.next_value::<IgnoredAny>()?;
                }
            }
            Ok(())
        }
    }
    let mut root = Root {
        claim,
        out,
        len: None,
    };
    let mut de = serde_json::Deserializer::from_slice(json);
    de.deserialize_map(&mut root).ok()?;
    let n = root.len?;
    Some(&root.out[..n])
}

/// The user name in a JWT's payload claim `claim` (signature not verified).
pub fn jwt_username<'s>(jwt: &[u8], claim: &str, s: &'s mut Scratch) -> Option<&'s [u8]> {
    let json = b64url_decode_payload(jwt, s.jwt.get_or_insert([0; 4096]))?;
    json_claim(json, claim, s.user.get_or_insert([0; 512]))
}

/// Extracts every identifier `api` asks for. `client_ip` is the host's client
/// address (already parsed); with `xff` the first `X-Forwarded-For` address
/// replaces it when it parses. `host_user` is a user name the host passes in.
pub fn extract<'a, H: Headers + ?Sized>(
    api: Option<&'a Api>,
    client_ip: Option<u128>,
    xff: bool,
    uri: &'a [u8],
    h: &'a H,
    host_user: &'a [u8],
    s: &'a mut Scratch,
) -> Ids<'a> {
    // One pass over the headers collects everything this API reads: the first
    // occurrence of each named header, the cookie from any `Cookie` header.
    let (cookie_name, key_name, user_name, jwt_name) = match api {
        Some(a) => (
            a.cookie.as_deref().map(str::as_bytes),
            a.apikey_header.as_deref().map(str::as_bytes),
            a.username_header.as_deref().map(str::as_bytes),
            match a.jwt.as_ref().map(|j| &j.location) {
                Some(JwtLocation::Header(n)) => Some(n.as_bytes()),
                _ => None,
            },
        ),
        None => (None, None, None, None),
    };
    let want_auth = api.is_some_and(|a| {
        a.oauth2_access_token
            || matches!(
                a.jwt.as_ref().map(|j| &j.location),
                Some(JwtLocation::Bearer)
            )
    });
    let is = |n: &[u8], want: Option<&[u8]>| want.is_some_and(|w| eq_ignore_case(n, w));
    let (mut xff_v, mut auth_v, mut key_v, mut user_v, mut jwt_v, mut cookie_v) =
        (None, None, None, None, None, None);
    // Lengths of the wanted names: most headers are rejected on length alone.
    let mut lens = 0u64;
    let mut long = false;
    let mut want_len = |w: Option<&[u8]>| {
        if let Some(w) = w {
            if w.len() < 64 {
                lens |= 1 << w.len();
            } else {
                long = true;
            }
        }
    };
    want_len(xff.then_some(b"x-forwarded-for"));
    want_len(want_auth.then_some(b"authorization"));
    want_len(cookie_name.map(|_| &b"cookie"[..]));
    want_len(key_name);
    want_len(user_name);
    want_len(jwt_name);
    for i in 0..h.count() {
        let (n, v) = h.at(i);
        if if n.len() < 64 {
            lens & 1 << n.len() == 0
        } else {
            !long
        } {
            continue;
        }
        if xff && xff_v.is_none() && is(n, Some(b"x-forwarded-for")) {
            xff_v = Some(v);
        }
        if want_auth && auth_v.is_none() && is(n, Some(b"authorization")) {
            auth_v = Some(v);
        }
        if cookie_v.is_none() && cookie_name.is_some() && is(n, Some(b"cookie")) {
            cookie_v = cookie_name.and_then(|c| cookie_in(v, c));
        }
        if key_v.is_none() && is(n, key_name) {
            key_v = Some(v);
        }
        if user_v.is_none() && is(n, user_name) {
            user_v = Some(v);
        }
        if jwt_v.is_none() && is(n, jwt_name) {
            jwt_v = Some(v);
        }
    }
    let xff_ip = xff_v
        .and_then(|v| v.split(|&c| c == b',').next())
        .and_then(|f| parse_ip(f, true));
    let mut ids = Ids {
        ip: xff_ip.or(client_ip),
        ..Ids::default()
    };
    let Some(api) = api else {
        return ids;
    };
    let Scratch { qs, jwt, user } = s;
    ids.cookie = cookie_v.zip(cookie_name).map(|(v, n)| (n, v));
    let auth_bearer = auth_v.and_then(strip_bearer);
    if api.oauth2_access_token {
        ids.token = auth_bearer;
    }
    ids.api_key = key_v.zip(key_name).map(|(v, n)| (n, v.trim_ascii()));
    if ids.api_key.is_none() {
        if let Some(name) = &api.apikey_qs {
            if let Some(raw) = query_param(uri, name.as_bytes()) {
                let v: &'a [u8] = match url_decode(raw, qs.get_or_insert([0; 1024])) {
                    Some(d) => d,
                    None => raw,
                };
                if !v.is_empty() {
                    ids.api_key = Some((name.as_bytes(), v));
                }
            }
        }
    }
    ids.username = user_v.map(|v| v.trim_ascii()).filter(|v| !v.is_empty());
    if ids.username.is_none() {
        if let Some(j) = &api.jwt {
            let token = match &j.location {
                JwtLocation::Bearer => auth_bearer,
                JwtLocation::Header(_) => jwt_v.map(|v| strip_bearer(v).unwrap_or(v)),
                JwtLocation::Query(n) => query_param(uri, n.as_bytes()),
            };
            if let Some(t) = token {
                let json = b64url_decode_payload(t, jwt.get_or_insert([0; 4096]));
                if let Some(json) = json {
                    ids.username = json_claim(json, &j.username, user.get_or_insert([0; 512]));
                }
            }
        }
    }
    if ids.username.is_none() && !host_user.trim_ascii().is_empty() {
        ids.username = Some(host_user.trim_ascii());
    }
    ids
}

fn b64url_decode_payload<'b>(jwt: &[u8], buf: &'b mut [u8]) -> Option<&'b [u8]> {
    let mut parts = jwt.trim_ascii().split(|&c| c == b'.');
    parts.next()?;
    let payload = parts.next()?;
    parts.next()?;
    b64url_decode(payload, buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<'a>(v: &'a [(&'a str, &'a str)]) -> Vec<(&'a [u8], &'a [u8])> {
        v.iter()
            .map(|(a, b)| (a.as_bytes(), b.as_bytes()))
            .collect()
    }

    #[test]
    fn cookies_from_several_headers() {
        let hs = h(&[("Cookie", "a=1; b=2"), ("cookie", "JSESSIONID=abc ; c=3")]);
        assert_eq!(cookie(&hs[..], b"JSESSIONID"), Some(&b"abc"[..]));
        assert_eq!(cookie(&hs[..], b"b"), Some(&b"2"[..]));
        assert_eq!(
            cookie(&hs[..], b"jsessionid"),
            None,
            "cookie names are exact"
        );
        let big = format!("x={}; JSESSIONID=z", "y".repeat(1 << 20));
        let pairs = [("Cookie", big.as_str())];
        let hs = h(&pairs);
        assert_eq!(cookie(&hs[..], b"JSESSIONID"), Some(&b"z"[..]));
    }

    #[test]
    fn bearer_and_xff() {
        let hs = h(&[
            ("AUTHORIZATION", "bearer  tok123 "),
            ("X-Forwarded-For", " 2001:db8::7 , 10.0.0.1"),
        ]);
        assert_eq!(bearer(&hs[..]), Some(&b"tok123"[..]));
        assert_eq!(xff_first(&hs[..]), parse_ip(b"2001:db8::7", false));
        assert!(bearer(&h(&[("Authorization", "Basic abc")])[..]).is_none());
        assert!(bearer(&h(&[("Authorization", "Bearer ")])[..]).is_none());
        assert_eq!(parse_ip(b"1.2.3.4:80", true), parse_ip(b"1.2.3.4", false));
        assert_eq!(parse_ip(b"[::1]:80", true), parse_ip(b"::1", false));
        assert_eq!(parse_ip(b"[::1]", false), parse_ip(b"::1", false));
        assert!(parse_ip(b"1.2.3.4:80", false).is_none());
        assert!(parse_ip(b"junk", true).is_none());
        assert!(parse_ip(&[0xff, 0xfe], true).is_none());
    }

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

    #[test]
    fn query_params() {
        assert_eq!(
            query_param(b"/a?x=1&key=abc&key=def", b"key"),
            Some(&b"abc"[..])
        );
        assert_eq!(query_param(b"/a?key", b"key"), Some(&b""[..]));
        assert_eq!(query_param(b"/a", b"key"), None);
        let mut buf = [0u8; 16];
        assert_eq!(url_decode(b"a%2Bb+c", &mut buf), Some(&b"a+b c"[..]));
        assert_eq!(url_decode(b"plain", &mut buf), None);
    }

    #[test]
    fn jwt_claims() {
        // {"sub":"1","username":"alice","client_id":"app"}
        let payload = "eyJzdWIiOiIxIiwidXNlcm5hbWUiOiJhbGljZSIsImNsaWVudF9pZCI6ImFwcCJ9";
        let jwt = format!("eyJhbGciOiJub25lIn0.{payload}.sig");
        let mut s = Scratch::default();
        assert_eq!(
            jwt_username(jwt.as_bytes(), "username", &mut s),
            Some(&b"alice"[..])
        );
        let mut s = Scratch::default();
        assert_eq!(jwt_username(jwt.as_bytes(), "nope", &mut s), None);
        // {"username":["bob","x"],"n":{"a":[1,2]}}  — arrays give their first element.
        let p2 = "eyJuIjp7ImEiOlsxLDJdfSwidXNlcm5hbWUiOlsiYm9iIiwieCJdfQ";
        let mut s = Scratch::default();
        assert_eq!(
            jwt_username(format!("h.{p2}.s").as_bytes(), "username", &mut s),
            Some(&b"bob"[..])
        );
        for bad in ["", "a.b", "a.!!!.c", "a.bm90IGpzb24.c"] {
            let mut s = Scratch::default();
            assert_eq!(
                jwt_username(bad.as_bytes(), "username", &mut s),
                None,
                "{bad}"
            );
        }
    }
}
