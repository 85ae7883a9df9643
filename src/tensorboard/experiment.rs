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
///
/// A record that says what the file holds already is not written again (a no-op `ablate run`
/// or a second `ablate report` leaves it, and its bytes, as they were).
pub fn write_experiment(root: &Path, plan: &Plan) -> anyhow::Result<PathBuf> {
    let path = root.join(EXPERIMENT_FILE);
    let bytes_at = |time: f64| {
        let content = experiment(
            &plan.name,
            plan.description.as_deref().unwrap_or_default(),
            time,
            &Grid::of(plan).infos(),
            &METRICS,
        );
        let mut bytes = frame(&Event::file_version(time).encode());
        let record = Value::plugin(EXPERIMENT_TAG, PLUGIN_NAME, content);
        bytes.extend(frame(&Event::summary(time, 0, vec![record]).encode()));
        bytes
    };
    let unchanged = std::fs::read(&path)
        .ok()
        .is_some_and(|old| first_wall_time(&old).is_some_and(|t| bytes_at(t) == old));
    if unchanged {
        return Ok(path);
    }
    write_atomic(&path, &bytes_at(crate::clock::unix_seconds()))?;
    Ok(path)
}

/// The wall time of the first event of an event file's bytes: a record is its length (8
/// bytes), the length's CRC (4), then the event, whose field 1 (`wall_time`, a double: tag
/// byte 0x09) comes first as this crate writes it.
fn first_wall_time(bytes: &[u8]) -> Option<f64> {
    let event = bytes.get(12..)?;
    if *event.first()? != 0x09 {
        return None;
    }
    Some(f64::from_le_bytes(event.get(1..9)?.try_into().ok()?))
}
