//! Plain 2-D convolution (no bias), the building block of every conv in the family.

use candle_core::{Module, Result, Tensor, Var};
use candle_nn::{Init, VarBuilder};

use super::preactivation::PreActivation;
use super::state::{fresh_var, HasState, State, StateTensor};
use crate::analyze::{conv_flops, conv_op, trace, Cost, LayerCost};
use crate::kernels::{self, depthwise3x3};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dConfig {
    pub kernel: usize,
    pub padding: usize,
    pub stride: usize,
    pub groups: usize,
}

impl Default for Conv2dConfig {
    fn default() -> Self {
        Self {
            kernel: 3,
            padding: 1,
            stride: 1,
            groups: 1,
        }
    }
}

impl Conv2dConfig {
    pub fn pointwise() -> Self {
        Self {
            kernel: 1,
            padding: 0,
            ..Self::default()
        }
    }

    pub fn grouped3x3(groups: usize) -> Self {
        Self {
            groups,
            ..Self::default()
        }
    }
}

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

/// Whether `cfg` with `w` on `x` is a depthwise 3x3 conv (stride 1, padding 1, one filter per
/// channel).
pub(crate) fn is_depthwise(x: &Tensor, w: &Tensor, cfg: Conv2dConfig) -> Result<bool> {
    let Conv2dConfig {
        kernel,
        padding,
        stride,
        groups,
    } = cfg;
    Ok(kernel == 3 && padding == 1 && stride == 1 && groups == w.dim(0)? && groups == x.dim(1)?)
}

/// `x` convolved with `w` as `cfg` says: depthwise 3x3 through [`depthwise3x3`] on CPU,
/// other stride-1 convs through [`kernels::conv2d`] where the fast kernels run
/// ([`kernels::fast_for`]), else candle's `conv2d`.
pub(crate) fn convolve(x: &Tensor, w: &Tensor, cfg: Conv2dConfig) -> Result<Tensor> {
    let Conv2dConfig {
        padding,
        stride,
        groups,
        ..
    } = cfg;
    // candle's own depthwise conv (one conv per channel, 1 s backward per layer) is not a
    // usable reference: the depthwise kernel predates the others and runs in both modes.
    if is_depthwise(x, w, cfg)? && x.device().is_cpu() {
        depthwise3x3(x, w)
    } else if stride == 1 && kernels::fast_for(x) {
        kernels::conv2d(x, w, padding, groups)
    } else {
        x.conv2d(w, padding, stride, 1, groups)
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
