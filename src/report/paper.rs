//! The CondenseNeXt paper's own numbers (spec section 7): its Table I and Table II rows, and the
//! changes its text claims for each step from CondenseNet toward CondenseNeXt. Reports set them
//! beside ablate's measurements where the rows match; nothing here tunes a preset.

use crate::config::{Activation, BottleneckConv, Cardinality, ModelSpec, SpatialConv};

/// A row of the paper's Tables I and II (CIFAR-10, 200 epochs, one Tesla V100).
pub struct PaperRow {
    pub name: &'static str,
    /// The preset whose runs it is set against.
    pub preset: &'static str,
    pub flops_m: f64,
    pub params_m: f64,
    /// Percent.
    pub top1: f64,
    /// Megabytes, the trained model file.
    pub size_mb: f64,
    /// Seconds, all 200 epochs.
    pub total_seconds: f64,
    /// Seconds per epoch.
    pub epoch_seconds: f64,
}

/// The device the paper's times were measured on.
pub const PAPER_DEVICE: &str = "Tesla V100";

/// The paper's Table I and Table II.
pub const PAPER_ROWS: &[PaperRow] = &[
    PaperRow {
        name: "CondenseNet",
        preset: "condensenet-86",
        flops_m: 65.81,
        params_m: 0.52,
        top1: 94.24,
        size_mb: 16.7,
        total_seconds: (2 * 3600 + 59 * 60 + 19) as f64,
        epoch_seconds: 53.79,
    },
    PaperRow {
        name: "CondenseNeXt",
        preset: "condensenext",
        flops_m: 23.80,
        params_m: 0.16,
        top1: 92.28,
        size_mb: 2.9,
        total_seconds: (3600 + 4 * 60 + 48) as f64,
        epoch_seconds: 19.42,
    },
];

/// The paper's row for runs of `preset`.
pub fn row_of(preset: &str) -> Option<&'static PaperRow> {
    PAPER_ROWS.iter().find(|p| p.preset == preset)
}

/// A change the paper's text claims an effect for.
pub struct PaperClaim {
    pub name: &'static str,
    /// The keys the change sets, applied to a baseline model.
    apply: fn(&mut ModelSpec),
    /// Relative change of FLOPs (-0.073: 7.3% fewer).
    pub flops: Option<f64>,
    /// Relative change of parameters.
    pub params: Option<f64>,
    /// Top-1 change, percentage points.
    pub top1_pp: Option<f64>,
}

/// The paper's claims, against its grouped-convolution CondenseNet.
pub const PAPER_CLAIMS: &[PaperClaim] = &[
    PaperClaim {
        name: "depthwise-separable 3x3",
        apply: |m| m.spatial_conv = SpatialConv::Dsc,
        flops: Some(-0.073),
        params: Some(-0.115),
        top1_pp: Some(-1.17),
    },
    PaperClaim {
        name: "pruning with cardinality",
        apply: |m| {
            m.bottleneck_conv = BottleneckConv::LearnedDsc;
            m.cardinality = Cardinality::Width;
        },
        flops: Some(-0.6099),
        params: Some(-0.6521),
        top1_pp: Some(-0.88),
    },
    PaperClaim {
        name: "ReLU6",
        apply: |m| m.activation = Activation::Relu6,
        flops: None,
        params: None,
        top1_pp: Some(0.577),
    },
];

/// The claim about the change that turns `base` into `variant`, if the paper makes one: the
/// variant must be exactly the baseline with that claim's keys set (and differ from it).
pub fn claim_for(base: &ModelSpec, variant: &ModelSpec) -> Option<&'static PaperClaim> {
    PAPER_CLAIMS.iter().find(|c| {
        let mut changed = base.clone();
        (c.apply)(&mut changed);
        changed != *base && changed == *variant
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::preset;

    #[test]
    fn the_papers_per_epoch_ratio_is_2_77() {
        let (cn, cnx) = (&PAPER_ROWS[0], &PAPER_ROWS[1]);
        assert_eq!(
            format!("{:.2}", cn.epoch_seconds / cnx.epoch_seconds),
            "2.77"
        );
        assert_eq!(cn.total_seconds, 10759.0);
        assert_eq!(cnx.total_seconds, 3888.0);
    }

    #[test]
    fn claims_match_exactly_one_change() {
        let base = preset("condensenet-86").unwrap();
        let dsc = preset("condensenet-86-dsc").unwrap();
        assert_eq!(
            claim_for(&base, &dsc).unwrap().name,
            "depthwise-separable 3x3"
        );
        let relu6 = ModelSpec {
            activation: Activation::Relu6,
            ..base.clone()
        };
        assert_eq!(claim_for(&base, &relu6).unwrap().name, "ReLU6");
        let pruned = ModelSpec {
            bottleneck_conv: BottleneckConv::LearnedDsc,
            cardinality: Cardinality::Width,
            ..base.clone()
        };
        assert_eq!(
            claim_for(&base, &pruned).unwrap().name,
            "pruning with cardinality"
        );
        // At another pruning factor, with a second change, or against itself: no claim.
        assert!(claim_for(
            &base,
            &ModelSpec {
                p: 2,
                ..pruned.clone()
            }
        )
        .is_none());
        assert!(claim_for(
            &base,
            &ModelSpec {
                dropout: 0.1,
                ..relu6
            }
        )
        .is_none());
        assert!(claim_for(&base, &base).is_none());
        assert!(claim_for(&base, &preset("condensenext").unwrap()).is_none());
    }
}
