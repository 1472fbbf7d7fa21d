//! The one panic boundary every `extern "C"` function runs inside.
//!
//! A panic must never unwind into C (nginx would lose a worker). Each export's
//! body is `boundary(|| { ... })`: a panic becomes the return type's fallback
//! value — `ASE_ERR_PANIC` for `ase_result`, NULL for pointers, nothing for
//! `()`. A unit test checks that every export uses it.

use std::ffi::c_char;
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::types::{ASE_ERR_PANIC, ase_result};

/// What an export returns when its body panicked.
pub trait PanicFallback {
    /// The fallback value.
    fn fallback() -> Self;
}

impl PanicFallback for ase_result {
    fn fallback() -> Self {
        ASE_ERR_PANIC
    }
}

impl PanicFallback for *const c_char {
    fn fallback() -> Self {
        std::ptr::null()
    }
}

impl PanicFallback for () {
    fn fallback() -> Self {}
}

/// Runs `f`, turning a panic into `R::fallback()`.
pub fn boundary<R: PanicFallback>(f: impl FnOnce() -> R) -> R {
    // The closure only touches data reachable from its arguments; after a panic
    // the engine's maps are still consistent (every edit is one atomic map
    // operation), so observing them again is sound.
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| R::fallback())
}
