//! # ase — an in-process API client blocker compatible with PingIntelligence ASE
//!
//! ## Motivation
//! An API Security Enforcer (ASE) blocks attacking API clients by identifier —
//! IP, cookie, OAuth2 token, API key, user name — from an allow list and a deny
//! list fed by hand, by the ABS AI engine and by real-time detection (decoy APIs,
//! requests that break an API's definition). PingIntelligence's ASE is a separate
//! appliance a gateway asks over HTTP for every request; `ase` makes the same
//! decision inside the server, as a function call costing well under a
//! microsecond, and reads ASE's own configuration files.
//!
//! ## Organization
//! Layers point inward; each may use the ones above it in this list, never
//! one below (docs/design.md, "Layers").
//! - [`policy`]: the pure decision core (no I/O, no threads, no `unsafe`).
//! - [`clock`]: the one time source.
//! - [`load`]: reading `ase.conf`, `abs.conf` and the API JSON directory.
//! - [`enforcer`]: the [`enforcer::Enforcer`], the live in-memory state a
//!   request is checked against: configuration, APIs, lists, switches and
//!   counters, lock-free for readers.
//! - [`store`]: the durable state shared by every process on a host
//!   (SQLite in `state_dir`): lists, switches, credential, change log.
//! - [`sync`]: background work: the store watcher and detection writer, ABS
//!   attack-list polling and traffic shipping.
//! - [`engine`]: the [`engine::Engine`] — an enforcer, its store and its
//!   background work; every list and switch change goes through it. The C
//!   `ase_engine` is one of these.
//! - [`ffi`]: the C ABI (`include/ase.h`); the only place with `extern "C"`.
//! - [`mapped`]: a read-only memory map of a whole file (the lists snapshot);
//!   with `ffi`, the only module with `unsafe`.
#![deny(missing_docs)]
#![deny(unsafe_code)]

/// cbindgen:ignore
pub mod clock;
/// cbindgen:ignore
pub mod enforcer;
/// cbindgen:ignore
pub mod engine;
// The C ABI has to dereference the pointers C hands it and give C pointers
// back, which only `unsafe` can do; every other module is safe Rust, and the
// compiler holds them to it.
#[allow(unsafe_code)]
pub mod ffi;
/// cbindgen:ignore
pub mod load;
// Mapping a file is `unsafe` (the compiler cannot see other writers of the
// file); the module states the contract that makes it sound, and everything
// that reads the mapped bytes is safe code.
/// cbindgen:ignore
#[allow(unsafe_code)]
pub mod mapped;
/// cbindgen:ignore
pub mod policy;
/// cbindgen:ignore
pub mod store;
/// cbindgen:ignore
pub mod sync;
