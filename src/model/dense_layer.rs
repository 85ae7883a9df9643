//! One dense layer: `concat([x, spatial(bottleneck(x))])`.

use candle_core::{Result, Tensor};
use candle_nn::{ModuleT, VarBuilder};

use super::condensed_group_conv::CondensedGroupConv;
use super::conv::Conv2dConfig;
use super::dropout::{Dropout, NoiseClock};
use super::fused_stage::FusedStage;
use super::learned_dsc_conv::{LearnedDscConfig, LearnedDscConv};
use super::learned_group_conv::LearnedGroupConv;
use super::preact_conv::PreActConv;
use super::state::{HasState, Saved, State};
use super::PruneReport;
use crate::config::{BottleneckConv, LayerPlan, ModelSpec, SpatialConv};

/// The Cin -> W conv of a dense layer, in whichever form it is now.
#[derive(Debug, Clone)]
pub enum Bottleneck {
    LearnedGroup(LearnedGroupConv),
    CondensedGroup(CondensedGroupConv),
    LearnedDsc(LearnedDscConv),
    Dense(PreActConv),
}

/// The W -> k conv of a dense layer.
#[derive(Debug, Clone)]
pub enum Spatial {
    Group(PreActConv),
    /// Depthwise 3x3 (BN, act before it) then pointwise 1x1 (BN, act before it).
    Dsc {
        dw: PreActConv,
        pw: PreActConv,
    },
}

#[derive(Debug, Clone)]
pub struct DenseLayer {
    bottleneck: Bottleneck,
    spatial: Spatial,
}

impl DenseLayer {
    /// Sub-layers are named `{prefix}.bottleneck.*` and `{prefix}.spatial.*`.
    /// Dropout noise (if any) is drawn from `seed` at the step `clock` shows.
    pub fn new(
        spec: &ModelSpec,
        plan: &LayerPlan,
        seed: u64,
        clock: &NoiseClock,
        vb: VarBuilder,
    ) -> Result<Self> {
        let (cin, width, k, act) = (plan.cin, plan.width, plan.growth, spec.activation);
        let vbb = vb.pp("bottleneck");
        let dropout = (spec.dropout > 0.0).then(|| {
            Dropout::new(
                spec.dropout,
                seed,
                &format!("{}.dropout", vbb.prefix()),
                clock.clone(),
            )
        });
        let bottleneck = match spec.bottleneck_conv {
            BottleneckConv::LearnedGroup => {
                let groups = spec.cardinality.resolve(width);
                Bottleneck::LearnedGroup(LearnedGroupConv::new(
                    cin, width, groups, spec.p, act, dropout, vbb,
                )?)
            }
            BottleneckConv::LearnedDsc => {
                let cfg = LearnedDscConfig {
                    cardinality: spec.cardinality.resolve(width),
                    p: spec.p,
                    steps: spec.prune_steps,
                    until: spec.prune_until,
                };
                Bottleneck::LearnedDsc(LearnedDscConv::new(cin, width, cfg, act, dropout, vbb)?)
            }
            BottleneckConv::Dense => Bottleneck::Dense(PreActConv::new(
                cin,
                width,
                Conv2dConfig::pointwise(),
                act,
                dropout,
                vbb,
            )?),
        };
        let vbs = vb.pp("spatial");
        let spatial = match spec.spatial_conv {
            SpatialConv::Group => Spatial::Group(PreActConv::new(
                width,
                k,
                Conv2dConfig::grouped3x3(spec.spatial_groups),
                act,
                None,
                vbs,
            )?),
            SpatialConv::Dsc => Spatial::Dsc {
                dw: PreActConv::new(
                    width,
                    width,
                    Conv2dConfig::grouped3x3(width),
                    act,
                    None,
                    vbs.pp("dw"),
                )?,
                pw: PreActConv::new(width, k, Conv2dConfig::pointwise(), act, None, vbs.pp("pw"))?,
            },
        };
        Ok(Self {
            bottleneck,
            spatial,
        })
    }

    pub fn bottleneck(&self) -> &Bottleneck {
        &self.bottleneck
    }

    pub fn spatial(&self) -> &Spatial {
        &self.spatial
    }

    /// Takes the deploy form's index-selects from `saved` (a deploy file), over `cin` input
    /// channels; the other tensors are restored by name through [`HasState`].
    pub fn restore_deploy_indices(&mut self, saved: &Saved, cin: usize) -> Result<()> {
        match &mut self.bottleneck {
            Bottleneck::CondensedGroup(c) => c.restore_index(saved, cin),
            Bottleneck::LearnedDsc(c) => c.restore_index(saved),
            Bottleneck::Dense(_) => Ok(()),
            Bottleneck::LearnedGroup(_) => {
                candle_core::bail!("restoring a deploy file needs a deploy-form network")
            }
        }
    }

    pub fn advance_schedule(&mut self, t: f64) -> Result<PruneReport> {
        Ok(match &mut self.bottleneck {
            Bottleneck::LearnedGroup(c) => PruneReport {
                drops: c.advance_schedule(t)?,
                conversions: 0,
            },
            Bottleneck::LearnedDsc(c) => c.advance_schedule(t)?,
            Bottleneck::CondensedGroup(_) | Bottleneck::Dense(_) => PruneReport::default(),
        })
    }

    /// The progress values at which this layer's structure changes.
    pub fn schedule_changes(&self) -> Vec<f64> {
        match &self.bottleneck {
            Bottleneck::LearnedGroup(c) => c.schedule_changes(),
            Bottleneck::LearnedDsc(c) => c.schedule_changes(),
            Bottleneck::CondensedGroup(_) | Bottleneck::Dense(_) => Vec::new(),
        }
    }

    /// Where the schedule has this layer (`None` for a layer without a schedule).
    pub fn schedule_state(&self) -> Option<String> {
        match &self.bottleneck {
            Bottleneck::LearnedGroup(c) => Some(c.schedule_state()),
            Bottleneck::LearnedDsc(c) => Some(c.schedule_state()),
            Bottleneck::CondensedGroup(_) | Bottleneck::Dense(_) => None,
        }
    }

    /// Puts the pruning schedule where a run had it at progress `t`, with the masks (and the
    /// tensors of a converted learned-dsc conv) of `saved`.
    pub fn restore_schedule(&mut self, t: f64, saved: &Saved) -> Result<()> {
        match &mut self.bottleneck {
            Bottleneck::LearnedGroup(c) => c.restore_schedule(t, saved),
            Bottleneck::LearnedDsc(c) => c.restore_schedule(t, saved),
            Bottleneck::CondensedGroup(_) | Bottleneck::Dense(_) => Ok(()),
        }
    }

    /// The deploy form; fails unless the schedule has run to its end.
    pub fn condense(&self) -> Result<Self> {
        let bottleneck = match &self.bottleneck {
            Bottleneck::LearnedGroup(c) => Bottleneck::CondensedGroup(c.condense()?),
            Bottleneck::LearnedDsc(c) if !c.is_separable() => {
                candle_core::bail!(
                    "learned-dsc layer has not reached its last drop; finish pruning first"
                )
            }
            other => other.clone(),
        };
        Ok(Self {
            bottleneck,
            spatial: self.spatial.clone(),
        })
    }
}

impl DenseLayer {
    /// The layer's convs as stages of the fused dense block, in order; `None` where one has
    /// no fused form (the deploy form's condensed conv, a converted learned-dsc conv in
    /// evaluation, other conv shapes).
    pub fn block_stages(&self, train: bool) -> Result<Option<Vec<FusedStage<'_>>>> {
        let bottleneck = match &self.bottleneck {
            Bottleneck::LearnedGroup(c) => Some(c.block_stage(train)?),
            Bottleneck::LearnedDsc(c) => c.block_stage(train)?,
            Bottleneck::Dense(c) => c.block_stage(train)?,
            Bottleneck::CondensedGroup(_) => None,
        };
        let spatial = match &self.spatial {
            Spatial::Group(c) => vec![c.block_stage(train)?],
            Spatial::Dsc { dw, pw } => vec![dw.block_stage(train)?, pw.block_stage(train)?],
        };
        // `None` as soon as one conv has no fused form.
        Ok(std::iter::once(bottleneck).chain(spatial).collect())
    }
}

impl ModuleT for Bottleneck {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            Self::LearnedGroup(c) => c.forward_t(x, train),
            Self::CondensedGroup(c) => c.forward_t(x, train),
            Self::LearnedDsc(c) => c.forward_t(x, train),
            Self::Dense(c) => c.forward_t(x, train),
        }
    }
}

impl ModuleT for Spatial {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            Self::Group(c) => c.forward_t(x, train),
            Self::Dsc { dw, pw } => pw.forward_t(&dw.forward_t(x, train)?, train),
        }
    }
}

impl ModuleT for DenseLayer {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self
            .spatial
            .forward_t(&self.bottleneck.forward_t(x, train)?, train)?;
        Tensor::cat(&[x, &y], 1)
    }
}

impl HasState for DenseLayer {
    fn collect_state(&self, out: &mut State) {
        match &self.bottleneck {
            Bottleneck::LearnedGroup(c) => c.collect_state(out),
            Bottleneck::CondensedGroup(c) => c.collect_state(out),
            Bottleneck::LearnedDsc(c) => c.collect_state(out),
            Bottleneck::Dense(c) => c.collect_state(out),
        }
        match &self.spatial {
            Spatial::Group(c) => c.collect_state(out),
            Spatial::Dsc { dw, pw } => {
                dw.collect_state(out);
                pw.collect_state(out);
            }
        }
    }
}
