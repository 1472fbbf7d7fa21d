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

/// How much lower than its creator's a background thread's priority is
/// (nice +10: about a tenth of a CPU against a busy thread of the
/// creator's priority).
const BACKGROUND_NICE: i32 = 10;

/// Starts the thread `name` for the host's background work (snapshot
/// builds, ABS polling and shipping) at a lower priority than the thread
/// that starts it. In an nginx worker that thread shares the CPUs with the
/// event loops of every worker: a snapshot build or an ABS body parsed at
/// equal priority holds a core that a loop waking up must wait for (tens of
/// milliseconds, measured in `benches/tick.rs`). At lower priority the loop
/// preempts it at once, and the work still gets the CPU the loops leave.
pub(crate) fn spawn_background<F>(name: &str, f: F) -> std::io::Result<JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            lower_priority();
            f()
        })
}

/// Lowers the calling thread's priority by [`BACKGROUND_NICE`]; a host
/// that forbids it keeps the thread as it is.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // Linux keeps a nice value per thread; PRIO_PROCESS with a thread
        // id changes that thread's alone.
        let tid = rustix::thread::gettid();
        if let Ok(now) = rustix::process::getpriority_process(Some(tid)) {
            let _ =
                rustix::process::setpriority_process(Some(tid), (now + BACKGROUND_NICE).min(19));
        }
    }
}

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
