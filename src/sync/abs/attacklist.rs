//! Parsing an ABS attack-list body into deny-list entries (pure: no I/O).
//!
//! ABS's `GET /v4/abs/attacklist` response is not documented, so two shapes are
//! accepted (docs/abs.md, Accepted bodies), and may be mixed:
//!
//! - **Section form**, as ABS's `PUT /v4/abs/attacklist` body, optionally wrapped
//!   in `{"attacklist": {...}}`:
//!   `{"ips": [..], "cookies": {"NAME": [..]}, "oauth_tokens": [..], "api_keys": [..], "usernames": [..]}`.
//! - **Attack-report form** of `/v4/abs/attack`, as ASE's documentation page
//!   "Real-time Detected attacks for inline ASE" shows it:
//!   `{"cookie": "NAME", "ips": [{"ip": ..}], "cookies": [{"cookie": ..}], "access_tokens": [{"access_token": ..}]}`.
//!
//! Sections: `ips`; `cookies` (an object of cookie name to items, or a list whose
//! items name their cookie with `name`, else the top-level `cookie`);
//! `oauth_tokens`, `access_tokens` or `tokens`; `api_keys` (an object of header
//! or query-parameter name to items, or a list); `usernames`. A section may be
//! `null` (empty).
//!
//! An item is a string (the value, never expiring) or an object with:
//! - the value: `value`, or the section's own word — `ip`; `cookie`;
//!   `access_token` / `oauth_token` / `token`; `api_key` / `apikey`; `username`;
//! - optional name (cookies, API keys): `name`, `cookie_name`, `header`,
//!   `apikey_header`, `apikey_qs`;
//! - optional expiry: `expiry`, `expires_at`, `expires` or `expiry_time` — an
//!   RFC 3339 string or a Unix time in seconds (below 10^11) or milliseconds,
//!   0 or `null` for never; or else `ttl` / `ttl_minutes` — minutes (0 = never,
//!   ABS's own TTL unit) counted from `detected_at` / `detection_time` when
//!   given (same formats as expiry), else from the time of the fetch.
//!
//! An API key with no name anywhere is listed under every `apikey_header` /
//! `apikey_qs` name the loaded APIs use ([`ParseOptions::api_key_names`]): ABS
//! knows the key's value, and the engine keys API keys by (name, value), so this
//! blocks the value wherever an API reads a key. With no such name it is a bad item.
//!
//! Unknown fields are ignored. An item that cannot be read (wrong type, invalid
//! IP, empty value, unparsable expiry) is counted in [`AttackList::bad_items`]
//! and skipped; one already expired is counted in [`AttackList::expired_items`]
//! and skipped. The body as a whole is refused — and the previous list stays in
//! force — when it is not JSON, not an object, has no known section at all
//! (an error message from ABS with status 200 must not wipe the list), or has a
//! section of the wrong type (a list ABS meant to send but we cannot read would
//! otherwise silently unblock everything it held).
//!
//! The body is read in one streaming pass (serde visitors over the bytes): a
//! million-item list must not first become a `serde_json::Value` tree, which
//! cost about 270 MiB above the body. Items become entries as they are read;
//! only scalars an item needs are kept, the rest is checked and skipped. The
//! result is what reading the whole document first would give: entries come
//! section by section in the order of the section list above (a named
//! section's names in byte order), a key given twice counts its last value,
//! `attacklist` wins over sections beside it, and a body that is not JSON is
//! refused as such even after a section of the wrong type.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::time::parse_rfc3339_ms;
use crate::policy::ident::{IdKind, Identifier};
use crate::policy::snapshot::entry_cost;

/// What parsing needs besides the body.
#[derive(Clone, Copy, Debug)]
pub struct ParseOptions<'a> {
    /// The fetch time (Unix ms): the base of a `ttl` without a detection time,
    /// and the instant before which expired items are dropped.
    pub now_ms: u64,
    /// Names an API key without a name is listed under (see the module doc).
    pub api_key_names: &'a [String],
}

/// A parsed attack list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttackList {
    /// Identifiers and their expiry (Unix ms, 0 = never).
    pub entries: Vec<(Identifier, u64)>,
    /// Items that could not be read and were skipped.
    pub bad_items: u64,
    /// Items whose expiry had already passed, skipped.
    pub expired_items: u64,
    /// Where the first bad item was and why (never its value).
    pub first_bad: Option<String>,
}

/// What [`AttackList::limit_memory`] kept and dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryFit {
    /// Estimated bytes the kept entries cost in the lists.
    pub bytes: u64,
    /// Entries dropped because they did not fit.
    pub dropped: u64,
}

/// A digest of a fetched list (identifiers and expiries, in order): ABS
/// answers every poll with the whole list, usually the same one, and an
/// identical list is not written to the store (a million rows) nor built
/// into a snapshot again.
pub fn digest(entries: &[(Identifier, u64)]) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for (id, exp) in entries {
        h.update(&[id.kind as u8]);
        h.update(&(id.name.len() as u64).to_le_bytes());
        h.update(id.name.as_bytes());
        h.update(&(id.value.len() as u64).to_le_bytes());
        h.update(id.value.as_bytes());
        h.update(&exp.to_le_bytes());
    }
    format!("{:032x}-{}", h.digest128(), entries.len())
}

impl AttackList {
    /// Keeps the entries, in list order, whose bytes in the lists snapshot
    /// ([`entry_cost`]) fit in `budget` bytes (`attack_list_memory`), and
    /// drops the rest from the first one that does not fit: a predictable
    /// prefix, so the same list always keeps the same entries. An identifier
    /// listed twice counts twice (the estimate errs on the safe side).
    pub fn limit_memory(&mut self, budget: u64) -> MemoryFit {
        let mut bytes = 0u64;
        let mut keep = self.entries.len();
        for (i, (id, _)) in self.entries.iter().enumerate() {
            let cost = entry_cost(id.kind, id.name.len(), id.value.len());
            if bytes + cost > budget {
                keep = i;
                break;
            }
            bytes += cost;
        }
        let dropped = (self.entries.len() - keep) as u64;
        self.entries.truncate(keep);
        MemoryFit { bytes, dropped }
    }
}

/// Why a whole body was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Not JSON (serde_json's message: position only, no content).
    NotJson(String),
    /// JSON, but not an attack list.
    Shape(String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::NotJson(m) => write!(f, "attack list is not valid JSON: {m}"),
            ParseError::Shape(m) => write!(f, "attack list has the wrong shape: {m}"),
        }
    }
}

impl std::error::Error for ParseError {}

const SECTIONS: &[(&str, IdKind)] = &[
    ("ips", IdKind::Ip),
    ("cookies", IdKind::Cookie),
    ("oauth_tokens", IdKind::Token),
    ("access_tokens", IdKind::Token),
    ("tokens", IdKind::Token),
    ("api_keys", IdKind::ApiKey),
    ("usernames", IdKind::Username),
];
const COOKIES: usize = 1;

fn value_fields(kind: IdKind) -> &'static [&'static str] {
    match kind {
        IdKind::Ip => &["value", "ip"],
        IdKind::Cookie => &["value", "cookie"],
        IdKind::Token => &["value", "access_token", "oauth_token", "token"],
        IdKind::ApiKey => &["value", "api_key", "apikey"],
        IdKind::Username => &["value", "username"],
    }
}

const NAME_FIELDS: &[&str] = &[
    "name",
    "cookie_name",
    "header",
    "apikey_header",
    "apikey_qs",
];
const EXPIRY_FIELDS: &[&str] = &["expiry", "expires_at", "expires", "expiry_time"];
const TTL_FIELDS: &[&str] = &["ttl", "ttl_minutes"];
const DETECTED_FIELDS: &[&str] = &["detected_at", "detection_time"];

/// A JSON number as serde_json reports it.
#[derive(Clone, Copy, Debug)]
enum Num {
    U(u64),
    I(i64),
    F(f64),
}

impl Num {
    /// `serde_json::Number::as_u64`, else a non-negative float truncated.
    fn non_negative(self) -> Option<u64> {
        match self {
            Num::U(u) => Some(u),
            Num::I(i) => u64::try_from(i).ok(),
            Num::F(f) => (f >= 0.0).then_some(f as u64),
        }
    }
}

/// One JSON value as far as an item needs it: scalars are kept (strings
/// borrowed from the body when they have no escapes), lists and objects are
/// checked, skipped and remembered only by their type.
#[derive(Debug)]
enum Field<'de> {
    Null,
    Bool,
    Num(Num),
    Str(Cow<'de, str>),
    List,
    Object,
}

impl Field<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            Field::Null => "null",
            Field::Bool => "a boolean",
            Field::Num(_) => "a number",
            Field::Str(_) => "a string",
            Field::List => "a list",
            Field::Object => "an object",
        }
    }
}

/// A point in time: RFC 3339, or Unix seconds / milliseconds. `Ok(0)` = never.
fn time_of(v: &Field<'_>) -> Result<u64, &'static str> {
    let t = match v {
        Field::Null => return Ok(0),
        Field::Num(n) => n.non_negative().ok_or("negative time")?,
        Field::Str(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse::<u64>().map_err(|_| "time out of range")?
        }
        Field::Str(s) => {
            return parse_rfc3339_ms(s).ok_or("unreadable time (use RFC 3339 or Unix seconds)");
        }
        _ => return Err("time of the wrong type"),
    };
    // Seconds until the year 5138; anything larger is milliseconds.
    Ok(if t < 100_000_000_000 {
        t.saturating_mul(1000)
    } else {
        t
    })
}

/// [`time_of`] over a `serde_json::Value`, for the tests.
#[cfg(test)]
fn time_ms(v: &serde_json::Value) -> Result<u64, &'static str> {
    time_of(&FieldSeed.deserialize(v).map_err(|_| "not a JSON value")?)
}

/// The groups of fields an object item has, in [`ItemFields`] order; within
/// a group the field listed first that is present counts.
fn item_field(kind: IdKind, key: &str) -> Option<(usize, usize)> {
    [
        value_fields(kind),
        NAME_FIELDS,
        EXPIRY_FIELDS,
        TTL_FIELDS,
        DETECTED_FIELDS,
    ]
    .iter()
    .enumerate()
    .find_map(|(group, names)| Some((group, names.iter().position(|n| *n == key)?)))
}

const VALUE: usize = 0;
const NAME: usize = 1;
const EXPIRY: usize = 2;
const TTL: usize = 3;
const DETECTED: usize = 4;

/// The fields of an object item that parsing reads, by group
/// ([`item_field`]): `(rank in the group, value)` of the field that counts
/// (of a key given twice, its last value).
#[derive(Default)]
struct ItemFields<'de>([Option<(usize, Field<'de>)>; 5]);

impl ItemFields<'_> {
    fn get(&self, group: usize) -> Option<&Field<'_>> {
        self.0[group].as_ref().map(|(_, f)| f)
    }

    /// Expiry in Unix ms (0 = never).
    fn expiry(&self, now: u64) -> Result<u64, &'static str> {
        if let Some(v) = self.get(EXPIRY) {
            return time_of(v);
        }
        let Some(ttl) = self.get(TTL) else {
            return Ok(0);
        };
        let minutes = match ttl {
            Field::Null => return Ok(0),
            Field::Num(n) => n.non_negative().ok_or("negative ttl")?,
            Field::Str(s) => s
                .trim()
                .parse()
                .map_err(|_| "ttl is not a number of minutes")?,
            _ => return Err("ttl of the wrong type"),
        };
        if minutes == 0 {
            return Ok(0);
        }
        let base = match self.get(DETECTED) {
            Some(v) => match time_of(v)? {
                0 => now,
                t => t,
            },
            None => now,
        };
        Ok(base.saturating_add(minutes.saturating_mul(60_000)))
    }
}

/// One item as read: a string or an object, else (`Err`) its type name.
enum Item<'de> {
    Str(Cow<'de, str>),
    Obj(ItemFields<'de>),
}

/// Where items are read: their kind, section and (named sections) name.
struct Place<'a> {
    kind: IdKind,
    section: &'static str,
    name: Option<&'a str>,
}

/// The entries and counts of one list of items (a section, or one name of a
/// named section), in item order.
#[derive(Default)]
struct Block {
    entries: Vec<(Identifier, u64)>,
    bad: u64,
    expired: u64,
    /// The first bad item: its index and the message.
    first_bad: Option<(usize, String)>,
    /// Indices of cookie items without a name of their own, waiting for the
    /// top-level `cookie`, which may come after the list (or twice). Their
    /// entries hold the value and an empty name until [`Block::name_cookies`].
    unnamed: Vec<usize>,
}

impl Block {
    fn bad(&mut self, at: &Place<'_>, index: usize, why: impl fmt::Display) {
        self.bad += 1;
        if self.first_bad.as_ref().is_none_or(|(i, _)| index < *i) {
            let msg = match at.name {
                None => format!("{}[{index}]: {why}", at.section),
                Some(n) => format!("{}.{n}[{index}]: {why}", at.section),
            };
            self.first_bad = Some((index, msg));
        }
    }

    /// One item.
    fn item(
        &mut self,
        at: &Place<'_>,
        opts: &ParseOptions<'_>,
        index: usize,
        item: Result<Item<'_>, &'static str>,
    ) {
        let (value, own_name, exp) = match &item {
            Ok(Item::Str(s)) => (s.as_ref(), None, 0),
            Ok(Item::Obj(o)) => {
                let value = match o.get(VALUE) {
                    None => return self.bad(at, index, "no value field"),
                    Some(Field::Str(v)) => v.as_ref(),
                    Some(v) => {
                        return self.bad(at, index, format_args!("value is {}", v.type_name()));
                    }
                };
                let own_name = match o.get(NAME) {
                    None | Some(Field::Null) => None,
                    Some(Field::Str(n)) => Some(n.as_ref()),
                    Some(n) => {
                        return self.bad(at, index, format_args!("name is {}", n.type_name()));
                    }
                };
                match o.expiry(opts.now_ms) {
                    Ok(e) => (value, own_name, e),
                    Err(why) => return self.bad(at, index, why),
                }
            }
            Err(t) => return self.bad(at, index, format_args!("item is {t}")),
        };
        if exp != 0 && exp <= opts.now_ms {
            self.expired += 1;
            return;
        }
        let name = own_name.filter(|n| !n.is_empty()).or(at.name);
        let value = value.trim();
        match (at.kind, name) {
            (IdKind::Cookie, None) => {
                // No Identifier::new yet: without a name it would refuse the
                // item, and its checks must see the name the body gives last.
                self.unnamed.push(index);
                let id = Identifier {
                    kind: IdKind::Cookie,
                    name: String::new(),
                    value: value.to_string(),
                };
                self.entries.push((id, exp));
            }
            (IdKind::ApiKey, None) => {
                if opts.api_key_names.is_empty() {
                    return self.bad(at, index, "API key without a name, and no API reads one");
                }
                for n in opts.api_key_names {
                    self.push(at, index, at.kind, n, value, exp);
                }
            }
            (IdKind::Cookie | IdKind::ApiKey, Some(n)) => {
                self.push(at, index, at.kind, n, value, exp)
            }
            _ => self.push(at, index, at.kind, "", value, exp),
        }
    }

    fn push(
        &mut self,
        at: &Place<'_>,
        index: usize,
        kind: IdKind,
        name: &str,
        value: &str,
        exp: u64,
    ) {
        match Identifier::new(kind, name, value) {
            Ok(id) => self.entries.push((id, exp)),
            // IdError's text names a bad IP, never a token, cookie or key value.
            Err(e) => self.bad(at, index, e),
        }
    }

    /// Names the cookies that had no name of their own with the top-level
    /// `cookie` (`None`: there is none, and they are bad items).
    fn name_cookies(&mut self, at: &Place<'_>, cookie: Option<&str>) {
        if self.unnamed.is_empty() {
            return;
        }
        let mut indices = std::mem::take(&mut self.unnamed).into_iter();
        let mut failed: Vec<(usize, String)> = Vec::new();
        self.entries.retain_mut(|(id, _)| {
            // Only the waiting items have a cookie without a name:
            // Identifier::new never makes one.
            if id.kind != IdKind::Cookie || !id.name.is_empty() {
                return true;
            }
            let Some(index) = indices.next() else {
                return false;
            };
            let named = match cookie {
                None => Err("cookie without a name".to_string()),
                Some(n) => Identifier::new(IdKind::Cookie, n, &id.value).map_err(|e| e.to_string()),
            };
            match named {
                Ok(named) => {
                    *id = named;
                    true
                }
                Err(why) => {
                    failed.push((index, why));
                    false
                }
            }
        });
        for (index, why) in failed {
            self.bad(at, index, why);
        }
    }
}

/// A section as read (of a key given twice, the last).
enum Section {
    Null,
    List(Block),
    /// Name to its items, or to the type name of a value that is not a list.
    ByName(BTreeMap<String, Result<Block, &'static str>>),
    /// A value of the wrong type: its type name.
    Wrong(&'static str),
}

/// An object that may hold sections: the body, or its `attacklist`.
#[derive(Default)]
struct Root<'de> {
    sections: [Option<Section>; SECTIONS.len()],
    cookie: Option<Field<'de>>,
}

impl Root<'_> {
    /// Called at the end of the object, when the last `cookie` is known.
    fn name_cookies(&mut self) {
        let cookie = match &self.cookie {
            Some(Field::Str(s)) if !s.is_empty() => Some(s.as_ref()),
            _ => None,
        };
        if let Some(Section::List(b)) = &mut self.sections[COOKIES] {
            let at = Place {
                kind: IdKind::Cookie,
                section: SECTIONS[COOKIES].0,
                name: None,
            };
            b.name_cookies(&at, cookie);
        }
    }

    /// The list, or why the body is refused (in the order the checks have
    /// always run: cookie, any section, each section in turn).
    fn finish(self) -> Result<AttackList, ParseError> {
        if let Some(c) = &self.cookie {
            if !matches!(c, Field::Null | Field::Str(_)) {
                return Err(ParseError::Shape(format!(
                    "cookie is {}, expected a cookie name",
                    c.type_name()
                )));
            }
        }
        if self.sections.iter().all(Option::is_none) {
            let names: Vec<&str> = SECTIONS.iter().map(|(s, _)| *s).collect();
            return Err(ParseError::Shape(format!(
                "no attack-list section ({})",
                names.join(", ")
            )));
        }
        for (s, &(section, kind)) in self.sections.iter().zip(SECTIONS) {
            match s {
                Some(Section::Wrong(t)) => {
                    let want = if kind.has_name() {
                        "a list or an object of lists"
                    } else {
                        "a list"
                    };
                    return Err(ParseError::Shape(format!(
                        "{section} is {t}, expected {want}"
                    )));
                }
                Some(Section::ByName(by_name)) => {
                    if let Some((name, Err(t))) = by_name.iter().find(|(_, b)| b.is_err()) {
                        return Err(ParseError::Shape(format!(
                            "{section}.{name} is {t}, expected a list"
                        )));
                    }
                }
                _ => {}
            }
        }
        let mut blocks: Vec<Block> = Vec::new();
        for s in self.sections.into_iter().flatten() {
            match s {
                Section::List(b) => blocks.push(b),
                Section::ByName(by_name) => blocks.extend(by_name.into_values().flatten()),
                Section::Null | Section::Wrong(_) => {}
            }
        }
        let mut out = AttackList::default();
        for b in &mut blocks {
            out.bad_items += b.bad;
            out.expired_items += b.expired;
            if out.first_bad.is_none() {
                out.first_bad = b.first_bad.take().map(|(_, m)| m);
            }
        }
        // The largest block's vector becomes the list, so that its entries
        // (most of a big list) are moved within it rather than copied into
        // a second vector as large.
        let Some(largest) = (0..blocks.len()).max_by_key(|&i| blocks[i].entries.len()) else {
            return Ok(out);
        };
        let total: usize = blocks.iter().map(|b| b.entries.len()).sum();
        let mut before: Vec<(Identifier, u64)> = Vec::new();
        for b in &mut blocks[..largest] {
            before.append(&mut b.entries);
        }
        out.entries = std::mem::take(&mut blocks[largest].entries);
        out.entries.reserve_exact(total - out.entries.len());
        out.entries.splice(0..0, before);
        for b in &mut blocks[largest + 1..] {
            out.entries.append(&mut b.entries);
        }
        Ok(out)
    }
}

/// The body, or the object under its `attacklist`.
#[derive(Default)]
struct Doc<'de> {
    root: Root<'de>,
    /// The last `attacklist` of the body: an object, or the type name of
    /// another value. Once there is one, the sections beside it do not count.
    attacklist: Option<Result<Root<'de>, &'static str>>,
}

/// Parses an attack-list body. See the module doc for what is accepted.
pub fn parse(body: &[u8], opts: ParseOptions<'_>) -> Result<AttackList, ParseError> {
    let not_json = |e: serde_json::Error| ParseError::NotJson(e.to_string());
    let mut de = serde_json::Deserializer::from_slice(body);
    let doc = Shaped(DocShape {
        opts: &opts,
        top: true,
    })
    .deserialize(&mut de)
    .map_err(not_json)?;
    // Trailing characters make it not JSON, whatever its shape.
    de.end().map_err(not_json)?;
    let doc = doc.map_err(|t| ParseError::Shape(format!("expected an object, got {t}")))?;
    match doc.attacklist {
        None => doc.root.finish(),
        Some(Ok(root)) => root.finish(),
        Some(Err(t)) => Err(ParseError::Shape(format!(
            "attacklist is {t}, expected an object"
        ))),
    }
}

// The visitors. None of them refuses a type: what the shape makes of a value
// is decided after the whole body has parsed, so that a body that is not JSON
// is always refused as such, as serde_json::from_slice::<Value> did.

/// Any value, checked as fully as reading a `serde_json::Value` (strings,
/// number ranges, nesting depth) and dropped.
struct Skip;

impl<'de> serde::Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Skip, D::Error> {
        d.deserialize_any(Skip)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}

/// A scalar an item needs ([`Field`]).
struct FieldSeed;

impl<'de> DeserializeSeed<'de> for FieldSeed {
    type Value = Field<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Field<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FieldSeed {
    type Value = Field<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Field<'de>, E> {
        Ok(Field::Null)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Field<'de>, E> {
        Ok(Field::Bool)
    }
    fn visit_u64<E>(self, v: u64) -> Result<Field<'de>, E> {
        Ok(Field::Num(Num::U(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Field<'de>, E> {
        Ok(Field::Num(Num::I(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Field<'de>, E> {
        Ok(Field::Num(Num::F(v)))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Owned(v.to_string())))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Field<'de>, A::Error> {
        Skip.visit_seq(seq).map(|_| Field::List)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Field<'de>, A::Error> {
        Skip.visit_map(map).map(|_| Field::Object)
    }
}

/// A map key, handed to a closure (which classifies or copies it).
struct KeySeed<F>(F);

impl<'de, T, F: FnOnce(&str) -> T> DeserializeSeed<'de> for KeySeed<F> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, T, F: FnOnce(&str) -> T> Visitor<'de> for KeySeed<F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E>(self, v: &str) -> Result<T, E> {
        Ok((self.0)(v))
    }
}

/// What a part of the body makes of each type of JSON value. By default a
/// value is checked, skipped and known only by its type name (`Err`).
trait Shape<'de>: Sized {
    type Out;

    fn null(self) -> Result<Self::Out, &'static str> {
        Err("null")
    }
    fn string(self, _: Cow<'de, str>) -> Result<Self::Out, &'static str> {
        Err("a string")
    }
    fn list<A: SeqAccess<'de>>(self, seq: A) -> Result<Result<Self::Out, &'static str>, A::Error> {
        Skip.visit_seq(seq).map(|_| Err("a list"))
    }
    fn object<A: MapAccess<'de>>(
        self,
        map: A,
    ) -> Result<Result<Self::Out, &'static str>, A::Error> {
        Skip.visit_map(map).map(|_| Err("an object"))
    }
}

/// Reads one value with a [`Shape`].
struct Shaped<S>(S);

impl<'de, S: Shape<'de>> DeserializeSeed<'de> for Shaped<S> {
    type Value = Result<S::Out, &'static str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, S: Shape<'de>> Visitor<'de> for Shaped<S> {
    type Value = Result<S::Out, &'static str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(self.0.null())
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err("a boolean"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Err("a number"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Err("a number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Err("a number"))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(self.0.string(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.string(Cow::Owned(v.to_string())))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.0.list(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.0.object(map)
    }
}

/// The body (`top`) or its `attacklist`: an object.
struct DocShape<'o, 'a> {
    opts: &'o ParseOptions<'a>,
    top: bool,
}

enum RootKey {
    Section(usize),
    Cookie,
    Attacklist,
    Other,
}

impl<'de> Shape<'de> for DocShape<'_, '_> {
    type Out = Doc<'de>;

    fn object<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> Result<Result<Doc<'de>, &'static str>, A::Error> {
        let mut doc = Doc::default();
        let classify = |k: &str| match k {
            "cookie" => RootKey::Cookie,
            "attacklist" => RootKey::Attacklist,
            _ => SECTIONS
                .iter()
                .position(|(s, _)| *s == k)
                .map_or(RootKey::Other, RootKey::Section),
        };
        while let Some(key) = map.next_key_seed(KeySeed(classify))? {
            match key {
                RootKey::Attacklist if self.top => {
                    // The wrapper wins over sections beside it: drop them now.
                    doc.root = Root::default();
                    let inner = map.next_value_seed(Shaped(DocShape {
                        opts: self.opts,
                        top: false,
                    }))?;
                    doc.attacklist = Some(inner.map(|d| d.root));
                }
                RootKey::Section(i) if doc.attacklist.is_none() => {
                    let (section, kind) = SECTIONS[i];
                    let s = map.next_value_seed(Shaped(SectionShape {
                        opts: self.opts,
                        section,
                        kind,
                    }))?;
                    doc.root.sections[i] = Some(s.unwrap_or_else(Section::Wrong));
                }
                RootKey::Cookie if doc.attacklist.is_none() => {
                    doc.root.cookie = Some(map.next_value_seed(FieldSeed)?);
                }
                _ => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        doc.root.name_cookies();
        Ok(Ok(doc))
    }
}

/// One section's value.
struct SectionShape<'o, 'a> {
    opts: &'o ParseOptions<'a>,
    section: &'static str,
    kind: IdKind,
}

impl<'de> Shape<'de> for SectionShape<'_, '_> {
    type Out = Section;

    fn null(self) -> Result<Section, &'static str> {
        Ok(Section::Null)
    }
    fn list<A: SeqAccess<'de>>(self, seq: A) -> Result<Result<Section, &'static str>, A::Error> {
        let at = Place {
            kind: self.kind,
            section: self.section,
            name: None,
        };
        read_items(seq, &at, self.opts).map(|b| Ok(Section::List(b)))
    }
    fn object<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> Result<Result<Section, &'static str>, A::Error> {
        if !self.kind.has_name() {
            return Skip.visit_map(map).map(|_| Err("an object"));
        }
        let mut by_name = BTreeMap::new();
        while let Some(name) = map.next_key_seed(KeySeed(str::to_string))? {
            let items = map.next_value_seed(Shaped(NamedShape {
                opts: self.opts,
                at: Place {
                    kind: self.kind,
                    section: self.section,
                    name: Some(name.as_str()),
                },
            }))?;
            by_name.insert(name, items);
        }
        Ok(Ok(Section::ByName(by_name)))
    }
}

/// The items of one name of a named section.
struct NamedShape<'o, 'a, 'n> {
    opts: &'o ParseOptions<'a>,
    at: Place<'n>,
}

impl<'de> Shape<'de> for NamedShape<'_, '_, '_> {
    type Out = Block;

    fn list<A: SeqAccess<'de>>(self, seq: A) -> Result<Result<Block, &'static str>, A::Error> {
        read_items(seq, &self.at, self.opts).map(Ok)
    }
}

fn read_items<'de, A: SeqAccess<'de>>(
    mut seq: A,
    at: &Place<'_>,
    opts: &ParseOptions<'_>,
) -> Result<Block, A::Error> {
    let mut block = Block::default();
    let mut index = 0;
    while let Some(item) = seq.next_element_seed(Shaped(ItemShape(at.kind)))? {
        block.item(at, opts, index, item);
        index += 1;
    }
    Ok(block)
}

/// One item of a section of `kind` (which decides its value fields).
struct ItemShape(IdKind);

impl<'de> Shape<'de> for ItemShape {
    type Out = Item<'de>;

    fn string(self, v: Cow<'de, str>) -> Result<Item<'de>, &'static str> {
        Ok(Item::Str(v))
    }
    fn object<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> Result<Result<Item<'de>, &'static str>, A::Error> {
        let mut fields = ItemFields::default();
        let kind = self.0;
        while let Some(key) = map.next_key_seed(KeySeed(|k: &str| item_field(kind, k)))? {
            match key {
                Some((group, rank))
                    if fields.0[group]
                        .as_ref()
                        .is_none_or(|(counted, _)| rank <= *counted) =>
                {
                    fields.0[group] = Some((rank, map.next_value_seed(FieldSeed)?));
                }
                _ => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(Ok(Item::Obj(fields)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn p(body: &str, names: &[&str]) -> Result<AttackList, ParseError> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        parse(
            body.as_bytes(),
            ParseOptions {
                now_ms: NOW,
                api_key_names: &names,
            },
        )
    }

    fn ids(l: &AttackList) -> Vec<String> {
        l.entries.iter().map(|(i, e)| format!("{i} @{e}")).collect()
    }

    #[test]
    fn section_form_strings_and_objects() {
        let l = p(
            r#"{"attacklist": {
                "ips": ["192.168.4.10", {"ip": "10.0.0.0/8", "expiry": "2100-01-01T00:00:00Z"}],
                "cookies": {"JSESSIONID": ["c1", {"value": "c2", "ttl": 60}]},
                "oauth_tokens": ["t1"],
                "api_keys": [{"api_key": "k1", "name": "X-Api-Key"}, "k2"],
                "usernames": [{"username": "bob", "expires_at": 4102444800}],
                "extra": {"ignored": true}
            }, "message": "Success"}"#,
            &["X-Api-Key", "key"],
        )
        .unwrap();
        assert_eq!(
            ids(&l),
            vec![
                "ip 192.168.4.10 @0",
                "ip 10.0.0.0/8 @4102444800000",
                "cookie JSESSIONID c1 @0",
                format!("cookie JSESSIONID c2 @{}", NOW + 3_600_000).as_str(),
                "token t1 @0",
                "api_key X-Api-Key k1 @0",
                "api_key X-Api-Key k2 @0",
                "api_key key k2 @0",
                "username bob @4102444800000",
            ]
        );
        assert_eq!((l.bad_items, l.expired_items), (0, 0));
    }

    #[test]
    fn attack_report_form_as_documented() {
        let l = p(
            r#"{"company": "ping identity", "cookie": "JSESSIONID", "api_name": "atm_app_public",
                "ips": [{"ip": "1.2.3.4", "details": [{"access_time": "Fri Jan 26 21:17:10:662 2018", "attack_code": "method"}]}],
                "cookies": [{"cookie": "session_method", "details": []}, {"cookie": "other", "name": "PHPSESSID"}],
                "access_tokens": [{"access_token": "token_protocol", "details": []}]}"#,
            &[],
        )
        .unwrap();
        assert_eq!(
            ids(&l),
            vec![
                "ip 1.2.3.4 @0",
                "cookie JSESSIONID session_method @0",
                "cookie PHPSESSID other @0",
                "token token_protocol @0",
            ]
        );
    }

    #[test]
    fn bad_and_expired_items_are_counted_and_skipped() {
        let l = p(
            r#"{"ips": ["not-an-ip", 7, {"ip": "1.1.1.1", "expiry": 1000}, {"ip": "2.2.2.2", "expiry": "yesterday"},
                        {"ip": "3.3.3.3", "ttl": 5, "detected_at": "2000-01-01T00:00:00Z"}, "4.4.4.4"],
                "cookies": ["no-name"], "api_keys": ["unnamed"], "usernames": ["", {"user": "x"}]}"#,
            &[],
        )
        .unwrap();
        assert_eq!(ids(&l), vec!["ip 4.4.4.4 @0"]);
        assert_eq!(l.bad_items, 7);
        assert_eq!(l.expired_items, 2);
        assert!(
            l.first_bad.as_deref().unwrap().starts_with("ips[0]"),
            "{:?}",
            l.first_bad
        );
    }

    #[test]
    fn bad_item_messages_never_carry_secret_values() {
        let l = p(r#"{"oauth_tokens": [{"token": "s3cret", "expiry": []}], "cookies": {"C": [{"cookie": "s3cret", "ttl": "x"}]}}"#, &[]).unwrap();
        assert_eq!(l.bad_items, 2);
        assert!(!l.first_bad.unwrap().contains("s3cret"));
    }

    #[test]
    fn whole_body_refusals() {
        for (body, want) in [
            ("not json", "not valid JSON"),
            ("[1,2]", "expected an object"),
            (r#"{"message": "Error: no data"}"#, "no attack-list section"),
            (r#"{"ips": "1.2.3.4"}"#, "ips is a string"),
            (r#"{"usernames": {"a": ["b"]}}"#, "usernames is an object"),
            (
                r#"{"cookies": {"JSESSIONID": "v"}}"#,
                "cookies.JSESSIONID is a string",
            ),
            (r#"{"attacklist": []}"#, "attacklist is a list"),
            (r#"{"cookie": 5, "ips": []}"#, "cookie is a number"),
        ] {
            let e = p(body, &[]).unwrap_err().to_string();
            assert!(e.contains(want), "{body}: {e}");
        }
        assert_eq!(
            p(r#"{"ips": [], "cookies": null}"#, &[]).unwrap(),
            AttackList::default()
        );
    }

    #[test]
    fn a_top_level_cookie_after_the_list_names_its_items_in_order() {
        let l = p(
            r#"{"cookies": [{"cookie": "a"}, {"cookie": "b", "name": "X"}, " c ", {"cookie": ""}],
                "cookie": "FIRST", "cookie": "JSESSIONID"}"#,
            &[],
        )
        .unwrap();
        assert_eq!(
            ids(&l),
            vec![
                "cookie JSESSIONID a @0",
                "cookie X b @0",
                "cookie JSESSIONID c @0"
            ]
        );
        assert_eq!(l.bad_items, 1);
        assert_eq!(l.first_bad.as_deref(), Some("cookies[3]: empty value"));

        // Without a top-level name, the first bad item is still the first in
        // the list, though its fault shows only at the end of the object.
        let l = p(
            r#"{"cookies": [{"cookie": "a"}, 5, {"cookie": "b", "name": "X"}]}"#,
            &[],
        )
        .unwrap();
        assert_eq!(ids(&l), vec!["cookie X b @0"]);
        assert_eq!(l.bad_items, 2);
        assert_eq!(
            l.first_bad.as_deref(),
            Some("cookies[0]: cookie without a name")
        );
    }

    #[test]
    fn entries_come_in_section_order_and_a_repeated_key_counts_once() {
        let l = p(
            r#"{"usernames": ["u", ""], "ips": ["1.1.1.1", "bad"],
                "cookies": {"b": ["x"], "A": ["y"], "b": ["z"]}, "ips": ["2.2.2.2"]}"#,
            &[],
        )
        .unwrap();
        assert_eq!(
            ids(&l),
            vec![
                "ip 2.2.2.2 @0",
                "cookie A y @0",
                "cookie b z @0",
                "username u @0"
            ]
        );
        assert_eq!(l.bad_items, 1);
        assert_eq!(l.first_bad.as_deref(), Some("usernames[1]: empty value"));
        let l = p(r#"{"usernames": [""], "ips": ["bad"]}"#, &[]).unwrap();
        assert!(l.first_bad.unwrap().starts_with("ips[0]: "));
        // An item field given twice counts its last value; of a group, the
        // field listed first counts wherever it stands.
        let l = p(
            r#"{"ips": [{"ip": "3.3.3.3", "value": "4.4.4.4", "ip": "5.5.5.5",
                         "expires": 1000, "expiry": 0}]}"#,
            &[],
        )
        .unwrap();
        assert_eq!(ids(&l), vec!["ip 4.4.4.4 @0"]);
    }

    #[test]
    fn attacklist_wins_over_the_sections_beside_it() {
        let l = p(
            r#"{"ips": ["1.1.1.1"], "cookie": 5, "attacklist": {"usernames": ["u"]}, "tokens": "t"}"#,
            &[],
        )
        .unwrap();
        assert_eq!(ids(&l), vec!["username u @0"]);
        let e = p(r#"{"attacklist": {"ips": []}, "attacklist": 3}"#, &[]).unwrap_err();
        assert_eq!(
            e,
            ParseError::Shape("attacklist is a number, expected an object".into())
        );
    }

    #[test]
    fn a_body_that_is_not_json_is_refused_as_such_whatever_its_shape() {
        for body in [
            r#"{"ips": "x", "#,
            r#"{"ips": "x"} trailing"#,
            r#"{"ips": [], "extra": 1e400}"#,
            r#"{"ips": [{"ip": "1.1.1.1", "details": ["\ud800"]}]}"#,
        ] {
            assert!(
                matches!(p(body, &[]), Err(ParseError::NotJson(_))),
                "{body}"
            );
        }
    }

    #[test]
    fn limit_memory_keeps_a_prefix_that_fits() {
        let mut l = p(r#"{"ips": ["1.1.1.1", "2.2.2.2"], "tokens": ["t3"]}"#, &[]).unwrap();
        let ip = entry_cost(IdKind::Ip, 0, 7);
        let all = 2 * ip + entry_cost(IdKind::Token, 0, 2);
        assert_eq!(
            l.clone().limit_memory(all),
            MemoryFit {
                bytes: all,
                dropped: 0
            }
        );
        let fit = l.limit_memory(all - 1);
        assert_eq!(
            fit,
            MemoryFit {
                bytes: 2 * ip,
                dropped: 1
            }
        );
        assert_eq!(ids(&l), vec!["ip 1.1.1.1 @0", "ip 2.2.2.2 @0"]);
        assert_eq!(
            l.limit_memory(0),
            MemoryFit {
                bytes: 0,
                dropped: 2
            }
        );
        assert!(l.entries.is_empty());
    }

    #[test]
    fn time_formats() {
        assert_eq!(
            time_ms(&serde_json::json!(1_700_000_000)),
            Ok(1_700_000_000_000)
        );
        assert_eq!(
            time_ms(&serde_json::json!(1_700_000_000_123u64)),
            Ok(1_700_000_000_123)
        );
        assert_eq!(
            time_ms(&serde_json::json!("1700000000")),
            Ok(1_700_000_000_000)
        );
        assert_eq!(time_ms(&serde_json::json!(0)), Ok(0));
        assert!(time_ms(&serde_json::json!(-5)).is_err());
        assert!(time_ms(&serde_json::json!("99999999999999999999999")).is_err());
    }
}
