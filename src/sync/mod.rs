//! Keeping engines in step with the shared state: the store watcher and the
//! real-time detection writer ([`watch`]).

pub mod watch;
