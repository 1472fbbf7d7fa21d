//! The pure decision core: identifiers, lists, API definitions, configuration
//! parsing and the decision itself. No I/O, no threads, no `unsafe`.
//!
//! The public modules are what the engine and hosts use: `api` (API JSON
//! and request-to-API matching), `config`, `decide`, `extract`
//! (identifiers out of a request), `ident` (identifiers and their list
//! keys), `lists`, `snapshot` (the lists in one file every process of a host
//! maps) and `switches`. The rest serve them inside the crate:
//! `bytes` (byte-string helpers, eight bytes at a time), `hash` (the one
//! keyed hash), `decode` (percent and base64), `cookie` (one cookie in a
//! `Cookie` value), `headers` (the one pass over a request's headers) and
//! `prefilter` (the filter in front of a list).

pub mod api;
mod bytes;
pub mod config;
mod cookie;
pub mod decide;
mod decode;
pub mod extract;
mod hash;
mod headers;
pub mod ident;
pub mod lists;
pub mod overlay;
mod prefilter;
pub mod snapshot;
pub mod switches;
#[cfg(test)]
mod testing;

pub use api::{Api, ApiError, ApiSet};
pub use config::{AbsConfig, Config, ConfigError, DuplicateIds, FailMode, UnknownApi};
pub use decide::{Action, Decision, Detection, Reason, Request, decide};
pub use extract::{Headers, Scratch};
pub use ident::{IdError, IdKind, Identifier, IpNet, Key, KeyRef};
pub use lists::{IdMap, Meta, Source};
pub use overlay::Lists;
pub use switches::{Switch, Switches};
