//! Parsing an ABS attack-list body into deny-list entries (pure: no I/O).
//!
//! ABS's `GET /v4/abs/attacklist` response is not documented, so two shapes are
//! accepted (DESIGN.md §3), and may be mixed:
//!
//! - **Section form**, as ABS's `PUT /v4/abs/attacklist` body, optionally wrapped
//!   in `{"attacklist": {...}}`:
//!   `{"ips": [..], "cookies": {"NAME": [..]}, "oauth_tokens": [..], "api_keys": [..], "usernames": [..]}`.
//! - **Attack-report form** of `/v4/abs/attack` (seeds/003):
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

use std::fmt;

use serde_json::{Map, Value};

use super::time::parse_rfc3339_ms;
use crate::policy::ident::{IdKind, Identifier};

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

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A point in time: RFC 3339, or Unix seconds / milliseconds. `Ok(0)` = never.
fn time_ms(v: &Value) -> Result<u64, &'static str> {
    match v {
        Value::Null => Ok(0),
        Value::Number(n) => {
            let t = n
                .as_u64()
                .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
                .ok_or("negative time")?;
            // Seconds until the year 5138; anything larger is milliseconds.
            Ok(if t < 100_000_000_000 {
                t.saturating_mul(1000)
            } else {
                t
            })
        }
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => time_ms(
            &Value::Number(s.parse::<u64>().map_err(|_| "time out of range")?.into()),
        ),
        Value::String(s) => {
            parse_rfc3339_ms(s).ok_or("unreadable time (use RFC 3339 or Unix seconds)")
        }
        _ => Err("time of the wrong type"),
    }
}

fn first<'v>(o: &'v Map<String, Value>, fields: &[&str]) -> Option<&'v Value> {
    fields.iter().find_map(|f| o.get(*f))
}

/// Expiry of an object item in Unix ms (0 = never).
fn expiry(o: &Map<String, Value>, now: u64) -> Result<u64, &'static str> {
    if let Some(v) = first(o, EXPIRY_FIELDS) {
        return time_ms(v);
    }
    let Some(ttl) = first(o, TTL_FIELDS) else {
        return Ok(0);
    };
    let minutes = match ttl {
        Value::Null => return Ok(0),
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .ok_or("negative ttl")?,
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| "ttl is not a number of minutes")?,
        _ => return Err("ttl of the wrong type"),
    };
    if minutes == 0 {
        return Ok(0);
    }
    let base = match first(o, DETECTED_FIELDS) {
        Some(v) => match time_ms(v)? {
            0 => now,
            t => t,
        },
        None => now,
    };
    Ok(base.saturating_add(minutes.saturating_mul(60_000)))
}

struct Builder<'a> {
    opts: ParseOptions<'a>,
    out: AttackList,
}

impl Builder<'_> {
    fn bad(&mut self, section: &str, index: usize, why: impl fmt::Display) {
        self.out.bad_items += 1;
        if self.out.first_bad.is_none() {
            self.out.first_bad = Some(format!("{section}[{index}]: {why}"));
        }
    }

    /// One item of a section. `name` is the cookie/API-key name the section gave.
    fn item(
        &mut self,
        section: &str,
        index: usize,
        kind: IdKind,
        name: Option<&str>,
        item: &Value,
    ) {
        let (value, own_name, exp) = match item {
            Value::String(s) => (s.as_str(), None, 0),
            Value::Object(o) => {
                let Some(v) = first(o, value_fields(kind)) else {
                    return self.bad(section, index, "no value field");
                };
                let Some(v) = v.as_str() else {
                    return self.bad(section, index, format!("value is {}", type_name(v)));
                };
                let own_name = match first(o, NAME_FIELDS) {
                    None | Some(Value::Null) => None,
                    Some(Value::String(n)) => Some(n.as_str()),
                    Some(n) => {
                        return self.bad(section, index, format!("name is {}", type_name(n)));
                    }
                };
                match expiry(o, self.opts.now_ms) {
                    Ok(e) => (v, own_name, e),
                    Err(why) => return self.bad(section, index, why),
                }
            }
            other => return self.bad(section, index, format!("item is {}", type_name(other))),
        };
        if exp != 0 && exp <= self.opts.now_ms {
            self.out.expired_items += 1;
            return;
        }
        let name = own_name.filter(|n| !n.is_empty()).or(name);
        let value = value.trim();
        match (kind, name) {
            (IdKind::Cookie, None) => self.bad(section, index, "cookie without a name"),
            (IdKind::ApiKey, None) => {
                if self.opts.api_key_names.is_empty() {
                    return self.bad(
                        section,
                        index,
                        "API key without a name, and no API reads one",
                    );
                }
                for n in self.opts.api_key_names {
                    self.push(section, index, kind, n, value, exp);
                }
            }
            (IdKind::Cookie | IdKind::ApiKey, Some(n)) => {
                self.push(section, index, kind, n, value, exp)
            }
            _ => self.push(section, index, kind, "", value, exp),
        }
    }

    fn push(
        &mut self,
        section: &str,
        index: usize,
        kind: IdKind,
        name: &str,
        value: &str,
        exp: u64,
    ) {
        match Identifier::new(kind, name, value) {
            Ok(id) => self.out.entries.push((id, exp)),
            // IdError's text names a bad IP, never a token, cookie or key value.
            Err(e) => self.bad(section, index, e),
        }
    }

    fn list(&mut self, section: &str, kind: IdKind, name: Option<&str>, items: &[Value]) {
        for (i, it) in items.iter().enumerate() {
            self.item(section, i, kind, name, it);
        }
    }
}

/// Parses an attack-list body. See the module doc for what is accepted.
pub fn parse(body: &[u8], opts: ParseOptions<'_>) -> Result<AttackList, ParseError> {
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| ParseError::NotJson(e.to_string()))?;
    let Value::Object(mut top) = doc else {
        return Err(ParseError::Shape(format!(
            "expected an object, got {}",
            type_name(&doc)
        )));
    };
    let root = match top.remove("attacklist") {
        None => top,
        Some(Value::Object(inner)) => inner,
        Some(other) => {
            return Err(ParseError::Shape(format!(
                "attacklist is {}, expected an object",
                type_name(&other)
            )));
        }
    };
    let default_cookie = match root.get("cookie") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.as_str()),
        Some(Value::String(_)) => None,
        Some(other) => {
            return Err(ParseError::Shape(format!(
                "cookie is {}, expected a cookie name",
                type_name(other)
            )));
        }
    };
    if !SECTIONS.iter().any(|(s, _)| root.contains_key(*s)) {
        let names: Vec<&str> = SECTIONS.iter().map(|(s, _)| *s).collect();
        return Err(ParseError::Shape(format!(
            "no attack-list section ({})",
            names.join(", ")
        )));
    }
    let mut b = Builder {
        opts,
        out: AttackList::default(),
    };
    for &(section, kind) in SECTIONS {
        match root.get(section) {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                let name = if kind == IdKind::Cookie {
                    default_cookie
                } else {
                    None
                };
                b.list(section, kind, name, items);
            }
            Some(Value::Object(by_name)) if kind.has_name() => {
                for (name, items) in by_name {
                    let Value::Array(items) = items else {
                        return Err(ParseError::Shape(format!(
                            "{section}.{name} is {}, expected a list",
                            type_name(items)
                        )));
                    };
                    let sect = format!("{section}.{name}");
                    b.list(&sect, kind, Some(name.as_str()), items);
                }
            }
            Some(other) => {
                let want = if kind.has_name() {
                    "a list or an object of lists"
                } else {
                    "a list"
                };
                return Err(ParseError::Shape(format!(
                    "{section} is {}, expected {want}",
                    type_name(other)
                )));
            }
        }
    }
    Ok(b.out)
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
    fn attack_report_form_of_seed_003() {
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
