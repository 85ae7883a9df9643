//! A whole dense block as one op that owns its storage and its gradients (the
//! memory-efficient DenseNet layout, Pleiss et al. 2017).
//!
//! Run layer by layer through candle, a block of `L` layers concatenates its features `L`
//! times (each copy as large as everything so far), and its backward splits every
//! concatenation's gradient back into pieces and adds each input's contributions into fresh
//! zero-filled tensors: the memory traffic grows with the square of the depth, and each
//! layer's BN recomputes the statistics of every channel before it. Here:
//!
//! - one feature buffer `[N, C_final, H, W]` holds the block: its input, then each layer's
//!   `k` new channels, written in place by the layer's last conv (no concatenation);
//! - every channel's batch statistics are taken once, when it is written: a layer's
//!   statistics are the same for every later layer's BN that reads it;
//! - one gradient buffer of the same shape is accumulated in place by the backward, which
//!   runs the layers in reverse. A BN's input gradient is `k1 * da + k2 * x + k3` per
//!   channel; the `k1 * da` term is added as each layer's backward makes `da`, and the two
//!   terms that depend only on the channel (`k2`, `k3`) are summed over every layer that
//!   reads the channel and added once, when the channel's gradient is complete (just
//!   before the backward of the layer that wrote it).
//!
//! A layer is a chain of pre-activated conv stages ([`super::stage`], BN -> activation ->
//! dropout -> conv): the first reads the block's first `cin` channels, each later one the
//! previous stage's output (kept from the forward for the backward, with its statistics), and
//! the last writes the layer's new channels. Every sum is taken in a fixed order (images in
//! order, weight gradients over fixed image chunks), so results do not depend on the threads.

use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::bn_act::{bn_input_grad, channel_stats, coefficients, ActKind, Coefficients};
use super::conv::{split, CHUNK};
use super::direct3x3::Direct3x3;
use super::noise::{DropoutNoise, KeepMask};
use super::sparse_conv::Plane;
use super::stage::{write_only, AddInto, Keep, PreAct, Prepared, Scratch, StageConv};
use super::{by_dtype, dims4, simd_loops, slice, sum_parts};

const OP: &str = "dense_block";

/// One pre-activated conv of a layer: BN over `cin` channels -> `act` -> dropout (`noise`)
/// -> `conv` to `cout` channels.
#[derive(Debug, Clone)]
pub struct BlockStage {
    pub conv: StageConv,
    pub cin: usize,
    pub cout: usize,
    pub act: ActKind,
    /// The BN's epsilon.
    pub eps: f64,
    /// Dropout in front of the conv, in training (ignored in evaluation).
    pub noise: Option<DropoutNoise>,
}

impl BlockStage {
    /// Values of the conv's weight.
    fn weight_len(&self) -> usize {
        match &self.conv {
            StageConv::Pointwise { groups } => self.cout * self.cin / groups,
            StageConv::Live(_) => self.cout * self.cin,
            StageConv::Conv3x3 { groups } => self.cout * self.cin / groups * 9,
            StageConv::Live3x3(live) => self.cout * self.cin / live.groups() * 9,
            StageConv::Separable(pairs) => pairs.len() * (9 + self.cout),
        }
    }

    /// Values of this stage in the op's parameters: `[mean; var; gamma; beta]` then the weight.
    pub fn params_len(&self) -> usize {
        4 * self.cin + self.weight_len()
    }
}

/// One dense layer: its stages in order (at least two).
#[derive(Debug, Clone)]
pub struct BlockLayer {
    pub stages: Vec<BlockStage>,
}

impl BlockLayer {
    fn cin(&self) -> usize {
        self.stages[0].cin
    }

    fn growth(&self) -> usize {
        self.stages.last().map_or(0, |s| s.cout)
    }
}

/// The batch statistics a training forward normalised with, per layer and stage: the
/// `(mean, biased variance)` of each of the stage's input channels, over `count` values.
#[derive(Debug, Clone)]
pub struct BlockStats {
    pub stages: Vec<Vec<Vec<(f64, f64)>>>,
    pub count: usize,
}

/// The block's features `[N, C0 + sum of growths, H, W]`: `x` (`[N, C0, H, W]`) then each
/// layer's new channels. `params` holds every layer's stages' [`BlockStage::params_len`]
/// values in order; the BN rows `mean` and `var` are used in evaluation only (training
/// normalises with the batch's statistics, returned for the running averages) and get a zero
/// gradient.
pub fn dense_block(
    x: &Tensor,
    params: &Tensor,
    layers: &Arc<[BlockLayer]>,
    train: bool,
) -> Result<(Tensor, Option<BlockStats>)> {
    let (_, c0, h, w) = x.dims4()?;
    if h == 0 || w == 0 || layers.is_empty() {
        candle_core::bail!("{OP}: empty input {:?} or no layers", x.dims());
    }
    let mut channels = c0;
    let mut len = 0;
    for (l, layer) in layers.iter().enumerate() {
        if layer.stages.len() < 2 || layer.cin() != channels {
            candle_core::bail!(
                "{OP}: layer {l} must have at least two stages reading {channels} channels"
            );
        }
        for (s, stage) in layer.stages.iter().enumerate() {
            if s > 0 && stage.cin != layer.stages[s - 1].cout {
                candle_core::bail!("{OP}: layer {l} stage {s} does not read its predecessor");
            }
            if let Err(e) = stage.conv.check(stage.cin, stage.cout, stage.weight_len()) {
                candle_core::bail!("{OP}: layer {l} stage {s}: {e}");
            }
            len += stage.params_len();
        }
        channels += layer.growth();
    }
    if params.dims() != [len] {
        candle_core::bail!("{OP}: {} parameters for {len}", params.elem_count());
    }
    let op = DenseBlock {
        layers: layers.clone(),
        train,
        saved: Arc::new(Mutex::new(None)),
    };
    let saved = op.saved.clone();
    let (x, params) = (x.contiguous()?, params.contiguous()?);
    // An evaluation forward keeps nothing for a backward and records none.
    let y = if train {
        x.apply_op2(&params, op)?
    } else {
        x.apply_op2_no_bwd(&params, &op)?
    };
    let stats = if train {
        let guard = saved
            .lock()
            .map_err(|_| candle_core::Error::Msg(format!("{OP}: poisoned")))?;
        guard.as_ref().map(|s| BlockStats {
            stages: s.stats(),
            count: x.dim(0).unwrap_or(0) * h * w,
        })
    } else {
        None
    };
    Ok((y, stats))
}

#[derive(Debug, Clone)]
struct DenseBlock {
    layers: Arc<[BlockLayer]>,
    train: bool,
    /// What a training forward keeps for its backward.
    saved: Arc<Mutex<Option<Saved>>>,
}

/// The backward, on `(features, dfeatures)`: `[dx | dparams]`.
struct Grad(DenseBlock);

#[derive(Debug)]
enum Saved {
    F32(Kept<f32>),
    F64(Kept<f64>),
}

impl Saved {
    fn stats(&self) -> Vec<Vec<Vec<(f64, f64)>>> {
        match self {
            Self::F32(k) => k.stats.clone(),
            Self::F64(k) => k.stats.clone(),
        }
    }
}

/// Per layer and stage: the statistics of the stage's input, (stages after the first) the
/// input itself, and (stages with dropout) the dropout mask.
#[derive(Debug)]
struct Kept<T> {
    stats: Vec<Vec<Vec<(f64, f64)>>>,
    inputs: Vec<Vec<Vec<T>>>,
    masks: Vec<Vec<Option<KeepMask>>>,
}

/// The dtypes a [`Kept`] is saved for.
trait Storable: Direct3x3 {
    fn wrap(k: Kept<Self>) -> Saved;
    fn unwrap(s: &Saved) -> Option<&Kept<Self>>;
}

impl Storable for f32 {
    fn wrap(k: Kept<Self>) -> Saved {
        Saved::F32(k)
    }
    fn unwrap(s: &Saved) -> Option<&Kept<Self>> {
        match s {
            Saved::F32(k) => Some(k),
            Saved::F64(_) => None,
        }
    }
}

impl Storable for f64 {
    fn wrap(k: Kept<Self>) -> Saved {
        Saved::F64(k)
    }
    fn unwrap(s: &Saved) -> Option<&Kept<Self>> {
        match s {
            Saved::F64(k) => Some(k),
            Saved::F32(_) => None,
        }
    }
}

/// Sizes of one call.
#[derive(Debug, Clone, Copy)]
struct Dims {
    n: usize,
    c0: usize,
    /// Channels of the feature buffer.
    cf: usize,
    g: Plane,
}

impl Dims {
    fn plane(&self) -> usize {
        self.g.len()
    }
    /// Values of one image in the feature buffer.
    fn image(&self) -> usize {
        self.cf * self.g.len()
    }
}

/// Where each stage's parameters start.
fn param_offsets(layers: &[BlockLayer]) -> Vec<Vec<usize>> {
    let mut at = 0;
    layers
        .iter()
        .map(|l| {
            l.stages
                .iter()
                .map(|s| {
                    let start = at;
                    at += s.params_len();
                    start
                })
                .collect()
        })
        .collect()
}

/// The BN coefficients of a stage: from `stats` (training; rounded to `T` as a separate
/// statistics op would store them) or the parameters' running rows (evaluation).
fn stage_coefficients<T: Direct3x3>(
    p: &[T],
    stage: &BlockStage,
    stats: Option<&[(f64, f64)]>,
) -> Vec<Coefficients> {
    let c = stage.cin;
    match stats {
        None => coefficients(&p[..4 * c], c, stage.eps),
        Some(st) => {
            let mut p4: Vec<T> = Vec::with_capacity(4 * c);
            p4.extend(st.iter().map(|m| T::from_f64(m.0)));
            p4.extend(st.iter().map(|m| T::from_f64(m.1)));
            p4.extend_from_slice(&p[2 * c..4 * c]);
            coefficients(&p4, c, stage.eps)
        }
    }
}

/// `(mean, var)` of channels `range` of `n` images of `per_image` planes, rounded to `T`.
fn rounded_stats<T: Direct3x3>(
    x: &[T],
    n: usize,
    per_image: usize,
    range: std::ops::Range<usize>,
    plane: usize,
) -> Vec<(f64, f64)> {
    let round = |v: f64| T::from_f64(v).to_f64();
    channel_stats(x, n, per_image, range, plane)
        .into_iter()
        .map(|(m, v)| (round(m), round(v)))
        .collect()
}

/// Runs `f(img, input, output, scratch)` over the images in parallel, one scratch per piece
/// of work.
fn per_image<T: Direct3x3>(
    stage: &Prepared<T>,
    dropout: bool,
    pairs: Vec<(&[T], &mut [MaybeUninit<T>])>,
    f: impl Fn(usize, &[T], &mut [MaybeUninit<T>], &mut Scratch<T>) + Sync + Send,
) {
    pairs.into_par_iter().enumerate().for_each_init(
        || stage.scratch(dropout),
        |s, (img, (x, y))| f(img, x, y, s),
    );
}

/// `len` values, all written by `write` before they are read.
///
/// # Safety
/// `write` writes every element of its slice.
unsafe fn written<T>(len: usize, write: impl FnOnce(&mut [MaybeUninit<T>])) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(len);
    write(&mut v.spare_capacity_mut()[..len]);
    // SAFETY: the caller's `write` initialised all `len` elements.
    unsafe { v.set_len(len) };
    v
}

fn forward<T: Storable>(x: &[T], p: &[T], d: Dims, op: &DenseBlock) -> (Vec<T>, Option<Kept<T>>) {
    let (n, plane, zero) = (d.n, d.plane(), T::from_f64(0.0));
    let at = param_offsets(&op.layers);
    // The channels no layer has written yet are never read; zero them all once.
    let mut buf = vec![zero; n * d.image()];
    for (img, out) in buf.chunks_mut(d.image()).enumerate() {
        out[..d.c0 * plane].copy_from_slice(&x[img * d.c0 * plane..][..d.c0 * plane]);
    }
    let mut channel = if op.train {
        rounded_stats(&buf, n, d.cf, 0..d.c0, plane)
    } else {
        Vec::new()
    };
    let mut kept = Kept {
        stats: Vec::new(),
        inputs: Vec::new(),
        masks: Vec::new(),
    };
    let par = split(n).1;
    for (l, layer) in op.layers.iter().enumerate() {
        let (cin, last) = (layer.cin(), layer.stages.len() - 1);
        let (mut layer_stats, mut layer_inputs, mut layer_masks) =
            (Vec::new(), vec![Vec::new()], Vec::new());
        let mut z: Vec<T> = Vec::new();
        for (s, stage) in layer.stages.iter().enumerate() {
            let ps = &p[at[l][s]..][..stage.params_len()];
            let stats = match (op.train, s) {
                (false, _) => None,
                (true, 0) => Some(channel[..cin].to_vec()),
                (true, _) => Some(rounded_stats(&z, n, stage.cin, 0..stage.cin, plane)),
            };
            let k = stage_coefficients(ps, stage, stats.as_deref());
            let (in_len, out_len) = (stage.cin * plane, stage.cout * plane);
            // Dropout is the identity in evaluation.
            let noise = stage.noise.as_ref().filter(|_| op.train);
            let mask = noise.map(|noise| noise.mask(n, in_len));
            let pre = PreAct {
                k: &k,
                act: stage.act,
                keep: mask.as_ref().map_or(Keep::All, Keep::Mask),
            };
            let w = &ps[4 * stage.cin..];
            let prepared = Prepared::new(&stage.conv, w, (stage.cin, stage.cout), d.g, false);
            let run = |img: usize, xi: &[T], yi: &mut [MaybeUninit<T>], sc: &mut Scratch<T>| {
                prepared.forward_image(&pre, img, xi, yi, sc, par)
            };
            let dropout = mask.is_some();
            if s == last {
                // The last stage writes the layer's channels of the feature buffer.
                let pairs = z
                    .chunks(in_len)
                    .zip(buf.chunks_mut(d.image()))
                    .map(|(xi, bi)| {
                        // SAFETY: `forward_image` writes values only.
                        (xi, unsafe { write_only(&mut bi[cin * plane..][..out_len]) })
                    })
                    .collect();
                per_image(&prepared, dropout, pairs, run);
            } else {
                let input: Vec<&[T]> = if s == 0 {
                    buf.chunks(d.image()).map(|bi| &bi[..in_len]).collect()
                } else {
                    z.chunks(in_len).collect()
                };
                // SAFETY: `forward_image` writes all of every image's output.
                let next = unsafe {
                    written(n * out_len, |next| {
                        let pairs = input.into_iter().zip(next.chunks_mut(out_len)).collect();
                        per_image(&prepared, dropout, pairs, run);
                    })
                };
                if op.train && s > 0 {
                    layer_inputs.push(std::mem::take(&mut z));
                }
                z = next;
            }
            if let Some(st) = stats {
                layer_stats.push(st);
            }
            layer_masks.push(mask);
        }
        if op.train {
            layer_inputs.push(std::mem::take(&mut z));
            channel.extend(rounded_stats(
                &buf,
                n,
                d.cf,
                cin..cin + layer.growth(),
                plane,
            ));
            kept.stats.push(layer_stats);
            kept.inputs.push(layer_inputs);
            kept.masks.push(layer_masks);
        }
    }
    (buf, op.train.then_some(kept))
}

/// `[dx | dparams]` from the forward's features `buf` and their gradient `dy`.
fn backward<T: Storable>(
    buf: &[T],
    dy: &[T],
    p: &[T],
    d: Dims,
    op: &DenseBlock,
    kept: &Kept<T>,
) -> Vec<T> {
    let (n, plane, zero) = (d.n, d.plane(), T::from_f64(0.0));
    let at = param_offsets(&op.layers);
    let mut out = vec![zero; n * d.c0 * plane + p.len()];
    let (dx, dp) = out.split_at_mut(n * d.c0 * plane);
    let mut dbuf = dy.to_vec();
    // The per-channel terms of the BN input gradients not yet added: `k2 * x + k3`.
    let (mut k2s, mut k3s) = (vec![0f64; d.cf], vec![0f64; d.cf]);
    let count = (n * plane) as f64;
    let chunks = n.div_ceil(CHUNK);
    let par = split(chunks).1;

    for (l, layer) in op.layers.iter().enumerate().rev() {
        let (cin, growth, last) = (layer.cin(), layer.growth(), layer.stages.len() - 1);
        add_deferred(&mut dbuf, buf, d, cin..cin + growth, &k2s, &k3s);
        let mut dz: Vec<T> = Vec::new();
        for (s, stage) in layer.stages.iter().enumerate().rev() {
            let ps = &p[at[l][s]..][..stage.params_len()];
            let dps = &mut dp[at[l][s]..][..stage.params_len()];
            let k = stage_coefficients(ps, stage, Some(&kept.stats[l][s]));
            let pre = PreAct {
                k: &k,
                act: stage.act,
                keep: kept.masks[l][s].as_ref().map_or(Keep::All, Keep::Mask),
            };
            let w = &ps[4 * stage.cin..];
            let prepared = Prepared::new(&stage.conv, w, (stage.cin, stage.cout), d.g, true);
            let (in_len, out_len, part_len) =
                (stage.cin * plane, stage.cout * plane, prepared.grad_len());
            let mut sums = vec![(0f64, 0f64); n * stage.cin];
            let mut parts = vec![zero; chunks * part_len];
            let dropout = kept.masks[l][s].is_some();
            if s > 0 {
                // The output gradient of every image: the layer's channels of the gradient
                // buffer (last stage), else the next stage's input gradient.
                let dys: Vec<&[T]> = if s == last {
                    dbuf.chunks(d.image())
                        .map(|c| &c[cin * plane..][..out_len])
                        .collect()
                } else {
                    dz.chunks(out_len).collect()
                };
                let x = &kept.inputs[l][s];
                let mut da = vec![zero; n * in_len];
                da.par_chunks_mut(CHUNK * in_len)
                    .zip(sums.par_chunks_mut(CHUNK * stage.cin))
                    .zip(parts.par_chunks_mut(part_len))
                    .enumerate()
                    // One scratch per piece of work, reused by its chunks (each image
                    // overwrites what it reads of it).
                    .for_each_init(
                        || prepared.scratch(dropout),
                        |scr, (chunk, ((dac, sc), part))| {
                            for (j, img) in
                                (chunk * CHUNK..((chunk + 1) * CHUNK).min(n)).enumerate()
                            {
                                let io = (&x[img * in_len..][..in_len], dys[img]);
                                let dai = &mut dac[j * in_len..(j + 1) * in_len];
                                let si = &mut sc[j * stage.cin..(j + 1) * stage.cin];
                                prepared.backward_image(
                                    &pre,
                                    img,
                                    io,
                                    dai,
                                    part,
                                    j == 0,
                                    si,
                                    scr,
                                    par,
                                    None,
                                );
                            }
                        },
                    );
                // The gradient at this stage's input, and its BN's dgamma and dbeta.
                bn_input_grad(
                    &mut da,
                    x,
                    &sums,
                    &k,
                    plane,
                    true,
                    &mut dps[..4 * stage.cin],
                );
                dz = da;
            } else {
                let dz = &dz;
                let k1: Vec<T> = k.iter().map(|c| T::from_f64(c.gamma * c.invstd)).collect();
                dbuf.par_chunks_mut(CHUNK * d.image())
                    .zip(sums.par_chunks_mut(CHUNK * stage.cin))
                    .zip(parts.par_chunks_mut(part_len))
                    .enumerate()
                    .for_each_init(
                        || (prepared.scratch(dropout), vec![zero; in_len]),
                        |(scr, da), (chunk, ((dbc, sc), part))| {
                            for (j, img) in
                                (chunk * CHUNK..((chunk + 1) * CHUNK).min(n)).enumerate()
                            {
                                let xi = &buf[img * d.image()..][..in_len];
                                let io = (xi, &dz[img * out_len..][..out_len]);
                                let si = &mut sc[j * stage.cin..(j + 1) * stage.cin];
                                // The `k1 * da` term of the BN's input gradient, added in place
                                // as the gate makes `da` (where it can be nonzero).
                                let mut into = AddInto {
                                    planes: &mut dbc[j * d.image()..][..in_len],
                                    k1: &k1,
                                };
                                prepared.backward_image(
                                    &pre,
                                    img,
                                    io,
                                    da,
                                    part,
                                    j == 0,
                                    si,
                                    scr,
                                    par,
                                    Some(&mut into),
                                );
                            }
                        },
                    );
                // dgamma, dbeta, and the channel terms left for later.
                for (c, kc) in k.iter().enumerate() {
                    let (mut total, mut total_x) = (0f64, 0f64);
                    for img in 0..n {
                        total += sums[img * stage.cin + c].0;
                        total_x += sums[img * stage.cin + c].1;
                    }
                    let sxhat = (total_x - kc.mean * total) * kc.invstd;
                    dps[2 * stage.cin + c] = T::from_f64(sxhat);
                    dps[3 * stage.cin + c] = T::from_f64(total);
                    let [_, k2, k3] = kc.input_grad::<f64>((total, sxhat), count, true);
                    k2s[c] += k2;
                    k3s[c] += k3;
                }
            }
            let mut summed = vec![zero; part_len];
            sum_parts(&parts, &mut summed);
            prepared.weight_grad(&summed, &mut dps[4 * stage.cin..]);
        }
    }
    add_deferred(&mut dbuf, buf, d, 0..d.c0, &k2s, &k3s);
    for (img, dxi) in dx.chunks_mut(d.c0 * plane).enumerate() {
        dxi.copy_from_slice(&dbuf[img * d.image()..][..d.c0 * plane]);
    }
    out
}

/// `dbuf[:, c] += k2[c] * buf[:, c] + k3[c]` for the channels `range`.
fn add_deferred<T: Direct3x3>(
    dbuf: &mut [T],
    buf: &[T],
    d: Dims,
    range: std::ops::Range<usize>,
    k2s: &[f64],
    k3s: &[f64],
) {
    let plane = d.plane();
    dbuf.par_chunks_mut(d.image())
        .zip(buf.par_chunks(d.image()))
        .for_each(|(db, b)| {
            simd_loops!({
                for c in range.clone() {
                    let (k2, k3) = (T::from_f64(k2s[c]), T::from_f64(k3s[c]));
                    let (dst, src) = (&mut db[c * plane..][..plane], &b[c * plane..][..plane]);
                    for (o, &v) in dst.iter_mut().zip(src) {
                        *o = *o + (k2 * v + k3);
                    }
                }
            })
        });
}

impl DenseBlock {
    fn dims(&self, xl: &Layout) -> Result<Dims> {
        let [n, c0, h, w] = dims4(xl, OP)?;
        let cf = c0 + self.layers.iter().map(BlockLayer::growth).sum::<usize>();
        Ok(Dims {
            n,
            c0,
            cf,
            g: Plane { h, w },
        })
    }
}

fn run_forward<T: Storable>(
    (xs, xl): (&CpuStorage, &Layout),
    (ps, pl): (&CpuStorage, &Layout),
    op: &DenseBlock,
) -> Result<Vec<T>> {
    let d = op.dims(xl)?;
    let (y, kept) = forward(slice::<T>(xs, xl, OP)?, slice::<T>(ps, pl, OP)?, d, op);
    if let Some(kept) = kept {
        let mut saved = op
            .saved
            .lock()
            .map_err(|_| candle_core::Error::Msg(format!("{OP}: poisoned")))?;
        *saved = Some(T::wrap(kept));
    }
    Ok(y)
}

impl CustomOp2 for DenseBlock {
    fn name(&self) -> &'static str {
        "dense-block"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = self.dims(xl)?;
        let y = by_dtype!(OP, xs, run_forward((xs, xl), (ps, pl), self));
        Ok((y, Shape::from((d.n, d.cf, d.g.h, d.g.w))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let packed = y.apply_op3_no_bwd(&dy.contiguous()?, params, &Grad(self.clone()))?;
        let nx = x.elem_count();
        let dx = packed.narrow(0, 0, nx)?.reshape(x.shape())?;
        let dp = packed.narrow(0, nx, params.elem_count())?;
        Ok((Some(dx), Some(dp)))
    }
}

fn run_backward<T: Storable>(
    (ys, yl): (&CpuStorage, &Layout),
    (gs, gl): (&CpuStorage, &Layout),
    (ps, pl): (&CpuStorage, &Layout),
    op: &DenseBlock,
    d: Dims,
) -> Result<Vec<T>> {
    let saved = op
        .saved
        .lock()
        .map_err(|_| candle_core::Error::Msg(format!("{OP}: poisoned")))?;
    let kept = saved
        .as_ref()
        .and_then(T::unwrap)
        .ok_or_else(|| candle_core::Error::Msg(format!("{OP}: backward before its forward")))?;
    let (y, dy, p) = (
        slice::<T>(ys, yl, OP)?,
        slice::<T>(gs, gl, OP)?,
        slice::<T>(ps, pl, OP)?,
    );
    Ok(backward(y, dy, p, d, op, kept))
}

impl CustomOp3 for Grad {
    fn name(&self) -> &'static str {
        "dense-block-grad"
    }

    fn cpu_fwd(
        &self,
        ys: &CpuStorage,
        yl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let [n, _, h, w] = dims4(yl, OP)?;
        let c0 = self.0.layers.first().map_or(0, BlockLayer::cin);
        let d = Dims {
            n,
            c0,
            cf: dims4(yl, OP)?[1],
            g: Plane { h, w },
        };
        let len = n * c0 * h * w + pl.shape().elem_count();
        let out = by_dtype!(
            OP,
            ys,
            run_backward((ys, yl), (gs, gl), (ps, pl), &self.0, d)
        );
        Ok((out, Shape::from(len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::bn_act::tests::reference;
    use crate::kernels::testing::{max_diff, random, weighted_grads};
    use crate::kernels::{GroupInputs, LiveKernels, Simd};
    use crate::rng::Rng;
    use candle_core::{DType, Device, Var};

    /// A stage's parameters as the test holds them.
    struct Params {
        running: (Tensor, Tensor),
        gamma: Var,
        beta: Var,
        w: Var,
        /// The live conv's 0/1 mask over its dense weight.
        mask: Option<Tensor>,
    }

    fn stage_params(rng: &mut Rng, stage: &BlockStage, dtype: DType) -> Params {
        let c = stage.cin;
        let (k, per_out) = match &stage.conv {
            StageConv::Pointwise { groups } => (1, c / groups),
            StageConv::Live(_) => (1, c),
            StageConv::Conv3x3 { groups } => (3, c / groups),
            StageConv::Live3x3(live) => (3, c / live.groups()),
            // Flat `[dw | pw]`: made below.
            StageConv::Separable(_) => (1, 1),
        };
        let mask = match &stage.conv {
            StageConv::Live3x3(live) => {
                let cin_g = c / live.groups();
                let m: Vec<f64> = (0..stage.cout * cin_g)
                    .map(|j| f64::from(u8::from(live.is_live(j / cin_g, j % cin_g))))
                    .collect();
                let m = Tensor::from_vec(m, (stage.cout, cin_g, 1, 1), &Device::Cpu).unwrap();
                Some(m.to_dtype(dtype).unwrap())
            }
            StageConv::Live(live) => {
                let mut m = vec![0f64; stage.cout * c];
                for o in 0..stage.cout {
                    for &j in live.of(o % live.groups()) {
                        m[o * c + j as usize] = 1.0;
                    }
                }
                let m = Tensor::from_vec(m, (stage.cout, c, 1, 1), &Device::Cpu).unwrap();
                Some(m.to_dtype(dtype).unwrap())
            }
            _ => None,
        };
        let w = match &stage.conv {
            StageConv::Separable(pairs) => random(rng, &[pairs.len() * (9 + stage.cout)], dtype),
            _ => random(rng, &[stage.cout, per_out, k, k], dtype),
        };
        Params {
            running: (
                random(rng, &[c], dtype),
                (random(rng, &[c], dtype).abs().unwrap() + 0.5).unwrap(),
            ),
            gamma: Var::from_tensor(&(random(rng, &[c], dtype) * 2.0).unwrap()).unwrap(),
            beta: Var::from_tensor(&random(rng, &[c], dtype)).unwrap(),
            w: Var::from_tensor(&w).unwrap(),
            mask,
        }
    }

    /// The block as candle's ops compute it, layer by layer: BN (the batch's statistics in
    /// training), activation, the dropout mask, the conv (the live conv as the masked dense
    /// 1x1), and a concatenation per layer.
    fn composition(
        x: &Tensor,
        layers: &[BlockLayer],
        params: &[Vec<Params>],
        train: bool,
    ) -> Tensor {
        let mut feats = x.clone();
        for (layer, ps) in layers.iter().zip(params) {
            let mut z = feats.clone();
            for (stage, p) in layer.stages.iter().zip(ps) {
                let p4 = Tensor::stack(
                    &[
                        &p.running.0,
                        &p.running.1,
                        p.gamma.as_tensor(),
                        p.beta.as_tensor(),
                    ],
                    0,
                )
                .unwrap();
                let mut a = reference(&z, &p4, stage.eps, stage.act, train);
                if let (Some(noise), true) = (&stage.noise, train) {
                    let mut m = vec![0f64; a.elem_count()];
                    noise.fill(0, &mut m);
                    let m = Tensor::from_vec(m, a.shape(), &Device::Cpu).unwrap();
                    a = (a * m.to_dtype(x.dtype()).unwrap()).unwrap();
                }
                z = match (&stage.conv, &p.mask) {
                    (StageConv::Pointwise { groups }, _) => a.conv2d(&p.w, 0, 1, 1, *groups),
                    (StageConv::Live(_), Some(m)) => {
                        a.conv2d(&p.w.as_tensor().mul(m).unwrap(), 0, 1, 1, 1)
                    }
                    (StageConv::Conv3x3 { groups }, _) => a.conv2d(&p.w, 1, 1, 1, *groups),
                    (StageConv::Live3x3(live), Some(m)) => {
                        let w = p.w.as_tensor().broadcast_mul(m).unwrap();
                        a.conv2d(&w, 1, 1, 1, live.groups())
                    }
                    (StageConv::Separable(pairs), _) => {
                        let t = pairs.len();
                        let dw =
                            p.w.narrow(0, 0, t * 9)
                                .unwrap()
                                .reshape((t, 1, 3, 3))
                                .unwrap();
                        let pw = p.w.narrow(0, t * 9, stage.cout * t).unwrap();
                        let pw = pw.reshape((stage.cout, t, 1, 1)).unwrap();
                        let index: Vec<u32> = pairs.inp.to_vec();
                        let index = Tensor::new(index.as_slice(), &Device::Cpu).unwrap();
                        let sel = a.index_select(&index, 1).unwrap();
                        sel.conv2d(&dw, 1, 1, 1, t).unwrap().conv2d(&pw, 0, 1, 1, 1)
                    }
                    (StageConv::Live(_) | StageConv::Live3x3(_), None) => unreachable!(),
                }
                .unwrap();
            }
            feats = Tensor::cat(&[&feats, &z], 1).unwrap();
        }
        feats
    }

    fn stage(conv: StageConv, cin: usize, cout: usize, act: ActKind) -> BlockStage {
        BlockStage {
            conv,
            cin,
            cout,
            act,
            eps: 1e-5,
            noise: None,
        }
    }

    /// A block of seven layers of every stage kind the networks use (the dense 1x1, the live
    /// 1x1, the 3x3 in one or several groups, the depthwise 3x3 then a 1x1, the live 3x3 with
    /// few and with most kernels dropped, the separable conv of gathered channels with
    /// repeats, dropout before the first conv), odd channel counts and a batch that is not a whole number of
    /// weight-gradient chunks: the features, the running statistics' batch values, and the
    /// gradients of the input and of every gamma, beta and weight match candle's
    /// composition, in training and evaluation, f32 and f64.
    #[test]
    fn matches_the_composition_of_candle_ops() {
        let (c0, growth, width) = (7, 4, 8);
        let relu6 = ActKind::Relu6;
        // Two groups of 4 live inputs each over 11 channels, 3 of which neither reads.
        let kept: Vec<Vec<bool>> = (0..2)
            .map(|g| {
                let mut k = vec![false; c0 + growth];
                (0..4).for_each(|i| k[(g + 2 * i) % (c0 + growth)] = true);
                k
            })
            .collect();
        let mut dsc = stage(
            StageConv::Conv3x3 { groups: 1 },
            c0 + 2 * growth,
            width,
            relu6,
        );
        dsc.noise = Some(DropoutNoise::new(Rng::new(21), 0.8));
        // Live 3x3s: 40% of the kernels in one group (run over the live ones), and 95% in
        // three groups (run dense over the masked weight).
        let mut pick = Rng::new(8);
        let c4 = c0 + 4 * growth;
        let few: Vec<bool> = (0..width * c4)
            .map(|_| pick.uniform(0.0, 1.0) < 0.4)
            .collect();
        let live = LiveKernels::new(c4, width, 1, &few).unwrap();
        assert!(live.skips_dropped(Simd::Avx2) && live.skips_dropped(Simd::Avx512));
        let mut sparse = stage(StageConv::Live3x3(live), c4, width, relu6);
        sparse.noise = Some(DropoutNoise::new(Rng::new(22), 0.9));
        let c5 = c0 + 5 * growth;
        let many: Vec<bool> = (0..6 * c5 / 3).map(|j| j % 20 != 3).collect();
        let live = LiveKernels::new(c5, 6, 3, &many).unwrap();
        assert!(!live.skips_dropped(Simd::Avx2) && !live.skips_dropped(Simd::Avx512));
        let most = StageConv::Live3x3(live);
        // A separable conv over 13 gathered channels, some twice, one never.
        let c6 = c0 + 6 * growth;
        let index: Vec<u32> = (0..13)
            .map(|t| ((t * 7) % (c6 - 1)) as u32)
            .chain([3, 3])
            .collect();
        let pairs = crate::kernels::KernelPairs::gathered(c6, &index).unwrap();
        let mut separable = stage(StageConv::Separable(pairs), c6, width, relu6);
        separable.noise = Some(DropoutNoise::new(Rng::new(23), 0.85));
        let layers: Arc<[BlockLayer]> = vec![
            BlockLayer {
                stages: vec![
                    stage(StageConv::Pointwise { groups: 1 }, c0, width, ActKind::Relu),
                    stage(
                        StageConv::Conv3x3 { groups: 2 },
                        width,
                        growth,
                        ActKind::Relu,
                    ),
                ],
            },
            BlockLayer {
                stages: vec![
                    stage(
                        StageConv::Live(GroupInputs::from_kept(&kept).unwrap()),
                        c0 + growth,
                        width,
                        ActKind::Relu,
                    ),
                    stage(
                        StageConv::Conv3x3 { groups: 4 },
                        width,
                        growth,
                        ActKind::Relu,
                    ),
                ],
            },
            BlockLayer {
                stages: vec![
                    dsc,
                    stage(StageConv::Conv3x3 { groups: 1 }, width, growth, relu6),
                ],
            },
            BlockLayer {
                stages: vec![
                    stage(
                        StageConv::Pointwise { groups: 1 },
                        c0 + 3 * growth,
                        width - 2,
                        relu6,
                    ),
                    stage(
                        StageConv::Conv3x3 { groups: 6 },
                        width - 2,
                        width - 2,
                        relu6,
                    ),
                    stage(StageConv::Pointwise { groups: 1 }, width - 2, growth, relu6),
                ],
            },
            BlockLayer {
                stages: vec![
                    sparse,
                    stage(StageConv::Conv3x3 { groups: 2 }, width, growth, relu6),
                ],
            },
            BlockLayer {
                stages: vec![
                    stage(most, c5, 6, ActKind::Relu),
                    stage(StageConv::Conv3x3 { groups: 2 }, 6, growth, ActKind::Relu),
                ],
            },
            BlockLayer {
                stages: vec![
                    separable,
                    stage(StageConv::Conv3x3 { groups: 1 }, width, growth, relu6),
                ],
            },
        ]
        .into();
        let mut rng = Rng::new(5);
        for (dtype, tol) in [(DType::F32, 2e-3), (DType::F64, 1e-9)] {
            for train in [true, false] {
                let params: Vec<Vec<Params>> = layers
                    .iter()
                    .map(|l| {
                        l.stages
                            .iter()
                            .map(|s| stage_params(&mut rng, s, dtype))
                            .collect()
                    })
                    .collect();
                let x = Var::from_tensor(&random(&mut rng, &[5, c0, 5, 7], dtype)).unwrap();
                let pieces: Vec<Tensor> = params
                    .iter()
                    .flatten()
                    .flat_map(|p| {
                        [
                            p.running.0.clone(),
                            p.running.1.clone(),
                            p.gamma.as_tensor().clone(),
                            p.beta.as_tensor().clone(),
                            p.w.as_tensor().flatten_all().unwrap(),
                        ]
                    })
                    .collect();
                let flat = Tensor::cat(&pieces, 0).unwrap();
                let (ours, stats) = dense_block(&x, &flat, &layers, train).unwrap();
                let theirs = composition(&x, &layers, &params, train);
                let case = format!("{dtype:?} train {train}");
                assert_eq!(ours.dims(), theirs.dims());
                assert!(max_diff(&ours, &theirs) < tol, "forward {case}");
                assert_eq!(stats.is_some(), train);
                if let Some(stats) = stats {
                    assert_eq!(stats.count, 5 * 5 * 7);
                    // The first stage's statistics are those of the layer's input channels.
                    let l3 = ours.narrow(1, 0, c0 + 3 * growth).unwrap();
                    let expect = crate::kernels::bn_stats(&l3).unwrap();
                    let got: Vec<f64> = stats.stages[3][0].iter().map(|s| s.0).collect();
                    let want: Vec<f64> = expect
                        .get(0)
                        .unwrap()
                        .to_dtype(DType::F64)
                        .unwrap()
                        .to_vec1()
                        .unwrap();
                    for (g, w) in got.iter().zip(&want) {
                        assert!((g - w).abs() < tol, "mean {case}");
                    }
                }
                if !train {
                    continue;
                }
                let up = random(&mut rng, ours.dims(), dtype);
                let go = weighted_grads(&ours, &up);
                let gt = weighted_grads(&theirs, &up);
                let dx = max_diff(go.get(&x).unwrap(), gt.get(&x).unwrap());
                assert!(dx < tol * 10.0, "dx {case}: {dx}");
                for (l, ps) in params.iter().enumerate() {
                    for (s, p) in ps.iter().enumerate() {
                        for (v, what) in [(&p.gamma, "dgamma"), (&p.beta, "dbeta"), (&p.w, "dw")] {
                            let d = max_diff(go.get(v).unwrap(), gt.get(v).unwrap());
                            assert!(d < tol * 10.0, "{what} layer {l} stage {s} {case}: {d}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn plans_that_do_not_chain_are_errors() {
        let x = Tensor::zeros((2, 4, 3, 3), DType::F32, &Device::Cpu).unwrap();
        let one = |cin, cout| stage(StageConv::Pointwise { groups: 1 }, cin, cout, ActKind::Relu);
        let run = |layers: Vec<BlockLayer>, len: usize| {
            let p = Tensor::zeros(len, DType::F32, &Device::Cpu).unwrap();
            dense_block(&x, &p, &layers.into(), true).map(|_| ())
        };
        let good = || BlockLayer {
            stages: vec![one(4, 6), one(6, 2)],
        };
        let len = one(4, 6).params_len() + one(6, 2).params_len();
        assert!(run(vec![good()], len).is_ok());
        assert!(run(vec![good()], len + 1).is_err(), "parameter count");
        assert!(
            run(
                vec![BlockLayer {
                    stages: vec![one(4, 2)]
                }],
                one(4, 2).params_len()
            )
            .is_err(),
            "one stage"
        );
        assert!(
            run(
                vec![BlockLayer {
                    stages: vec![one(5, 6), one(6, 2)]
                }],
                len + 4
            )
            .is_err(),
            "input channels"
        );
        assert!(
            run(
                vec![BlockLayer {
                    stages: vec![one(4, 6), one(5, 2)]
                }],
                len
            )
            .is_err(),
            "chain"
        );
    }

    /// Forward + backward time of CondenseNet-86's three dense blocks at batch 64 on all
    /// threads, before any drop (`cargo test --release --lib time_condensenet86_blocks --
    /// --ignored --nocapture`; `ABLATE_SIMD` caps the level).
    #[test]
    #[ignore = "a timing, not a check"]
    fn time_condensenet86_blocks() {
        crate::kernels::simd::set_from_env().unwrap();
        let mut rng = Rng::new(2);
        let n: usize = std::env::var("BATCH")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(64);
        let only: Option<usize> = std::env::var("BLOCK").ok().and_then(|v| v.parse().ok());
        let blocks = [(16, 8, 32), (128, 16, 16), (352, 32, 8)];
        for (b, &(c0, growth, side)) in blocks.iter().enumerate() {
            if only.is_some_and(|o| o != b) {
                continue;
            }
            let width = 4 * growth;
            let layers: Arc<[BlockLayer]> = (0..14)
                .map(|l| {
                    let cin = c0 + l * growth;
                    let keep: Vec<Vec<bool>> = vec![vec![true; cin]; 4];
                    BlockLayer {
                        stages: vec![
                            stage(
                                StageConv::Live(GroupInputs::from_kept(&keep).unwrap()),
                                cin,
                                width,
                                ActKind::Relu,
                            ),
                            stage(
                                StageConv::Conv3x3 { groups: 4 },
                                width,
                                growth,
                                ActKind::Relu,
                            ),
                        ],
                    }
                })
                .collect();
            let params: Vec<Params> = layers
                .iter()
                .flat_map(|l| {
                    l.stages
                        .iter()
                        .map(|s| stage_params(&mut rng, s, DType::F32))
                        .collect::<Vec<_>>()
                })
                .collect();
            let pieces: Vec<Tensor> = params
                .iter()
                .flat_map(|p| {
                    [
                        p.running.0.clone(),
                        p.running.1.clone(),
                        p.gamma.as_tensor().clone(),
                        p.beta.as_tensor().clone(),
                        p.w.as_tensor().flatten_all().unwrap(),
                    ]
                })
                .collect();
            let flat = Var::from_tensor(&Tensor::cat(&pieces, 0).unwrap()).unwrap();
            let x = Var::from_tensor(&random(&mut rng, &[n, c0, side, side], DType::F32)).unwrap();
            let up = random(&mut rng, &[n, c0 + 14 * growth, side, side], DType::F32);
            let run = || {
                let (y, _) = dense_block(&x, &flat, &layers, true).unwrap();
                weighted_grads(&y, &up);
            };
            run();
            let mut times = Vec::new();
            let reps: usize = std::env::var("REPS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(5);
            for _ in 0..reps {
                let t = std::time::Instant::now();
                run();
                times.push(t.elapsed().as_secs_f64());
            }
            times.sort_by(f64::total_cmp);
            let macs: usize = (0..14)
                .map(|l| (c0 + l * growth) * width + width * growth * 9 / 4)
                .sum::<usize>()
                * side
                * side
                * n;
            println!(
                "block {c0}+14x{growth} at {side}x{side}: {:7.1} ms forward + backward (median of 5), {:5.1} GFLOP/s",
                times[reps / 2] * 1e3,
                6.0 * macs as f64 / times[reps / 2] / 1e9
            );
        }
    }
}
