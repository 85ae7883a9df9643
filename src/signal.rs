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
