//! The pre-activation every conv of the family starts with: BN -> activation -> (dropout).

use candle_core::{Result, Tensor};
use candle_nn::{ModuleT, VarBuilder};

use super::activation::Act;
use super::batch_norm::{BatchNorm, BatchNormConfig};
use super::dropout::Dropout;
use super::state::{HasState, State};
use crate::config::Activation;

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
