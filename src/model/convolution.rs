//! How a convolution runs, in one place: its shape ([`Conv2dConfig`]) and the choice between
//! this crate's CPU kernels, the device path and candle's op ([`convolve`]). Every conv of the
//! family, plain or fused behind a pre-activation, goes through here.

use candle_core::{Result, Tensor};

use super::device_ops;
use crate::kernels::{self, depthwise3x3, Route};

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

/// `x` convolved with `w` as `cfg` says, by the route [`kernels::route`] gives `x`:
/// - CPU kernels: depthwise 3x3 through [`depthwise3x3`], other stride-1 convs through
///   [`kernels::conv2d`];
/// - the device path: stride-1 convs as [`device_ops`] compose them, a constant number of
///   candle ops whatever the channel and group counts;
/// - candle's ops (the reference kernels): `Tensor::conv2d`, except the depthwise 3x3 of a CPU
///   f32/f64 tensor, which keeps its kernel there (candle's one conv per channel, 1 s backward
///   per layer, is not a usable reference on the CPU).
///
/// A stride other than 1 (no conv of the family has one) runs candle's conv on every route.
pub(crate) fn convolve(x: &Tensor, w: &Tensor, cfg: Conv2dConfig) -> Result<Tensor> {
    let Conv2dConfig {
        padding,
        stride,
        groups,
        ..
    } = cfg;
    let depthwise = is_depthwise(x, w, cfg)?;
    match kernels::route(x) {
        Route::Cpu if depthwise => depthwise3x3(x, w),
        Route::Cpu if stride == 1 => kernels::conv2d(x, w, padding, groups),
        Route::Device if depthwise => device_ops::depthwise3x3(x, w),
        Route::Device if stride == 1 => device_ops::conv2d(x, w, padding, groups),
        Route::Candle
            if depthwise && kernels::cpu_kernel_fits(&x.device().location(), x.dtype()) =>
        {
            depthwise3x3(x, w)
        }
        _ => x.conv2d(w, padding, stride, 1, groups),
    }
}
