//! Traffic reporting to ABS (`enable_abs`): each checked request becomes a
//! [`TrafficRecord`]; records go through a bounded queue to a shipper thread
//! that batches them by size and time and POSTs them as JSON to
//! `/v4/abs/traffic` (format in docs/abs.md).
//!
//! The request path only does `try_send`: when the queue is full the record is
//! dropped and counted, the caller never waits. Obfuscation
//! (`abs_obfuscate_identifiers`) happens on the shipper thread: token, cookie
//! and API key values — in the identifier fields, the `Authorization` and
//! `Cookie` headers, the API key header and the query string — become
//! `obf:` + 32 hex digits of HMAC-SHA256 under a per-host key kept in
//! `state_dir`, so one value maps to one pseudonym across processes and
//! restarts and ABS can still correlate a client's requests.
//! A record's `Debug` output never shows a header value or an identifier.
//!
//! The shipper thread also uploads the host's traffic spool
//! (`sync::abs::spool`): the files evented engines without a shipper write,
//! scanned every `batch_interval` by the one shipper that holds the spool's
//! upload lock, and posted through the same path (obfuscation, retries,
//! counters).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded, select};
use serde::Serialize;

use super::client::{AbsClient, ClientOptions};
use super::spool::Uploader;
use super::time::format_rfc3339_ms;
use crate::clock::now_ms;
use crate::enforcer::Enforcer;
use crate::policy::Switch;
use crate::policy::decide::{Action, Decision, Reason, Request};
use crate::policy::extract::{Headers, Scratch, extract, header};
use crate::policy::ident::{IpNet, Key};

/// Request headers a record carries (besides the API's key and user headers).
const KEPT_HEADERS: &[&str] = &[
    "host",
    "user-agent",
    "content-type",
    "content-length",
    "accept",
    "referer",
    "origin",
    "x-forwarded-for",
    "authorization",
    "cookie",
];
/// Longest header value kept; longer ones are cut (ABS needs their shape, not megabytes).
const MAX_HEADER_VALUE: usize = 4096;

/// One transaction as reported to ABS (docs/abs.md).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TrafficRecord {
    /// When the request was checked (Unix ms).
    pub time_ms: u64,
    /// Client address as the enforcer saw it (after `enable_xff`).
    pub client_ip: String,
    /// Client port (0 = unknown).
    pub client_port: u16,
    /// Method.
    pub method: String,
    /// Path and query string.
    pub uri: String,
    /// `1.1`, `2`...
    pub http_version: String,
    /// Host.
    pub host: String,
    /// The matched API.
    pub api: Option<String>,
    /// Selected request headers, names lowercase.
    pub headers: Vec<(String, String)>,
    /// User name.
    pub username: Option<String>,
    /// OAuth2 bearer token.
    pub token: Option<String>,
    /// Session cookie (name, value).
    pub cookie: Option<(String, String)>,
    /// API key (name, value).
    pub api_key: Option<(String, String)>,
    /// Response status, when the host reports the record after answering.
    pub response_status: Option<u16>,
    /// `allow`, `block`, `respond` or `redirect`.
    pub verdict: &'static str,
    /// Why (`none`, `deny_list`, `decoy`...).
    pub reason: &'static str,
    /// Monitor mode: allowed, but would have been stopped.
    pub would_block: bool,
}

impl fmt::Debug for TrafficRecord {
    /// Shows where the request went and the verdict; never header values or identifiers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrafficRecord")
            .field("time_ms", &self.time_ms)
            .field("method", &self.method)
            .field("host", &self.host)
            .field("api", &self.api)
            .field("verdict", &self.verdict)
            .field("reason", &self.reason)
            .field("response_status", &self.response_status)
            .finish_non_exhaustive()
    }
}

/// Every word [`verdict_word`] gives (a spooled record is read back to these).
pub(super) const VERDICT_WORDS: [&str; 4] = ["allow", "block", "respond", "redirect"];

/// Every word [`reason_word`] gives.
pub(super) const REASON_WORDS: [&str; 11] = [
    "none",
    "firewall_off",
    "unknown_api",
    "allow_list",
    "decoy",
    "deny_list",
    "invalid_protocol",
    "invalid_method",
    "invalid_content_type",
    "fail_mode",
    "duplicate_identifier",
];

fn verdict_word(a: Action) -> &'static str {
    match a {
        Action::Allow => "allow",
        Action::Block => "block",
        Action::Respond => "respond",
        Action::Redirect => "redirect",
    }
}

fn reason_word(r: Reason) -> &'static str {
    match r {
        Reason::None => "none",
        Reason::FirewallOff => "firewall_off",
        Reason::UnknownApi => "unknown_api",
        Reason::AllowList => "allow_list",
        Reason::Decoy => "decoy",
        Reason::DenyList => "deny_list",
        Reason::Protocol => "invalid_protocol",
        Reason::Method => "invalid_method",
        Reason::ContentType => "invalid_content_type",
        Reason::FailMode => "fail_mode",
        Reason::DuplicateIdentifier => "duplicate_identifier",
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn cut(b: &[u8]) -> String {
    text(&b[..b.len().min(MAX_HEADER_VALUE)])
}

impl TrafficRecord {
    /// The record of a request the enforcer has just decided. `http_version` as
    /// the host has it (`1.1`), `client_port` 0 if unknown. Identifiers are
    /// extracted again, as the matched API says.
    pub fn from_check<H: Headers + ?Sized>(
        enforcer: &Enforcer,
        req: &Request<'_, H>,
        d: &Decision<'_>,
        client_port: u16,
        http_version: &str,
    ) -> TrafficRecord {
        let host = if req.host.is_empty() {
            header(req.headers, b"host").unwrap_or_default()
        } else {
            req.host
        };
        let mut scratch = Scratch::default();
        let ids = extract(
            d.api,
            req.client_ip,
            enforcer.config().enable_xff,
            req.uri,
            req.headers,
            req.username,
            &mut scratch,
        );
        let mut headers = Vec::new();
        for i in 0..req.headers.count().min(64) {
            let (n, v) = req.headers.at(i);
            let keep = KEPT_HEADERS
                .iter()
                .any(|k| n.eq_ignore_ascii_case(k.as_bytes()))
                || d.api.is_some_and(|a| {
                    [&a.apikey_header, &a.username_header]
                        .into_iter()
                        .flatten()
                        .any(|h| n.eq_ignore_ascii_case(h.as_bytes()))
                });
            if keep {
                headers.push((text(n).to_ascii_lowercase(), cut(v)));
            }
        }
        TrafficRecord {
            time_ms: now_ms(),
            client_ip: ids
                .ip
                .map(|ip| Key::ip(IpNet::of(ip, 128)).identifier().value)
                .unwrap_or_default(),
            client_port,
            method: text(req.method),
            uri: text(req.uri),
            http_version: http_version.to_string(),
            host: text(host),
            api: d.api.map(|a| a.name.clone()),
            headers,
            username: ids.username.map(text),
            token: ids.token.map(text),
            cookie: ids.cookie.map(|(n, v)| (text(n), text(v))),
            api_key: ids.api_key.map(|(n, v)| (text(n), text(v))),
            response_status: None,
            verdict: verdict_word(d.action),
            reason: reason_word(d.reason),
            would_block: d.would_block,
        }
    }

    /// The same record with the response status the host answered with.
    pub fn with_status(mut self, status: u16) -> TrafficRecord {
        self.response_status = Some(status);
        self
    }
}

/// The keyed hash that hides identifier values.
#[derive(Clone)]
pub struct Obfuscator {
    key: ring::hmac::Key,
}

impl fmt::Debug for Obfuscator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Obfuscator(..)")
    }
}

/// Name of the obfuscation key file in `state_dir`.
pub const KEY_FILE: &str = "abs_obfuscation.key";

/// The key in the file at `path`; `None` when there is no such file.
fn read_key(path: &Path) -> Result<Option<Vec<u8>>, String> {
    use std::io::Read;
    let mut v = Vec::new();
    match std::fs::File::open(path).and_then(|f| f.take(1024).read_to_end(&mut v)) {
        Ok(_) if v.len() < 16 => Err(format!("{}: key shorter than 16 bytes", path.display())),
        Ok(_) => Ok(Some(v)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

impl Obfuscator {
    /// An obfuscator with a fresh random key (pseudonyms valid for this process only).
    pub fn random() -> Result<Obfuscator, String> {
        let rng = ring::rand::SystemRandom::new();
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            .map_err(|_| "no system randomness".to_string())?;
        Ok(Obfuscator { key })
    }

    /// An obfuscator with the key of `path`, created (32 random bytes, mode 0600)
    /// if missing, so every process of the host makes the same pseudonyms.
    pub fn from_key_file(path: &Path) -> Result<Obfuscator, String> {
        use std::io::Write;
        let bytes = match read_key(path)? {
            Some(b) => b,
            None => {
                let mut key = [0u8; 32];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
                    .map_err(|_| "no system randomness".to_string())?;
                if let Some(dir) = path.parent() {
                    crate::store::files::create_state_dir(dir)
                        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
                }
                match crate::store::files::create_new_private(path) {
                    Ok(mut f) => {
                        f.write_all(&key)
                            .map_err(|e| format!("writing {}: {e}", path.display()))?;
                        key.to_vec()
                    }
                    // Another process created it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        std::thread::sleep(Duration::from_millis(20));
                        read_key(path)?
                            .ok_or_else(|| format!("reading {}: vanished", path.display()))?
                    }
                    Err(e) => return Err(format!("creating {}: {e}", path.display())),
                }
            }
        };
        Ok(Obfuscator {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes),
        })
    }

    /// Checks, without creating anything, that [`Obfuscator::from_key_file`]
    /// can use the key file at `path` if it exists (readable, long enough).
    pub fn check_key_file(path: &Path) -> Result<(), String> {
        read_key(path).map(|_| ())
    }

    /// `obf:` + 32 hex digits of HMAC-SHA256(key, kind ‖ 0 ‖ value).
    pub fn hide(&self, kind: &str, value: &str) -> String {
        let mut ctx = ring::hmac::Context::with_key(&self.key);
        ctx.update(kind.as_bytes());
        ctx.update(&[0]);
        ctx.update(value.as_bytes());
        let tag = ctx.sign();
        let mut s = String::with_capacity(36);
        s.push_str("obf:");
        for b in &tag.as_ref()[..16] {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// Hides every token, cookie and API key value of a record.
    pub fn apply(&self, r: &mut TrafficRecord) {
        if let Some(t) = &mut r.token {
            *t = self.hide("token", t);
        }
        if let Some((_, v)) = &mut r.cookie {
            *v = self.hide("cookie", v);
        }
        let key_name = r.api_key.as_ref().map(|(n, _)| n.to_ascii_lowercase());
        if let Some((_, v)) = &mut r.api_key {
            *v = self.hide("api_key", v);
        }
        for (n, v) in &mut r.headers {
            if n == "authorization" {
                *v = match v.split_once(' ') {
                    Some((scheme, cred)) => format!("{scheme} {}", self.hide("token", cred.trim())),
                    None => self.hide("token", v),
                };
            } else if n == "cookie" {
                *v = v
                    .split(';')
                    .map(|pair| match pair.trim().split_once('=') {
                        Some((cn, cv)) => format!("{cn}={}", self.hide("cookie", cv)),
                        None => self.hide("cookie", pair.trim()),
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
            } else if key_name.as_deref() == Some(n.as_str()) {
                *v = self.hide("api_key", v);
            }
        }
        if let Some((path, query)) = r.uri.split_once('?') {
            let q: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, v))
                        if k.eq_ignore_ascii_case("access_token")
                            || key_name.as_deref() == Some(&k.to_ascii_lowercase()) =>
                    {
                        let kind = if k.eq_ignore_ascii_case("access_token") {
                            "token"
                        } else {
                            "api_key"
                        };
                        format!("{k}={}", self.hide(kind, v))
                    }
                    _ => kv.to_string(),
                })
                .collect();
            r.uri = format!("{path}?{}", q.join("&"));
        }
    }
}

/// How the shipper batches and where it keeps its key.
#[derive(Clone, Debug)]
pub struct ShipperOptions {
    /// Records the queue holds; beyond, new records are dropped.
    pub queue_capacity: usize,
    /// A batch is sent when it has this many records...
    pub batch_max: usize,
    /// ...or when its oldest record is this old.
    pub batch_interval: Duration,
    /// Tries per batch before it is dropped.
    pub tries: u32,
    /// Delay between tries of one batch.
    pub retry_delay: Duration,
    /// The HTTP client's timeouts and limits.
    pub client: ClientOptions,
    /// Obfuscate identifiers (`abs_obfuscate_identifiers`).
    pub obfuscate: bool,
    /// The obfuscation key file; `None` uses a per-process random key.
    pub key_path: Option<PathBuf>,
    /// The host's traffic spool directory (`sync::abs::spool`), scanned every
    /// `batch_interval` while this process holds its upload lock; `None`
    /// ships this shipper's own records only.
    pub spool_dir: Option<PathBuf>,
}

impl ShipperOptions {
    /// The options a configuration implies (key file in `state_dir`).
    pub fn from_config(c: &crate::policy::Config) -> ShipperOptions {
        ShipperOptions {
            queue_capacity: 10_000,
            batch_max: 500,
            batch_interval: Duration::from_secs(1),
            tries: 3,
            retry_delay: Duration::from_secs(1),
            client: ClientOptions {
                request_timeout: Duration::from_secs(10),
                ..ClientOptions::default()
            },
            obfuscate: c.abs_obfuscate_identifiers,
            key_path: Some(c.state_dir.join(KEY_FILE)),
            spool_dir: Some(c.state_dir.join(super::spool::DIR)),
        }
    }
}

/// What the shipper has done.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShipperStatus {
    /// `enable_abs` as the last submit saw it.
    pub enabled: bool,
    /// Records waiting in the queue.
    pub queued: u64,
    /// Records accepted into the queue.
    pub accepted: u64,
    /// Records dropped because the queue was full.
    pub dropped_full: u64,
    /// Records dropped because their batch failed every try.
    pub dropped_failed: u64,
    /// Records ABS took.
    pub sent_records: u64,
    /// Batches ABS took.
    pub sent_batches: u64,
    /// Failed tries to post a batch.
    pub failed_posts: u64,
    /// End of the last successful post (Unix ms).
    pub last_success_ms: u64,
    /// The last failure (no credential, no record content).
    pub last_error: Option<String>,
    /// Values are obfuscated.
    pub obfuscating: bool,
    /// Records an evented engine without a shipper wrote to its spool file,
    /// for the host's uploader to send.
    pub spooled: u64,
    /// Records of the host's spool files that this shipper sent (also in
    /// `sent_records`).
    pub spool_shipped: u64,
    /// Records of spool files skipped: unreadable, or torn by a crash.
    pub spool_bad: u64,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    dropped_full: AtomicU64,
    dropped_failed: AtomicU64,
    sent_records: AtomicU64,
    sent_batches: AtomicU64,
    failed_posts: AtomicU64,
    last_success_ms: AtomicU64,
    spool_shipped: AtomicU64,
    spool_bad: AtomicU64,
}

struct Shared {
    enforcer: Arc<Enforcer>,
    counters: Counters,
    last_error: Mutex<Option<String>>,
    obfuscating: bool,
}

/// The cheap, clonable submit side of a shipper, for request threads.
#[derive(Clone)]
pub struct ShipperHandle {
    tx: Sender<TrafficRecord>,
    shared: Arc<Shared>,
}

impl fmt::Debug for ShipperHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShipperHandle").finish_non_exhaustive()
    }
}

impl ShipperHandle {
    /// Whether records are wanted now (`enable_abs` is on): lets a host skip
    /// building a record at all.
    pub fn enabled(&self) -> bool {
        self.shared.enforcer.switch(Switch::Abs)
    }

    /// Queues a record without ever waiting. False when it was not queued
    /// (`enable_abs` off, or the queue full: then it is counted as dropped).
    pub fn submit(&self, rec: TrafficRecord) -> bool {
        if !self.enabled() {
            return false;
        }
        match self.tx.try_send(rec) {
            Ok(()) => {
                self.shared.counters.accepted.fetch_add(1, Relaxed);
                true
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.shared.counters.dropped_full.fetch_add(1, Relaxed);
                false
            }
        }
    }
}

/// The JSON of one record (docs/abs.md).
#[derive(Serialize)]
struct WireRecord<'a> {
    time: String,
    time_ms: u64,
    client_ip: &'a str,
    client_port: u16,
    method: &'a str,
    url: &'a str,
    http_version: &'a str,
    host: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_name: Option<&'a str>,
    headers: Vec<std::collections::BTreeMap<&'a str, &'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    access_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cookie: Option<NameValue<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_key: Option<NameValue<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_code: Option<u16>,
    verdict: &'a str,
    reason: &'a str,
    would_block: bool,
}

#[derive(Serialize)]
struct NameValue<'a> {
    name: &'a str,
    value: &'a str,
}

#[derive(Serialize)]
struct WireBatch<'a> {
    source: &'static str,
    version: &'static str,
    pid: u32,
    sent_at: String,
    obfuscated: bool,
    records: Vec<WireRecord<'a>>,
}

fn encode(batch: &[TrafficRecord], obfuscated: bool) -> Vec<u8> {
    let records = batch
        .iter()
        .map(|r| WireRecord {
            time: format_rfc3339_ms(r.time_ms),
            time_ms: r.time_ms,
            client_ip: &r.client_ip,
            client_port: r.client_port,
            method: &r.method,
            url: &r.uri,
            http_version: &r.http_version,
            host: &r.host,
            api_name: r.api.as_deref(),
            headers: r
                .headers
                .iter()
                .map(|(n, v)| std::iter::once((n.as_str(), v.as_str())).collect())
                .collect(),
            username: r.username.as_deref(),
            access_token: r.token.as_deref(),
            cookie: r
                .cookie
                .as_ref()
                .map(|(n, v)| NameValue { name: n, value: v }),
            api_key: r
                .api_key
                .as_ref()
                .map(|(n, v)| NameValue { name: n, value: v }),
            response_code: r.response_status,
            verdict: r.verdict,
            reason: r.reason,
            would_block: r.would_block,
        })
        .collect();
    let b = WireBatch {
        source: "ase",
        version: env!("CARGO_PKG_VERSION"),
        pid: std::process::id(),
        sent_at: format_rfc3339_ms(now_ms()),
        obfuscated,
        records,
    };
    // Serialising plain strings and numbers cannot fail.
    serde_json::to_vec(&b).unwrap_or_default()
}

/// A running shipper. Dropping it asks the thread to stop (flushing what it
/// holds, bounded by the client timeout) without waiting.
pub struct Shipper {
    handle: ShipperHandle,
    rx_len: Receiver<TrafficRecord>,
    stop_tx: Mutex<Option<Sender<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for Shipper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shipper")
            .field("status", &self.status())
            .finish()
    }
}

struct Worker {
    rx: Receiver<TrafficRecord>,
    stop_rx: Receiver<()>,
    client: AbsClient,
    obf: Option<Obfuscator>,
    opts: ShipperOptions,
    shared: Arc<Shared>,
    uploader: Option<Uploader>,
}

impl Worker {
    /// Posts a batch; a batch that failed every try is dropped and counted.
    fn post(&self, batch: Vec<TrafficRecord>, stopping: bool) {
        let n = batch.len() as u64;
        if !self.send(batch, stopping) {
            self.shared.counters.dropped_failed.fetch_add(n, Relaxed);
        }
    }

    /// Obfuscates and posts a batch, with retries; true when ABS took it.
    fn send(&self, mut batch: Vec<TrafficRecord>, stopping: bool) -> bool {
        if let Some(o) = &self.obf {
            for r in &mut batch {
                o.apply(r);
            }
        }
        let body = encode(&batch, self.obf.is_some());
        let c = &self.shared.counters;
        let tries = if stopping { 1 } else { self.opts.tries.max(1) };
        for attempt in 1..=tries {
            match self.client.post_traffic(&body) {
                Ok(_) => {
                    c.sent_batches.fetch_add(1, Relaxed);
                    c.sent_records.fetch_add(batch.len() as u64, Relaxed);
                    c.last_success_ms.store(now_ms(), Relaxed);
                    *self
                        .shared
                        .last_error
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = None;
                    return true;
                }
                Err(e) => {
                    c.failed_posts.fetch_add(1, Relaxed);
                    *self
                        .shared
                        .last_error
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Some(format!("posting traffic: {e}"));
                    // Wait before the next try, unless asked to stop.
                    if attempt < tries && self.stop_rx.recv_timeout(self.opts.retry_delay).is_ok() {
                        break;
                    }
                }
            }
        }
        false
    }

    /// Ships the host's spool files when this process holds the upload
    /// lock. A failed post leaves the rest for the next scan: files wait
    /// on disk, bounded by the writers' total.
    fn scan_spool(&mut self) {
        let Some(mut u) = self.uploader.take() else {
            return;
        };
        if self.shared.enforcer.switch(Switch::Abs) {
            let rep = u.scan(self.opts.batch_max.max(1), &mut |b| self.send(b, false));
            let c = &self.shared.counters;
            c.spool_shipped.fetch_add(rep.shipped, Relaxed);
            c.spool_bad.fetch_add(rep.bad, Relaxed);
        }
        self.uploader = Some(u);
    }

    fn run(mut self) {
        let mut batch: Vec<TrafficRecord> = Vec::with_capacity(self.opts.batch_max);
        let mut deadline: Option<Instant> = None;
        let mut next_scan = Instant::now();
        loop {
            if self.uploader.is_some() && Instant::now() >= next_scan {
                self.scan_spool();
                next_scan = Instant::now() + self.opts.batch_interval;
            }
            let mut wake = deadline.unwrap_or(Instant::now() + Duration::from_secs(3600));
            if self.uploader.is_some() {
                wake = wake.min(next_scan);
            }
            let timeout = wake.saturating_duration_since(Instant::now());
            select! {
                recv(self.rx) -> r => match r {
                    Ok(rec) => {
                        if batch.is_empty() {
                            deadline = Some(Instant::now() + self.opts.batch_interval);
                        }
                        batch.push(rec);
                        if batch.len() >= self.opts.batch_max {
                            self.post(std::mem::take(&mut batch), false);
                            deadline = None;
                        }
                    }
                    Err(_) => break,
                },
                recv(self.stop_rx) -> _ => break,
                default(timeout) => {
                    // The timeout may be the spool scan's, before the batch's.
                    if deadline.is_none_or(|d| d <= Instant::now()) {
                        if !batch.is_empty() {
                            self.post(std::mem::take(&mut batch), false);
                        }
                        deadline = None;
                    }
                }
            }
        }
        // Flush what is held, and what is queued, once each.
        batch.extend(self.rx.try_iter().take(self.opts.batch_max.max(1) * 4));
        for chunk in batch.chunks(self.opts.batch_max.max(1)) {
            self.post(chunk.to_vec(), true);
        }
    }
}

impl Shipper {
    /// Starts the shipper thread for `enforcer` (whose `enable_abs` switch gates
    /// submits and whose `abs.conf` names ABS).
    pub fn start(enforcer: Arc<Enforcer>, opts: ShipperOptions) -> Result<Shipper, String> {
        let client = AbsClient::new(&enforcer.config().abs, opts.client.clone())?;
        let obf = if opts.obfuscate {
            Some(match &opts.key_path {
                Some(p) => Obfuscator::from_key_file(p)?,
                None => Obfuscator::random()?,
            })
        } else {
            None
        };
        let (tx, rx) = bounded(opts.queue_capacity.max(1));
        let (stop_tx, stop_rx) = bounded(1);
        let shared = Arc::new(Shared {
            enforcer,
            counters: Counters::default(),
            last_error: Mutex::new(None),
            obfuscating: obf.is_some(),
        });
        let worker = Worker {
            rx: rx.clone(),
            stop_rx,
            client,
            obf,
            uploader: opts.spool_dir.clone().map(Uploader::new),
            opts,
            shared: shared.clone(),
        };
        let thread = crate::sync::spawn_background("ase-abs-ship", move || worker.run())
            .map_err(|e| format!("starting the ABS shipper thread: {e}"))?;
        Ok(Shipper {
            handle: ShipperHandle { tx, shared },
            rx_len: rx,
            stop_tx: Mutex::new(Some(stop_tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// A submit handle for request threads.
    pub fn handle(&self) -> ShipperHandle {
        self.handle.clone()
    }

    /// Queues a record without waiting (see [`ShipperHandle::submit`]).
    pub fn submit(&self, rec: TrafficRecord) -> bool {
        self.handle.submit(rec)
    }

    /// A copy of the counters.
    pub fn status(&self) -> ShipperStatus {
        let s = &self.handle.shared;
        let c = &s.counters;
        ShipperStatus {
            enabled: self.handle.enabled(),
            queued: self.rx_len.len() as u64,
            accepted: c.accepted.load(Relaxed),
            dropped_full: c.dropped_full.load(Relaxed),
            dropped_failed: c.dropped_failed.load(Relaxed),
            sent_records: c.sent_records.load(Relaxed),
            sent_batches: c.sent_batches.load(Relaxed),
            failed_posts: c.failed_posts.load(Relaxed),
            last_success_ms: c.last_success_ms.load(Relaxed),
            last_error: s
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            obfuscating: s.obfuscating,
            spooled: 0,
            spool_shipped: c.spool_shipped.load(Relaxed),
            spool_bad: c.spool_bad.load(Relaxed),
        }
    }

    /// Stops the thread after one flush attempt, waiting up to `wait`. True if it has ended.
    pub fn stop(&self, wait: Duration) -> bool {
        if let Some(tx) = self
            .stop_tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = tx.try_send(());
        }
        crate::sync::join_within(&self.thread, wait)
    }
}

impl Drop for Shipper {
    fn drop(&mut self) {
        if let Some(tx) = self
            .stop_tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = tx.try_send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> TrafficRecord {
        TrafficRecord {
            time_ms: 1_700_000_000_000,
            client_ip: "10.1.2.3".into(),
            client_port: 5555,
            method: "GET".into(),
            uri: "/shop/items?apikey=K-SECRET&access_token=T-SECRET&page=2".into(),
            http_version: "1.1".into(),
            host: "shop.example".into(),
            api: Some("shop".into()),
            headers: vec![
                ("authorization".into(), "Bearer T-SECRET".into()),
                ("cookie".into(), "JSESSIONID=C-SECRET; theme=dark".into()),
                ("apikey".into(), "K-SECRET".into()),
                ("user-agent".into(), "curl/8".into()),
            ],
            username: Some("bob".into()),
            token: Some("T-SECRET".into()),
            cookie: Some(("JSESSIONID".into(), "C-SECRET".into())),
            api_key: Some(("apikey".into(), "K-SECRET".into())),
            response_status: Some(200),
            verdict: "allow",
            reason: "none",
            would_block: false,
        }
    }

    #[test]
    fn obfuscation_hides_every_copy_of_a_secret_consistently() {
        let o = Obfuscator::random().unwrap();
        let mut r = rec();
        o.apply(&mut r);
        let json = String::from_utf8(encode(&[r.clone()], true)).unwrap();
        for secret in ["T-SECRET", "C-SECRET", "K-SECRET"] {
            assert!(!json.contains(secret), "{secret} leaked: {json}");
        }
        let t = o.hide("token", "T-SECRET");
        assert_eq!(r.token.as_deref(), Some(t.as_str()));
        assert_eq!(r.headers[0].1, format!("Bearer {t}"));
        assert!(json.contains("theme=obf:"), "every cookie value is hidden");
        assert!(json.contains("page=2") && json.contains("curl/8") && json.contains("\"bob\""));
        assert_ne!(
            o.hide("token", "a"),
            o.hide("cookie", "a"),
            "kinds do not collide"
        );
    }

    #[test]
    fn key_file_gives_stable_pseudonyms() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state").join(KEY_FILE);
        let a = Obfuscator::from_key_file(&p).unwrap();
        let b = Obfuscator::from_key_file(&p).unwrap();
        assert_eq!(a.hide("token", "x"), b.hide("token", "x"));
        assert_ne!(
            a.hide("token", "x"),
            Obfuscator::random().unwrap().hide("token", "x")
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "key file readable by others: {mode:o}");
        }
    }

    #[test]
    fn debug_shows_no_values() {
        let s = format!("{:?}", rec());
        assert!(!s.contains("SECRET") && !s.contains("10.1.2.3"), "{s}");
    }

    #[test]
    fn wire_format_names() {
        let v: serde_json::Value = serde_json::from_slice(&encode(&[rec()], false)).unwrap();
        let r = &v["records"][0];
        assert_eq!(v["source"], "ase");
        assert_eq!(r["time"], "2023-11-14T22:13:20.000Z");
        assert_eq!(r["client_port"], 5555);
        assert_eq!(
            r["url"],
            "/shop/items?apikey=K-SECRET&access_token=T-SECRET&page=2"
        );
        assert_eq!(r["headers"][3]["user-agent"], "curl/8");
        assert_eq!(r["cookie"]["name"], "JSESSIONID");
        assert_eq!(r["response_code"], 200);
    }
}
