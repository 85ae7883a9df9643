//! CPU kernels for the ops candle runs slowly, as candle custom ops with their own backward:
//! convolution as im2col + GEMM ([`conv2d`]), depthwise 3x3 ([`depthwise3x3`]), fused
//! batch-norm + activation ([`bn_act`]), batch-norm + activation + dropout + conv as one op
//! ([`preact_conv`]: 1x1 in groups and the learned-group 1x1 over live inputs only as direct
//! 1x1 loops, 3x3 as register-blocked direct loops, the learned-dsc 3x3 over its live
//! kernels only, and the converted learned-dsc conv as depthwise + pointwise), sparse 3x3
//! convs over kernel pairs ([`sparse_conv3x3`]), the converted learned-dsc conv as one op
//! ([`separable_conv`]), and channel gathers ([`select_channels`], which also does the
//! channel shuffle). The loops run at the widest SIMD level the CPU has ([`simd`]).
//!
//! Every kernel sums each output element in one fixed order that does not depend on thread
//! timing or the thread count's work split, so training stays bit-reproducible. Each is
//! tested against candle's own ops (forward and gradients) on random inputs. The layers pick
//! these kernels on CPU tensors of f32/f64 ([`Route::Cpu`]); other tensors (CUDA, Metal) take
//! the device path (`model::device_ops`: candle ops whose number does not grow with the channel
//! or group count), and [`Kernels::Device`] sends CPU tensors there too, so that the path a GPU
//! runs is tested on the CPU. [`Kernels::Reference`] runs candle's own layer ops everywhere
//! (for comparisons: `ablate bench --kernels reference,device`).

mod bn_act;
mod conv;
mod dense_block;
mod depthwise;
mod direct1x1;
mod direct3x3;
mod group_inputs;
mod kernel_lists;
mod live_kernels;
mod noise;
mod pair3x3;
mod preact_conv;
mod select;
mod separable;
pub mod simd;
mod sparse_conv;
mod stage;

pub use bn_act::{bn_act, bn_stats, ActKind};
pub use conv::conv2d;
pub use dense_block::{dense_block, BlockLayer, BlockStage, BlockStats};
pub use depthwise::depthwise3x3;
pub use group_inputs::GroupInputs;
pub use live_kernels::LiveKernels;
pub use noise::DropoutNoise;
pub use preact_conv::preact_conv;
pub use select::{select_channels, ChannelIndex};
pub use separable::separable_conv;
pub(crate) use simd::simd_loops;
pub use simd::Simd;
pub use sparse_conv::{sparse_conv3x3, KernelPairs};
pub use stage::StageConv;

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU8, Ordering};

use rayon::prelude::*;

use candle_core::{CpuStorage, DType, DeviceLocation, Layout, Result, Tensor, WithDType};

/// Environment variable that selects the kernels of a process: `fast` (default), `device` or
/// `reference`.
pub const KERNELS_ENV: &str = "ABLATE_KERNELS";

/// Which implementation the layers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kernels {
    /// This module's kernels on CPU f32/f64 tensors, the device path on every other tensor.
    Fast,
    /// The device path on every tensor, CPU ones included: what a GPU run computes, run where
    /// it can be tested and timed without a GPU.
    Device,
    /// candle's own ops everywhere (one conv per group on every backend).
    Reference,
}

impl Kernels {
    pub fn name(self) -> &'static str {
        match self {
            Self::Fast => "fast",
            Self::Device => "device",
            Self::Reference => "reference",
        }
    }

    const ALL: [Kernels; 3] = [Self::Fast, Self::Device, Self::Reference];
}

/// What a layer runs on one tensor, as [`route`] decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// This module's CPU kernels.
    Cpu,
    /// The device path: candle ops whose number per layer does not grow with the channel or
    /// group count (one matmul per conv, nine shifted views per depthwise conv, one gather per
    /// index-select).
    Device,
    /// candle's own ops as a layer would call them (`Tensor::conv2d` with its groups).
    Candle,
}

/// The active [`Kernels`], as its index in [`Kernels::ALL`].
static ACTIVE: AtomicU8 = AtomicU8::new(0);

/// Makes the layers of this process run `kernels` from now on.
pub fn set(kernels: Kernels) {
    let i = Kernels::ALL.iter().position(|&k| k == kernels).unwrap_or(0);
    ACTIVE.store(i as u8, Ordering::Relaxed);
}

/// The kernels the layers run now.
pub fn active() -> Kernels {
    Kernels::ALL[ACTIVE.load(Ordering::Relaxed) as usize % Kernels::ALL.len()]
}

/// Applies `KERNELS_ENV` if set; an unknown value is an error naming it.
pub fn set_from_env() -> std::result::Result<(), String> {
    match std::env::var(KERNELS_ENV) {
        Err(_) => set(Kernels::Fast),
        Ok(v) => match Kernels::ALL.iter().find(|k| k.name() == v) {
            Some(&k) => set(k),
            None => {
                return Err(format!(
                    "{KERNELS_ENV}={v}: expected `fast`, `device` or `reference`"
                ))
            }
        },
    }
    Ok(())
}

/// What the layers run on `t` under the active kernels.
pub(crate) fn route(t: &Tensor) -> Route {
    route_on(active(), &t.device().location(), t.dtype())
}

/// [`route`] as a function of what it looks at: the active kernels, where the tensor lives
/// and its dtype. This module's ops have a `cpu_fwd` only, so only [`Route::Cpu`] may reach
/// them, and it is given only for f32/f64 CPU tensors.
pub(crate) fn route_on(kernels: Kernels, location: &DeviceLocation, dtype: DType) -> Route {
    match kernels {
        Kernels::Reference => Route::Candle,
        Kernels::Device => Route::Device,
        Kernels::Fast if cpu_kernel_fits(location, dtype) => Route::Cpu,
        Kernels::Fast => Route::Device,
    }
}

/// Whether the fast CPU kernels run on `t` ([`route`] is [`Route::Cpu`]). Every layer that
/// calls one of this module's ops checks this (or [`cpu_kernel_fits`], for the depthwise conv)
/// first and otherwise runs candle's ops: a CUDA (or Metal) tensor must never reach them.
pub(crate) fn fast_for(t: &Tensor) -> bool {
    route(t) == Route::Cpu
}

/// Whether this module's CPU kernels can take a tensor at `location` of `dtype`: only f32 and
/// f64 tensors on the CPU (they have no `cuda_fwd` / `metal_fwd`).
pub(crate) fn cpu_kernel_fits(location: &DeviceLocation, dtype: DType) -> bool {
    matches!(location, DeviceLocation::Cpu) && matches!(dtype, DType::F32 | DType::F64)
}

/// Multiply-adds below which one image's conv is not split among threads (a batch smaller
/// than the thread count): about 40 µs of work on one core. Below it, handing pieces to
/// other threads and waiting for them costs more than it saves (batch-1 latency measured
/// with 2^20, 2^22 and never: 2^22 was fastest for both families).
const PARALLEL_MIN_MACS: usize = 1 << 22;

/// Whether one image's conv of `macs` multiply-adds is split among threads, where the caller
/// allows it (`parallel`). The unit tests split every conv they allow to, so the split loops
/// are checked on small shapes too.
fn splits(parallel: bool, macs: usize) -> bool {
    parallel && (macs >= PARALLEL_MIN_MACS || cfg!(test))
}

/// `len` values written by `fill(i, chunk)` over the `i`-th of the chunks of `chunk` values,
/// in parallel when `parallel`, with no zeroing pass first (for outputs of many MB, that pass
/// costs as much as the kernel writing them).
///
/// # Safety
/// `fill` must write every element of every chunk it is given.
unsafe fn filled<T: Send>(
    len: usize,
    chunk: usize,
    parallel: bool,
    fill: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync + Send,
) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(len);
    let chunk = chunk.max(1);
    let spare = &mut v.spare_capacity_mut()[..len];
    if parallel {
        spare
            .par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, c)| fill(i, c));
    } else {
        spare
            .chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, c)| fill(i, c));
    }
    // SAFETY: the caller's `fill` initialised all `len` elements.
    unsafe { v.set_len(len) };
    v
}

/// [`filled`] with per-worker state: `fill(state, i, chunk)`, the state made by `init` once per
/// piece of work rayon splits off.
///
/// # Safety
/// `fill` must write every element of every chunk it is given.
unsafe fn filled_with<T: Send, S>(
    len: usize,
    chunk: usize,
    parallel: bool,
    init: impl Fn() -> S + Sync + Send,
    fill: impl Fn(&mut S, usize, &mut [MaybeUninit<T>]) + Sync + Send,
) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(len);
    let chunk = chunk.max(1);
    let spare = &mut v.spare_capacity_mut()[..len];
    if parallel {
        spare
            .par_chunks_mut(chunk)
            .enumerate()
            .for_each_init(&init, |s, (i, c)| fill(s, i, c));
    } else {
        let mut s = init();
        spare
            .chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, c)| fill(&mut s, i, c));
    }
    // SAFETY: the caller's `fill` initialised all `len` elements.
    unsafe { v.set_len(len) };
    v
}

/// `dst = parts[0] + parts[1] + ...` over the consecutive `dst.len()`-long parts of `parts`,
/// added in order (the weight gradients' fixed-order sum over image chunks).
fn sum_parts<T: WithDType>(parts: &[T], dst: &mut [T]) {
    for (i, part) in parts.chunks(dst.len()).enumerate() {
        if i == 0 {
            dst.copy_from_slice(part);
        } else {
            for (d, v) in dst.iter_mut().zip(part) {
                *d += *v;
            }
        }
    }
}

/// The backward of a three-input op `(x, a, b)` whose gradient op `grad`, applied to
/// `(x, dy, [a, b] flattened)`, returns `[dx | da | db]` in one flat tensor: the three
/// gradients, each shaped like its input.
fn packed_grads3(
    x: &Tensor,
    a: &Tensor,
    b: &Tensor,
    dy: &Tensor,
    grad: &impl candle_core::CustomOp3,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let ab = Tensor::cat(&[a.flatten_all()?, b.flatten_all()?], 0)?;
    let packed = x.apply_op3_no_bwd(&dy.contiguous()?, &ab, grad)?;
    let (nx, na) = (x.elem_count(), a.elem_count());
    let dx = packed.narrow(0, 0, nx)?.reshape(x.shape())?;
    let da = packed.narrow(0, nx, na)?.reshape(a.shape())?;
    let db = packed
        .narrow(0, nx + na, b.elem_count())?
        .reshape(b.shape())?;
    Ok((Some(dx), Some(da), Some(db)))
}

/// The contiguous elements of a CPU storage of dtype `T` that `l` covers.
fn slice<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [T]> {
    let (start, end) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{op}: non-contiguous input")))?;
    Ok(&s.as_slice::<T>()?[start..end])
}

/// `[N, C, H, W]` of a rank-4 layout.
fn dims4(l: &Layout, op: &str) -> Result<[usize; 4]> {
    match *l.dims() {
        [n, c, h, w] => Ok([n, c, h, w]),
        ref d => candle_core::bail!("{op}: expected [N, C, H, W], got {d:?}"),
    }
}

/// `$f::<T>(args)` for the f32 or f64 storage `$s`, wrapped back into a `CpuStorage`.
macro_rules! by_dtype {
    ($op:expr, $s:expr, $f:ident($($arg:expr),*)) => {
        match $s {
            CpuStorage::F32(_) => CpuStorage::F32($f::<f32>($($arg),*)?),
            CpuStorage::F64(_) => CpuStorage::F64($f::<f64>($($arg),*)?),
            _ => candle_core::bail!("{}: only f32 and f64 are supported", $op),
        }
    };
}
pub(crate) use by_dtype;

#[cfg(test)]
mod routing_tests {
    use super::*;

    #[test]
    fn only_f32_f64_cpu_tensors_reach_the_cpu_kernels() {
        let gpus = [
            DeviceLocation::Cuda { gpu_id: 0 },
            DeviceLocation::Cuda { gpu_id: 3 },
            DeviceLocation::Metal { gpu_id: 0 },
        ];
        for dtype in [DType::F32, DType::F64, DType::F16, DType::BF16, DType::U32] {
            let float = matches!(dtype, DType::F32 | DType::F64);
            assert_eq!(cpu_kernel_fits(&DeviceLocation::Cpu, dtype), float);
            let fast_cpu = route_on(Kernels::Fast, &DeviceLocation::Cpu, dtype);
            assert_eq!(fast_cpu == Route::Cpu, float, "{dtype:?}");
            assert_eq!(fast_cpu == Route::Device, !float, "{dtype:?}");
            let cpu = &DeviceLocation::Cpu;
            assert_eq!(route_on(Kernels::Device, cpu, dtype), Route::Device);
            assert_eq!(route_on(Kernels::Reference, cpu, dtype), Route::Candle);
            for gpu in &gpus {
                assert!(!cpu_kernel_fits(gpu, dtype), "{gpu:?} {dtype:?}");
                // A GPU tensor takes the device path unless candle's ops are asked for.
                assert_eq!(route_on(Kernels::Fast, gpu, dtype), Route::Device);
                assert_eq!(route_on(Kernels::Device, gpu, dtype), Route::Device);
                assert_eq!(route_on(Kernels::Reference, gpu, dtype), Route::Candle);
            }
        }
    }

    #[test]
    fn fast_for_reads_the_tensor_it_is_given() {
        let x = Tensor::zeros((1, 2, 3, 3), DType::F32, &candle_core::Device::Cpu).unwrap();
        assert_eq!(fast_for(&x), active() == Kernels::Fast);
        let h = x.to_dtype(DType::F16).unwrap();
        assert!(!fast_for(&h));
    }

    #[test]
    fn kernel_set_names_are_distinct() {
        for k in Kernels::ALL {
            assert_eq!(
                Kernels::ALL.iter().filter(|o| o.name() == k.name()).count(),
                1
            );
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Random tensors and comparisons for the kernels' tests.

    use candle_core::backprop::GradStore;
    use candle_core::{DType, Device, Tensor};

    use crate::rng::Rng;

    pub fn random(rng: &mut Rng, shape: &[usize], dtype: DType) -> Tensor {
        let n = shape.iter().product();
        let v: Vec<f64> = (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    /// The gradients of `sum(y * up)`: every var's gradient under the upstream gradient `up`.
    pub fn weighted_grads(y: &Tensor, up: &Tensor) -> GradStore {
        (y * up).unwrap().sum_all().unwrap().backward().unwrap()
    }

    /// Largest absolute elementwise difference.
    pub fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        assert_eq!(a.dims(), b.dims());
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }
}
