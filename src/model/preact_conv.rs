//! A pre-activated convolution: BN -> activation -> (dropout) -> conv.

use candle_core::{Module, Result, Tensor};
use candle_nn::{ModuleT, VarBuilder};

use super::activation::Act;
use super::batch_norm::{BatchNorm, BatchNormConfig};
use super::conv::{Conv2d, Conv2dConfig};
use super::dropout::Dropout;
use super::state::{HasState, State};
use crate::config::Activation;

#[derive(Debug, Clone)]
pub struct PreActConv {
    norm: BatchNorm,
    act: Act,
    dropout: Option<Dropout>,
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
            norm: BatchNorm::new(cin, BatchNormConfig::default(), vb.pp("bn"))?,
            act: Act::new(format!("{}.act", vb.prefix()), act),
            dropout,
            conv: Conv2d::new(cin, cout, cfg, vb.pp("conv"))?,
        })
    }
}

impl ModuleT for PreActConv {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.act.forward(&self.norm.forward_t(x, train)?)?;
        let x = match &self.dropout {
            Some(d) => d.forward_t(&x, train)?,
            None => x,
        };
        self.conv.forward(&x)
    }
}

impl HasState for PreActConv {
    fn collect_state(&self, out: &mut State) {
        self.norm.collect_state(out);
        self.conv.collect_state(out);
    }
}
