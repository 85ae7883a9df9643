//! Training: the loop of spec section 6 with its losses, optimiser and learning-rate schedule,
//! the run directory it writes (metrics, checkpoint, model, summary), and resume.

pub mod checkpoint;
mod loss;
mod meter;
mod metrics;
mod optim;
mod run_dir;
mod trainer;

/// Moved to [`crate::clock`]; kept here for the scheduler until it reads the clock there.
pub use crate::clock::{unix_now, unix_seconds};
pub use loss::{class_balanced_weights, cross_entropy, focal_loss, FocalConfig};
pub use metrics::{median, read_metrics, write_metrics, EpochRecord, HEADER};
pub use optim::{cosine_lr, Sgd, SgdConfig};
pub use run_dir::{
    is_busy, mark_lost, queue, read_status, Attempt, RunDir, RunDirError, RunStatus, StatusRecord,
    CHECKPOINT_FILE, CONFIG_FILE, LOG_FILE, METRICS_FILE, MODEL_FILE, STATUS_FILE, SUMMARY_FILE,
};
pub use trainer::{
    device_name, train, Diverged, FormCounts, Interrupted, PruningEvent, Summary, TrainOptions,
    DIVERGED_ABOVE,
};
