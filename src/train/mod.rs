//! Training: the loop of spec section 6 with its losses, optimiser and learning-rate schedule,
//! checkpoints and resume. The files it leaves in a run dir are defined in [`crate::run_dir`];
//! its TensorBoard events are written from them (`events`), with the pruning schedule replayed
//! epoch by epoch (`structure`).

pub mod checkpoint;
mod events;
mod loss;
mod meter;
pub mod model_file;
mod optim;
mod structure;
mod trainer;

pub use events::{backfill, Backfilled};
pub use loss::{class_balanced_weights, cross_entropy, focal_loss, FocalConfig};
pub use optim::{cosine_lr, Sgd, SgdConfig};
pub use structure::replay;
pub use trainer::{
    device_name, train, Diverged, Interrupted, Outcome, TrainOptions, DIVERGED_ABOVE,
};
