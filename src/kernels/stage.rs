//! One pre-activated convolution, image by image: `conv(dropout(act(bn(x))))` with the
//! normalised, activated and dropped input made in cache where the conv reads it and never
//! stored, and its backward: the weight gradient, and the input gradient gated back through
//! the dropout and the activation, with the per-channel sums the BN's backward needs.
//!
//! These are the loops of every fused kernel here: [`super::preact_conv`] runs one stage over
//! a batch, [`super::dense_block`] a chain of them per layer over its own feature buffer. Three convs: a 1x1 in groups (one GEMM per image and group on the
//! `gemm` crate), a learned-group 1x1 that reads only each group's live inputs (compact
//! GEMMs writing interleaved output rows), and a 3x3 with padding 1 ([`super::direct3x3`]).
//!
//! Every output sums its terms in one fixed order; the caller adds weight gradients over
//! fixed image chunks and per-image sums in image order.

use std::mem::MaybeUninit;

use gemm::Parallelism;

use super::bn_act::{ActKind, Coefficients};
use super::conv::{matmul, matmul_into, matmul_strided_into, Mat};
use super::direct3x3::{conv_image, scratch_len, weight_grad_image, Direct3x3, Packed3x3};
use super::group_inputs::GroupInputs;
use super::noise::{DropoutNoise, KeepMask};
use super::sparse_conv::{pad_into, Plane};
use super::with_avx2;

/// The conv of a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageConv {
    /// 1x1 in `groups` groups; weight `[cout, cin / groups, 1, 1]`.
    Pointwise { groups: usize },
    /// Learned-group 1x1: output `o` reads only the live inputs of group `o mod G`; weight
    /// `[cout, cin, 1, 1]` dense (the pruned entries are not read and get a zero gradient).
    Live(GroupInputs),
    /// 3x3, stride 1, zero padding 1, in `groups` groups; weight `[cout, cin / groups, 3, 3]`.
    Conv3x3 { groups: usize },
}

impl StageConv {
    /// Whether this conv fits `cin -> cout` channels with a weight of `weight_len` values.
    pub(super) fn check(&self, cin: usize, cout: usize, weight_len: usize) -> Result<(), String> {
        let (groups, inputs, taps) = match self {
            Self::Pointwise { groups } => (*groups, cin / (*groups).max(1), 1),
            Self::Conv3x3 { groups } => (*groups, cin / (*groups).max(1), 9),
            Self::Live(live) => {
                if live.cin() != cin {
                    return Err(format!(
                        "live inputs over {} channels for {cin}",
                        live.cin()
                    ));
                }
                // Each group reads its own live inputs; the weight is the dense one.
                (live.groups(), cin, 1)
            }
        };
        let split_inputs = !matches!(self, Self::Live(_));
        if groups == 0 || cin == 0 || cout == 0 || cout % groups != 0 {
            return Err(format!("{cin} -> {cout} channels in {groups} groups"));
        }
        if split_inputs && cin % groups != 0 {
            return Err(format!("{cin} -> {cout} channels in {groups} groups"));
        }
        if weight_len != cout * inputs * taps {
            return Err(format!(
                "a weight of {weight_len} values for {cin} -> {cout} channels"
            ));
        }
        Ok(())
    }
}

/// BN -> activation -> dropout of one image's input channels.
#[derive(Debug, Clone, Copy)]
pub(super) struct PreAct<'a> {
    /// Per input channel.
    pub(super) k: &'a [Coefficients],
    pub(super) act: ActKind,
    pub(super) keep: Keep<'a>,
}

/// Where the dropout factors come from.
#[derive(Debug, Clone, Copy)]
pub(super) enum Keep<'a> {
    /// No dropout.
    All,
    /// Drawn from the noise, image by image, wherever they are needed.
    Draw(&'a DropoutNoise),
    /// Read from a mask drawn once.
    Mask(&'a KeepMask),
}

impl<'a> Keep<'a> {
    pub(super) fn from_noise(noise: Option<&'a DropoutNoise>) -> Self {
        noise.map_or(Self::All, Self::Draw)
    }
}

/// `a = act(x * scale + shift)` over one plane.
#[inline(always)]
fn activate_plane<T: Direct3x3>(xs: &[T], k: &Coefficients, act: ActKind, out: &mut [T]) {
    let (scale, shift) = (T::from_f64(k.scale), T::from_f64(k.shift));
    match act {
        ActKind::Relu => {
            for (o, &v) in out.iter_mut().zip(xs) {
                *o = ActKind::Relu.apply(v * scale + shift);
            }
        }
        ActKind::Relu6 => {
            for (o, &v) in out.iter_mut().zip(xs) {
                *o = ActKind::Relu6.apply(v * scale + shift);
            }
        }
    }
}

impl PreAct<'_> {
    /// Image `img`'s dropout factors (its `buf.len()` input values), or `None` without
    /// dropout.
    pub(super) fn keep<'b, T: Direct3x3>(&self, img: usize, buf: &'b mut [T]) -> Option<&'b [T]> {
        match self.keep {
            Keep::All => return None,
            Keep::Draw(n) => n.fill(img * buf.len(), buf),
            Keep::Mask(m) => m.fill(img, buf),
        }
        Some(buf)
    }

    /// The planes (`plane` values each) of input channels `channels` of one image `x` (its `C`
    /// planes; `keep` its dropout factors), activated and dropped, one after another into `out`.
    #[inline(always)]
    fn channels<T: Direct3x3>(
        &self,
        x: &[T],
        channels: impl Iterator<Item = usize>,
        keep: Option<&[T]>,
        out: &mut [T],
        plane: usize,
    ) {
        for (c, out) in channels.zip(out.chunks_mut(plane)) {
            activate_plane(&x[c * plane..][..plane], &self.k[c], self.act, out);
            if let Some(keep) = keep {
                for (o, &f) in out.iter_mut().zip(&keep[c * plane..][..plane]) {
                    *o = *o * f;
                }
            }
        }
    }

    /// `da <- act'(x * scale + shift) * keep * da` over one image's `C` planes, with each
    /// channel's `(sum(da), sum(da * x))` of the gated values into `sums`.
    #[inline(always)]
    pub(super) fn gate<T: Direct3x3>(
        &self,
        x: &[T],
        keep: Option<&[T]>,
        plane: usize,
        da: &mut [T],
        sums: &mut [(f64, f64)],
    ) {
        if let Some(keep) = keep {
            for (d, &f) in da.iter_mut().zip(keep) {
                *d = *d * f;
            }
        }
        super::bn_act::gate_image(x, da, self.k, plane, self.act, sums);
    }
}

/// A stage's weights in the layout its loops read, for one call.
pub(super) struct Prepared<T> {
    conv: StageConv,
    cin: usize,
    cout: usize,
    g: Plane,
    /// The weight as given (pointwise), compact per group (live), or unused (3x3).
    w: Vec<T>,
    /// 3x3 only: the forward's and the input gradient's packed kernels.
    forward: Option<Packed3x3<T>>,
    input_grad: Option<Packed3x3<T>>,
}

/// Per-thread buffers of a stage's loops.
pub(super) struct Scratch<T> {
    /// Activated input (pointwise: `cin` planes; live: one group's live planes).
    a: Vec<T>,
    /// Live: one group's input-gradient planes.
    da: Vec<T>,
    /// 3x3: padded input and output-gradient planes, and the microkernel's tile rows.
    xpad: Vec<T>,
    dypad: Vec<T>,
    tile: Vec<T>,
    /// Dropout factors of one image.
    keep: Vec<T>,
}

impl<T: Direct3x3> Prepared<T> {
    /// `w` laid out as [`StageConv`] says; `backward` also packs what the backward reads.
    pub(super) fn new(
        conv: &StageConv,
        w: &[T],
        (cin, cout): (usize, usize),
        g: Plane,
        backward: bool,
    ) -> Self {
        let (mut forward, mut input_grad, mut flat) = (None, None, Vec::new());
        match conv {
            StageConv::Pointwise { .. } => flat = w.to_vec(),
            StageConv::Live(live) => {
                let (groups, cout_g) = (live.groups(), cout / live.groups());
                flat.reserve(cout * live.per_group());
                for grp in 0..groups {
                    for k in 0..cout_g {
                        let row = &w[(grp + k * groups) * cin..][..cin];
                        flat.extend(live.of(grp).iter().map(|&j| row[j as usize]));
                    }
                }
            }
            StageConv::Conv3x3 { groups } => {
                forward = Some(Packed3x3::forward(w, cout, cin, *groups));
                if backward {
                    input_grad = Some(Packed3x3::input_grad(w, cout, cin, *groups));
                }
            }
        }
        Self {
            conv: conv.clone(),
            cin,
            cout,
            g,
            w: flat,
            forward,
            input_grad,
        }
    }

    /// Values of one weight-gradient partial sum (compact for the live conv).
    pub(super) fn grad_len(&self) -> usize {
        match &self.conv {
            StageConv::Pointwise { groups } => self.cout * self.cin / groups,
            StageConv::Live(live) => self.cout * live.per_group(),
            StageConv::Conv3x3 { groups } => self.cout * self.cin / groups * 9,
        }
    }

    pub(super) fn scratch(&self, dropout: bool) -> Scratch<T> {
        let (plane, zero) = (self.g.len(), T::from_f64(0.0));
        let (mut a, mut da, mut xpad, mut dypad, mut tile) = (0, 0, 0, 0, 0);
        match &self.conv {
            StageConv::Pointwise { .. } => a = self.cin * plane,
            StageConv::Live(live) => (a, da) = (live.per_group() * plane, live.per_group() * plane),
            StageConv::Conv3x3 { .. } => {
                xpad = self.g.padded_buffer_len(self.cin);
                dypad = self.g.padded_buffer_len(self.cout);
                tile = scratch_len(self.g);
            }
        }
        Scratch {
            a: vec![zero; a],
            da: vec![zero; da],
            xpad: vec![zero; xpad],
            dypad: vec![zero; dypad],
            tile: vec![zero; tile],
            keep: vec![zero; if dropout { self.cin * plane } else { 0 }],
        }
    }

    /// One image's output planes `y` (`[cout, h * w]`, all written) from its input planes `x`.
    pub(super) fn forward_image(
        &self,
        pre: &PreAct,
        img: usize,
        x: &[T],
        y: &mut [MaybeUninit<T>],
        s: &mut Scratch<T>,
        par: Parallelism,
    ) {
        with_avx2(|| self.forward_body(pre, img, x, y, s, par))
    }

    #[inline(always)]
    fn forward_body(
        &self,
        pre: &PreAct,
        img: usize,
        x: &[T],
        y: &mut [MaybeUninit<T>],
        s: &mut Scratch<T>,
        par: Parallelism,
    ) {
        let (plane, cin, cout) = (self.g.len(), self.cin, self.cout);
        let keep = pre.keep(img, &mut s.keep);
        match &self.conv {
            StageConv::Pointwise { groups } => {
                pre.channels(x, 0..cin, keep, &mut s.a, plane);
                let (cin_g, cout_g) = (cin / groups, cout / groups);
                for grp in 0..*groups {
                    let wa = Mat::rows(&self.w[grp * cout_g * cin_g..], cin_g);
                    let b = Mat::rows(&s.a[grp * cin_g * plane..], plane);
                    let dst = &mut y[grp * cout_g * plane..(grp + 1) * cout_g * plane];
                    matmul_into(dst, (cout_g, plane, cin_g), wa, b, par);
                }
            }
            StageConv::Live(live) => {
                let (groups, l) = (live.groups(), live.per_group());
                let cout_g = cout / groups;
                for grp in 0..groups {
                    let inputs = live.of(grp).iter().map(|&j| j as usize);
                    pre.channels(x, inputs, keep, &mut s.a, plane);
                    let wa = Mat::rows(&self.w[grp * cout_g * l..], l);
                    // Group g's outputs are rows g, g + G, ...: `groups * plane` apart.
                    let dst = &mut y[grp * plane..];
                    let dims = (cout_g, plane, l);
                    matmul_strided_into(dst, groups * plane, dims, wa, Mat::rows(&s.a, plane), par);
                }
            }
            StageConv::Conv3x3 { .. } => {
                pad_activated(pre, x, keep, self.g, &mut s.xpad);
                let packed = self.forward.as_ref().expect("3x3 weights are packed");
                let parallel = matches!(par, Parallelism::Rayon(_));
                conv_image(y, &s.xpad, packed, self.g, &mut s.tile, parallel);
            }
        }
    }

    /// One image's backward: `da` (`[cin, h * w]`) becomes the gradient at the BN's output,
    /// `act'(x * scale + shift) * keep * (convᵀ dy)`, with its per-channel `(sum, sum * x)`
    /// into `sums`; the weight gradient is added into `dw` (`grad_len()` values), or written
    /// there when `first` (the first image of a chunk).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn backward_image(
        &self,
        pre: &PreAct,
        img: usize,
        (x, dy): (&[T], &[T]),
        da: &mut [T],
        dw: &mut [T],
        first: bool,
        sums: &mut [(f64, f64)],
        s: &mut Scratch<T>,
        par: Parallelism,
    ) {
        with_avx2(|| self.backward_body(pre, img, (x, dy), da, dw, first, sums, s, par))
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn backward_body(
        &self,
        pre: &PreAct,
        img: usize,
        (x, dy): (&[T], &[T]),
        da: &mut [T],
        dw: &mut [T],
        first: bool,
        sums: &mut [(f64, f64)],
        s: &mut Scratch<T>,
        par: Parallelism,
    ) {
        let (plane, cin, cout, zero) = (self.g.len(), self.cin, self.cout, T::from_f64(0.0));
        let keep = pre.keep(img, &mut s.keep);
        match &self.conv {
            StageConv::Pointwise { groups } => {
                pre.channels(x, 0..cin, keep, &mut s.a, plane);
                let (cin_g, cout_g) = (cin / groups, cout / groups);
                for grp in 0..*groups {
                    let ag = Mat::transposed(&s.a[grp * cin_g * plane..], plane);
                    let dyg = Mat::rows(&dy[grp * cout_g * plane..], plane);
                    let dst = &mut dw[grp * cout_g * cin_g..(grp + 1) * cout_g * cin_g];
                    matmul(dst, (cout_g, cin_g, plane), dyg, ag, !first, par);
                    let wt = Mat::transposed(&self.w[grp * cout_g * cin_g..], cin_g);
                    let dag = &mut da[grp * cin_g * plane..(grp + 1) * cin_g * plane];
                    matmul(dag, (cin_g, plane, cout_g), wt, dyg, false, par);
                }
            }
            StageConv::Live(live) => {
                let (groups, l) = (live.groups(), live.per_group());
                let cout_g = cout / groups;
                da[..cin * plane].fill(zero);
                for grp in 0..groups {
                    let inputs = live.of(grp);
                    let live_inputs = inputs.iter().map(|&j| j as usize);
                    pre.channels(x, live_inputs, keep, &mut s.a, plane);
                    let dyg = Mat::strided(&dy[grp * plane..], groups * plane);
                    let dst = &mut dw[grp * cout_g * l..(grp + 1) * cout_g * l];
                    let at = Mat::transposed(&s.a, plane);
                    matmul(dst, (cout_g, l, plane), dyg, at, !first, par);
                    let wt = Mat::transposed(&self.w[grp * cout_g * l..], l);
                    matmul(&mut s.da, (l, plane, cout_g), wt, dyg, false, par);
                    for (src, &c) in s.da.chunks(plane).zip(inputs) {
                        let dst = &mut da[c as usize * plane..][..plane];
                        for (o, &v) in dst.iter_mut().zip(src) {
                            *o += v;
                        }
                    }
                }
            }
            StageConv::Conv3x3 { groups } => {
                pad_activated(pre, x, keep, self.g, &mut s.xpad);
                pad_into(&dy[..cout * plane], self.g, &mut s.dypad);
                let packed = self
                    .input_grad
                    .as_ref()
                    .expect("backward weights are packed");
                let parallel = matches!(par, Parallelism::Rayon(_));
                // SAFETY: `conv_image` writes values only.
                let dst = unsafe { write_only(da) };
                conv_image(dst, &s.dypad, packed, self.g, &mut s.tile, parallel);
                if first {
                    dw[..self.grad_len()].fill(zero);
                }
                weight_grad_image(dw, &s.xpad, &s.dypad, (cout, cin, *groups), self.g);
            }
        }
        pre.gate(x, keep, plane, &mut da[..cin * plane], sums);
    }

    /// The weight gradient `dw` (`[cout, cin / groups, k, k]`) from a summed partial in the
    /// layout of [`Self::backward_image`] (the live conv's compact rows go back to their
    /// places; its pruned entries are exactly 0).
    pub(super) fn weight_grad(&self, summed: &[T], dw: &mut [T]) {
        match &self.conv {
            StageConv::Pointwise { .. } | StageConv::Conv3x3 { .. } => dw.copy_from_slice(summed),
            StageConv::Live(live) => {
                let (groups, l) = (live.groups(), live.per_group());
                let cout_g = self.cout / groups;
                dw.fill(T::from_f64(0.0));
                for grp in 0..groups {
                    for kk in 0..cout_g {
                        let row = &mut dw[(grp + kk * groups) * self.cin..][..self.cin];
                        let src = &summed[(grp * cout_g + kk) * l..][..l];
                        for (&j, &v) in live.of(grp).iter().zip(src) {
                            row[j as usize] = v;
                        }
                    }
                }
            }
        }
    }
}

/// The interiors of one image's padded planes: the activated and dropped input.
#[inline(always)]
fn pad_activated<T: Direct3x3>(pre: &PreAct, x: &[T], keep: Option<&[T]>, g: Plane, out: &mut [T]) {
    let (wp, plane) = (g.wp(), g.len());
    for (c, dst) in out
        .chunks_mut(g.padded_len())
        .take(x.len() / plane)
        .enumerate()
    {
        let xs = &x[c * plane..][..plane];
        let kc = &pre.k[c];
        for y in 0..g.h {
            let row = &mut dst[(y + 1) * wp + 1..][..g.w];
            activate_plane(&xs[y * g.w..][..g.w], kc, pre.act, row);
            if let Some(keep) = keep {
                for (o, &f) in row.iter_mut().zip(&keep[c * plane + y * g.w..][..g.w]) {
                    *o = *o * f;
                }
            }
        }
    }
}

/// `s` as memory a kernel only writes.
///
/// # Safety
/// Whatever writes through the result writes initialised values only.
pub(super) unsafe fn write_only<T>(s: &mut [T]) -> &mut [MaybeUninit<T>] {
    // SAFETY: `MaybeUninit<T>` has the layout of `T`; the caller writes only values.
    unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast(), s.len()) }
}
