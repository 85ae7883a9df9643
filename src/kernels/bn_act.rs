//! Batch normalisation fused with its activation: `y = act(gamma * (x - mean) / sqrt(var +
//! eps) + beta)` per channel, in one pass forward and two passes backward.
//!
//! candle's composition of ~15 generic ops keeps each intermediate alive for the backward
//! pass; this op keeps only its input and output. Statistics come from [`bn_stats`] (summed
//! in f64, per channel in (image, pixel) order) so the layer can also update its running
//! averages; the backward treats them as functions of `x` in training mode and as constants
//! in evaluation mode. The activation's derivative is PyTorch's: 0 at the kinks (ReLU at 0,
//! ReLU6 at 0 and 6), where candle's `relu` passes the gradient at 0.

use candle_core::WithDType;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{by_dtype, dims4, filled, slice};

/// The activation after the normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActKind {
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
}

impl ActKind {
    /// `act(a)`.
    #[inline(always)]
    pub(super) fn apply<T: WithDType>(self, a: T) -> T {
        let zero = T::from_f64(0.0);
        let a = if a > zero { a } else { zero };
        match self {
            Self::Relu => a,
            Self::Relu6 => {
                let six = T::from_f64(6.0);
                if a < six {
                    a
                } else {
                    six
                }
            }
        }
    }

    /// `g` where the gradient passes at pre-activation `a`, else 0 (branch-free, so loops
    /// over it vectorise).
    #[inline(always)]
    pub(super) fn gate<T: WithDType>(self, a: T, g: T) -> T {
        let zero = T::from_f64(0.0);
        let passes = match self {
            Self::Relu => a > zero,
            Self::Relu6 => (a > zero) & (a < T::from_f64(6.0)),
        };
        if passes {
            g
        } else {
            zero
        }
    }
}

/// Lanes of the fixed-order partial sums: wide enough for the compiler to vectorise, fixed
/// so that every sum is added in the same order on every run.
pub(super) const LANES: usize = 16;

/// `sum(f(i))` over `0..len` in f64: `LANES` running partial sums of type `T` over each
/// plane, added into f64 plane by plane.
#[inline(always)]
fn lane_sum<T: WithDType>(len: usize, f: impl Fn(usize) -> T) -> f64 {
    let zero = T::from_f64(0.0);
    let mut lanes = [zero; LANES];
    let full = len / LANES * LANES;
    for base in (0..full).step_by(LANES) {
        for (l, lane) in lanes.iter_mut().enumerate() {
            *lane += f(base + l);
        }
    }
    let mut total = (full..len).map(|i| f(i).to_f64()).sum::<f64>();
    for lane in lanes {
        total += lane.to_f64();
    }
    total
}

/// `[2, C]`: per-channel mean and biased variance of `x: [N, C, H, W]` over (N, H, W).
/// No gradient flows through it.
pub fn bn_stats(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&Stats)
}

/// `act(gamma * (x - mean) / sqrt(var + eps) + beta)` with `params = [mean; var; gamma; beta]`
/// (`[4, C]`). `train`: the statistics are `x`'s own ([`bn_stats`]), and the input gradient
/// accounts for their dependence on `x`; the gradient of `params` has zero rows for them.
pub fn bn_act(x: &Tensor, params: &Tensor, eps: f64, act: ActKind, train: bool) -> Result<Tensor> {
    let c = x.dim(1)?;
    if params.dims() != [4, c] {
        candle_core::bail!("bn_act: params {:?} for {c} channels", params.dims());
    }
    let op = BnAct { eps, act, train };
    x.contiguous()?.apply_op2(&params.contiguous()?, op)
}

struct Stats;

#[derive(Debug, Clone, Copy)]
pub(super) struct BnAct {
    pub(super) eps: f64,
    pub(super) act: ActKind,
    pub(super) train: bool,
}

/// `(dx, dparams)` packed in one flat tensor: `dx` then the `[4, C]` parameter gradient.
struct BnActGrad(BnAct);

/// `(sum(da), sum(da * x))` over one plane, `da = act'(x * scale + shift) * g`, in `LANES`
/// fixed-order partial sums.
#[inline(always)]
fn gated_sums<T: WithDType>(xs: &[T], gs: &[T], scale: T, shift: T, act: ActKind) -> (f64, f64) {
    let zero = T::from_f64(0.0);
    let (mut s, mut sx) = ([zero; LANES], [zero; LANES]);
    let (xc, gc) = (xs.chunks_exact(LANES), gs.chunks_exact(LANES));
    let (xr, gr) = (xc.remainder(), gc.remainder());
    for (xl, gl) in xc.zip(gc) {
        for l in 0..LANES {
            let d = act.gate(xl[l] * scale + shift, gl[l]);
            s[l] += d;
            sx[l] += d * xl[l];
        }
    }
    let (mut total, mut total_x) = (0f64, 0f64);
    for (&v, &g) in xr.iter().zip(gr) {
        let d = act.gate(v * scale + shift, g).to_f64();
        total += d;
        total_x += d * v.to_f64();
    }
    add_lanes((total, total_x), &s, &sx)
}

/// `(mean, biased var)` of every channel, two-pass.
fn stats<T: WithDType>(x: &[T], [n, c, h, w]: [usize; 4]) -> Vec<(f64, f64)> {
    channel_stats(x, n, c, 0..c, h * w)
}

/// `(mean, biased var)` of the channels `channels` of `n` images of `per_image` planes each,
/// two-pass, each sum over (image, pixel) in fixed-order lanes.
pub(super) fn channel_stats<T: WithDType>(
    x: &[T],
    n: usize,
    per_image: usize,
    channels: std::ops::Range<usize>,
    plane: usize,
) -> Vec<(f64, f64)> {
    let count = (n * plane) as f64;
    channels
        .into_par_iter()
        .map(|ch| {
            super::simd_loops!({
                let planes = || (0..n).map(move |i| &x[(i * per_image + ch) * plane..][..plane]);
                let sum: f64 = planes().map(|p| lane_sum(plane, |k| p[k])).sum();
                let mean = sum / count;
                let m = T::from_f64(mean);
                let sq: f64 = planes()
                    .map(|p| lane_sum(plane, |k| (p[k] - m) * (p[k] - m)))
                    .sum();
                (mean, sq / count)
            })
        })
        .collect()
}

/// Per-channel coefficients of `params = [mean; var; gamma; beta]`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Coefficients {
    pub(super) mean: f64,
    pub(super) invstd: f64,
    pub(super) gamma: f64,
    /// `gamma * invstd`: `a = x * scale + shift`.
    pub(super) scale: f64,
    pub(super) shift: f64,
}

impl Coefficients {
    /// `[k1, k2, k3]` of the input gradient `dx = k1 * da + k2 * x + k3`, from the channel's
    /// `(sum(da), sum(da * xhat))` over its `count` values: in training mode
    /// `gamma * invstd * (da - sum(da) / M - xhat * sum(da * xhat) / M)`, else
    /// `gamma * invstd * da`.
    pub(super) fn input_grad<T: WithDType>(
        &self,
        (s, sxhat): (f64, f64),
        count: f64,
        train: bool,
    ) -> [T; 3] {
        let k1 = self.gamma * self.invstd;
        let (k2, k3) = if train {
            let k2 = -k1 * self.invstd * sxhat / count;
            (k2, -k1 * s / count - k2 * self.mean)
        } else {
            (0.0, 0.0)
        };
        [k1, k2, k3].map(T::from_f64)
    }
}

pub(super) fn coefficients<T: WithDType>(p: &[T], c: usize, eps: f64) -> Vec<Coefficients> {
    (0..c)
        .map(|ch| {
            let (mean, var) = (p[ch].to_f64(), p[c + ch].to_f64());
            let (gamma, beta) = (p[2 * c + ch].to_f64(), p[3 * c + ch].to_f64());
            let invstd = 1.0 / (var + eps).sqrt();
            let scale = gamma * invstd;
            Coefficients {
                mean,
                invstd,
                gamma,
                scale,
                shift: beta - mean * scale,
            }
        })
        .collect()
}

/// `da <- act'(x * scale + shift) * da` over one plane, returning `(sum(da), sum(da * x))`
/// of the gated values, in `LANES` fixed-order partial sums.
#[inline(always)]
pub(super) fn gate_plane<T: WithDType>(
    xs: &[T],
    da: &mut [T],
    scale: T,
    shift: T,
    act: ActKind,
) -> (f64, f64) {
    let zero = T::from_f64(0.0);
    let (mut s, mut sx) = ([zero; LANES], [zero; LANES]);
    let mut xc = xs.chunks_exact(LANES);
    let mut dc = da.chunks_exact_mut(LANES);
    for (xl, dl) in (&mut xc).zip(&mut dc) {
        for l in 0..LANES {
            let d = act.gate(xl[l] * scale + shift, dl[l]);
            dl[l] = d;
            s[l] += d;
            sx[l] += d * xl[l];
        }
    }
    let (mut total, mut total_x) = (0f64, 0f64);
    for (&v, d) in xc.remainder().iter().zip(dc.into_remainder()) {
        *d = act.gate(v * scale + shift, *d);
        total += d.to_f64();
        total_x += d.to_f64() * v.to_f64();
    }
    add_lanes((total, total_x), &s, &sx)
}

/// `(total, total_x)` plus the lanes' partial sums `s` and `sx`, lane by lane in order.
#[inline(always)]
fn add_lanes<T: WithDType>(
    (mut total, mut total_x): (f64, f64),
    s: &[T; LANES],
    sx: &[T; LANES],
) -> (f64, f64) {
    for l in 0..LANES {
        total += s[l].to_f64();
        total_x += sx[l].to_f64();
    }
    (total, total_x)
}

/// [`gate_plane`], with the gated values times `k1` added into `into` (`into += k1 * d`, as
/// a separate multiply and add) instead of stored back into `da`: the dense block's `k1 * da`
/// term of the BN's input gradient, in the pass that gates.
#[inline(always)]
pub(super) fn gate_plane_into<T: WithDType>(
    xs: &[T],
    da: &[T],
    (scale, shift): (T, T),
    act: ActKind,
    into: &mut [T],
    k1: T,
) -> (f64, f64) {
    assert!(da.len() == xs.len() && into.len() == xs.len());
    let zero = T::from_f64(0.0);
    let (mut s, mut sx) = ([zero; LANES], [zero; LANES]);
    let (mut xc, mut dc) = (xs.chunks_exact(LANES), da.chunks_exact(LANES));
    let mut ic = into.chunks_exact_mut(LANES);
    for ((xl, dl), il) in (&mut xc).zip(&mut dc).zip(&mut ic) {
        for l in 0..LANES {
            let d = act.gate(xl[l] * scale + shift, dl[l]);
            il[l] += k1 * d;
            s[l] += d;
            sx[l] += d * xl[l];
        }
    }
    let (mut total, mut total_x) = (0f64, 0f64);
    let tail = xc.remainder().iter().zip(dc.remainder());
    for ((&v, &d), i) in tail.zip(ic.into_remainder()) {
        let d = act.gate(v * scale + shift, d);
        *i += k1 * d;
        total += d.to_f64();
        total_x += d.to_f64() * v.to_f64();
    }
    add_lanes((total, total_x), &s, &sx)
}

#[inline(always)]
/// `da <- act'(a) * da` over one image's `C` planes, with each channel's `(sum(da), sum(da * x))`
/// into `sums`.
pub(super) fn gate_image<T: WithDType>(
    x: &[T],
    da: &mut [T],
    k: &[Coefficients],
    plane: usize,
    act: ActKind,
    sums: &mut [(f64, f64)],
) {
    for (c, ((xs, ds), sum)) in x
        .chunks(plane)
        .zip(da.chunks_mut(plane))
        .zip(sums.iter_mut())
        .enumerate()
    {
        let (scale, shift) = (T::from_f64(k[c].scale), T::from_f64(k[c].shift));
        *sum = match act {
            ActKind::Relu => gate_plane(xs, ds, scale, shift, ActKind::Relu),
            ActKind::Relu6 => gate_plane(xs, ds, scale, shift, ActKind::Relu6),
        };
    }
}

/// The BN's share of the backward, after [`gate_image`] ran on every image: `dx` (holding the
/// gated `da`) becomes the input gradient, and `dp` (`[4, C]`) gets `dgamma` and `dbeta`.
/// `sums[img * C + c]` are the per-image sums; they are added in image order.
pub(super) fn bn_input_grad<T: WithDType>(
    dx: &mut [T],
    x: &[T],
    sums: &[(f64, f64)],
    k: &[Coefficients],
    plane: usize,
    train: bool,
    dp: &mut [T],
) {
    let cin = k.len();
    let n = sums.len() / cin;
    // Per channel, in image order: sum(da) and sum(da * xhat).
    let count = (n * plane) as f64;
    let totals: Vec<(f64, f64)> = (0..cin)
        .map(|c| {
            let (mut s, mut sx) = (0f64, 0f64);
            for img in 0..n {
                s += sums[img * cin + c].0;
                sx += sums[img * cin + c].1;
            }
            (s, (sx - k[c].mean * s) * k[c].invstd)
        })
        .collect();

    // dx = k1 * da + k2 * x + k3 (training) or k1 * da (evaluation).
    dx.par_chunks_mut(plane)
        .zip(x.par_chunks(plane))
        .enumerate()
        .for_each(|(i, (d, xs))| {
            let c = i % cin;
            let [k1, k2, k3] = k[c].input_grad::<T>(totals[c], count, train);
            super::simd_loops!({
                for (o, &v) in d.iter_mut().zip(xs) {
                    *o = k1 * *o + k2 * v + k3;
                }
            })
        });

    for (c, &(s, sxhat)) in totals.iter().enumerate() {
        dp[2 * cin + c] = T::from_f64(sxhat);
        dp[3 * cin + c] = T::from_f64(s);
    }
}

fn forward<T: WithDType>(x: &[T], p: &[T], dims: [usize; 4], op: BnAct) -> Vec<T> {
    let [_, c, h, w] = dims;
    let k = coefficients(p, c, op.eps);
    let plane = h * w;
    // SAFETY: each plane's closure writes all of its plane.
    unsafe {
        filled(x.len(), plane, true, |i, out| {
            let (scale, shift) = (T::from_f64(k[i % c].scale), T::from_f64(k[i % c].shift));
            for (o, &v) in out.iter_mut().zip(&x[i * plane..(i + 1) * plane]) {
                o.write(op.act.apply(v * scale + shift));
            }
        })
    }
}

/// `dx` (the first `x.len()` values) followed by `dparams` (`4 * C`).
///
/// With `da = dy * act'(a)`, `xhat = (x - mean) * invstd`: `dbeta = sum(da)`, `dgamma =
/// sum(da * xhat)`, and in training mode `dx = gamma * invstd * (da - dbeta / M - xhat *
/// dgamma / M)` over `M = N * H * W` values per channel; in evaluation mode
/// `dx = gamma * invstd * da`.
fn backward<T: WithDType>(x: &[T], dy: &[T], p: &[T], dims: [usize; 4], op: BnAct) -> Vec<T> {
    let [n, c, h, w] = dims;
    let plane = h * w;
    let k = coefficients(p, c, op.eps);
    // Per channel: sum(da) and sum(da * x); sum(da * xhat) follows from both.
    let sums: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let Coefficients {
                scale,
                shift,
                mean,
                invstd,
                ..
            } = k[ch];
            let (scale, shift) = (T::from_f64(scale), T::from_f64(shift));
            let (mut s, mut sx) = (0f64, 0f64);
            for i in 0..n {
                let base = (i * c + ch) * plane;
                let (xs, gs) = (&x[base..base + plane], &dy[base..base + plane]);
                let (ps, psx) = match op.act {
                    ActKind::Relu => gated_sums(xs, gs, scale, shift, ActKind::Relu),
                    ActKind::Relu6 => gated_sums(xs, gs, scale, shift, ActKind::Relu6),
                };
                s += ps;
                sx += psx;
            }
            (s, (sx - mean * s) * invstd)
        })
        .collect();
    let count = (n * plane) as f64;
    let mut out = vec![T::from_f64(0.0); x.len() + 4 * c];
    let (dx, dp) = out.split_at_mut(x.len());
    dx.par_chunks_mut(plane)
        .zip(x.par_chunks(plane).zip(dy.par_chunks(plane)))
        .enumerate()
        .for_each(|(i, (out, (xs, gs)))| {
            let ch = i % c;
            let [k1, k2, k3] = k[ch].input_grad::<T>(sums[ch], count, op.train);
            let (scale, shift) = (T::from_f64(k[ch].scale), T::from_f64(k[ch].shift));
            for (o, (&v, &g)) in out.iter_mut().zip(xs.iter().zip(gs)) {
                *o = k1 * op.act.gate(v * scale + shift, g) + k2 * v + k3;
            }
        });
    for ch in 0..c {
        dp[2 * c + ch] = T::from_f64(sums[ch].1);
        dp[3 * c + ch] = T::from_f64(sums[ch].0);
    }
    out
}

fn run_stats<T: WithDType>(s: &CpuStorage, l: &Layout) -> Result<Vec<T>> {
    let dims = dims4(l, "bn_stats")?;
    let st = stats(slice::<T>(s, l, "bn_stats")?, dims);
    let (means, vars): (Vec<f64>, Vec<f64>) = st.into_iter().unzip();
    Ok(means.into_iter().chain(vars).map(T::from_f64).collect())
}

impl CustomOp1 for Stats {
    fn name(&self) -> &'static str {
        "bn-stats"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let c = dims4(l, "bn_stats")?[1];
        Ok((
            by_dtype!("bn_stats", s, run_stats(s, l)),
            Shape::from((2, c)),
        ))
    }
}

fn run_forward<T: WithDType>(
    xs: &CpuStorage,
    xl: &Layout,
    ps: &CpuStorage,
    pl: &Layout,
    op: BnAct,
) -> Result<Vec<T>> {
    Ok(forward(
        slice::<T>(xs, xl, "bn_act")?,
        slice::<T>(ps, pl, "bn_act")?,
        dims4(xl, "bn_act")?,
        op,
    ))
}

impl CustomOp2 for BnAct {
    fn name(&self) -> &'static str {
        "bn-act"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Ok((
            by_dtype!("bn_act", xs, run_forward(xs, xl, ps, pl, *self)),
            xl.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let packed = x.apply_op3_no_bwd(&dy.contiguous()?, params, &BnActGrad(*self))?;
        let numel = x.elem_count();
        let dx = packed.narrow(0, 0, numel)?.reshape(x.shape())?;
        let dp = packed
            .narrow(0, numel, params.elem_count())?
            .reshape(params.shape())?;
        Ok((Some(dx), Some(dp)))
    }
}

fn run_backward<T: WithDType>(
    (xs, xl): (&CpuStorage, &Layout),
    (gs, gl): (&CpuStorage, &Layout),
    (ps, pl): (&CpuStorage, &Layout),
    op: BnAct,
) -> Result<Vec<T>> {
    Ok(backward(
        slice::<T>(xs, xl, "bn_act")?,
        slice::<T>(gs, gl, "bn_act")?,
        slice::<T>(ps, pl, "bn_act")?,
        dims4(xl, "bn_act")?,
        op,
    ))
}

impl CustomOp3 for BnActGrad {
    fn name(&self) -> &'static str {
        "bn-act-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let len = xl.shape().elem_count() + pl.shape().elem_count();
        let out = by_dtype!(
            "bn_act",
            xs,
            run_backward((xs, xl), (gs, gl), (ps, pl), self.0)
        );
        Ok((out, Shape::from(len)))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::kernels::testing::{max_diff, random};
    use crate::rng::Rng;
    use candle_core::{DType, Var, D};

    /// candle's composition: batch statistics (train) or given ones, then the activation.
    pub(in crate::kernels) fn reference(
        x: &Tensor,
        p: &Tensor,
        eps: f64,
        act: ActKind,
        train: bool,
    ) -> Tensor {
        let c = x.dim(1).unwrap();
        let row = |i| p.narrow(0, i, 1).unwrap().reshape(c).unwrap();
        let (mean, var) = if train {
            let xc = x.transpose(0, 1).unwrap().flatten_from(1).unwrap();
            let mean = xc.mean(D::Minus1).unwrap();
            let var = xc
                .broadcast_sub(&mean.unsqueeze(1).unwrap())
                .unwrap()
                .sqr()
                .unwrap()
                .mean(D::Minus1)
                .unwrap();
            (mean, var)
        } else {
            (row(0), row(1))
        };
        let scale = (row(2) / (var + eps).unwrap().sqrt().unwrap()).unwrap();
        let shift = (row(3) - (mean * &scale).unwrap()).unwrap();
        let per = |t: &Tensor| t.reshape((1, c, 1, 1)).unwrap();
        let a = x
            .broadcast_mul(&per(&scale))
            .unwrap()
            .broadcast_add(&per(&shift))
            .unwrap();
        match act {
            ActKind::Relu => a.relu().unwrap(),
            ActKind::Relu6 => a.relu().unwrap().minimum(6.0).unwrap(),
        }
    }

    #[test]
    fn stats_match_candle() {
        let mut rng = Rng::new(3);
        let x = random(&mut rng, &[3, 4, 5, 2], DType::F64);
        let s = bn_stats(&x).unwrap();
        let xc = x.transpose(0, 1).unwrap().flatten_from(1).unwrap();
        let mean = xc.mean(D::Minus1).unwrap();
        let var = xc
            .broadcast_sub(&mean.unsqueeze(1).unwrap())
            .unwrap()
            .sqr()
            .unwrap()
            .mean(D::Minus1)
            .unwrap();
        assert!(max_diff(&s, &Tensor::stack(&[mean, var], 0).unwrap()) < 1e-12);
    }

    /// Forward and the gradients of x, gamma and beta, in training and evaluation mode, for
    /// both activations, against candle's ops. Inputs are scaled so that both ReLU6 kinks
    /// are crossed.
    #[test]
    fn matches_candle_forward_and_gradients() {
        let mut rng = Rng::new(4);
        for (dtype, tol) in [(DType::F32, 2e-4), (DType::F64, 1e-10)] {
            for dims in [[4, 3, 5, 5], [1, 6, 3, 4], [7, 2, 1, 1]] {
                for act in [ActKind::Relu, ActKind::Relu6] {
                    for train in [true, false] {
                        let c = dims[1];
                        let x = Var::from_tensor(&(random(&mut rng, &dims, dtype) * 3.0).unwrap())
                            .unwrap();
                        let gamma = (random(&mut rng, &[c], dtype) * 8.0).unwrap();
                        let gamma = Var::from_tensor(&gamma).unwrap();
                        let beta = Var::from_tensor(&random(&mut rng, &[c], dtype)).unwrap();
                        let stats = if train {
                            bn_stats(&x).unwrap()
                        } else {
                            let m = random(&mut rng, &[c], dtype);
                            let v = (random(&mut rng, &[c], dtype).abs().unwrap() + 0.5).unwrap();
                            Tensor::stack(&[m, v], 0).unwrap()
                        };
                        let params = Tensor::cat(
                            &[
                                &stats,
                                &Tensor::stack(&[gamma.as_tensor(), beta.as_tensor()], 0).unwrap(),
                            ],
                            0,
                        )
                        .unwrap();
                        let ours = bn_act(&x, &params, 1e-5, act, train).unwrap();
                        let theirs = reference(&x, &params, 1e-5, act, train);
                        let case = format!("{dims:?} {act:?} train {train} {dtype:?}");
                        assert!(max_diff(&ours, &theirs) < tol, "forward {case}");
                        let up = random(&mut rng, &dims, dtype);
                        let go = (ours * &up).unwrap().sum_all().unwrap().backward().unwrap();
                        let gt = (theirs * &up)
                            .unwrap()
                            .sum_all()
                            .unwrap()
                            .backward()
                            .unwrap();
                        for (v, what) in [(&x, "dx"), (&gamma, "dgamma"), (&beta, "dbeta")] {
                            let d = max_diff(go.get(v).unwrap(), gt.get(v).unwrap());
                            assert!(d < tol * 10.0, "{what} {case}: {d}");
                        }
                    }
                }
            }
        }
    }
}
