//! The pre-activation every conv of the family starts with: BN -> activation -> (dropout).

use candle_core::{Result, Tensor};
use candle_nn::{ModuleT, VarBuilder};

use super::activation::Act;
use super::batch_norm::{BatchNorm, BatchNormConfig};
use super::convolution::{convolve, is_depthwise, Conv2dConfig};
use super::dropout::Dropout;
use super::state::{HasState, State};
use crate::config::Activation;
use crate::kernels::{self, preact_conv, BlockStage, GroupInputs, StageConv};

#[derive(Debug, Clone)]
pub struct PreActivation {
    norm: BatchNorm,
    act: Act,
    dropout: Option<Dropout>,
}

impl PreActivation {
    /// Sub-layers are named `{prefix}.bn` and `{prefix}.act`.
    pub fn new(
        channels: usize,
        act: Activation,
        dropout: Option<Dropout>,
        vb: &VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            norm: BatchNorm::new(channels, BatchNormConfig::default(), vb.pp("bn"))?,
            act: Act::new(format!("{}.act", vb.prefix()), act),
            dropout,
        })
    }

    pub fn norm(&self) -> &BatchNorm {
        &self.norm
    }

    pub fn act(&self) -> &Act {
        &self.act
    }

    /// The pre-activation of the channels `index` picks (deploy form: no dropout); its BN is
    /// named `{name}.bn`.
    pub fn select(&self, name: &str, index: &Tensor) -> Result<Self> {
        Ok(Self {
            norm: self.norm.select(format!("{name}.bn"), index)?,
            act: self.act.clone(),
            dropout: None,
        })
    }
}

impl PreActivation {
    /// `conv(self(x), w)` as `cfg` says: one fused kernel ([`preact_conv`], which never stores
    /// the activated input and fuses the dropout too) where the fast kernels run and the conv
    /// is a stride-1 1x1 or 3x3 (padding 1) that is not depthwise; otherwise the steps apart.
    pub fn convolve(
        &self,
        x: &Tensor,
        w: &Tensor,
        cfg: Conv2dConfig,
        train: bool,
    ) -> Result<Tensor> {
        match stage_conv(cfg) {
            Some(stage) if !is_depthwise(x, w, cfg)? && kernels::fast_for(x) => {
                self.fused(x, w, stage, train)
            }
            _ => convolve(&self.forward_t(x, train)?, w, cfg),
        }
    }

    /// This pre-activation with `conv` (of weight `weight`, `cin -> cout` channels) as a stage
    /// of the fused dense block: its description and its parameters `[running mean; running
    /// var; gamma; beta; weight]`, flattened (the running statistics detached).
    pub fn block_stage(
        &self,
        conv: StageConv,
        weight: &Tensor,
        (cin, cout): (usize, usize),
        train: bool,
    ) -> Result<(BlockStage, [Tensor; 5])> {
        let stage = BlockStage {
            conv,
            cin,
            cout,
            act: self.act.kernel(),
            eps: self.norm.eps(),
            noise: self.dropout.as_ref().and_then(|d| d.noise_for(train)),
        };
        let n = &self.norm;
        let params = [
            n.running_mean().detach(),
            n.running_var().detach(),
            n.weight().clone(),
            n.bias().clone(),
            weight.flatten_all()?,
        ];
        Ok((stage, params))
    }

    /// `conv1x1(self(x), w)` where output `o` reads only the inputs `live` gives its group
    /// (`o mod groups`), as one fused kernel that skips the pruned products; `None` where the
    /// fast kernels do not run (reference kernels, other devices): the caller then runs the
    /// masked dense conv.
    pub fn convolve_live(
        &self,
        x: &Tensor,
        w: &Tensor,
        live: &GroupInputs,
        train: bool,
    ) -> Result<Option<Tensor>> {
        self.convolve_fused(x, w, StageConv::Live(live.clone()), train)
    }

    /// `conv(self(x), w)` for the fused stage `stage` as one kernel, or `None` where the fast
    /// kernels do not run (reference kernels, other devices): the caller then runs the
    /// masked dense conv.
    pub fn convolve_fused(
        &self,
        x: &Tensor,
        w: &Tensor,
        stage: StageConv,
        train: bool,
    ) -> Result<Option<Tensor>> {
        if !kernels::fast_for(x) {
            return Ok(None);
        }
        self.fused(x, w, stage, train).map(Some)
    }

    fn fused(&self, x: &Tensor, w: &Tensor, stage: StageConv, train: bool) -> Result<Tensor> {
        let params = self.norm.fused_params(x, train)?;
        self.act.record(x);
        let noise = self.dropout.as_ref().and_then(|d| d.noise_for(train));
        let (eps, act) = (self.norm.eps(), self.act.kernel());
        preact_conv(x, &params, w, stage, eps, act, train, noise)
    }
}

/// The fused stage that runs a conv of shape `cfg` (stride 1, 1x1 or 3x3 with padding 1).
pub(super) fn stage_conv(cfg: Conv2dConfig) -> Option<StageConv> {
    let groups = cfg.groups;
    match (cfg.kernel, cfg.padding, cfg.stride) {
        (1, 0, 1) => Some(StageConv::Pointwise { groups }),
        (3, 1, 1) => Some(StageConv::Conv3x3 { groups }),
        _ => None,
    }
}

impl ModuleT for PreActivation {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.norm.forward_act(x, train, &self.act)?;
        match &self.dropout {
            Some(d) => d.forward_t(&x, train),
            None => Ok(x),
        }
    }
}

impl HasState for PreActivation {
    fn collect_state(&self, out: &mut State) {
        self.norm.collect_state(out);
    }
}
