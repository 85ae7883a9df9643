//! Plain 2-D convolution (no bias), the building block of every conv in the family.

use candle_core::{Module, Result, Tensor, Var};
use candle_nn::{Init, VarBuilder};

use super::convolution::convolve;
pub use super::convolution::Conv2dConfig;
use super::preactivation::PreActivation;
use super::state::{fresh_var, HasState, State, StateTensor};
use crate::cost::{conv_flops, conv_op, trace, Cost, LayerCost};

/// `Conv2d` without bias; weight `[cout, cin/groups, k, k]`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    name: String,
    weight: Var,
    cfg: Conv2dConfig,
}

/// The reference initialisation: N(0, sqrt(2 / (k*k*cout))).
pub fn conv_init(kernel: usize, cout: usize) -> Init {
    Init::Randn {
        mean: 0.0,
        stdev: (2.0 / (kernel * kernel * cout) as f64).sqrt(),
    }
}

impl Conv2d {
    pub fn new(cin: usize, cout: usize, cfg: Conv2dConfig, vb: VarBuilder) -> Result<Self> {
        let shape = (cout, cin / cfg.groups, cfg.kernel, cfg.kernel);
        let weight = vb.get_with_hints(shape, "weight", conv_init(cfg.kernel, cout))?;
        Self::from_weight(vb.prefix(), &weight, cfg)
    }

    /// A conv owning a fresh copy of `weight`.
    pub fn from_weight(name: String, weight: &Tensor, cfg: Conv2dConfig) -> Result<Self> {
        Ok(Self {
            name,
            weight: fresh_var(weight)?,
            cfg,
        })
    }

    pub fn weight(&self) -> &Tensor {
        self.weight.as_tensor()
    }

    pub fn config(&self) -> Conv2dConfig {
        self.cfg
    }

    /// The state-name prefix (`{name}.weight`).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Conv2d {
    /// `self(pre(x))`, fused where [`PreActivation::convolve`] can.
    pub fn forward_pre(&self, pre: &PreActivation, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = pre.convolve(x, self.weight.as_tensor(), self.cfg, train)?;
        self.record(x.dim(1)?, &y);
        Ok(y)
    }

    /// Records the cost of producing `y` from `cin` input channels.
    fn record(&self, cin: usize, y: &Tensor) {
        let side = (y.dim(2).unwrap_or(0), y.dim(3).unwrap_or(0));
        self.record_shape(cin, y.dim(1).unwrap_or(0), side);
    }

    /// Records the cost of producing `cout` planes of `side` from `cin` input channels (for
    /// a fused op that runs this conv without materialising its output).
    pub(super) fn record_shape(&self, cin: usize, cout: usize, side: (usize, usize)) {
        let Conv2dConfig { kernel, groups, .. } = self.cfg;
        trace::record(|| {
            let cost = Cost::new(
                conv_flops(cin, cout, kernel, groups, side),
                self.weight.elem_count() as u64,
            );
            LayerCost::same(&self.name, conv_op(kernel, groups, cin), cost)
        });
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = convolve(x, self.weight.as_tensor(), self.cfg)?;
        self.record(x.dim(1)?, &y);
        Ok(y)
    }
}

impl HasState for Conv2d {
    fn collect_state(&self, out: &mut State) {
        out.push((
            format!("{}.weight", self.name),
            StateTensor::Param(self.weight.clone()),
        ));
    }
}
