//! How a convolution runs, in one place: its shape ([`Conv2dConfig`]) and the choice between
//! this crate's kernels and candle's op ([`convolve`]). Every conv of the family, plain or
//! fused behind a pre-activation, goes through here.

use candle_core::{Result, Tensor};

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

/// `x` convolved with `w` as `cfg` says: depthwise 3x3 through [`depthwise3x3`] on CPU
/// f32/f64 tensors ([`kernels::cpu_kernel_fits`]),
/// other stride-1 convs through [`kernels::conv2d`] where the fast kernels run
/// ([`kernels::fast_for`]), else (other devices, the reference kernels) candle's `conv2d`.
pub(crate) fn convolve(x: &Tensor, w: &Tensor, cfg: Conv2dConfig) -> Result<Tensor> {
    let Conv2dConfig {
        padding,
        stride,
        groups,
        ..
    } = cfg;
    // candle's own depthwise conv (one conv per channel, 1 s backward per layer) is not a
    // usable reference: the depthwise kernel predates the others and runs in both modes.
    if is_depthwise(x, w, cfg)? && kernels::cpu_kernel_fits(&x.device().location(), x.dtype()) {
        depthwise3x3(x, w)
    } else if stride == 1 && kernels::fast_for(x) {
        kernels::conv2d(x, w, padding, groups)
    } else {
        x.conv2d(w, padding, stride, 1, groups)
    }
}
