//! Background work that keeps engines in step with the world: the store
//! watcher and real-time detection writer ([`watch`]), ABS attack-list
//! polling and traffic shipping ([`abs`]).

pub mod abs;
pub mod watch;
