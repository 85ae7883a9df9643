//! The process's global allocator, chosen once at the first allocation: mimalloc (the default)
//! or glibc's malloc (`ABLATE_ALLOCATOR=system`), so `ablate bench --allocator both` can compare
//! the two on the same binary, side by side; and the peak resident memory it reaches
//! ([`peak_rss`]), which runs record and `ablate bench` reports.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU8, Ordering};

/// The name of [`ALLOCATOR_ENV`] as C reads it (`getenv` does not allocate).
const ALLOCATOR_ENV_C: &std::ffi::CStr = c"ABLATE_ALLOCATOR";

/// Environment variable naming the allocator: `mimalloc` (default) or `system`.
pub const ALLOCATOR_ENV: &str = match ALLOCATOR_ENV_C.to_str() {
    Ok(name) => name,
    Err(_) => panic!("the allocator variable's name is ASCII"),
};

/// Which allocator a process uses; fixed for the process's whole life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Allocator {
    Mimalloc,
    /// glibc malloc.
    System,
}

impl Allocator {
    pub fn name(self) -> &'static str {
        match self {
            Self::Mimalloc => "mimalloc",
            Self::System => "system",
        }
    }
}

const UNDECIDED: u8 = 0;
const MIMALLOC: u8 = 1;
const SYSTEM: u8 = 2;

/// Dispatches every call to the allocator chosen at the first one. The choice never changes
/// afterwards, so a block is always freed by the allocator that made it.
pub struct Selected;

static CHOICE: AtomicU8 = AtomicU8::new(UNDECIDED);

fn choice() -> u8 {
    match CHOICE.load(Ordering::Relaxed) {
        UNDECIDED => {
            // getenv does not allocate. A race between two first allocations reads the same
            // environment, so both decide the same way.
            // SAFETY: the name is a NUL-terminated literal; the result is only read.
            let value = unsafe { libc::getenv(ALLOCATOR_ENV_C.as_ptr()) };
            let system = !value.is_null()
                // SAFETY: getenv returned a NUL-terminated string.
                && unsafe { std::ffi::CStr::from_ptr(value) }.to_bytes() == b"system";
            let c = if system { SYSTEM } else { MIMALLOC };
            CHOICE.store(c, Ordering::Relaxed);
            c
        }
        c => c,
    }
}

/// The allocator this process uses.
pub fn active() -> Allocator {
    if choice() == SYSTEM {
        Allocator::System
    } else {
        Allocator::Mimalloc
    }
}

// SAFETY: every method forwards to one of two sound allocators, the same one for the whole
// process (see `choice`).
unsafe impl GlobalAlloc for Selected {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if choice() == SYSTEM {
            System.alloc(layout)
        } else {
            mimalloc::MiMalloc.alloc(layout)
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if choice() == SYSTEM {
            System.alloc_zeroed(layout)
        } else {
            mimalloc::MiMalloc.alloc_zeroed(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if choice() == SYSTEM {
            System.dealloc(ptr, layout)
        } else {
            mimalloc::MiMalloc.dealloc(ptr, layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if choice() == SYSTEM {
            System.realloc(ptr, layout, new_size)
        } else {
            mimalloc::MiMalloc.realloc(ptr, layout, new_size)
        }
    }
}

/// The process's peak resident set size (VmHWM), bytes; 0 where /proc is missing.
pub fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
