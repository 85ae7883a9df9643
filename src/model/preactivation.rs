//! The pre-activation every conv of the family starts with: BN -> activation -> (dropout).

use candle_core::{Result, Tensor};
use candle_nn::{ModuleT, VarBuilder};

use super::activation::Act;
use super::batch_norm::{BatchNorm, BatchNormConfig};
use super::convolution::{convolve, is_depthwise, Conv2dConfig};
use super::dropout::Dropout;
use super::state::{HasState, State};
use crate::config::Activation;
use crate::kernels::{
    self, bn_act_conv, bn_act_conv3x3, bn_act_live_conv, GroupInputs};

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
    /// `conv(self(x), w)` as `cfg` says: one fused kernel (which never stores the activated
    /// input) where the fast kernels run and the conv is a stride-1 non-depthwise one:
    /// [`bn_act_conv3x3`]'s direct loops for a 3x3 with padding 1 (im2col + GEMM copies as
    /// long as it multiplies at these channel counts; the dropout, if any, fused too), else,
    /// without dropout, [`bn_act_conv`]; otherwise the two steps.
    pub fn convolve(
        &self,
        x: &Tensor,
        w: &Tensor,
        cfg: Conv2dConfig,
        train: bool,
    ) -> Result<Tensor> {
        let plain = cfg.stride == 1 && !is_depthwise(x, w, cfg)?;
        let noise = self.dropout.as_ref().and_then(|d| d.noise_for(train));
        if plain && kernels::fast_for(x) && cfg.kernel == 3 && cfg.padding == 1 {
            let params = self.norm.fused_params(x, train)?;
            self.act.record(x);
            let (eps, act) = (self.norm.eps(), self.act.kernel());
            return bn_act_conv3x3(x, &params, w, cfg.groups, eps, act, train, noise);
        }
        if plain && noise.is_none() && kernels::fast_for(x) {
            let params = self.norm.fused_params(x, train)?;
            self.act.record(x);
            let (eps, act) = (self.norm.eps(), self.act.kernel());
            return bn_act_conv(x, &params, w, cfg.padding, cfg.groups, eps, act, train);
        }
        convolve(&self.forward_t(x, train)?, w, cfg)
    }

    /// `conv1x1(self(x), w)` where output `o` reads only the inputs `live` gives its group
    /// (`o mod groups`), as one fused kernel ([`bn_act_live_conv`]) that skips the pruned
    /// products; `None` where that kernel does not apply (dropout, reference kernels, other
    /// devices): the caller then runs the masked dense conv.
    pub fn convolve_live(
        &self,
        x: &Tensor,
        w: &Tensor,
        live: &GroupInputs,
        train: bool,
    ) -> Result<Option<Tensor>> {
        if self.dropout.is_some() || !kernels::fast_for(x) {
            return Ok(None);
        }
        let params = self.norm.fused_params(x, train)?;
        self.act.record(x);
        let (eps, act) = (self.norm.eps(), self.act.kernel());
        bn_act_live_conv(x, &params, w, live, eps, act, train).map(Some)
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
