//! The C types of `include/ase.h`.
//!
//! Enumerations cross the ABI as `uint32_t` typedefs with `#define`d
//! constants (as rustls-ffi does): C may pass any integer, and a Rust enum
//! holding an undeclared value would be undefined behaviour. Each one is tied
//! to its Rust enum by one `abi_enum!` list (`src/ffi/abi_enum.rs`) below its
//! constants. Parameter structs only ever grow at the end.
#![allow(non_camel_case_types, reason = "C names")]

use super::abi_enum::abi_enum;
use crate::policy::{Action, IdKind, Reason, Source, Switch};

/// Result code of every fallible function. 0 is success; codes are never renumbered.
pub type ase_result = u32;
/// Success.
pub const ASE_OK: ase_result = 0;
/// A required pointer was NULL (or a string had NULL data and a non-zero length).
pub const ASE_ERR_NULL_PARAMETER: ase_result = 1;
/// A string that must be UTF-8 (a path, an identifier) was not.
pub const ASE_ERR_INVALID_UTF8: ase_result = 2;
/// An enumeration value or flag out of range.
pub const ASE_ERR_INVALID_ARGUMENT: ase_result = 3;
/// The request's client address is not an IP address.
pub const ASE_ERR_INVALID_CLIENT_IP: ase_result = 4;
/// A request header has a NULL name or value with a non-zero length.
pub const ASE_ERR_INVALID_HEADER: ase_result = 5;
/// An identifier was refused: empty value, bad IP or CIDR, missing or extra name.
pub const ASE_ERR_INVALID_IDENTIFIER: ase_result = 6;
/// The entry to delete is not listed.
pub const ASE_ERR_NOT_FOUND: ase_result = 7;
/// No API has this name.
pub const ASE_ERR_UNKNOWN_API: ase_result = 8;
/// `ase.conf` or `abs.conf` is missing or invalid (the message names file, line, key).
pub const ASE_ERR_CONFIG: ase_result = 100;
/// An API JSON file is invalid (the message names the API and field).
pub const ASE_ERR_API_JSON: ase_result = 101;
/// The state store failed.
pub const ASE_ERR_STORE: ase_result = 200;
/// An ABS operation failed.
pub const ASE_ERR_ABS: ase_result = 300;
/// A panic inside the library was caught; the call had no effect.
pub const ASE_ERR_PANIC: ase_result = 900;

/// Kind of client identifier.
pub type ase_id_kind = u32;
/// IP address or CIDR range.
pub const ASE_ID_IP: ase_id_kind = 0;
/// Cookie (name + value).
pub const ASE_ID_COOKIE: ase_id_kind = 1;
/// OAuth2 bearer token.
pub const ASE_ID_TOKEN: ase_id_kind = 2;
/// API key (name + value; the name is case-insensitive).
pub const ASE_ID_API_KEY: ase_id_kind = 3;
/// User name.
pub const ASE_ID_USERNAME: ase_id_kind = 4;
/// "No identifier" in a verdict.
pub const ASE_ID_NONE: ase_id_kind = 0xFFFF_FFFF;

abi_enum!(IdKind as ase_id_kind, count: [IdKind::ALL.len()] {
    ASE_ID_IP => Ip,
    ASE_ID_COOKIE => Cookie,
    ASE_ID_TOKEN => Token,
    ASE_ID_API_KEY => ApiKey,
    ASE_ID_USERNAME => Username,
});

/// Source of a deny-list entry.
pub type ase_source = u32;
/// Added by an operator.
pub const ASE_SOURCE_MANUAL: ase_source = 0;
/// Fetched from ABS.
pub const ASE_SOURCE_ABS: ase_source = 1;
/// Real-time: decoy API probed.
pub const ASE_SOURCE_DECOY: ase_source = 2;
/// Real-time: protocol violation.
pub const ASE_SOURCE_INVALID_PROTOCOL: ase_source = 3;
/// Real-time: method violation.
pub const ASE_SOURCE_INVALID_METHOD: ase_source = 4;
/// Real-time: content-type violation.
pub const ASE_SOURCE_INVALID_CONTENT_TYPE: ase_source = 5;
/// Every source (for listing and clearing); "no source" in a verdict.
pub const ASE_SOURCE_ALL: ase_source = 0xFFFF_FFFF;

abi_enum!(Source as ase_source, count: [Source::ALL.len()] {
    ASE_SOURCE_MANUAL => Manual,
    ASE_SOURCE_ABS => Abs,
    ASE_SOURCE_DECOY => Decoy,
    ASE_SOURCE_INVALID_PROTOCOL => InvalidProtocol,
    ASE_SOURCE_INVALID_METHOD => InvalidMethod,
    ASE_SOURCE_INVALID_CONTENT_TYPE => InvalidContentType,
});

/// What the host must do with a request.
pub type ase_action = u32;
/// Let the request go on.
pub const ASE_ACTION_ALLOW: ase_action = 0;
/// Refuse it: answer `status` with `body` (403 `Error: Unauthorized`, 503 `Error: Unknown API`).
pub const ASE_ACTION_BLOCK: ase_action = 1;
/// Answer `status` / `status_text` / `body` (decoy or pattern-error response).
pub const ASE_ACTION_RESPOND: ase_action = 2;
/// Redirect with `status` to `location` (empty: `https://` + host + uri).
pub const ASE_ACTION_REDIRECT: ase_action = 3;

abi_enum!(Action as ase_action {
    ASE_ACTION_ALLOW => Allow,
    ASE_ACTION_BLOCK => Block,
    ASE_ACTION_RESPOND => Respond,
    ASE_ACTION_REDIRECT => Redirect,
});

/// Why the verdict is what it is.
pub type ase_reason = u32;
/// Nothing matched.
pub const ASE_REASON_NONE: ase_reason = 0;
/// `enable_firewall` is off.
pub const ASE_REASON_FIREWALL_OFF: ase_reason = 1;
/// No API matches host and path.
pub const ASE_REASON_UNKNOWN_API: ase_reason = 2;
/// An identifier is on the allow list.
pub const ASE_REASON_ALLOW_LIST: ase_reason = 3;
/// The path is a decoy.
pub const ASE_REASON_DECOY: ase_reason = 4;
/// An identifier is on the deny list.
pub const ASE_REASON_DENY_LIST: ase_reason = 5;
/// Scheme not allowed by the API.
pub const ASE_REASON_PROTOCOL: ase_reason = 6;
/// Method not allowed by the API.
pub const ASE_REASON_METHOD: ase_reason = 7;
/// Content type not allowed by the API.
pub const ASE_REASON_CONTENT_TYPE: ase_reason = 8;
/// The state could not be loaded; `fail_mode` decided.
pub const ASE_REASON_FAIL_MODE: ase_reason = 9;
/// An identifier kind occurs more often than is checked, or (with
/// `duplicate_identifiers = reject`) with different values or in a JWT too
/// large to read: 400 `Error: Bad Request`.
pub const ASE_REASON_DUPLICATE_IDENTIFIER: ase_reason = 10;
/// Number of reasons (size of the per-reason arrays in `ase_stats`).
pub const ASE_REASON_COUNT: usize = 11;

abi_enum!(Reason as ase_reason, count: [Reason::COUNT, ASE_REASON_COUNT] {
    ASE_REASON_NONE => None,
    ASE_REASON_FIREWALL_OFF => FirewallOff,
    ASE_REASON_UNKNOWN_API => UnknownApi,
    ASE_REASON_ALLOW_LIST => AllowList,
    ASE_REASON_DECOY => Decoy,
    ASE_REASON_DENY_LIST => DenyList,
    ASE_REASON_PROTOCOL => Protocol,
    ASE_REASON_METHOD => Method,
    ASE_REASON_CONTENT_TYPE => ContentType,
    ASE_REASON_FAIL_MODE => FailMode,
    ASE_REASON_DUPLICATE_IDENTIFIER => DuplicateIdentifier,
});

/// How to treat a request that matches no API.
pub type ase_unknown_api = u32;
/// As `unknown_api` in ase.conf says.
pub const ASE_UNKNOWN_API_DEFAULT: ase_unknown_api = 0;
/// Let it through (the client IP is still checked).
pub const ASE_UNKNOWN_API_PASS: ase_unknown_api = 1;
/// Answer 503 `Error: Unknown API`.
pub const ASE_UNKNOWN_API_REJECT: ase_unknown_api = 2;

/// A runtime switch.
pub type ase_switch = u32;
/// `enable_firewall`.
pub const ASE_SWITCH_FIREWALL: ase_switch = 0;
/// `enable_abs` (traffic to ABS).
pub const ASE_SWITCH_ABS: ase_switch = 1;
/// `enable_abs_attack` (ABS attack list blocks).
pub const ASE_SWITCH_ABS_ATTACK: ase_switch = 2;
/// `enable_ase_detected_attack` (real-time detection; off deletes real-time entries).
pub const ASE_SWITCH_ASE_DETECTED_ATTACK: ase_switch = 3;

abi_enum!(Switch as ase_switch, count: [Switch::ALL.len()] {
    ASE_SWITCH_FIREWALL => Firewall,
    ASE_SWITCH_ABS => Abs,
    ASE_SWITCH_ABS_ATTACK => AbsAttack,
    ASE_SWITCH_ASE_DETECTED_ATTACK => AseDetectedAttack,
});

/// Bytes: pointer and length, laid out like nginx's `ngx_str_t` so one can be
/// passed for the other. Never NUL-terminated by contract; `data` may be NULL
/// only when `len` is 0.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ase_str {
    /// Number of bytes.
    pub len: usize,
    /// The bytes.
    pub data: *const u8,
}

impl ase_str {
    /// An empty string.
    pub const EMPTY: ase_str = ase_str {
        len: 0,
        data: std::ptr::null(),
    };

    /// Borrows Rust bytes (the caller keeps them alive while C uses the result).
    pub fn from_bytes(b: &[u8]) -> ase_str {
        ase_str {
            len: b.len(),
            data: b.as_ptr(),
        }
    }

    /// The bytes, or `None` if `data` is NULL with a non-zero length.
    ///
    /// # Safety
    /// `data` must point to `len` readable bytes that stay valid for `'a`.
    pub unsafe fn as_bytes<'a>(&self) -> Option<&'a [u8]> {
        if self.len == 0 {
            Some(&[])
        } else if self.data.is_null() {
            None
        } else {
            // SAFETY: non-NULL with `len` readable bytes, per this function's contract.
            Some(unsafe { std::slice::from_raw_parts(self.data, self.len) })
        }
    }
}

/// One request header.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ase_header {
    /// Name, any case.
    pub name: ase_str,
    /// Value.
    pub value: ase_str,
}

/// A request, as the host sees it. Every string is borrowed for the call only.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ase_request {
    /// Client address (`1.2.3.4`, `2001:db8::1`); empty when unknown.
    pub client_ip: ase_str,
    /// Method (`GET`).
    pub method: ase_str,
    /// Scheme: `http`, `https`, `ws` or `wss`.
    pub scheme: ase_str,
    /// Host; empty to use the `Host` header.
    pub host: ase_str,
    /// Path with query string, as received.
    pub uri: ase_str,
    /// HTTP version (`HTTP/1.1`, `1.1`); informational.
    pub http_version: ase_str,
    /// Headers array (may be NULL when `headers_len` is 0).
    pub headers: *const ase_header,
    /// Number of headers.
    pub headers_len: usize,
    /// A user name the host authenticated; empty if none.
    pub username: ase_str,
    /// `ASE_UNKNOWN_API_*`: override for requests that match no API.
    pub unknown_api: ase_unknown_api,
    /// The client's TCP port, for the traffic records sent to ABS
    /// (`ase_abs_report`); 0 when unknown. `ase_check_request` ignores it.
    pub client_port: u16,
}

/// The verdict of `ase_check_request`. Strings point into the engine and stay
/// valid until `ase_engine_free`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ase_verdict {
    /// `ASE_ACTION_*`.
    pub action: ase_action,
    /// `ASE_REASON_*`.
    pub reason: ase_reason,
    /// HTTP status to answer with (0 when allowed).
    pub status: u32,
    /// Monitor mode: would have been stopped for `reason`, allowed because the
    /// API has `enable_blocking: false`.
    pub would_block: bool,
    /// `ASE_ID_*` that matched the allow or deny list, or `ASE_ID_NONE`.
    pub matched_kind: ase_id_kind,
    /// `ASE_SOURCE_*` of the deny entry that matched, or `ASE_SOURCE_ALL` for none.
    pub source: ase_source,
    /// Reason phrase (`Forbidden`, the API's `error_def`, ...).
    pub status_text: ase_str,
    /// Response body (`Error: Unauthorized`, the decoy or error body).
    pub body: ase_str,
    /// Redirect target; empty with `ASE_ACTION_REDIRECT` means `https://` + host + uri.
    pub location: ase_str,
    /// Name of the matched API; empty when none.
    pub api_name: ase_str,
}

/// A client identifier for list management.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ase_identifier {
    /// `ASE_ID_*`.
    pub kind: ase_id_kind,
    /// Cookie or API-key name; empty for other kinds.
    pub name: ase_str,
    /// The value (for IPs: an address or CIDR range).
    pub value: ase_str,
}

/// One list entry, as handed to an `ase_entry_cb`. Strings are valid during the callback only.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ase_entry {
    /// `ASE_ID_*`.
    pub kind: ase_id_kind,
    /// Cookie or API-key name; empty for other kinds.
    pub name: ase_str,
    /// Value (IPs in canonical text).
    pub value: ase_str,
    /// `ASE_SOURCE_*` (allow-list entries: `ASE_SOURCE_MANUAL`).
    pub source: ase_source,
    /// Expiry in Unix milliseconds; 0 = never.
    pub expires_ms: u64,
}

/// Called once per entry; return 0 to go on, anything else to stop.
pub type ase_entry_cb =
    Option<unsafe extern "C" fn(userdata: *mut std::ffi::c_void, entry: *const ase_entry) -> i32>;

/// Counters and list sizes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ase_stats {
    /// Requests checked.
    pub checked: u64,
    /// Requests allowed (monitor-mode "would block" included).
    pub allowed: u64,
    /// Requests stopped (blocked, answered, redirected), all reasons.
    pub blocked: u64,
    /// Monitor mode: requests that would have been stopped, all reasons.
    pub would_block: u64,
    /// Stopped requests per `ASE_REASON_*`.
    pub blocked_by_reason: [u64; ASE_REASON_COUNT],
    /// Would-block requests per `ASE_REASON_*`.
    pub would_block_by_reason: [u64; ASE_REASON_COUNT],
    /// Real-time detections recorded.
    pub detections: u64,
    /// Deny-list entries.
    pub deny_entries: u64,
    /// Allow-list entries.
    pub allow_entries: u64,
    /// Allowed requests per `ASE_REASON_*`: `ASE_REASON_NONE` (nothing
    /// matched), firewall off, unknown API, allow list, `fail_mode`, and a
    /// monitor-mode request by the reason it would have been stopped for.
    pub allowed_by_reason: [u64; ASE_REASON_COUNT],
}

/// Size of the message buffers in `ase_abs_state` and `ase_health`.
pub const ASE_MESSAGE_LEN: usize = 256;

/// ABS state, from `ase_abs_status`. Times are Unix milliseconds, 0 = never.
///
/// The sync fields (`last_*`, `entries` to `failures`) are those of the
/// host's latest attempt, whichever process made it: one process per host
/// polls, and the others read what it published (about once a second).
/// The `traffic_*` counters are this engine's own.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ase_abs_state {
    /// `abs.conf` names an endpoint (when false, every other field is 0).
    pub configured: bool,
    /// `enable_abs_attack`: the ABS attack list is fetched and blocks.
    pub enabled: bool,
    /// This engine's process holds the host's poll lock (it is the one that polls).
    pub leader: bool,
    /// `enable_abs`: traffic records are sent to ABS.
    pub traffic_enabled: bool,
    /// Failed syncs since the last good one.
    pub consecutive_failures: u32,
    /// Start of the last sync attempt.
    pub last_attempt_ms: u64,
    /// End of the last good sync (the list in force is that old).
    pub last_success_ms: u64,
    /// Entries in the list in force.
    pub entries: u64,
    /// Items of that list that could not be read and were skipped.
    pub bad_items: u64,
    /// Items of that list that had already expired.
    pub expired_items: u64,
    /// Good syncs (of the process that polls, since it started).
    pub syncs: u64,
    /// Failed syncs (same).
    pub failures: u64,
    /// Traffic records waiting in this engine's queue.
    pub traffic_queued: u64,
    /// Traffic records ABS accepted from this engine's process (the host
    /// role's process counts those of the spool files it sent), plus the
    /// records this engine wrote to its spool file for that process to send.
    pub traffic_sent: u64,
    /// Traffic records dropped: queue or spool full, or ABS refused every try.
    pub traffic_dropped: u64,
    /// Why the last sync failed, NUL-terminated; empty after a good sync.
    /// Never holds a key or a token.
    pub last_error: [std::ffi::c_char; ASE_MESSAGE_LEN],
    /// Entries of the list in force dropped because they did not fit in
    /// `attack_list_memory` (the rest of the list, in list order).
    pub dropped_items: u64,
    /// Estimated memory of the entries in force, in bytes: what is checked
    /// against `attack_list_memory`.
    pub memory_bytes: u64,
}

/// State of the engine's shared state, from `ase_engine_health`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ase_health {
    /// The state store answers (false while `store_error` is set).
    pub store_ok: bool,
    /// The state could never be loaded: requests are decided by `fail_mode`.
    pub fail_mode_active: bool,
    /// Position in the store's change log applied to this engine.
    pub applied_seq: u64,
    /// Full loads of the store (the first one included).
    pub full_loads: u64,
    /// Changes applied from the log.
    pub changes_applied: u64,
    /// Real-time detections written to the store.
    pub detections_written: u64,
    /// Real-time detections dropped (queue full or store down).
    pub detections_dropped: u64,
    /// Panics caught in background threads (each one restarted).
    pub panics: u64,
    /// Last successful look at the store (Unix ms, 0 = never).
    pub last_poll_ms: u64,
    /// The store error while it fails, NUL-terminated; empty when it works.
    pub store_error: [std::ffi::c_char; ASE_MESSAGE_LEN],
    /// Engines running on the host (this one included), as counted when this
    /// engine's last list or switch change returned; 0 before the first.
    pub engines_live: u64,
    /// Of those, the ones that had not applied that change when the call
    /// returned (it waits up to 1 s): they apply it when they next read the
    /// store. 0 when every engine had it in force.
    pub engines_lagging_last_change: u64,
    /// The store log position of the host's lists snapshot this engine maps
    /// (0: none yet; the lists are then all in this process's memory).
    pub snapshot_seq: u64,
    /// Snapshots this engine moved onto.
    pub snapshot_installs: u64,
    /// Entries this engine holds above the snapshot (changes since it).
    pub overlay_entries: u64,
    /// This engine's process holds the host role (builds the snapshots).
    pub host_role: bool,
    /// Why the last snapshot file was refused, or (in the host-role process)
    /// why the last build failed, NUL-terminated; empty while all is well.
    pub snapshot_error: [std::ffi::c_char; ASE_MESSAGE_LEN],
    /// Snapshot files refused by this engine (or found bad and rebuilt by
    /// this process, when it holds the host role).
    pub snapshot_refusals: u64,
    /// Why the last one was refused, NUL-terminated, kept after a good file
    /// replaced it; empty when none was.
    pub snapshot_last_refusal: [std::ffi::c_char; ASE_MESSAGE_LEN],
}

/// `ase_engine_options.flags`: no threads. The host calls `ase_engine_tick`
/// from its event loop (a timer), and the engine does its background work
/// there, a bounded slice at a time.
pub const ASE_ENGINE_EVENTED: u32 = 1;

/// `ase_engine_options.flags`: never take the host role (building the
/// lists snapshot); another process of the host does (`ase-agent`).
pub const ASE_ENGINE_NO_HOST_ROLE: u32 = 2;

/// Options of `ase_engine_new_ex`. Zero-initialised, it asks for what
/// `ase_engine_new` does.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ase_engine_options {
    /// `ASE_ENGINE_*` bits; others are refused.
    pub flags: u32,
}
