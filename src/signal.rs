//! Graceful stop on SIGINT / SIGTERM: a handler counts the signals, and long work polls
//! [`stop_requested`] at safe points (a training step, a scheduler tick).

use std::sync::atomic::{AtomicUsize, Ordering};

static SIGNALS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic add: async-signal-safe.
    SIGNALS.fetch_add(1, Ordering::SeqCst);
}

/// Routes SIGINT and SIGTERM to the counter instead of killing the process.
pub fn install() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only touches an atomic.
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

/// How many stop signals arrived so far.
pub fn count() -> usize {
    SIGNALS.load(Ordering::SeqCst)
}

/// True once a stop signal arrived.
pub fn stop_requested() -> bool {
    count() > 0
}

/// Lets a write to a closed pipe end the process quietly, as Unix tools do (`ablate count
/// ... | head -1`). Rust ignores SIGPIPE, which turns such a write into a panic in `println!`.
/// For the commands whose whole job is their output; the scheduler keeps SIGPIPE ignored and
/// writes through [`crate::schedule::say`] instead, so that it goes on running its runs.
pub fn die_on_closed_pipe() {
    // SAFETY: restores the default disposition; no handler runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
