//! API definitions (ASE's `api_metadata` JSON) and request-to-API matching.
//!
//! Every field of ASE's inline and sideband API JSON parses (unknown fields are
//! ignored, a field of the wrong type is an error naming the file and the
//! field); the fields that decide blocking are compiled into [`Api`].
//!
//! Matching, where ASE's documentation is silent, follows DESIGN.md §2: the
//! exact hostname (case-insensitive, port ignored) before `*`, then the
//! longest `url` prefix on a `/` boundary. Paths compare case-sensitively,
//! after the query string is cut off and `%XX`, `//`, `.` and `..` are
//! normalised, so `/shop/../admin` and `/%61dmin` reach the same API as
//! `/admin`.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use serde::Deserialize;

use super::bytes;
use super::decode::{self, Plus};
use super::headers::{HeaderPlan, slot};
use super::hash::{Hashed, hash_prefix, random_secret};
use super::ident::{IdKind, KeyPrefix};

/// A bad API JSON file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// The API name (file name without `.json`).
    pub api: String,
    /// What is wrong, naming the field.
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "API {}: {}", self.api, self.message)
    }
}

impl std::error::Error for ApiError {}

/// A status code given as a number (`200`) or a string (`"401"`); `""` means unset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Code(Option<u16>);

impl<'de> Deserialize<'de> for Code {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Code, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        let bad = || serde::de::Error::custom("expected an HTTP status code from 100 to 599");
        match Raw::deserialize(d).map_err(|_| bad())? {
            Raw::N(n) if (100..=599).contains(&n) => Ok(Code(Some(n as u16))),
            Raw::S(s) if s.trim().is_empty() => Ok(Code(None)),
            Raw::S(s) => match s.trim().parse::<u16>() {
                Ok(n) if (100..=599).contains(&n) => Ok(Code(Some(n))),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

#[allow(
    dead_code,
    reason = "fields parsed to validate ASE's format; not every one acts in-process"
)]
#[derive(Deserialize)]
struct Meta {
    #[serde(default)]
    protocol: String,
    url: String,
    hostname: String,
    #[serde(default)]
    cookie: String,
    #[serde(default)]
    cookie_idle_timeout: String,
    #[serde(default)]
    logout_api_enabled: bool,
    #[serde(default)]
    cookie_persistence_enabled: bool,
    #[serde(default)]
    oauth2_access_token: bool,
    #[serde(default)]
    is_token_mandatory: bool,
    #[serde(default)]
    apikey_qs: String,
    #[serde(default)]
    apikey_header: String,
    #[serde(default)]
    login_url: String,
    #[serde(default = "yes")]
    enable_blocking: bool,
    #[serde(default)]
    api_mapping: Option<ApiMapping>,
    #[serde(default)]
    api_pattern_enforcement: Option<PatternJson>,
    #[serde(default)]
    flow_control: Option<FlowControl>,
    #[serde(default)]
    api_memory_size: String,
    #[serde(default)]
    health_check: bool,
    #[serde(default)]
    health_check_interval: Option<u64>,
    #[serde(default)]
    health_retry_count: Option<u64>,
    #[serde(default)]
    health_url: String,
    #[serde(default)]
    server_ssl: bool,
    #[serde(default)]
    servers: Vec<Server>,
    #[serde(default)]
    decoy_config: Option<DecoyJson>,
    #[serde(default)]
    username_header: String,
    #[serde(default)]
    jwt: Option<JwtJson>,
}

fn yes() -> bool {
    true
}

#[allow(dead_code, reason = "parsed for validation only")]
#[derive(Deserialize)]
struct ApiMapping {
    #[serde(default)]
    internal_url: String,
}

#[allow(dead_code, reason = "parsed for validation only")]
#[derive(Deserialize)]
struct FlowControl {
    #[serde(default)]
    client_spike_threshold: String,
    #[serde(default)]
    server_connection_queueing: bool,
}

#[allow(dead_code, reason = "parsed for validation only")]
#[derive(Deserialize)]
struct Server {
    host: String,
    port: u16,
    #[serde(default)]
    server_connection_quota: Option<u64>,
    #[serde(default)]
    server_spike_threshold: String,
}

#[derive(Deserialize)]
struct PatternJson {
    #[serde(default)]
    protocol_allowed: String,
    #[serde(default)]
    http_redirect: Option<RedirectJson>,
    #[serde(default)]
    methods_allowed: Vec<String>,
    #[serde(default)]
    content_type_allowed: String,
    #[serde(default)]
    error_code: Code,
    #[serde(default)]
    error_def: String,
    #[serde(default)]
    error_message_body: String,
}

#[derive(Deserialize)]
struct RedirectJson {
    #[serde(default)]
    response_code: Code,
    #[serde(default)]
    response_def: String,
    #[serde(default)]
    https_url: String,
}

#[derive(Deserialize)]
struct DecoyJson {
    #[serde(default)]
    decoy_enabled: bool,
    #[serde(default)]
    response_code: Code,
    #[serde(default)]
    response_def: String,
    #[serde(default)]
    response_message: String,
    #[serde(default)]
    decoy_subpaths: Vec<String>,
}

#[derive(Deserialize)]
struct JwtJson {
    #[serde(default)]
    location: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    clientid: String,
}

/// Protocol bits for `protocol_allowed`.
pub mod proto {
    /// `http`
    pub const HTTP: u8 = 1;
    /// `https`
    pub const HTTPS: u8 = 2;
    /// `ws`
    pub const WS: u8 = 4;
    /// `wss`
    pub const WSS: u8 = 8;
    /// Every scheme.
    pub const ANY: u8 = HTTP | HTTPS | WS | WSS;

    /// The bit of a scheme word, any case.
    pub fn bit(s: &[u8]) -> u8 {
        if s.len() > 5 {
            return 0;
        }
        // One lowercased word against the four names (zero-padded; the
        // length tells `http` from `http\0`).
        let w = (s.len(), super::bytes::lower8(super::bytes::short_word(s)));
        let name = |n: &[u8]| (n.len(), super::bytes::short_word(n));
        if w == name(b"http") {
            HTTP
        } else if w == name(b"https") {
            HTTPS
        } else if w == name(b"ws") {
            WS
        } else if w == name(b"wss") {
            WSS
        } else {
            0
        }
    }
}

/// A method of up to seven bytes as one word: its bytes, and its length in
/// the top byte (so `GET` and `GET\0` differ).
fn method_word(m: &[u8]) -> Option<u64> {
    (m.len() < 8).then(|| bytes::short_word(m) | (m.len() as u64) << 56)
}

impl Pattern {
    /// Whether `method` (exact, case-sensitive) is in `methods_allowed`.
    /// Inline, with the rare long method out of line: the common case is a
    /// word built from the method and a scan of a few words, no call.
    #[inline]
    pub fn allows_method(&self, method: &[u8]) -> bool {
        match method_word(method) {
            Some(w) => self.method_words.contains(&w),
            None => self.allows_long_method(method),
        }
    }

    /// [`Pattern::allows_method`] for a method of eight bytes or more (never
    /// empty, so `==` may call `memcmp`).
    #[cold]
    #[inline(never)]
    fn allows_long_method(&self, method: &[u8]) -> bool {
        self.methods.iter().any(|m| m.as_bytes() == method)
    }
}

/// A response the engine answers with instead of the backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Reason phrase (`response_def` / `error_def`).
    pub reason: String,
    /// Body.
    pub body: String,
}

/// The HTTPS redirect of an API that allows only HTTPS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// Status (default 301).
    pub status: u16,
    /// Reason phrase (default `Moved Permanently`).
    pub reason: String,
    /// Target; empty means `https://` + the request's host and URI.
    pub url: String,
}

/// API pattern enforcement (`api_pattern_enforcement`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    /// Allowed schemes as [`proto`] bits; 0 = not enforced.
    pub protocols: u8,
    /// Redirect HTTP to HTTPS instead of answering the error.
    pub redirect: Option<Redirect>,
    /// Allowed methods, exact; empty = not enforced.
    pub methods: Vec<String>,
    /// The methods of up to seven bytes as one word each ([`method_word`]):
    /// a request's method is compared without a `memcmp` call.
    pub(crate) method_words: Vec<u64>,
    /// Allowed media types, lowercase; empty = not enforced.
    pub content_types: Vec<String>,
    /// The answer to a violation (default `403 Forbidden`).
    pub error: Response,
}

/// Where a JWT is read from (`jwt.location`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwtLocation {
    /// `h:authorization:bearer`: the bearer token of `Authorization`.
    Bearer,
    /// `h:<header>`: a header's value (a `Bearer ` prefix is skipped).
    Header(String),
    /// `qs:<key>`: a query-string parameter.
    Query(String),
}

/// JWT user extraction (`jwt`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Jwt {
    /// Where the JWT is.
    pub location: JwtLocation,
    /// The claim holding the user name.
    pub username: String,
    /// The claim holding the client id.
    pub clientid: String,
}

/// Deception: decoy paths and their answer (`decoy_config`, when enabled).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoy {
    /// The answer.
    pub response: Response,
    /// Full decoy paths (in-context); empty = the whole API is a decoy (out-of-context).
    pub subpaths: Vec<String>,
}

/// One API, compiled from its JSON. The fields are for reading: what the
/// request path uses (header plan, key prefixes, method words) is prepared
/// from them by [`Api::parse`], so changing one afterwards has no effect.
#[derive(Debug)]
pub struct Api {
    /// The name: the file name without `.json`.
    pub name: String,
    /// Host, lowercase; `*` for any.
    pub hostname: String,
    /// Base path, without a trailing `/` (except `/` itself).
    pub url: String,
    /// `protocol` as written (`http`, `https`, `ws`).
    pub protocol: String,
    /// Name of the session cookie, if any.
    pub cookie: Option<String>,
    /// Whether the OAuth2 bearer token is an identifier.
    pub oauth2_access_token: bool,
    /// Query-string parameter carrying the API key.
    pub apikey_qs: Option<String>,
    /// Header carrying the API key.
    pub apikey_header: Option<String>,
    /// Header carrying the user name.
    pub username_header: Option<String>,
    /// JWT user extraction.
    pub jwt: Option<Jwt>,
    /// Pattern enforcement.
    pub pattern: Option<Pattern>,
    /// List-key prefixes of the cookie and the API key names, hashed once
    /// here rather than on every request.
    pub(crate) cookie_key: Option<KeyPrefix>,
    pub(crate) apikey_header_key: Option<KeyPrefix>,
    pub(crate) apikey_qs_key: Option<KeyPrefix>,
    /// The request headers this API reads, prepared for one pass.
    pub(crate) headers: HeaderPlan,
    /// Deception.
    pub decoy: Option<Decoy>,
    /// `enable_blocking` as written in the file.
    pub enable_blocking_default: bool,
    enable_blocking: AtomicBool,
}

impl Api {
    /// Parses one API JSON document. `name` is the API name (file name without `.json`).
    pub fn parse(name: &str, json: &[u8]) -> Result<Api, ApiError> {
        let err = |message: String| ApiError {
            api: name.to_string(),
            message,
        };
        let doc: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| err(format!("invalid JSON: {e}")))?;
        let Some(meta) = doc.get("api_metadata").filter(|m| m.is_object()) else {
            return Err(err(
                "api_metadata: missing; expected {\"api_metadata\": {...}}".into(),
            ));
        };
        let m: Meta = serde_path_to_error::deserialize(meta).map_err(|e| {
            let path = e.path().to_string();
            let at = if path == "." {
                String::new()
            } else {
                format!(".{path}")
            };
            err(format!("api_metadata{at}: {}", e.into_inner()))
        })?;
        let hostname = m.hostname.trim().to_ascii_lowercase();
        if hostname.is_empty() {
            return Err(err(
                "hostname: must not be empty (use \"*\" for any host)".into()
            ));
        }
        if !m.url.starts_with('/') {
            return Err(err(format!("url: must start with '/', got {:?}", m.url)));
        }
        let url = trim_slash(&m.url).to_string();
        let opt = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());

        let pattern = match m.api_pattern_enforcement {
            None => None,
            Some(p) => {
                let mut protocols = 0;
                for w in p
                    .protocol_allowed
                    .split(',')
                    .map(str::trim)
                    .filter(|w| !w.is_empty())
                {
                    let b = proto::bit(w.as_bytes());
                    if b == 0 {
                        return Err(err(format!(
                            "api_pattern_enforcement.protocol_allowed: unknown protocol {w:?} (http, https, ws, wss)"
                        )));
                    }
                    protocols |= b;
                }
                let redirect = p.http_redirect.and_then(|r| {
                    let set = r.response_code.0.is_some() || !r.https_url.is_empty();
                    set.then(|| Redirect {
                        status: r.response_code.0.unwrap_or(301),
                        reason: opt(&r.response_def).unwrap_or_else(|| "Moved Permanently".into()),
                        url: r.https_url.trim().to_string(),
                    })
                });
                if let Some(r) = &redirect {
                    if !(300..400).contains(&r.status) {
                        return Err(err(
                            "api_pattern_enforcement.http_redirect.response_code: must be a 3xx redirect status"
                                .into(),
                        ));
                    }
                }
                let methods: Vec<String> = p
                    .methods_allowed
                    .iter()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                let content_types = p
                    .content_type_allowed
                    .split(',')
                    .map(|s| media_type(s.as_bytes()))
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase())
                    .collect();
                let status = p.error_code.0.unwrap_or(403);
                Some(Pattern {
                    protocols,
                    redirect,
                    method_words: methods
                        .iter()
                        .filter_map(|m| method_word(m.as_bytes()))
                        .collect(),
                    methods,
                    content_types,
                    error: Response {
                        status,
                        reason: opt(&p.error_def).unwrap_or_else(|| default_reason(status).into()),
                        body: if p.error_message_body.is_empty() {
                            format!(
                                "{} {}",
                                status,
                                opt(&p.error_def).unwrap_or_else(|| default_reason(status).into())
                            )
                        } else {
                            p.error_message_body
                        },
                    },
                })
            }
        };

        let decoy = match m.decoy_config {
            Some(d) if d.decoy_enabled => {
                let status = d.response_code.0.unwrap_or(200);
                let mut subpaths = Vec::new();
                for s in d
                    .decoy_subpaths
                    .iter()
                    .map(|s| s.trim())
                    .filter(|s| !s.is_empty())
                {
                    let full = if under(s.as_bytes(), url.as_bytes()) {
                        trim_slash(s).to_string()
                    } else {
                        let rel = s.trim_start_matches('/');
                        trim_slash(&format!("{}/{}", url.trim_end_matches('/'), rel)).to_string()
                    };
                    subpaths.push(full);
                }
                Some(Decoy {
                    response: Response {
                        status,
                        reason: opt(&d.response_def)
                            .unwrap_or_else(|| default_reason(status).into()),
                        body: d.response_message,
                    },
                    subpaths,
                })
            }
            _ => None,
        };

        let jwt = match m.jwt {
            None => None,
            Some(j) if j.location.trim().is_empty() && j.username.trim().is_empty() => None,
            Some(j) => {
                let loc = j.location.trim();
                let location = if loc.eq_ignore_ascii_case("h:authorization:bearer") {
                    JwtLocation::Bearer
                } else if let Some(h) = loc.strip_prefix("h:").filter(|h| !h.is_empty()) {
                    JwtLocation::Header(h.to_string())
                } else if let Some(q) = loc.strip_prefix("qs:").filter(|q| !q.is_empty()) {
                    JwtLocation::Query(q.to_string())
                } else {
                    return Err(err(format!(
                        "jwt.location: expected h:authorization:bearer, h:<header> or qs:<name>, got {loc:?}"
                    )));
                };
                if j.username.trim().is_empty() {
                    return Err(err("jwt.username: the claim name must not be empty".into()));
                }
                if j.username == j.clientid {
                    return Err(err("jwt.username and jwt.clientid must differ".into()));
                }
                Some(Jwt {
                    location,
                    username: j.username.trim().to_string(),
                    clientid: j.clientid.trim().to_string(),
                })
            }
        };

        let cookie = opt(&m.cookie);
        let apikey_qs = opt(&m.apikey_qs);
        let apikey_header = opt(&m.apikey_header);
        let prefix =
            |kind, n: &Option<String>| n.as_ref().map(|n| KeyPrefix::new(kind, n.as_bytes()));
        let mut api = Api {
            headers: HeaderPlan::default(),
            cookie_key: prefix(IdKind::Cookie, &cookie),
            apikey_header_key: prefix(IdKind::ApiKey, &apikey_header),
            apikey_qs_key: prefix(IdKind::ApiKey, &apikey_qs),
            name: name.to_string(),
            hostname,
            url,
            protocol: m.protocol,
            cookie,
            oauth2_access_token: m.oauth2_access_token,
            apikey_qs,
            apikey_header,
            username_header: opt(&m.username_header),
            jwt,
            pattern,
            decoy,
            enable_blocking_default: m.enable_blocking,
            enable_blocking: AtomicBool::new(m.enable_blocking),
        };
        api.headers = header_plan(&api);
        Ok(api)
    }

    /// Whether blocking is on for this API (monitor mode when off).
    pub fn blocking(&self) -> bool {
        self.enable_blocking.load(Relaxed)
    }

    /// Turns blocking on or off (`enable_blocking API` / `disable_blocking API`).
    pub fn set_blocking(&self, on: bool) {
        self.enable_blocking.store(on, Relaxed);
    }

    /// Whether `path` (normalised, no query) is a decoy path of this API.
    pub fn is_decoy(&self, path: &[u8]) -> bool {
        match &self.decoy {
            None => false,
            Some(d) if d.subpaths.is_empty() => true,
            Some(d) => d.subpaths.iter().any(|s| under(path, s.as_bytes())),
        }
    }

    /// `list_api` line: `shop ( loaded ), https, decoy: in-context`.
    pub fn list_line(&self) -> String {
        let mut s = format!("{} ( loaded ), {}", self.name, self.protocol);
        if let Some(d) = &self.decoy {
            s.push_str(if d.subpaths.is_empty() {
                ", decoy: out-context"
            } else {
                ", decoy: in-context"
            });
        }
        s
    }
}

/// The headers `api` reads. `X-Forwarded-For` is always among them; a
/// request drops it when `enable_xff` is off.
fn header_plan(api: &Api) -> HeaderPlan {
    let mut want: Vec<(&[u8], u8)> = vec![(b"x-forwarded-for", slot::XFF)];
    let jwt = api.jwt.as_ref().map(|j| &j.location);
    if api.oauth2_access_token || matches!(jwt, Some(JwtLocation::Bearer)) {
        want.push((b"authorization", slot::AUTH));
    }
    if api.cookie_key.is_some() {
        want.push((b"cookie", slot::COOKIE));
    }
    if let Some(k) = &api.apikey_header_key {
        want.push((k.name(), slot::KEY));
    }
    if let Some(u) = &api.username_header {
        want.push((u.as_bytes(), slot::USER));
    }
    if let Some(JwtLocation::Header(n)) = jwt {
        want.push((n.as_bytes(), slot::JWT));
    }
    HeaderPlan::new(&want, api.cookie_key.as_ref().map(|c| c.name()))
}

fn default_reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        415 => "Unsupported Media Type",
        503 => "Service Unavailable",
        _ => "",
    }
}

fn trim_slash(s: &str) -> &str {
    let t = s.trim_end_matches('/');
    if t.is_empty() { "/" } else { t }
}

/// Whether `path` is `base` or below it on a `/` boundary (`/` is above everything).
/// The boundary byte is checked before the bytes, as it settles most
/// misses, and the bytes are compared with [`bytes::same`], not `memcmp`.
#[inline]
pub fn under(path: &[u8], base: &[u8]) -> bool {
    let n = base.len();
    if n == 1 && base[0] == b'/' {
        return true;
    }
    n <= path.len() && (n == path.len() || path[n] == b'/') && bytes::same(&path[..n], base)
}

/// The media type of a `Content-Type` value: before any `;`, trimmed.
pub fn media_type(v: &[u8]) -> &[u8] {
    let end = v.iter().position(|&c| c == b';').unwrap_or(v.len());
    v[..end].trim_ascii()
}

/// A path normalised for matching: the request's own bytes when they need no
/// change (the common case, no copy), else a normalised copy on the stack.
#[allow(
    clippy::large_enum_variant,
    reason = "the copy lives on the request's stack on purpose: the request path never allocates"
)]
pub enum NormPath<'a> {
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
pub const NORM_CAP: usize = 2048;

impl<'a> NormPath<'a> {
    /// Cuts the query string and fragment off `uri`, decodes `%XX`, merges `//`
    /// and resolves `.` and `..` segments. Never allocates. Inline, with the
    /// copy out of line: most paths need none, and then this is one scan
    /// without the copy's stack frame.
    #[inline]
    pub fn new(uri: &'a [u8]) -> NormPath<'a> {
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
    pub fn as_bytes(&self) -> &[u8] {
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
        // The last `:` starts the port (an unbracketed IPv6 address keeps
        // all but its last group, as it always has).
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

#[cfg(test)]
mod tests {
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

    #[test]
    fn methods_match_exactly_whatever_their_length() {
        let j = r#"{"api_metadata":{"url":"/m","hostname":"*",
            "api_pattern_enforcement":{"methods_allowed":["GET","PROPFIND","DELETE"]}}}"#;
        let a = Api::parse("m", j.as_bytes()).unwrap();
        let p = a.pattern.as_ref().unwrap();
        for (m, ok) in [
            ("GET", true),
            ("PROPFIND", true),
            ("DELETE", true),
            ("get", false),
            ("GE", false),
            ("GETX", false),
            ("GET\0", false),
            ("PROPFINDX", false),
            ("", false),
        ] {
            assert_eq!(p.allows_method(m.as_bytes()), ok, "{m:?}");
        }
        for (s, b) in [
            ("http", proto::HTTP),
            ("HTTPS", proto::HTTPS),
            ("Ws", proto::WS),
        ] {
            assert_eq!(proto::bit(s.as_bytes()), b, "{s}");
        }
        for s in ["", "htt", "httpss", "wsss", "http\0"] {
            assert_eq!(proto::bit(s.as_bytes()), 0, "{s:?}");
        }
    }

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

    fn gen_uri(r: &mut Rng) -> String {
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

    /// The reference notes' full inline example: every field must parse.
    pub const FULL: &str = r#"{ "api_metadata": {
      "protocol": "http", "url": "/shopapi", "hostname": "*",
      "cookie": "JSESSIONID", "cookie_idle_timeout": "200m",
      "logout_api_enabled": false, "cookie_persistence_enabled": false,
      "oauth2_access_token": false, "is_token_mandatory": false,
      "apikey_qs": "", "apikey_header": "MyAPIKey",
      "login_url": "/shopapi/login", "enable_blocking": true,
      "api_mapping": { "internal_url": "/app" },
      "api_pattern_enforcement": {
         "protocol_allowed": "",
         "http_redirect": { "response_code": "", "response_def": "", "https_url": "" },
         "methods_allowed": ["GET","PUT","POST","DELETE","HEAD"],
         "content_type_allowed": "application/text",
         "error_code": "401", "error_def": "Unauthorized", "error_message_body": "401 Unauthorized" },
      "flow_control": { "client_spike_threshold": "500/second", "server_connection_queueing": false },
      "api_memory_size": "128mb",
      "health_check": true, "health_check_interval": 60, "health_retry_count": 4, "health_url": "/app/home",
      "server_ssl": false,
      "servers": [ { "host": "10.96.2.31", "port": 4200,
                     "server_connection_quota": 4500, "server_spike_threshold": "200/second" } ],
      "decoy_config": { "decoy_enabled": true, "response_code": 200, "response_def": "200 OK",
                        "response_message": "200 OK",
                        "decoy_subpaths": ["/shopapi/online", "/shopapi/offline"] },
      "username_header": "x-username-header",
      "jwt": { "location": "h:authorization:bearer", "username": "username", "clientid": "client_id" }
    } }"#;

    #[test]
    fn full_example_parses_and_acts() {
        let a = Api::parse("shop", FULL.as_bytes()).unwrap();
        assert_eq!(a.url, "/shopapi");
        assert_eq!(a.cookie.as_deref(), Some("JSESSIONID"));
        assert_eq!(a.apikey_header.as_deref(), Some("MyAPIKey"));
        let p = a.pattern.as_ref().unwrap();
        assert_eq!(p.protocols, 0);
        assert!(p.redirect.is_none());
        assert_eq!(p.methods.len(), 5);
        assert_eq!(p.content_types, vec!["application/text"]);
        assert_eq!(p.error.status, 401);
        assert_eq!(p.error.body, "401 Unauthorized");
        assert!(a.is_decoy(b"/shopapi/online"));
        assert!(a.is_decoy(b"/shopapi/offline/x"));
        assert!(!a.is_decoy(b"/shopapi/onlinex"));
        assert!(!a.is_decoy(b"/shopapi/items"));
        assert_eq!(a.jwt.as_ref().unwrap().location, JwtLocation::Bearer);
        assert_eq!(a.list_line(), "shop ( loaded ), http, decoy: in-context");
    }

    #[test]
    fn wrong_types_and_bad_values_name_the_field() {
        let cases = [
            (
                r#"{"api_metadata":{"url":"/a","hostname":"*","enable_blocking":"yes"}}"#,
                "enable_blocking",
            ),
            (r#"{"api_metadata":{"url":"/a","hostname":""}}"#, "hostname"),
            (r#"{"api_metadata":{"url":"a","hostname":"*"}}"#, "url"),
            (r#"{"api_metadata":{"hostname":"*"}}"#, "url"),
            (
                r#"{"api_metadata":{"url":"/a","hostname":"*","decoy_config":{"decoy_subpaths":"x"}}}"#,
                "decoy_subpaths",
            ),
            (
                r#"{"api_metadata":{"url":"/a","hostname":"*","api_pattern_enforcement":{"methods_allowed":"GET"}}}"#,
                "methods_allowed",
            ),
            (
                r#"{"api_metadata":{"url":"/a","hostname":"*","api_pattern_enforcement":{"protocol_allowed":"gopher"}}}"#,
                "protocol_allowed",
            ),
            (
                r#"{"api_metadata":{"url":"/a","hostname":"*","api_pattern_enforcement":{"error_code":"abc"}}}"#,
                "HTTP status",
            ),
            (
                r#"{"api_metadata":{"url":"/a","hostname":"*","servers":[{"host":"h","port":"x"}]}}"#,
                "port",
            ),
            (
                r#"{"api_metadata":{"url":"/a","hostname":"*","jwt":{"location":"cookie:x","username":"u"}}}"#,
                "jwt.location",
            ),
            (
                r#"{"api_metadata":{"url":"/a","hostname":"*","jwt":{"location":"h:x","username":"u","clientid":"u"}}}"#,
                "differ",
            ),
            (r#"[1,2]"#, "api_metadata"),
            (r#"{"api_metadata":"#, "invalid JSON"),
        ];
        for (json, needle) in cases {
            let e = Api::parse("t", json.as_bytes()).unwrap_err();
            assert!(e.to_string().contains(needle), "{json}: {e}");
        }
        // Unknown fields are ignored.
        Api::parse(
            "t",
            br#"{"api_metadata":{"url":"/a","hostname":"*","future_field":[1]}}"#,
        )
        .unwrap();
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
