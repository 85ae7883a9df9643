//! TensorBoard event files: every run writes its curves, pruning events, end-of-run numbers
//! and HParams session into `<run dir>/tensorboard/`, and each experiment its HParams grid into
//! its results dir, so that `tensorboard --logdir results/<experiment>` shows the runs as they
//! train and the ablation grid as a table.
//!
//! The format, hand-written on [`crate::proto`] (no TensorFlow, no protobuf codegen): TFRecord
//! framing with masked CRC-32C around `Event` protobufs holding `Summary` values.
//!
//! - [`crc32c`]: the checksum and its mask.
//! - [`record`]: TFRecord framing, written and read back.
//! - [`event`]: the `Event` / `Summary` messages.
//! - [`hparams`]: the HParams plugin's records; [`grid`]: an experiment's plan as its columns.
//! - [`scalars`]: what the files hold, tag by tag.
//! - [`folder`]: a run's event folder: what it holds, this process's file, never a step twice.
//! - [`experiment`]: the experiment's own file.
//!
//! Writing event files never fails a run: the callers turn every error here into a warning.

pub mod crc32c;
pub mod event;
pub mod experiment;
pub mod folder;
pub mod grid;
pub mod hparams;
pub mod record;
pub mod scalars;

pub use event::{Event, Value};
pub use experiment::{write_experiment, EXPERIMENT_FILE};
pub use folder::{event_files, EventFolder, WriteError};
pub use grid::Grid;
pub use scalars::{epoch_values, final_values, EpochStructure};
