//! The converted learned-dsc conv in one op: `y = P · depthwise3x3(x[index], K)`, the
//! index-select, the depthwise 3x3 on the `T` selected channels and the pointwise `T -> W`
//! 1x1, forward and backward.
//!
//! Run as three ops, the gathered copy and the depthwise output (each `T ≈ 4 Cin` planes, so
//! each 4x the layer's input) are stored from the forward pass to the backward pass, and
//! every one of them passes through memory several times (candle allocates and adds a
//! gradient for each). Here, image by image, the depthwise output is made in cache from the
//! input planes ([`super::sparse_conv`]'s pair loops, reading `x[index[t]]` directly), fed to
//! the pointwise GEMM and dropped; the backward recomputes it. The stored state of the layer
//! is its input.
//!
//! Determinism: every output element is summed in one fixed order; the weight gradients are
//! summed over fixed chunks of images, each in image order, and the chunks in order.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::conv::{matmul, matmul_into, split, Mat, CHUNK};
use super::sparse_conv::{
    image_planes, image_weight_grad_any, pad_into, Float, KernelPairs, Plane,
};
use super::{by_dtype, dims4, filled, slice, sum_parts};

const OP: &str = "separable_conv";

/// `y = conv1x1(depthwise3x3(index_select(x, index), dw), pw)` with `pairs` the depthwise's
/// gathered pairs `(t, index[t])` ([`KernelPairs::gathered`]); `x: [N, Cin, H, W]`,
/// `dw: [T, 1, 3, 3]`, `pw: [W, T, 1, 1]`, `y: [N, W, H, W]`.
pub fn separable_conv(x: &Tensor, dw: &Tensor, pw: &Tensor, pairs: &KernelPairs) -> Result<Tensor> {
    let (_, cin, h, w) = x.dims4()?;
    let t = pairs.len();
    let gathered = pairs.out.iter().enumerate().all(|(i, &o)| o as usize == i);
    let (cout, pw_in, k1, k2) = pw.dims4()?;
    if !gathered
        || cin != pairs.cin
        || pairs.cout != t
        || h == 0
        || w == 0
        || dw.dims() != [t, 1, 3, 3]
        || (pw_in, k1, k2) != (t, 1, 1)
        || cout == 0
    {
        candle_core::bail!(
            "{OP}: input {:?}, depthwise {:?} and pointwise {:?} do not fit {t} gathered channels of {}",
            x.dims(),
            dw.dims(),
            pw.dims(),
            pairs.cin
        );
    }
    let op = Separable(pairs.clone());
    x.contiguous()?
        .apply_op3(&dw.contiguous()?, &pw.contiguous()?, op)
}

#[derive(Debug, Clone)]
struct Separable(KernelPairs);

/// Its backward on `(x, dy, [dw, pw] flattened)`: `[dx | ddw | dpw]`.
struct Grad(KernelPairs);

/// Sizes of one call.
#[derive(Debug, Clone, Copy)]
struct Dims {
    n: usize,
    cin: usize,
    /// Depthwise channels.
    t: usize,
    cout: usize,
    g: Plane,
}

impl Dims {
    fn in_len(&self) -> usize {
        self.cin * self.g.len()
    }
    fn out_len(&self) -> usize {
        self.cout * self.g.len()
    }
}

/// One image's depthwise output `d` (`[T, h, w]`) from its padded input planes.
fn depthwise<T: Float>(
    d: &mut [T],
    xpad: &[T],
    dw: &[T],
    pairs: &KernelPairs,
    g: Plane,
    parallel: bool,
) {
    image_planes(d, xpad, &pairs.by_out, &pairs.inp, dw, g, false, parallel);
}

fn forward<T: Float>(x: &[T], dw: &[T], pw: &[T], d: &Dims, pairs: &KernelPairs) -> Vec<T> {
    let (plane, zero) = (d.g.len(), T::from_f64(0.0));
    let (parallel, par) = split(d.n);
    let image = |img: usize, out: &mut [std::mem::MaybeUninit<T>]| {
        let mut xpad = vec![zero; d.cin * d.g.padded_len()];
        pad_into(&x[img * d.in_len()..][..d.in_len()], d.g, &mut xpad);
        let mut dwo = vec![zero; d.t * plane];
        depthwise(&mut dwo, &xpad, dw, pairs, d.g, !parallel);
        matmul_into(
            out,
            (d.cout, plane, d.t),
            Mat::rows(pw, d.t),
            Mat::rows(&dwo, plane),
            par,
        );
    };
    // SAFETY: each image's GEMM writes all of its output.
    unsafe { filled(d.n * d.out_len(), d.out_len(), parallel, image) }
}

/// `[dx | ddw | dpw]`.
fn backward<T: Float>(x: &[T], dy: &[T], ws: &[T], d: &Dims, pairs: &KernelPairs) -> Vec<T> {
    let (plane, zero, g) = (d.g.len(), T::from_f64(0.0), d.g);
    let (dw, pw) = ws.split_at(d.t * 9);
    let (dw_len, pw_len) = (d.t * 9, d.cout * d.t);
    let chunks = d.n.div_ceil(CHUNK);
    let mut out = vec![zero; d.n * d.in_len() + dw_len + pw_len];
    let (dx, rest) = out.split_at_mut(d.n * d.in_len());
    let (ddw, dpw) = rest.split_at_mut(dw_len);
    let mut dw_parts = vec![zero; chunks * dw_len];
    let mut pw_parts = vec![zero; chunks * pw_len];
    let (parallel, par) = split(chunks);

    dx.par_chunks_mut(CHUNK * d.in_len())
        .zip(dw_parts.par_chunks_mut(dw_len))
        .zip(pw_parts.par_chunks_mut(pw_len))
        .enumerate()
        .for_each(|(chunk, ((dxc, dwp), pwp))| {
            let mut xpad = vec![zero; d.cin * g.padded_len()];
            let mut ddpad = vec![zero; d.t * g.padded_len()];
            let (mut dwo, mut dd) = (vec![zero; d.t * plane], vec![zero; d.t * plane]);
            for (j, img) in (chunk * CHUNK..((chunk + 1) * CHUNK).min(d.n)).enumerate() {
                pad_into(&x[img * d.in_len()..][..d.in_len()], g, &mut xpad);
                depthwise(&mut dwo, &xpad, dw, pairs, g, !parallel);
                let dyi = &dy[img * d.out_len()..][..d.out_len()];
                // dP += dy · dᵀ; dd = Pᵀ · dy.
                let (dy_m, d_t) = (Mat::rows(dyi, plane), Mat::transposed(&dwo, plane));
                matmul(pwp, (d.cout, d.t, plane), dy_m, d_t, j != 0, par);
                let pw_t = Mat::transposed(pw, d.t);
                matmul(&mut dd, (d.t, plane, d.cout), pw_t, dy_m, false, par);
                pad_into(&dd, g, &mut ddpad);
                // dx[c] = the rotated taps of dd[t] over c's depthwise channels; dK.
                let dxi = &mut dxc[j * d.in_len()..(j + 1) * d.in_len()];
                image_planes(
                    dxi,
                    &ddpad,
                    &pairs.by_in,
                    &pairs.out,
                    dw,
                    g,
                    true,
                    !parallel,
                );
                image_weight_grad_any(dwp, &xpad, &ddpad, pairs, g);
            }
        });
    sum_parts(&dw_parts, ddw);
    sum_parts(&pw_parts, dpw);
    out
}

fn dims(xl: &Layout, cout: usize, pairs: &KernelPairs) -> Result<Dims> {
    let [n, cin, h, w] = dims4(xl, OP)?;
    Ok(Dims {
        n,
        cin,
        t: pairs.len(),
        cout,
        g: Plane { h, w },
    })
}

fn run_forward<T: Float>(
    (xs, xl): (&CpuStorage, &Layout),
    (ks, kl): (&CpuStorage, &Layout),
    (ps, pl): (&CpuStorage, &Layout),
    d: &Dims,
    pairs: &KernelPairs,
) -> Result<Vec<T>> {
    Ok(forward(
        slice::<T>(xs, xl, OP)?,
        slice::<T>(ks, kl, OP)?,
        slice::<T>(ps, pl, OP)?,
        d,
        pairs,
    ))
}

impl CustomOp3 for Separable {
    fn name(&self) -> &'static str {
        "separable-conv"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = dims(xl, dims4(pl, OP)?[0], &self.0)?;
        let y = by_dtype!(
            OP,
            xs,
            run_forward((xs, xl), (ks, kl), (ps, pl), &d, &self.0)
        );
        Ok((y, Shape::from((d.n, d.cout, d.g.h, d.g.w))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        dw: &Tensor,
        pw: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        super::packed_grads3(x, dw, pw, dy, &Grad(self.0.clone()))
    }
}

fn run_backward<T: Float>(
    (xs, xl): (&CpuStorage, &Layout),
    (gs, gl): (&CpuStorage, &Layout),
    (ws, wl): (&CpuStorage, &Layout),
    d: &Dims,
    pairs: &KernelPairs,
) -> Result<Vec<T>> {
    Ok(backward(
        slice::<T>(xs, xl, OP)?,
        slice::<T>(gs, gl, OP)?,
        slice::<T>(ws, wl, OP)?,
        d,
        pairs,
    ))
}

impl CustomOp3 for Grad {
    fn name(&self) -> &'static str {
        "separable-conv-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = dims(xl, dims4(gl, OP)?[1], &self.0)?;
        let len = d.n * d.in_len() + d.t * 9 + d.cout * d.t;
        let out = by_dtype!(
            OP,
            xs,
            run_backward((xs, xl), (gs, gl), (ws, wl), &d, &self.0)
        );
        Ok((out, Shape::from(len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{max_diff, random};
    use crate::kernels::{conv2d, depthwise3x3, select_channels, ChannelIndex};
    use crate::rng::Rng;
    use candle_core::{DType, Device, Var};

    /// Against index-select, depthwise and pointwise as three ops: forward and the gradients
    /// of x and both weights, with repeated and unused channels, batches smaller and larger
    /// than a gradient chunk, f32 and f64.
    #[test]
    fn matches_select_depthwise_pointwise() {
        let mut rng = Rng::new(51);
        for (dtype, tol) in [(DType::F32, 1e-4), (DType::F64, 1e-11)] {
            for (dims, index, cout) in [
                ([3, 4, 5, 6], vec![3u32, 0, 0, 2, 3, 3, 1], 5),
                ([9, 6, 4, 4], vec![5u32, 5, 1, 0, 2], 3),
                ([1, 2, 7, 3], vec![1u32, 1, 1], 4),
                (
                    [5, 12, 32, 32],
                    (0..48).map(|i| (i * 5 % 12) as u32).collect(),
                    24,
                ),
                (
                    [5, 16, 32, 32],
                    (0..64).map(|i| (i * 5 % 16) as u32).collect(),
                    32,
                ),
            ] {
                let t = index.len();
                let x = Var::from_tensor(&random(&mut rng, &dims, dtype)).unwrap();
                let dw = Var::from_tensor(&random(&mut rng, &[t, 1, 3, 3], dtype)).unwrap();
                let pw = Var::from_tensor(&random(&mut rng, &[cout, t, 1, 1], dtype)).unwrap();
                let pairs = KernelPairs::gathered(dims[1], &index).unwrap();
                let ours = separable_conv(&x, &dw, &pw, &pairs).unwrap();
                let sel = select_channels(&x, &ChannelIndex::new(index.clone())).unwrap();
                let theirs = conv2d(&depthwise3x3(&sel, &dw).unwrap(), &pw, 0, 1).unwrap();
                let case = format!("{dims:?} {index:?} {dtype:?}");
                assert!(max_diff(&ours, &theirs) < tol, "forward {case}");
                let up = random(&mut rng, ours.dims(), dtype);
                let go = (ours * &up).unwrap().sum_all().unwrap().backward().unwrap();
                let gt = (theirs * &up)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                for (v, what) in [(&x, "dx"), (&dw, "ddw"), (&pw, "dpw")] {
                    let d = max_diff(go.get(v).unwrap(), gt.get(v).unwrap());
                    assert!(d < tol * 10.0, "{what} {case}: {d}");
                }
            }
        }
    }

    #[test]
    fn pairs_that_are_not_a_gather_are_refused() {
        let x = Tensor::zeros((1, 2, 3, 3), DType::F32, &Device::Cpu).unwrap();
        let dw = Tensor::zeros((2, 1, 3, 3), DType::F32, &Device::Cpu).unwrap();
        let pw = Tensor::zeros((3, 2, 1, 1), DType::F32, &Device::Cpu).unwrap();
        let crossed = KernelPairs::new(2, 2, &[(1, 0), (0, 1)]).unwrap();
        assert!(separable_conv(&x, &dw, &pw, &crossed).is_err());
        let ok = KernelPairs::gathered(2, &[1, 0]).unwrap();
        assert!(separable_conv(&x, &dw, &pw, &ok).is_ok());
    }
}
