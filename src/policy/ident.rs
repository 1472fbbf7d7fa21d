//! Client identifiers and their list keys.
//!
//! Every identifier — whatever its kind — is reduced to one flat byte key
//! `[kind][name_len][name][value]`, so the allow and deny lists are each one
//! hash map and a request probes it with a borrowed [`KeyRef`] that needs no
//! allocation. IP entries are stored as a 16-byte address (IPv4 as
//! IPv4-mapped IPv6, so `::ffff:1.2.3.4` and `1.2.3.4` are one key) masked to
//! their prefix, with the prefix length as the one-byte name.

use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use super::bytes::{self, lower8};
use super::hash::{fold, hash_bytes, random_secret};

/// The kind of a client identifier. The numbering is part of the C ABI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum IdKind {
    /// Client IP address or CIDR range.
    Ip = 0,
    /// Session cookie: cookie name and value.
    Cookie = 1,
    /// OAuth2 bearer token.
    Token = 2,
    /// API key: header or query-string name (case-insensitive) and value.
    ApiKey = 3,
    /// User name (may contain spaces).
    Username = 4,
}

impl IdKind {
    /// All kinds, in the order ASE lists them.
    pub const ALL: [IdKind; 5] = [
        IdKind::Ip,
        IdKind::Cookie,
        IdKind::Token,
        IdKind::ApiKey,
        IdKind::Username,
    ];

    /// The word ASE's CLI uses for this kind (`ip`, `cookie`, `token`, `api_key`, `username`).
    pub fn as_str(self) -> &'static str {
        match self {
            IdKind::Ip => "ip",
            IdKind::Cookie => "cookie",
            IdKind::Token => "token",
            IdKind::ApiKey => "api_key",
            IdKind::Username => "username",
        }
    }

    /// Parses the CLI word for a kind.
    pub fn parse(s: &str) -> Option<IdKind> {
        IdKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Converts the C ABI number.
    pub fn from_u32(v: u32) -> Option<IdKind> {
        IdKind::ALL.get(v as usize).copied()
    }

    /// Whether identifiers of this kind carry a name (cookie name, API key name).
    pub fn has_name(self) -> bool {
        matches!(self, IdKind::Cookie | IdKind::ApiKey)
    }
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an identifier given by an operator or a feed was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdError {
    /// The value is empty.
    EmptyValue,
    /// A cookie or API key without a name, or a name given to a kind that has none.
    BadName,
    /// The value or name is longer than [`MAX_FIELD`] bytes.
    TooLong,
    /// Not an IP address or CIDR range; carries the offending text.
    BadIp(String),
    /// A CIDR range with a prefix length out of range.
    BadPrefix(String),
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::EmptyValue => f.write_str("empty value"),
            IdError::BadName => {
                f.write_str("cookie and api_key need a name; other kinds take none")
            }
            IdError::TooLong => write!(f, "name or value longer than {MAX_FIELD} bytes"),
            IdError::BadIp(s) => write!(f, "invalid IP address or CIDR range: {s}"),
            IdError::BadPrefix(s) => write!(f, "invalid prefix length in CIDR range: {s}"),
        }
    }
}

impl std::error::Error for IdError {}

/// The longest name or value an entry may have. Request values longer than
/// this can never match an entry, so lookups skip them at once.
pub const MAX_FIELD: usize = 4096;

/// An IP network in the 128-bit IPv4-mapped space: IPv4 `a.b.c.d/n` is
/// `::ffff:a.b.c.d/(96+n)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpNet {
    /// Masked address.
    pub addr: u128,
    /// Prefix length in the 128-bit space (0..=128).
    pub len: u8,
}

const V4_MAPPED: u128 = 0xffff_u128 << 32;

/// Maps an address into the 128-bit space; IPv4-mapped IPv6 equals IPv4.
pub fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => V4_MAPPED | u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Whether a 128-bit address is IPv4 (mapped).
pub(crate) fn is_v4(addr: u128) -> bool {
    addr >> 32 == 0xffff
}

fn mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len as u32)
    }
}

impl IpNet {
    /// Parses `1.2.3.4`, `2001:db8::1`, `10.0.0.0/8`, `2001:db8::/32`.
    /// Host bits below the prefix are cleared (`10.1.2.3/8` is `10.0.0.0/8`).
    pub fn parse(s: &str) -> Result<IpNet, IdError> {
        let s = s.trim();
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let ip: IpAddr = addr.parse().map_err(|_| IdError::BadIp(s.to_string()))?;
        let a = ip_to_u128(ip);
        let len = match len {
            None => 128,
            Some(l) => {
                let n: u8 = l.parse().map_err(|_| IdError::BadPrefix(s.to_string()))?;
                let max = if matches!(ip, IpAddr::V4(_)) { 32 } else { 128 };
                if n > max || l.starts_with('+') {
                    return Err(IdError::BadPrefix(s.to_string()));
                }
                if matches!(ip, IpAddr::V4(_)) {
                    n + 96
                } else {
                    n
                }
            }
        };
        Ok(IpNet {
            addr: a & mask(len),
            len,
        })
    }

    /// The network with the address masked to `len` bits.
    pub fn of(addr: u128, len: u8) -> IpNet {
        IpNet {
            addr: addr & mask(len),
            len,
        }
    }

    /// The hash of this network's list key, taken from the address itself:
    /// a request probes its address and each listed range length without
    /// writing key bytes, unless the filter lets the probe through.
    #[inline(always)]
    pub fn key_hash(self) -> u64 {
        let f = fixed();
        let [k0, k1, k2] = f.secret;
        let seed = f.ip[self.len.min(128) as usize];
        fold(
            fold((self.addr >> 64) as u64 ^ k0, self.addr as u64 ^ seed ^ k1),
            k2 ^ 16,
        )
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if is_v4(self.addr) && self.len >= 96 {
            let v4 = Ipv4Addr::from(self.addr as u32);
            if self.len == 128 {
                write!(f, "{v4}")
            } else {
                write!(f, "{v4}/{}", self.len - 96)
            }
        } else {
            let v6 = Ipv6Addr::from(self.addr);
            if self.len == 128 {
                write!(f, "{v6}")
            } else {
                write!(f, "{v6}/{}", self.len)
            }
        }
    }
}

/// A validated client identifier as an operator or feed gives it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identifier {
    /// Kind.
    pub kind: IdKind,
    /// Cookie name or API key name as given (empty for other kinds).
    pub name: String,
    /// The value; for IP entries the canonical text of the address or range.
    pub value: String,
}

impl Identifier {
    /// Validates and canonicalises an identifier. IP values are parsed (CIDR allowed)
    /// and printed back canonically; names are required exactly for cookie and api_key.
    pub fn new(kind: IdKind, name: &str, value: &str) -> Result<Identifier, IdError> {
        Identifier::check(kind, name, value)?;
        let value = if kind == IdKind::Ip {
            IpNet::parse(value)?.to_string()
        } else {
            value.to_string()
        };
        Ok(Identifier {
            kind,
            name: name.to_string(),
            value,
        })
    }

    /// The checks of [`Identifier::new`] but the IP syntax, for callers
    /// that build a key from text without an `Identifier` (the store's
    /// reload): the request path relies on no listed value being longer
    /// than [`MAX_FIELD`].
    pub fn check(kind: IdKind, name: &str, value: &str) -> Result<(), IdError> {
        if value.is_empty() {
            return Err(IdError::EmptyValue);
        }
        if name.len() > MAX_FIELD || value.len() > MAX_FIELD {
            return Err(IdError::TooLong);
        }
        if kind.has_name() == name.is_empty() {
            return Err(IdError::BadName);
        }
        Ok(())
    }

    /// Length in bytes of [`Identifier::key`], without building it: kind and
    /// name length (3), then the name and value, or for an IP the prefix
    /// length and the 16-byte address.
    pub fn key_len(&self) -> usize {
        3 + match self.kind {
            IdKind::Ip => 17,
            _ => self.name.len() + self.value.len(),
        }
    }

    /// The list key of this identifier.
    pub fn key(&self) -> Key {
        match self.kind {
            IdKind::Ip => Key::ip(IpNet::parse(&self.value).expect("validated at construction")),
            _ => Key::new(KeyRef::new(
                self.kind,
                self.name.as_bytes(),
                self.value.as_bytes(),
            )),
        }
    }
}

impl fmt::Display for Identifier {
    /// ASE's CLI form: `ip 1.1.1.1`, `cookie JSESSIONID abc`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind.has_name() {
            write!(f, "{} {} {}", self.kind, self.name, self.value)
        } else {
            write!(f, "{} {}", self.kind, self.value)
        }
    }
}

/// The per-process secret of the key hash. Keys come from clients, so the
/// hash must not be predictable (hash flooding): the secret is drawn once
/// per process.
fn secret() -> [u64; 4] {
    static SECRET: OnceLock<[u64; 4]> = OnceLock::new();
    *SECRET.get_or_init(random_secret)
}

/// The hash of a key's constant part: kind and name (API-key names compare
/// case-insensitively, so they are hashed lowercase).
fn prefix_hash(kind: IdKind, name: &[u8]) -> u64 {
    let [k0, k1, k2, k3] = secret();
    let seed = fold(k3 ^ kind as u64, k1);
    if kind == IdKind::ApiKey {
        hash_bytes(seed, [k0, k1, k2], name, lower8)
    } else {
        hash_bytes(seed, [k0, k1, k2], name, |w| w)
    }
}

fn hash_parts(kind: IdKind, name: &[u8], value: &[u8]) -> u64 {
    if let (IdKind::Ip, &[len], Ok(addr)) = (kind, name, <[u8; 16]>::try_from(value)) {
        let addr = u128::from_be_bytes(addr);
        return IpNet { addr, len }.key_hash();
    }
    let [k0, k1, k2, _] = secret();
    hash_bytes(prefix_hash(kind, name), [k0, k1, k2], value, |w| w)
}

/// A borrowed identifier key, as probed on the request path. The hash is
/// computed once and reused for the allow and the deny map.
#[derive(Clone, Copy, Debug)]
pub struct KeyRef<'a> {
    kind: IdKind,
    /// For API keys the name compares case-insensitively; it is hashed lowercase.
    name: &'a [u8],
    value: &'a [u8],
    hash: u64,
}

/// The constant part of a key (kind and name) hashed once, so a request
/// hashes only the value. The hash is the same as [`KeyRef::new`]'s.
#[derive(Clone)]
pub(crate) struct KeyPrefix {
    kind: IdKind,
    name: Box<[u8]>,
    seed: u64,
    secret: [u64; 3],
}

impl fmt::Debug for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPrefix")
            .field("kind", &self.kind)
            .field("name", &String::from_utf8_lossy(&self.name))
            .finish()
    }
}

impl KeyPrefix {
    /// The prefix of keys of `kind` named `name` (empty for unnamed kinds).
    pub fn new(kind: IdKind, name: &[u8]) -> KeyPrefix {
        let [k0, k1, k2, _] = secret();
        KeyPrefix {
            kind,
            name: name.into(),
            seed: prefix_hash(kind, name),
            secret: [k0, k1, k2],
        }
    }

    /// The name, as given.
    #[inline]
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    /// The key of `value` under this prefix: equal, hash included, to
    /// `KeyRef::new(kind, name, value)` (for named and plain kinds; IP keys
    /// have no prefix and are hashed by [`IpNet::key_hash`]).
    #[inline]
    pub fn key<'a>(&'a self, value: &'a [u8]) -> KeyRef<'a> {
        KeyRef {
            kind: self.kind,
            name: &self.name,
            value,
            hash: hash_bytes(self.seed, self.secret, value, |w| w),
        }
    }
}

/// Prefixes that are the same for every request: the unnamed kinds, and IP
/// keys for each prefix length (the name of an IP key is its length byte).
struct Fixed {
    token: KeyPrefix,
    username: KeyPrefix,
    ip: [u64; 129],
    secret: [u64; 3],
}

fn fixed() -> &'static Fixed {
    static FIXED: OnceLock<Fixed> = OnceLock::new();
    FIXED.get_or_init(|| {
        let [k0, k1, k2, _] = secret();
        Fixed {
            token: KeyPrefix::new(IdKind::Token, b""),
            username: KeyPrefix::new(IdKind::Username, b""),
            ip: std::array::from_fn(|l| prefix_hash(IdKind::Ip, &[l as u8])),
            secret: [k0, k1, k2],
        }
    })
}

impl<'a> KeyRef<'a> {
    /// A key for a named or plain identifier. IP keys are made with [`Key::ip`].
    pub fn new(kind: IdKind, name: &'a [u8], value: &'a [u8]) -> KeyRef<'a> {
        KeyRef {
            kind,
            name,
            value,
            hash: hash_parts(kind, name, value),
        }
    }

    /// A bearer-token key (precomputed prefix).
    #[inline]
    pub fn token(value: &'a [u8]) -> KeyRef<'a> {
        fixed().token.key(value)
    }

    /// A user-name key (precomputed prefix).
    #[inline]
    pub fn username(value: &'a [u8]) -> KeyRef<'a> {
        fixed().username.key(value)
    }

    /// The kind of identifier.
    pub fn kind(&self) -> IdKind {
        self.kind
    }

    /// The precomputed hash.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// The name as given (for an IP key, the one prefix-length byte).
    #[inline]
    pub(crate) fn name(&self) -> &'a [u8] {
        self.name
    }

    /// The value as given (for an IP key, the 16 address bytes, big-endian).
    #[inline]
    pub(crate) fn value(&self) -> &'a [u8] {
        self.value
    }

    /// Compares against the stored layout directly (`[kind][name length
    /// u16 LE][name][value]`): the kind and name length are one three-byte
    /// compare and the total length settles the value's.
    #[inline]
    fn eq_key(&self, k: &Key) -> bool {
        let n = self.name.len();
        let Some((head, rest)) = k.bytes.split_first_chunk::<3>() else {
            return false;
        };
        if rest.len() != n + self.value.len()
            || *head != [self.kind as u8, n as u8, (n >> 8) as u8]
            || n > u16::MAX as usize
        {
            return false;
        }
        // Token and user-name keys have no name: one comparison. Never
        // `==` on these slices: an empty one would reach `bcmp` with a
        // dangling pointer (see `bytes::same`).
        if n == 0 {
            return bytes::same(rest, self.value);
        }
        let (name, value) = rest.split_at(n);
        bytes::same(value, self.value)
            && if self.kind == IdKind::ApiKey {
                bytes::eq_ignore_case(name, self.name)
            } else {
                bytes::same(name, self.name)
            }
    }
}

/// Storage for IP keys on the stack: prefix length byte + 16 address bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IpKeyBuf {
    len: [u8; 1],
    addr: [u8; 16],
}

impl IpKeyBuf {
    /// The key bytes of one network.
    pub fn new(net: IpNet) -> IpKeyBuf {
        IpKeyBuf {
            len: [net.len],
            addr: net.addr.to_be_bytes(),
        }
    }

    /// A borrowed key over these bytes, hashed as [`IpNet::key_hash`].
    #[inline]
    pub fn key(&self) -> KeyRef<'_> {
        let net = IpNet {
            addr: u128::from_be_bytes(self.addr),
            len: self.len[0],
        };
        self.key_hashed(net.key_hash())
    }

    /// [`IpKeyBuf::key`] with the hash the caller already has: it must be
    /// the [`IpNet::key_hash`] of the network these bytes were made from.
    #[inline]
    pub(crate) fn key_hashed(&self, hash: u64) -> KeyRef<'_> {
        KeyRef {
            kind: IdKind::Ip,
            name: &self.len,
            value: &self.addr,
            hash,
        }
    }
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// An owned list key: `[kind][name_len u16 LE][name][value]` in one allocation,
/// followed by the cached hash.
#[derive(Clone, Debug)]
pub struct Key {
    bytes: Box<[u8]>,
    hash: u64,
}

impl Key {
    /// Copies a borrowed key.
    pub fn new(k: KeyRef<'_>) -> Key {
        let mut v = Vec::with_capacity(3 + k.name.len() + k.value.len());
        v.push(k.kind as u8);
        v.extend_from_slice(&(k.name.len() as u16).to_le_bytes());
        v.extend_from_slice(k.name);
        v.extend_from_slice(k.value);
        Key {
            bytes: v.into_boxed_slice(),
            hash: k.hash,
        }
    }

    /// The precomputed hash, equal to that of the matching [`KeyRef`].
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// The key of an IP network.
    pub fn ip(net: IpNet) -> Key {
        Key::new(IpKeyBuf::new(net).key())
    }

    /// Kind, name and value bytes.
    pub fn parts(&self) -> (IdKind, &[u8], &[u8]) {
        let b = &self.bytes;
        let kind = IdKind::ALL[b[0] as usize];
        let n = u16::from_le_bytes([b[1], b[2]]) as usize;
        (kind, &b[3..3 + n], &b[3 + n..])
    }

    /// The identifier this key stands for (IP keys are printed canonically).
    pub fn identifier(&self) -> Identifier {
        let (kind, name, value) = self.parts();
        if kind == IdKind::Ip {
            let mut a = [0u8; 16];
            a.copy_from_slice(value);
            let net = IpNet {
                addr: u128::from_be_bytes(a),
                len: name[0],
            };
            Identifier {
                kind,
                name: String::new(),
                value: net.to_string(),
            }
        } else {
            Identifier {
                kind,
                name: String::from_utf8_lossy(name).into_owned(),
                value: String::from_utf8_lossy(value).into_owned(),
            }
        }
    }

    /// The network of an IP key.
    pub fn ip_net(&self) -> Option<IpNet> {
        let (kind, name, value) = self.parts();
        if kind != IdKind::Ip {
            return None;
        }
        let mut a = [0u8; 16];
        a.copy_from_slice(value);
        Some(IpNet {
            addr: u128::from_be_bytes(a),
            len: name[0],
        })
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        let (k, n, v) = other.parts();
        self.hash == other.hash
            && KeyRef {
                kind: k,
                name: n,
                value: v,
                hash: other.hash,
            }
            .eq_key(self)
    }
}
impl Eq for Key {}

impl equivalent::Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        self.hash == key.hash && self.eq_key(key)
    }
}

/// A `BuildHasher` for keys that carry their own hash: the map re-mixes the
/// precomputed 64-bit value instead of hashing the bytes again.
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct PrehashedState;

/// The hasher of [`PrehashedState`].
#[derive(Default)]
pub(crate) struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only reached if a key type hashes bytes; fold them in to stay correct.
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ b as u64).wrapping_mul(0x100000001b3);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

impl BuildHasher for PrehashedState {
    type Hasher = Prehashed;
    fn build_hasher(&self) -> Prehashed {
        Prehashed(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_len_is_the_length_of_the_key() {
        for (kind, name, value) in [
            (IdKind::Ip, "", "1.2.3.4"),
            (IdKind::Ip, "", "2001:db8::/32"),
            (IdKind::Cookie, "JSESSIONID", "abc"),
            (IdKind::Token, "", "t"),
            (IdKind::ApiKey, "X-Api-Key", "k"),
            (IdKind::Username, "", "bob smith"),
        ] {
            let id = Identifier::new(kind, name, value).unwrap();
            let k = id.key();
            let (_, n, v) = k.parts();
            assert_eq!(id.key_len(), 3 + n.len() + v.len(), "{id}");
        }
    }

    #[test]
    fn ip_parsing_and_canonical_text() {
        assert_eq!(IpNet::parse("1.2.3.4").unwrap().to_string(), "1.2.3.4");
        assert_eq!(
            IpNet::parse("::ffff:1.2.3.4").unwrap().to_string(),
            "1.2.3.4"
        );
        assert_eq!(
            IpNet::parse("10.1.2.3/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            IpNet::parse("2001:db8::1/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        assert_eq!(
            IpNet::parse("2001:DB8::1").unwrap().to_string(),
            "2001:db8::1"
        );
        for bad in [
            "",
            "1.2.3",
            "1.2.3.4/33",
            "::/129",
            "1.2.3.4/-1",
            "1.2.3.4/+8",
            "x",
            "1.2.3.4/",
        ] {
            assert!(IpNet::parse(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn identifier_validation() {
        assert_eq!(
            Identifier::new(IdKind::Ip, "", ""),
            Err(IdError::EmptyValue)
        );
        assert_eq!(
            Identifier::new(IdKind::Cookie, "", "v"),
            Err(IdError::BadName)
        );
        assert_eq!(
            Identifier::new(IdKind::Token, "n", "v"),
            Err(IdError::BadName)
        );
        let long = "x".repeat(MAX_FIELD + 1);
        assert_eq!(
            Identifier::new(IdKind::Token, "", &long),
            Err(IdError::TooLong)
        );
        let u = Identifier::new(IdKind::Username, "", "your name").unwrap();
        assert_eq!(u.to_string(), "username your name");
        let c = Identifier::new(IdKind::Cookie, "JSESSIONID", "cookie_1.4").unwrap();
        assert_eq!(c.to_string(), "cookie JSESSIONID cookie_1.4");
    }

    #[test]
    fn key_hash_spreads_values_of_every_length() {
        // Values that differ in one byte, in zero padding or in length must
        // not collide, and the low and high bits (the maps' index and tag)
        // must both vary.
        let mut seen = std::collections::HashSet::new();
        let mut low = std::collections::HashSet::new();
        let mut high = std::collections::HashSet::new();
        let mut n = 0;
        for len in 0..48usize {
            for i in 0..len.max(1) {
                for b in [0u8, 1, b'a', 0x80, 0xff] {
                    let mut v = vec![b'x'; len];
                    if len > 0 {
                        v[i] = b;
                    }
                    let h = KeyRef::new(IdKind::Token, b"", &v).hash;
                    if seen.insert(h) {
                        n += 1;
                    }
                    low.insert(h & 0xfff);
                    high.insert(h >> 52);
                }
            }
        }
        let distinct: std::collections::HashSet<Vec<u8>> = (0..48usize)
            .flat_map(|len| {
                (0..len.max(1)).flat_map(move |i| {
                    [0u8, 1, b'a', 0x80, 0xff].into_iter().map(move |b| {
                        let mut v = vec![b'x'; len];
                        if len > 0 {
                            v[i] = b;
                        }
                        v
                    })
                })
            })
            .collect();
        assert_eq!(
            n,
            distinct.len(),
            "a collision among {} values",
            distinct.len()
        );
        assert!(
            low.len() > 2000 && high.len() > 2000,
            "{} {}",
            low.len(),
            high.len()
        );
        // Sequential values (as feeds and tests produce) fill table slots
        // like random ones: 200k values over 2^18 slots occupy about 140k.
        for fmt in [|i: u32| format!("tok{i:024}"), |i: u32| format!("10.0.{i}")] {
            let slots: std::collections::HashSet<u64> = (0..200_000)
                .map(|i| KeyRef::new(IdKind::Token, b"", fmt(i).as_bytes()).hash & 0x3_ffff)
                .collect();
            assert!(slots.len() > 135_000, "{} slots", slots.len());
        }
        // The same value under another kind or name is another key.
        let t = KeyRef::new(IdKind::Token, b"", b"v").hash;
        assert_ne!(t, KeyRef::new(IdKind::Username, b"", b"v").hash);
        assert_ne!(
            KeyRef::new(IdKind::Cookie, b"a", b"bv").hash,
            KeyRef::new(IdKind::Cookie, b"ab", b"v").hash
        );
    }

    #[test]
    fn keys_roundtrip_and_api_key_name_is_case_insensitive() {
        let a = Identifier::new(IdKind::ApiKey, "X-API-KEY", "k1")
            .unwrap()
            .key();
        let b = KeyRef::new(IdKind::ApiKey, b"x-api-key", b"k1");
        assert_eq!(a.hash, b.hash);
        assert!(equivalent::Equivalent::equivalent(&b, &a));
        let long = "X".repeat(100);
        assert_eq!(
            KeyRef::new(IdKind::ApiKey, long.as_bytes(), b"v").hash,
            KeyRef::new(IdKind::ApiKey, long.to_lowercase().as_bytes(), b"v").hash
        );
        let c = KeyRef::new(IdKind::ApiKey, b"x-api-key", b"K1");
        assert!(!equivalent::Equivalent::equivalent(&c, &a));
        let ip = Identifier::new(IdKind::Ip, "", "::ffff:9.9.9.9").unwrap();
        assert_eq!(ip.key().identifier().value, "9.9.9.9");
        let p = KeyPrefix::new(IdKind::ApiKey, b"X-Api-Key");
        assert_eq!(p.key(b"k1").hash, a.hash);
        assert_eq!(
            KeyRef::token(b"t").hash,
            KeyRef::new(IdKind::Token, b"", b"t").hash
        );
        assert_eq!(
            KeyRef::username(b"u").hash,
            KeyRef::new(IdKind::Username, b"", b"u").hash
        );
        for len in [0, 96, 120, 128] {
            let net = IpNet::of(ip_to_u128("10.1.2.3".parse().unwrap()), len);
            let buf = IpKeyBuf::new(net);
            assert_eq!(
                buf.key().hash,
                KeyRef::new(IdKind::Ip, &[len], &net.addr.to_be_bytes()).hash
            );
        }
        let ck = Identifier::new(IdKind::Cookie, "JSESSIONID", "v").unwrap();
        let ck2 = KeyRef::new(IdKind::Cookie, b"jsessionid", b"v");
        assert!(!equivalent::Equivalent::equivalent(&ck2, &ck.key()));
    }
}
