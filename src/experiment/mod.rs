//! Experiments: a TOML file that sweeps model, training and data keys
//! ([`file::ExperimentFile`]), expanded and resolved to runs with stable ids
//! ([`Experiment`], [`RunId`]).

pub mod file;
mod plan;

pub use file::ExperimentFile;
pub use plan::{Experiment, PlannedRun, RunId};
