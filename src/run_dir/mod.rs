//! The run-dir contract: every file a run leaves beside its outputs, its name, its type and its
//! one reader and one writer. Training writes these files; the scheduler, the report and the
//! `plan`/`run`/`status` commands read them through the types here, so a renamed field is a
//! compile error in every reader.
//!
//! - [`dir`]: the directory itself (lock, `status.json` with attempts, the append-only log).
//! - [`metrics`]: `metrics.csv`, one [`EpochRecord`] per epoch.
//! - [`summary`]: `summary.json`, a finished run's [`Summary`].
//! - [`plan`]: `plan.json`, an experiment's planned runs.
//!
//! Beside them, [`TENSORBOARD_DIR`] holds the run's TensorBoard event files, written by
//! `crate::tensorboard` from these records.

pub mod dir;
pub mod metrics;
pub mod plan;
pub mod summary;

pub use dir::{
    check_trained_config, is_busy, lock_idle, mark_lost, mark_stopped, queue, read_status,
    retrain_command, Attempt, RunDir, RunDirError, RunStatus, StatusRecord,
};
pub use metrics::{median, read_metrics, write_metrics, EpochRecord, HEADER};
pub use plan::{OtherExperiment, Plan, PlanEntry, EXPERIMENT_FILE, PLAN_FILE};
pub use summary::{
    read_summary, write_summary, FormCounts, PruningEvent, RecordedSummary, Summary,
};

pub const CONFIG_FILE: &str = "config.toml";
pub const STATUS_FILE: &str = "status.json";
pub const LOG_FILE: &str = "train.log";
pub const METRICS_FILE: &str = "metrics.csv";
pub const SUMMARY_FILE: &str = "summary.json";
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
pub const MODEL_FILE: &str = "model.safetensors";
/// Held by the process working in the run dir.
pub const LOCK_FILE: &str = ".lock";
/// A scratch file training writes and removes at its end (to measure a checkpoint's size).
pub const SCRATCH_FILE: &str = ".checkpoint-size.safetensors";
/// The folder of the run's TensorBoard event files (`crate::tensorboard`).
pub const TENSORBOARD_DIR: &str = "tensorboard";
/// Every file (and folder) of a run dir, by name: no other command may write one of them.
pub const RUN_FILES: [&str; 10] = [
    CONFIG_FILE,
    STATUS_FILE,
    LOG_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    CHECKPOINT_FILE,
    MODEL_FILE,
    LOCK_FILE,
    SCRATCH_FILE,
    TENSORBOARD_DIR,
];
