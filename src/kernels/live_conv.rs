//! A pre-activated learned-group 1x1 convolution that reads only each group's live inputs:
//! `y[o] = sum over j in live[o mod G] of w[o, j] * act(bn(x))[j]`, forward and backward.
//!
//! The masked training form (spec section 3) runs the full `[W, Cin]` 1x1 conv on the
//! weight times its 0/1 mask: after the first drop a quarter (with C = 4) of that work
//! multiplies zeros, after the third three quarters. Here each group gathers its live inputs'
//! activations (recomputed image by image in cache, never stored, as in [`super::bn_act_conv`])
//! into a compact `[L, H*W]` block and runs one GEMM with the group's compact `[W/G, L]`
//! weight, writing its interleaved output rows (`o = g, g + G, ...`) in place. The backward
//! makes the same compact products and scatters them: `da[j] += (W_gᵀ · dy_g)[l]` in group
//! order, `dw` dense with exact zeros where the mask is 0 (the masked form's gradient).
//!
//! Determinism: as in [`super::bn_act_conv`] (per-image sums added in image order, weight
//! gradients over fixed image chunks).

use std::mem::MaybeUninit;
use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::bn_act::{coefficients, ActKind, BnAct};
use super::bn_act_conv::{activate_plane, bn_input_grad, gate_image};
use super::conv::{matmul, matmul_strided_into, split, Mat, CHUNK};
use super::{by_dtype, dims4, filled, slice, sum_parts};

const OP: &str = "bn_act_live_conv";

/// The inputs each group of a learned-group 1x1 conv reads. Output channel `o` belongs to
/// group `o mod groups`; every group reads the same number of inputs (a learned-group layer
/// drops the same count from each), each group's in ascending order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInputs {
    cin: usize,
    /// Inputs per group.
    per_group: usize,
    /// `groups * per_group` input channels, group by group.
    live: Arc<[u32]>,
}

impl GroupInputs {
    /// From each group's live flags over the `Cin` inputs (`kept[g][j]`). Fails unless every
    /// group keeps the same positive number of inputs.
    pub fn from_kept(kept: &[Vec<bool>]) -> Result<Self> {
        let cin = kept.first().map_or(0, Vec::len);
        let live: Vec<Vec<u32>> = kept
            .iter()
            .map(|k| (0..cin).filter(|&j| k[j]).map(|j| j as u32).collect())
            .collect();
        let per_group = live.first().map_or(0, Vec::len);
        if per_group == 0
            || live.iter().any(|l| l.len() != per_group)
            || kept.iter().any(|k| k.len() != cin)
        {
            candle_core::bail!("{OP}: every group must keep the same positive number of inputs");
        }
        Ok(Self {
            cin,
            per_group,
            live: live.concat().into(),
        })
    }

    pub fn groups(&self) -> usize {
        self.live.len() / self.per_group
    }

    /// Group `g`'s live inputs, ascending.
    fn of(&self, g: usize) -> &[u32] {
        &self.live[g * self.per_group..(g + 1) * self.per_group]
    }
}

/// `conv1x1(act(bn(x)), w * mask)` where `mask[o, j] = 1` iff `j` is live in group `o mod G`,
/// computing only the live products; `params = [mean; var; gamma; beta]` as for
/// [`super::bn_act`]. `w: [W, Cin, 1, 1]` is the dense weight (pruned entries are not read;
/// their gradient is exactly 0).
pub fn bn_act_live_conv(
    x: &Tensor,
    params: &Tensor,
    w: &Tensor,
    live: &GroupInputs,
    eps: f64,
    act: ActKind,
    train: bool,
) -> Result<Tensor> {
    let (cout, cin, k, k2) = w.dims4()?;
    let groups = live.groups();
    if (k, k2) != (1, 1) || x.dim(1)? != cin || live.cin != cin || cout % groups != 0 {
        candle_core::bail!(
            "{OP}: weight {:?} does not fit input {:?} with {groups} groups of {} live inputs",
            w.dims(),
            x.dims(),
            live.per_group
        );
    }
    if params.dims() != [4, cin] {
        candle_core::bail!("{OP}: params {:?} for {cin} channels", params.dims());
    }
    let op = LiveConv {
        bn: BnAct { eps, act, train },
        live: live.clone(),
    };
    x.contiguous()?
        .apply_op3(&params.contiguous()?, &w.contiguous()?, op)
}

#[derive(Debug, Clone)]
struct LiveConv {
    bn: BnAct,
    live: GroupInputs,
}

/// The backward of [`LiveConv`] on `(x, dy, [params, w] flattened)`: `dx`, `dparams` and
/// `dw`, packed one after the other.
struct Grad(LiveConv);

/// Sizes of one call.
#[derive(Debug, Clone, Copy)]
struct Dims {
    n: usize,
    cin: usize,
    cout: usize,
    plane: usize,
    groups: usize,
    /// Live inputs per group.
    live: usize,
}

impl Dims {
    fn new(xl: &Layout, wl: &Layout, live: &GroupInputs) -> Result<Self> {
        let [n, cin, h, w] = dims4(xl, OP)?;
        let cout = dims4(wl, OP)?[0];
        Ok(Self {
            n,
            cin,
            cout,
            plane: h * w,
            groups: live.groups(),
            live: live.per_group,
        })
    }

    /// Outputs per group.
    fn cout_g(&self) -> usize {
        self.cout / self.groups
    }
}

/// The compact weight: `[G][W/G, L]`, row `k` of group `g` from dense row `g + k * G`.
fn compact<T: WithDType>(w: &[T], d: &Dims, live: &GroupInputs) -> Vec<T> {
    let mut out = Vec::with_capacity(d.cout * d.live);
    for g in 0..d.groups {
        for k in 0..d.cout_g() {
            let row = &w[(g + k * d.groups) * d.cin..][..d.cin];
            out.extend(live.of(g).iter().map(|&j| row[j as usize]));
        }
    }
    out
}

/// One image's live activations of group `g` into `a` (`[L, plane]`).
fn gather_activations<T: WithDType>(
    xi: &[T],
    k: &[super::bn_act::Coefficients],
    inputs: &[u32],
    plane: usize,
    act: ActKind,
    a: &mut [T],
) {
    for (out, &j) in a.chunks_mut(plane).zip(inputs) {
        let j = j as usize;
        activate_plane(&xi[j * plane..][..plane], &k[j], act, out);
    }
}

fn forward<T: WithDType>(x: &[T], p: &[T], w: &[T], d: &Dims, op: &LiveConv) -> Vec<T> {
    let k = coefficients(p, d.cin, op.bn.eps);
    let wc = compact(w, d, &op.live);
    let (in_len, out_len, plane, cout_g) = (d.cin * d.plane, d.cout * d.plane, d.plane, d.cout_g());
    let (parallel, par) = split(d.n);
    let image = |img: usize, out: &mut [MaybeUninit<T>]| {
        let xi = &x[img * in_len..][..in_len];
        let mut a = vec![T::from_f64(0.0); d.live * plane];
        for g in 0..d.groups {
            gather_activations(xi, &k, op.live.of(g), plane, op.bn.act, &mut a);
            let wa = Mat::rows(&wc[g * cout_g * d.live..], d.live);
            // Group g's outputs are rows g, g + G, ...: `groups * plane` apart.
            matmul_strided_into(
                &mut out[g * plane..],
                d.groups * plane,
                (cout_g, plane, d.live),
                wa,
                Mat::rows(&a, plane),
                par,
            );
        }
    };
    // SAFETY: the groups' GEMMs write every row of an image's output.
    unsafe { filled(d.n * out_len, out_len, parallel, image) }
}

/// `[dx | dparams | dw]`.
fn backward<T: WithDType>(x: &[T], dy: &[T], pw: &[T], d: &Dims, op: &LiveConv) -> Vec<T> {
    let (cin, plane, cout_g, l) = (d.cin, d.plane, d.cout_g(), d.live);
    let (p, w) = pw.split_at(4 * cin);
    let k = coefficients(p, cin, op.bn.eps);
    let wc = compact(w, d, &op.live);
    let (in_len, out_len) = (cin * plane, d.cout * plane);
    let chunks = d.n.div_ceil(CHUNK);
    let zero = T::from_f64(0.0);
    let compact_len = d.cout * l;

    let mut out = vec![zero; d.n * in_len + 4 * cin + d.cout * cin];
    let (dx, rest) = out.split_at_mut(d.n * in_len);
    let (dp, dw) = rest.split_at_mut(4 * cin);
    let mut sums = vec![(0f64, 0f64); d.n * cin];
    let mut dw_parts = vec![zero; chunks * compact_len];
    let (_, par) = split(chunks);

    // Image by image: per group, recompute the live activations a_g; dW_g += dy_g · a_gᵀ;
    // da[live_g] += W_gᵀ · dy_g; then gate da in place into dx, with its per-channel sums.
    dx.par_chunks_mut(CHUNK * in_len)
        .zip(sums.par_chunks_mut(CHUNK * cin))
        .zip(dw_parts.par_chunks_mut(compact_len))
        .enumerate()
        .for_each(|(chunk, ((dxc, sc), dwc))| {
            let (mut a, mut da) = (vec![zero; l * plane], vec![zero; l * plane]);
            for (j, img) in (chunk * CHUNK..((chunk + 1) * CHUNK).min(d.n)).enumerate() {
                let xi = &x[img * in_len..][..in_len];
                let dai = &mut dxc[j * in_len..(j + 1) * in_len];
                for g in 0..d.groups {
                    let inputs = op.live.of(g);
                    gather_activations(xi, &k, inputs, plane, op.bn.act, &mut a);
                    let dyg = Mat::strided(&dy[img * out_len + g * plane..], d.groups * plane);
                    let dst = &mut dwc[g * cout_g * l..(g + 1) * cout_g * l];
                    matmul(
                        dst,
                        (cout_g, l, plane),
                        dyg,
                        Mat::transposed(&a, plane),
                        j != 0,
                        par,
                    );
                    let wt = Mat::transposed(&wc[g * cout_g * l..], l);
                    matmul(&mut da, (l, plane, cout_g), wt, dyg, false, par);
                    for (src, &c) in da.chunks(plane).zip(inputs) {
                        let dst = &mut dai[c as usize * plane..][..plane];
                        for (o, &v) in dst.iter_mut().zip(src) {
                            *o += v;
                        }
                    }
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

    // The compact gradient, summed over the chunks in order, spread over the dense weight.
    let mut dwc = vec![zero; compact_len];
    sum_parts(&dw_parts, &mut dwc);
    for g in 0..d.groups {
        for kk in 0..cout_g {
            let row = &mut dw[(g + kk * d.groups) * cin..][..cin];
            let src = &dwc[(g * cout_g + kk) * l..][..l];
            for (&j, &v) in op.live.of(g).iter().zip(src) {
                row[j as usize] = v;
            }
        }
    }
    out
}

fn run_forward<T: WithDType>(
    (xs, xl): (&CpuStorage, &Layout),
    (ps, pl): (&CpuStorage, &Layout),
    (ws, wl): (&CpuStorage, &Layout),
    d: &Dims,
    op: &LiveConv,
) -> Result<Vec<T>> {
    Ok(forward(
        slice::<T>(xs, xl, OP)?,
        slice::<T>(ps, pl, OP)?,
        slice::<T>(ws, wl, OP)?,
        d,
        op,
    ))
}

impl CustomOp3 for LiveConv {
    fn name(&self) -> &'static str {
        "bn-act-live-conv"
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
        let d = Dims::new(xl, wl, &self.live)?;
        let [_, _, h, w] = dims4(xl, OP)?;
        let y = by_dtype!(OP, xs, run_forward((xs, xl), (ps, pl), (ws, wl), &d, self));
        Ok((y, Shape::from((d.n, d.cout, h, w))))
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

fn run_backward<T: WithDType>(
    (xs, xl): (&CpuStorage, &Layout),
    (gs, gl): (&CpuStorage, &Layout),
    (ps, pl): (&CpuStorage, &Layout),
    d: &Dims,
    op: &LiveConv,
) -> Result<Vec<T>> {
    Ok(backward(
        slice::<T>(xs, xl, OP)?,
        slice::<T>(gs, gl, OP)?,
        slice::<T>(ps, pl, OP)?,
        d,
        op,
    ))
}

impl CustomOp3 for Grad {
    fn name(&self) -> &'static str {
        "bn-act-live-conv-grad"
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
        let [n, cin, h, w] = dims4(xl, OP)?;
        let cout = dims4(gl, OP)?[1];
        let d = Dims {
            n,
            cin,
            cout,
            plane: h * w,
            groups: self.0.live.groups(),
            live: self.0.live.per_group,
        };
        let len = n * cin * d.plane + 4 * cin + cout * cin;
        let out = by_dtype!(
            OP,
            xs,
            run_backward((xs, xl), (gs, gl), (ps, pl), &d, &self.0)
        );
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

    /// Against the masked dense reference (`bn_act_conv` on `w * mask`, itself tested against
    /// candle's ops): forward and the gradients of x, gamma, beta and w, for several drop
    /// counts, odd sizes and group counts, both activations and modes, f32 and f64. The
    /// gradient of every pruned weight is exactly 0.
    #[test]
    fn matches_the_masked_dense_conv() {
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
                    let mask = Tensor::from_vec(mask, (cout, cin, 1, 1), &candle_core::Device::Cpu)
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
                            let stats = if train {
                                bn_stats(&x).unwrap()
                            } else {
                                let m = random(&mut rng, &[cin], dtype);
                                let v =
                                    (random(&mut rng, &[cin], dtype).abs().unwrap() + 0.5).unwrap();
                                Tensor::stack(&[m, v], 0).unwrap()
                            };
                            let affine =
                                Tensor::stack(&[gamma.as_tensor(), beta.as_tensor()], 0).unwrap();
                            let params = Tensor::cat(&[&stats, &affine], 0).unwrap();
                            let ours =
                                bn_act_live_conv(&x, &params, &w, &live, 1e-5, act, train).unwrap();
                            let masked = w.as_tensor().mul(&mask).unwrap();
                            let theirs =
                                bn_act_conv(&x, &params, &masked, 0, 1, 1e-5, act, train).unwrap();
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

    #[test]
    fn unequal_groups_are_refused() {
        let kept = vec![vec![true, false, true], vec![true, false, false]];
        assert!(GroupInputs::from_kept(&kept).is_err());
        assert!(GroupInputs::from_kept(&[vec![false, false]]).is_err());
    }
}
