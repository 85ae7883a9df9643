//! Running an experiment's runs: on this machine's GPUs or CPU slots ([`local`]), or as a Slurm
//! job array ([`slurm`]). Either way the results land in `results/<experiment>/<run id>/`, and
//! running an experiment again does only what is unfinished.

pub mod device;
mod display;
pub mod local;
pub mod queue;
pub mod slurm;

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::experiment::{Experiment, RunId};
use crate::lock::{holder_note, LockFile};

pub use device::{slots, Slot};
pub use display::{log_to, say};
pub use local::{run_local, LocalOptions};
pub use queue::Policy;

/// The experiment's results are being scheduled by another live process.
#[derive(Debug, thiserror::Error)]
#[error("{}: another scheduler is running this experiment ({holder}); wait for it, or stop it (Ctrl-C) and start again", dir.display())]
pub struct Locked {
    pub dir: PathBuf,
    pub holder: String,
}

/// Takes `results/<experiment>/.scheduler.lock` for `what`.
pub fn lock_experiment(exp: &Experiment, results: &Path, what: &str) -> anyhow::Result<LockFile> {
    let dir = exp.results_dir(results);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(".scheduler.lock");
    LockFile::try_acquire(&path, &format!("{what}, {}", holder_note()))
        .with_context(|| format!("locking {}", path.display()))?
        .map_err(|holder| Locked { dir, holder }.into())
}

/// A scheduling session ended because it was asked to stop (SIGINT / SIGTERM).
#[derive(Debug, thiserror::Error)]
#[error("stopped on request; every unfinished run resumes when the same command runs again")]
pub struct Stopped;

/// How a scheduling session went.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Finished in this session.
    pub done: Vec<RunId>,
    /// Already done before.
    pub skipped_done: usize,
    /// Failed and not retried further.
    pub failed: Vec<RunId>,
    pub diverged: Vec<RunId>,
    /// Stopped on request; resumable.
    pub stopped: Vec<RunId>,
    /// Runs left unstarted because the session was stopped.
    pub not_started: usize,
    /// The session was stopped by a signal.
    pub interrupted: bool,
}
