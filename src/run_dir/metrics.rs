//! The per-epoch record of a run and its `metrics.csv`.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::io::write_atomic;

/// One row of `metrics.csv`. Accuracies are percent (0-100); times are wall-clock seconds.
/// Everything above `epoch_seconds` is bit-reproducible for a seed on one device; the timing
/// columns are not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based.
    pub epoch: usize,
    /// Mean training loss over the epoch's images (the model's loss: CE or focal).
    pub train_loss: f64,
    /// Training top-1 of the epoch (augmented images, training mode).
    pub train_top1: f64,
    /// Mean loss on the test set, eval mode.
    pub test_loss: f64,
    pub test_top1: f64,
    /// Learning rate of the epoch's last iteration.
    pub lr: f64,
    /// Training seconds of the epoch (data + compute; evaluation excluded).
    pub epoch_seconds: f64,
    /// Of `epoch_seconds`: waiting for batches.
    pub data_seconds: f64,
    /// Of `epoch_seconds`: forward, backward, optimiser step, pruning.
    pub compute_seconds: f64,
    /// Seconds of the test-set evaluation after the epoch.
    pub eval_seconds: f64,
    /// Training images per second over the epoch.
    pub images_per_second: f64,
}

impl EpochRecord {
    /// The record without its timing columns (what must reproduce bit for bit).
    pub fn outcome(&self) -> [f64; 6] {
        [
            self.epoch as f64,
            self.train_loss,
            self.train_top1,
            self.test_loss,
            self.test_top1,
            self.lr,
        ]
    }
}

/// Writes every record as `metrics.csv`, atomically (the file always holds whole rows).
pub fn write_metrics(path: &Path, records: &[EpochRecord]) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    if records.is_empty() {
        w.write_record(HEADER)?;
    }
    for r in records {
        w.serialize(r)?;
    }
    let bytes = w.into_inner().context("writing metrics.csv")?;
    write_atomic(path, &bytes)
}

/// Reads a `metrics.csv` written by [`write_metrics`].
pub fn read_metrics(path: &Path) -> anyhow::Result<Vec<EpochRecord>> {
    let mut r =
        csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    r.deserialize()
        .enumerate()
        .map(|(i, row)| row.with_context(|| format!("{}: row {}", path.display(), i + 2)))
        .collect()
}

/// Column names, in file order.
pub const HEADER: [&str; 11] = [
    "epoch",
    "train_loss",
    "train_top1",
    "test_loss",
    "test_top1",
    "lr",
    "epoch_seconds",
    "data_seconds",
    "compute_seconds",
    "eval_seconds",
    "images_per_second",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_header() {
        let dir = std::env::temp_dir().join(format!("ablate-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("metrics.csv");
        write_metrics(&path, &[]).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().trim(),
            HEADER.join(",")
        );
        let r = EpochRecord {
            epoch: 1,
            train_loss: 2.302585092994046,
            train_top1: 10.5,
            test_loss: 1.0 / 3.0,
            test_top1: 12.25,
            lr: 0.09999,
            epoch_seconds: 1.5,
            data_seconds: 0.25,
            compute_seconds: 1.25,
            eval_seconds: 0.5,
            images_per_second: 333.0,
        };
        write_metrics(&path, &[r.clone(), r.clone()]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(&HEADER.join(",")));
        assert_eq!(read_metrics(&path).unwrap(), vec![r.clone(), r]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// The median of `values` (the mean of the middle two for an even count); `None` when empty.
pub fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.into_iter().collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}
