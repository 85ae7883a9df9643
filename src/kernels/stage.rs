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

use super::bn_act::{gate_plane_into, ActKind, Coefficients};
use super::direct1x1::{
    conv1x1_image, dots1x1, dots1x1_t, transpose_rows, transposed_dots, Packed1x1,
};
use super::direct3x3::{conv_image, scratch_len, weight_grad_image, Direct3x3, Packed3x3};
use super::group_inputs::GroupInputs;
use super::kernel_lists::{kernel_lists_image, KernelLists};
use super::live_kernels::LiveKernels;
use super::noise::{DropoutNoise, KeepMask};
use super::pair3x3::{pair_conv_image, pair_scratch_len, pair_weight_grad_image, PackedPairs};
use super::simd::Simd;
use super::simd_loops;
use super::sparse_conv::KernelPairs;
use super::sparse_conv::{pad_into, Plane};

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
    /// The same 3x3 over its live kernels only (learned-dsc): the dropped kernels are read
    /// as zero and get a zero gradient; where enough are dropped
    /// ([`LiveKernels::skips_dropped`]) they are not run at all.
    Live3x3(LiveKernels),
    /// The converted learned-dsc conv: the depthwise 3x3 of the channels its gathered pairs
    /// `(t, index[t])` pick, then a 1x1 from those `T` channels; weight `[dw (T x 9) |
    /// pw (cout x T)]`. The depthwise output is made in cache and recomputed in the backward.
    Separable(KernelPairs),
}

impl StageConv {
    /// Whether this conv fits `cin -> cout` channels with a weight of `weight_len` values.
    pub(super) fn check(&self, cin: usize, cout: usize, weight_len: usize) -> Result<(), String> {
        let (groups, inputs, taps) = match self {
            Self::Pointwise { groups } => (*groups, cin / (*groups).max(1), 1),
            Self::Conv3x3 { groups } => (*groups, cin / (*groups).max(1), 9),
            Self::Separable(pairs) => {
                let t = pairs.len();
                if pairs.cin != cin || pairs.cout != t || weight_len != t * 9 + cout * t {
                    return Err(format!(
                        "a depthwise of {t} gathered channels of {} and a pointwise to {cout} for \
                         {cin} -> {cout} channels and a weight of {weight_len} values",
                        pairs.cin
                    ));
                }
                return Ok(());
            }
            Self::Live3x3(live) => {
                if (live.cin(), live.cout()) != (cin, cout) {
                    return Err(format!(
                        "live kernels of {} -> {} channels for {cin} -> {cout}",
                        live.cin(),
                        live.cout()
                    ));
                }
                (live.groups(), cin / live.groups(), 9)
            }
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

/// Where [`Prepared::backward_image`] puts the gated input gradient instead of `da`: times
/// `k1[c]`, added into the image's planes `planes` (the dense block's gradient buffer, whose
/// BN input gradient has a `k1 * da` term).
pub(super) struct AddInto<'a, T> {
    pub(super) planes: &'a mut [T],
    pub(super) k1: &'a [T],
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
    /// channel's `(sum(da), sum(da * x))` of the gated values into `sums`; with `into`, the
    /// gated values go there (times its `k1`) and `da` is left holding `keep * da`.
    #[inline(always)]
    pub(super) fn gate<T: Direct3x3>(
        &self,
        x: &[T],
        keep: Option<&[T]>,
        plane: usize,
        da: &mut [T],
        sums: &mut [(f64, f64)],
        into: Option<&mut AddInto<'_, T>>,
    ) {
        if let Some(keep) = keep {
            for (d, &f) in da.iter_mut().zip(keep) {
                *d = *d * f;
            }
        }
        match into {
            None => super::bn_act::gate_image(x, da, self.k, plane, self.act, sums),
            Some(into) => {
                for (c, sum) in sums.iter_mut().enumerate().take(da.len() / plane) {
                    *sum = self.gate_into(c, x, da, plane, into);
                }
            }
        }
    }

    /// Channel `c`'s gated values times `k1[c]` added into `into`, and their sums.
    #[inline(always)]
    fn gate_into<T: Direct3x3>(
        &self,
        c: usize,
        x: &[T],
        da: &[T],
        plane: usize,
        into: &mut AddInto<'_, T>,
    ) -> (f64, f64) {
        let at = c * plane..(c + 1) * plane;
        let k = &self.k[c];
        let coefficients = (T::from_f64(k.scale), T::from_f64(k.shift));
        let (x, da, k1) = (&x[at.clone()], &da[at.clone()], into.k1[c]);
        let to = &mut into.planes[at];
        match self.act {
            ActKind::Relu => gate_plane_into(x, da, coefficients, ActKind::Relu, to, k1),
            ActKind::Relu6 => gate_plane_into(x, da, coefficients, ActKind::Relu6, to, k1),
        }
    }

    /// [`Self::gate`] over the channels `channels` only; the others' `da` must be zero, and
    /// their sums are zero (and nothing is added into `into` for them).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn gate_channels<T: Direct3x3>(
        &self,
        x: &[T],
        keep: Option<&[T]>,
        plane: usize,
        da: &mut [T],
        sums: &mut [(f64, f64)],
        channels: &[u32],
        mut into: Option<&mut AddInto<'_, T>>,
    ) {
        sums.fill((0.0, 0.0));
        for &c in channels {
            let c = c as usize;
            let at = c * plane..(c + 1) * plane;
            if let Some(keep) = keep {
                for (d, &f) in da[at.clone()].iter_mut().zip(&keep[at.clone()]) {
                    *d = *d * f;
                }
            }
            if let Some(into) = into.as_deref_mut() {
                sums[c] = self.gate_into(c, x, da, plane, into);
                continue;
            }
            let k = &self.k[c];
            let (scale, shift) = (T::from_f64(k.scale), T::from_f64(k.shift));
            sums[c] = match self.act {
                ActKind::Relu => super::bn_act::gate_plane(
                    &x[at.clone()],
                    &mut da[at],
                    scale,
                    shift,
                    ActKind::Relu,
                ),
                ActKind::Relu6 => super::bn_act::gate_plane(
                    &x[at.clone()],
                    &mut da[at],
                    scale,
                    shift,
                    ActKind::Relu6,
                ),
            };
        }
    }
}

/// A stage's weights in the layout its loops read, for one call.
pub(super) struct Prepared<T> {
    conv: StageConv,
    cin: usize,
    cout: usize,
    g: Plane,
    /// 1x1 only: its packings.
    one: Option<OneByOne<T>>,
    /// Separable only: its packings.
    separable: Option<SeparablePacked<T>>,
    /// 3x3 only: the forward's and the input gradient's packed kernels, dense ...
    forward: Option<Packed3x3<T>>,
    input_grad: Option<Packed3x3<T>>,
    /// ... or over the live kernels only (a live 3x3 with enough of them dropped; the
    /// forward's packing also gives the weight gradient).
    live_forward: Option<LiveConv<T>>,
    live_input_grad: Option<LiveConv<T>>,
    /// 1x1 and separable: the pointwise weight gradient is taken by [`dots1x1_t`], so its
    /// partial sums lie transposed (`[input][output]` per group).
    dots_t: bool,
}

/// A 1x1 stage's packings: the input channels it activates, the forward's and the input
/// gradient's register blocks, and the weight gradient's groups.
struct OneByOne<T> {
    /// The channels activated into the scratch, ascending: every input (pointwise), or those
    /// some group reads (live); the blocks name them by position in this list.
    reads: Vec<u32>,
    /// The input channels no group reads: their input gradient is zero.
    unread: Vec<u32>,
    forward: Packed1x1<T>,
    input_grad: Option<Packed1x1<T>>,
    /// Per group: its output rows, the positions in `reads` of its inputs, and where its
    /// block of the (compact) weight gradient starts.
    groups: Vec<(Vec<u32>, Vec<u32>, usize)>,
}

impl<T: Direct3x3> OneByOne<T> {
    /// The 1x1 in `groups` groups of weight `w` (`[cout, cin / groups]`).
    fn pointwise(w: &[T], (cin, cout): (usize, usize), groups: usize, backward: bool) -> Self {
        let (cin_g, cout_g) = (cin / groups, cout / groups);
        let (mut forward, mut input_grad) = (Packed1x1::new(), Packed1x1::new());
        let mut parts = Vec::with_capacity(groups);
        for grp in 0..groups {
            let rows: Vec<u32> = (grp * cout_g..(grp + 1) * cout_g)
                .map(|o| o as u32)
                .collect();
            let planes: Vec<u32> = (grp * cin_g..(grp + 1) * cin_g).map(|c| c as u32).collect();
            let wg = &w[grp * cout_g * cin_g..];
            forward.add(&rows, &planes, |j, k| wg[j * cin_g + k]);
            if backward {
                input_grad.add(&planes, &rows, |j, k| wg[k * cin_g + j]);
            }
            parts.push((rows, planes, grp * cout_g * cin_g));
        }
        Self {
            reads: (0..cin as u32).collect(),
            unread: Vec::new(),
            forward,
            input_grad: backward.then_some(input_grad),
            groups: parts,
        }
    }

    /// The learned-group 1x1 of the dense weight `w` (`[cout, cin]`): output `o` of group
    /// `o mod G` reads that group's live inputs. Each input activated once, whichever groups
    /// read it; its input gradient sums the outputs of exactly those groups.
    fn live(w: &[T], (cin, cout): (usize, usize), live: &GroupInputs, backward: bool) -> Self {
        let (groups, l) = (live.groups(), live.per_group());
        let cout_g = cout / groups;
        // The groups reading each input.
        let mut readers: Vec<Vec<u32>> = vec![Vec::new(); cin];
        for grp in 0..groups {
            for &c in live.of(grp) {
                readers[c as usize].push(grp as u32);
            }
        }
        let reads: Vec<u32> = (0..cin as u32)
            .filter(|&c| !readers[c as usize].is_empty())
            .collect();
        let unread = (0..cin as u32)
            .filter(|&c| readers[c as usize].is_empty())
            .collect();
        let mut position = vec![0u32; cin];
        for (p, &c) in reads.iter().enumerate() {
            position[c as usize] = p as u32;
        }
        let mut forward = Packed1x1::new();
        let mut parts = Vec::with_capacity(groups);
        for grp in 0..groups {
            let rows: Vec<u32> = (0..cout_g).map(|k| (grp + k * groups) as u32).collect();
            let inputs = live.of(grp);
            let planes: Vec<u32> = inputs.iter().map(|&c| position[c as usize]).collect();
            forward.add(&rows, &planes, |j, k| {
                w[rows[j] as usize * cin + inputs[k] as usize]
            });
            parts.push((rows, planes, grp * cout_g * l));
        }
        let input_grad = backward.then(|| {
            // Inputs read by the same groups form blocks that read those groups' outputs.
            let mut classes: Vec<(Vec<u32>, Vec<u32>)> = Vec::new();
            for &c in &reads {
                let by = &readers[c as usize];
                match classes.iter_mut().find(|(g, _)| g == by) {
                    Some((_, cs)) => cs.push(c),
                    None => classes.push((by.clone(), vec![c])),
                }
            }
            let mut packed = Packed1x1::new();
            for (by, cs) in &classes {
                let mut outs: Vec<u32> = by
                    .iter()
                    .flat_map(|&grp| (0..cout_g).map(move |k| grp + (k * groups) as u32))
                    .collect();
                outs.sort_unstable();
                packed.add(cs, &outs, |j, k| w[outs[k] as usize * cin + cs[j] as usize]);
            }
            packed
        });
        Self {
            reads,
            unread,
            forward,
            input_grad,
            groups: parts,
        }
    }
}

/// Planes of at least this many columns run a live 3x3 over each output's kernel list;
/// narrower ones, over pair3x3's tiles. Single-thread microseconds of CondenseNeXt's masked learned-dsc convs
/// (AMD Zen 4, AVX-512; forward, tiles against lists): 32x32 40->32 with 78% of the kernels
/// live 194 / 192, 34% 91 / 76, 23% 70 / 52; 16x16 72->32 85 / 89, 39 / 37, 29 / 25; but
/// 8x8 104->32 36 / 52, 17 / 21, 13 / 14, where every kernel's block is a quarter of the
/// plane and the tiles' loads shared by all the kernels of a plane count more.
const LISTS_MIN_WIDTH: usize = 9;

/// A live 3x3's kernels: packed for pair3x3's tiles (and the weight gradient), and by output
/// plane where the lists run them.
struct LiveConv<T> {
    pairs: PackedPairs<T>,
    lists: Option<KernelLists<T>>,
}

impl<T: Direct3x3> LiveConv<T> {
    /// The kernels `pairs` for planes `g`.
    fn new(pairs: PackedPairs<T>, g: Plane) -> Self {
        let lists = (g.w >= LISTS_MIN_WIDTH).then(|| KernelLists::by_output(&pairs));
        Self { pairs, lists }
    }

    /// One image's output planes `dst` from the padded planes `src` (the same bits either
    /// way); `tile` is the tiles' scratch ([`pair_scratch_len`]).
    fn run(&self, dst: &mut [MaybeUninit<T>], src: &[T], g: Plane, tile: &mut [T], parallel: bool) {
        match &self.lists {
            Some(lists) => kernel_lists_image(dst, src, lists, g, parallel),
            None => pair_conv_image(dst, src, &self.pairs, g, tile, parallel),
        }
    }
}

/// A separable stage's packings: the depthwise over the gathered channels (and its input
/// gradient), the pointwise (and its transpose).
struct SeparablePacked<T> {
    /// Depthwise channels.
    t: usize,
    /// The depthwise's kernels as its weight gradient reads them ...
    depthwise: PackedPairs<T>,
    /// ... and by output plane: the depthwise itself and its input gradient.
    depthwise_lists: KernelLists<T>,
    depthwise_grad: Option<KernelLists<T>>,
    pointwise: Packed1x1<T>,
    pointwise_grad: Option<Packed1x1<T>>,
}

impl<T: Direct3x3> SeparablePacked<T> {
    /// From the weight `[dw (T x 9) | pw (cout x T)]`.
    fn new(w: &[T], pairs: &KernelPairs, (cin, cout): (usize, usize), backward: bool) -> Self {
        let t = pairs.len();
        let (dw, pw) = w.split_at(t * 9);
        let index = &pairs.inp[..];
        let (rows, reads): (Vec<u32>, Vec<u32>) =
            ((0..cout as u32).collect(), (0..t as u32).collect());
        let mut pointwise = Packed1x1::new();
        pointwise.add(&rows, &reads, |o, k| pw[o * t + k]);
        let pointwise_grad = backward.then(|| {
            let mut p = Packed1x1::new();
            p.add(&reads, &rows, |k, o| pw[o * t + k]);
            p
        });
        let depthwise = PackedPairs::gathered(dw, index);
        Self {
            t,
            depthwise_lists: KernelLists::by_output(&depthwise),
            depthwise,
            depthwise_grad: backward
                .then(|| KernelLists::by_output(&PackedPairs::gathered_input_grad(dw, index, cin))),
            pointwise,
            pointwise_grad,
        }
    }
}

/// Per-thread buffers of a stage's loops.
pub(super) struct Scratch<T> {
    /// 1x1: the activated input channels its packing reads; separable: the depthwise output.
    a: Vec<T>,
    /// Separable: the depthwise output's gradient.
    b: Vec<T>,
    /// 3x3: padded input and output-gradient planes, and the microkernel's tile rows.
    xpad: Vec<T>,
    dypad: Vec<T>,
    tile: Vec<T>,
    /// Dropout factors of one image.
    keep: Vec<T>,
    /// 1x1 and separable with [`Prepared::dots_t`]: output-gradient rows transposed.
    dyt: Vec<T>,
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
        let (mut forward, mut input_grad, mut one, mut separable) = (None, None, None, None);
        let (mut live_forward, mut live_input_grad) = (None, None);
        match conv {
            StageConv::Pointwise { groups } => {
                one = Some(OneByOne::pointwise(w, (cin, cout), *groups, backward));
            }
            StageConv::Live(live) => one = Some(OneByOne::live(w, (cin, cout), live, backward)),
            StageConv::Separable(pairs) => {
                separable = Some(SeparablePacked::new(w, pairs, (cin, cout), backward));
            }
            StageConv::Conv3x3 { groups } => {
                forward = Some(Packed3x3::forward(w, cout, cin, *groups, g));
                if backward {
                    input_grad = Some(Packed3x3::input_grad(w, cout, cin, *groups, g));
                }
            }
            StageConv::Live3x3(live) if live.skips_dropped(Simd::active()) => {
                let (shape, is_live) = ((cout, cin, live.groups()), |o, i| live.is_live(o, i));
                live_forward = Some(LiveConv::new(PackedPairs::forward(w, shape, &is_live), g));
                if backward {
                    let input_grad = PackedPairs::input_grad(w, shape, &is_live);
                    live_input_grad = Some(LiveConv::new(input_grad, g));
                }
            }
            StageConv::Live3x3(live) => {
                // Few dropped: the dense loops over the weight with the dropped kernels zero.
                let cin_g = cin / live.groups();
                let zero = T::from_f64(0.0);
                let masked: Vec<T> = w
                    .chunks(9)
                    .enumerate()
                    .flat_map(|(j, k)| {
                        let keep = live.is_live(j / cin_g, j % cin_g);
                        k.iter().map(move |&v| if keep { v } else { zero })
                    })
                    .collect();
                forward = Some(Packed3x3::forward(&masked, cout, cin, live.groups(), g));
                if backward {
                    input_grad = Some(Packed3x3::input_grad(&masked, cout, cin, live.groups(), g));
                }
            }
        }
        // The pointwise weight gradient's rows per group.
        let rows = match conv {
            StageConv::Pointwise { groups } => cout / groups,
            StageConv::Live(live) => cout / live.groups(),
            StageConv::Separable(_) => cout,
            StageConv::Conv3x3 { .. } | StageConv::Live3x3(_) => 0,
        };
        Self {
            conv: conv.clone(),
            cin,
            cout,
            g,
            one,
            separable,
            forward,
            input_grad,
            live_forward,
            live_input_grad,
            dots_t: rows > 0 && transposed_dots::<T>(rows),
        }
    }

    /// Values of one weight-gradient partial sum (compact for the live conv).
    pub(super) fn grad_len(&self) -> usize {
        match &self.conv {
            StageConv::Pointwise { groups } => self.cout * self.cin / groups,
            StageConv::Live(live) => self.cout * live.per_group(),
            StageConv::Conv3x3 { groups } => self.cout * self.cin / groups * 9,
            StageConv::Live3x3(live) => self.cout * self.cin / live.groups() * 9,
            StageConv::Separable(pairs) => pairs.len() * (9 + self.cout),
        }
    }

    pub(super) fn scratch(&self, dropout: bool) -> Scratch<T> {
        let (plane, zero) = (self.g.len(), T::from_f64(0.0));
        let (mut a, mut b, mut xpad, mut dypad, mut tile) = (0, 0, 0, 0, 0);
        // Only a stage packed for the backward pass needs the backward's buffers.
        let backward = self.input_grad.is_some()
            || self.live_input_grad.is_some()
            || self.one.as_ref().is_some_and(|o| o.input_grad.is_some())
            || self
                .separable
                .as_ref()
                .is_some_and(|s| s.pointwise_grad.is_some());
        match &self.conv {
            StageConv::Pointwise { .. } | StageConv::Live(_) => {
                a = self.one.as_ref().map_or(0, |o| o.reads.len()) * plane;
            }
            StageConv::Separable(pairs) => {
                let t = pairs.len();
                a = t * plane;
                xpad = self.g.padded_buffer_len(self.cin);
                if backward {
                    b = t * plane;
                    dypad = self.g.padded_buffer_len(t);
                }
            }
            StageConv::Conv3x3 { .. } | StageConv::Live3x3(_) => {
                xpad = self.g.padded_buffer_len(self.cin);
                if backward {
                    dypad = self.g.padded_buffer_len(self.cout);
                }
                tile = scratch_len(self.g);
                if self
                    .live_forward
                    .as_ref()
                    .is_some_and(|l| l.lists.is_none())
                {
                    tile = tile.max(pair_scratch_len(self.cin.max(self.cout)));
                }
            }
        }
        Scratch {
            a: vec![zero; a],
            b: vec![zero; b],
            xpad: vec![zero; xpad],
            dypad: vec![zero; dypad],
            tile: vec![zero; tile],
            keep: vec![zero; if dropout { self.cin * plane } else { 0 }],
            dyt: vec![
                zero;
                if backward && self.dots_t {
                    self.cout * plane
                } else {
                    0
                }
            ],
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
        simd_loops!({ self.forward_body(pre, img, x, y, s, par) })
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
        let plane = self.g.len();
        let keep = pre.keep(img, &mut s.keep);
        match &self.conv {
            StageConv::Pointwise { .. } | StageConv::Live(_) => {
                let one = self.one.as_ref().expect("1x1 weights are packed");
                let reads = one.reads.iter().map(|&c| c as usize);
                pre.channels(x, reads, keep, &mut s.a, plane);
                let parallel = matches!(par, Parallelism::Rayon(_));
                conv1x1_image(y, &s.a, &one.forward, plane, parallel);
            }
            StageConv::Separable(_) => {
                let sep = self
                    .separable
                    .as_ref()
                    .expect("separable weights are packed");
                let parallel = matches!(par, Parallelism::Rayon(_));
                pad_activated(pre, x, keep, self.g, &mut s.xpad);
                // SAFETY: the conv writes values only.
                let d = unsafe { write_only(&mut s.a[..sep.t * plane]) };
                kernel_lists_image(d, &s.xpad, &sep.depthwise_lists, self.g, parallel);
                conv1x1_image(y, &s.a, &sep.pointwise, plane, parallel);
            }
            StageConv::Conv3x3 { .. } | StageConv::Live3x3(_) => {
                pad_activated(pre, x, keep, self.g, &mut s.xpad);
                let parallel = matches!(par, Parallelism::Rayon(_));
                if let Some(live) = &self.live_forward {
                    live.run(y, &s.xpad, self.g, &mut s.tile, parallel);
                } else {
                    let packed = self.forward.as_ref().expect("3x3 weights are packed");
                    conv_image(y, &s.xpad, packed, self.g, &mut s.tile, parallel);
                }
            }
        }
    }

    /// One image's backward: `da` (`[cin, h * w]`) becomes the gradient at the BN's output,
    /// `act'(x * scale + shift) * keep * (convᵀ dy)`, with its per-channel `(sum, sum * x)`
    /// into `sums`; the weight gradient is added into `dw` (`grad_len()` values), or written
    /// there when `first` (the first image of a chunk). With `into`, the gradient at the BN's
    /// output goes there instead (see [`AddInto`]) and `da` is left as scratch.
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
        into: Option<&mut AddInto<'_, T>>,
    ) {
        simd_loops!({ self.backward_body(pre, img, (x, dy), da, dw, first, sums, s, par, into) })
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
        into: Option<&mut AddInto<'_, T>>,
    ) {
        let (plane, cin, cout, zero) = (self.g.len(), self.cin, self.cout, T::from_f64(0.0));
        let keep = pre.keep(img, &mut s.keep);
        match &self.conv {
            StageConv::Pointwise { .. } | StageConv::Live(_) => {
                let one = self.one.as_ref().expect("1x1 weights are packed");
                let reads = one.reads.iter().map(|&c| c as usize);
                pre.channels(x, reads, keep, &mut s.a, plane);
                if first {
                    dw[..self.grad_len()].fill(zero);
                }
                // dW += dy · aᵀ, group by group (compact: each group's rows over its inputs).
                for (rows, planes, at) in &one.groups {
                    let dys: Vec<&[T]> = rows
                        .iter()
                        .map(|&o| &dy[o as usize * plane..][..plane])
                        .collect();
                    let xs: Vec<&[T]> = planes
                        .iter()
                        .map(|&p| &s.a[p as usize * plane..][..plane])
                        .collect();
                    self.pointwise_grad(&mut dw[*at..], &dys, &xs, &mut s.dyt);
                }
                // da = wᵀ · dy over the inputs some group reads; zero where none does.
                let back = one
                    .input_grad
                    .as_ref()
                    .expect("backward weights are packed");
                let parallel = matches!(par, Parallelism::Rayon(_));
                // SAFETY: the conv writes values only.
                conv1x1_image(
                    unsafe { write_only(&mut da[..cin * plane]) },
                    dy,
                    back,
                    plane,
                    parallel,
                );
                for &c in &one.unread {
                    da[c as usize * plane..][..plane].fill(zero);
                }
                if !one.unread.is_empty() {
                    // Only the inputs some group reads have a gradient to gate.
                    let da = &mut da[..cin * plane];
                    pre.gate_channels(x, keep, plane, da, sums, &one.reads, into);
                    return;
                }
            }
            StageConv::Separable(_) => {
                let sep = self
                    .separable
                    .as_ref()
                    .expect("separable weights are packed");
                let (t, g) = (sep.t, self.g);
                let parallel = matches!(par, Parallelism::Rayon(_));
                if first {
                    dw[..self.grad_len()].fill(zero);
                }
                // The depthwise output again.
                pad_activated(pre, x, keep, g, &mut s.xpad);
                // SAFETY: the convs write values only.
                let d = unsafe { write_only(&mut s.a[..t * plane]) };
                kernel_lists_image(d, &s.xpad, &sep.depthwise_lists, g, parallel);
                // dP += dy · dᵀ; dd = Pᵀ · dy.
                let dys: Vec<&[T]> = dy[..cout * plane].chunks(plane).collect();
                let ds: Vec<&[T]> = s.a[..t * plane].chunks(plane).collect();
                self.pointwise_grad(&mut dw[t * 9..], &dys, &ds, &mut s.dyt);
                let back = sep
                    .pointwise_grad
                    .as_ref()
                    .expect("backward weights are packed");
                // SAFETY: as above.
                let dd = unsafe { write_only(&mut s.b[..t * plane]) };
                conv1x1_image(dd, dy, back, plane, parallel);
                pad_into(&s.b[..t * plane], g, &mut s.dypad);
                // da = the depthwise's transpose of dd; dK from the input and dd.
                let back = sep
                    .depthwise_grad
                    .as_ref()
                    .expect("backward weights are packed");
                // SAFETY: as above.
                let dst = unsafe { write_only(&mut da[..cin * plane]) };
                kernel_lists_image(dst, &s.dypad, back, g, parallel);
                pair_weight_grad_image(&mut dw[..t * 9], &s.xpad, &s.dypad, &sep.depthwise, cin, g);
            }
            StageConv::Conv3x3 { .. } | StageConv::Live3x3(_) => {
                let groups = match &self.conv {
                    StageConv::Live3x3(live) => live.groups(),
                    StageConv::Conv3x3 { groups } => *groups,
                    _ => unreachable!("a 3x3 stage"),
                };
                pad_activated(pre, x, keep, self.g, &mut s.xpad);
                pad_into(&dy[..cout * plane], self.g, &mut s.dypad);
                let parallel = matches!(par, Parallelism::Rayon(_));
                // SAFETY: the convs write values only.
                let dst = unsafe { write_only(da) };
                if first {
                    dw[..self.grad_len()].fill(zero);
                }
                let shape = (cout, cin, groups);
                match (&self.live_input_grad, &self.live_forward) {
                    (Some(back), Some(fwd)) => {
                        back.run(dst, &s.dypad, self.g, &mut s.tile, parallel);
                        pair_weight_grad_image(dw, &s.xpad, &s.dypad, &fwd.pairs, cin, self.g);
                    }
                    _ => {
                        let packed = self
                            .input_grad
                            .as_ref()
                            .expect("backward weights are packed");
                        conv_image(dst, &s.dypad, packed, self.g, &mut s.tile, parallel);
                        weight_grad_image(dw, &s.xpad, &s.dypad, shape, self.g);
                    }
                }
            }
        }
        pre.gate(x, keep, plane, &mut da[..cin * plane], sums, into);
    }

    /// A 1x1's weight gradient of one image added into its partial `dw`: `[row][plane]`
    /// by [`dots1x1`], or `[plane][row]` by [`dots1x1_t`] (with `dyt` its scratch).
    #[inline(always)]
    fn pointwise_grad(&self, dw: &mut [T], dy: &[&[T]], x: &[&[T]], dyt: &mut [T]) {
        let plane = self.g.len();
        if self.dots_t {
            transpose_rows(dyt, dy, plane);
            dots1x1_t(dw, &dyt[..dy.len() * plane], dy.len(), x, plane);
        } else {
            dots1x1(dw, dy, x, plane);
        }
    }

    /// The weight gradient `dw` (`[cout, cin / groups, k, k]`) from a summed partial in the
    /// layout of [`Self::backward_image`] (the live conv's compact rows go back to their
    /// places; its pruned entries are exactly 0).
    pub(super) fn weight_grad(&self, summed: &[T], dw: &mut [T]) {
        match &self.conv {
            StageConv::Pointwise { groups } if self.dots_t => {
                let (cout_g, cin_g) = (self.cout / groups, self.cin / groups);
                for (d, s) in dw
                    .chunks_mut(cout_g * cin_g)
                    .zip(summed.chunks(cout_g * cin_g))
                {
                    transpose_into(d, s, cin_g, cout_g);
                }
            }
            StageConv::Separable(pairs) if self.dots_t => {
                let t = pairs.len();
                dw[..t * 9].copy_from_slice(&summed[..t * 9]);
                transpose_into(&mut dw[t * 9..], &summed[t * 9..], t, self.cout);
            }
            StageConv::Pointwise { .. } | StageConv::Conv3x3 { .. } | StageConv::Separable(_) => {
                dw.copy_from_slice(summed)
            }
            // The dense loops' gradient of the dropped kernels is not theirs: zero it.
            StageConv::Live3x3(live) => {
                let cin_g = self.cin / live.groups();
                for (j, (d, s)) in dw.chunks_mut(9).zip(summed.chunks(9)).enumerate() {
                    if live.is_live(j / cin_g, j % cin_g) {
                        d.copy_from_slice(s);
                    } else {
                        d.fill(T::from_f64(0.0));
                    }
                }
            }
            StageConv::Live(live) => {
                let (groups, l) = (live.groups(), live.per_group());
                let cout_g = self.cout / groups;
                dw.fill(T::from_f64(0.0));
                for grp in 0..groups {
                    let block = &summed[grp * cout_g * l..][..cout_g * l];
                    for kk in 0..cout_g {
                        let row = &mut dw[(grp + kk * groups) * self.cin..][..self.cin];
                        for (i, &j) in live.of(grp).iter().enumerate() {
                            // Input i of output kk: `[kk][i]`, or `[i][kk]` when transposed.
                            row[j as usize] = if self.dots_t {
                                block[i * cout_g + kk]
                            } else {
                                block[kk * l + i]
                            };
                        }
                    }
                }
            }
        }
    }
}

/// `dst[r * rows_of_src + k] = src[k * rows + r]`: the `[rows_of_src x rows]` matrix `src`
/// transposed.
fn transpose_into<T: Copy>(dst: &mut [T], src: &[T], rows_of_src: usize, rows: usize) {
    for (k, row) in src.chunks(rows).take(rows_of_src).enumerate() {
        for (r, &v) in row.iter().enumerate() {
            dst[r * rows_of_src + k] = v;
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
