//! The dense 3x3 kernels a converted learned-dsc conv's weights make, as one op with its own
//! backward: `w[o, c] = sum over t with index[t] = c of pw[o, t] * dw[t]`, with
//! `dw: [T, 1, 3, 3]` (the depthwise kernels), `pw: [W, T, 1, 1]` (the pointwise weights)
//! and `w: [W, Cin, 3, 3]`. Training runs the converted conv as this dense 3x3 (the same
//! function and gradients as index-select -> depthwise -> pointwise, and on the CPU faster).
//!
//! As candle ops (a `[T, Cin, 9]` spread of `dw`, a matmul, and their backward) this took
//! 4-5% of a converted CondenseNeXt training step in a dozen small parallel ops; here it is
//! `W * T * 9` multiply-adds each way, on one thread. Every element is summed in one fixed
//! order (ascending `t` forward; ascending `o` and tap for the gradients).

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, WithDType};

use super::sparse_conv::KernelPairs;
use super::{by_dtype, slice};

const OP: &str = "separable_kernels";

/// The dense kernels `[W, Cin, 3, 3]` of `dw` (`[T, 1, 3, 3]`) and `pw` (`[W, T, 1, 1]`),
/// with `pairs` the depthwise's gathered pairs `(t, index[t])` ([`KernelPairs::gathered`]).
pub fn separable_kernels(dw: &Tensor, pw: &Tensor, pairs: &KernelPairs) -> Result<Tensor> {
    let (index, cin, taps) = (&pairs.inp, pairs.cin, pairs.len());
    let gathered = pairs.out.iter().enumerate().all(|(i, &o)| o as usize == i);
    let (width, pw_in, k1, k2) = pw.dims4()?;
    if !gathered || dw.dims() != [taps, 1, 3, 3] || pw_in != taps || (k1, k2) != (1, 1) {
        candle_core::bail!(
            "{OP}: dw {:?} and pw {:?} do not fit {taps} kernels over {cin} inputs",
            dw.dims(),
            pw.dims(),
        );
    }
    let op = Kernels {
        index: index.clone(),
        cin,
        width,
    };
    dw.contiguous()?.apply_op2(&pw.contiguous()?, op)
}

#[derive(Clone)]
struct Kernels {
    index: Arc<[u32]>,
    cin: usize,
    width: usize,
}

impl Kernels {
    fn dense<T: WithDType>(&self, dw: &[T], pw: &[T]) -> Result<Vec<T>> {
        let taps = self.index.len();
        let mut w = vec![T::zero(); self.width * self.cin * 9];
        for (o, row) in pw.chunks_exact(taps).enumerate() {
            let out = &mut w[o * self.cin * 9..(o + 1) * self.cin * 9];
            for ((&p, &c), k) in row.iter().zip(self.index.iter()).zip(dw.chunks_exact(9)) {
                let dst = &mut out[c as usize * 9..c as usize * 9 + 9];
                for (d, &v) in dst.iter_mut().zip(k) {
                    *d += p * v;
                }
            }
        }
        Ok(w)
    }

    /// `[ddw | dpw]` for the dense kernels' gradient `g`.
    fn grads<T: WithDType>(&self, dw: &[T], pw: &[T], g: &[T]) -> Result<Vec<T>> {
        let taps = self.index.len();
        let mut out = vec![T::zero(); taps * 9 + self.width * taps];
        let (ddw, dpw) = out.split_at_mut(taps * 9);
        for (o, (row, drow)) in pw
            .chunks_exact(taps)
            .zip(dpw.chunks_exact_mut(taps))
            .enumerate()
        {
            let go = &g[o * self.cin * 9..(o + 1) * self.cin * 9];
            for (t, ((&p, &c), dp)) in row.iter().zip(self.index.iter()).zip(drow).enumerate() {
                let gk = &go[c as usize * 9..c as usize * 9 + 9];
                let (k, dk) = (&dw[t * 9..t * 9 + 9], &mut ddw[t * 9..t * 9 + 9]);
                let mut s = T::zero();
                for ((&gv, &kv), d) in gk.iter().zip(k).zip(dk) {
                    s += gv * kv;
                    *d += p * gv;
                }
                *dp = s;
            }
        }
        Ok(out)
    }
}

fn run_dense<T: WithDType>(
    k: &Kernels,
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
) -> Result<Vec<T>> {
    k.dense(slice::<T>(s1, l1, OP)?, slice::<T>(s2, l2, OP)?)
}

impl CustomOp2 for Kernels {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let w = by_dtype!(OP, s1, run_dense(self, (s1, l1), (s2, l2)));
        Ok((w, Shape::from((self.width, self.cin, 3, 3))))
    }

    fn bwd(
        &self,
        dw: &Tensor,
        pw: &Tensor,
        _w: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let packed = dw.apply_op3_no_bwd(pw, &g.contiguous()?, &Grads(self.clone()))?;
        let n = dw.elem_count();
        let ddw = packed.narrow(0, 0, n)?.reshape(dw.shape())?;
        let dpw = packed.narrow(0, n, pw.elem_count())?.reshape(pw.shape())?;
        Ok((Some(ddw), Some(dpw)))
    }
}

/// The backward of [`Kernels`]: `(dw, pw, g) -> [ddw | dpw]`, flat.
struct Grads(Kernels);

fn run_grads<T: WithDType>(
    k: &Kernels,
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    (s3, l3): (&CpuStorage, &Layout),
) -> Result<Vec<T>> {
    k.grads(
        slice::<T>(s1, l1, OP)?,
        slice::<T>(s2, l2, OP)?,
        slice::<T>(s3, l3, OP)?,
    )
}

impl CustomOp3 for Grads {
    fn name(&self) -> &'static str {
        "separable_kernels-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let k = &self.0;
        let out = by_dtype!(OP, s1, run_grads(k, (s1, l1), (s2, l2), (s3, l3)));
        let len = k.index.len() * (9 + k.width);
        Ok((out, Shape::from(len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{max_diff, random, weighted_grads};
    use crate::rng::Rng;
    use candle_core::{DType, Device, Var};

    /// candle's composition: a one-hot spread of `dw` over the inputs, then a matmul.
    fn composed(dw: &Tensor, pw: &Tensor, index: &[u32], cin: usize) -> Tensor {
        let taps = index.len();
        let mut spread = vec![0f64; taps * cin];
        for (t, &c) in index.iter().enumerate() {
            spread[t * cin + c as usize] = 1.0;
        }
        let spread = Tensor::from_vec(spread, (taps, cin, 1), &Device::Cpu)
            .unwrap()
            .to_dtype(dw.dtype())
            .unwrap();
        let per_input = spread
            .broadcast_mul(&dw.reshape((taps, 1, 9)).unwrap())
            .unwrap()
            .reshape((taps, cin * 9))
            .unwrap();
        let width = pw.dim(0).unwrap();
        pw.reshape((width, taps))
            .unwrap()
            .matmul(&per_input)
            .unwrap()
            .reshape((width, cin, 3, 3))
            .unwrap()
    }

    /// Forward and both gradients against the composition, with inputs read by several
    /// kernels, inputs read by none, and odd sizes; f32 and f64.
    #[test]
    fn matches_the_spread_and_matmul() {
        let mut rng = Rng::new(31);
        for dtype in [DType::F32, DType::F64] {
            for (cin, width, index) in [
                (5usize, 3usize, vec![4u32, 0, 0, 2, 4, 4, 1]),
                (7, 1, vec![6u32]),
                (3, 4, vec![0u32, 1, 2, 2, 1]),
            ] {
                let taps = index.len();
                let dw = Var::from_tensor(&random(&mut rng, &[taps, 1, 3, 3], dtype)).unwrap();
                let pw = Var::from_tensor(&random(&mut rng, &[width, taps, 1, 1], dtype)).unwrap();
                let pairs = KernelPairs::gathered(cin, &index).unwrap();
                let ours = separable_kernels(&dw, &pw, &pairs).unwrap();
                let theirs = composed(&dw, &pw, &index, cin);
                let tol = if dtype == DType::F32 { 1e-6 } else { 1e-14 };
                assert!(max_diff(&ours, &theirs) < tol, "{cin} {width} {dtype:?}");
                let up = random(&mut rng, ours.dims(), dtype);
                let go = weighted_grads(&ours, &up);
                let gt = weighted_grads(&theirs, &up);
                for v in [&dw, &pw] {
                    let d = max_diff(go.get(v).unwrap(), gt.get(v).unwrap());
                    assert!(d < tol * 10.0, "{cin} {width} {dtype:?}: {d}");
                }
            }
        }
    }

    #[test]
    fn shapes_that_do_not_fit_are_errors() {
        let mut rng = Rng::new(2);
        let dw = random(&mut rng, &[3, 1, 3, 3], DType::F32);
        let pw = random(&mut rng, &[2, 3, 1, 1], DType::F32);
        let pairs = KernelPairs::gathered(4, &[0, 1]).unwrap();
        assert!(separable_kernels(&dw, &pw, &pairs).is_err());
        let pairs = KernelPairs::gathered(4, &[0, 1, 2, 3]).unwrap();
        assert!(separable_kernels(&dw, &pw, &pairs).is_err());
    }
}
