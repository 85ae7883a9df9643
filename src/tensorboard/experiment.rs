//! The experiment's own event file, `<results>/<experiment>/`[`EXPERIMENT_FILE`]: the HParams
//! `Experiment` record (the grid's hyperparameters with their values, and the metric columns),
//! which makes `tensorboard --logdir <results>/<experiment>` show one row per run, the swept
//! keys as columns. Rewritten whole (atomically) from `plan.json` whenever the plan is written:
//! TensorBoard takes the first experiment record it finds, so there is exactly one.

use std::path::{Path, PathBuf};

use super::event::{Event, Value};
use super::grid::Grid;
use super::hparams::{experiment, EXPERIMENT_TAG, PLUGIN_NAME};
use super::record::frame;
use super::scalars::METRICS;
use crate::io::write_atomic;
use crate::run_dir::Plan;

/// The experiment's event file in its results dir (a fixed name: one file, replaced).
pub const EXPERIMENT_FILE: &str = "events.out.tfevents.ablate-experiment";

/// Writes the experiment record of `plan` into its results dir `root`; returns the file.
pub fn write_experiment(root: &Path, plan: &Plan) -> anyhow::Result<PathBuf> {
    let now = crate::clock::unix_seconds();
    let content = experiment(
        &plan.name,
        plan.description.as_deref().unwrap_or_default(),
        now,
        &Grid::of(plan).infos(),
        &METRICS,
    );
    let mut bytes = frame(&Event::file_version(now).encode());
    let record = Value::plugin(EXPERIMENT_TAG, PLUGIN_NAME, content);
    bytes.extend(frame(&Event::summary(now, 0, vec![record]).encode()));
    let path = root.join(EXPERIMENT_FILE);
    write_atomic(&path, &bytes)?;
    Ok(path)
}
