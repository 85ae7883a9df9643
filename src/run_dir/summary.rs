//! `summary.json`: a finished run's outcome, written once by the trainer as a [`Summary`] and
//! read by the report and the scheduler through [`read_summary`] as a [`RecordedSummary`].

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::dir::RunStatus;
use super::metrics::EpochRecord;
use super::SUMMARY_FILE;
use crate::cost::Cost;
use crate::io::write_atomic;

/// `summary.json`: the run's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub model: String,
    pub status: RunStatus,
    pub device: String,
    pub epochs: usize,
    /// The last epoch's record.
    pub last: EpochRecord,
    /// Best test top-1 over epochs (percent) and its 1-based epoch.
    pub best_test_top1: f64,
    pub best_epoch: usize,
    /// Test top-1 of the deploy model (percent).
    pub deploy_test_top1: f64,
    pub deploy_test_loss: f64,
    /// Test images on which the deploy model predicts the class the training form predicts
    /// right before conversion (schedule finished, head pruned), as a fraction.
    pub deploy_agreement: f64,
    /// Test top-1 of the training form after its schedule but before the head is pruned (the
    /// last epoch's `test_top1`); the head pruning is the only step of the conversion that
    /// changes predictions.
    pub training_form_test_top1: f64,
    /// Sum of the epochs' training seconds (evaluation excluded).
    pub train_seconds: f64,
    /// Median of the epochs' training seconds.
    pub median_epoch_seconds: f64,
    /// Median of the epochs' training images per second.
    pub median_images_per_second: f64,
    pub deploy: FormCounts,
    pub training: FormCounts,
    /// Bytes of `model.safetensors`.
    pub deploy_bytes: u64,
    /// Bytes of a training checkpoint as the spec defines it (tensors and momentum only).
    pub checkpoint_bytes: u64,
    pub train_images: usize,
    pub test_images: usize,
    /// The pruning schedule's structure changes (learned-group drops, learned-dsc drops and
    /// the conversion), in order; empty in summaries written before it was recorded.
    #[serde(default)]
    pub schedule: Vec<PruningEvent>,
    /// Peak resident memory of the training process (VmHWM, bytes) when its last epoch
    /// ended, and when the run ended (after the conversion and the two evaluations); 0 where
    /// the OS does not say, or in summaries written before they were recorded. A resumed run
    /// gives its last process's.
    #[serde(default)]
    pub peak_rss_training_bytes: u64,
    #[serde(default)]
    pub peak_rss_bytes: u64,
}

/// A `summary.json` as its readers (the report, the scheduler) take it: only the fields they
/// use. The others, and fields a later version adds to [`Summary`], may be missing, so that
/// the run dirs of older versions keep counting.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RecordedSummary {
    /// Test top-1 of the deploy model (percent).
    pub deploy_test_top1: f64,
    pub deploy: FormCounts,
    /// Bytes of `model.safetensors`.
    pub deploy_bytes: u64,
    /// Bytes of a training checkpoint as the spec defines it (tensors and momentum only).
    pub checkpoint_bytes: u64,
    /// The pruning schedule's structure changes; empty in summaries written before it was
    /// recorded.
    #[serde(default)]
    pub schedule: Vec<PruningEvent>,
}

/// A change of the layers' structure during a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PruningEvent {
    /// Training progress in [0, 1) at which it happens.
    pub progress: f64,
    /// The same point in epochs elapsed (progress times epochs).
    pub epoch: f64,
    /// The layers' state from here on, e.g. `learned-dsc 3/8 drops`.
    pub structure: String,
}

/// FLOPs and parameters of one form, both conventions (multiply-adds, batch 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FormCounts {
    pub paper: Cost,
    pub executed: Cost,
}

/// Writes `summary` into the run dir `root`.
pub fn write_summary(root: &Path, summary: &Summary) -> anyhow::Result<()> {
    write_atomic(
        &root.join(SUMMARY_FILE),
        serde_json::to_string_pretty(summary)?.as_bytes(),
    )
}

/// The summary of the run dir `root`: `Ok(None)` without one, an error naming the file when it
/// is not a summary (not JSON, or without a field its readers use).
pub fn read_summary(root: &Path) -> anyhow::Result<Option<RecordedSummary>> {
    let path = root.join(SUMMARY_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    serde_json::from_str(&text)
        .map(Some)
        .with_context(|| format!("{}: not a summary", path.display()))
}
