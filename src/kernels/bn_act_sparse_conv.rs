//! A pre-activated 3x3 conv over kernel pairs in one op: `conv(act(bn(x)))` where the conv is
//! [`super::sparse_conv3x3`]'s pair list, with the normalised and activated input never
//! stored.
//!
//! The dense layers' grouped 3x3 (`W -> k` in 4 groups) has tiny GEMMs per group (2 to 8
//! output rows), for which im2col + GEMM spends as long copying as multiplying; as kernel
//! pairs over padded planes it runs about 1.4-1.7x faster (`just criterion kernels`). As in
//! [`super::bn_act_conv`], the activation is made image by image while padding the planes,
//! and the backward recomputes it, gates the input gradient in cache and takes the BN's sums
//! there.
//!
//! Determinism: per-image sums are added in image order, weight gradients over fixed image
//! chunks, each output element in (pair, tap) order.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::bn_act::{coefficients, ActKind, BnAct, Coefficients};
use super::bn_act_conv::{bn_input_grad, gate_image};
use super::conv::{split, CHUNK};
use super::sparse_conv::{
    image_planes, image_weight_grad_any, pad_into, Float, KernelPairs, Plane,
};
use super::{by_dtype, dims4, slice, sum_parts};

const OP: &str = "bn_act_sparse_conv3x3";

/// `sparse_conv3x3(act(gamma * (x - mean) / sqrt(var + eps) + beta), w, pairs)` with
/// `params = [mean; var; gamma; beta]` as for [`super::bn_act`]; `w: [P, 1, 3, 3]`.
#[allow(clippy::too_many_arguments)]
pub fn bn_act_sparse_conv3x3(
    x: &Tensor,
    params: &Tensor,
    w: &Tensor,
    pairs: &KernelPairs,
    eps: f64,
    act: ActKind,
    train: bool,
) -> Result<Tensor> {
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
    if params.dims() != [4, cin] {
        candle_core::bail!("{OP}: params {:?} for {cin} channels", params.dims());
    }
    let op = BnActSparse {
        bn: BnAct { eps, act, train },
        pairs: pairs.clone(),
    };
    x.contiguous()?
        .apply_op3(&params.contiguous()?, &w.contiguous()?, op)
}

#[derive(Debug, Clone)]
struct BnActSparse {
    bn: BnAct,
    pairs: KernelPairs,
}

/// Its backward on `(x, dy, [params, w] flattened)`: `[dx | dparams | dw]`.
struct Grad(BnActSparse);

/// The interiors of one image's padded planes: `act(x * scale + shift)` per channel.
fn pad_activated<T: Float>(x: &[T], k: &[Coefficients], act: ActKind, g: Plane, out: &mut [T]) {
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
}

fn forward<T: Float>(x: &[T], p: &[T], w: &[T], dims: [usize; 4], op: &BnActSparse) -> Vec<T> {
    let [n, cin, h, wd] = dims;
    let g = Plane { h, w: wd };
    let k = coefficients(p, cin, op.bn.eps);
    let (in_len, out_len) = (cin * g.len(), op.pairs.cout * g.len());
    let (parallel, _) = split(n);
    let zero = T::from_f64(0.0);
    let mut y = vec![zero; n * out_len];
    let image = |xpad: &mut Vec<T>, (img, out): (usize, &mut [T])| {
        pad_activated(&x[img * in_len..][..in_len], &k, op.bn.act, g, xpad);
        let pairs = &op.pairs;
        image_planes(out, xpad, &pairs.by_out, &pairs.inp, w, g, false, !parallel);
    };
    let fresh = || vec![zero; cin * g.padded_len()];
    if parallel {
        y.par_chunks_mut(out_len)
            .enumerate()
            .for_each_init(fresh, image);
    } else {
        let mut xpad = fresh();
        y.chunks_mut(out_len)
            .enumerate()
            .for_each(|item| image(&mut xpad, item));
    }
    y
}

/// `[dx | dparams | dw]`.
fn backward<T: Float>(x: &[T], dy: &[T], pw: &[T], dims: [usize; 4], op: &BnActSparse) -> Vec<T> {
    let [n, cin, h, wd] = dims;
    let (g, pairs) = (Plane { h, w: wd }, &op.pairs);
    let (p, w) = pw.split_at(4 * cin);
    let k = coefficients(p, cin, op.bn.eps);
    let (in_len, out_len, plane) = (cin * g.len(), pairs.cout * g.len(), g.len());
    let (chunks, zero, w_len) = (n.div_ceil(CHUNK), T::from_f64(0.0), pairs.len() * 9);

    let mut out = vec![zero; n * in_len + 4 * cin + w_len];
    let (dx, rest) = out.split_at_mut(n * in_len);
    let (dp, dw) = rest.split_at_mut(4 * cin);
    let mut sums = vec![(0f64, 0f64); n * cin];
    let mut dw_parts = vec![zero; chunks * w_len];
    let (parallel, _) = split(chunks);

    // Image by image: recompute the activated padded planes; da = the rotated taps of dy
    // (into dx); dw += the tap correlations; gate da in place, with its per-channel sums.
    dx.par_chunks_mut(CHUNK * in_len)
        .zip(sums.par_chunks_mut(CHUNK * cin))
        .zip(dw_parts.par_chunks_mut(w_len.max(1)))
        .enumerate()
        .for_each(|(chunk, ((dxc, sc), dwc))| {
            let mut xpad = vec![zero; cin * g.padded_len()];
            let mut dypad = vec![zero; pairs.cout * g.padded_len()];
            for (j, img) in (chunk * CHUNK..((chunk + 1) * CHUNK).min(n)).enumerate() {
                let xi = &x[img * in_len..][..in_len];
                pad_activated(xi, &k, op.bn.act, g, &mut xpad);
                pad_into(&dy[img * out_len..][..out_len], g, &mut dypad);
                let dai = &mut dxc[j * in_len..(j + 1) * in_len];
                image_planes(dai, &dypad, &pairs.by_in, &pairs.out, w, g, true, !parallel);
                if !pairs.is_empty() {
                    image_weight_grad_any(dwc, &xpad, &dypad, pairs, g);
                }
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
    if w_len > 0 {
        sum_parts(&dw_parts, dw);
    }
    out
}

fn run_forward<T: Float>(
    (xs, xl): (&CpuStorage, &Layout),
    (ps, pl): (&CpuStorage, &Layout),
    (ws, wl): (&CpuStorage, &Layout),
    op: &BnActSparse,
) -> Result<Vec<T>> {
    Ok(forward(
        slice::<T>(xs, xl, OP)?,
        slice::<T>(ps, pl, OP)?,
        slice::<T>(ws, wl, OP)?,
        dims4(xl, OP)?,
        op,
    ))
}

impl CustomOp3 for BnActSparse {
    fn name(&self) -> &'static str {
        "bn-act-sparse-conv3x3"
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
        Ok((y, Shape::from((n, self.pairs.cout, h, w))))
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

fn run_backward<T: Float>(
    (xs, xl): (&CpuStorage, &Layout),
    (gs, gl): (&CpuStorage, &Layout),
    (ps, pl): (&CpuStorage, &Layout),
    op: &BnActSparse,
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
        "bn-act-sparse-conv3x3-grad"
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
        let len = xl.shape().elem_count() + 4 * self.0.pairs.cin + self.0.pairs.len() * 9;
        let out = by_dtype!(OP, xs, run_backward((xs, xl), (gs, gl), (ps, pl), &self.0));
        Ok((out, Shape::from(len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{max_diff, random};
    use crate::kernels::{bn_act_conv, bn_stats};
    use crate::rng::Rng;
    use candle_core::{DType, Var};

    /// Against `bn_act_conv` (itself tested against candle's ops) on grouped 3x3 convs:
    /// forward and the gradients of x, gamma, beta and w, both activations and modes,
    /// batches smaller and larger than a gradient chunk, f32 and f64.
    #[test]
    fn matches_bn_act_conv_on_grouped_convs() {
        let mut rng = Rng::new(61);
        let cases = [
            // (x dims, cout, groups)
            ([6, 8, 5, 4], 4, 4),
            ([3, 6, 4, 5], 4, 2),
            ([9, 4, 3, 3], 8, 1),
            ([1, 6, 2, 7], 3, 3),
            ([5, 32, 32, 32], 8, 4),
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
                        let pairs = KernelPairs::grouped(c, cout, groups).unwrap();
                        let wp = w.as_tensor().reshape((pairs.len(), 1, 3, 3)).unwrap();
                        let ours =
                            bn_act_sparse_conv3x3(&x, &params, &wp, &pairs, 1e-5, act, train)
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
}
