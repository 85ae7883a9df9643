//! Stride-1 grouped 2-D convolution (any odd kernel, any padding, any groups) as im2col +
//! GEMM per image, forward and backward.
//!
//! candle runs grouped convs as one conv per group plus a concat, and on CPU a conv's backward
//! goes through a direct `conv_transpose2d` loop (a 1x1 conv's backward costs 8-15x its
//! forward). Here every image and group is one GEMM on the `gemm` crate candle's matmul uses:
//! `y_g = W_g · cols_g`, `dcols_g = W_gᵀ · dy_g` (then col2im), `dW_g += dy_g · cols_gᵀ`.
//! For a 1x1 kernel without padding `cols` is the input itself: no copy.
//!
//! Images run in parallel; the weight gradient is summed over fixed chunks of images, each
//! in image order, and the chunks are added in order: the same sums in the same order
//! whatever the thread timing.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, WithDType};
use gemm::Parallelism;
use rayon::prelude::*;

use super::{by_dtype, dims4, filled, slice, sum_parts};

/// Images per weight-gradient partial sum.
pub(super) const CHUNK: usize = 4;

/// `y = conv2d(x, w)` with stride 1 and `padding` zero pixels on each side.
/// `x: [N, Cin, H, W]`, `w: [Cout, Cin/groups, k, k]`; `k` odd.
pub fn conv2d(x: &Tensor, w: &Tensor, padding: usize, groups: usize) -> Result<Tensor> {
    let (cout, cin_g, k, k2) = w.dims4()?;
    let cin = x.dim(1)?;
    if k != k2 || k % 2 == 0 || groups == 0 || cin != cin_g * groups || cout % groups != 0 {
        candle_core::bail!(
            "conv2d: weight {:?} does not fit input {:?} with {groups} groups",
            w.dims(),
            x.dims()
        );
    }
    if x.dim(2)? + 2 * padding < k || x.dim(3)? + 2 * padding < k {
        candle_core::bail!("conv2d: input {:?} smaller than the kernel", x.dims());
    }
    let op = Conv { padding, groups };
    x.contiguous()?.apply_op2(&w.contiguous()?, op)
}

/// The forward op; its backward uses [`InputGrad`] and [`WeightGrad`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Conv {
    pub(super) padding: usize,
    pub(super) groups: usize,
}

/// Sizes of one conv.
#[derive(Debug, Clone, Copy)]
pub(super) struct Geometry {
    pub(super) n: usize,
    pub(super) cin: usize,
    pub(super) cout: usize,
    /// Input height and width.
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) k: usize,
    pub(super) padding: usize,
    pub(super) groups: usize,
}

impl Geometry {
    pub(super) fn new(x: [usize; 4], cout: usize, k: usize, op: Conv) -> Self {
        let [n, cin, h, w] = x;
        Self {
            n,
            cin,
            cout,
            h,
            w,
            k,
            padding: op.padding,
            groups: op.groups,
        }
    }
    pub(super) fn oh(&self) -> usize {
        self.h + 2 * self.padding + 1 - self.k
    }
    pub(super) fn ow(&self) -> usize {
        self.w + 2 * self.padding + 1 - self.k
    }
    pub(super) fn in_plane(&self) -> usize {
        self.h * self.w
    }
    pub(super) fn out_plane(&self) -> usize {
        self.oh() * self.ow()
    }
    pub(super) fn cin_g(&self) -> usize {
        self.cin / self.groups
    }
    pub(super) fn cout_g(&self) -> usize {
        self.cout / self.groups
    }
    /// Rows of one group's im2col matrix: `Cin/groups * k * k`.
    pub(super) fn rows(&self) -> usize {
        self.cin_g() * self.k * self.k
    }
    /// Whether `cols` is the input itself (1x1, no padding).
    pub(super) fn identity_cols(&self) -> bool {
        self.k == 1 && self.padding == 0
    }
    pub(super) fn weight_len(&self) -> usize {
        self.cout * self.rows()
    }
}

/// `cols[(c, i, j), (y, x)] = x[c, y + i - p, x + j - p]` (0 outside) for one image's group.
pub(super) fn im2col<T: WithDType>(x: &[T], g: &Geometry, cols: &mut [T]) {
    let (k, p, (h, w), (oh, ow)) = (g.k, g.padding, (g.h, g.w), (g.oh(), g.ow()));
    let zero = T::from_f64(0.0);
    for c in 0..g.cin_g() {
        let plane = &x[c * h * w..(c + 1) * h * w];
        for i in 0..k {
            for j in 0..k {
                let row = &mut cols[((c * k + i) * k + j) * oh * ow..][..oh * ow];
                // Output columns x with input column x + j - p inside [0, w).
                let x0 = p.saturating_sub(j);
                let x1 = (w + p).saturating_sub(j).min(ow);
                for y in 0..oh {
                    let out = &mut row[y * ow..(y + 1) * ow];
                    let sy = y + i;
                    if sy < p || sy >= h + p || x0 >= x1 {
                        out.fill(zero);
                        continue;
                    }
                    let src = &plane[(sy - p) * w..(sy - p + 1) * w];
                    out[..x0].fill(zero);
                    out[x0..x1].copy_from_slice(&src[x0 + j - p..x1 + j - p]);
                    out[x1..].fill(zero);
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: `x[c, y + i - p, x + j - p] += cols[(c, i, j), (y, x)]`,
/// into a zeroed `x`, in (c, i, j, y, x) order.
pub(super) fn col2im<T: WithDType>(cols: &[T], g: &Geometry, x: &mut [T]) {
    let (k, p, (h, w), (oh, ow)) = (g.k, g.padding, (g.h, g.w), (g.oh(), g.ow()));
    for c in 0..g.cin_g() {
        let plane = &mut x[c * h * w..(c + 1) * h * w];
        for i in 0..k {
            for j in 0..k {
                let row = &cols[((c * k + i) * k + j) * oh * ow..][..oh * ow];
                let x0 = p.saturating_sub(j);
                let x1 = (w + p).saturating_sub(j).min(ow);
                for y in 0..oh {
                    let sy = y + i;
                    if sy < p || sy >= h + p || x0 >= x1 {
                        continue;
                    }
                    let dst = &mut plane[(sy - p) * w..(sy - p + 1) * w];
                    for (d, s) in dst[x0 + j - p..x1 + j - p]
                        .iter_mut()
                        .zip(&row[y * ow + x0..y * ow + x1])
                    {
                        *d += *s;
                    }
                }
            }
        }
    }
}

/// A row-major or transposed matrix operand: element (r, c) at `ptr + r * rs + c * cs`.
#[derive(Clone, Copy)]
pub(super) struct Mat<T> {
    ptr: *const T,
    rs: isize,
    cs: isize,
}

impl<T> Mat<T> {
    /// Row-major with `cols` columns.
    pub(super) fn rows(s: &[T], cols: usize) -> Self {
        Self {
            ptr: s.as_ptr(),
            rs: cols as isize,
            cs: 1,
        }
    }
    /// The transpose of a row-major matrix with `cols` columns.
    pub(super) fn transposed(s: &[T], cols: usize) -> Self {
        Self {
            ptr: s.as_ptr(),
            rs: 1,
            cs: cols as isize,
        }
    }
}

/// `dst[m x n] (+)= a[m x k] · b[k x n]`; `dst` row-major with `n` columns.
pub(super) fn matmul<T: WithDType>(
    dst: &mut [T],
    dims: (usize, usize, usize),
    a: Mat<T>,
    b: Mat<T>,
    accumulate: bool,
    par: Parallelism,
) {
    assert!(dst.len() >= dims.0 * dims.1);
    // SAFETY: `dst` holds m x n initialised elements.
    unsafe { gemm_raw(dst.as_mut_ptr(), dims.1, dims, a, b, accumulate, par) }
}

/// `dst[m x n] = a[m x k] · b[k x n]` into uninitialised memory, all of which it writes.
pub(super) fn matmul_into<T: WithDType>(
    dst: &mut [MaybeUninit<T>],
    dims: (usize, usize, usize),
    a: Mat<T>,
    b: Mat<T>,
    par: Parallelism,
) {
    assert!(dst.len() >= dims.0 * dims.1);
    // SAFETY: `dst` holds m x n elements; gemm only writes them when not accumulating.
    unsafe { gemm_raw(dst.as_mut_ptr().cast::<T>(), dims.1, dims, a, b, false, par) }
}

/// # Safety
/// `dst` points to m rows of n elements, `dst_stride` apart (initialised when `accumulate`); `a` and `b` point into
/// live slices holding the (m x k) and (k x n) elements their strides address.
unsafe fn gemm_raw<T: WithDType>(
    dst: *mut T,
    dst_stride: usize,
    (m, n, k): (usize, usize, usize),
    a: Mat<T>,
    b: Mat<T>,
    accumulate: bool,
    par: Parallelism,
) {
    let one = T::from_f64(1.0);
    // SAFETY: as the caller guarantees.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_stride as isize,
            accumulate,
            a.ptr,
            a.cs,
            a.rs,
            b.ptr,
            b.cs,
            b.rs,
            one,
            one,
            false,
            false,
            false,
            par,
        )
    }
}

/// Parallel over images when there are enough of them, else inside each GEMM.
pub(super) fn split(n: usize) -> (bool, Parallelism) {
    let threads = rayon::current_num_threads();
    if n >= threads {
        (true, Parallelism::None)
    } else {
        (false, Parallelism::Rayon(threads))
    }
}

/// Runs `f(image, out_chunk)` over `out.chunks_mut(len)`, in parallel when `parallel`.
fn per_image<T: Send>(
    out: &mut [T],
    len: usize,
    parallel: bool,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    if parallel {
        out.par_chunks_mut(len)
            .enumerate()
            .for_each(|(i, o)| f(i, o));
    } else {
        out.chunks_mut(len).enumerate().for_each(|(i, o)| f(i, o));
    }
}

fn forward<T: WithDType>(x: &[T], w: &[T], g: &Geometry) -> Vec<T> {
    let (in_len, out_len) = (g.cin * g.in_plane(), g.cout * g.out_plane());
    let (rows, cout_g, op) = (g.rows(), g.cout_g(), g.out_plane());
    let (parallel, par) = split(g.n);
    let image = |img: usize, out: &mut [MaybeUninit<T>]| {
        let mut cols = vec![T::from_f64(0.0); if g.identity_cols() { 0 } else { rows * op }];
        for grp in 0..g.groups {
            let xg = &x[img * in_len + grp * g.cin_g() * g.in_plane()..];
            let b = if g.identity_cols() {
                Mat::rows(xg, op)
            } else {
                im2col(xg, g, &mut cols);
                Mat::rows(&cols, op)
            };
            let a = Mat::rows(&w[grp * cout_g * rows..], rows);
            let dst = &mut out[grp * cout_g * op..(grp + 1) * cout_g * op];
            matmul_into(dst, (cout_g, op, rows), a, b, par);
        }
    };
    // SAFETY: the groups' GEMMs write all of an image's output.
    unsafe { filled(g.n * out_len, out_len, parallel, image) }
}

fn input_grad<T: WithDType>(dy: &[T], w: &[T], g: &Geometry) -> Vec<T> {
    let (in_len, out_len) = (g.cin * g.in_plane(), g.cout * g.out_plane());
    let (rows, cout_g, op) = (g.rows(), g.cout_g(), g.out_plane());
    let group_in = g.cin_g() * g.in_plane();
    let mut dx = vec![T::from_f64(0.0); g.n * in_len];
    let (parallel, par) = split(g.n);
    per_image(&mut dx, in_len, parallel, |img, out| {
        let mut dcols = vec![T::from_f64(0.0); if g.identity_cols() { 0 } else { rows * op }];
        for grp in 0..g.groups {
            let a = Mat::transposed(&w[grp * cout_g * rows..], rows);
            let b = Mat::rows(&dy[img * out_len + grp * cout_g * op..], op);
            let dst = &mut out[grp * group_in..(grp + 1) * group_in];
            if g.identity_cols() {
                matmul(dst, (rows, op, cout_g), a, b, false, par);
            } else {
                matmul(&mut dcols, (rows, op, cout_g), a, b, false, par);
                col2im(&dcols, g, dst);
            }
        }
    });
    dx
}

fn weight_grad<T: WithDType>(x: &[T], dy: &[T], g: &Geometry) -> Vec<T> {
    let (in_len, out_len) = (g.cin * g.in_plane(), g.cout * g.out_plane());
    let (rows, cout_g, op) = (g.rows(), g.cout_g(), g.out_plane());
    let chunks = g.n.div_ceil(CHUNK);
    let mut partial = vec![T::from_f64(0.0); chunks * g.weight_len()];
    let (parallel, par) = split(chunks);
    per_image(&mut partial, g.weight_len(), parallel, |chunk, acc| {
        let mut cols = vec![T::from_f64(0.0); if g.identity_cols() { 0 } else { rows * op }];
        for img in chunk * CHUNK..((chunk + 1) * CHUNK).min(g.n) {
            for grp in 0..g.groups {
                let xg = &x[img * in_len + grp * g.cin_g() * g.in_plane()..];
                let b = if g.identity_cols() {
                    Mat::transposed(xg, op)
                } else {
                    im2col(xg, g, &mut cols);
                    Mat::transposed(&cols, op)
                };
                let a = Mat::rows(&dy[img * out_len + grp * cout_g * op..], op);
                let dst = &mut acc[grp * cout_g * rows..(grp + 1) * cout_g * rows];
                matmul(dst, (cout_g, rows, op), a, b, img % CHUNK != 0, par);
            }
        }
    });
    let mut dw = vec![T::from_f64(0.0); g.weight_len()];
    sum_parts(&partial, &mut dw);
    dw
}

impl Conv {
    fn geometry(&self, xl: &Layout, wl: &Layout) -> Result<Geometry> {
        let x = dims4(xl, "conv2d")?;
        let [cout, _, k, _] = dims4(wl, "conv2d")?;
        Ok(Geometry::new(x, cout, k, *self))
    }
}

fn run_forward<T: WithDType>(
    xs: &CpuStorage,
    xl: &Layout,
    ws: &CpuStorage,
    wl: &Layout,
    g: &Geometry,
) -> Result<Vec<T>> {
    Ok(forward(
        slice::<T>(xs, xl, "conv2d")?,
        slice::<T>(ws, wl, "conv2d")?,
        g,
    ))
}

impl CustomOp2 for Conv {
    fn name(&self) -> &'static str {
        "conv2d-gemm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.geometry(xl, wl)?;
        let y = by_dtype!("conv2d", xs, run_forward(xs, xl, ws, wl, &g));
        Ok((y, Shape::from((g.n, g.cout, g.oh(), g.ow()))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = self.geometry(x.layout(), w.layout())?;
        let dy = dy.contiguous()?;
        let dx = dy.apply_op2_no_bwd(w, &InputGrad(g))?;
        let dw = x.apply_op2_no_bwd(&dy, &WeightGrad(g))?;
        Ok((Some(dx), Some(dw)))
    }
}

/// `dx` from `(dy, w)`.
struct InputGrad(Geometry);
/// `dw` from `(x, dy)`.
struct WeightGrad(Geometry);

fn run_input_grad<T: WithDType>(
    gs: &CpuStorage,
    gl: &Layout,
    ws: &CpuStorage,
    wl: &Layout,
    g: &Geometry,
) -> Result<Vec<T>> {
    Ok(input_grad(
        slice::<T>(gs, gl, "conv2d")?,
        slice::<T>(ws, wl, "conv2d")?,
        g,
    ))
}

fn run_weight_grad<T: WithDType>(
    xs: &CpuStorage,
    xl: &Layout,
    gs: &CpuStorage,
    gl: &Layout,
    g: &Geometry,
) -> Result<Vec<T>> {
    Ok(weight_grad(
        slice::<T>(xs, xl, "conv2d")?,
        slice::<T>(gs, gl, "conv2d")?,
        g,
    ))
}

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "conv2d-gemm-input-grad"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let dx = by_dtype!("conv2d", gs, run_input_grad(gs, gl, ws, wl, g));
        Ok((dx, Shape::from((g.n, g.cin, g.h, g.w))))
    }
}

impl CustomOp2 for WeightGrad {
    fn name(&self) -> &'static str {
        "conv2d-gemm-weight-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let dw = by_dtype!("conv2d", xs, run_weight_grad(xs, xl, gs, gl, g));
        Ok((dw, Shape::from((g.cout, g.cin_g(), g.k, g.k))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{max_diff, random};
    use crate::rng::Rng;
    use candle_core::{DType, Var};

    /// Forward and both gradients against candle's conv2d on odd shapes: 1x1 and 3x3, with and
    /// without padding, 1 to 4 groups, batches smaller and larger than the thread count.
    #[test]
    fn matches_candle_conv2d_forward_and_gradients() {
        let mut rng = Rng::new(5);
        let cases = [
            // (x dims, cout, k, padding, groups)
            ([2, 6, 5, 7], 4, 3, 1, 2),
            ([5, 8, 6, 6], 12, 1, 0, 4),
            ([1, 3, 9, 8], 5, 3, 1, 1),
            ([3, 4, 4, 3], 8, 3, 0, 1),
            ([9, 8, 3, 3], 4, 1, 0, 1),
            ([2, 6, 2, 2], 3, 3, 1, 3),
            ([6, 4, 5, 5], 4, 1, 1, 2),
        ];
        for (dtype, tol) in [(DType::F32, 1e-4), (DType::F64, 1e-12)] {
            for (dims, cout, k, padding, groups) in cases {
                let x = Var::from_tensor(&random(&mut rng, &dims, dtype)).unwrap();
                let wshape = [cout, dims[1] / groups, k, k];
                let w = Var::from_tensor(&random(&mut rng, &wshape, dtype)).unwrap();
                let ours = conv2d(&x, &w, padding, groups).unwrap();
                let theirs = x.conv2d(&w, padding, 1, 1, groups).unwrap();
                let case = format!("{dims:?} cout {cout} k {k} p {padding} g {groups} {dtype:?}");
                assert!(max_diff(&ours, &theirs) < tol, "forward {case}");
                let up = random(&mut rng, ours.dims(), dtype);
                let go = (ours * &up).unwrap().sum_all().unwrap().backward().unwrap();
                let gt = (theirs * &up)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                for (v, what) in [(&x, "dx"), (&w, "dw")] {
                    let d = max_diff(go.get(v).unwrap(), gt.get(v).unwrap());
                    assert!(d < tol, "{what} {case}: {d}");
                }
            }
        }
    }

    /// Non-contiguous inputs are made contiguous, not misread.
    #[test]
    fn transposed_input() {
        let mut rng = Rng::new(6);
        let x = random(&mut rng, &[4, 2, 5, 5], DType::F32)
            .transpose(2, 3)
            .unwrap();
        let w = random(&mut rng, &[3, 2, 3, 3], DType::F32);
        let d = max_diff(
            &conv2d(&x, &w, 1, 1).unwrap(),
            &x.conv2d(&w, 1, 1, 1, 1).unwrap(),
        );
        assert!(d < 1e-4);
    }
}
