use std::process::ExitCode;

use clap::Parser;

use ablate::cli::{run, Cli};
use ablate::config::ConfigError;
use ablate::export::ExportError;
use ablate::io::DamagedFile;
use ablate::run_dir::{OtherExperiment, RunDirError};
use ablate::schedule::device::DevicesError;
use ablate::schedule::{Locked, Stopped};
use ablate::train::{Diverged, Interrupted};

fn main() -> ExitCode {
    unset_empty_settings();
    configure_runtime();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Bad input (a preset, file, key or value) is a usage error: exit 2, one line.
            if let Some(config) = e.downcast_ref::<ConfigError>() {
                eprintln!("error: {config}");
                return ExitCode::from(2);
            }
            if e.downcast_ref::<RunDirError>().is_some()
                || e.downcast_ref::<ExportError>().is_some()
                || e.downcast_ref::<DamagedFile>().is_some()
                || e.downcast_ref::<Locked>().is_some()
                || e.downcast_ref::<OtherExperiment>().is_some()
                || e.downcast_ref::<DevicesError>().is_some()
            {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            if e.downcast_ref::<Interrupted>().is_some() || e.downcast_ref::<Stopped>().is_some() {
                eprintln!("{e}");
                return ExitCode::from(130);
            }
            if e.downcast_ref::<Diverged>().is_some() {
                eprintln!("error: {e}");
                return ExitCode::from(3);
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// mimalloc unless `ABLATE_ALLOCATOR=system`, never returning freed memory to the OS: candle
/// allocates and frees tensors of many MB every step, and with glibc malloc (or mimalloc's
/// default 10 ms purge) each one is a fresh mmap whose pages the kernel faults in and zeroes
/// again. `ablate bench --allocator mimalloc,system` compares the two (docs/bench-and-kernels.md,
/// "The allocator").
#[global_allocator]
static ALLOC: ablate::alloc::Selected = ablate::alloc::Selected;

extern "C" {
    /// From the mimalloc library the allocator links.
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}
/// `mi_option_purge_delay` in mimalloc 3's `mi_option_e`.
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// An `ABLATE_*` environment variable set to the empty string means unset, for every command
/// and every process it starts (`ABLATE_RESULTS=` is the default results dir, not an error;
/// `ABLATE_CACHE_DIR=` is the default cache, not the current directory). Done first, while
/// the process has one thread.
fn unset_empty_settings() {
    let empty: Vec<std::ffi::OsString> = std::env::vars_os()
        .filter(|(k, v)| v.is_empty() && k.to_str().is_some_and(|k| k.starts_with("ABLATE_")))
        .map(|(k, _)| k)
        .collect();
    for k in empty {
        std::env::remove_var(k);
    }
}

/// Process-wide settings made before any work starts.
fn configure_runtime() {
    if ablate::alloc::active() == ablate::alloc::Allocator::Mimalloc {
        // SAFETY: setting an option is allowed at any time; -1 disables purging.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
    if let Err(e) =
        ablate::kernels::set_from_env().and_then(|()| ablate::kernels::simd::set_from_env())
    {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    // candle asks for its thread count on every op and, unless RAYON_NUM_THREADS is set,
    // re-reads /proc/cpuinfo each time.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        // SAFETY: no other thread exists yet.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
}
