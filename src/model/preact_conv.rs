//! A pre-activated convolution: BN -> activation -> (dropout) -> conv.

use candle_core::{Result, Tensor};
use candle_nn::{ModuleT, VarBuilder};

use super::conv::{Conv2d, Conv2dConfig};
use super::dropout::Dropout;
use super::fused_stage::FusedStage;
use super::preactivation::{stage_conv, PreActivation};
use super::state::{HasState, State};
use crate::config::Activation;

#[derive(Debug, Clone)]
pub struct PreActConv {
    pre: PreActivation,
    conv: Conv2d,
}

impl PreActConv {
    /// Sub-layers are named `{prefix}.bn`, `{prefix}.act` and `{prefix}.conv`.
    pub fn new(
        cin: usize,
        cout: usize,
        cfg: Conv2dConfig,
        act: Activation,
        dropout: Option<Dropout>,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            pre: PreActivation::new(cin, act, dropout, &vb)?,
            conv: Conv2d::new(cin, cout, cfg, vb.pp("conv"))?,
        })
    }

    /// BN -> act (-> dropout, identity in eval mode).
    pub fn pre(&self) -> &PreActivation {
        &self.pre
    }

    pub fn conv(&self) -> &Conv2d {
        &self.conv
    }
}

impl PreActConv {
    /// This conv as a stage of the fused dense block; `None` for a shape the block's stages do
    /// not run.
    pub fn block_stage(&self, train: bool) -> Result<Option<FusedStage<'_>>> {
        let Some(conv) = stage_conv(self.conv.config()) else {
            return Ok(None);
        };
        let w = self.conv.weight();
        let shape = (self.pre.norm().channels(), w.dim(0)?);
        FusedStage::new(&self.pre, conv, w, shape, train).map(Some)
    }
}

impl ModuleT for PreActConv {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.conv.forward_pre(&self.pre, x, train)
    }
}

impl HasState for PreActConv {
    fn collect_state(&self, out: &mut State) {
        self.pre.collect_state(out);
        self.conv.collect_state(out);
    }
}
