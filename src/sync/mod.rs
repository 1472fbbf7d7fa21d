//! Background work that keeps engines in step with the world: the store
//! watcher and real-time detection writer (`watch`), ABS attack-list
//! polling and traffic shipping (`abs`), and the registry of the host's
//! engines that changes wait on (`presence`).

pub mod abs;
pub mod host;
pub mod presence;
pub mod snapshot;
pub mod tick;
pub mod watch;

use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Joins the thread in `slot` if it finishes within `wait` (after the caller
/// has told it to stop); true when it is gone. A thread still running at the
/// deadline is left alone: stopping never hangs the host.
pub(crate) fn join_within(slot: &Mutex<Option<JoinHandle<()>>>, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut t = slot.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        match t.as_ref() {
            None => return true,
            Some(h) if h.is_finished() => {
                let _ = t.take().map(JoinHandle::join);
                return true;
            }
            Some(_) if Instant::now() >= deadline => return false,
            Some(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}
