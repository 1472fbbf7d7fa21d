//! The lookup tables of an [`ApiSet`]: the APIs by exact host (any case,
//! port ignored), then by the longest url that is a prefix of the path on
//! a `/` boundary. Built once per configuration; a request hashes its host
//! and each candidate prefix of its path once.

use std::collections::HashMap;

use super::definition::{Api, ApiError};
use crate::policy::bytes;
use crate::policy::hash::{Hashed, hash_prefix, random_secret};

/// A table key as read for hashing: its hash, its length and two words. A
/// key of up to 16 bytes is wholly in the words (the first and the last
/// eight bytes, or one zero-padded word and a zero), so comparing words and
/// length compares keys, without reading the stored key's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Lookup {
    hash: u64,
    len: usize,
    a: u64,
    b: u64,
}

/// Reads and hashes `buf[..len]` under secret `k` ([`hash_prefix`], seeded
/// with `k[3]`), with `f` applied to every eight-byte word (ASCII
/// lowercasing for hosts). It takes the whole buffer so that a path's
/// prefix is read without a copy; it reads as the same bytes alone would.
#[inline(always)]
fn lookup(k: &[u64; 4], buf: &[u8], len: usize, f: impl Fn(u64) -> u64) -> Lookup {
    let Hashed { hash, a, b } = hash_prefix(k[3], [k[0], k[1], k[2]], buf, len, f);
    Lookup { hash, len, a, b }
}

/// One entry of a [`Table`]: a key as read by [`lookup`], the key itself
/// (compared only past 16 bytes) and its value (an index), or [`EMPTY`] as
/// the value of a free slot.
#[derive(Debug)]
struct Slot {
    lookup: Lookup,
    key: Box<[u8]>,
    val: usize,
}

/// The value of a free [`Slot`].
const EMPTY: usize = usize::MAX;

/// A read-only open-addressing table from byte strings to indexes, built
/// once per configuration: a lookup compares the stored hash, then length
/// and words, and only a key longer than 16 bytes with the caller's
/// comparison (exact for paths, case-insensitive for hosts), never through
/// `memcmp` on an empty slice. At most half the slots are used, so probe
/// runs stay short and every lookup ends at a free slot.
#[derive(Debug)]
struct Table {
    /// A power of two of them, at least one free.
    slots: Box<[Slot]>,
}

impl Table {
    /// A table of `entries` (key, its [`Lookup`], value), keys distinct.
    fn new(entries: &[(&[u8], Lookup, usize)]) -> Table {
        let cap = (entries.len() * 2).next_power_of_two().max(1);
        let free = Lookup {
            hash: 0,
            len: 0,
            a: 0,
            b: 0,
        };
        let mut slots: Box<[Slot]> = (0..cap)
            .map(|_| Slot {
                lookup: free,
                key: Box::default(),
                val: EMPTY,
            })
            .collect();
        let mask = cap - 1;
        for &(key, lookup, val) in entries {
            let mut i = lookup.hash as usize & mask;
            while slots[i].val != EMPTY {
                i = (i + 1) & mask;
            }
            slots[i] = Slot {
                lookup,
                key: key.into(),
                val,
            };
        }
        Table { slots }
    }

    /// The value of the key read as `p`; `long_eq` compares a key of more
    /// than 16 bytes.
    #[inline(always)]
    fn get(&self, p: &Lookup, long_eq: impl Fn(&[u8]) -> bool) -> Option<usize> {
        let mask = self.slots.len() - 1;
        let mut i = p.hash as usize & mask;
        loop {
            let s = &self.slots[i];
            if s.val == EMPTY {
                return None;
            }
            if s.lookup == *p && (p.len <= 16 || long_eq(&s.key)) {
                return Some(s.val);
            }
            i = (i + 1) & mask;
        }
    }
}

/// The APIs of one host (or of `*`), by url.
#[derive(Debug)]
struct Group {
    /// url -> API index.
    by_url: Table,
    /// Distinct url lengths, longest first: the candidate prefixes of a
    /// path, each looked up once.
    lens: Box<[usize]>,
}

impl Group {
    /// The group of `urls` (url, API index), urls distinct.
    fn new(k: &[u64; 4], urls: &[(&[u8], usize)]) -> Group {
        let entries: Vec<_> = urls
            .iter()
            .map(|&(u, i)| (u, lookup(k, u, u.len(), |w| w), i))
            .collect();
        let mut lens: Vec<usize> = urls.iter().map(|(u, _)| u.len()).collect();
        lens.sort_unstable_by(|a, b| b.cmp(a));
        lens.dedup();
        Group {
            by_url: Table::new(&entries),
            lens: lens.into(),
        }
    }

    /// The API of the longest url that is `path` or a prefix of it ending
    /// at a `/` (url `/` matches any path starting with `/`).
    #[inline(always)]
    fn find(&self, k: &[u64; 4], path: &[u8]) -> Option<usize> {
        for &l in self.lens.iter() {
            if l > path.len() {
                continue;
            }
            // Urls are never empty: `path[..l]` is not either.
            let boundary = l == path.len() || path[l] == b'/' || l == 1;
            if boundary {
                let p = lookup(k, path, l, |w| w);
                if let Some(i) = self.by_url.get(&p, |u| bytes::same(&path[..l], u)) {
                    return Some(i);
                }
            }
        }
        None
    }
}

/// All APIs of a configuration, indexed for matching.
#[derive(Debug)]
pub struct ApiSet {
    apis: Vec<Api>,
    /// The secret of the matching hash ([`lookup`]).
    k: [u64; 4],
    /// Exact host, lowercase -> index in `groups`.
    by_host: Table,
    /// Whether `by_host` holds any host: without one, the request's host is
    /// not even read.
    has_hosts: bool,
    /// Bit `n`: some exact host is `n` bytes long, so a request host of
    /// another length skips the host table.
    host_lens: [u64; 5],
    /// The groups of the exact hosts.
    groups: Vec<Group>,
    any_host: Group,
    /// Digest of the files the set was read from (0 when not read from files).
    source_digest: u64,
}

impl Default for ApiSet {
    fn default() -> ApiSet {
        // Hosts and paths come from clients, so where they land in a table
        // must not be predictable (hash flooding): each set draws its own
        // secret.
        let k = random_secret();
        ApiSet {
            apis: Vec::new(),
            k,
            by_host: Table::new(&[]),
            has_hosts: false,
            host_lens: [0; 5],
            groups: Vec::new(),
            any_host: Group::new(&k, &[]),
            source_digest: 0,
        }
    }
}

impl ApiSet {
    /// Indexes `apis`; two APIs with the same hostname and url are an error.
    pub fn new(mut apis: Vec<Api>) -> Result<ApiSet, ApiError> {
        apis.sort_by(|a, b| a.name.cmp(&b.name));
        let mut set = ApiSet::default();
        // Host ("*" for any) -> its urls and their API indexes.
        let mut by_host: HashMap<&[u8], Vec<_>> = HashMap::new();
        let mut seen: HashMap<(&[u8], &[u8]), usize> = HashMap::new();
        for (i, a) in apis.iter().enumerate() {
            let (h, u) = (a.hostname.as_bytes(), a.url.as_bytes());
            if let Some(&j) = seen.get(&(h, u)) {
                return Err(ApiError {
                    api: a.name.clone(),
                    message: format!(
                        "hostname {:?} and url {:?} are already defined by API {}",
                        a.hostname, a.url, apis[j].name
                    ),
                });
            }
            seen.insert((h, u), i);
            by_host.entry(h).or_default().push((u, i));
        }
        let k = set.k;
        let mut entries = Vec::new();
        for (h, urls) in &by_host {
            let g = Group::new(&k, urls);
            if *h == b"*" {
                set.any_host = g;
            } else {
                let n = h.len().min(256);
                set.host_lens[n / 64] |= 1 << (n % 64);
                entries.push((*h, lookup(&k, h, h.len(), bytes::lower8), set.groups.len()));
                set.groups.push(g);
            }
        }
        set.by_host = Table::new(&entries);
        set.has_hosts = !entries.is_empty();
        set.apis = apis;
        Ok(set)
    }

    /// The APIs, sorted by name.
    pub fn apis(&self) -> &[Api] {
        &self.apis
    }

    /// A digest of the files the set was read from (names and bytes, see
    /// [`source_digest`]); 0 when it was not read from files. Two processes
    /// that read the same files get the same digest: `ase-cli` compares its
    /// own with the running engines' to say what they have loaded.
    pub fn source_digest(&self) -> u64 {
        self.source_digest
    }

    /// Records the digest of the files the set was read from.
    pub fn set_source_digest(&mut self, digest: u64) {
        self.source_digest = digest;
    }

    /// The API named `name`.
    pub fn get(&self, name: &str) -> Option<&Api> {
        self.apis.iter().find(|a| a.name == name)
    }

    /// The API serving `host` (any case, port ignored) and normalised `path`.
    pub fn find(&self, host: &[u8], path: &[u8]) -> Option<&Api> {
        if self.has_hosts {
            let h = strip_port(host);
            if let Some(g) = self.host_group(h) {
                if let Some(i) = g.find(&self.k, path) {
                    return Some(&self.apis[i]);
                }
            }
        }
        self.any_host.find(&self.k, path).map(|i| &self.apis[i])
    }

    /// The group of APIs on exact host `h` (port already stripped). The
    /// host is hashed and compared lowercased word by word, so one with a
    /// capital costs no copy.
    #[inline]
    fn host_group(&self, h: &[u8]) -> Option<&Group> {
        if h.is_empty() || h.len() > 256 || self.host_lens[h.len() / 64] & 1 << (h.len() % 64) == 0
        {
            return None;
        }
        let p = lookup(&self.k, h, h.len(), bytes::lower8);
        let g = self.by_host.get(&p, |key| bytes::eq_lowered(h, key))?;
        Some(&self.groups[g])
    }
}

/// `example.com:8080` -> `example.com`; `[::1]:80` -> `[::1]`; a trailing dot is dropped.
#[inline]
fn strip_port(host: &[u8]) -> &[u8] {
    let h = host.trim_ascii();
    let h = if h.first() == Some(&b'[') {
        match bytes::find_byte(h, b']') {
            Some(p) => &h[..=p],
            None => h,
        }
    } else {
        // The last `:` starts the port, so an unbracketed IPv6 address
        // loses its last group: a Host header brackets IPv6 addresses.
        match last_colon(h) {
            Some(p) => &h[..p],
            None => h,
        }
    };
    h.strip_suffix(b".").unwrap_or(h)
}

/// The position of the last `:` in `h`: eight bytes per step from the end,
/// as a host has none almost always and so is read whole; `memrchr` for
/// long ones.
#[inline]
fn last_colon(h: &[u8]) -> Option<usize> {
    let n = h.len();
    let top = |z: u64| (63 - z.leading_zeros() as usize) / 8;
    if n > 64 {
        return memchr::memrchr(b':', h);
    }
    if n < 8 {
        // The zero padding is never a `:`.
        let z = bytes::bytes_eq(bytes::short_word(h), b':');
        return (z != 0).then(|| top(z));
    }
    let mut at = n - 8;
    loop {
        let z = bytes::bytes_eq(bytes::word_at(h, at), b':');
        if z != 0 {
            return Some(at + top(z));
        }
        if at == 0 {
            return None;
        }
        // The last step overlaps bytes already searched: they hold no `:`,
        // so a `:` found lies before them.
        at = at.saturating_sub(8);
    }
}

/// The digest of API files, given as (name, bytes) in name order: FNV-1a
/// over each name and its bytes, each preceded by its length. Not a keyed
/// hash: it tells one set of files from another, it protects nothing.
pub fn source_digest<'a>(files: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: &[u8]| {
        for &x in (b.len() as u64).to_le_bytes().iter().chain(b) {
            h = (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (name, bytes) in files {
        eat(name.as_bytes());
        eat(bytes);
    }
    // 0 means "not read from files".
    h.max(1)
}

#[cfg(test)]
mod tests {
    use super::super::path::NormPath;
    use super::super::path::tests::gen_uri;
    use super::*;
    use crate::policy::testing::Rng;

    #[test]
    fn exact_hosts_of_every_length_up_to_256_match() {
        for len in [1, 17, 63, 64, 65, 255, 256] {
            let host = "a".repeat(len);
            let api = |name: &str, h: &str| {
                let j = format!(r#"{{"api_metadata":{{"url":"/x","hostname":"{h}"}}}}"#);
                Api::parse(name, j.as_bytes()).unwrap()
            };
            let set = ApiSet::new(vec![api("exact", &host), api("any", "*")]).unwrap();
            let found = |h: &str| set.find(h.as_bytes(), b"/x").map(|a| a.name.as_str());
            assert_eq!(found(&host), Some("exact"), "{len}");
            assert_eq!(found(&host.to_uppercase()), Some("exact"), "{len}");
            assert_eq!(found(&format!("{host}:8080")), Some("exact"), "{len}");
            assert_eq!(found(&format!("{host}.")), Some("exact"), "{len}");
            assert_eq!(found(&format!("{host}b")), Some("any"), "{len}");
        }
    }

    /// Plain host matching: trim; a bracketed literal up to its `]`, else
    /// cut at the last `:`; one trailing dot off; lowercase; exact hosts of
    /// up to 256 bytes only.
    fn plain_host(host: &[u8]) -> Option<Vec<u8>> {
        let mut h = host.trim_ascii().to_vec();
        if h.first() == Some(&b'[') {
            if let Some(p) = h.iter().position(|&c| c == b']') {
                h.truncate(p + 1);
            }
        } else if let Some(p) = h.iter().rposition(|&c| c == b':') {
            h.truncate(p);
        }
        if h.last() == Some(&b'.') {
            h.pop();
        }
        h.make_ascii_lowercase();
        (!h.is_empty() && h.len() <= 256).then_some(h)
    }

    /// Plain url matching: url `/` takes any path starting with `/`, any
    /// other url itself and what lies below it on a `/` boundary.
    fn plain_url_matches(url: &[u8], path: &[u8]) -> bool {
        if url == b"/" {
            return path.first() == Some(&b'/');
        }
        path.starts_with(url) && (path.len() == url.len() || path[url.len()] == b'/')
    }

    /// The plain matcher: among the APIs of the exact host, else of `*`,
    /// the one with the longest matching url.
    fn plain_find<'a>(apis: &'a [Api], host: &[u8], path: &[u8]) -> Option<&'a str> {
        let best = |exact: &dyn Fn(&Api) -> bool| {
            apis.iter()
                .filter(|a| exact(a) && plain_url_matches(a.url.as_bytes(), path))
                .max_by_key(|a| a.url.len())
                .map(|a| a.name.as_str())
        };
        let h = plain_host(host);
        let on_host = h.as_ref().and_then(|h| {
            best(&|a: &Api| a.hostname != "*" && a.hostname.as_bytes() == h.as_slice())
        });
        on_host.or_else(|| best(&|a: &Api| a.hostname == "*"))
    }

    fn plain_under(path: &[u8], base: &[u8]) -> bool {
        base == b"/"
            || path.starts_with(base) && (path.len() == base.len() || path[base.len()] == b'/')
    }

    const SEGS: &[&str] = &["a", "b", "ab", "api57", "x", "A", "items"];

    fn gen_url(r: &mut Rng) -> String {
        let mut u = String::new();
        for _ in 0..r.below(4) {
            u.push('/');
            u.push_str(r.pick(SEGS));
        }
        if u.is_empty() || r.chance(10) {
            u.push('/');
        }
        if r.chance(3) {
            u.push_str("%2Fb");
        }
        u
    }

    fn gen_host(r: &mut Rng) -> String {
        match r.below(10) {
            0..=3 => "*".into(),
            4..=6 => {
                let labels = ["a", "b", "shop", "Ab", "x-1", "1", "example", "com"];
                let n = 1 + r.below(3);
                (0..n)
                    .map(|_| r.pick(&labels))
                    .collect::<Vec<_>>()
                    .join(".")
            }
            7 => r
                .pick(&["[::1]", "10.0.0.1", "[2001:db8::1]", "a.", "a:80", "::1"])
                .into(),
            _ => {
                // Lengths around word and table limits, up to past 256.
                let n = r.pick(&[
                    "1", "7", "8", "9", "16", "17", "63", "64", "65", "255", "256", "257",
                ]);
                let n: usize = n.parse().unwrap();
                (0..n).map(|i| if i % 5 == 4 { '.' } else { 'a' }).collect()
            }
        }
    }

    /// A request host from a configured one: capitals, a port, a trailing
    /// dot, spaces, a bracketed address, or a near miss.
    fn gen_req_host(r: &mut Rng, hosts: &[String]) -> String {
        let mut h = if r.chance(85) {
            hosts[r.below(hosts.len())].clone()
        } else {
            r.pick(&["", "[::1]:80", "[::1", "::1", "[::1]", "other", ":80", "."])
                .into()
        };
        if r.chance(30) {
            h = h
                .chars()
                .map(|c| {
                    if r.chance(50) {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect();
        }
        match r.below(12) {
            0 => h.push_str(":8080"),
            1 => h.push('.'),
            2 => h.push_str(".:443"),
            3 => h.push(':'),
            4 => h = format!(" {h}\t"),
            5 => h.push('a'),
            6 => {
                h.pop();
            }
            7 => h.push_str(":80."),
            8 => h.push_str(".."),
            _ => {}
        }
        h
    }

    #[test]
    fn find_matches_a_plain_matcher() {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut exact, mut any, mut none) = (0, 0, 0);
        for round in 0..1500 {
            let n = 1 + r.below(if round % 10 == 0 { 60 } else { 12 });
            let mut jsons = Vec::new();
            for _ in 0..n {
                let (host, url) = (gen_host(&mut r), gen_url(&mut r));
                let decoys: Vec<String> = (0..r.below(3)).map(|_| gen_url(&mut r)).collect();
                jsons.push(format!(
                    r#"{{"api_metadata":{{"url":"{url}","hostname":"{host}",
                    "decoy_config":{{"decoy_enabled":true,"decoy_subpaths":{decoys:?}}}}}}}"#
                ));
            }
            let parse = |js: &[String]| -> Vec<Api> {
                js.iter()
                    .enumerate()
                    .map(|(i, j)| Api::parse(&format!("api{i}"), j.as_bytes()).unwrap())
                    .collect()
            };
            // The same host and url twice is an error; the test goes on
            // with the first of each.
            let mut keys = std::collections::HashSet::new();
            let unique: Vec<String> = parse(&jsons)
                .into_iter()
                .zip(&jsons)
                .filter(|(a, _)| keys.insert((a.hostname.clone(), a.url.clone())))
                .map(|(_, j)| j.clone())
                .collect();
            if unique.len() < jsons.len() {
                assert!(ApiSet::new(parse(&jsons)).is_err());
            }
            let apis = parse(&unique);
            let hosts: Vec<String> = apis.iter().map(|a| a.hostname.clone()).collect();
            let set = ApiSet::new(apis).unwrap();
            for _ in 0..200 {
                let host = gen_req_host(&mut r, &hosts);
                let uri = gen_uri(&mut r);
                let path = NormPath::new(uri.as_bytes());
                let path = path.as_bytes();
                let got = set.find(host.as_bytes(), path);
                let want = plain_find(set.apis(), host.as_bytes(), path);
                assert_eq!(got.map(|a| a.name.as_str()), want, "{host:?} {uri:?}");
                match got {
                    Some(a) if a.hostname == "*" => any += 1,
                    Some(_) => exact += 1,
                    None => none += 1,
                }
                if let Some(a) = got {
                    let subs = &a.decoy.as_ref().unwrap().subpaths;
                    let plain =
                        subs.is_empty() || subs.iter().any(|s| plain_under(path, s.as_bytes()));
                    assert_eq!(a.is_decoy(path), plain, "{uri:?} {subs:?}");
                }
            }
        }
        // Every outcome is common enough to be tested.
        assert!(
            exact > 20_000 && any > 20_000 && none > 20_000,
            "{exact} {any} {none}"
        );
    }

    fn api(name: &str, host: &str, url: &str) -> Api {
        let j = format!(r#"{{"api_metadata":{{"url":"{url}","hostname":"{host}"}}}}"#);
        Api::parse(name, j.as_bytes()).unwrap()
    }

    #[test]
    fn matching_rules() {
        let set = ApiSet::new(vec![
            api("root", "*", "/"),
            api("shop", "*", "/shop"),
            api("shopx", "*", "/shop/x/"),
            api("exact", "API.Example.com", "/shop"),
        ])
        .unwrap();
        let f = |h: &str, p: &str| {
            set.find(h.as_bytes(), NormPath::new(p.as_bytes()).as_bytes())
                .map(|a| a.name.clone())
        };
        assert_eq!(f("other", "/shop").as_deref(), Some("shop"));
        assert_eq!(f("other", "/shop/y?q=1").as_deref(), Some("shop"));
        assert_eq!(f("other", "/shopping").as_deref(), Some("root"));
        assert_eq!(f("other", "/shop/x/1").as_deref(), Some("shopx"));
        assert_eq!(
            f("api.example.COM:8443", "/shop/1").as_deref(),
            Some("exact")
        );
        assert_eq!(
            f("api.example.com", "/other").as_deref(),
            Some("root"),
            "falls back to *"
        );
        assert_eq!(
            f("other", "/shop/%78/1").as_deref(),
            Some("shopx"),
            "percent-decoded"
        );
        assert_eq!(
            f("other", "/a/../shop//x/./1").as_deref(),
            Some("shopx"),
            "dot segments"
        );
        let none = ApiSet::new(vec![api("shop", "*", "/shop")]).unwrap();
        assert!(none.find(b"h", b"/other").is_none());
        assert!(ApiSet::new(vec![api("a", "*", "/x"), api("b", "*", "/x/")]).is_err());
    }
}
