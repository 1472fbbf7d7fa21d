//! One API as its JSON defines it: the types the engine reads, and
//! [`Api::parse`], which checks each part of the JSON and compiles what
//! the request path needs.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use super::json::{self, DecoyJson, JwtJson, PatternJson, RedirectJson};
use super::path::{trim_slash, under};
use crate::policy::bytes;
use crate::policy::headers::{HeaderPlan, slot};
use crate::policy::ident::{IdKind, KeyPrefix};

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

/// Protocol bits for `protocol_allowed`.
pub mod proto {
    use crate::policy::bytes;

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
        let w = (s.len(), bytes::lower8(bytes::short_word(s)));
        let name = |n: &[u8]| (n.len(), bytes::short_word(n));
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
        let m = json::read(json).map_err(err)?;
        let hostname = hostname(&m.hostname).map_err(err)?;
        let url = base_url(&m.url).map_err(err)?;
        let pattern = match m.api_pattern_enforcement {
            None => None,
            Some(p) => Some(pattern(p).map_err(err)?),
        };
        let decoy = match m.decoy_config {
            Some(d) if d.decoy_enabled => Some(decoy(d, &url)),
            _ => None,
        };
        let jwt = match m.jwt {
            None => None,
            Some(j) => jwt(j).map_err(err)?,
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

/// A field trimmed, `None` when that leaves nothing.
fn opt(s: &str) -> Option<String> {
    (!s.trim().is_empty()).then(|| s.trim().to_string())
}

/// `hostname`, trimmed and lowercase: it must not be empty.
fn hostname(h: &str) -> Result<String, String> {
    let hostname = h.trim().to_ascii_lowercase();
    if hostname.is_empty() {
        return Err("hostname: must not be empty (use \"*\" for any host)".into());
    }
    Ok(hostname)
}

/// `url`, without a trailing `/`: it must start with `/`.
fn base_url(u: &str) -> Result<String, String> {
    if !u.starts_with('/') {
        return Err(format!("url: must start with '/', got {u:?}"));
    }
    Ok(trim_slash(u).to_string())
}

/// `api_pattern_enforcement`: known protocols and a redirect status that
/// is a redirect; the methods and media types as listed, the error answer
/// with its defaults.
fn pattern(p: PatternJson) -> Result<Pattern, String> {
    let protocols = protocols_allowed(&p.protocol_allowed)?;
    let redirect = https_redirect(p.http_redirect)?;
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
    Ok(Pattern {
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

/// `protocol_allowed`: a comma-separated list of `http`, `https`, `ws` and
/// `wss` (any case), as [`proto`] bits; 0 when empty.
fn protocols_allowed(list: &str) -> Result<u8, String> {
    let mut protocols = 0;
    for w in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let b = proto::bit(w.as_bytes());
        if b == 0 {
            return Err(format!(
                "api_pattern_enforcement.protocol_allowed: unknown protocol {w:?} (http, https, ws, wss)"
            ));
        }
        protocols |= b;
    }
    Ok(protocols)
}

/// `http_redirect`: set when it has a status or a URL, and then its status
/// must be a 3xx redirect (301 when not given).
fn https_redirect(r: Option<RedirectJson>) -> Result<Option<Redirect>, String> {
    let redirect = r.and_then(|r| {
        let set = r.response_code.0.is_some() || !r.https_url.is_empty();
        set.then(|| Redirect {
            status: r.response_code.0.unwrap_or(301),
            reason: opt(&r.response_def).unwrap_or_else(|| "Moved Permanently".into()),
            url: r.https_url.trim().to_string(),
        })
    });
    if let Some(r) = &redirect {
        if !(300..400).contains(&r.status) {
            return Err(
                "api_pattern_enforcement.http_redirect.response_code: must be a 3xx redirect status"
                    .into(),
            );
        }
    }
    Ok(redirect)
}

/// An enabled `decoy_config`: each subpath made a full path (one not
/// already under `url` is taken as relative to it), the answer with its
/// defaults.
fn decoy(d: DecoyJson, url: &str) -> Decoy {
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
    Decoy {
        response: Response {
            status,
            reason: opt(&d.response_def).unwrap_or_else(|| default_reason(status).into()),
            body: d.response_message,
        },
        subpaths,
    }
}

/// `jwt`: none when neither a location nor a user claim is given; else a
/// known location (`h:authorization:bearer`, `h:<header>`, `qs:<name>`)
/// and a user claim, which must differ from the client-id claim.
fn jwt(j: JwtJson) -> Result<Option<Jwt>, String> {
    if j.location.trim().is_empty() && j.username.trim().is_empty() {
        return Ok(None);
    }
    let loc = j.location.trim();
    let location = if loc.eq_ignore_ascii_case("h:authorization:bearer") {
        JwtLocation::Bearer
    } else if let Some(h) = loc.strip_prefix("h:").filter(|h| !h.is_empty()) {
        JwtLocation::Header(h.to_string())
    } else if let Some(q) = loc.strip_prefix("qs:").filter(|q| !q.is_empty()) {
        JwtLocation::Query(q.to_string())
    } else {
        return Err(format!(
            "jwt.location: expected h:authorization:bearer, h:<header> or qs:<name>, got {loc:?}"
        ));
    };
    if j.username.trim().is_empty() {
        return Err("jwt.username: the claim name must not be empty".into());
    }
    if j.username == j.clientid {
        return Err("jwt.username and jwt.clientid must differ".into());
    }
    Ok(Some(Jwt {
        location,
        username: j.username.trim().to_string(),
        clientid: j.clientid.trim().to_string(),
    }))
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

/// The media type of a `Content-Type` value: before any `;`, trimmed.
pub(crate) fn media_type(v: &[u8]) -> &[u8] {
    let end = v.iter().position(|&c| c == b';').unwrap_or(v.len());
    v[..end].trim_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// ASE's documented full inline example: every field must parse.
    const FULL: &str = r#"{ "api_metadata": {
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
}
