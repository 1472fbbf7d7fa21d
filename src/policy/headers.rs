//! Reading request headers: the [`Headers`] a host passes in, and the one
//! pass over them that picks up every header an API reads
//! ([`HeaderPlan`], [`scan_headers`]). It knows header names and the
//! identifier slots they feed, not APIs: an API builds its plan from its
//! own fields.

use super::bytes::{eq_lowered, lower8, short_word, word_at};
use super::cookie::{cookie_in_as, plain_cookie_name};

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

/// The first value of header `name` (any case).
pub fn header<'h, H: Headers + ?Sized>(h: &'h H, name: &[u8]) -> Option<&'h [u8]> {
    (0..h.count())
        .map(|i| h.at(i))
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// What a wanted header feeds: one bit per identifier source.
pub(crate) mod slot {
    pub const XFF: u8 = 1 << 0;
    pub const AUTH: u8 = 1 << 1;
    pub const COOKIE: u8 = 1 << 2;
    pub const KEY: u8 = 1 << 3;
    pub const USER: u8 = 1 << 4;
    pub const JWT: u8 = 1 << 5;
}

/// The headers one API reads, prepared when the API is loaded: each name in
/// lowercase with the identifiers it feeds (one header may feed several),
/// and a bit per name length, so most request headers are passed over on
/// their length alone and the rest cost one slot lookup and one comparison.
#[derive(Clone, Debug, Default)]
pub(crate) struct HeaderPlan {
    names: Vec<Wanted>,
    /// `names` indexed by a multiplicative hash of a name's head word and
    /// length: a candidate header is compared with one wanted name, not
    /// each in turn. `None` when no multiplier tried gives each name its own
    /// slot, which is certain for two names with the same first eight bytes
    /// and length (`X-Client-Id`, `X-Client-Ip`): the names are then scanned.
    index: Option<NameIndex>,
    /// Bit `n`: a wanted name is `n` bytes long (`n < 63`); bit 63: one is
    /// 63 bytes or longer.
    lens: u64,
    /// Every slot some name feeds.
    pub(crate) slots: u8,
    /// The API's cookie name takes the fast path of
    /// [`cookie_in`](super::cookie::cookie_in).
    plain_cookie: bool,
}

/// The slot table of [`HeaderPlan::index`].
#[derive(Clone, Debug)]
struct NameIndex {
    mult: u64,
    /// Position in `names` plus one; 0 is an empty slot.
    slot: [u8; 16],
}

impl NameIndex {
    #[inline(always)]
    fn at(mult: u64, head: u64, len: usize) -> usize {
        (head.wrapping_add(len as u64).wrapping_mul(mult) >> 60) as usize
    }

    /// A multiplier that gives every name its own slot, tried from a fixed
    /// sequence (the names are the operator's; a request's header name costs
    /// one comparison whatever slot it lands in).
    fn of(names: &[Wanted]) -> Option<NameIndex> {
        let mut mult = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..256 {
            let mut slot = [0u8; 16];
            let spread = names.iter().enumerate().all(|(i, w)| {
                let s = &mut slot[NameIndex::at(mult, w.head, w.name.len())];
                let free = *s == 0;
                *s = i as u8 + 1;
                free
            });
            if spread {
                return Some(NameIndex { mult, slot });
            }
            mult = mult
                .wrapping_add(0x9e37_79b9_7f4a_7c15)
                .wrapping_mul(0xbf58_476d_1ce4_e5b9)
                | 1;
        }
        None
    }
}

/// One wanted header name.
#[derive(Clone, Debug)]
struct Wanted {
    /// Its first eight bytes (fewer, zero-padded, for a shorter name),
    /// lowercase: most candidates of the right length differ here.
    head: u64,
    /// Its last eight bytes, lowercase, for a name longer than eight: with
    /// the head and the length it settles a name of up to 16 bytes.
    tail: u64,
    /// The whole name, lowercase.
    name: Box<[u8]>,
    /// The slots it feeds.
    slots: u8,
}

impl Wanted {
    fn new(lower: Box<[u8]>, slots: u8) -> Wanted {
        Wanted {
            head: head_word(&lower),
            tail: lower.last_chunk().map_or(0, |w| u64::from_le_bytes(*w)),
            name: lower,
            slots,
        }
    }

    /// The slots among `need` this name feeds if it is `n` (whose
    /// [`head_word`] is `head`), else 0.
    #[inline(always)]
    fn slots_of(&self, head: u64, n: &[u8], need: u8) -> u8 {
        let len = n.len();
        let is = self.head == head
            && self.name.len() == len
            && (len <= 8
                || n.last_chunk()
                    .is_some_and(|w| lower8(u64::from_le_bytes(*w)) == self.tail)
                    && (len <= 16 || eq_lowered(&n[8..len - 8], &self.name[8..len - 8])));
        if is { self.slots & need } else { 0 }
    }
}

/// The first eight bytes of `n` (all of a shorter one, zero-padded), lowercase.
#[inline(always)]
fn head_word(n: &[u8]) -> u64 {
    lower8(if n.len() >= 8 {
        word_at(n, 0)
    } else {
        short_word(n)
    })
}

impl HeaderPlan {
    /// The plan that reads `wanted` (a name, any case, and the slots it
    /// feeds), in that order; `cookie` is the cookie the [`slot::COOKIE`]
    /// header is searched for.
    pub(crate) fn new(wanted: &[(&[u8], u8)], cookie: Option<&[u8]>) -> HeaderPlan {
        let mut p = HeaderPlan::default();
        for &(name, s) in wanted {
            let lower = name.to_ascii_lowercase();
            match p.names.iter_mut().find(|w| *w.name == *lower) {
                Some(w) => w.slots |= s,
                None => {
                    p.lens |= 1 << lower.len().min(63);
                    p.names.push(Wanted::new(lower.into(), s));
                }
            }
            p.slots |= s;
        }
        p.plain_cookie = cookie.is_some_and(plain_cookie_name);
        p.index = NameIndex::of(&p.names);
        p
    }

    /// Whether the plan scans its names, no slot table telling them apart.
    #[cfg(test)]
    pub(crate) fn scans_names(&self) -> bool {
        self.index.is_none()
    }

    /// Whether a name of `len` bytes may be wanted.
    #[inline(always)]
    fn may_want(&self, len: usize) -> bool {
        self.lens >> len.min(63) & 1 != 0
    }

    /// The slots header name `n` feeds among `need` (0 if none).
    #[inline(always)]
    fn slots_of(&self, n: &[u8], need: u8) -> u8 {
        let head = head_word(n);
        let Some(ix) = &self.index else {
            return self
                .names
                .iter()
                .map(|w| w.slots_of(head, n, need))
                .find(|&s| s != 0)
                .unwrap_or(0);
        };
        match ix.slot[NameIndex::at(ix.mult, head, n.len())] {
            0 => 0,
            i => self
                .names
                .get(i as usize - 1)
                .map_or(0, |w| w.slots_of(head, n, need)),
        }
    }
}

/// The first value of each header a plan wants (see [`scan_headers`]),
/// and which slots it saw again.
#[derive(Clone, Copy, Default)]
pub(crate) struct Found<'h> {
    pub xff: Option<&'h [u8]>,
    pub auth: Option<&'h [u8]>,
    pub cookie: Option<&'h [u8]>,
    pub key: Option<&'h [u8]>,
    pub user: Option<&'h [u8]>,
    pub jwt: Option<&'h [u8]>,
    /// Slots (among those asked for) fed by more than one header; for
    /// [`slot::COOKIE`], the named cookie occurred more than once, in one
    /// `Cookie` header or across several.
    pub again: u8,
}

/// The first value of each header the plan wants, in one pass; the cookie
/// is the named cookie from the first `Cookie` header that has it.
///
/// The pass goes on to the last header, not only until every wanted
/// header was seen: a client may send an identifier twice, and a backend
/// that reads the last one must not act for a client whose first one
/// passed (docs/design.md, Identifiers). A repeated header only sets a bit
/// in [`Found::again`]; the caller reads the headers again when one is
/// set. Most headers are still passed over on their length alone.
///
/// The values go in named fields, written in place in the caller's `Found`
/// a word at a time and read back a word at a time, not in an array
/// indexed by slot bit: such an array lives in this function's frame, is
/// written a word at a time (`None` only writes the pointer word) and
/// copied out sixteen bytes at a time, and a load that spans two smaller
/// stores still pending cannot take its data from them (store-to-load
/// forwarding fails): it waits for them to reach the cache, 7-10 ns a
/// check whatever the headers are (docs/BENCHMARKS.md).
///
/// Kept out of line: inlined into `Enforcer::check`, this loop's speed moved
/// by 20 ns with unrelated edits elsewhere in that function (its code
/// placement); on its own it runs at the faster of those speeds.
#[inline(never)]
pub(crate) fn scan_headers<'h, H: Headers + ?Sized>(
    plan: &HeaderPlan,
    want: u8,
    cookie_name: &[u8],
    h: &'h H,
) -> Found<'h> {
    let mut f = Found::default();
    let mut need = want;
    for i in 0..h.count() {
        let (n, v) = h.at(i);
        if !plan.may_want(n.len()) {
            continue;
        }
        let mut hit = plan.slots_of(n, want);
        if hit == 0 {
            continue;
        }
        if hit & slot::COOKIE != 0 {
            match cookie_in_as(v, cookie_name, plan.plain_cookie) {
                None => hit &= !slot::COOKIE,
                Some(c) if f.cookie.is_none() => {
                    f.cookie = Some(c);
                    // The same cookie later in this header.
                    let end = c.as_ptr() as usize - v.as_ptr() as usize + c.len();
                    if cookie_in_as(&v[end..], cookie_name, plan.plain_cookie).is_some() {
                        f.again |= slot::COOKIE;
                    }
                }
                Some(_) => {}
            }
        }
        f.again |= hit & !need;
        hit &= need;
        need &= !hit;
        if hit & slot::XFF != 0 {
            f.xff = Some(v);
        }
        if hit & slot::AUTH != 0 {
            f.auth = Some(v);
        }
        if hit & slot::KEY != 0 {
            f.key = Some(v);
        }
        if hit & slot::USER != 0 {
            f.user = Some(v);
        }
        if hit & slot::JWT != 0 {
            f.jwt = Some(v);
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_index_gives_each_wanted_name_its_own_slot() {
        // The names an API with a cookie, a bearer token, an API-key
        // header, a user-name header and a JWT header reads.
        let wanted: [(&[u8], u8); 6] = [
            (b"x-forwarded-for", slot::XFF),
            (b"authorization", slot::AUTH),
            (b"cookie", slot::COOKIE),
            (b"X-Api-Key", slot::KEY),
            (b"X-User", slot::USER),
            (b"X-Jwt", slot::JWT),
        ];
        let plan = HeaderPlan::new(&wanted, Some(b"SID"));
        let ix = plan.index.as_ref().expect("index built");
        let used = ix.slot.iter().filter(|&&s| s != 0).count();
        assert_eq!(used, plan.names.len());
        for (i, w) in plan.names.iter().enumerate() {
            assert_eq!(
                ix.slot[NameIndex::at(ix.mult, w.head, w.name.len())] as usize,
                i + 1
            );
            assert_eq!(plan.slots_of(&w.name.to_ascii_uppercase(), !0), w.slots);
        }
        assert_eq!(plan.slots_of(b"x-userx", !0), 0);
        assert_eq!(plan.slots_of(b"accept", !0), 0);
    }
}
