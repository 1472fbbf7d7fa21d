//! ABS, the AI engine that detects attacks (docs/abs.md).
//!
//! - [`attacklist`]: parsing the attack-list body (pure).
//! - [`client`]: the HTTP(S) client to ABS, with fail-over between endpoints.
//! - [`election`]: the lock file that makes one process per host poll.
//! - [`poller`]: the thread that syncs the attack list into an [`poller::AbsSink`].
//! - [`shared`]: the poller status every process of the host can read.
//! - [`shipper`]: traffic records, the bounded queue and the thread that posts them.
//! - [`spool`]: the traffic queue and per-process files of evented engines,
//!   and the uploader a shipper runs to post them.
//!
//! An engine starts a [`poller::Poller`] and a [`shipper::Shipper`] after the host
//! has forked (never in the nginx master), and stops them on shutdown.

pub mod attacklist;
pub mod client;
pub mod election;
pub mod poller;
pub mod shared;
pub mod shipper;
pub mod spool;
pub mod time;

pub use attacklist::{AttackList, ParseError, ParseOptions};
pub use client::{AbsClient, ClientError, ClientOptions};
pub use poller::{AbsSink, AbsStatus, Poller, PollerOptions, SyncReport, sync_once};
pub use shipper::{Shipper, ShipperHandle, ShipperOptions, ShipperStatus, TrafficRecord};
pub use spool::{Spool, SpoolOptions};
