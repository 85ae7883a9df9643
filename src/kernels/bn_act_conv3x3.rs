//! A pre-activated 3x3 conv (stride 1, padding 1, any groups) in one op:
//! `conv3x3(act(bn(x)), w)` on [`super::direct3x3`]'s register-blocked loops, with the
//! normalised and activated input never stored.
//!
//! As in [`super::bn_act_conv`], the activation is made image by image while padding the
//! planes, and the backward recomputes it, gates the input gradient in cache and takes the
//! BN's sums there. This runs CondenseNeXt's learned-dsc 3x3 (`Cin -> 32`, dense until its
//! drops) and both networks' grouped 3x3 (`W -> k` in 4 groups, 2 to 8 outputs per group),
//! where im2col + GEMM spends as long copying as multiplying.
//!
//! Determinism: per-image sums are added in image order, weight gradients over fixed image
//! chunks, each output element in (input channel, tap) order.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::bn_act::{coefficients, ActKind, BnAct, Coefficients};
use super::bn_act_conv::{bn_input_grad, gate_image};
use super::conv::{split, CHUNK};
use super::noise::DropoutNoise;
use super::direct3x3::{conv_image, scratch_len, weight_grad_image, Direct3x3, Packed3x3};
use super::sparse_conv::{pad_into, Plane};
use super::{by_dtype, dims4, slice, sum_parts};

const OP: &str = "bn_act_conv3x3";

/// `conv2d(dropout(act(gamma * (x - mean) / sqrt(var + eps) + beta)), w)`, 3x3, stride 1,
/// padding 1, `groups`; `params = [mean; var; gamma; beta]` as for [`super::bn_act`];
/// `w: [cout, cin / groups, 3, 3]`; no dropout where `noise` is `None`.
#[allow(clippy::too_many_arguments)]
pub fn bn_act_conv3x3(
    x: &Tensor,
    params: &Tensor,
    w: &Tensor,
    groups: usize,
    eps: f64,
    act: ActKind,
    train: bool,
    noise: Option<DropoutNoise>,
) -> Result<Tensor> {
    let (_, cin, h, wd) = x.dims4()?;
    let (cout, cin_g, k1, k2) = w.dims4()?;
    if h == 0
        || wd == 0
        || (k1, k2) != (3, 3)
        || groups == 0
        || cin != cin_g * groups
        || cout % groups != 0
        || cout == 0
    {
        candle_core::bail!(
            "{OP}: weight {:?} does not fit input {:?} with {groups} groups",
            w.dims(),
            x.dims()
        );
    }
    if params.dims() != [4, cin] {
        candle_core::bail!("{OP}: params {:?} for {cin} channels", params.dims());
    }
    let op = BnActConv3x3 {
        bn: BnAct { eps, act, train },
        cout,
        groups,
        noise,
    };
    x.contiguous()?
        .apply_op3(&params.contiguous()?, &w.contiguous()?, op)
}

#[derive(Debug, Clone)]
struct BnActConv3x3 {
    bn: BnAct,
    cout: usize,
    groups: usize,
    noise: Option<DropoutNoise>,
}

/// Its backward on `(x, dy, [params, w] flattened)`: `[dx | dparams | dw]`.
struct Grad(BnActConv3x3);

/// The interiors of one image's padded planes: `act(x * scale + shift)` per channel, times
/// `keep` (the image's dropout factors) where given.
pub(super) fn pad_activated<T: Direct3x3>(
    x: &[T],
    k: &[Coefficients],
    act: ActKind,
    g: Plane,
    keep: Option<&[T]>,
    out: &mut [T],
) {
    let wp = g.wp();
    for ((dst, src), kc) in out.chunks_mut(g.padded_len()).zip(x.chunks(g.len())).zip(k) {
        let (scale, shift) = (T::from_f64(kc.scale), T::from_f64(kc.shift));
        for (y, row) in src.chunks(g.w).enumerate() {
            let d = &mut dst[(y + 1) * wp + 1..][..g.w];
            match act {
                ActKind::Relu => {
                    for (o, &v) in d.iter_mut().zip(row) {
                        *o = ActKind::Relu.apply(v * scale + shift);
                    }
                }
                ActKind::Relu6 => {
                    for (o, &v) in d.iter_mut().zip(row) {
                        *o = ActKind::Relu6.apply(v * scale + shift);
                    }
                }
            }
        }
    }
    if let Some(keep) = keep {
        for (dst, m) in out.chunks_mut(g.padded_len()).zip(keep.chunks(g.len())) {
            for (y, row) in m.chunks(g.w).enumerate() {
                for (o, &f) in dst[(y + 1) * wp + 1..][..g.w].iter_mut().zip(row) {
                    *o = *o * f;
                }
            }
        }
    }
}

/// One image's dropout factors, into `buf` (`None` without dropout).
fn keep_of<'a, T: Direct3x3>(
    noise: &Option<DropoutNoise>,
    img: usize,
    buf: &'a mut [T],
) -> Option<&'a [T]> {
    noise.as_ref().map(|n| {
        n.fill(img * buf.len(), buf);
        &*buf
    })
}

fn forward<T: Direct3x3>(
    x: &[T],
    p: &[T],
    w: &[T],
    dims: [usize; 4],
    op: &BnActConv3x3,
) -> Vec<T> {
    let [n, cin, h, wd] = dims;
    let g = Plane { h, w: wd };
    let k = coefficients(p, cin, op.bn.eps);
    let packed = Packed3x3::forward(w, op.cout, cin, op.groups);
    let (in_len, out_len) = (cin * g.len(), op.cout * g.len());
    let zero = T::from_f64(0.0);
    let mut y = vec![zero; n * out_len];
    let fresh = || {
        (
            vec![zero; g.padded_buffer_len(cin)],
            vec![zero; scratch_len(g)],
            vec![zero; if op.noise.is_some() { in_len } else { 0 }],
        )
    };
    let image = |(xpad, scratch, keep): &mut (Vec<T>, Vec<T>, Vec<T>),
                 (img, out): (usize, &mut [T])| {
        let keep = keep_of(&op.noise, img, keep);
        pad_activated(&x[img * in_len..][..in_len], &k, op.bn.act, g, keep, xpad);
        conv_image(out, xpad, &packed, g, scratch);
    };
    if split(n).0 {
        y.par_chunks_mut(out_len)
            .enumerate()
            .for_each_init(fresh, image);
    } else {
        let mut buffers = fresh();
        y.chunks_mut(out_len)
            .enumerate()
            .for_each(|item| image(&mut buffers, item));
    }
    y
}

/// `[dx | dparams | dw]`.
fn backward<T: Direct3x3>(
    x: &[T],
    dy: &[T],
    pw: &[T],
    dims: [usize; 4],
    op: &BnActConv3x3,
) -> Vec<T> {
    let [n, cin, h, wd] = dims;
    let (g, cout) = (Plane { h, w: wd }, op.cout);
    let (p, w) = pw.split_at(4 * cin);
    let k = coefficients(p, cin, op.bn.eps);
    let packed = Packed3x3::input_grad(w, cout, cin, op.groups);
    let (in_len, out_len, plane) = (cin * g.len(), cout * g.len(), g.len());
    let w_len = w.len();
    let (chunks, zero) = (n.div_ceil(CHUNK), T::from_f64(0.0));

    let mut out = vec![zero; n * in_len + 4 * cin + w_len];
    let (dx, rest) = out.split_at_mut(n * in_len);
    let (dp, dw) = rest.split_at_mut(4 * cin);
    let mut sums = vec![(0f64, 0f64); n * cin];
    let mut dw_parts = vec![zero; chunks * w_len];

    // Image by image: recompute the activated padded planes; da = the rotated taps of dy
    // (into dx); dw += the tap correlations; gate da in place, with its per-channel sums.
    dx.par_chunks_mut(CHUNK * in_len)
        .zip(sums.par_chunks_mut(CHUNK * cin))
        .zip(dw_parts.par_chunks_mut(w_len))
        .enumerate()
        .for_each(|(chunk, ((dxc, sc), dwc))| {
            let mut xpad = vec![zero; g.padded_buffer_len(cin)];
            let mut dypad = vec![zero; g.padded_buffer_len(cout)];
            let mut scratch = vec![zero; scratch_len(g)];
            let mut keep = vec![zero; if op.noise.is_some() { in_len } else { 0 }];
            for (j, img) in (chunk * CHUNK..((chunk + 1) * CHUNK).min(n)).enumerate() {
                let xi = &x[img * in_len..][..in_len];
                let keep = keep_of(&op.noise, img, &mut keep);
                pad_activated(xi, &k, op.bn.act, g, keep, &mut xpad);
                pad_into(&dy[img * out_len..][..out_len], g, &mut dypad);
                let dai = &mut dxc[j * in_len..(j + 1) * in_len];
                conv_image(dai, &dypad, &packed, g, &mut scratch);
                if let Some(keep) = keep {
                    for (d, &f) in dai.iter_mut().zip(keep) {
                        *d = *d * f;
                    }
                }
                weight_grad_image(dwc, &xpad, &dypad, (cout, cin, op.groups), g);
                gate_image(
                    xi,
                    dai,
                    &k,
                    plane,
                    op.bn.act,
                    &mut sc[j * cin..(j + 1) * cin],
                );
            }
        });
    bn_input_grad(dx, x, &sums, &k, plane, op.bn.train, dp);
    sum_parts(&dw_parts, dw);
    out
}

fn run_forward<T: Direct3x3>(
    (xs, xl): (&CpuStorage, &Layout),
    (ps, pl): (&CpuStorage, &Layout),
    (ws, wl): (&CpuStorage, &Layout),
    op: &BnActConv3x3,
) -> Result<Vec<T>> {
    Ok(forward(
        slice::<T>(xs, xl, OP)?,
        slice::<T>(ps, pl, OP)?,
        slice::<T>(ws, wl, OP)?,
        dims4(xl, OP)?,
        op,
    ))
}

impl CustomOp3 for BnActConv3x3 {
    fn name(&self) -> &'static str {
        "bn-act-conv3x3"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let [n, _, h, w] = dims4(xl, OP)?;
        let y = by_dtype!(OP, xs, run_forward((xs, xl), (ps, pl), (ws, wl), self));
        Ok((y, Shape::from((n, self.cout, h, w))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        super::packed_grads3(x, params, w, dy, &Grad(self.clone()))
    }
}

fn run_backward<T: Direct3x3>(
    (xs, xl): (&CpuStorage, &Layout),
    (gs, gl): (&CpuStorage, &Layout),
    (ps, pl): (&CpuStorage, &Layout),
    op: &BnActConv3x3,
) -> Result<Vec<T>> {
    Ok(backward(
        slice::<T>(xs, xl, OP)?,
        slice::<T>(gs, gl, OP)?,
        slice::<T>(ps, pl, OP)?,
        dims4(xl, OP)?,
        op,
    ))
}

impl CustomOp3 for Grad {
    fn name(&self) -> &'static str {
        "bn-act-conv3x3-grad"
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
        let [_, cin, _, _] = dims4(xl, OP)?;
        let w_len = self.0.cout * (cin / self.0.groups) * 9;
        let len = xl.shape().elem_count() + 4 * cin + w_len;
        let out = by_dtype!(OP, xs, run_backward((xs, xl), (gs, gl), (ps, pl), &self.0));
        Ok((out, Shape::from(len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{max_diff, random};
    use crate::kernels::{bn_act, bn_act_conv, bn_stats};
    use crate::rng::Rng;
    use candle_core::{DType, Device, Var};

    /// Against `bn_act_conv` (im2col + GEMM, itself tested against candle's ops) on 3x3 convs:
    /// forward and the gradients of x, gamma, beta and w, both activations and modes,
    /// batches smaller and larger than a gradient chunk, output counts that leave partial
    /// register blocks, planes 1 to 32 wide, f32 and f64.
    #[test]
    fn matches_bn_act_conv() {
        let mut rng = Rng::new(61);
        let cases = [
            // (x dims, cout, groups)
            ([6, 8, 5, 4], 4, 4),
            ([3, 6, 4, 5], 4, 2),
            ([9, 4, 3, 3], 8, 1),
            ([1, 6, 2, 7], 3, 3),
            ([5, 32, 32, 32], 8, 4),
            ([2, 40, 8, 8], 32, 1),
            ([3, 5, 1, 9], 7, 1),
            ([2, 12, 16, 16], 10, 2),
            ([4, 3, 7, 1], 6, 1),
        ];
        for (dtype, tol) in [(DType::F32, 5e-4), (DType::F64, 1e-10)] {
            for (dims, cout, groups) in cases {
                for act in [ActKind::Relu, ActKind::Relu6] {
                    for train in [true, false] {
                        let c = dims[1];
                        let case = format!("{dims:?} g {groups} {act:?} train {train} {dtype:?}");
                        let x = Var::from_tensor(&(random(&mut rng, &dims, dtype) * 3.0).unwrap())
                            .unwrap();
                        let gamma =
                            Var::from_tensor(&(random(&mut rng, &[c], dtype) * 8.0).unwrap())
                                .unwrap();
                        let beta = Var::from_tensor(&random(&mut rng, &[c], dtype)).unwrap();
                        let w =
                            Var::from_tensor(&random(&mut rng, &[cout, c / groups, 3, 3], dtype))
                                .unwrap();
                        let stats = if train {
                            bn_stats(&x).unwrap()
                        } else {
                            let m = random(&mut rng, &[c], dtype);
                            let v = (random(&mut rng, &[c], dtype).abs().unwrap() + 0.5).unwrap();
                            Tensor::stack(&[m, v], 0).unwrap()
                        };
                        let affine =
                            Tensor::stack(&[gamma.as_tensor(), beta.as_tensor()], 0).unwrap();
                        let params = Tensor::cat(&[&stats, &affine], 0).unwrap();
                        let ours =
                            bn_act_conv3x3(&x, &params, &w, groups, 1e-5, act, train, None)
                                .unwrap();
                        let theirs =
                            bn_act_conv(&x, &params, &w, 1, groups, 1e-5, act, train).unwrap();
                        assert!(max_diff(&ours, &theirs) < tol, "forward {case}");
                        let up = random(&mut rng, ours.dims(), dtype);
                        let go = (ours * &up).unwrap().sum_all().unwrap().backward().unwrap();
                        let gt = (theirs * &up)
                            .unwrap()
                            .sum_all()
                            .unwrap()
                            .backward()
                            .unwrap();
                        for (v, what) in
                            [(&x, "dx"), (&gamma, "dgamma"), (&beta, "dbeta"), (&w, "dw")]
                        {
                            let d = max_diff(go.get(v).unwrap(), gt.get(v).unwrap());
                            assert!(d < tol * 20.0, "{what} {case}: {d}");
                        }
                    }
                }
            }
        }
    }

    /// With dropout fused: the same as the activation times the noise's mask (as
    /// `model::Dropout` draws it) followed by candle's conv, forward and every gradient.
    #[test]
    fn fused_dropout_matches_the_separate_mask() {
        let mut rng = Rng::new(62);
        for (dtype, tol) in [(DType::F32, 5e-4), (DType::F64, 1e-10)] {
            for (dims, cout, groups) in [([3, 6, 5, 7], 4, 2), ([5, 4, 8, 8], 32, 1)] {
                let c = dims[1];
                let x = Var::from_tensor(&(random(&mut rng, &dims, dtype) * 3.0).unwrap()).unwrap();
                let gamma = Var::from_tensor(&random(&mut rng, &[c], dtype)).unwrap();
                let beta = Var::from_tensor(&random(&mut rng, &[c], dtype)).unwrap();
                let w = Var::from_tensor(&random(&mut rng, &[cout, c / groups, 3, 3], dtype))
                    .unwrap();
                let affine = Tensor::stack(&[gamma.as_tensor(), beta.as_tensor()], 0).unwrap();
                let params = Tensor::cat(&[&bn_stats(&x).unwrap(), &affine], 0).unwrap();
                let noise = DropoutNoise::new(Rng::new(9), 0.7);
                let ours = bn_act_conv3x3(
                    &x,
                    &params,
                    &w,
                    groups,
                    1e-5,
                    ActKind::Relu6,
                    true,
                    Some(noise.clone()),
                )
                .unwrap();
                let mut mask = vec![0f64; x.elem_count()];
                noise.fill(0, &mut mask);
                assert!(mask.iter().any(|&m| m == 0.0) && mask.iter().any(|&m| m != 0.0));
                let mask = Tensor::from_vec(mask, &dims[..], &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                let a = bn_act(&x, &params, 1e-5, ActKind::Relu6, true).unwrap();
                let theirs = (a * mask).unwrap().conv2d(&w, 1, 1, 1, groups).unwrap();
                let case = format!("{dims:?} g {groups} {dtype:?}");
                assert!(max_diff(&ours, &theirs) < tol, "forward {case}");
                let up = random(&mut rng, ours.dims(), dtype);
                let go = (ours * &up).unwrap().sum_all().unwrap().backward().unwrap();
                let gt = (theirs * &up).unwrap().sum_all().unwrap().backward().unwrap();
                for (v, what) in [(&x, "dx"), (&gamma, "dgamma"), (&beta, "dbeta"), (&w, "dw")] {
                    let d = max_diff(go.get(v).unwrap(), gt.get(v).unwrap());
                    assert!(d < tol * 20.0, "{what} {case}: {d}");
                }
            }
        }
    }
}
