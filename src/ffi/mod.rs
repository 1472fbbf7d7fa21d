//! The C ABI: every `extern "C"` function of `include/ase.h`.
//!
//! Conventions (rustls-ffi's; docs/design.md, "C API"): functions are
//! `ase_<object>_<verb>`; every fallible one returns an [`ase_result`];
//! outputs come last and are written only on success; bytes cross as
//! [`ase_str`] (pointer + length, never NUL-terminated by contract); every body
//! runs inside [`panic::boundary`]; NULL is checked before any dereference.

#![allow(
    clippy::not_unsafe_ptr_arg_deref,
    reason = "exports are called from C: every pointer is checked for NULL and each doc comment states the caller's obligations"
)]

mod abi_enum;
mod config_info;
pub mod panic;
/// cbindgen:ignore
pub mod result;
pub mod types;

use std::ffi::{c_char, c_void};
use std::path::Path;

use crate::engine::{Engine, EngineError, check_config};
use crate::load::LoadError;
use crate::policy::Switch;
use crate::policy::decide::{Action, Decision, Reason, Request};
use crate::policy::extract::{Headers, parse_ip};
use crate::policy::{IdError, IdKind, Identifier, Source, UnknownApi};
use crate::sync::abs::TrafficRecord;
pub use config_info::{ase_config_fail_verdict, ase_config_notice};
use panic::boundary;
pub use result::ResultCode;
pub use types::*;

/// An engine: configuration, APIs, lists, counters, and the threads that keep
/// them in step with the host's shared state.
///
/// Thread safety: every function taking `const ase_engine *` may be called
/// from any number of threads at once. Create it after `fork()` (threads do
/// not survive a fork) and free it once.
#[allow(non_camel_case_types, reason = "C name")]
pub struct ase_engine {
    engine: Engine,
}

impl From<&EngineError> for ase_result {
    fn from(e: &EngineError) -> ase_result {
        match e {
            EngineError::Load(LoadError::Config(_)) => ASE_ERR_CONFIG,
            EngineError::Load(LoadError::Api(_)) => ASE_ERR_API_JSON,
            EngineError::UnknownApi(_) => ASE_ERR_UNKNOWN_API,
            EngineError::Store(_) => ASE_ERR_STORE,
            EngineError::NotFound => ASE_ERR_NOT_FOUND,
            EngineError::Abs(_) => ASE_ERR_ABS,
        }
    }
}

impl From<IdError> for ase_result {
    fn from(_: IdError) -> ase_result {
        ASE_ERR_INVALID_IDENTIFIER
    }
}

/// The library version, e.g. `"0.1.0"`: a static NUL-terminated string.
///
/// Thread safety: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn ase_version() -> *const c_char {
    boundary(|| concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast())
}

/// A static NUL-terminated message for a result code; unknown codes give
/// `"unknown result code"`.
///
/// Thread safety: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn ase_result_str(result: ase_result) -> *const c_char {
    boundary(|| {
        ResultCode::try_from(result)
            .map_or(c"unknown result code", ResultCode::message)
            .as_ptr()
    })
}

/// The one copy of a message out to C: NUL-terminated into `buf`, cut at a
/// character boundary to fit (C code may print it as UTF-8), with each of
/// `secrets` masked (messages never carry the ABS keys, but the copy out to C
/// is the last place to make sure). Nothing if `buf` is empty.
fn copy_message(buf: &mut [c_char], msg: &str, secrets: &[&str]) {
    let Some(cap) = buf.len().checked_sub(1) else {
        return;
    };
    let mut m = std::borrow::Cow::Borrowed(msg);
    for k in secrets.iter().filter(|k| k.len() >= 4) {
        if m.contains(k) {
            m = m.replace(k, "***").into();
        }
    }
    let mut n = m.len().min(cap);
    while !m.is_char_boundary(n) {
        n -= 1;
    }
    for (d, b) in buf.iter_mut().zip(&m.as_bytes()[..n]) {
        *d = *b as c_char;
    }
    buf[n] = 0;
}

/// Copies `msg` into a caller's error buffer (`err_buf`, `err_buf_len`
/// bytes; NULL or 0: nothing).
fn write_error(err_buf: *mut c_char, err_buf_len: usize, msg: &str) {
    if err_buf.is_null() || err_buf_len == 0 {
        return;
    }
    // SAFETY: the caller gave `err_buf_len` writable bytes at `err_buf`, per
    // the contract of the export that takes them.
    let buf = unsafe { std::slice::from_raw_parts_mut(err_buf, err_buf_len) };
    copy_message(buf, msg, &[]);
}

/// The `config_path` argument of `ase_engine_new`, `ase_config_check` and
/// `ase_config_fail_verdict`, or the code and message each gives for it.
fn config_file<'a>(config_path: ase_str) -> Result<&'a Path, (ase_result, &'static str)> {
    // SAFETY: the caller guarantees `config_path` describes readable bytes.
    let bytes = unsafe { config_path.as_bytes() }.ok_or((
        ASE_ERR_NULL_PARAMETER,
        "config path is NULL with a non-zero length",
    ))?;
    let path = std::str::from_utf8(bytes)
        .map_err(|_| (ASE_ERR_INVALID_UTF8, "config path is not valid UTF-8"))?;
    if path.is_empty() {
        return Err((ASE_ERR_CONFIG, "config path is empty"));
    }
    Ok(Path::new(path))
}

/// Loads `ase.conf` at `config_path` (with its `abs.conf` and API directory),
/// opens the state, starts the engine's threads, and writes the new engine to
/// `*engine_out`.
///
/// It first makes the checks of `ase_config_check`, which fail here with the
/// same code and message. On failure returns `ASE_ERR_CONFIG`,
/// `ASE_ERR_API_JSON`, `ASE_ERR_ABS`, `ASE_ERR_STORE`, ... and, when
/// `err_buf` is not NULL, writes a NUL-terminated message naming the file,
/// line and key (truncated to `err_buf_len`). `*engine_out` is written only
/// on success; free the engine with `ase_engine_free`.
///
/// Thread safety: any thread; call after `fork()`.
#[unsafe(no_mangle)]
pub extern "C" fn ase_engine_new(
    config_path: ase_str,
    err_buf: *mut c_char,
    err_buf_len: usize,
    engine_out: *mut *mut ase_engine,
) -> ase_result {
    boundary(|| {
        ase_engine_new_ex(
            config_path,
            std::ptr::null(),
            err_buf,
            err_buf_len,
            engine_out,
        )
    })
}

/// `ase_engine_new` with options (`options` may be NULL: the defaults).
///
/// With `ASE_ENGINE_EVENTED` the engine starts no thread: call
/// `ase_engine_tick` from the host's event loop, at the interval it
/// returns. In that mode the engine maps the host's lists snapshot, applies
/// later changes and writes real-time detections from the tick, and the one
/// engine of the host that finds the host role free takes it and starts the
/// one thread that builds snapshots (none with `ASE_ENGINE_NO_HOST_ROLE`).
/// An unknown flag gives `ASE_ERR_INVALID_ARGUMENT`.
///
/// Thread safety: any thread; call after `fork()`.
#[unsafe(no_mangle)]
pub extern "C" fn ase_engine_new_ex(
    config_path: ase_str,
    options: *const ase_engine_options,
    err_buf: *mut c_char,
    err_buf_len: usize,
    engine_out: *mut *mut ase_engine,
) -> ase_result {
    boundary(|| {
        if engine_out.is_null() {
            return ASE_ERR_NULL_PARAMETER;
        }
        // SAFETY: NULL or a valid options struct, per the contract.
        let flags = unsafe { options.as_ref() }.map_or(0, |o| o.flags);
        if flags & !(ASE_ENGINE_EVENTED | ASE_ENGINE_NO_HOST_ROLE) != 0 {
            write_error(err_buf, err_buf_len, "unknown ase_engine_options flag");
            return ASE_ERR_INVALID_ARGUMENT;
        }
        let opts = crate::engine::EngineOptions {
            evented: flags & ASE_ENGINE_EVENTED != 0,
            host_role: flags & ASE_ENGINE_NO_HOST_ROLE == 0,
        };
        let path = match config_file(config_path) {
            Ok(p) => p,
            Err((code, msg)) => {
                write_error(err_buf, err_buf_len, msg);
                return code;
            }
        };
        match Engine::open_with(path, opts) {
            Ok(engine) => {
                let e = Box::new(ase_engine { engine });
                // SAFETY: checked non-NULL above; the caller owns the out slot.
                unsafe { *engine_out = Box::into_raw(e) };
                ASE_OK
            }
            Err(e) => {
                write_error(err_buf, err_buf_len, &e.to_string());
                (&e).into()
            }
        }
    })
}

/// Validates `ase.conf` at `config_path`, its `abs.conf` and every API JSON
/// file, without opening the state store or starting threads: what a master
/// process (nginx `-t`, reload) should call before forking workers. When
/// `abs.conf` names an endpoint it also builds the TLS client to ABS (so
/// `abs_ca_cert_path` must be readable and hold a usable certificate) and
/// reads the ABS obfuscation key file in `state_dir` if there is one. It
/// writes nothing.
///
/// These are the checks `ase_engine_new` starts with: whatever fails here
/// fails there with the same code and message, and a configuration that
/// passes can still fail there only for what starting alone finds (the
/// threads, creating the key file).
///
/// Returns `ASE_OK`, or `ASE_ERR_CONFIG` / `ASE_ERR_API_JSON` /
/// `ASE_ERR_ABS` (obfuscation key file) / `ASE_ERR_INVALID_UTF8` /
/// `ASE_ERR_NULL_PARAMETER` with, when `err_buf` is not NULL, a
/// NUL-terminated message naming the file, line and key.
///
/// Thread safety: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn ase_config_check(
    config_path: ase_str,
    err_buf: *mut c_char,
    err_buf_len: usize,
) -> ase_result {
    boundary(|| {
        let path = match config_file(config_path) {
            Ok(p) => p,
            Err((code, msg)) => {
                write_error(err_buf, err_buf_len, msg);
                return code;
            }
        };
        match check_config(path) {
            Ok(_) => ASE_OK,
            Err(e) => {
                write_error(err_buf, err_buf_len, &e.to_string());
                (&e).into()
            }
        }
    })
}

/// Stops the engine's threads and frees it. NULL is a no-op. Strings from
/// verdicts of this engine become invalid.
///
/// Thread safety: no other call may use `engine` during or after this one.
#[unsafe(no_mangle)]
pub extern "C" fn ase_engine_free(engine: *mut ase_engine) {
    boundary(|| {
        if !engine.is_null() {
            // SAFETY: `engine` came from `ase_engine_new` and is freed once, per contract.
            drop(unsafe { Box::from_raw(engine) });
        }
    })
}

fn engine_ref<'a>(e: *const ase_engine) -> Option<&'a ase_engine> {
    // SAFETY: a non-NULL engine pointer came from `ase_engine_new` and is live
    // until `ase_engine_free`, per the API contract.
    unsafe { e.as_ref() }
}

/// Validated request headers.
struct CHeaders<'a>(&'a [ase_header]);

impl Headers for CHeaders<'_> {
    fn count(&self) -> usize {
        self.0.len()
    }
    fn at(&self, i: usize) -> (&[u8], &[u8]) {
        let h = &self.0[i];
        // SAFETY: every header was checked by `check_headers` (non-NULL data for
        // a non-zero length) and the caller keeps them readable for the call.
        unsafe {
            (
                h.name.as_bytes().unwrap_or_default(),
                h.value.as_bytes().unwrap_or_default(),
            )
        }
    }
}

fn check_headers<'a>(req: &ase_request) -> Result<&'a [ase_header], ase_result> {
    if req.headers_len == 0 {
        return Ok(&[]);
    }
    if req.headers.is_null() {
        return Err(ASE_ERR_NULL_PARAMETER);
    }
    // SAFETY: non-NULL, and the caller guarantees `headers_len` readable elements.
    let hs = unsafe { std::slice::from_raw_parts(req.headers, req.headers_len) };
    let bad = |s: &ase_str| s.len != 0 && s.data.is_null();
    if hs.iter().any(|h| bad(&h.name) || bad(&h.value)) {
        return Err(ASE_ERR_INVALID_HEADER);
    }
    Ok(hs)
}

/// A request's fields, validated, borrowed from the caller for one call.
struct Parts<'a> {
    client_ip: Option<u128>,
    method: &'a [u8],
    scheme: &'a [u8],
    host: &'a [u8],
    uri: &'a [u8],
    http_version: &'a [u8],
    username: &'a [u8],
    unknown_api: Option<UnknownApi>,
    client_port: u16,
    headers: CHeaders<'a>,
}

impl Parts<'_> {
    fn request(&self) -> Request<'_, CHeaders<'_>> {
        Request {
            client_ip: self.client_ip,
            method: self.method,
            scheme: self.scheme,
            host: self.host,
            uri: self.uri,
            headers: &self.headers,
            username: self.username,
            unknown_api: self.unknown_api,
        }
    }
}

/// Reads and validates an `ase_request` (the errors of `ase_check_request`).
fn parts<'a>(request: *const ase_request) -> Result<Parts<'a>, ase_result> {
    // SAFETY: a non-NULL request points to a valid `ase_request` for the call.
    let req = unsafe { request.as_ref() }.ok_or(ASE_ERR_NULL_PARAMETER)?;
    let hs = check_headers(req)?;
    // SAFETY: the caller keeps every string of the request readable for the call.
    let s = |x: &ase_str| unsafe { x.as_bytes() }.ok_or(ASE_ERR_NULL_PARAMETER);
    let (ip, method, scheme, host, uri, http_version, username) = (
        s(&req.client_ip)?,
        s(&req.method)?,
        s(&req.scheme)?,
        s(&req.host)?,
        s(&req.uri)?,
        s(&req.http_version)?,
        s(&req.username)?,
    );
    let client_ip = if ip.is_empty() {
        None
    } else {
        Some(parse_ip(ip, false).ok_or(ASE_ERR_INVALID_CLIENT_IP)?)
    };
    let unknown_api = match req.unknown_api {
        ASE_UNKNOWN_API_DEFAULT => None,
        ASE_UNKNOWN_API_PASS => Some(UnknownApi::Pass),
        ASE_UNKNOWN_API_REJECT => Some(UnknownApi::Reject),
        _ => return Err(ASE_ERR_INVALID_ARGUMENT),
    };
    Ok(Parts {
        client_ip,
        method,
        scheme,
        host,
        uri,
        http_version,
        username,
        unknown_api,
        client_port: req.client_port,
        headers: CHeaders(hs),
    })
}

/// Decides one request and writes the verdict to `*verdict_out`.
///
/// A verdict is not an error: a blocked request returns `ASE_OK` with
/// `action` = `ASE_ACTION_BLOCK`. Errors: `ASE_ERR_NULL_PARAMETER` (NULL
/// engine, request or verdict, or a string with NULL data and a non-zero
/// length), `ASE_ERR_INVALID_HEADER`, `ASE_ERR_INVALID_CLIENT_IP` (non-empty
/// and not an address), `ASE_ERR_INVALID_ARGUMENT` (bad `unknown_api`).
/// Header values may be any bytes. The verdict's strings live until
/// `ase_engine_free`. Takes no lock, does no I/O, allocates nothing.
///
/// Stack: up to about 48 KB of the calling thread's stack (buffers for
/// decoded query values and JWT payloads up to 16 KB, twice when a request
/// repeats an identifier); give threads that call it at least 128 KB.
///
/// Thread safety: any number of threads at once.
#[unsafe(no_mangle)]
pub extern "C" fn ase_check_request(
    engine: *const ase_engine,
    request: *const ase_request,
    verdict_out: *mut ase_verdict,
) -> ase_result {
    run(|| {
        let e = engine_ref(engine).ok_or(ASE_ERR_NULL_PARAMETER)?;
        if request.is_null() || verdict_out.is_null() {
            return Err(ASE_ERR_NULL_PARAMETER);
        }
        let p = parts(request)?;
        let d = e.engine.check(&p.request());
        let v = ase_verdict::from(&d);
        // SAFETY: checked non-NULL above; the caller owns the out slot.
        unsafe { *verdict_out = v };
        Ok(())
    })
}

impl From<&Decision<'_>> for ase_verdict {
    /// The C form of a decision; its strings borrow the decision's, which
    /// live as long as the engine (or, for `fail_mode`, the library).
    #[inline(always)]
    fn from(d: &Decision<'_>) -> ase_verdict {
        ase_verdict {
            action: d.action.into(),
            reason: d.reason.into(),
            status: d.status as u32,
            would_block: d.would_block,
            matched_kind: d.matched.map_or(ASE_ID_NONE, ase_id_kind::from),
            source: d.source.map_or(ASE_SOURCE_ALL, ase_source::from),
            status_text: ase_str::from_bytes(d.status_text.as_bytes()),
            body: ase_str::from_bytes(d.body.as_bytes()),
            location: ase_str::from_bytes(d.location.as_bytes()),
            api_name: d
                .api
                .map_or(ase_str::EMPTY, |a| ase_str::from_bytes(a.name.as_bytes())),
        }
    }
}

/// Reads and validates an `ase_identifier`.
fn identifier(id: *const ase_identifier) -> Result<Identifier, ase_result> {
    // SAFETY: a non-NULL identifier points to a valid `ase_identifier` for the call.
    let id = unsafe { id.as_ref() }.ok_or(ASE_ERR_NULL_PARAMETER)?;
    let kind = IdKind::try_from(id.kind)?;
    // SAFETY: the caller keeps the strings readable for the call.
    let (name, value) = unsafe { (id.name.as_bytes(), id.value.as_bytes()) };
    let (name, value) = (
        name.ok_or(ASE_ERR_NULL_PARAMETER)?,
        value.ok_or(ASE_ERR_NULL_PARAMETER)?,
    );
    let name = std::str::from_utf8(name).map_err(|_| ASE_ERR_INVALID_UTF8)?;
    let value = std::str::from_utf8(value).map_err(|_| ASE_ERR_INVALID_UTF8)?;
    Ok(Identifier::new(kind, name, value)?)
}

/// The shape of every getter: checks the engine and the out pointer, computes
/// the value, and writes it only on success.
fn fill<T>(
    engine: *const ase_engine,
    out: *mut T,
    f: impl FnOnce(&ase_engine) -> Result<T, ase_result>,
) -> ase_result {
    run(|| {
        let e = engine_ref(engine).ok_or(ASE_ERR_NULL_PARAMETER)?;
        if out.is_null() {
            return Err(ASE_ERR_NULL_PARAMETER);
        }
        let v = f(e)?;
        // SAFETY: checked non-NULL; the caller owns the out slot.
        unsafe { out.write(v) };
        Ok(())
    })
}

/// Checks the engine and identifier of a list call, then runs `f` on them.
fn with_id(
    engine: *const ase_engine,
    id: *const ase_identifier,
    f: impl FnOnce(&Engine, &Identifier) -> Result<(), EngineError>,
) -> Result<(), ase_result> {
    let e = engine_ref(engine).ok_or(ASE_ERR_NULL_PARAMETER)?;
    let id = identifier(id)?;
    settled(&e.engine, f(&e.engine, &id))
}

/// After a list or switch change: waits up to 1 s for every engine of the
/// host to apply it (docs/design.md, "Threads and processes"). The change is
/// durable and in force here either way; what the wait found goes to
/// `ase_health` (`engines_live`, `engines_lagging_last_change`).
fn settled(e: &Engine, r: Result<(), EngineError>) -> Result<(), ase_result> {
    r.map_err(|e| ase_result::from(&e))?;
    e.wait_applied(
        e.presence().last_change_seq(),
        crate::sync::presence::DEFAULT_WAIT,
    );
    Ok(())
}

fn expiry(ttl_seconds: u64) -> u64 {
    if ttl_seconds == 0 {
        0
    } else {
        crate::clock::now_ms().saturating_add(ttl_seconds.saturating_mul(1000))
    }
}

fn run(f: impl FnOnce() -> Result<(), ase_result>) -> ase_result {
    boundary(|| match f() {
        Ok(()) => ASE_OK,
        Err(r) => r,
    })
}

/// Adds an identifier to the manual deny list; `ttl_seconds` > 0 makes it
/// expire. Adding an entry that is already listed refreshes its expiry.
/// Errors: `ASE_ERR_NULL_PARAMETER`, `ASE_ERR_INVALID_ARGUMENT` (kind),
/// `ASE_ERR_INVALID_UTF8`, `ASE_ERR_INVALID_IDENTIFIER`, `ASE_ERR_STORE`.
///
/// Like every list and switch change, it returns once every engine running
/// on the host (other nginx workers, other processes) has applied the
/// change, or after at most 1 s. Either way the change is durable and in
/// force in this engine, and the result is `ASE_OK`; engines still lagging
/// apply it when they next read the store, and `ase_engine_health` counts
/// them (`engines_lagging_last_change`). Do not call it from an event loop.
///
/// Thread safety: any thread; writers are serialised internally.
#[unsafe(no_mangle)]
pub extern "C" fn ase_deny_add(
    engine: *const ase_engine,
    id: *const ase_identifier,
    ttl_seconds: u64,
) -> ase_result {
    run(|| {
        with_id(engine, id, |n, id| {
            n.deny_add(id, Source::Manual, expiry(ttl_seconds))
                .map(|_| ())
        })
    })
}

/// Removes an identifier from the deny list, whatever its sources.
/// `ASE_ERR_NOT_FOUND` if it was not listed.
///
/// Waits for the host's engines to apply the change, as `ase_deny_add` does.
///
/// Thread safety: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn ase_deny_remove(
    engine: *const ase_engine,
    id: *const ase_identifier,
) -> ase_result {
    run(|| with_id(engine, id, |n, id| n.deny_remove(id)))
}

fn source_mask(source: ase_source) -> Result<u8, ase_result> {
    if source == ASE_SOURCE_ALL {
        Ok(Source::ANY)
    } else {
        Source::try_from(source).map(Source::bit)
    }
}

/// Deletes every deny entry of `source` (`ASE_SOURCE_ALL`: the whole list).
///
/// Waits for the host's engines to apply the change, as `ase_deny_add` does.
///
/// Thread safety: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn ase_deny_clear(engine: *const ase_engine, source: ase_source) -> ase_result {
    run(|| {
        let e = engine_ref(engine).ok_or(ASE_ERR_NULL_PARAMETER)?;
        let mask = source_mask(source)?;
        settled(&e.engine, e.engine.deny_clear(mask).map(|_| ()))
    })
}

/// Adds an identifier to the allow list (`ttl_seconds` > 0 makes it expire).
///
/// Waits for the host's engines to apply the change, as `ase_deny_add` does.
///
/// Thread safety: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn ase_allow_add(
    engine: *const ase_engine,
    id: *const ase_identifier,
    ttl_seconds: u64,
) -> ase_result {
    run(|| {
        with_id(engine, id, |n, id| {
            n.allow_add(id, expiry(ttl_seconds)).map(|_| ())
        })
    })
}

/// Removes an identifier from the allow list; `ASE_ERR_NOT_FOUND` if absent.
///
/// Waits for the host's engines to apply the change, as `ase_deny_add` does.
///
/// Thread safety: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn ase_allow_remove(
    engine: *const ase_engine,
    id: *const ase_identifier,
) -> ase_result {
    run(|| with_id(engine, id, |n, id| n.allow_remove(id)))
}

/// Empties the allow list.
///
/// Waits for the host's engines to apply the change, as `ase_deny_add` does.
///
/// Thread safety: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn ase_allow_clear(engine: *const ase_engine) -> ase_result {
    run(|| {
        let e = engine_ref(engine).ok_or(ASE_ERR_NULL_PARAMETER)?;
        settled(&e.engine, e.engine.allow_clear().map(|_| ()))
    })
}

fn each_entry(
    items: Vec<(Identifier, u32, u64)>,
    cb: unsafe extern "C" fn(*mut c_void, *const ase_entry) -> i32,
    userdata: *mut c_void,
) {
    for (id, source, exp) in items {
        let entry = ase_entry {
            kind: id.kind.into(),
            name: ase_str::from_bytes(id.name.as_bytes()),
            value: ase_str::from_bytes(id.value.as_bytes()),
            source,
            expires_ms: exp,
        };
        // SAFETY: `cb` is the caller's callback; `entry` lives across the call.
        if unsafe { cb(userdata, &entry) } != 0 {
            break;
        }
    }
}

/// Calls `cb(userdata, entry)` for each deny entry of `source`
/// (`ASE_SOURCE_ALL`: every source, grouped by source in ASE's order, each in
/// insertion order; an identifier listed by two sources appears twice).
/// Expired entries are skipped. Stops early when `cb` returns non-zero.
///
/// Thread safety: any thread; `cb` runs on the calling thread and must not
/// call into this engine's list-changing functions.
#[unsafe(no_mangle)]
pub extern "C" fn ase_deny_list(
    engine: *const ase_engine,
    source: ase_source,
    cb: ase_entry_cb,
    userdata: *mut c_void,
) -> ase_result {
    run(|| {
        let e = engine_ref(engine).ok_or(ASE_ERR_NULL_PARAMETER)?;
        let cb = cb.ok_or(ASE_ERR_NULL_PARAMETER)?;
        let mask = source_mask(source)?;
        let now = crate::clock::now_ms();
        // The store's rows, in the order they were added, when it answers:
        // the lists in memory stand partly on the host's snapshot, whose
        // entries are in no particular order.
        if let Some(rows) = stored(e, crate::store::List::Deny, mask, now) {
            let mut items = Vec::with_capacity(rows.len());
            for s in Source::ALL.into_iter().filter(|s| mask & s.bit() != 0) {
                for r in rows.iter().filter(|r| r.source == s) {
                    items.push((r.id.clone(), s.into(), r.expiry));
                }
            }
            each_entry(items, cb, userdata);
            return Ok(());
        }
        let entries = e.engine.deny_entries(mask);
        let mut items = Vec::with_capacity(entries.len());
        for s in Source::ALL.into_iter().filter(|s| mask & s.bit() != 0) {
            for (id, m) in &entries {
                if m.sources & s.bit() == 0 {
                    continue;
                }
                let exp = match s {
                    Source::Manual => m.manual_exp,
                    Source::Abs => m.abs_exp,
                    _ => 0,
                };
                if exp == 0 || exp > now {
                    items.push((id.clone(), s.into(), exp));
                }
            }
        }
        each_entry(items, cb, userdata);
        Ok(())
    })
}

/// The unexpired rows of `list` with a source in `mask`, from the engine's
/// store, in the order they were added; `None` when the store does not
/// answer (the caller lists what the engine holds in memory).
fn stored(
    e: &ase_engine,
    list: crate::store::List,
    mask: u8,
    now: u64,
) -> Option<Vec<crate::store::StoredEntry>> {
    e.engine.store()?.entries(list, mask, now).ok()
}

/// Calls `cb(userdata, entry)` for each allow entry, in insertion order.
/// Expired entries are skipped. Stops early when `cb` returns non-zero.
///
/// Thread safety: as `ase_deny_list`.
#[unsafe(no_mangle)]
pub extern "C" fn ase_allow_list(
    engine: *const ase_engine,
    cb: ase_entry_cb,
    userdata: *mut c_void,
) -> ase_result {
    run(|| {
        let e = engine_ref(engine).ok_or(ASE_ERR_NULL_PARAMETER)?;
        let cb = cb.ok_or(ASE_ERR_NULL_PARAMETER)?;
        let now = crate::clock::now_ms();
        if let Some(rows) = stored(e, crate::store::List::Allow, Source::ANY, now) {
            let items = rows
                .into_iter()
                .map(|r| (r.id, ASE_SOURCE_MANUAL, r.expiry))
                .collect();
            each_entry(items, cb, userdata);
            return Ok(());
        }
        let items = e
            .engine
            .allow_entries()
            .into_iter()
            .filter(|(_, m)| m.allow_exp == 0 || m.allow_exp > now)
            .map(|(id, m)| (id, ASE_SOURCE_MANUAL, m.allow_exp))
            .collect();
        each_entry(items, cb, userdata);
        Ok(())
    })
}

/// Turns a switch on or off. Turning `ASE_SWITCH_ASE_DETECTED_ATTACK` off
/// deletes every real-time deny entry, as ASE does.
///
/// Waits for the host's engines to apply the change, as `ase_deny_add` does.
///
/// Thread safety: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn ase_switch_set(
    engine: *const ase_engine,
    which: ase_switch,
    on: bool,
) -> ase_result {
    run(|| {
        let e = engine_ref(engine).ok_or(ASE_ERR_NULL_PARAMETER)?;
        let s = Switch::try_from(which)?;
        settled(&e.engine, e.engine.set_switch(s, on))
    })
}

/// Reads a switch into `*on_out`.
///
/// Thread safety: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn ase_switch_get(
    engine: *const ase_engine,
    which: ase_switch,
    on_out: *mut bool,
) -> ase_result {
    fill(engine, on_out, |e| {
        let s = Switch::try_from(which)?;
        Ok(e.engine.switch(s))
    })
}

/// Sets `enable_blocking` of the API named `api` (monitor mode when false).
/// `ASE_ERR_UNKNOWN_API` if no API has that name.
///
/// Waits for the host's engines to apply the change, as `ase_deny_add` does.
///
/// Thread safety: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn ase_api_set_blocking(
    engine: *const ase_engine,
    api: ase_str,
    on: bool,
) -> ase_result {
    run(|| {
        let e = engine_ref(engine).ok_or(ASE_ERR_NULL_PARAMETER)?;
        // SAFETY: the caller keeps `api` readable for the call.
        let name = unsafe { api.as_bytes() }.ok_or(ASE_ERR_NULL_PARAMETER)?;
        let name = std::str::from_utf8(name).map_err(|_| ASE_ERR_INVALID_UTF8)?;
        settled(&e.engine, e.engine.set_api_blocking(name, on))
    })
}

/// Copies the counters and list sizes into `*stats_out`.
///
/// Thread safety: any thread; counters are read one by one, not as a snapshot.
#[unsafe(no_mangle)]
pub extern "C" fn ase_engine_stats(
    engine: *const ase_engine,
    stats_out: *mut ase_stats,
) -> ase_result {
    fill(engine, stats_out, |e| {
        let s = e.engine.stats();
        let out = ase_stats {
            checked: s.checked,
            allowed: s.allowed,
            blocked: s.blocked_total(),
            would_block: s.would_block.iter().sum(),
            blocked_by_reason: s.blocked,
            would_block_by_reason: s.would_block,
            detections: s.detections,
            deny_entries: s.deny_entries,
            allow_entries: s.allow_entries,
            allowed_by_reason: s.allowed_by_reason,
        };
        Ok(out)
    })
}

/// Fetches the ABS attack list now and applies it (every process of the host
/// switches to it), whatever `enable_abs_attack` and the poll election say,
/// then waits up to `timeout_ms` for the result. `timeout_ms` 0 only asks
/// for the sync and returns at once.
///
/// Errors: `ASE_ERR_NULL_PARAMETER`; `ASE_ERR_ABS` when `abs.conf` names no
/// endpoint, when the sync failed (ABS down, refused, bad body: the last
/// good list stays in force; `ase_abs_status` tells why) or did not finish
/// within `timeout_ms`.
///
/// Thread safety: any thread. It blocks for up to `timeout_ms`: do not call
/// it from an event loop (nginx) with a non-zero timeout.
#[unsafe(no_mangle)]
pub extern "C" fn ase_abs_sync_now(engine: *const ase_engine, timeout_ms: u32) -> ase_result {
    run(|| {
        let e = engine_ref(engine).ok_or(ASE_ERR_NULL_PARAMETER)?;
        if timeout_ms == 0 {
            return e.engine.abs_request_sync().map_err(|e| (&e).into());
        }
        let wait = std::time::Duration::from_millis(u64::from(timeout_ms));
        e.engine
            .abs_sync_now(wait)
            .map(|_| ())
            .map_err(|e| (&e).into())
    })
}

/// Copies the ABS state into `*status_out`: sync state of the host's latest
/// attempt and this engine's traffic counters. Without an endpoint in
/// `abs.conf` it returns `ASE_OK` with `configured` false and the rest 0.
/// Takes a short lock, does no I/O.
///
/// Thread safety: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn ase_abs_status(
    engine: *const ase_engine,
    status_out: *mut ase_abs_state,
) -> ase_result {
    fill(engine, status_out, |e| {
        let engine = &e.engine;
        let mut out = ase_abs_state {
            configured: false,
            enabled: false,
            leader: false,
            traffic_enabled: false,
            consecutive_failures: 0,
            last_attempt_ms: 0,
            last_success_ms: 0,
            entries: 0,
            bad_items: 0,
            expired_items: 0,
            syncs: 0,
            failures: 0,
            traffic_queued: 0,
            traffic_sent: 0,
            traffic_dropped: 0,
            last_error: [0; ASE_MESSAGE_LEN],
            dropped_items: 0,
            memory_bytes: 0,
        };
        if let Some(st) = engine.abs_status() {
            out.configured = true;
            out.enabled = engine.switch(Switch::AbsAttack);
            out.leader = st.leader;
            out.traffic_enabled = engine.switch(Switch::Abs);
            out.consecutive_failures = st.consecutive_failures;
            out.last_attempt_ms = st.last_attempt_ms;
            out.last_success_ms = st.last_success_ms;
            out.entries = st.entries;
            out.bad_items = st.bad_items;
            out.expired_items = st.expired_items;
            out.dropped_items = st.dropped_items;
            out.memory_bytes = st.memory_bytes;
            out.syncs = st.syncs;
            out.failures = st.failures;
            if let Some(m) = &st.last_error {
                let abs = &engine.config().abs;
                copy_message(&mut out.last_error, m, &[&abs.access_key, &abs.secret_key]);
            }
        }
        if let Some(t) = engine.shipper_status() {
            // An evented engine without the host role has no poller, but
            // ABS is configured and its traffic goes through the spool.
            out.configured = true;
            out.traffic_enabled = engine.switch(Switch::Abs);
            out.traffic_queued = t.queued;
            out.traffic_sent = t.sent_records + t.spooled;
            out.traffic_dropped = t.dropped_full + t.dropped_failed;
        }
        Ok(out)
    })
}

/// Reports a request to ABS as traffic (docs/abs.md): the
/// request as given to `ase_check_request`, the verdict it returned, and the
/// status the host answered with (`response_status` 0: unknown). Call it
/// once the response status is known (nginx: the log phase).
///
/// A no-op returning `ASE_OK` while `enable_abs` is off or `abs.conf` names
/// no endpoint. Otherwise the record is built on the calling thread (header
/// values cut at 4 KiB, at most 64 headers) and queued without waiting; when
/// the queue is full it is dropped and counted (`traffic_dropped`). Never
/// does I/O. An evented engine whose process does not hold the host role
/// queues it for its spool file, which `ase_engine_tick` writes and the
/// host role's process sends (docs/abs.md, "Traffic from evented
/// engines"). The request's strings are copied; nothing is kept borrowed.
///
/// Errors: `ASE_ERR_NULL_PARAMETER`, and those of `ase_check_request` for a
/// bad request; `ASE_ERR_INVALID_ARGUMENT` for a verdict whose action or
/// reason is out of range, or a `response_status` above 999.
///
/// Thread safety: any number of threads at once.
#[unsafe(no_mangle)]
pub extern "C" fn ase_abs_report(
    engine: *const ase_engine,
    request: *const ase_request,
    verdict: *const ase_verdict,
    response_status: u32,
) -> ase_result {
    run(|| {
        let e = engine_ref(engine).ok_or(ASE_ERR_NULL_PARAMETER)?;
        // SAFETY: a non-NULL verdict points to a valid `ase_verdict` for the call.
        let v = unsafe { verdict.as_ref() }.ok_or(ASE_ERR_NULL_PARAMETER)?;
        if request.is_null() {
            return Err(ASE_ERR_NULL_PARAMETER);
        }
        if response_status > 999 {
            return Err(ASE_ERR_INVALID_ARGUMENT);
        }
        let engine = &e.engine;
        if !engine.traffic_enabled() {
            return Ok(());
        }
        let p = parts(request)?;
        let action = Action::try_from(v.action)?;
        let reason = Reason::try_from(v.reason)?;
        // SAFETY: the caller keeps the verdict's strings readable for the call.
        let api_name = unsafe { v.api_name.as_bytes() }.ok_or(ASE_ERR_NULL_PARAMETER)?;
        // The API by name: identifiers are extracted again as it says.
        let api = std::str::from_utf8(api_name)
            .ok()
            .filter(|n| !n.is_empty())
            .and_then(|n| engine.apis().get(n));
        let d = Decision {
            action,
            reason,
            status: 0,
            would_block: v.would_block,
            matched: None,
            source: None,
            api,
            status_text: "",
            body: "",
            location: "",
        };
        let version = String::from_utf8_lossy(p.http_version);
        let version = version.strip_prefix("HTTP/").unwrap_or(&version);
        let mut rec =
            TrafficRecord::from_check(engine.enforcer(), &p.request(), &d, p.client_port, version);
        if response_status != 0 {
            rec = rec.with_status(response_status as u16);
        }
        // False when dropped (queue full): counted in `traffic_dropped`.
        engine.submit_traffic(rec);
        Ok(())
    })
}

/// One bounded step of an evented engine's background work (see
/// `ase_engine_new_ex`): picks up changes other processes made, moves to a
/// newer lists snapshot (checked a slice per call), writes queued real-time
/// detections and appends queued traffic records to the engine's spool file. It never waits for a lock, builds a snapshot or touches the
/// network. Writes to `*next_ms_out` (when not NULL) when to call it again,
/// in milliseconds. On a threaded engine it does nothing but that.
///
/// Thread safety: any thread; a call while another runs returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn ase_engine_tick(engine: *const ase_engine, next_ms_out: *mut u32) -> ase_result {
    boundary(|| {
        // SAFETY: NULL or an engine from ase_engine_new, per the contract.
        let Some(e) = (unsafe { engine.as_ref() }) else {
            return ASE_ERR_NULL_PARAMETER;
        };
        let next = e.engine.tick();
        if !next_ms_out.is_null() {
            // SAFETY: checked non-NULL; the caller owns the slot.
            unsafe { *next_ms_out = next.as_millis().min(u32::MAX as u128) as u32 };
        }
        ASE_OK
    })
}

/// Copies the state of the engine's shared state (the store, the watcher,
/// the detection writer, what the last change's wait found) into
/// `*health_out`. Takes short locks, no I/O.
///
/// Thread safety: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn ase_engine_health(
    engine: *const ase_engine,
    health_out: *mut ase_health,
) -> ase_result {
    fill(engine, health_out, |e| {
        let h = e.engine.health();
        let mut out = ase_health {
            store_ok: h.store_error.is_none(),
            fail_mode_active: h.failed,
            applied_seq: h.applied_seq,
            full_loads: h.full_loads,
            changes_applied: h.changes_applied,
            detections_written: h.detections_written,
            detections_dropped: h.detections_dropped,
            panics: h.panics,
            last_poll_ms: h.last_poll_ms,
            store_error: [0; ASE_MESSAGE_LEN],
            engines_live: 0,
            engines_lagging_last_change: 0,
            snapshot_seq: h.snapshot_seq,
            snapshot_installs: h.snapshot_installs,
            overlay_entries: h.overlay_entries,
            host_role: h.host_role,
            snapshot_error: [0; ASE_MESSAGE_LEN],
            snapshot_refusals: h.snapshot_refusals,
            snapshot_last_refusal: [0; ASE_MESSAGE_LEN],
        };
        if let Some(m) = &h.last_refusal {
            copy_message(&mut out.snapshot_last_refusal, m, &[]);
        }
        if let Some(m) = h.snapshot_error.as_ref().or(h.build_error.as_ref()) {
            copy_message(&mut out.snapshot_error, m, &[]);
        }
        let w = e.engine.presence().last_wait();
        out.engines_live = w.engines as u64;
        out.engines_lagging_last_change = w.lagging as u64;
        if let Some(m) = &h.store_error {
            copy_message(&mut out.store_error, m, &[]);
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests;
