//! Batch normalisation over channels of NCHW tensors, with running statistics.

use candle_core::{Module, Result, Tensor, Var, D};
use candle_nn::{Init, ModuleT, VarBuilder};

use super::activation::Act;
use super::state::{fresh_var, HasState, State, StateTensor};
use crate::cost::{trace, Cost, LayerCost};
use crate::kernels::{self, bn_act, bn_stats};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormConfig {
    pub eps: f64,
    /// Weight of the new batch statistic in the running average (PyTorch's 0.1).
    pub momentum: f64,
}

impl Default for BatchNormConfig {
    fn default() -> Self {
        Self {
            eps: 1e-5,
            momentum: 0.1,
        }
    }
}

/// BN with affine weight/bias (trained) and running mean/variance (tracked in training mode).
#[derive(Debug, Clone)]
pub struct BatchNorm {
    name: String,
    weight: Var,
    bias: Var,
    running_mean: Var,
    running_var: Var,
    cfg: BatchNormConfig,
}

impl BatchNorm {
    pub fn new(channels: usize, cfg: BatchNormConfig, vb: VarBuilder) -> Result<Self> {
        let get = |name, init| vb.get_with_hints(channels, name, init);
        Ok(Self {
            name: vb.prefix(),
            weight: fresh_var(&get("weight", Init::Const(1.0))?)?,
            bias: fresh_var(&get("bias", Init::Const(0.0))?)?,
            running_mean: fresh_var(&get("running_mean", Init::Const(0.0))?)?,
            running_var: fresh_var(&get("running_var", Init::Const(1.0))?)?,
            cfg,
        })
    }

    pub fn channels(&self) -> usize {
        self.weight.elem_count()
    }

    /// The state-name prefix (`{name}.weight`, `{name}.running_mean`, ...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `[C]` affine scale (gamma).
    pub fn weight(&self) -> &Tensor {
        self.weight.as_tensor()
    }

    /// `[C]` affine shift (beta).
    pub fn bias(&self) -> &Tensor {
        self.bias.as_tensor()
    }

    /// `[C]` running mean, what eval mode normalises with.
    pub fn running_mean(&self) -> &Tensor {
        self.running_mean.as_tensor()
    }

    /// `[C]` running (unbiased) variance, what eval mode normalises with.
    pub fn running_var(&self) -> &Tensor {
        self.running_var.as_tensor()
    }

    /// A BN over the channels `index` picks (repeats allowed), each with that channel's
    /// parameters and running statistics; named `name`.
    pub fn select(&self, name: String, index: &Tensor) -> Result<Self> {
        let pick = |v: &Var| fresh_var(&v.as_tensor().index_select(index, 0)?);
        Ok(Self {
            name,
            weight: pick(&self.weight)?,
            bias: pick(&self.bias)?,
            running_mean: pick(&self.running_mean)?,
            running_var: pick(&self.running_var)?,
            cfg: self.cfg,
        })
    }

    /// Moves the running statistics towards a batch's `mean` and biased `var` over `n`
    /// values per channel (the running variance is the unbiased one, as in PyTorch).
    fn update_running(&self, mean: &Tensor, var: &Tensor, n: usize) -> Result<()> {
        let m = self.cfg.momentum;
        let unbiased = (var * (n as f64 / (n.max(2) - 1) as f64))?;
        self.running_mean
            .set(&((self.running_mean.as_tensor() * (1.0 - m))? + (mean.detach() * m)?)?)?;
        self.running_var
            .set(&((self.running_var.as_tensor() * (1.0 - m))? + (unbiased.detach() * m)?)?)
    }

    /// Moves the running statistics towards a batch's per-channel `(mean, biased var)` over
    /// `n` values per channel, as a training forward does.
    pub fn update_running_from(&self, stats: &[(f64, f64)], n: usize) -> Result<()> {
        let like = self.running_mean.as_tensor();
        let (means, vars): (Vec<f64>, Vec<f64>) = stats.iter().copied().unzip();
        let to =
            |v: Vec<f64>| Tensor::from_vec(v, stats.len(), like.device())?.to_dtype(like.dtype());
        self.update_running(&to(means)?, &to(vars)?, n)
    }

    /// `act(self(x))`: one fused kernel ([`bn_act`]) where the fast kernels run, else
    /// candle's ops. Same costs recorded either way.
    pub fn forward_act(&self, x: &Tensor, train: bool, act: &Act) -> Result<Tensor> {
        if !kernels::fast_for(x) {
            return act.forward(&self.forward_t(x, train)?);
        }
        let params = self.fused_params(x, train)?;
        let y = bn_act(x, &params, self.cfg.eps, act.kernel(), train)?;
        act.record(x);
        Ok(y)
    }

    /// The `[mean; var; gamma; beta]` (`[4, C]`) a fused kernel normalises `x` with: in
    /// training mode `x`'s own statistics (and the running ones move towards them), else the
    /// running ones. Records this layer's cost, as its forward does.
    pub fn fused_params(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let c = x.dim(1)?;
        trace::record(|| LayerCost::same(&self.name, "bn", Cost::new(0, 2 * c as u64)));
        let stats = if train {
            let stats = bn_stats(x)?;
            self.update_running(&stats.get(0)?, &stats.get(1)?, x.elem_count() / c)?;
            stats
        } else {
            Tensor::stack(
                &[self.running_mean.as_tensor(), self.running_var.as_tensor()],
                0,
            )?
            .detach()
        };
        let affine = Tensor::stack(&[self.weight.as_tensor(), self.bias.as_tensor()], 0)?;
        Tensor::cat(&[&stats, &affine], 0)
    }

    /// The epsilon added to the variance.
    pub fn eps(&self) -> f64 {
        self.cfg.eps
    }

    fn per_channel(t: &Tensor) -> Result<Tensor> {
        t.reshape((1, (), 1, 1))
    }
}

impl ModuleT for BatchNorm {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let c = x.dim(1)?;
        trace::record(|| LayerCost::same(&self.name, "bn", Cost::new(0, 2 * c as u64)));
        let (mean, var) = if train {
            // Statistics over (N, H, W) per channel.
            let n = x.elem_count() / c;
            let xc = x.transpose(0, 1)?.flatten_from(1)?; // [C, N*H*W]
            let mean = xc.mean(D::Minus1)?;
            let var = xc
                .broadcast_sub(&mean.unsqueeze(1)?)?
                .sqr()?
                .mean(D::Minus1)?;
            self.update_running(&mean, &var, n)?;
            (mean, var)
        } else {
            (
                self.running_mean.as_tensor().clone(),
                self.running_var.as_tensor().clone(),
            )
        };
        let scale = (self.weight.as_tensor() / (var + self.cfg.eps)?.sqrt()?)?;
        let shift = (self.bias.as_tensor() - (&mean * &scale)?)?;
        x.broadcast_mul(&Self::per_channel(&scale)?)?
            .broadcast_add(&Self::per_channel(&shift)?)
    }
}

/// The state-name field of a BN's running variance (`{name}.running_var`).
pub(crate) const RUNNING_VAR: &str = "running_var";

impl HasState for BatchNorm {
    fn collect_state(&self, out: &mut State) {
        let n = &self.name;
        out.push((
            format!("{n}.weight"),
            StateTensor::Param(self.weight.clone()),
        ));
        out.push((format!("{n}.bias"), StateTensor::Param(self.bias.clone())));
        out.push((
            format!("{n}.running_mean"),
            StateTensor::RunningStat(self.running_mean.clone()),
        ));
        out.push((
            format!("{n}.{RUNNING_VAR}"),
            StateTensor::RunningStat(self.running_var.clone()),
        ));
    }
}
