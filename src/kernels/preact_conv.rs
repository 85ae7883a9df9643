//! A pre-activated convolution in one op: `conv(dropout(act(bn(x))), w)`, with the normalised,
//! activated and dropped input never stored ([`super::stage`]'s loops over a batch).
//!
//! Every conv of the network starts with BN -> activation (-> dropout). Run as separate ops,
//! the activated copy of the input (in a dense block as large as the whole concatenation so
//! far) is kept from the forward pass to the backward pass, and the BN backward reads it and
//! the input gradient once more from memory. Here the activation is recomputed image by image,
//! in cache, where it is needed: in the forward's conv, and in the backward, where the input
//! gradient of the conv, the activation's gate, the BN's per-channel sums and the weight
//! gradient are all made from one image at a time. It is the memory-efficient DenseNet trick
//! (Pleiss et al. 2017), fused.
//!
//! Determinism: per-image sums are added in image order, weight gradients over fixed image
//! chunks ([`CHUNK`]), each chunk in image order and the chunks in order.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::bn_act::{bn_input_grad, coefficients, ActKind, BnAct};
use super::conv::{split, CHUNK};
use super::direct3x3::Direct3x3;
use super::noise::DropoutNoise;
use super::sparse_conv::Plane;
use super::stage::{Keep, PreAct, Prepared, StageConv};
use super::{by_dtype, dims4, filled_with, slice, sum_parts};

const OP: &str = "preact_conv";

/// `conv(dropout(act(gamma * (x - mean) / sqrt(var + eps) + beta)), w)` with the conv `conv`
/// (stride 1, same size out); `params = [mean; var; gamma; beta]` (`[4, C]`, as for
/// [`super::bn_act`]: in training mode the statistics must be `x`'s own, from
/// [`super::bn_stats`]); no dropout where `noise` is `None`.
#[allow(clippy::too_many_arguments)]
pub fn preact_conv(
    x: &Tensor,
    params: &Tensor,
    w: &Tensor,
    conv: StageConv,
    eps: f64,
    act: ActKind,
    train: bool,
    noise: Option<DropoutNoise>,
) -> Result<Tensor> {
    let (_, cin, h, wd) = x.dims4()?;
    let cout = match &conv {
        // The flat `[dw (T x 9) | pw (cout x T)]`.
        StageConv::Separable(pairs) if !pairs.is_empty() => {
            w.elem_count().saturating_sub(9 * pairs.len()) / pairs.len()
        }
        _ => w.dim(0)?,
    };
    if h == 0 || wd == 0 {
        candle_core::bail!("{OP}: empty input {:?}", x.dims());
    }
    if let Err(e) = conv.check(cin, cout, w.elem_count()) {
        candle_core::bail!("{OP}: weight {:?} for input {:?}: {e}", w.dims(), x.dims());
    }
    if params.dims() != [4, cin] {
        candle_core::bail!("{OP}: params {:?} for {cin} channels", params.dims());
    }
    let op = PreActConv {
        bn: BnAct { eps, act, train },
        conv,
        cout,
        // Dropout is the identity in evaluation.
        noise: noise.filter(|_| train),
    };
    x.contiguous()?
        .apply_op3(&params.contiguous()?, &w.contiguous()?, op)
}

#[derive(Debug, Clone)]
struct PreActConv {
    bn: BnAct,
    conv: StageConv,
    cout: usize,
    noise: Option<DropoutNoise>,
}

/// Its backward on `(x, dy, [params, w] flattened)`: `[dx | dparams | dw]`.
struct Grad(PreActConv);

fn forward<T: Direct3x3>(x: &[T], p: &[T], w: &[T], dims: [usize; 4], op: &PreActConv) -> Vec<T> {
    let [n, cin, h, wd] = dims;
    let g = Plane { h, w: wd };
    let k = coefficients(p, cin, op.bn.eps);
    let pre = PreAct {
        k: &k,
        act: op.bn.act,
        keep: Keep::from_noise(op.noise.as_ref()),
    };
    let stage = Prepared::new(&op.conv, w, (cin, op.cout), g, false);
    let (in_len, out_len) = (cin * g.len(), op.cout * g.len());
    let (parallel, par) = split(n);
    let scratch = || stage.scratch(op.noise.is_some());
    // SAFETY: `forward_image` writes all of an image's output.
    unsafe {
        filled_with(n * out_len, out_len, parallel, scratch, |s, img, out| {
            stage.forward_image(&pre, img, &x[img * in_len..][..in_len], out, s, par)
        })
    }
}

/// `[dx | dparams | dw]`.
fn backward<T: Direct3x3>(
    x: &[T],
    dy: &[T],
    pw: &[T],
    dims: [usize; 4],
    op: &PreActConv,
) -> Vec<T> {
    let [n, cin, h, wd] = dims;
    let (g, cout) = (Plane { h, w: wd }, op.cout);
    let (p, w) = pw.split_at(4 * cin);
    let k = coefficients(p, cin, op.bn.eps);
    let pre = PreAct {
        k: &k,
        act: op.bn.act,
        keep: Keep::from_noise(op.noise.as_ref()),
    };
    let stage = Prepared::new(&op.conv, w, (cin, cout), g, true);
    let (in_len, out_len, plane) = (cin * g.len(), cout * g.len(), g.len());
    let (chunks, zero, part_len) = (n.div_ceil(CHUNK), T::from_f64(0.0), stage.grad_len());

    let mut out = vec![zero; n * in_len + 4 * cin + w.len()];
    let (dx, rest) = out.split_at_mut(n * in_len);
    let (dp, dw) = rest.split_at_mut(4 * cin);
    let mut sums = vec![(0f64, 0f64); n * cin];
    let mut parts = vec![zero; chunks * part_len];
    let (_, par) = split(chunks);

    // Image by image: the gradient at the BN's output into dx, with its per-channel sums, and
    // the chunk's weight gradient.
    dx.par_chunks_mut(CHUNK * in_len)
        .zip(sums.par_chunks_mut(CHUNK * cin))
        .zip(parts.par_chunks_mut(part_len))
        .enumerate()
        .for_each_init(
            || stage.scratch(op.noise.is_some()),
            |s, (chunk, ((dxc, sc), part))| {
                for (j, img) in (chunk * CHUNK..((chunk + 1) * CHUNK).min(n)).enumerate() {
                    let io = (
                        &x[img * in_len..][..in_len],
                        &dy[img * out_len..][..out_len],
                    );
                    let dai = &mut dxc[j * in_len..(j + 1) * in_len];
                    let sums = &mut sc[j * cin..(j + 1) * cin];
                    stage.backward_image(&pre, img, io, dai, part, j == 0, sums, s, par, None);
                }
            },
        );
    bn_input_grad(dx, x, &sums, &k, plane, op.bn.train, dp);
    let mut summed = vec![zero; part_len];
    sum_parts(&parts, &mut summed);
    stage.weight_grad(&summed, dw);
    out
}

fn run_forward<T: Direct3x3>(
    (xs, xl): (&CpuStorage, &Layout),
    (ps, pl): (&CpuStorage, &Layout),
    (ws, wl): (&CpuStorage, &Layout),
    op: &PreActConv,
) -> Result<Vec<T>> {
    Ok(forward(
        slice::<T>(xs, xl, OP)?,
        slice::<T>(ps, pl, OP)?,
        slice::<T>(ws, wl, OP)?,
        dims4(xl, OP)?,
        op,
    ))
}

impl CustomOp3 for PreActConv {
    fn name(&self) -> &'static str {
        "preact-conv"
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
    op: &PreActConv,
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
        "preact-conv-grad"
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
        // [dx | dparams | dw]: as long as x and [params, w] together.
        let len = xl.shape().elem_count() + pl.shape().elem_count();
        let out = by_dtype!(OP, xs, run_backward((xs, xl), (gs, gl), (ps, pl), &self.0));
        Ok((out, Shape::from(len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::bn_act::tests::reference;
    use crate::kernels::testing::{max_diff, random, weighted_grads};
    use crate::kernels::{bn_act, bn_stats, GroupInputs};
    use crate::rng::Rng;
    use candle_core::{DType, Device, Var};

    /// `[mean; var; gamma; beta]` for `x`: its own statistics in training mode, random ones
    /// otherwise.
    fn params(rng: &mut Rng, x: &Tensor, gamma: &Var, beta: &Var, train: bool) -> Tensor {
        let (c, dtype) = (x.dim(1).unwrap(), x.dtype());
        let stats = if train {
            bn_stats(x).unwrap()
        } else {
            let m = random(rng, &[c], dtype);
            let v = (random(rng, &[c], dtype).abs().unwrap() + 0.5).unwrap();
            Tensor::stack(&[m, v], 0).unwrap()
        };
        let affine = Tensor::stack(&[gamma.as_tensor(), beta.as_tensor()], 0).unwrap();
        Tensor::cat(&[&stats, &affine], 0).unwrap()
    }

    /// `ours` and `theirs` agree forward, and in the gradients of every var, under a random
    /// upstream gradient.
    fn assert_same(ours: Tensor, theirs: Tensor, vars: &[(&Var, &str)], tol: f64, case: &str) {
        assert!(max_diff(&ours, &theirs) < tol, "forward {case}");
        let mut rng = Rng::new(77);
        let up = random(&mut rng, ours.dims(), ours.dtype());
        let go = weighted_grads(&ours, &up);
        let gt = weighted_grads(&theirs, &up);
        for (v, what) in vars {
            let d = max_diff(go.get(v).unwrap(), gt.get(v).unwrap());
            assert!(d < tol * 20.0, "{what} {case}: {d}");
        }
    }

    /// Against candle's composition (BN, activation, conv2d), forward and the gradients of x,
    /// gamma, beta and w, in both modes, both activations, for 1x1 and 3x3 convs in 1 to 4
    /// groups, batches smaller and larger than a weight-gradient chunk, output counts that
    /// leave partial register blocks and planes 1 to 32 wide, f32 and f64.
    #[test]
    fn matches_candle_forward_and_gradients() {
        let mut rng = Rng::new(12);
        let cases = [
            // (x dims, cout, 3x3, groups)
            ([6, 8, 5, 4], 6, false, 1),
            ([9, 4, 2, 2], 3, false, 1),
            ([5, 12, 3, 5], 8, false, 4),
            ([3, 6, 4, 5], 4, true, 2),
            ([1, 4, 3, 3], 8, true, 4),
            ([6, 8, 5, 4], 4, true, 4),
            ([9, 4, 3, 3], 8, true, 1),
            ([1, 6, 2, 7], 3, true, 3),
            ([5, 32, 32, 32], 8, true, 4),
            ([2, 40, 8, 8], 32, true, 1),
            ([3, 5, 1, 9], 7, true, 1),
            ([2, 12, 16, 16], 10, true, 2),
            ([4, 3, 7, 1], 6, true, 1),
        ];
        for (dtype, tol) in [(DType::F32, 5e-4), (DType::F64, 1e-10)] {
            for (dims, cout, is3x3, groups) in cases {
                for act in [ActKind::Relu, ActKind::Relu6] {
                    for train in [true, false] {
                        let c = dims[1];
                        let k = if is3x3 { 3 } else { 1 };
                        let x = Var::from_tensor(&(random(&mut rng, &dims, dtype) * 3.0).unwrap())
                            .unwrap();
                        let gamma =
                            Var::from_tensor(&(random(&mut rng, &[c], dtype) * 8.0).unwrap())
                                .unwrap();
                        let beta = Var::from_tensor(&random(&mut rng, &[c], dtype)).unwrap();
                        let w =
                            Var::from_tensor(&random(&mut rng, &[cout, c / groups, k, k], dtype))
                                .unwrap();
                        let p = params(&mut rng, &x, &gamma, &beta, train);
                        let conv = if is3x3 {
                            StageConv::Conv3x3 { groups }
                        } else {
                            StageConv::Pointwise { groups }
                        };
                        let ours = preact_conv(&x, &p, &w, conv, 1e-5, act, train, None).unwrap();
                        let theirs = reference(&x, &p, 1e-5, act, train)
                            .conv2d(&w, k / 2, 1, 1, groups)
                            .unwrap();
                        let case =
                            format!("{dims:?} k {k} g {groups} {act:?} train {train} {dtype:?}");
                        let vars = [(&x, "dx"), (&gamma, "dgamma"), (&beta, "dbeta"), (&w, "dw")];
                        assert_same(ours, theirs, &vars, tol, &case);
                    }
                }
            }
        }
    }

    /// The live conv against the masked dense 1x1 (itself tested against candle's ops):
    /// forward and the gradients of x, gamma, beta and w, for several drop counts, odd sizes
    /// and group counts, both activations and modes, f32 and f64. The gradient of every
    /// pruned weight is exactly 0.
    #[test]
    fn live_inputs_match_the_masked_dense_conv() {
        let mut rng = Rng::new(31);
        let cases = [
            // (x dims, cout, groups, condense factor)
            ([5, 12, 3, 5], 8, 4, 4),
            ([2, 9, 4, 4], 6, 3, 3),
            ([7, 10, 2, 3], 4, 2, 5),
            ([3, 8, 5, 5], 8, 1, 4),
        ];
        for (dtype, tol) in [(DType::F32, 5e-4), (DType::F64, 1e-10)] {
            for (dims, cout, groups, c) in cases {
                let cin = dims[1];
                for drops in 1..c {
                    // Each group keeps cin - drops * (cin / c) inputs, chosen at random.
                    let keep = cin - drops * (cin / c);
                    let kept: Vec<Vec<bool>> = (0..groups)
                        .map(|_| {
                            let mut order: Vec<(f64, usize)> =
                                (0..cin).map(|j| (rng.next_f64(), j)).collect();
                            order.sort_by(|a, b| a.0.total_cmp(&b.0));
                            let mut k = vec![false; cin];
                            order.iter().take(keep).for_each(|&(_, j)| k[j] = true);
                            k
                        })
                        .collect();
                    let live = GroupInputs::from_kept(&kept).unwrap();
                    let mask: Vec<f64> = (0..cout)
                        .flat_map(|o| kept[o % groups].iter().map(|&k| f64::from(u8::from(k))))
                        .collect();
                    let mask = Tensor::from_vec(mask, (cout, cin, 1, 1), &Device::Cpu)
                        .unwrap()
                        .to_dtype(dtype)
                        .unwrap();
                    for act in [ActKind::Relu, ActKind::Relu6] {
                        for train in [true, false] {
                            let case = format!(
                                "{dims:?} cout {cout} g {groups} drops {drops} {act:?} train {train} {dtype:?}"
                            );
                            let x =
                                Var::from_tensor(&(random(&mut rng, &dims, dtype) * 3.0).unwrap())
                                    .unwrap();
                            let gamma =
                                Var::from_tensor(&(random(&mut rng, &[cin], dtype) * 8.0).unwrap())
                                    .unwrap();
                            let beta = Var::from_tensor(&random(&mut rng, &[cin], dtype)).unwrap();
                            let w = Var::from_tensor(&random(&mut rng, &[cout, cin, 1, 1], dtype))
                                .unwrap();
                            let p = params(&mut rng, &x, &gamma, &beta, train);
                            let ours = preact_conv(
                                &x,
                                &p,
                                &w,
                                StageConv::Live(live.clone()),
                                1e-5,
                                act,
                                train,
                                None,
                            )
                            .unwrap();
                            let masked = w.as_tensor().mul(&mask).unwrap();
                            let dense = StageConv::Pointwise { groups: 1 };
                            let theirs =
                                preact_conv(&x, &p, &masked, dense, 1e-5, act, train, None)
                                    .unwrap();
                            let up = random(&mut rng, ours.dims(), dtype);
                            let go = weighted_grads(&ours, &up);
                            let vars =
                                [(&x, "dx"), (&gamma, "dgamma"), (&beta, "dbeta"), (&w, "dw")];
                            assert_same(ours, theirs, &vars, tol, &case);
                            let pruned = go
                                .get(&w)
                                .unwrap()
                                .mul(&mask.affine(-1.0, 1.0).unwrap())
                                .unwrap()
                                .abs()
                                .unwrap()
                                .sum_all()
                                .unwrap()
                                .to_dtype(DType::F64)
                                .unwrap()
                                .to_scalar::<f64>()
                                .unwrap();
                            assert_eq!(pruned, 0.0, "pruned weights' gradient {case}");
                        }
                    }
                }
            }
        }
    }

    /// With dropout fused, every conv kind equals the activation times the noise's mask (as
    /// `model::Dropout` draws it) followed by candle's conv, forward and every gradient.
    #[test]
    fn fused_dropout_matches_the_separate_mask() {
        let mut rng = Rng::new(62);
        let kept = vec![vec![true, false, true, true, false, true]; 2];
        let live = GroupInputs::from_kept(&kept).unwrap();
        let cases = [
            ([3, 6, 5, 7], 4, StageConv::Conv3x3 { groups: 2 }),
            ([5, 4, 8, 8], 32, StageConv::Conv3x3 { groups: 1 }),
            ([6, 6, 3, 4], 4, StageConv::Pointwise { groups: 2 }),
            ([5, 6, 4, 3], 4, StageConv::Live(live)),
        ];
        for (dtype, tol) in [(DType::F32, 5e-4), (DType::F64, 1e-10)] {
            for (dims, cout, conv) in cases.clone() {
                let c = dims[1];
                let (k, groups) = match &conv {
                    StageConv::Conv3x3 { groups } => (3, *groups),
                    StageConv::Pointwise { groups } => (1, *groups),
                    StageConv::Live(_) => (1, 1),
                    StageConv::Live3x3(_) | StageConv::Separable(_) => {
                        unreachable!("not among the cases")
                    }
                };
                let x = Var::from_tensor(&(random(&mut rng, &dims, dtype) * 3.0).unwrap()).unwrap();
                let gamma = Var::from_tensor(&random(&mut rng, &[c], dtype)).unwrap();
                let beta = Var::from_tensor(&random(&mut rng, &[c], dtype)).unwrap();
                let w =
                    Var::from_tensor(&random(&mut rng, &[cout, c / groups, k, k], dtype)).unwrap();
                let p = params(&mut rng, &x, &gamma, &beta, true);
                let noise = DropoutNoise::new(Rng::new(9), 0.7);
                let ours = preact_conv(
                    &x,
                    &p,
                    &w,
                    conv.clone(),
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
                let a = (bn_act(&x, &p, 1e-5, ActKind::Relu6, true).unwrap() * mask).unwrap();
                let theirs = match &conv {
                    StageConv::Live(_) => {
                        let m: Vec<f64> = (0..cout)
                            .flat_map(|o| kept[o % 2].iter().map(|&k| f64::from(u8::from(k))))
                            .collect();
                        let m = Tensor::from_vec(m, (cout, c, 1, 1), &Device::Cpu)
                            .unwrap()
                            .to_dtype(dtype)
                            .unwrap();
                        a.conv2d(&w.as_tensor().mul(&m).unwrap(), 0, 1, 1, 1)
                            .unwrap()
                    }
                    _ => a.conv2d(&w, k / 2, 1, 1, groups).unwrap(),
                };
                let case = format!("{dims:?} {conv:?} {dtype:?}");
                let vars = [(&x, "dx"), (&gamma, "dgamma"), (&beta, "dbeta"), (&w, "dw")];
                assert_same(ours, theirs, &vars, tol, &case);
            }
        }
    }

    #[test]
    fn shapes_that_do_not_fit_are_errors() {
        let x = Tensor::zeros((1, 4, 3, 3), DType::F32, &Device::Cpu).unwrap();
        let p = Tensor::zeros((4, 4), DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::zeros((6, 2, 3, 3), DType::F32, &Device::Cpu).unwrap();
        let conv = |groups| StageConv::Conv3x3 { groups };
        let run = |w: &Tensor, c| preact_conv(&x, &p, w, c, 1e-5, ActKind::Relu, true, None);
        assert!(run(&w, conv(2)).is_ok());
        assert!(run(&w, conv(3)).is_err());
        assert!(run(&w, StageConv::Pointwise { groups: 2 }).is_err());
        let bad = Tensor::zeros((4, 4), DType::F32, &Device::Cpu).unwrap();
        let w1 = Tensor::zeros((6, 4, 1, 1), DType::F32, &Device::Cpu).unwrap();
        assert!(preact_conv(
            &x,
            &bad.narrow(0, 0, 3).unwrap(),
            &w1,
            StageConv::Pointwise { groups: 1 },
            1e-5,
            ActKind::Relu,
            true,
            None
        )
        .is_err());
    }
}
