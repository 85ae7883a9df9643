//! A 3x3 convolution (stride 1, padding 1) given as a list of kernel pairs: pair `p` adds
//! `conv3x3(x[in[p]], w[p])` into output channel `out[p]`. Forward and backward run only the
//! listed pairs.
//!
//! The converted (separable) learned-dsc conv's index-select + depthwise 3x3 is the pair
//! list `(t, index[t])`, the gather fused into the conv ([`super::separable`], which the
//! deploy form runs). As an op of its own it runs a masked conv over only its live kernels
//! (`just criterion kernels` compares it with the masked dense conv the layers run: at the
//! densities CondenseNeXt's schedule reaches, down to 23% live, the direct dense loops of
//! [`super::direct3x3`] are as fast or faster).
//!
//! Each plane is zero-padded once per call into rows of `W + 2`, so every tap is one long
//! shifted multiply-add over the whole plane (the two extra columns per row are computed
//! and dropped), which vectorises. On x86 CPUs with AVX2 and FMA the loops are compiled for
//! them (checked at run time); each output element always sums its taps in (pair, i, j)
//! order, each weight gradient over fixed image chunks in image order, whatever the thread
//! timing: the same CPU gives the same bits on every run.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::conv::CHUNK;
use super::{by_dtype, dims4, slice, sum_parts};

const OP: &str = "sparse_conv3x3";

/// The kernel pairs of a [`sparse_conv3x3`]: pair `p` reads input channel `inp[p]` into
/// output channel `out[p]`, with the 3x3 kernel `w[p]`.
#[derive(Debug, Clone)]
pub struct KernelPairs {
    pub(super) cin: usize,
    pub(super) cout: usize,
    pub(super) out: Arc<[u32]>,
    pub(super) inp: Arc<[u32]>,
    /// Each output's pairs, ascending.
    pub(super) by_out: Arc<Csr>,
    /// Each input's pairs, ascending.
    pub(super) by_in: Arc<Csr>,
}

impl PartialEq for KernelPairs {
    fn eq(&self, other: &Self) -> bool {
        (self.cin, self.cout) == (other.cin, other.cout)
            && self.out == other.out
            && self.inp == other.inp
    }
}

impl Eq for KernelPairs {}

/// Lists of pair numbers per channel: channel `c`'s are `items[start[c]..start[c + 1]]`.
#[derive(Debug)]
pub(super) struct Csr {
    start: Vec<usize>,
    items: Vec<u32>,
}

impl Csr {
    fn new(channels: usize, of: &[u32]) -> Self {
        let mut lists = vec![Vec::new(); channels];
        for (p, &c) in of.iter().enumerate() {
            lists[c as usize].push(p as u32);
        }
        let mut start = Vec::with_capacity(channels + 1);
        start.push(0);
        for l in &lists {
            start.push(start.last().copied().unwrap_or(0) + l.len());
        }
        Self {
            start,
            items: lists.concat(),
        }
    }

    fn of(&self, c: usize) -> &[u32] {
        &self.items[self.start[c]..self.start[c + 1]]
    }
}

impl KernelPairs {
    /// `(out, in)` pairs of a conv from `cin` to `cout` channels. Fails on a channel out of
    /// range.
    pub fn new(cin: usize, cout: usize, pairs: &[(u32, u32)]) -> Result<Self> {
        if let Some(&(o, i)) = pairs
            .iter()
            .find(|&&(o, i)| o as usize >= cout || i as usize >= cin)
        {
            candle_core::bail!("{OP}: pair ({o}, {i}) outside {cout} outputs and {cin} inputs");
        }
        let out: Vec<u32> = pairs.iter().map(|p| p.0).collect();
        let inp: Vec<u32> = pairs.iter().map(|p| p.1).collect();
        Ok(Self {
            cin,
            cout,
            by_out: Arc::new(Csr::new(cout, &out)),
            by_in: Arc::new(Csr::new(cin, &inp)),
            out: out.into(),
            inp: inp.into(),
        })
    }

    /// The depthwise conv of the channels `index` picks (repeats allowed): pair `t` is
    /// `(t, index[t])`.
    pub fn gathered(cin: usize, index: &[u32]) -> Result<Self> {
        let pairs: Vec<(u32, u32)> = (0..index.len() as u32).zip(index.iter().copied()).collect();
        Self::new(cin, index.len(), &pairs)
    }

    pub fn len(&self) -> usize {
        self.out.len()
    }

    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }
}

/// `y[:, o] = sum over pairs p with out[p] = o of conv3x3(x[:, in[p]], w[p])`, stride 1,
/// zero padding 1. `x: [N, Cin, H, W]`, `w: [P, 1, 3, 3]`, `y: [N, Cout, H, W]`.
pub fn sparse_conv3x3(x: &Tensor, w: &Tensor, pairs: &KernelPairs) -> Result<Tensor> {
    let (_, cin, h, wd) = x.dims4()?;
    if cin != pairs.cin || h == 0 || wd == 0 || w.dims() != [pairs.len(), 1, 3, 3] {
        candle_core::bail!(
            "{OP}: input {:?} and weight {:?} do not fit {} pairs from {} channels",
            x.dims(),
            w.dims(),
            pairs.len(),
            pairs.cin
        );
    }
    x.contiguous()?
        .apply_op2(&w.contiguous()?, Forward(pairs.clone()))
}

/// Floats with a fused multiply-add, for the loops compiled with FMA.
pub(super) trait Float: WithDType {
    fn fma(self, a: Self, b: Self) -> Self;
}

impl Float for f32 {
    #[inline(always)]
    fn fma(self, a: Self, b: Self) -> Self {
        self.mul_add(a, b)
    }
}

impl Float for f64 {
    #[inline(always)]
    fn fma(self, a: Self, b: Self) -> Self {
        self.mul_add(a, b)
    }
}

/// `k * v + s`, fused when `FMA` (only instantiated where the CPU has FMA).
#[inline(always)]
fn madd<T: Float, const FMA: bool>(k: T, v: T, s: T) -> T {
    if FMA {
        k.fma(v, s)
    } else {
        s + k * v
    }
}

/// Sizes of one plane and of its padded copy.
#[derive(Debug, Clone, Copy)]
pub(super) struct Plane {
    pub(super) h: usize,
    pub(super) w: usize,
}

impl Plane {
    /// Row length of padded planes and of accumulators.
    pub(super) fn wp(&self) -> usize {
        self.w + 2
    }
    /// Elements of an accumulator: `h` rows of `w + 2`.
    pub(super) fn acc_len(&self) -> usize {
        self.h * self.wp()
    }
    /// Elements of a padded plane: `h + 2` rows of `w + 2`, plus the 2 that the last row's
    /// dropped columns read.
    pub(super) fn padded_len(&self) -> usize {
        (self.h + 2) * self.wp() + 2
    }
    pub(super) fn len(&self) -> usize {
        self.h * self.w
    }
}

/// `dst.copy_from_slice(src)` inline, 8 elements at a time: the rows here are 8-32
/// elements, for which a `memcpy` call costs more than the copy.
#[inline(always)]
pub(super) fn copy_row<T: Copy>(dst: &mut [T], src: &[T]) {
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (d8, s8) in (&mut d).zip(&mut s) {
        d8.copy_from_slice(s8);
    }
    for (d1, s1) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d1 = *s1;
    }
}

/// The interiors of the padded planes `out` (whose borders are zero) from the planes `x`.
pub(super) fn pad_into<T: WithDType>(x: &[T], g: Plane, out: &mut [T]) {
    let wp = g.wp();
    for (dst, src) in out.chunks_mut(g.padded_len()).zip(x.chunks(g.len())) {
        for (y, row) in src.chunks(g.w).enumerate() {
            copy_row(&mut dst[(y + 1) * wp + 1..][..g.w], row);
        }
    }
}

/// Every plane of `x` zero-padded by one pixel (rows of `w + 2`).
fn pad<T: WithDType>(x: &[T], g: Plane) -> Vec<T> {
    let planes = x.len() / g.len();
    let mut out = vec![T::from_f64(0.0); planes * g.padded_len()];
    out.par_chunks_mut(g.padded_len())
        .zip(x.par_chunks(g.len()))
        .for_each(|(dst, src)| pad_into(src, g, dst));
    out
}

/// `acc[q] += sum_{i,j} k[i * 3 + j] * src[q + i * wp + j]` over an accumulator of rows of
/// `wp`, in (i, j) order; `flip` rotates the kernel by 180 degrees (the input gradient).
#[inline(always)]
fn add_taps<T: Float, const FMA: bool>(acc: &mut [T], src: &[T], k: &[T], wp: usize, flip: bool) {
    let n = acc.len();
    let tap = |t: usize| if flip { k[8 - t] } else { k[t] };
    let [k0, k1, k2, k3, k4, k5, k6, k7, k8] = [0, 1, 2, 3, 4, 5, 6, 7, 8].map(tap);
    let s0 = &src[..n];
    let s1 = &src[1..n + 1];
    let s2 = &src[2..n + 2];
    let s3 = &src[wp..n + wp];
    let s4 = &src[wp + 1..n + wp + 1];
    let s5 = &src[wp + 2..n + wp + 2];
    let s6 = &src[2 * wp..n + 2 * wp];
    let s7 = &src[2 * wp + 1..n + 2 * wp + 1];
    let s8 = &src[2 * wp + 2..n + 2 * wp + 2];
    for q in 0..n {
        let mut s = acc[q];
        s = madd::<T, FMA>(k0, s0[q], s);
        s = madd::<T, FMA>(k1, s1[q], s);
        s = madd::<T, FMA>(k2, s2[q], s);
        s = madd::<T, FMA>(k3, s3[q], s);
        s = madd::<T, FMA>(k4, s4[q], s);
        s = madd::<T, FMA>(k5, s5[q], s);
        s = madd::<T, FMA>(k6, s6[q], s);
        s = madd::<T, FMA>(k7, s7[q], s);
        s = madd::<T, FMA>(k8, s8[q], s);
        acc[q] = s;
    }
}

/// `dw[t] += sum_q dy[q] * src[q + offset(t)]` for the 9 taps, each in 8 fixed-order lanes.
#[inline(always)]
fn add_tap_dots<T: Float, const FMA: bool>(dw: &mut [T], dy: &[T], src: &[T], wp: usize) {
    const LANES: usize = 8;
    let n = dy.len();
    let zero = T::from_f64(0.0);
    let offsets = [0, 1, 2, wp, wp + 1, wp + 2, 2 * wp, 2 * wp + 1, 2 * wp + 2];
    let mut lanes = [[zero; LANES]; 9];
    let full = n / LANES * LANES;
    for base in (0..full).step_by(LANES) {
        let d = &dy[base..base + LANES];
        for (t, acc) in lanes.iter_mut().enumerate() {
            let s = &src[base + offsets[t]..][..LANES];
            for l in 0..LANES {
                acc[l] = madd::<T, FMA>(d[l], s[l], acc[l]);
            }
        }
    }
    for (t, acc) in lanes.iter().enumerate() {
        let mut total = zero;
        for q in full..n {
            total = madd::<T, FMA>(dy[q], src[q + offsets[t]], total);
        }
        for &v in acc {
            total += v;
        }
        dw[t] += total;
    }
}

/// One output plane: the sum of the taps of `pairs`, pair `p` reading the padded plane
/// `read[p]` of `src` (planes of `g.padded_len()`), accumulated in `acc` (rows of `w + 2`)
/// then written to `out` (`h x w`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn plane_sum<T: Float, const FMA: bool>(
    out: &mut [T],
    acc: &mut [T],
    pairs: &[u32],
    src: &[T],
    read: &[u32],
    w: &[T],
    g: Plane,
    flip: bool,
) {
    let pl = g.padded_len();
    acc.fill(T::from_f64(0.0));
    for &p in pairs {
        let p = p as usize;
        let plane = &src[read[p] as usize * pl..][..pl];
        add_taps::<T, FMA>(acc, plane, &w[p * 9..p * 9 + 9], g.wp(), flip);
    }
    for (dst, row) in out.chunks_mut(g.w).zip(acc.chunks(g.wp())) {
        copy_row(dst, &row[..g.w]);
    }
}

/// The weight gradient of one image into `dw` (`[P, 9]`): `xpad` and `dypad` are the image's
/// padded input and output planes.
#[inline(always)]
fn image_weight_grad<T: Float, const FMA: bool>(
    dw: &mut [T],
    xpad: &[T],
    dypad: &[T],
    pairs: &KernelPairs,
    g: Plane,
) {
    let (pl, wp) = (g.padded_len(), g.wp());
    for (p, d) in dw.chunks_mut(9).enumerate() {
        let x = &xpad[pairs.inp[p] as usize * pl..][..pl];
        // The padded dy plane from its first interior pixel: rows of `w + 2` whose two extra
        // columns are the zero border.
        let dy = &dypad[pairs.out[p] as usize * pl + wp + 1..][..g.acc_len()];
        add_tap_dots::<T, FMA>(d, dy, x, wp);
    }
}

mod portable {
    //! The loops for the baseline instruction set.
    use super::*;

    #[allow(clippy::too_many_arguments)]
    pub(super) fn plane_sum<T: Float>(
        out: &mut [T],
        acc: &mut [T],
        pairs: &[u32],
        src: &[T],
        read: &[u32],
        w: &[T],
        g: Plane,
        flip: bool,
    ) {
        super::plane_sum::<T, false>(out, acc, pairs, src, read, w, g, flip)
    }

    pub(super) fn image_weight_grad<T: Float>(
        dw: &mut [T],
        xpad: &[T],
        dypad: &[T],
        pairs: &KernelPairs,
        g: Plane,
    ) {
        super::image_weight_grad::<T, false>(dw, xpad, dypad, pairs, g)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! The same loops compiled for AVX2 and FMA; called only where the CPU has both.
    use super::*;

    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn plane_sum<T: Float>(
        out: &mut [T],
        acc: &mut [T],
        pairs: &[u32],
        src: &[T],
        read: &[u32],
        w: &[T],
        g: Plane,
        flip: bool,
    ) {
        super::plane_sum::<T, true>(out, acc, pairs, src, read, w, g, flip)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn image_weight_grad<T: Float>(
        dw: &mut [T],
        xpad: &[T],
        dypad: &[T],
        pairs: &KernelPairs,
        g: Plane,
    ) {
        super::image_weight_grad::<T, true>(dw, xpad, dypad, pairs, g)
    }

    pub(super) fn available() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
}

/// Runs `portable::$f` or, where the CPU has AVX2 and FMA, its `avx2` twin.
macro_rules! dispatch {
    ($f:ident($($arg:expr),*)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if avx2::available() {
                // SAFETY: the CPU has the features the function is compiled for.
                unsafe { avx2::$f($($arg),*) }
            } else {
                portable::$f($($arg),*)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            portable::$f($($arg),*)
        }
    }};
}

/// [`image_weight_grad`] for the CPU's features.
pub(super) fn image_weight_grad_any<T: Float>(
    dw: &mut [T],
    xpad: &[T],
    dypad: &[T],
    pairs: &KernelPairs,
    g: Plane,
) {
    dispatch!(image_weight_grad(dw, xpad, dypad, pairs, g))
}

/// One image's planes `out` (`[C, h, w]` for the `C` channels of `lists`): plane `c` sums the
/// pairs `lists.of(c)`, pair `p` reading plane `read[p]` of the padded planes `src`; over the
/// planes in parallel when `parallel`.
#[allow(clippy::too_many_arguments)]
pub(super) fn image_planes<T: Float>(
    out: &mut [T],
    src: &[T],
    lists: &Csr,
    read: &[u32],
    w: &[T],
    g: Plane,
    flip: bool,
    parallel: bool,
) {
    let run = |acc: &mut Vec<T>, (c, o): (usize, &mut [T])| {
        dispatch!(plane_sum(o, acc, lists.of(c), src, read, w, g, flip));
    };
    let fresh = || vec![T::from_f64(0.0); g.acc_len()];
    if parallel {
        out.par_chunks_mut(g.len())
            .enumerate()
            .for_each_init(fresh, run);
    } else {
        let mut acc = fresh();
        out.chunks_mut(g.len())
            .enumerate()
            .for_each(|item| run(&mut acc, item));
    }
}

/// `out` (`[N, C, h, w]` for the `C` channels of `lists`): plane `(img, c)` sums the pairs
/// `lists.of(c)`, pair `p` reading plane `(img, read[p])` of `src` (padded, `src_channels`
/// per image).
#[allow(clippy::too_many_arguments)]
fn planes<T: Float>(
    out: &mut [T],
    src: &[T],
    src_channels: usize,
    lists: &Csr,
    read: &[u32],
    w: &[T],
    g: Plane,
    flip: bool,
) {
    let channels = lists.start.len() - 1;
    let image = src_channels * g.padded_len();
    out.par_chunks_mut(g.len()).enumerate().for_each_init(
        || vec![T::from_f64(0.0); g.acc_len()],
        |acc, (i, o)| {
            let (img, c) = (i / channels, i % channels);
            let src = &src[img * image..][..image];
            dispatch!(plane_sum(o, acc, lists.of(c), src, read, w, g, flip));
        },
    );
}

fn forward<T: Float>(x: &[T], w: &[T], dims: [usize; 4], pairs: &KernelPairs) -> Vec<T> {
    let [n, cin, h, wd] = dims;
    let g = Plane { h, w: wd };
    let xpad = pad(x, g);
    let mut y = vec![T::from_f64(0.0); n * pairs.cout * g.len()];
    planes(&mut y, &xpad, cin, &pairs.by_out, &pairs.inp, w, g, false);
    y
}

/// `[dx | dw]`.
fn backward<T: Float>(x: &[T], dy: &[T], w: &[T], dims: [usize; 4], pairs: &KernelPairs) -> Vec<T> {
    let [n, cin, h, wd] = dims;
    let g = Plane { h, w: wd };
    let (xpad, dypad) = (pad(x, g), pad(dy, g));
    let zero = T::from_f64(0.0);
    let mut out = vec![zero; x.len() + pairs.len() * 9];
    let (dx, dw) = out.split_at_mut(x.len());
    // dx[c] = sum over c's pairs of dy[out[p]] convolved with the rotated kernel.
    planes(dx, &dypad, pairs.cout, &pairs.by_in, &pairs.out, w, g, true);
    if pairs.is_empty() {
        return out;
    }
    let chunks = n.div_ceil(CHUNK);
    let mut parts = vec![zero; chunks * pairs.len() * 9];
    parts
        .par_chunks_mut(pairs.len() * 9)
        .enumerate()
        .for_each(|(chunk, part)| {
            let (xl, dyl) = (cin * g.padded_len(), pairs.cout * g.padded_len());
            for img in chunk * CHUNK..((chunk + 1) * CHUNK).min(n) {
                let xi = &xpad[img * xl..][..xl];
                let dyi = &dypad[img * dyl..][..dyl];
                image_weight_grad_any(part, xi, dyi, pairs, g);
            }
        });
    sum_parts(&parts, dw);
    out
}

/// The forward op.
struct Forward(KernelPairs);
/// Its backward on `(x, dy)` with the weight: `[dx | dw]` packed.
struct Grad {
    pairs: KernelPairs,
    w: Tensor,
}

fn run_forward<T: Float>(
    xs: &CpuStorage,
    xl: &Layout,
    ws: &CpuStorage,
    wl: &Layout,
    pairs: &KernelPairs,
) -> Result<Vec<T>> {
    Ok(forward(
        slice::<T>(xs, xl, OP)?,
        slice::<T>(ws, wl, OP)?,
        dims4(xl, OP)?,
        pairs,
    ))
}

impl CustomOp2 for Forward {
    fn name(&self) -> &'static str {
        "sparse-conv3x3"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let [n, _, h, w] = dims4(xl, OP)?;
        let y = by_dtype!(OP, xs, run_forward(xs, xl, ws, wl, &self.0));
        Ok((y, Shape::from((n, self.0.cout, h, w))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = Grad {
            pairs: self.0.clone(),
            w: w.clone(),
        };
        let packed = x.apply_op2_no_bwd(&dy.contiguous()?, &grad)?;
        let nx = x.elem_count();
        let dx = packed.narrow(0, 0, nx)?.reshape(x.shape())?;
        let dw = packed.narrow(0, nx, w.elem_count())?.reshape(w.shape())?;
        Ok((Some(dx), Some(dw)))
    }
}

fn run_backward<T: Float>(
    (xs, xl): (&CpuStorage, &Layout),
    (gs, gl): (&CpuStorage, &Layout),
    w: &Tensor,
    pairs: &KernelPairs,
) -> Result<Vec<T>> {
    let (ws, wl) = w.storage_and_layout();
    let candle_core::Storage::Cpu(ws) = &*ws else {
        candle_core::bail!("{OP}: the weight is not on the CPU");
    };
    Ok(backward(
        slice::<T>(xs, xl, OP)?,
        slice::<T>(gs, gl, OP)?,
        slice::<T>(ws, wl, OP)?,
        dims4(xl, OP)?,
        pairs,
    ))
}

impl CustomOp2 for Grad {
    fn name(&self) -> &'static str {
        "sparse-conv3x3-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let len = xl.shape().elem_count() + self.pairs.len() * 9;
        let out = by_dtype!(
            OP,
            xs,
            run_backward((xs, xl), (gs, gl), &self.w, &self.pairs)
        );
        Ok((out, Shape::from(len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{max_diff, random};
    use crate::kernels::{depthwise3x3, select_channels, ChannelIndex};
    use crate::rng::Rng;
    use candle_core::{DType, Device, Var};

    /// Against candle's dense conv2d on the weight the pairs spell out (zeros elsewhere):
    /// forward, dx, and each pair's weight gradient, for random pair sets of several
    /// densities (including outputs with no pair), odd shapes, f32 and f64.
    #[test]
    fn matches_the_dense_conv_of_its_pairs() {
        let mut rng = Rng::new(41);
        for (dtype, tol) in [(DType::F32, 1e-4), (DType::F64, 1e-12)] {
            for (dims, cout) in [([2, 5, 7, 6], 4), ([3, 3, 1, 4], 5), ([5, 6, 9, 3], 7)] {
                let cin = dims[1];
                for density in [1.0, 0.5, 0.15] {
                    let mut pairs = Vec::new();
                    for o in 0..cout as u32 {
                        for i in 0..cin as u32 {
                            if rng.next_f64() < density {
                                pairs.push((o, i));
                            }
                        }
                    }
                    let kp = KernelPairs::new(cin, cout, &pairs).unwrap();
                    let x = Var::from_tensor(&random(&mut rng, &dims, dtype)).unwrap();
                    let w = Var::from_tensor(&random(&mut rng, &[pairs.len(), 1, 3, 3], dtype))
                        .unwrap();
                    let ours = sparse_conv3x3(&x, &w, &kp).unwrap();
                    // The dense weight: pair p's kernel at (out, in).
                    let flat: Vec<u32> = pairs.iter().map(|&(o, i)| o * cin as u32 + i).collect();
                    let idx = Tensor::from_vec(flat.clone(), flat.len(), &Device::Cpu).unwrap();
                    let dense = Tensor::zeros((cout * cin, 9), dtype, &Device::Cpu)
                        .unwrap()
                        .index_add(&idx, &w.as_tensor().reshape((pairs.len(), 9)).unwrap(), 0)
                        .unwrap()
                        .reshape((cout, cin, 3, 3))
                        .unwrap();
                    let theirs = x.conv2d(&dense, 1, 1, 1, 1).unwrap();
                    let case = format!("{dims:?} cout {cout} density {density} {dtype:?}");
                    assert!(max_diff(&ours, &theirs) < tol, "forward {case}");
                    let up = random(&mut rng, ours.dims(), dtype);
                    let go = (ours * &up).unwrap().sum_all().unwrap().backward().unwrap();
                    let gt = (theirs * &up)
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .backward()
                        .unwrap();
                    let dx = max_diff(go.get(&x).unwrap(), gt.get(&x).unwrap());
                    assert!(dx < tol * 10.0, "dx {case}: {dx}");
                    if pairs.is_empty() {
                        continue;
                    }
                    // candle's gradient of the dense weight, at the pairs' places.
                    let wd = Var::from_tensor(&dense).unwrap();
                    let gd = (x.conv2d(&wd, 1, 1, 1, 1).unwrap() * &up)
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .backward()
                        .unwrap();
                    let at_pairs = gd
                        .get(&wd)
                        .unwrap()
                        .reshape((cout * cin, 9))
                        .unwrap()
                        .index_select(&idx, 0)
                        .unwrap()
                        .reshape((pairs.len(), 1, 3, 3))
                        .unwrap();
                    let dw = max_diff(go.get(&w).unwrap(), &at_pairs);
                    assert!(dw < tol * 10.0, "dw {case}: {dw}");
                }
            }
        }
    }

    /// The gathered form equals index-select then depthwise, forward and gradients.
    #[test]
    fn gathered_pairs_equal_select_then_depthwise() {
        let mut rng = Rng::new(43);
        for dtype in [DType::F32, DType::F64] {
            let x = Var::from_tensor(&random(&mut rng, &[3, 4, 5, 6], dtype)).unwrap();
            let index = vec![3u32, 0, 0, 2, 3, 3, 1];
            let w = Var::from_tensor(&random(&mut rng, &[7, 1, 3, 3], dtype)).unwrap();
            let ours = sparse_conv3x3(&x, &w, &KernelPairs::gathered(4, &index).unwrap()).unwrap();
            let sel = select_channels(&x, &ChannelIndex::new(index)).unwrap();
            let theirs = depthwise3x3(&sel, &w).unwrap();
            let tol = if dtype == DType::F32 { 1e-5 } else { 1e-13 };
            assert!(max_diff(&ours, &theirs) < tol);
            let up = random(&mut rng, ours.dims(), dtype);
            let go = (ours * &up).unwrap().sum_all().unwrap().backward().unwrap();
            let gt = (theirs * &up)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for v in [&x, &w] {
                assert!(max_diff(go.get(v).unwrap(), gt.get(v).unwrap()) < tol * 10.0);
            }
        }
    }

    #[test]
    fn bad_pairs_and_shapes_are_errors() {
        assert!(KernelPairs::new(2, 2, &[(0, 2)]).is_err());
        let kp = KernelPairs::new(2, 2, &[(0, 1), (1, 1)]).unwrap();
        let x = Tensor::zeros((1, 3, 4, 4), DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::zeros((2, 1, 3, 3), DType::F32, &Device::Cpu).unwrap();
        assert!(sparse_conv3x3(&x, &w, &kp).is_err());
    }
}
