//! What one training step of a network runs on the CPU, per image: the input of the time model
//! (`bench::estimate`). It is read off the objects the step runs: the stages each dense layer
//! hands the fused dense block ([`DenseLayer::block_stages`]) at the plane size its block runs
//! at, and the stem, transitions and head around the blocks, whose costs they record
//! themselves ([`crate::cost::trace`]). No second formula of the architecture.

use candle_core::{Module, Result, Tensor};

use super::dense_layer::DenseLayer;
use super::network::Network;
use crate::cost::{trace, Convention};
use crate::kernels::{Simd, StageConv};

/// The kind of loop a fused stage's conv runs, which sets its speed per multiply-add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StageKind {
    /// A 1x1 conv in groups: a GEMM per image.
    Pointwise,
    /// The learned-group 1x1 over its live inputs only: a GEMM over gathered inputs.
    Live,
    /// A 3x3 conv with more than one input per group: the register-blocked direct loops.
    Conv3x3,
    /// A depthwise 3x3 (one input per group, `cin == cout`).
    Depthwise3x3,
}

impl StageKind {
    pub const ALL: [StageKind; 4] = [
        Self::Pointwise,
        Self::Live,
        Self::Conv3x3,
        Self::Depthwise3x3,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Pointwise => "pointwise",
            Self::Live => "live",
            Self::Conv3x3 => "conv3x3",
            Self::Depthwise3x3 => "depthwise3x3",
        }
    }
}

/// One pre-activated conv of a dense layer as the fused block runs it, for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct StageWork {
    pub kind: StageKind,
    /// Input and output channels.
    pub cin: usize,
    pub cout: usize,
    /// Side of the square planes the block runs at, pixels.
    pub side: usize,
    /// Groups of the conv.
    pub groups: usize,
    /// Input channels the conv activates per image: `cin`, or for the live 1x1 its groups'
    /// live inputs, each group's gathered apart.
    pub reads: usize,
    /// Whether a dropout mask is applied in front of the conv.
    pub dropout: bool,
    /// Multiply-adds of the conv's forward pass, one image (the pruned products the kernel
    /// skips are not counted).
    pub macs: u64,
}

impl StageWork {
    /// `conv` from `cin` to `cout` channels over `side x side` planes.
    pub fn new(conv: &StageConv, cin: usize, cout: usize, side: usize, dropout: bool) -> Self {
        let plane = (side * side) as u64;
        let (kind, groups, macs, reads) = match conv {
            StageConv::Pointwise { groups } => (
                StageKind::Pointwise,
                (*groups).max(1),
                (cin / groups.max(&1) * cout) as u64 * plane,
                cin,
            ),
            StageConv::Live(live) => (
                StageKind::Live,
                live.groups(),
                (live.per_group() * cout) as u64 * plane,
                live.groups() * live.per_group(),
            ),
            StageConv::Conv3x3 { groups } => {
                let groups = (*groups).max(1);
                let inputs = cin / groups;
                let kind = if inputs == 1 && cin == cout {
                    StageKind::Depthwise3x3
                } else {
                    StageKind::Conv3x3
                };
                (kind, groups, (9 * inputs * cout) as u64 * plane, cin)
            }
            // The depthwise and the pointwise, priced as the dense 3x3 loops (they run at
            // about their rate per multiply-add).
            StageConv::Separable(pairs) => (
                StageKind::Conv3x3,
                1,
                (pairs.len() * (9 + cout)) as u64 * plane,
                cin,
            ),
            // Priced as the 3x3 it is, over the kernels it runs.
            StageConv::Live3x3(live) => (
                StageKind::Conv3x3,
                live.groups(),
                live.macs_per_position(Simd::active()) as u64 * plane,
                cin,
            ),
        };
        Self {
            kind,
            cin,
            cout,
            side,
            groups,
            reads,
            dropout,
            macs,
        }
    }

    /// Output channels per group of the conv.
    pub fn outputs_per_group(&self) -> usize {
        self.cout / self.groups.max(1)
    }

    /// Activation values the stage passes over per image: the inputs it normalises and
    /// activates (in the forward pass, again in the backward, and their gradient; the live
    /// 1x1 each group's apart), and its outputs.
    pub fn elements(&self) -> u64 {
        ((self.reads + self.cout) * self.side * self.side) as u64
    }
}

/// What one training step runs per image, in the network's current schedule phase.
#[derive(Debug, Clone, PartialEq)]
pub struct StepWork {
    /// Every stage of every dense layer, in forward order.
    pub stages: Vec<StageWork>,
    /// Multiply-adds of the ops outside the blocks (the stem conv, the classifier), forward.
    pub other_macs: u64,
    /// Activation values of the ops outside the blocks (the stem's output, each transition's
    /// input, the head's input).
    pub other_elements: u64,
}

impl Network {
    /// What one training step of this network runs per image now, in its current schedule
    /// phase, as the fused CPU kernels run it; `None` where a layer has no fused form (then
    /// its block runs as separate candle ops, which the time model does not price).
    pub fn step_work(&self) -> Result<Option<StepWork>> {
        let x = Network::zeros_input(1, self.device())?;
        let (y, stem) = trace::capture(|| self.stem().forward(&x))?;
        let (_, mut channels, mut side, _) = y.dims4()?;
        let mut other_macs: u64 = stem.iter().map(|l| l.get(Convention::Executed).flops).sum();
        let mut other_elements = y.elem_count() as u64;
        let mut stages = Vec::new();
        for (b, block) in self.blocks().iter().enumerate() {
            for layer in block {
                let Some(fused) = layer_stages(layer, side)? else {
                    return Ok(None);
                };
                channels += fused.last().map_or(0, |s| s.cout);
                stages.extend(fused);
            }
            let features = (channels * side * side) as u64;
            other_elements += features;
            if let Some(pool) = self.transition(b) {
                let pooled = pool.forward(&Tensor::zeros(
                    (1, channels, side, side),
                    candle_core::DType::F32,
                    self.device(),
                )?)?;
                side = pooled.dim(2)?;
            }
        }
        let features = Tensor::zeros((1, channels), candle_core::DType::F32, self.device())?;
        let (_, head) = trace::capture(|| self.classify(&features))?;
        other_macs += head
            .iter()
            .map(|l| l.get(Convention::Executed).flops)
            .sum::<u64>();
        Ok(Some(StepWork {
            stages,
            other_macs,
            other_elements,
        }))
    }
}

/// `layer`'s fused stages at `side x side` planes in training; `None` without a fused form.
fn layer_stages(layer: &DenseLayer, side: usize) -> Result<Option<Vec<StageWork>>> {
    let Some(fused) = layer.block_stages(true)? else {
        return Ok(None);
    };
    Ok(Some(
        fused
            .iter()
            .map(|f| {
                let s = &f.stage;
                StageWork::new(&s.conv, s.cin, s.cout, side, s.noise.is_some())
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelSource;
    use candle_core::Device;

    fn net(model: &str, sets: &[&str]) -> Network {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let spec = ModelSource::parse(model).resolve(&sets).unwrap().spec;
        Network::seeded(&spec, 0, &Device::Cpu).unwrap()
    }

    /// The stages' multiply-adds are the executed count of the convs the blocks run (the
    /// analyzer's, from the eval forward pass), and the live 1x1 drops to the live share as
    /// the schedule prunes.
    #[test]
    fn stage_work_matches_the_analyzer_and_follows_the_schedule() {
        let mut n = net("condensenet-86", &["stages=[2,2,2]"]);
        let work = n.step_work().unwrap().unwrap();
        assert_eq!(work.stages.len(), 2 * 6);
        let kinds: Vec<StageKind> = work.stages.iter().map(|s| s.kind).collect();
        // Nothing pruned yet: the learned-group 1x1 runs as a plain 1x1.
        assert_eq!(&kinds[..2], &[StageKind::Pointwise, StageKind::Conv3x3]);
        let sides: Vec<usize> = work.stages.iter().map(|s| s.side).collect();
        assert_eq!(sides, [32, 32, 32, 32, 16, 16, 16, 16, 8, 8, 8, 8]);
        let costs = crate::analyze::trace_costs(&n).unwrap();
        let total = crate::analyze::total(&costs, Convention::Executed).flops;
        let stage_macs: u64 = work.stages.iter().map(|s| s.macs).sum();
        let pools: u64 = costs
            .iter()
            .filter(|l| l.op.starts_with("avgpool") || l.op.starts_with("relu"))
            .map(|l| l.executed.flops)
            .sum();
        assert_eq!(stage_macs + work.other_macs + pools, total);
        // Half way: the learned-group 1x1s read a quarter of their inputs.
        n.advance_schedule(0.75).unwrap();
        let late = n.step_work().unwrap().unwrap();
        for (a, b) in work.stages.iter().zip(&late.stages) {
            match b.kind {
                StageKind::Live => {
                    assert_eq!(a.kind, StageKind::Pointwise);
                    assert_eq!(b.macs * 4, a.macs);
                }
                _ => assert_eq!(b, a),
            }
        }
        assert!(late.stages.iter().any(|s| s.kind == StageKind::Live));
    }

    /// CondenseNeXt's learned-dsc 3x3 is a dense 3x3 stage at every phase (converted too),
    /// dropout is flagged, and a depthwise-separable spatial conv is a depthwise then a
    /// pointwise stage.
    #[test]
    fn stage_kinds_of_each_layer_kind() {
        let mut n = net("condensenext", &["stages=[1,1,1]"]);
        let early = n.step_work().unwrap().unwrap();
        n.advance_schedule(0.9).unwrap();
        let late = n.step_work().unwrap().unwrap();
        for w in [&early, &late] {
            assert!(w.stages.iter().any(|s| s.dropout));
            assert!(w.stages.iter().any(|s| s.kind == StageKind::Conv3x3));
        }
        let n = net("condensenext", &["stages=[1,1,1]", "dropout=0"]);
        assert!(!n
            .step_work()
            .unwrap()
            .unwrap()
            .stages
            .iter()
            .any(|s| s.dropout));
        let n = net(
            "condensenet-86",
            &["stages=[1,1,1]", "spatial_conv=\"dsc\""],
        );
        let kinds: Vec<StageKind> = n
            .step_work()
            .unwrap()
            .unwrap()
            .stages
            .iter()
            .map(|s| s.kind)
            .take(3)
            .collect();
        assert_eq!(
            kinds,
            [
                StageKind::Pointwise,
                StageKind::Depthwise3x3,
                StageKind::Pointwise
            ]
        );
    }
}
