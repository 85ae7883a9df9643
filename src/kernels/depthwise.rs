//! Depthwise 3x3 convolution (stride 1, padding 1, one filter per channel) as a candle custom
//! op with its own backward, on CPU.
//!
//! candle runs `groups = channels` as one conv per channel plus a concat, and its backward
//! builds a full-size zero-padded gradient copy per channel: for the converted learned-dsc
//! layers of CondenseNeXt that is seconds per step and tens of GB. These direct loops are
//! parallel over (image, channel) planes, and every output element is summed in one fixed
//! order, so results do not depend on thread timing.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::{by_dtype, dims4, slice};

const OP: &str = "depthwise3x3";

/// `y[n,c] = sum_{i,j} w[c,i,j] * x[n,c, . + i - 1, . + j - 1]` with zero padding.
/// `x: [N, C, H, W]`, `w: [C, 1, 3, 3]`; CPU tensors use the kernel, others candle's conv.
pub fn depthwise3x3(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let c = x.dim(1)?;
    if !super::cpu_kernel_fits(&x.device().location(), x.dtype()) {
        return x.conv2d(w, 1, 1, 1, c);
    }
    if w.dims() != [c, 1, 3, 3] {
        candle_core::bail!("depthwise3x3: weight {:?} for {c} channels", w.dims());
    }
    x.contiguous()?.apply_op2(&w.contiguous()?, Forward)
}

/// One output plane: `out = conv(plane, k)`, 3x3, zero padding 1. `flip` uses the kernel
/// rotated by 180 degrees (the input gradient). Each output element sums its taps in (i, j)
/// order; the inner loops are whole-row multiply-adds, which vectorise.
fn conv_plane<T: WithDType>(plane: &[T], k: &[T], h: usize, w: usize, flip: bool, out: &mut [T]) {
    let tap = |i: usize, j: usize| {
        if flip {
            k[8 - (i * 3 + j)]
        } else {
            k[i * 3 + j]
        }
    };
    out.fill(T::from_f64(0.0));
    for y in 0..h {
        let o = &mut out[y * w..(y + 1) * w];
        for i in 0..3 {
            let sy = y + i;
            if sy < 1 || sy > h {
                continue;
            }
            let row = &plane[(sy - 1) * w..sy * w];
            for j in 0..3 {
                // Output columns x with input column x + j - 1 inside [0, w).
                let (x0, x1) = (1usize.saturating_sub(j), (w + 1 - j).min(w));
                if x0 >= x1 {
                    continue;
                }
                let kv = tap(i, j);
                for (d, &v) in o[x0..x1].iter_mut().zip(&row[x0 + j - 1..x1 + j - 1]) {
                    *d += kv * v;
                }
            }
        }
    }
}

/// `sum(a[k] * b[k])` in 8 fixed-order partial sums (so it vectorises), then their sum.
#[inline(always)]
fn dot<T: WithDType>(a: &[T], b: &[T]) -> T {
    const LANES: usize = 8;
    let mut lanes = [T::from_f64(0.0); LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let mut total = T::from_f64(0.0);
    for (&x, &y) in ac.remainder().iter().zip(bc.remainder()) {
        total += x * y;
    }
    for (al, bl) in ac.zip(bc) {
        for l in 0..LANES {
            lanes[l] += al[l] * bl[l];
        }
    }
    for l in lanes {
        total += l;
    }
    total
}

fn conv<T: WithDType>(x: &[T], k: &[T], dims: [usize; 4], flip: bool) -> Vec<T> {
    let [_, c, h, w] = dims;
    let mut out = vec![T::from_f64(0.0); x.len()];
    out.par_chunks_mut(h * w)
        .zip(x.par_chunks(h * w))
        .enumerate()
        .for_each(|(p, (o, plane))| {
            let ch = p % c;
            conv_plane(plane, &k[ch * 9..ch * 9 + 9], h, w, flip, o);
        });
    out
}

/// `dw[c,i,j] = sum_{n,y,x} dy[n,c,y,x] * x[n,c,y+i-1,x+j-1]`, per channel in (n, y, x) order.
fn weight_grad<T: WithDType>(x: &[T], dy: &[T], dims: [usize; 4]) -> Vec<T> {
    let [n, c, h, w] = dims;
    let plane = h * w;
    (0..c)
        .into_par_iter()
        .flat_map_iter(|ch| {
            let mut acc = [T::from_f64(0.0); 9];
            for img in 0..n {
                let base = (img * c + ch) * plane;
                let (xp, gp) = (&x[base..base + plane], &dy[base..base + plane]);
                for (t, a) in acc.iter_mut().enumerate() {
                    let (i, j) = (t / 3, t % 3);
                    // Output rows y with input row y + i - 1 inside [0, h).
                    let ys = (1usize.saturating_sub(i))..(h + 1 - i).min(h);
                    let xs = (1usize.saturating_sub(j))..(w + 1 - j).min(w);
                    for y in ys {
                        let g = &gp[y * w + xs.start..y * w + xs.end];
                        let xr = &xp[(y + i - 1) * w + xs.start + j - 1..][..g.len()];
                        *a += dot(g, xr);
                    }
                }
            }
            acc
        })
        .collect()
}

/// `y = depthwise3x3(x, w)`, with a backward.
struct Forward;
/// `dx`: the same conv of `dy` with each kernel rotated by 180 degrees.
struct InputGrad;
/// `dw` from `x` and `dy`.
struct WeightGrad;

fn forward<T: WithDType>(
    xs: &CpuStorage,
    xl: &Layout,
    ks: &CpuStorage,
    kl: &Layout,
    flip: bool,
) -> Result<Vec<T>> {
    Ok(conv(
        slice::<T>(xs, xl, OP)?,
        slice::<T>(ks, kl, OP)?,
        dims4(xl, OP)?,
        flip,
    ))
}

fn weight_grad_of<T: WithDType>(
    xs: &CpuStorage,
    xl: &Layout,
    gs: &CpuStorage,
    gl: &Layout,
) -> Result<Vec<T>> {
    Ok(weight_grad(
        slice::<T>(xs, xl, OP)?,
        slice::<T>(gs, gl, OP)?,
        dims4(xl, OP)?,
    ))
}

impl CustomOp2 for Forward {
    fn name(&self) -> &'static str {
        "depthwise3x3"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Ok((
            by_dtype!(OP, xs, forward(xs, xl, ks, kl, false)),
            xl.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let dx = dy.apply_op2_no_bwd(w, &InputGrad)?;
        let dw = x.apply_op2_no_bwd(&dy, &WeightGrad)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "depthwise3x3-input-grad"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Ok((
            by_dtype!(OP, gs, forward(gs, gl, ks, kl, true)),
            gl.shape().clone(),
        ))
    }
}

impl CustomOp2 for WeightGrad {
    fn name(&self) -> &'static str {
        "depthwise3x3-weight-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let c = dims4(xl, OP)?[1];
        Ok((
            by_dtype!(OP, xs, weight_grad_of(xs, xl, gs, gl)),
            Shape::from((c, 1, 3, 3)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{max_diff, random};
    use crate::rng::Rng;
    use candle_core::{DType, Var};

    /// Forward and both gradients against candle's grouped conv2d, on odd shapes.
    #[test]
    fn matches_candle_conv2d_forward_and_gradients() {
        let mut rng = Rng::new(11);
        for (dtype, tol) in [(DType::F32, 1e-4), (DType::F64, 1e-12)] {
            for dims in [[2, 5, 7, 6], [3, 8, 1, 4], [1, 3, 9, 9]] {
                let c = dims[1];
                let x = Var::from_tensor(&random(&mut rng, &dims, dtype)).unwrap();
                let w = Var::from_tensor(&random(&mut rng, &[c, 1, 3, 3], dtype)).unwrap();
                // A non-uniform upstream gradient.
                let g = random(&mut rng, &dims, dtype);
                let ours = depthwise3x3(&x, &w).unwrap();
                let theirs = x.conv2d(&w, 1, 1, 1, c).unwrap();
                assert!(max_diff(&ours, &theirs) < tol, "forward {dims:?} {dtype:?}");
                let go = (ours * &g).unwrap().sum_all().unwrap().backward().unwrap();
                let gt = (theirs * &g)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                for v in [&x, &w] {
                    let d = max_diff(go.get(v).unwrap(), gt.get(v).unwrap());
                    assert!(d < tol, "gradient {dims:?} {dtype:?}: {d}");
                }
            }
        }
    }
}
