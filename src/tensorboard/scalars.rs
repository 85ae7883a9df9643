//! What a run's event files hold, tag by tag: one source for the writer, the backfill of old
//! runs, the HParams metric columns and the docs. Steps count epochs (1-based): a value at
//! step `e` is the state after epoch `e`; the end-of-run values are at step `epochs`.
//!
//! - every epoch: the ten columns of `metrics.csv` ([`EPOCH_SCALARS`]), and the live fraction of
//!   each pruned layer family the model has ([`LIVE_GROUP_INPUTS`], [`LIVE_DSC_KERNELS`]);
//! - in an epoch where the pruning schedule changes the layers: a text ([`STRUCTURE`]) listing
//!   each change with its training iteration;
//! - at the end: [`FINAL_SCALARS`], from `summary.json`.

use super::event::Value;
use super::hparams::MetricInfo;
use crate::run_dir::EpochRecord;

/// A per-epoch scalar: one column of `metrics.csv`.
pub struct EpochScalar {
    pub tag: &'static str,
    /// The `metrics.csv` column it holds.
    pub column: &'static str,
    pub description: &'static str,
    pub value: fn(&EpochRecord) -> f64,
}

/// Every column of `metrics.csv` but `epoch` (the step), in file order.
pub const EPOCH_SCALARS: [EpochScalar; 10] = [
    EpochScalar {
        tag: "train/loss",
        column: "train_loss",
        description: "mean training loss over the epoch's images (the model's loss: CE or focal)",
        value: |r| r.train_loss,
    },
    EpochScalar {
        tag: "train/top1",
        column: "train_top1",
        description: "training top-1 of the epoch, percent (augmented images, training mode)",
        value: |r| r.train_top1,
    },
    EpochScalar {
        tag: "test/loss",
        column: "test_loss",
        description: "mean loss on the test set after the epoch, eval mode",
        value: |r| r.test_loss,
    },
    EpochScalar {
        tag: "test/top1",
        column: "test_top1",
        description: "test top-1 after the epoch, percent",
        value: |r| r.test_top1,
    },
    EpochScalar {
        tag: "train/lr",
        column: "lr",
        description: "learning rate of the epoch's last iteration",
        value: |r| r.lr,
    },
    EpochScalar {
        tag: "time/epoch_seconds",
        column: "epoch_seconds",
        description: "training seconds of the epoch (data + compute; evaluation excluded)",
        value: |r| r.epoch_seconds,
    },
    EpochScalar {
        tag: "time/data_seconds",
        column: "data_seconds",
        description: "of the epoch's training seconds: waiting for batches",
        value: |r| r.data_seconds,
    },
    EpochScalar {
        tag: "time/compute_seconds",
        column: "compute_seconds",
        description: "of the epoch's training seconds: forward, backward, optimiser step, pruning",
        value: |r| r.compute_seconds,
    },
    EpochScalar {
        tag: "time/eval_seconds",
        column: "eval_seconds",
        description: "seconds of the test-set evaluation after the epoch",
        value: |r| r.eval_seconds,
    },
    EpochScalar {
        tag: "time/images_per_second",
        column: "images_per_second",
        description: "training images per second over the epoch",
        value: |r| r.images_per_second,
    },
];

/// Fraction of the learned group convs' input connections still live after the epoch (1 until
/// the first drop, 1/condense_factor once condensed); only for models with such layers.
pub const LIVE_GROUP_INPUTS: &str = "pruning/learned_group_live_inputs";
/// Fraction of the learned-dsc convs' kernels still live after the epoch; only for models with
/// such layers.
pub const LIVE_DSC_KERNELS: &str = "pruning/learned_dsc_live_kernels";
/// The pruning schedule's structure changes made during the epoch, as text.
pub const STRUCTURE: &str = "pruning/structure";

/// How the pruned layers stand after one epoch, and what changed in it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EpochStructure {
    /// Live fraction of the learned-group inputs; `None` without learned group convs.
    pub learned_group_live: Option<f64>,
    /// Live fraction of the learned-dsc kernels; `None` without learned-dsc convs.
    pub learned_dsc_live: Option<f64>,
    /// The changes made during the epoch, in order, each one line (its iteration and the
    /// layers' state from then on).
    pub changes: Vec<String>,
}

/// The values of epoch `record.epoch`.
pub fn epoch_values(record: &EpochRecord, structure: &EpochStructure) -> Vec<Value> {
    let mut values: Vec<Value> = EPOCH_SCALARS
        .iter()
        .map(|s| Value::scalar(s.tag, (s.value)(record) as f32).described(s.description))
        .collect();
    if let Some(f) = structure.learned_group_live {
        values.push(
            Value::scalar(LIVE_GROUP_INPUTS, f as f32)
                .described("fraction of the learned group convs' inputs still live"),
        );
    }
    if let Some(f) = structure.learned_dsc_live {
        values.push(
            Value::scalar(LIVE_DSC_KERNELS, f as f32)
                .described("fraction of the learned-dsc convs' kernels still live"),
        );
    }
    if !structure.changes.is_empty() {
        values.push(
            Value::text(STRUCTURE, structure.changes.join("\n\n"))
                .described("the pruning schedule's structure changes in this epoch"),
        );
    }
    values
}

/// An end-of-run scalar: a number of `summary.json`.
pub struct FinalScalar {
    pub tag: &'static str,
    /// Its JSON pointer in `summary.json`.
    pub pointer: &'static str,
    pub description: &'static str,
}

/// What `summary.json` records of a done run, at step `epochs`. FLOPs and params in the
/// paper's convention unless the tag says `executed` (float32, as every TensorBoard scalar:
/// a count above 2^24, such as FLOPs, keeps 7 significant digits; `summary.json` has it exact).
pub const FINAL_SCALARS: [FinalScalar; 15] = [
    FinalScalar {
        tag: "final/deploy_test_top1",
        pointer: "/deploy_test_top1",
        description: "test top-1 of the deploy model, percent",
    },
    FinalScalar {
        tag: "final/deploy_test_loss",
        pointer: "/deploy_test_loss",
        description: "test loss of the deploy model",
    },
    FinalScalar {
        tag: "final/deploy_agreement",
        pointer: "/deploy_agreement",
        description: "fraction of test images on which the deploy model predicts what the \
                      training form predicts",
    },
    FinalScalar {
        tag: "final/training_form_test_top1",
        pointer: "/training_form_test_top1",
        description: "test top-1 of the training form before conversion, percent",
    },
    FinalScalar {
        tag: "final/best_test_top1",
        pointer: "/best_test_top1",
        description: "best test top-1 over the epochs, percent",
    },
    FinalScalar {
        tag: "final/best_epoch",
        pointer: "/best_epoch",
        description: "the epoch of the best test top-1",
    },
    FinalScalar {
        tag: "final/deploy_flops",
        pointer: "/deploy/paper/flops",
        description: "multiply-adds of the deploy form, batch 1, the paper's convention",
    },
    FinalScalar {
        tag: "final/deploy_params",
        pointer: "/deploy/paper/params",
        description: "parameters of the deploy form, the paper's convention",
    },
    FinalScalar {
        tag: "final/deploy_flops_executed",
        pointer: "/deploy/executed/flops",
        description: "multiply-adds of the deploy form, batch 1, as executed",
    },
    FinalScalar {
        tag: "final/deploy_params_executed",
        pointer: "/deploy/executed/params",
        description: "parameters of the deploy form, as executed",
    },
    FinalScalar {
        tag: "final/deploy_bytes",
        pointer: "/deploy_bytes",
        description: "bytes of model.safetensors",
    },
    FinalScalar {
        tag: "final/checkpoint_bytes",
        pointer: "/checkpoint_bytes",
        description: "bytes of a training checkpoint (tensors and momentum)",
    },
    FinalScalar {
        tag: "final/train_seconds",
        pointer: "/train_seconds",
        description: "training seconds of all epochs (evaluation excluded)",
    },
    FinalScalar {
        tag: "final/median_epoch_seconds",
        pointer: "/median_epoch_seconds",
        description: "median training seconds per epoch",
    },
    FinalScalar {
        tag: "final/median_images_per_second",
        pointer: "/median_images_per_second",
        description: "median training images per second over the epochs",
    },
];

/// The end-of-run values of `summary` (a `summary.json`); a number an older summary lacks is
/// left out.
pub fn final_values(summary: &serde_json::Value) -> Vec<Value> {
    FINAL_SCALARS
        .iter()
        .filter_map(|s| {
            let v = summary.pointer(s.pointer)?.as_f64()?;
            Some(Value::scalar(s.tag, v as f32).described(s.description))
        })
        .collect()
}

/// The metric columns of the HParams table: the last value of each tag in a run's folder.
pub const METRICS: [MetricInfo; 6] = [
    MetricInfo {
        tag: "test/top1",
        display_name: "final test top-1",
        description: "test top-1 after the last epoch, percent",
    },
    MetricInfo {
        tag: "final/best_test_top1",
        display_name: "best test top-1",
        description: "best test top-1 over the epochs, percent",
    },
    MetricInfo {
        tag: "final/deploy_test_top1",
        display_name: "deploy top-1",
        description: "test top-1 of the deploy model, percent",
    },
    MetricInfo {
        tag: "final/deploy_flops",
        display_name: "FLOPs",
        description: "multiply-adds of the deploy form, batch 1, the paper's convention",
    },
    MetricInfo {
        tag: "final/deploy_params",
        display_name: "params",
        description: "parameters of the deploy form, the paper's convention",
    },
    MetricInfo {
        tag: "final/median_epoch_seconds",
        display_name: "seconds per epoch",
        description: "median training seconds per epoch",
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run_dir::HEADER;

    /// Every `metrics.csv` column but `epoch` has exactly one tag, in file order, and each tag
    /// reads its own column.
    #[test]
    fn every_metrics_column_is_a_scalar() {
        let columns: Vec<&str> = EPOCH_SCALARS.iter().map(|s| s.column).collect();
        assert_eq!(columns, HEADER[1..]);
        let r = EpochRecord {
            epoch: 3,
            train_loss: 1.0,
            train_top1: 2.0,
            test_loss: 3.0,
            test_top1: 4.0,
            lr: 5.0,
            epoch_seconds: 6.0,
            data_seconds: 7.0,
            compute_seconds: 8.0,
            eval_seconds: 9.0,
            images_per_second: 10.0,
        };
        let got: Vec<f64> = EPOCH_SCALARS.iter().map(|s| (s.value)(&r)).collect();
        assert_eq!(got, (1..=10).map(f64::from).collect::<Vec<_>>());
        let mut tags: Vec<&str> = EPOCH_SCALARS.iter().map(|s| s.tag).collect();
        tags.extend(FINAL_SCALARS.iter().map(|s| s.tag));
        tags.extend([LIVE_GROUP_INPUTS, LIVE_DSC_KERNELS, STRUCTURE]);
        let n = tags.len();
        tags.sort();
        tags.dedup();
        assert_eq!(tags.len(), n, "tags are unique");
        for m in &METRICS {
            assert!(tags.contains(&m.tag), "metric {} is a written tag", m.tag);
        }
    }

    #[test]
    fn final_values_follow_the_summary() {
        let summary = serde_json::json!({
            "deploy_test_top1": 91.5,
            "deploy": {"paper": {"flops": 65812394, "params": 516202}},
            "best_epoch": 7,
        });
        let got: Vec<(String, super::super::event::Data)> = final_values(&summary)
            .into_iter()
            .map(|v| (v.tag, v.data))
            .collect();
        use super::super::event::Data::Scalar;
        assert_eq!(
            got,
            [
                ("final/deploy_test_top1".to_string(), Scalar(91.5)),
                ("final/best_epoch".to_string(), Scalar(7.0)),
                ("final/deploy_flops".to_string(), Scalar(65812394.0)),
                ("final/deploy_params".to_string(), Scalar(516202.0)),
            ]
        );
    }
}
