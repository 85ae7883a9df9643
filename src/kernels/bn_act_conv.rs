//! A pre-activated convolution in one op: `conv(act(bn(x)), w)`, with the normalised and
//! activated input never stored.
//!
//! Every conv of the network starts with BN -> activation. Run as two ops, the activated copy
//! of the input (as large as the input: in a dense block, as large as the whole concatenation
//! so far) is kept from the forward pass to the backward pass, and the BN backward reads it
//! and the input gradient once more from memory. This op recomputes the activation image by
//! image, in cache, where it is needed: in the forward GEMMs, and in the backward pass where
//! the input gradient of the conv, the activation's gate, the BN's per-channel sums and the
//! weight gradient are all made from one image at a time. It is the memory-efficient DenseNet
//! trick (Pleiss et al. 2017), fused.
//!
//! Determinism: per-image partial sums are added in image order, and weight gradients over the
//! fixed image chunks of [`super::conv`], as there.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::bn_act::{coefficients, ActKind, BnAct, Coefficients, LANES};
use super::conv::{col2im, im2col, matmul, matmul_into, split, Conv, Geometry, Mat, CHUNK};
use super::{by_dtype, dims4, filled, slice, sum_parts};

const OP: &str = "bn_act_conv";

/// `conv2d(act(gamma * (x - mean) / sqrt(var + eps) + beta), w)`, stride 1, `padding`,
/// `groups`; `params = [mean; var; gamma; beta]` as for [`super::bn_act`] (in training mode
/// the statistics must be `x`'s own, from [`super::bn_stats`]).
#[allow(clippy::too_many_arguments)]
pub fn bn_act_conv(
    x: &Tensor,
    params: &Tensor,
    w: &Tensor,
    padding: usize,
    groups: usize,
    eps: f64,
    act: ActKind,
    train: bool,
) -> Result<Tensor> {
    let (cout, cin_g, k, k2) = w.dims4()?;
    let cin = x.dim(1)?;
    if k != k2 || k % 2 == 0 || groups == 0 || cin != cin_g * groups || cout % groups != 0 {
        candle_core::bail!(
            "{OP}: weight {:?} does not fit input {:?} with {groups} groups",
            w.dims(),
            x.dims()
        );
    }
    if params.dims() != [4, cin] {
        candle_core::bail!("{OP}: params {:?} for {cin} channels", params.dims());
    }
    let op = BnActConv {
        bn: BnAct { eps, act, train },
        conv: Conv { padding, groups },
    };
    x.contiguous()?
        .apply_op3(&params.contiguous()?, &w.contiguous()?, op)
}

#[derive(Debug, Clone, Copy)]
struct BnActConv {
    bn: BnAct,
    conv: Conv,
}

/// The backward of [`BnActConv`] on `(x, dy, [params, w] flattened)`: `dx`, `dparams` and
/// `dw`, packed one after the other.
struct Grad {
    op: BnActConv,
    g: Geometry,
}

/// `a = act(x * scale + shift)` over one plane.
#[inline(always)]
pub(super) fn activate_plane<T: WithDType>(
    xs: &[T],
    k: &Coefficients,
    act: ActKind,
    out: &mut [T],
) {
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

/// `a = act(x * scale + shift)` for one image's `C` planes.
fn activate<T: WithDType>(x: &[T], k: &[Coefficients], plane: usize, act: ActKind, a: &mut [T]) {
    for (c, (xs, out)) in x.chunks(plane).zip(a.chunks_mut(plane)).enumerate() {
        activate_plane(xs, &k[c], act, out);
    }
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
    for l in 0..LANES {
        total += s[l].to_f64();
        total_x += sx[l].to_f64();
    }
    (total, total_x)
}

fn forward<T: WithDType>(x: &[T], p: &[T], w: &[T], g: &Geometry, bn: BnAct) -> Vec<T> {
    let k = coefficients(p, g.cin, bn.eps);
    let (in_len, out_len) = (g.cin * g.in_plane(), g.cout * g.out_plane());
    let (rows, cout_g, op) = (g.rows(), g.cout_g(), g.out_plane());
    let (parallel, par) = split(g.n);
    let image = |img: usize, out: &mut [std::mem::MaybeUninit<T>]| {
        let mut a = vec![T::from_f64(0.0); in_len];
        activate(
            &x[img * in_len..][..in_len],
            &k,
            g.in_plane(),
            bn.act,
            &mut a,
        );
        let mut cols = vec![T::from_f64(0.0); if g.identity_cols() { 0 } else { rows * op }];
        for grp in 0..g.groups {
            let ag = &a[grp * g.cin_g() * g.in_plane()..];
            let b = if g.identity_cols() {
                Mat::rows(ag, op)
            } else {
                im2col(ag, g, &mut cols);
                Mat::rows(&cols, op)
            };
            let wa = Mat::rows(&w[grp * cout_g * rows..], rows);
            let dst = &mut out[grp * cout_g * op..(grp + 1) * cout_g * op];
            matmul_into(dst, (cout_g, op, rows), wa, b, par);
        }
    };
    // SAFETY: the groups' GEMMs write all of an image's output.
    unsafe { filled(g.n * out_len, out_len, parallel, image) }
}

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
            for (o, &v) in d.iter_mut().zip(xs) {
                *o = k1 * *o + k2 * v + k3;
            }
        });

    for (c, &(s, sxhat)) in totals.iter().enumerate() {
        dp[2 * cin + c] = T::from_f64(sxhat);
        dp[3 * cin + c] = T::from_f64(s);
    }
}

/// `[dx | dparams | dw]`.
fn backward<T: WithDType>(x: &[T], dy: &[T], pw: &[T], g: &Geometry, bn: BnAct) -> Vec<T> {
    let (cin, plane) = (g.cin, g.in_plane());
    let (p, w) = pw.split_at(4 * cin);
    let k = coefficients(p, cin, bn.eps);
    let (in_len, out_len) = (cin * plane, g.cout * g.out_plane());
    let (rows, cout_g, op) = (g.rows(), g.cout_g(), g.out_plane());
    let group_in = g.cin_g() * plane;
    let chunks = g.n.div_ceil(CHUNK);
    let zero = T::from_f64(0.0);

    let mut out = vec![zero; g.n * in_len + 4 * cin + g.weight_len()];
    let (dx, rest) = out.split_at_mut(g.n * in_len);
    let (dp, dw) = rest.split_at_mut(4 * cin);
    let mut sums = vec![(0f64, 0f64); g.n * cin];
    let mut dw_parts = vec![zero; chunks * g.weight_len()];
    let (_, par) = split(chunks);

    // Pass 1, image by image: recompute a; dw += dy · cols(a)ᵀ; da = Wᵀ · dy (col2im), gated
    // in place into dx, with its per-channel sums.
    dx.par_chunks_mut(CHUNK * in_len)
        .zip(sums.par_chunks_mut(CHUNK * cin))
        .zip(dw_parts.par_chunks_mut(g.weight_len()))
        .enumerate()
        .for_each(|(chunk, ((dxc, sc), dwc))| {
            let mut a = vec![zero; in_len];
            let scratch = if g.identity_cols() { 0 } else { rows * op };
            let (mut cols, mut dcols) = (vec![zero; scratch], vec![zero; scratch]);
            for (j, img) in (chunk * CHUNK..((chunk + 1) * CHUNK).min(g.n)).enumerate() {
                let xi = &x[img * in_len..][..in_len];
                let dyi = &dy[img * out_len..][..out_len];
                activate(xi, &k, plane, bn.act, &mut a);
                let dai = &mut dxc[j * in_len..(j + 1) * in_len];
                for grp in 0..g.groups {
                    let ag = &a[grp * group_in..];
                    let dyg = &dyi[grp * cout_g * op..];
                    let b = if g.identity_cols() {
                        Mat::transposed(ag, op)
                    } else {
                        im2col(ag, g, &mut cols);
                        Mat::transposed(&cols, op)
                    };
                    let dst = &mut dwc[grp * cout_g * rows..(grp + 1) * cout_g * rows];
                    matmul(dst, (cout_g, rows, op), Mat::rows(dyg, op), b, j != 0, par);
                    let wt = Mat::transposed(&w[grp * cout_g * rows..], rows);
                    let dag = &mut dai[grp * group_in..(grp + 1) * group_in];
                    if g.identity_cols() {
                        matmul(dag, (rows, op, cout_g), wt, Mat::rows(dyg, op), false, par);
                    } else {
                        matmul(
                            &mut dcols,
                            (rows, op, cout_g),
                            wt,
                            Mat::rows(dyg, op),
                            false,
                            par,
                        );
                        col2im(&dcols, g, dag);
                    }
                }
                gate_image(xi, dai, &k, plane, bn.act, &mut sc[j * cin..(j + 1) * cin]);
            }
        });
    bn_input_grad(dx, x, &sums, &k, plane, bn.train, dp);
    sum_parts(&dw_parts, dw);
    out
}

impl BnActConv {
    fn geometry(&self, xl: &Layout, wl: &Layout) -> Result<Geometry> {
        let x = dims4(xl, OP)?;
        let [cout, _, k, _] = dims4(wl, OP)?;
        Ok(Geometry::new(x, cout, k, self.conv))
    }
}

fn run_forward<T: WithDType>(
    (xs, xl): (&CpuStorage, &Layout),
    (ps, pl): (&CpuStorage, &Layout),
    (ws, wl): (&CpuStorage, &Layout),
    g: &Geometry,
    bn: BnAct,
) -> Result<Vec<T>> {
    Ok(forward(
        slice::<T>(xs, xl, OP)?,
        slice::<T>(ps, pl, OP)?,
        slice::<T>(ws, wl, OP)?,
        g,
        bn,
    ))
}

impl CustomOp3 for BnActConv {
    fn name(&self) -> &'static str {
        "bn-act-conv"
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
        let g = self.geometry(xl, wl)?;
        let y = by_dtype!(
            OP,
            xs,
            run_forward((xs, xl), (ps, pl), (ws, wl), &g, self.bn)
        );
        Ok((y, Shape::from((g.n, g.cout, g.oh(), g.ow()))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = self.geometry(x.layout(), w.layout())?;
        super::packed_grads3(x, params, w, dy, &Grad { op: *self, g })
    }
}

fn run_backward<T: WithDType>(
    (xs, xl): (&CpuStorage, &Layout),
    (gs, gl): (&CpuStorage, &Layout),
    (ps, pl): (&CpuStorage, &Layout),
    g: &Geometry,
    bn: BnAct,
) -> Result<Vec<T>> {
    Ok(backward(
        slice::<T>(xs, xl, OP)?,
        slice::<T>(gs, gl, OP)?,
        slice::<T>(ps, pl, OP)?,
        g,
        bn,
    ))
}

impl CustomOp3 for Grad {
    fn name(&self) -> &'static str {
        "bn-act-conv-grad"
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
        let g = &self.g;
        let len = g.n * g.cin * g.in_plane() + 4 * g.cin + g.weight_len();
        let out = by_dtype!(
            OP,
            xs,
            run_backward((xs, xl), (gs, gl), (ps, pl), g, self.op.bn)
        );
        Ok((out, Shape::from(len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{max_diff, random};
    use crate::kernels::{bn_act, bn_stats, conv2d};
    use crate::rng::Rng;
    use candle_core::{DType, Var};

    /// Against candle's composition (BN, activation, conv2d), forward and the gradients of x,
    /// gamma, beta and w, in both modes, for 1x1 and grouped 3x3 convs, both activations, and
    /// batches smaller and larger than a weight-gradient chunk. Also against this crate's two
    /// separate kernels, which it must match to rounding.
    #[test]
    fn matches_candle_forward_and_gradients() {
        let mut rng = Rng::new(12);
        let cases = [
            // (x dims, cout, k, padding, groups)
            ([6, 8, 5, 4], 6, 1, 0, 1),
            ([3, 6, 4, 5], 4, 3, 1, 2),
            ([1, 4, 3, 3], 8, 3, 1, 4),
            ([9, 4, 2, 2], 3, 1, 0, 1),
        ];
        for (dtype, tol) in [(DType::F32, 5e-4), (DType::F64, 1e-10)] {
            for (dims, cout, k, padding, groups) in cases {
                for act in [ActKind::Relu, ActKind::Relu6] {
                    for train in [true, false] {
                        let c = dims[1];
                        let x = Var::from_tensor(&(random(&mut rng, &dims, dtype) * 3.0).unwrap())
                            .unwrap();
                        let gamma =
                            Var::from_tensor(&(random(&mut rng, &[c], dtype) * 8.0).unwrap())
                                .unwrap();
                        let beta = Var::from_tensor(&random(&mut rng, &[c], dtype)).unwrap();
                        let w =
                            Var::from_tensor(&random(&mut rng, &[cout, c / groups, k, k], dtype))
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
                        let ours = bn_act_conv(&x, &params, &w, padding, groups, 1e-5, act, train)
                            .unwrap();
                        let a = bn_act(&x, &params, 1e-5, act, train).unwrap();
                        let two_ops = conv2d(&a, &w, padding, groups).unwrap();
                        let theirs = {
                            let a = crate::kernels::bn_act::tests::reference(
                                &x, &params, 1e-5, act, train,
                            );
                            a.conv2d(&w, padding, 1, 1, groups).unwrap()
                        };
                        let case =
                            format!("{dims:?} k {k} g {groups} {act:?} train {train} {dtype:?}");
                        assert!(max_diff(&ours, &theirs) < tol, "forward {case}");
                        assert!(
                            max_diff(&ours, &two_ops) < tol / 10.0,
                            "forward vs kernels {case}"
                        );
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
}
