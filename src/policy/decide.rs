//! The decision for one request, step by step as docs/design.md,
//! Decision order, gives it.
//!
//! [`decide`] is pure: it reads the APIs, the two lists and the switches, and
//! returns a [`Decision`] plus, when the request is a real-time attack, the
//! [`Detection`] the engine should record. It never allocates.

use super::api::{Api, ApiSet, NormPath, Response, media_type, proto};
use super::config::UnknownApi;
use super::extract::{
    Beyond, Headers, Ids, Scratch, each_occurrence, extract_all, header, kind_bit,
};
use super::ident::{IdKind, KeyPrefix, KeyRef, MAX_FIELD};
use super::lists::{Meta, Source};
use super::overlay::Lists;
use super::switches::Switches;

/// What the host must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Action {
    /// Let the request go on.
    Allow = 0,
    /// Refuse it with `status` and `body` (403 `Error: Unauthorized`, 400
    /// `Error: Bad Request`, 503 `Error: Unknown API`).
    Block = 1,
    /// Answer it with the API's decoy or pattern-error response.
    Respond = 2,
    /// Redirect to `location` (HTTPS-only API).
    Redirect = 3,
}

/// Why. The numbering is part of the C ABI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Reason {
    /// Nothing matched: allowed.
    None = 0,
    /// `enable_firewall` is off.
    FirewallOff = 1,
    /// No API matches the host and path.
    UnknownApi = 2,
    /// An identifier is on the allow list.
    AllowList = 3,
    /// The path is a decoy.
    Decoy = 4,
    /// An identifier is on the deny list (`source` says which part).
    DenyList = 5,
    /// The scheme is not in `protocol_allowed`.
    Protocol = 6,
    /// The method is not in `methods_allowed`.
    Method = 7,
    /// The `Content-Type` is not in `content_type_allowed`.
    ContentType = 8,
    /// The engine could not load its state and `fail_mode` decided.
    FailMode = 9,
    /// An identifier kind occurs more than
    /// [`MAX_OCCURRENCES`](super::extract::MAX_OCCURRENCES) times, or (with
    /// `duplicate_identifiers = reject`) with different values or in a JWT
    /// too large to read (`matched` says which kind).
    DuplicateIdentifier = 10,
}

impl Reason {
    /// Number of reasons: the size of per-reason counter arrays (the C ABI
    /// checks it against its own count and every variant's value).
    pub const COUNT: usize = Reason::DuplicateIdentifier as usize + 1;
}

/// One request as the host sees it. All fields are raw bytes.
pub struct Request<'a, H: Headers + ?Sized> {
    /// The connection's client address, parsed; `None` when unknown.
    pub client_ip: Option<u128>,
    /// Method, e.g. `GET`.
    pub method: &'a [u8],
    /// `http` or `https` (`ws`, `wss`).
    pub scheme: &'a [u8],
    /// Host (the `Host` header is used when empty).
    pub host: &'a [u8],
    /// Path with query string.
    pub uri: &'a [u8],
    /// Request headers.
    pub headers: &'a H,
    /// A user name the host authenticated, or empty.
    pub username: &'a [u8],
    /// Overrides the configured unknown-API policy for this request.
    pub unknown_api: Option<UnknownApi>,
}

/// The verdict.
#[derive(Clone, Copy, Debug)]
pub struct Decision<'e> {
    /// What to do.
    pub action: Action,
    /// Why.
    pub reason: Reason,
    /// Status to answer with (0 when allowed).
    pub status: u16,
    /// Monitor mode: the API has `enable_blocking: false` and this request would
    /// have been blocked for `reason`; it is allowed.
    pub would_block: bool,
    /// The identifier kind that matched the allow or deny list.
    pub matched: Option<IdKind>,
    /// The deny source that matched.
    pub source: Option<Source>,
    /// The matched API.
    pub api: Option<&'e Api>,
    /// Reason phrase of the answer.
    pub status_text: &'e str,
    /// Body of the answer.
    pub body: &'e str,
    /// Redirect target; empty with [`Action::Redirect`] means `https://` + host + URI.
    pub location: &'e str,
}

/// A real-time attack to record: these identifiers go to `source`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Detection<'a> {
    /// Decoy or a pattern violation.
    pub source: Source,
    /// The request's identifiers (IP for decoys; token, cookie and IP for violations).
    pub ids: Ids<'a>,
}

/// Body of a deny-list block, as ASE answers.
pub const UNAUTHORIZED: &str = "Error: Unauthorized";
/// Body of a refusal for repeated identifiers ([`Reason::DuplicateIdentifier`]).
pub const BAD_REQUEST: &str = "Error: Bad Request";
/// Body of an unknown-API rejection, as ASE answers.
pub const UNKNOWN_API: &str = "Error: Unknown API";

impl<'e> Decision<'e> {
    fn allow(reason: Reason, api: Option<&'e Api>) -> Decision<'e> {
        Decision {
            action: Action::Allow,
            reason,
            status: 0,
            would_block: false,
            matched: None,
            source: None,
            api,
            status_text: "",
            body: "",
            location: "",
        }
    }

    fn respond(reason: Reason, api: &'e Api, r: &'e Response) -> Decision<'e> {
        Decision {
            action: Action::Respond,
            status: r.status,
            status_text: &r.reason,
            body: &r.body,
            ..Decision::allow(reason, Some(api))
        }
    }

    /// Whether the request is stopped (anything but allow).
    pub fn stops(&self) -> bool {
        self.action != Action::Allow
    }
}

/// The request's identifiers, probed against both lists (one map) in a
/// fixed order: IP, cookie, token, API key, user name. Each key is hashed
/// only when its kind is listed at all, and probed as soon as it is made.
/// For an unknown API, [`extract`] finds only the IP, so only the IP is probed.
struct Probe<'i, 'a> {
    ids: &'i Ids<'a>,
    api: Option<&'a Api>,
}

impl<'a> Probe<'_, 'a> {
    /// The list key of a named identifier. Keys are hashed from the API's
    /// precomputed prefix when the name is the API's own (always, for
    /// identifiers [`extract`] found: it hands out the prefix's name, so
    /// comparing the pointers settles it): only the value is hashed per
    /// request. Any other name is hashed whole; both give the same key.
    #[inline(always)]
    fn named(kind: IdKind, (n, v): (&'a [u8], &'a [u8]), p: Option<&'a KeyPrefix>) -> KeyRef<'a> {
        match p {
            Some(p) if std::ptr::eq(p.name(), n) => p.key(v),
            _ => KeyRef::new(kind, n, v),
        }
    }

    /// One probe per identifier (and per listed IP range length) answers both
    /// lists: the first allow-listed identifier, else the first identifier
    /// with an active deny source within `mask`.
    fn scan(&self, lists: &Lists, mask: u8, now: &mut impl FnMut() -> u64) -> Scan {
        let r = lists.reader();
        let mut out = Scan::default();
        let mut see = |kind: IdKind, m: Option<Meta>, out: &mut Scan| {
            let Some(m) = m else { return false };
            if m.allowed(now) {
                out.allowed = Some(kind);
                return true;
            }
            if out.denied.is_none() {
                out.denied = m.active(mask, now).map(|s| (kind, s));
            }
            false
        };
        let ids = self.ids;
        let api = self.api;
        // Each kind is checked for entries before its key is hashed; the
        // keys are written out here, kind by kind, so that each probe
        // compiles to a hash and one filter load.
        if let Some(addr) = ids.ip {
            r.each_ip(addr, |m| see(IdKind::Ip, Some(m), &mut out));
            if out.allowed.is_some() {
                return out;
            }
        }
        if let Some(c) = ids.cookie {
            if r.has(IdKind::Cookie) && listable(c.1) {
                let p = api.and_then(|a| a.cookie_key.as_ref());
                let m = r.probe(&Probe::named(IdKind::Cookie, c, p));
                if see(IdKind::Cookie, m, &mut out) {
                    return out;
                }
            }
        }
        if let Some(t) = ids.token {
            if r.has(IdKind::Token)
                && listable(t)
                && see(IdKind::Token, r.probe(&KeyRef::token(t)), &mut out)
            {
                return out;
            }
        }
        if let Some((n, v)) = ids.api_key {
            if r.has(IdKind::ApiKey) && listable(v) {
                let header = api.and_then(|a| a.apikey_header_key.as_ref());
                let p = header
                    .filter(|p| std::ptr::eq(p.name(), n))
                    .or_else(|| api.and_then(|a| a.apikey_qs_key.as_ref()));
                let m = r.probe(&Probe::named(IdKind::ApiKey, (n, v), p));
                if see(IdKind::ApiKey, m, &mut out) {
                    return out;
                }
            }
        }
        if let Some(u) = ids.username {
            if r.has(IdKind::Username)
                && listable(u)
                && see(IdKind::Username, r.probe(&KeyRef::username(u)), &mut out)
            {
                return out;
            }
        }
        out
    }
}

impl Probe<'_, '_> {
    /// The slow path of a request that carries an identifier kind more than
    /// once, or a JWT too large to read: every occurrence of each such kind
    /// (up to [`MAX_OCCURRENCES`](super::extract::MAX_OCCURRENCES)) meets
    /// the lists, the first allow-listed or denied one recorded in `out` as
    /// [`Probe::scan`] records them. Returns the kind to refuse the request
    /// for, if any: more occurrences than are checked (whatever
    /// `duplicate_identifiers` says), or with `reject`, occurrences that
    /// disagree or a JWT over the bound.
    #[cold]
    #[inline(never)]
    #[allow(
        clippy::too_many_arguments,
        reason = "the inputs of the list scan it extends"
    )]
    fn scan_repeated<H: Headers + ?Sized>(
        &self,
        beyond: Beyond,
        req: &Request<'_, H>,
        sw: Switches,
        lists: &Lists,
        mask: u8,
        now: &mut impl FnMut() -> u64,
        out: &mut Scan,
    ) -> Option<IdKind> {
        let api = self.api?;
        let r = lists.reader();
        let mut refuse = None;
        for kind in [
            IdKind::Cookie,
            IdKind::Token,
            IdKind::ApiKey,
            IdKind::Username,
        ] {
            let jwt = kind == IdKind::Username && beyond.jwt_too_large;
            if beyond.repeated & kind_bit(kind) == 0 && !jwt {
                continue;
            }
            let listed = r.has(kind);
            let tally = each_occurrence(api, kind, req.uri, req.headers, &mut |n, v| {
                if !listed || !listable(v) {
                    return;
                }
                let p = match kind {
                    IdKind::Cookie => api.cookie_key.as_ref(),
                    IdKind::ApiKey => api
                        .apikey_header_key
                        .as_ref()
                        .filter(|p| std::ptr::eq(p.name(), n))
                        .or(api.apikey_qs_key.as_ref()),
                    _ => None,
                };
                let key = Probe::named(kind, (n, v), p);
                let Some(m) = r.probe(&key) else { return };
                if m.allowed(now) {
                    out.allowed.get_or_insert(kind);
                } else if out.denied.is_none() {
                    out.denied = m.active(mask, now).map(|s| (kind, s));
                }
            });
            let disagree = tally.differ || tally.unreadable;
            if refuse.is_none() && (tally.too_many() || sw.reject_duplicates && disagree) {
                refuse = Some(kind);
            }
        }
        refuse
    }
}

/// Whether a request's identifier value could be listed at all: no entry's
/// value is longer than [`MAX_FIELD`] (every entry is made from a checked
/// identifier: `Identifier::new`, or a store row checked by
/// `Identifier::check`), so a longer one is not hashed and probed. This
/// bounds a check's hashing whatever a client sends.
#[inline(always)]
fn listable(value: &[u8]) -> bool {
    value.len() <= MAX_FIELD
}

/// What one scan of the lists found.
#[derive(Default)]
struct Scan {
    /// The first identifier on the allow list.
    allowed: Option<IdKind>,
    /// The first identifier with an active deny source, and that source.
    denied: Option<(IdKind, Source)>,
}

/// Decides one request. `default_unknown` is the configured unknown-API policy;
/// `now` gives Unix milliseconds and is called only when an entry has an expiry.
#[allow(
    clippy::too_many_arguments,
    reason = "each input is a distinct part of the decision"
)]
pub fn decide<'e, 'a, H: Headers + ?Sized>(
    apis: &'e ApiSet,
    lists: &Lists,
    sw: Switches,
    default_unknown: UnknownApi,
    req: &Request<'a, H>,
    scratch: &'a mut Scratch,
    now: &mut impl FnMut() -> u64,
) -> (Decision<'e>, Option<Detection<'a>>)
where
    'e: 'a,
{
    // 1. Firewall off.
    if !sw.firewall {
        return (Decision::allow(Reason::FirewallOff, None), None);
    }

    // 2. Which API.
    let path = NormPath::new(req.uri);
    let host = if req.host.is_empty() {
        header(req.headers, b"host").unwrap_or(b"")
    } else {
        req.host
    };
    let api = apis.find(host, path.as_bytes());

    // 3. Identifiers.
    let (ids, beyond) = extract_all(
        api,
        req.client_ip,
        sw.xff,
        req.uri,
        req.headers,
        req.username,
        scratch,
    );
    let mask = sw.deny_mask();
    let probe = Probe { ids: &ids, api };

    let Some(api) = api else {
        let mode = req.unknown_api.unwrap_or(default_unknown);
        if mode == UnknownApi::Reject {
            return (
                Decision {
                    action: Action::Block,
                    status: 503,
                    status_text: "Service Unavailable",
                    body: UNKNOWN_API,
                    ..Decision::allow(Reason::UnknownApi, None)
                },
                None,
            );
        }
        // Pass mode: the client IP still meets the lists.
        let found = probe.scan(lists, mask, now);
        if let (None, Some((kind, src))) = (found.allowed, found.denied) {
            return (blocked(None, kind, src), None);
        }
        return (Decision::allow(Reason::UnknownApi, None), None);
    };

    // 4. Allow list beats everything but the decoy answer. Every
    // occurrence of a repeated identifier meets the lists.
    let mut found = probe.scan(lists, mask, now);
    let mut refuse = None;
    if !beyond.is_empty() {
        refuse = probe.scan_repeated(beyond, req, sw, lists, mask, now, &mut found);
    }
    let allowed = found.allowed;

    // 5. Decoy.
    if api.is_decoy(path.as_bytes()) {
        let d = api.decoy.as_ref().expect("is_decoy implies a decoy config");
        let mut dec = Decision::respond(Reason::Decoy, api, &d.response);
        dec.matched = allowed;
        let det = (allowed.is_none() && sw.ase_detected && ids.ip.is_some()).then_some(Detection {
            source: Source::Decoy,
            ids: Ids {
                ip: ids.ip,
                ..Ids::default()
            },
        });
        return (dec, det);
    }
    if let Some(kind) = allowed {
        let mut d = Decision::allow(Reason::AllowList, Some(api));
        d.matched = Some(kind);
        return (d, None);
    }

    // 6. Deny list.
    let blocking = api.blocking();
    if let Some((kind, src)) = found.denied {
        let d = blocked(Some(api), kind, src);
        return (monitor(d, blocking), None);
    }

    // 7. Repeated identifiers that cannot all be checked, or disagree.
    if let Some(kind) = refuse {
        let d = Decision {
            action: Action::Block,
            status: 400,
            status_text: "Bad Request",
            body: BAD_REQUEST,
            matched: Some(kind),
            ..Decision::allow(Reason::DuplicateIdentifier, Some(api))
        };
        return (monitor(d, blocking), None);
    }

    // 8. Pattern enforcement.
    if let Some(p) = &api.pattern {
        // Read only when the API restricts schemes.
        let scheme = if p.protocols != 0 {
            proto::bit(req.scheme)
        } else {
            proto::ANY
        };
        let violation = if p.protocols != 0 && scheme & p.protocols == 0 {
            if let (Some(r), proto::HTTP) = (&p.redirect, scheme) {
                let d = Decision {
                    action: Action::Redirect,
                    status: r.status,
                    status_text: &r.reason,
                    location: &r.url,
                    ..Decision::allow(Reason::Protocol, Some(api))
                };
                // Redirecting plain HTTP to HTTPS is the API's chosen answer, not an attack.
                return (monitor(d, blocking), None);
            }
            Some((Reason::Protocol, Source::InvalidProtocol))
        } else if !p.methods.is_empty() && !p.allows_method(req.method) {
            Some((Reason::Method, Source::InvalidMethod))
        } else if !p.content_types.is_empty()
            && header(req.headers, b"content-type").is_some_and(|ct| {
                let mt = media_type(ct);
                !p.content_types
                    .iter()
                    .any(|a| a.as_bytes().eq_ignore_ascii_case(mt))
            })
        {
            Some((Reason::ContentType, Source::InvalidContentType))
        } else {
            None
        };
        if let Some((reason, source)) = violation {
            let d = Decision::respond(reason, api, &p.error);
            let det = sw.ase_detected.then_some(Detection {
                source,
                ids: Ids {
                    ip: ids.ip,
                    cookie: ids.cookie,
                    token: ids.token,
                    ..Ids::default()
                },
            });
            return (monitor(d, blocking), det);
        }
    }

    // 9. Allow.
    (Decision::allow(Reason::None, Some(api)), None)
}

fn blocked(api: Option<&Api>, kind: IdKind, src: Source) -> Decision<'_> {
    Decision {
        action: Action::Block,
        status: 403,
        status_text: "Forbidden",
        body: UNAUTHORIZED,
        matched: Some(kind),
        source: Some(src),
        ..Decision::allow(Reason::DenyList, api)
    }
}

/// With blocking off, a stop becomes "would block" and the request goes on.
fn monitor(d: Decision<'_>, blocking: bool) -> Decision<'_> {
    if blocking {
        d
    } else {
        Decision {
            action: Action::Allow,
            would_block: true,
            status: 0,
            status_text: "",
            body: "",
            location: "",
            ..d
        }
    }
}

/// The decision for every request while the state cannot be loaded.
pub fn fail_mode(mode: super::config::FailMode) -> Decision<'static> {
    match mode {
        super::config::FailMode::Open => Decision::allow(Reason::FailMode, None),
        super::config::FailMode::Closed => Decision {
            action: Action::Block,
            status: 403,
            status_text: "Forbidden",
            body: UNAUTHORIZED,
            ..Decision::allow(Reason::FailMode, None)
        },
    }
}
