//! Training: the loop of spec section 6 with its losses, optimiser and learning-rate schedule,
//! checkpoints and resume. The files it leaves in a run dir are defined in [`crate::run_dir`].

pub mod checkpoint;
mod loss;
mod meter;
mod optim;
mod trainer;

/// Moved to [`crate::clock`]; kept here for the scheduler until it reads the clock there.
pub use crate::clock::{unix_now, unix_seconds};
pub use loss::{class_balanced_weights, cross_entropy, focal_loss, FocalConfig};
pub use optim::{cosine_lr, Sgd, SgdConfig};
pub use trainer::{device_name, train, Diverged, Interrupted, TrainOptions, DIVERGED_ABOVE};

/// The run-dir contract moved to [`crate::run_dir`]; re-exported for the code that still names
/// it here.
pub use crate::run_dir::{
    is_busy, mark_lost, median, queue, read_metrics, read_status, write_metrics, Attempt,
    EpochRecord, FormCounts, PruningEvent, RunDir, RunDirError, RunStatus, StatusRecord, Summary,
    CHECKPOINT_FILE, CONFIG_FILE, HEADER, LOG_FILE, METRICS_FILE, MODEL_FILE, STATUS_FILE,
    SUMMARY_FILE,
};
