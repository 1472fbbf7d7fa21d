//! Reading client identifiers out of a request, as an API's JSON says.
//!
//! One pass over the headers (the header scan of `headers.rs`) picks up
//! everything the API asks for; values that need decoding (a
//! percent-encoded API key in the query string, a JWT claim) are decoded
//! into a caller-provided [`Scratch`] on the stack, so extraction never
//! allocates. Header names compare case-insensitively;
//! values are exact.

use std::net::IpAddr;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::api::{Api, JwtLocation};
use super::bytes::{lower8, word_at};
use super::cookie::cookie_in;
use super::decode::{self, Plus};
use super::headers::{Found, scan_headers, slot};
pub use super::headers::{Headers, header};
use super::ident::{IdKind, ip_to_u128};

/// Buffers for decoded values, on the caller's stack (about 22 KB, most
/// of it the buffer of a large JWT payload). Each is zeroed only when a
/// request needs it, so the common request pays nothing for them: a JWT
/// payload that fits in 4 KB never touches the 16 KB buffer.
#[derive(Default)]
pub struct Scratch {
    qs: Option<[u8; 1024]>,
    jwt: Option<[u8; 4096]>,
    jwt_big: Option<[u8; JWT_BUF]>,
    user: Option<[u8; 512]>,
}

/// The largest JWT payload, in decoded bytes, whose user name is read: it
/// covers every token nginx passes with its default 8 KB limit on a header
/// line, with room (docs/design.md, Identifiers).
pub const MAX_JWT_PAYLOAD: usize = 16 * 1024;

/// The large payload buffer: the decoder wants room for a whole last group
/// of three bytes beyond the payload.
const JWT_BUF: usize = MAX_JWT_PAYLOAD + 3;

/// How many occurrences of one identifier kind a request may carry: each
/// is looked up in the lists; a request with more is refused
/// (docs/design.md, Identifiers).
pub const MAX_OCCURRENCES: usize = 8;

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
    let v = v.trim_ascii();
    // The common case without UTF-8 validation and std's general parser
    // (they take a tenth of a check's time in an nginx worker).
    if let Some(a) = parse_v4(v) {
        return Some(ip_to_u128(IpAddr::V4(a.into())));
    }
    let s = std::str::from_utf8(v).ok()?;
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

/// A dotted-quad IPv4 address exactly as `Ipv4Addr::from_str` takes one:
/// four decimal octets of one to three digits, none above 255 and none
/// with a leading zero. `None` for anything else, which may still be an
/// address of another form.
fn parse_v4(s: &[u8]) -> Option<u32> {
    let mut addr = 0u32;
    let mut rest = s;
    for i in 0..4 {
        let mut octet = 0u32;
        let mut digits = 0;
        while let [c @ b'0'..=b'9', tail @ ..] = rest {
            if digits == 3 || digits == 1 && octet == 0 {
                return None;
            }
            octet = octet * 10 + u32::from(c - b'0');
            digits += 1;
            rest = tail;
        }
        if digits == 0 || octet > 255 {
            return None;
        }
        addr = addr << 8 | octet;
        match rest {
            [] if i == 3 => return Some(addr),
            [b'.', tail @ ..] if i < 3 => rest = tail,
            _ => return None,
        }
    }
    None
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

/// The token of `Authorization: Bearer <token>` (scheme in any case).
pub fn bearer<H: Headers + ?Sized>(h: &H) -> Option<&[u8]> {
    strip_bearer(header(h, b"authorization")?)
}

fn strip_bearer(v: &[u8]) -> Option<&[u8]> {
    const BEARER: u64 = u64::from_le_bytes(*b"bearer \0");
    const SEVEN: u64 = (1 << 56) - 1;
    let v = v.trim_ascii();
    // `Bearer ` in any case, as one word.
    if v.len() > 7 && lower8(word_at(v, 0)) & SEVEN == BEARER {
        let t = v[7..].trim_ascii();
        (!t.is_empty()).then_some(t)
    } else {
        None
    }
}

/// The raw value of query parameter `name` in `uri` (first occurrence).
pub fn query_param<'u>(uri: &'u [u8], name: &[u8]) -> Option<&'u [u8]> {
    query_params(uri, name).next()
}

/// The raw values of query parameter `name` in `uri`, in order.
fn query_params<'u>(uri: &'u [u8], name: &[u8]) -> impl Iterator<Item = &'u [u8]> {
    let q = uri.iter().position(|&c| c == b'?').map(|q| {
        let q = &uri[q + 1..];
        &q[..q.iter().position(|&c| c == b'#').unwrap_or(q.len())]
    });
    q.into_iter()
        .flat_map(|q| q.split(|&c| c == b'&'))
        .filter_map(move |pair| {
            let (k, v) = match pair.iter().position(|&c| c == b'=') {
                Some(p) => (&pair[..p], &pair[p + 1..]),
                None => (pair, &pair[pair.len()..]),
            };
            (k == name).then_some(v)
        })
}

/// The values of every header named `name` (any case), in order.
fn headers_named<'h, H: Headers + ?Sized>(
    h: &'h H,
    name: &'h [u8],
) -> impl Iterator<Item = &'h [u8]> {
    (0..h.count())
        .map(|i| h.at(i))
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// A query-string value percent-decoded, `+` as a space, into `buf`;
/// `None` when it needs no decoding or does not fit.
fn url_decode<'b>(v: &[u8], buf: &'b mut [u8]) -> Option<&'b [u8]> {
    if !v.iter().any(|&c| c == b'%' || c == b'+') {
        return None;
    }
    let n = decode::percent(v, buf, Plus::Space)?;
    Some(&buf[..n])
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
    let Scratch {
        jwt: small,
        jwt_big: big,
        user,
        ..
    } = s;
    let json = jwt_payload(jwt, small, big).ok()??;
    json_claim(json, claim, user.get_or_insert([0; 512]))
}

/// A JWT payload longer than [`MAX_JWT_PAYLOAD`] decoded bytes: its user
/// name is not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TooLarge;

/// A JWT's payload decoded into `small` when it fits there, else into
/// `big` (zeroed only then); `Ok(None)` when it is not a three-part token
/// with a base64url payload.
fn jwt_payload<'b>(
    jwt: &[u8],
    small: &'b mut Option<[u8; 4096]>,
    big: &'b mut Option<[u8; JWT_BUF]>,
) -> Result<Option<&'b [u8]>, TooLarge> {
    let mut parts = jwt.trim_ascii().split(|&c| c == b'.');
    let (Some(_), Some(payload), Some(_)) = (parts.next(), parts.next(), parts.next()) else {
        return Ok(None);
    };
    let digits = payload.iter().take_while(|&&c| c != b'=').count();
    if digits / 4 * 3 + (digits % 4).saturating_sub(1) > MAX_JWT_PAYLOAD {
        return Err(TooLarge);
    }
    // The decoder's own bound on what a buffer must hold.
    if digits / 4 * 3 + 3 <= 4096 {
        Ok(decode::base64url(payload, small.get_or_insert([0; 4096])))
    } else {
        Ok(decode::base64url(payload, big.get_or_insert([0; JWT_BUF])))
    }
}

/// What one request showed beyond the first occurrence of each identifier
/// [`extract`] found: whether it needs [`each_occurrence`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Beyond {
    /// Bit `1 << kind`: the kind may occur more than once.
    pub repeated: u8,
    /// The JWT at the API's JWT location has a payload over
    /// [`MAX_JWT_PAYLOAD`].
    pub jwt_too_large: bool,
}

impl Beyond {
    /// Whether nothing beyond the first occurrences needs a look.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.repeated == 0 && !self.jwt_too_large
    }
}

/// The bit of `kind` in [`Beyond::repeated`].
#[inline(always)]
pub(crate) const fn kind_bit(kind: IdKind) -> u8 {
    1 << kind as u8
}

/// Extracts every identifier `api` asks for. `client_ip` is the host's client
/// address (already parsed); with `xff` the first `X-Forwarded-For` address
/// replaces it when it parses. `host_user` is a user name the host passes in.
/// Cookie and API-key names in the result are the API's own
/// (the same bytes, not a copy), so the list key can reuse the API's
/// hashed key prefix. Each identifier is its first occurrence.
pub fn extract<'a, H: Headers + ?Sized>(
    api: Option<&'a Api>,
    client_ip: Option<u128>,
    xff: bool,
    uri: &'a [u8],
    h: &'a H,
    host_user: &'a [u8],
    s: &'a mut Scratch,
) -> Ids<'a> {
    extract_all(api, client_ip, xff, uri, h, host_user, s).0
}

/// [`extract`], and which kinds the request may carry more than once.
#[inline(always)]
pub(crate) fn extract_all<'a, H: Headers + ?Sized>(
    api: Option<&'a Api>,
    client_ip: Option<u128>,
    xff: bool,
    uri: &'a [u8],
    h: &'a H,
    host_user: &'a [u8],
    s: &'a mut Scratch,
) -> (Ids<'a>, Beyond) {
    let first_xff = |v: Option<&[u8]>| {
        v.and_then(|v| v.split(|&c| c == b',').next())
            .and_then(|f| parse_ip(f, true))
    };
    let Some(api) = api else {
        let v = if xff {
            header(h, b"x-forwarded-for")
        } else {
            None
        };
        let ids = Ids {
            ip: first_xff(v).or(client_ip),
            ..Ids::default()
        };
        return (ids, Beyond::default());
    };
    let plan = &api.headers;
    let need = plan.slots & if xff { !0 } else { !slot::XFF };
    let cookie_name = api.cookie_key.as_ref().map_or(&b""[..], |k| k.name());
    let Found {
        xff: xff_v,
        auth: auth_v,
        cookie: cookie_v,
        key: key_v,
        user: user_v,
        jwt: jwt_v,
        again,
    } = scan_headers(plan, need, cookie_name, h);
    let mut ids = Ids {
        ip: first_xff(xff_v).or(client_ip),
        ..Ids::default()
    };
    let mut more = Beyond::default();
    let mut repeated = |kind: IdKind, yes: bool| {
        if yes {
            more.repeated |= kind_bit(kind);
        }
    };
    let Scratch {
        qs,
        jwt,
        jwt_big,
        user,
    } = s;
    ids.cookie = cookie_v.map(|v| (cookie_name, v));
    repeated(IdKind::Cookie, again & slot::COOKIE != 0);
    let auth_bearer = auth_v.and_then(strip_bearer);
    if api.oauth2_access_token {
        ids.token = auth_bearer;
        repeated(IdKind::Token, again & slot::AUTH != 0);
    }
    ids.api_key = key_v
        .zip(api.apikey_header_key.as_ref())
        .map(|(v, k)| (k.name(), v.trim_ascii()));
    repeated(IdKind::ApiKey, again & slot::KEY != 0);
    if let Some(k) = &api.apikey_qs_key {
        let mut raws = query_params(uri, k.name());
        if ids.api_key.is_some() {
            repeated(IdKind::ApiKey, raws.next().is_some());
        } else if let Some(raw) = raws.next() {
            let v: &'a [u8] = match url_decode(raw, qs.get_or_insert([0; 1024])) {
                Some(d) => d,
                None => raw,
            };
            if !v.is_empty() {
                ids.api_key = Some((k.name(), v));
            }
            repeated(IdKind::ApiKey, raws.next().is_some());
        }
    }
    ids.username = user_v.map(|v| v.trim_ascii()).filter(|v| !v.is_empty());
    repeated(IdKind::Username, again & slot::USER != 0);
    if let Some(j) = &api.jwt {
        let (token, twice) = match &j.location {
            JwtLocation::Bearer => (auth_bearer, again & slot::AUTH != 0),
            JwtLocation::Header(_) => (
                jwt_v.map(|v| strip_bearer(v).unwrap_or(v)),
                again & slot::JWT != 0,
            ),
            JwtLocation::Query(n) => {
                let mut raws = query_params(uri, n.as_bytes());
                (raws.next(), raws.next().is_some())
            }
        };
        // The first header at the JWT's location may carry no token (a
        // `Basic` credential, say) while a later one does: a repeat is a
        // repeat whether or not the first one had a token.
        if ids.username.is_some() {
            // A token beside the user-name header: a second source of the
            // same identifier.
            repeated(IdKind::Username, token.is_some() || twice);
        } else if let Some(t) = token {
            repeated(IdKind::Username, twice);
            match jwt_payload(t, jwt, jwt_big) {
                Ok(Some(json)) => {
                    ids.username = json_claim(json, &j.username, user.get_or_insert([0; 512]));
                }
                Ok(None) => {}
                Err(TooLarge) => more.jwt_too_large = true,
            }
        } else {
            repeated(IdKind::Username, twice);
        }
    }
    if ids.username.is_none() && !host_user.trim_ascii().is_empty() {
        ids.username = Some(host_user.trim_ascii());
    }
    (ids, more)
}

/// How the occurrences of one identifier kind compare (see
/// [`each_occurrence`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Occurrences seen, counting at most one beyond [`MAX_OCCURRENCES`].
    pub count: usize,
    /// Two occurrences have different values.
    pub differ: bool,
    /// A JWT's payload was over [`MAX_JWT_PAYLOAD`]: its user name is unknown.
    pub unreadable: bool,
}

impl Tally {
    /// More occurrences than [`MAX_OCCURRENCES`]: the request cannot be fully checked.
    pub fn too_many(&self) -> bool {
        self.count > MAX_OCCURRENCES
    }
}

/// The first value seen, to compare the others with.
#[allow(
    clippy::large_enum_variant,
    reason = "a copy on the slow path's stack, not a box: the request path allocates nothing"
)]
enum First<'h> {
    None,
    /// A value in the request itself.
    Raw(&'h [u8]),
    /// A decoded value, copied (every decoding buffer fits).
    Copied([u8; 1024], usize),
}

struct Seen<'h, 'f> {
    tally: Tally,
    first: First<'h>,
    f: &'f mut dyn FnMut(&[u8], &[u8]),
}

impl<'h> Seen<'h, '_> {
    /// One occurrence `v` named `name` (`raw`: `v` is the request's own
    /// bytes); whether to go on.
    fn see(&mut self, name: &[u8], v: &[u8], raw: Option<&'h [u8]>) -> bool {
        self.tally.count += 1;
        if self.tally.too_many() {
            return false;
        }
        match &self.first {
            First::None => {
                self.first = match raw {
                    Some(r) => First::Raw(r),
                    None => {
                        let mut b = [0; 1024];
                        let n = v.len().min(b.len());
                        b[..n].copy_from_slice(&v[..n]);
                        First::Copied(b, n)
                    }
                }
            }
            First::Raw(r) => self.tally.differ |= *r != v,
            First::Copied(b, n) => self.tally.differ |= b[..*n] != *v,
        }
        (self.f)(name, v);
        true
    }
}

/// Calls `f` with (name, value) for every occurrence of identifier `kind`
/// in the request, in order, up to [`MAX_OCCURRENCES`], and tells how they
/// compare. The name is the API's own, as in [`extract`] (empty for tokens
/// and user names). The occurrences of each kind:
///
/// - cookie: the API's cookie in every `Cookie` header, each time it occurs;
/// - token: every `Authorization: Bearer` header;
/// - API key: every `apikey_header` header, then every `apikey_qs` query
///   parameter;
/// - user name: every `username_header` header, then the user name of every
///   JWT at the API's JWT location.
///
/// The slow path of a request whose [`Beyond`] is set: it reads the headers
/// and the query string again, with buffers of its own (a [`Scratch`] and a
/// 1 KB copy of the first value, about 23 KB of stack on top of the
/// caller's, zeroed only as a request needs them).
#[inline(never)]
pub(crate) fn each_occurrence<H: Headers + ?Sized>(
    api: &Api,
    kind: IdKind,
    uri: &[u8],
    h: &H,
    f: &mut dyn FnMut(&[u8], &[u8]),
) -> Tally {
    let mut seen = Seen {
        tally: Tally::default(),
        first: First::None,
        f,
    };
    let mut s = Scratch::default();
    match kind {
        IdKind::Ip => {}
        IdKind::Cookie => {
            let Some(name) = api.cookie_key.as_ref().map(|k| k.name()) else {
                return seen.tally;
            };
            for v in headers_named(h, b"cookie") {
                let mut rest = v;
                while let Some(c) = cookie_in(rest, name) {
                    if !seen.see(name, c, Some(c)) {
                        return seen.tally;
                    }
                    rest = &rest[c.as_ptr() as usize - rest.as_ptr() as usize + c.len()..];
                }
            }
        }
        IdKind::Token => {
            for t in headers_named(h, b"authorization").filter_map(strip_bearer) {
                if !seen.see(b"", t, Some(t)) {
                    return seen.tally;
                }
            }
        }
        IdKind::ApiKey => {
            if let Some(k) = &api.apikey_header_key {
                for v in headers_named(h, k.name()).map(|v| v.trim_ascii()) {
                    if !seen.see(k.name(), v, Some(v)) {
                        return seen.tally;
                    }
                }
            }
            if let Some(k) = &api.apikey_qs_key {
                for raw in query_params(uri, k.name()) {
                    let go = match url_decode(raw, s.qs.get_or_insert([0; 1024])) {
                        Some(d) => seen.see(k.name(), d, None),
                        None if raw.is_empty() => true,
                        None => seen.see(k.name(), raw, Some(raw)),
                    };
                    if !go {
                        return seen.tally;
                    }
                }
            }
        }
        IdKind::Username => {
            if let Some(u) = &api.username_header {
                for v in headers_named(h, u.as_bytes()).map(|v| v.trim_ascii()) {
                    if !v.is_empty() && !seen.see(b"", v, Some(v)) {
                        return seen.tally;
                    }
                }
            }
            let Some(j) = &api.jwt else {
                return seen.tally;
            };
            let mut user = |t: &[u8], seen: &mut Seen<'_, '_>| -> bool {
                let Scratch {
                    jwt, jwt_big, user, ..
                } = &mut s;
                match jwt_payload(t, jwt, jwt_big) {
                    Ok(json) => {
                        match json.and_then(|json| {
                            json_claim(json, &j.username, user.get_or_insert([0; 512]))
                        }) {
                            Some(u) => seen.see(b"", u, None),
                            None => true,
                        }
                    }
                    Err(TooLarge) => {
                        seen.tally.unreadable = true;
                        true
                    }
                }
            };
            match &j.location {
                JwtLocation::Bearer => {
                    for t in headers_named(h, b"authorization").filter_map(strip_bearer) {
                        if !user(t, &mut seen) {
                            break;
                        }
                    }
                }
                JwtLocation::Header(n) => {
                    for v in headers_named(h, n.as_bytes()) {
                        if !user(strip_bearer(v).unwrap_or(v), &mut seen) {
                            break;
                        }
                    }
                }
                JwtLocation::Query(n) => {
                    for t in query_params(uri, n.as_bytes()) {
                        if !user(t, &mut seen) {
                            break;
                        }
                    }
                }
            }
        }
    }
    seen.tally
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing::Rng;

    fn h<'a>(v: &'a [(&'a str, &'a str)]) -> Vec<(&'a [u8], &'a [u8])> {
        v.iter()
            .map(|(a, b)| (a.as_bytes(), b.as_bytes()))
            .collect()
    }

    /// `extract` written the plain way: one lookup per header it wants
    /// (first occurrence), the cookie from the first `Cookie` header that has
    /// it. The one-pass version must agree on every request.
    fn extract_plainly<'a>(
        api: &'a Api,
        client_ip: Option<u128>,
        xff: bool,
        uri: &'a [u8],
        hs: &'a [(&'a [u8], &'a [u8])],
        scratch: &'a mut Scratch,
    ) -> Ids<'a> {
        let xff_ip = if xff { xff_first(hs) } else { None };
        let auth = header(hs, b"authorization").and_then(strip_bearer);
        let jwt = api.jwt.as_ref().map(|j| &j.location);
        let mut ids = Ids {
            ip: xff_ip.or(client_ip),
            ..Ids::default()
        };
        ids.cookie = api
            .cookie
            .as_ref()
            .and_then(|c| cookie(hs, c.as_bytes()).map(|v| (c.as_bytes(), v)));
        if api.oauth2_access_token {
            ids.token = auth;
        }
        ids.api_key = api
            .apikey_header
            .as_ref()
            .and_then(|k| header(hs, k.as_bytes()).map(|v| (k.as_bytes(), v.trim_ascii())));
        let Scratch {
            qs,
            user,
            jwt: jbuf,
            jwt_big,
        } = scratch;
        if ids.api_key.is_none() {
            if let Some(k) = &api.apikey_qs {
                ids.api_key = query_param(uri, k.as_bytes())
                    .map(|raw| url_decode(raw, qs.get_or_insert([0; 1024])).unwrap_or(raw))
                    .filter(|v| !v.is_empty())
                    .map(|v| (k.as_bytes(), v));
            }
        }
        ids.username = api
            .username_header
            .as_ref()
            .and_then(|u| header(hs, u.as_bytes()))
            .map(|v| v.trim_ascii())
            .filter(|v| !v.is_empty());
        if ids.username.is_none() {
            if let Some(j) = &api.jwt {
                let t = match jwt {
                    Some(JwtLocation::Header(n)) => {
                        header(hs, n.as_bytes()).map(|v| strip_bearer(v).unwrap_or(v))
                    }
                    Some(JwtLocation::Bearer) => auth,
                    _ => None,
                };
                let json = t.and_then(|t| jwt_payload(t, jbuf, jwt_big).ok().flatten());
                ids.username = json
                    .and_then(|json| json_claim(json, &j.username, user.get_or_insert([0; 512])));
            }
        }
        ids
    }

    #[test]
    fn bearer_prefix_matches_plain_definition() {
        // The plain rule: trimmed, "bearer" in any case, one space, then a
        // token that is not empty once trimmed.
        let plain = |v: &[u8]| -> Option<Vec<u8>> {
            let v = v.trim_ascii();
            if v.len() > 7 && v[..6].eq_ignore_ascii_case(b"bearer") && v[6] == b' ' {
                let t = v[7..].trim_ascii();
                (!t.is_empty()).then(|| t.to_vec())
            } else {
                None
            }
        };
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for prefix in [
            "Bearer", "bearer", "BEARER", "bEaReR", "Bearer:", "Bearex", "Beare", "Basic",
        ] {
            for sep in ["", " ", "  ", "\t", ":"] {
                for token in ["", "t", "abc.def", " x ", "\u{e9}"] {
                    for lead in ["", " ", "\t "] {
                        cases.push(format!("{lead}{prefix}{sep}{token}").into_bytes());
                    }
                }
            }
        }
        // Every byte in each of the first eight positions.
        for pos in 0..8 {
            for b in 0..=255u8 {
                let mut v = b"Bearer tok".to_vec();
                v[pos] = b;
                cases.push(v);
            }
        }
        for v in &cases {
            assert_eq!(
                strip_bearer(v).map(<[u8]>::to_vec),
                plain(v),
                "{:?}",
                String::from_utf8_lossy(v)
            );
        }
    }

    #[test]
    fn one_pass_agrees_with_plain_lookups() {
        // APIs whose wanted names collide, differ only in case, share a length
        // or are longer than 64 bytes.
        let long = format!("X-{}", "Long-Header-".repeat(6));
        // Lengths 63 and over share one bit of the length filter.
        let (longer, n63) = (format!("{long}x"), format!("X-{}", "y".repeat(61)));
        let apis = [
            r#""cookie":"JSESSIONID","oauth2_access_token":true,"apikey_header":"X-API-KEY","username_header":"X-User""#.to_string(),
            r#""cookie":"sid","apikey_header":"Authorization","username_header":"Cookie""#.to_string(),
            r#""oauth2_access_token":true,"username_header":"x-forwarded-for","apikey_qs":"key""#.to_string(),
            format!(r#""apikey_header":"{long}","username_header":"X-Userx","jwt":{{"location":"h:X-Api-Key","username":"u","clientid":"c"}}"#),
            format!(r#""apikey_header":"{n63}","username_header":"{longer}""#),
            r#""cookie":"a b","apikey_header":"X-Api-Kez","apikey_qs":"k""#.to_string(),
            r#""apikey_qs":"key","jwt":{"location":"h:authorization:bearer","username":"u","clientid":"c"}"#.to_string(),
            // Two names with the same first eight bytes and length: no slot
            // table can tell them apart, so the plan scans its names.
            r#""apikey_header":"X-Client-Ip","username_header":"X-Client-Id""#.to_string(),
            String::new(),
        ];
        let names = [
            "Cookie",
            "cookie",
            "COOKIE",
            "Authorization",
            "authorization",
            "X-API-KEY",
            "x-api-key",
            "X-Api-Kez",
            "X-User",
            "x-user",
            "X-Userx",
            "X-Forwarded-For",
            "x-forwarded-for",
            "Host",
            "Accept",
            &long,
            &long.to_lowercase(),
            &longer,
            &n63,
            "",
            "X-Use",
            "X-Client-Ip",
            "x-client-id",
            "X-Client-Iq",
        ];
        let values = [
            "",
            " ",
            "JSESSIONID=s1; sid=s2",
            "sid=x; a b=y",
            "Bearer t1",
            "bearer  t2 ",
            "Basic zz",
            "10.0.0.1, 10.0.0.2",
            "[2001:db8::1]:80",
            "k1",
            " k2 ",
            "bob",
            "JSESSIONID=",
            "a=b",
            // {"u":"carol"}
            "Bearer h.eyJ1IjoiY2Fyb2wifQ.s",
        ];
        // A small deterministic generator: no dependency, same cases every run.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let mut scanned = 0;
        for (i, body) in apis.iter().enumerate() {
            let json = format!(
                r#"{{"api_metadata":{{"url":"/a","hostname":"*"{}{body}}}}}"#,
                if body.is_empty() { "" } else { "," }
            );
            let api = Api::parse(&format!("a{i}"), json.as_bytes()).unwrap();
            scanned += usize::from(api.headers.scans_names());
            for _ in 0..3000 {
                let n = next(8);
                let hs: Vec<(&[u8], &[u8])> = (0..n)
                    .map(|_| {
                        (
                            names[next(names.len())].as_bytes(),
                            values[next(values.len())].as_bytes(),
                        )
                    })
                    .collect();
                let uri: &[u8] = [&b"/a"[..], b"/a?key=q1", b"/a?k=&key=%41b", b"/a?k=z"][next(4)];
                let xff = next(2) == 0;
                let ip = Some(7);
                let mut s = Scratch::default();
                let got = extract(Some(&api), ip, xff, uri, &hs[..], b"", &mut s);
                let mut s2 = Scratch::default();
                let want = extract_plainly(&api, ip, xff, uri, &hs, &mut s2);
                assert_eq!(got, want, "api {i} headers {hs:?} uri {uri:?} xff {xff}");
                // The one pass never misses a kind that occurs twice.
                let mut s3 = Scratch::default();
                let (_, beyond) = extract_all(Some(&api), ip, xff, uri, &hs[..], b"", &mut s3);
                for kind in [
                    IdKind::Cookie,
                    IdKind::Token,
                    IdKind::ApiKey,
                    IdKind::Username,
                ] {
                    if kind == IdKind::Token && !api.oauth2_access_token {
                        continue;
                    }
                    let n = each_occurrence(&api, kind, uri, &hs[..], &mut |_, _| {}).count;
                    assert!(
                        n < 2 || beyond.repeated & kind_bit(kind) != 0,
                        "api {i} {kind} x{n} headers {hs:?} uri {uri:?}"
                    );
                }
            }
        }
        assert_eq!(scanned, 1, "only the X-Client-Id/Ip plan scans its names");
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
        assert_eq!(
            parse_ip(b" 10.0.0.1 ", false),
            parse_ip(b"::ffff:10.0.0.1", false)
        );
    }

    #[test]
    fn ipv4_fast_path_takes_exactly_what_std_takes() {
        // Every string std's parser reads as IPv4 gives the same address, and
        // no other string gives one: all strings of up to 7 characters over
        // digits, dots and the bytes next to the digits, every one-byte edit
        // of some addresses, then longer random strings.
        let check = |s: &[u8]| {
            let std = std::str::from_utf8(s)
                .ok()
                .and_then(|t| t.parse::<std::net::Ipv4Addr>().ok())
                .map(u32::from);
            assert_eq!(parse_v4(s), std, "{:?}", String::from_utf8_lossy(s));
        };
        let alphabet = b"0129.5/: \xff";
        let mut s = Vec::new();
        for len in 0..=7u32 {
            for mut n in 0..alphabet.len().pow(len) {
                s.clear();
                for _ in 0..len {
                    s.push(alphabet[n % alphabet.len()]);
                    n /= alphabet.len();
                }
                check(&s);
            }
        }
        for addr in [
            "1.2.3.4",
            "10.0.3.7",
            "255.255.255.255",
            "0.0.0.0",
            "192.168.100.25",
        ] {
            let a = addr.as_bytes();
            for i in 0..=a.len() {
                for b in 0..=255u8 {
                    check(&[&a[..i], &[b], &a[i..]].concat());
                    if i < a.len() {
                        check(&[&a[..i], &[b], &a[i + 1..]].concat());
                    }
                }
                if i < a.len() {
                    check(&[&a[..i], &a[i + 1..]].concat());
                }
            }
        }
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..200_000 {
            s.clear();
            for _ in 0..7 + r.below(13) {
                s.push(b"0123456789....255"[r.below(17)]);
            }
            check(&s);
        }
        for ok in ["0.0.0.0", "255.255.255.255", "1.22.233.4", "10.0.3.7"] {
            check(ok.as_bytes());
            assert!(parse_v4(ok.as_bytes()).is_some(), "{ok}");
        }
        for bad in [
            "256.0.0.1",
            "01.2.3.4",
            "1.2.3",
            "1.2.3.4.5",
            "1..2.3",
            "1.2.3.4.",
            "0001.2.3.4",
        ] {
            check(bad.as_bytes());
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

    /// A JWT whose payload is `json`, base64url without padding.
    fn jwt_of(json: &str) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::from("eyJhbGciOiJub25lIn0.");
        for c in json.as_bytes().chunks(3) {
            let n = c
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
            for j in 0..=c.len() {
                out.push(A[(n >> (18 - 6 * j) & 63) as usize] as char);
            }
        }
        out + ".sig"
    }

    /// A JSON payload of exactly `len` bytes whose `username` is `user`.
    fn payload(user: &str, len: usize) -> String {
        let head = format!(r#"{{"username":"{user}","groups":""#);
        let pad = len - head.len() - 2;
        format!("{head}{}\"}}", "g".repeat(pad))
    }

    fn api(fields: &str) -> Api {
        let json = format!(r#"{{"api_metadata":{{"url":"/a","hostname":"*",{fields}}}}}"#);
        Api::parse("a", json.as_bytes()).unwrap()
    }

    /// Every occurrence [`each_occurrence`] reports, as text, and its tally.
    fn all(api: &Api, kind: IdKind, uri: &str, hs: &[(&str, &str)]) -> (Vec<String>, Tally) {
        let hs = h(hs);
        let mut seen = Vec::new();
        let t = each_occurrence(api, kind, uri.as_bytes(), &hs[..], &mut |n, v| {
            seen.push(format!(
                "{}={}",
                String::from_utf8_lossy(n),
                String::from_utf8_lossy(v)
            ))
        });
        (seen, t)
    }

    fn beyond(api: &Api, uri: &str, hs: &[(&str, &str)]) -> Beyond {
        let hs = h(hs);
        let mut s = Scratch::default();
        extract_all(Some(api), None, false, uri.as_bytes(), &hs[..], b"", &mut s).1
    }

    #[test]
    fn every_occurrence_of_each_kind_is_found() {
        let a = api(
            r#""cookie":"SID","oauth2_access_token":true,"apikey_header":"X-Key","apikey_qs":"key","username_header":"X-User""#,
        );
        let strs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // A cookie twice in one header, and again in another.
        let hs = [("Cookie", "SID=a; x=1; SID=b"), ("cookie", "y=2; SID=c")];
        let (v, t) = all(&a, IdKind::Cookie, "/a", &hs);
        assert_eq!(v, strs(&["SID=a", "SID=b", "SID=c"]));
        assert!(t.differ && !t.too_many());
        assert_eq!(beyond(&a, "/a", &hs).repeated, kind_bit(IdKind::Cookie));
        let one = [("Cookie", "SID=a; x=1"), ("Cookie", "y=2")];
        assert_eq!(beyond(&a, "/a", &one).repeated, 0);
        // Two bearer tokens (a Basic header is not one).
        let hs = [
            ("Authorization", "Bearer t1"),
            ("Authorization", "Basic zz"),
            ("authorization", "bearer t2"),
        ];
        assert_eq!(all(&a, IdKind::Token, "/a", &hs).0, strs(&["=t1", "=t2"]));
        assert_eq!(beyond(&a, "/a", &hs).repeated, kind_bit(IdKind::Token));
        // API keys: the header twice, then the query parameter twice (decoded).
        let hs = [("X-Key", " k1 "), ("x-key", "k2")];
        let (v, t) = all(&a, IdKind::ApiKey, "/a?key=q1&x=1&key=q%32", &hs);
        assert_eq!(v, strs(&["X-Key=k1", "X-Key=k2", "key=q1", "key=q2"]));
        assert!(t.differ);
        assert_eq!(
            beyond(&a, "/a?key=q1&key=q2", &[]).repeated,
            kind_bit(IdKind::ApiKey)
        );
        assert_eq!(
            beyond(&a, "/a?key=q1", &[("X-Key", "k1")]).repeated,
            kind_bit(IdKind::ApiKey),
            "a header and a query parameter are two occurrences"
        );
        assert_eq!(beyond(&a, "/a?key=q1&k=2", &[]).repeated, 0);
        // The user-name header twice; an empty one is not an occurrence.
        let hs = [("X-User", "ann"), ("X-User", " "), ("x-user", "bob")];
        assert_eq!(
            all(&a, IdKind::Username, "/a", &hs).0,
            strs(&["=ann", "=bob"])
        );
        assert_eq!(beyond(&a, "/a", &hs).repeated, kind_bit(IdKind::Username));
        // The same value again is not a disagreement.
        let hs = [("X-User", "ann"), ("X-User", "ann")];
        let (_, t) = all(&a, IdKind::Username, "/a", &hs);
        assert_eq!((t.count, t.differ), (2, false));
    }

    #[test]
    fn every_jwt_at_the_jwt_location_is_read() {
        let ann = jwt_of(r#"{"username":"ann"}"#);
        let bob = jwt_of(r#"{"username":"bob"}"#);
        for loc in ["h:authorization:bearer", "h:X-Jwt", "qs:jwt"] {
            let a = api(&format!(
                r#""jwt":{{"location":"{loc}","username":"username","clientid":"c"}}"#
            ));
            let (uri, hs) = match loc {
                "qs:jwt" => (format!("/a?jwt={ann}&jwt={bob}"), vec![]),
                "h:X-Jwt" => (
                    "/a".into(),
                    vec![("X-Jwt", ann.clone()), ("X-Jwt", bob.clone())],
                ),
                _ => (
                    "/a".into(),
                    vec![
                        ("Authorization", format!("Bearer {ann}")),
                        ("Authorization", format!("Bearer {bob}")),
                    ],
                ),
            };
            let hs: Vec<(&str, &str)> = hs.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let (v, t) = all(&a, IdKind::Username, &uri, &hs);
            assert_eq!(v, ["=ann", "=bob"], "{loc}");
            assert!(t.differ, "{loc}");
            assert_eq!(
                beyond(&a, &uri, &hs).repeated,
                kind_bit(IdKind::Username),
                "{loc}"
            );
        }
        // A token beside the user-name header is a second occurrence.
        let a = api(
            r#""username_header":"X-User","jwt":{"location":"h:authorization:bearer","username":"username","clientid":"c"}"#,
        );
        let bearer = format!("Bearer {bob}");
        let hs = [("X-User", "ann"), ("Authorization", bearer.as_str())];
        assert_eq!(all(&a, IdKind::Username, "/a", &hs).0, ["=ann", "=bob"]);
        assert_eq!(beyond(&a, "/a", &hs).repeated, kind_bit(IdKind::Username));
    }

    #[test]
    fn occurrences_past_the_bound_are_counted_not_reported() {
        let a = api(r#""apikey_qs":"key""#);
        let uri = format!("/a?{}", "key=k&".repeat(MAX_OCCURRENCES + 3));
        let (v, t) = all(&a, IdKind::ApiKey, &uri, &[]);
        assert_eq!(v.len(), MAX_OCCURRENCES);
        assert!(t.too_many() && !t.differ);
        let uri = format!("/a?{}", "key=k&".repeat(MAX_OCCURRENCES));
        assert!(!all(&a, IdKind::ApiKey, &uri, &[]).1.too_many());
    }

    #[test]
    fn jwt_payloads_up_to_the_bound_are_read() {
        for len in [4000, 4100, 10_000, 16_000, MAX_JWT_PAYLOAD] {
            let jwt = jwt_of(&payload("mallory", len));
            let mut s = Scratch::default();
            assert_eq!(
                jwt_username(jwt.as_bytes(), "username", &mut s),
                Some(&b"mallory"[..]),
                "{len}"
            );
        }
        let small = jwt_of(&payload("ann", 1000));
        let mut s = Scratch::default();
        jwt_username(small.as_bytes(), "username", &mut s);
        assert!(
            s.jwt_big.is_none(),
            "a small payload leaves the large buffer alone"
        );
        let over = jwt_of(&payload("mallory", MAX_JWT_PAYLOAD + 1));
        let mut s = Scratch::default();
        assert_eq!(jwt_username(over.as_bytes(), "username", &mut s), None);
        let a = api(r#""jwt":{"location":"h:X-Jwt","username":"username","clientid":"c"}"#);
        let hs = [("X-Jwt", over.as_str())];
        let b = beyond(&a, "/a", &hs);
        assert!(b.jwt_too_large && b.repeated == 0);
        let (v, t) = all(&a, IdKind::Username, "/a", &hs);
        assert!(v.is_empty() && t.unreadable);
        let hs = [("X-Jwt", small.as_str())];
        assert!(beyond(&a, "/a", &hs).is_empty());
    }
}
