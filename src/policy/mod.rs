//! The pure decision core: identifiers, lists, API definitions, configuration
//! parsing and the decision itself. No I/O, no threads, no `unsafe`.

pub mod api;
pub mod bytes;
pub mod config;
mod cookie;
pub mod decide;
mod decode;
pub mod extract;
mod hash;
mod headers;
pub mod ident;
pub mod lists;
mod prefilter;
pub mod switches;
#[cfg(test)]
mod testing;

pub use api::{Api, ApiError, ApiSet};
pub use config::{AbsConfig, Config, ConfigError, FailMode, UnknownApi};
pub use decide::{Action, Decision, Detection, Reason, Request, decide};
pub use extract::{Headers, Scratch};
pub use ident::{IdError, IdKind, Identifier, IpNet, Key, KeyRef};
pub use lists::{IdMap, Meta, Source};
pub use switches::{Switch, Switches};
