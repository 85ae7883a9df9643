//! A run directory: the config snapshot, status, log, metrics, checkpoint, model and summary of
//! one run, side by side. Every file is written atomically except the append-only log.
//!
//! One process at a time works in a run dir: [`RunDir::open`] holds `.lock` until it is dropped
//! (or its process dies), and only the holder writes `status.json`. A scheduler queues runs
//! ([`queue`]) and repairs the status of an attempt whose process died ([`mark_lost`]) only
//! while nobody holds the lock.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::clock::{unix_now, unix_seconds};
use crate::config::RunConfig;
use crate::io::write_atomic;
use crate::lock::{holder_note, LockFile};
use crate::provenance::{hostname, GIT_COMMIT};

use super::{CHECKPOINT_FILE, CONFIG_FILE, LOCK_FILE, LOG_FILE, MODEL_FILE, STATUS_FILE};

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    /// Planned by a scheduler; no attempt started yet.
    Queued,
    Running,
    Done,
    /// Stopped by an error (or its process died); the last checkpoint is intact and a resume
    /// retries.
    Failed,
    /// Stopped because the loss became NaN or infinite; retrying gives the same result.
    Diverged,
    /// Stopped on request (SIGINT / SIGTERM) at a step boundary; resumes from the last
    /// epoch's checkpoint.
    Interrupted,
}

impl RunStatus {
    pub fn name(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Diverged => "diverged",
            Self::Interrupted => "interrupted",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One process's work on a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// Unix seconds.
    pub started: f64,
    /// Unix seconds; absent while it runs (or when its process died unrecorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<f64>,
    /// How it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<RunStatus>,
    pub host: String,
    pub pid: u32,
    /// `cpu` or `cuda:N` as the process saw it.
    pub device: String,
    /// The physical GPUs behind `cuda:*` (the process's CUDA_VISIBLE_DEVICES).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda_visible_devices: Option<String>,
    /// `JOB_TASK` when it ran as a Slurm array task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_job: Option<String>,
    /// The commit of the code that ran.
    pub git_commit: String,
    /// Epochs already done when it started (from the checkpoint).
    pub epochs_at_start: usize,
}

/// `status.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusRecord {
    pub status: RunStatus,
    pub epochs_done: usize,
    pub epochs: usize,
    /// What stopped a failed, diverged or interrupted run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Attempts started so far (`history.len()`).
    #[serde(default)]
    pub attempts: usize,
    /// The latest attempt's device (`cpu`, `cuda:N`); empty while queued.
    #[serde(default)]
    pub device: String,
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub git_commit: String,
    /// Unix seconds the first attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<f64>,
    /// Unix seconds the run finished (done or diverged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<f64>,
    /// Wall seconds of all attempts together.
    #[serde(default)]
    pub wall_seconds: f64,
    /// Median training seconds per epoch so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_per_epoch: Option<f64>,
    /// Unix seconds of this update.
    pub updated: f64,
    #[serde(default)]
    pub history: Vec<Attempt>,
}

impl StatusRecord {
    fn queued(epochs: usize) -> Self {
        Self {
            status: RunStatus::Queued,
            epochs_done: 0,
            epochs,
            message: None,
            attempts: 0,
            device: String::new(),
            host: String::new(),
            git_commit: String::new(),
            started: None,
            finished: None,
            wall_seconds: 0.0,
            seconds_per_epoch: None,
            updated: unix_seconds(),
            history: Vec::new(),
        }
    }

    /// Epochs still to train times the median epoch time, when known.
    pub fn eta_seconds(&self) -> Option<f64> {
        self.seconds_per_epoch
            .map(|s| s * self.epochs.saturating_sub(self.epochs_done) as f64)
    }

    /// Sets the status; a status other than running ends the latest attempt.
    fn set(&mut self, status: RunStatus, message: Option<String>) {
        let now = unix_seconds();
        self.status = status;
        self.message = message;
        self.updated = now;
        if status != RunStatus::Running {
            if let Some(a) = self.history.last_mut().filter(|a| a.ended.is_none()) {
                a.ended = Some(now);
                a.outcome = Some(status);
            }
        }
        if matches!(status, RunStatus::Done | RunStatus::Diverged) {
            self.finished = Some(now);
        }
        self.wall_seconds = self
            .history
            .iter()
            .map(|a| a.ended.unwrap_or(now) - a.started)
            .sum();
    }
}

/// Why a run directory cannot be used for a run.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    #[error(
        "{}: holds a different run ({}); choose another --out",
        dir.display(),
        listed(differences)
    )]
    Different {
        dir: PathBuf,
        differences: Vec<(String, String, String)>,
    },
    #[error("{}: already holds this run ({state}); pass --resume to continue it, or choose another --out", dir.display())]
    Exists { dir: PathBuf, state: String },
    #[error("{}: in use by {holder}; wait for it to stop", dir.display())]
    Busy { dir: PathBuf, holder: String },
    #[error(
        "{}: done, but its deploy model ({MODEL_FILE}) and final checkpoint ({CHECKPOINT_FILE}) \
         are both gone, so nothing can rebuild the model; train the run again: {}",
        dir.display(),
        retrain_command(dir)
    )]
    DeployModelLost { dir: PathBuf },
    #[error(
        "{}: differs from the config the run trained with, kept in {}: {}; restore those keys \
         (the trained weights belong to that config), or train a new run with this one",
        config.display(),
        kept_in.display(),
        listed(differences)
    )]
    Edited {
        config: PathBuf,
        /// The run's own file that recorded the config it trained with.
        kept_in: PathBuf,
        /// Key, value in `kept_in`, value in `config`.
        differences: Vec<(String, String, String)>,
    },
}

/// `differences` (key, value there, value here), as a message lists them.
fn listed(differences: &[(String, String, String)]) -> String {
    differences
        .iter()
        .map(|(k, there, here)| format!("{k} is {there} there, {here} here"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The commands that train the run in `dir` again from its config, from scratch: its status
/// set aside (so the run is no longer done), then a resume, which finds no checkpoint.
pub fn retrain_command(dir: &Path) -> String {
    let status = dir.join(STATUS_FILE);
    format!(
        "`mv {} {}.lost && ablate train --resume --out {}`",
        status.display(),
        status.display(),
        dir.display()
    )
}

/// An open run directory, held by this process.
#[derive(Debug)]
pub struct RunDir {
    root: PathBuf,
    log: std::fs::File,
    started: Instant,
    status: StatusRecord,
    _lock: LockFile,
}

impl RunDir {
    /// Opens `root` for `cfg`: creates it and the config snapshot for a new run; for an existing
    /// run of the same config, needs `resume`. A directory holding a different run, or in use
    /// by another process, is refused, and nothing in it is touched.
    pub fn open(root: &Path, cfg: &RunConfig, resume: bool) -> anyhow::Result<Self> {
        let config = root.join(CONFIG_FILE);
        if config.is_file() {
            check_same_run(root, cfg)?;
            let fresh = read_status(root).is_none_or(|s| s.status == RunStatus::Queued);
            if !resume && !fresh {
                let state = match read_status(root) {
                    Some(s) => format!(
                        "{}, {} of {} epochs done",
                        s.status, s.epochs_done, s.epochs
                    ),
                    None => "started".into(),
                };
                return Err(RunDirError::Exists {
                    dir: root.to_path_buf(),
                    state,
                }
                .into());
            }
        } else {
            std::fs::create_dir_all(root)
                .with_context(|| format!("creating run dir {}", root.display()))?;
        }
        let lock = acquire(root)?;
        if !config.is_file() {
            write_atomic(&config, cfg.to_toml().as_bytes())?;
        }
        let log_path = root.join(LOG_FILE);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let status = read_status(root).unwrap_or_else(|| StatusRecord::queued(cfg.train.epochs));
        Ok(Self {
            root: root.to_path_buf(),
            log,
            started: Instant::now(),
            status,
            _lock: lock,
        })
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.root.join(file)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The status as last written.
    pub fn status(&self) -> &StatusRecord {
        &self.status
    }

    /// Appends a line to the log, prefixed with Unix seconds and this session's elapsed time.
    pub fn log(&mut self, line: &str) {
        let stamp = format!(
            "[{} +{:.1}s]",
            unix_now(),
            self.started.elapsed().as_secs_f64()
        );
        // The log is a convenience; failing to write it must not stop training.
        let _ = writeln!(self.log, "{stamp} {line}");
    }

    /// Records the start of an attempt by this process on `device`, with `epochs_done` from
    /// the checkpoint, and marks the run running.
    pub fn begin_attempt(&mut self, device: &str, epochs_done: usize) -> anyhow::Result<()> {
        let now = unix_seconds();
        let s = &mut self.status;
        // An earlier attempt whose process died without a word ended at its last update.
        if let Some(a) = s.history.last_mut().filter(|a| a.ended.is_none()) {
            a.ended = Some(s.updated.max(a.started));
            a.outcome = Some(RunStatus::Failed);
        }
        s.history.push(Attempt {
            started: now,
            ended: None,
            outcome: None,
            host: hostname(),
            pid: std::process::id(),
            device: device.to_string(),
            cuda_visible_devices: std::env::var("CUDA_VISIBLE_DEVICES").ok(),
            slurm_job: slurm_task(),
            git_commit: GIT_COMMIT.to_string(),
            epochs_at_start: epochs_done,
        });
        s.attempts = s.history.len();
        s.device = device.to_string();
        s.host = hostname();
        s.git_commit = GIT_COMMIT.to_string();
        s.started.get_or_insert(now);
        s.finished = None;
        s.epochs_done = epochs_done;
        self.update(RunStatus::Running, None)
    }

    /// Records progress: `epochs_done` and the median seconds per epoch so far.
    pub fn progress(
        &mut self,
        epochs_done: usize,
        seconds_per_epoch: Option<f64>,
    ) -> anyhow::Result<()> {
        self.status.epochs_done = epochs_done;
        self.status.seconds_per_epoch = seconds_per_epoch;
        self.update(RunStatus::Running, None)
    }

    /// Sets and writes the status (a status other than running ends this attempt).
    pub fn update(&mut self, status: RunStatus, message: Option<String>) -> anyhow::Result<()> {
        self.status.set(status, message);
        write_status(&self.root, &self.status)
    }
}

/// `JOB_TASK` of the Slurm array task this process runs in, if any.
fn slurm_task() -> Option<String> {
    let job = std::env::var("SLURM_ARRAY_JOB_ID")
        .or_else(|_| std::env::var("SLURM_JOB_ID"))
        .ok()?;
    Some(match std::env::var("SLURM_ARRAY_TASK_ID") {
        Ok(task) => format!("{job}_{task}"),
        Err(_) => job,
    })
}

fn acquire(root: &Path) -> anyhow::Result<LockFile> {
    let path = root.join(LOCK_FILE);
    LockFile::try_acquire(&path, &holder_note())
        .with_context(|| format!("locking {}", path.display()))?
        .map_err(|holder| {
            RunDirError::Busy {
                dir: root.to_path_buf(),
                holder,
            }
            .into()
        })
}

/// Refuses a run dir whose config snapshot differs from `cfg`.
fn check_same_run(root: &Path, cfg: &RunConfig) -> anyhow::Result<()> {
    let config = root.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&config)
        .with_context(|| format!("reading {}", config.display()))?;
    let theirs = RunConfig::from_toml(&config, &text)?;
    let differences = theirs.differences(cfg);
    if differences.is_empty() {
        Ok(())
    } else {
        Err(RunDirError::Different {
            dir: root.to_path_buf(),
            differences,
        }
        .into())
    }
}

/// Refuses `cfg`, read from the run dir's `config`, when it differs from `trained_toml`: the
/// config text that `source` (the run's checkpoint or deploy model) recorded when it was
/// written, the truth about what its weights were trained with.
pub fn check_trained_config(
    config: &Path,
    cfg: &RunConfig,
    source: &Path,
    trained_toml: &str,
) -> anyhow::Result<()> {
    let trained = RunConfig::from_toml(source, trained_toml)?;
    let differences = trained.differences(cfg);
    if differences.is_empty() {
        return Ok(());
    }
    Err(RunDirError::Edited {
        config: config.to_path_buf(),
        kept_in: source.to_path_buf(),
        differences,
    }
    .into())
}

/// Prepares `root` for `cfg` without starting it: the config snapshot, and a `queued` status
/// when it has none. Returns the status it has now. A dir holding another run is refused.
pub fn queue(root: &Path, cfg: &RunConfig) -> anyhow::Result<StatusRecord> {
    if root.join(CONFIG_FILE).is_file() {
        check_same_run(root, cfg)?;
    } else {
        std::fs::create_dir_all(root)
            .with_context(|| format!("creating run dir {}", root.display()))?;
        write_atomic(&root.join(CONFIG_FILE), cfg.to_toml().as_bytes())?;
    }
    match read_status(root) {
        Some(s) => Ok(s),
        None => {
            let s = StatusRecord::queued(cfg.train.epochs);
            write_status(root, &s)?;
            Ok(s)
        }
    }
}

/// After the process of a run's latest attempt died without recording its end (a kill, an
/// out-of-memory), records it as failed with `message`. Does nothing while a live process
/// holds the run, or when the attempt's end is recorded.
pub fn mark_lost(root: &Path, message: &str) -> anyhow::Result<Option<StatusRecord>> {
    mark_ended(root, message, RunStatus::Failed)
}

/// [`mark_lost`] for a process the user's stop request ended (killed on a second Ctrl-C):
/// recorded as interrupted, so it resumes and spends no retry.
pub fn mark_stopped(root: &Path, message: &str) -> anyhow::Result<Option<StatusRecord>> {
    mark_ended(root, message, RunStatus::Interrupted)
}

fn mark_ended(
    root: &Path,
    message: &str,
    outcome: RunStatus,
) -> anyhow::Result<Option<StatusRecord>> {
    let Ok(lock) = acquire(root) else {
        return Ok(None);
    };
    let Some(mut s) = read_status(root) else {
        return Ok(None);
    };
    if s.status != RunStatus::Running {
        return Ok(Some(s));
    }
    // The attempt ended when it last wrote, not now.
    let last_update = s.updated;
    if let Some(a) = s.history.last_mut().filter(|a| a.ended.is_none()) {
        a.ended = Some(last_update.max(a.started));
        a.outcome = Some(outcome);
    }
    s.set(outcome, Some(message.to_string()));
    write_status(root, &s)?;
    drop(lock);
    Ok(Some(s))
}

/// The lock of the run dir `root` for a command that writes into it without training (the
/// backfill of event files); `None` while a live process works in it.
pub fn lock_idle(root: &Path) -> anyhow::Result<Option<LockFile>> {
    let path = root.join(LOCK_FILE);
    Ok(LockFile::try_acquire(&path, &holder_note())
        .with_context(|| format!("locking {}", path.display()))?
        .ok())
}

/// True while a live process works in the run dir.
pub fn is_busy(root: &Path) -> bool {
    LockFile::is_held(&root.join(LOCK_FILE))
}

fn write_status(root: &Path, status: &StatusRecord) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(status)?;
    write_atomic(&root.join(STATUS_FILE), text.as_bytes())
}

/// The `status.json` of a run dir, if it has a readable one.
pub fn read_status(root: &Path) -> Option<StatusRecord> {
    let text = std::fs::read_to_string(root.join(STATUS_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}
