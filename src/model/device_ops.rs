//! The device path: each conv of the family as a fixed handful of candle ops, however many
//! channels or groups it has, with candle's autograd as the backward.
//!
//! candle runs `Tensor::conv2d` with `groups > 1` as one conv per group plus a concat on every
//! backend, and its backward narrows and re-pads the whole gradient per group: a depthwise 3x3
//! over 256 channels is over a thousand launches forward and several thousand backward. Here:
//! - a stride-1 conv is one zero pad, `k * k` shifted views stacked (the unfolded input,
//!   `[N, C, k*k, H, W]`), and one (batched, over groups) matmul against the weight: a GPU
//!   runs it, and its input and weight gradients, as cuBLAS GEMMs;
//! - a depthwise 3x3 is the same nine views, each times its per-channel tap, summed.
//!
//! Every other op of the network (index-select, shuffle, BN, dropout, concat) is already a
//! constant number of candle ops per layer. This path is what non-CPU tensors run;
//! `Kernels::Device` runs it on the CPU too, where the tests compare it with the CPU kernels.

use candle_core::{Result, Tensor, D};

/// `[N, C, k*k, H', W']` with `[n, c, i*k + j, y, x] = xpad[n, c, y + i, x + j]`, where
/// `xpad` is `x` zero-padded by `padding` on each side of both spatial dims and
/// `H' = H + 2*padding - k + 1` (stride 1). The taps run in the weight's `(i, j)` order.
fn unfold(x: &Tensor, kernel: usize, padding: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if h + 2 * padding < kernel || w + 2 * padding < kernel {
        candle_core::bail!("conv: a {kernel}x{kernel} kernel on {h}x{w} planes, padding {padding}");
    }
    let (ho, wo) = (h + 2 * padding + 1 - kernel, w + 2 * padding + 1 - kernel);
    let xpad = x
        .pad_with_zeros(2, padding, padding)?
        .pad_with_zeros(3, padding, padding)?;
    let mut taps = Vec::with_capacity(kernel * kernel);
    for i in 0..kernel {
        let rows = xpad.narrow(2, i, ho)?;
        for j in 0..kernel {
            taps.push(rows.narrow(3, j, wo)?);
        }
    }
    Tensor::stack(&taps, 2)
}

/// `x` convolved with `w` (`[Cout, Cin/groups, k, k]`, no bias), stride 1: the unfolded input
/// times the weight as one matmul per batch of `(image, group)` pairs, all in one call. A 1x1
/// conv needs no unfolding; one group needs no copy of the weight.
pub fn conv2d(x: &Tensor, w: &Tensor, padding: usize, groups: usize) -> Result<Tensor> {
    let (n, cin, _, _) = x.dims4()?;
    let (cout, cin_g, kh, kw) = w.dims4()?;
    if kh != kw || groups == 0 || cin != cin_g * groups || cout % groups != 0 {
        candle_core::bail!(
            "conv: weight {:?} in {groups} groups for {cin} input channels",
            w.dims()
        );
    }
    let cols = if kh == 1 && padding == 0 {
        x.contiguous()?
    } else {
        unfold(x, kh, padding)?
    };
    let (ho, wo) = (cols.dim(D::Minus2)?, cols.dim(D::Minus1)?);
    let depth = cin_g * kh * kw; // one group's inputs times taps: the matmul's inner size
    let y = if groups == 1 {
        // A stride-0 batch over the images: candle (CPU and cuBLAS) reads the weight once.
        let cols = cols.reshape((n, depth, ho * wo))?;
        w.reshape((cout, depth))?
            .broadcast_as((n, cout, depth))?
            .matmul(&cols)?
    } else {
        let cols = cols.reshape((n, groups, depth, ho * wo))?;
        w.reshape((1, groups, cout / groups, depth))?
            .broadcast_as((n, groups, cout / groups, depth))?
            .contiguous()?
            .matmul(&cols)?
    };
    y.reshape((n, cout, ho, wo))
}

/// Depthwise 3x3 (stride 1, padding 1, `w: [C, 1, 3, 3]`): the nine shifted views of the
/// zero-padded input, each times its per-channel tap, summed.
pub fn depthwise3x3(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let c = x.dim(1)?;
    if w.dims() != [c, 1, 3, 3] {
        candle_core::bail!("depthwise3x3: weight {:?} for {c} channels", w.dims());
    }
    let taps = w.reshape((1, c, 9, 1, 1))?;
    unfold(x, 3, 1)?.broadcast_mul(&taps)?.sum(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{max_diff, random, weighted_grads};
    use crate::rng::Rng;
    use candle_core::{DType, Var};

    /// `(y, dx, dw)`.
    type Grads = (Tensor, Tensor, Tensor);

    /// `(y, dx, dw)` of `f(x, w)` under the upstream gradient `up`.
    fn with_grads(
        x: &Tensor,
        w: &Tensor,
        up: &Tensor,
        f: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
    ) -> Grads {
        let (xv, wv) = (Var::from_tensor(x).unwrap(), Var::from_tensor(w).unwrap());
        let y = f(xv.as_tensor(), wv.as_tensor()).unwrap();
        let g = weighted_grads(&y, up);
        let dx = g.get(xv.as_tensor()).unwrap().clone();
        let dw = g.get(wv.as_tensor()).unwrap().clone();
        (y, dx, dw)
    }

    /// The outputs and both gradients of two [`with_grads`] agree within `tol`.
    fn assert_close(ours: &Grads, theirs: &Grads, tol: f64, case: &str) {
        assert!(max_diff(&ours.0, &theirs.0) < tol, "{case}: output");
        assert!(max_diff(&ours.1, &theirs.1) < tol, "{case}: input gradient");
        assert!(
            max_diff(&ours.2, &theirs.2) < tol,
            "{case}: weight gradient"
        );
    }

    /// The autograd nodes between `x`, `w` and the sum of `f(x, w)`: one per op a device runs
    /// forward, and the backward runs a fixed few per node.
    fn graph_ops(x: &Tensor, w: &Tensor, f: impl Fn(&Tensor, &Tensor) -> Result<Tensor>) -> usize {
        let (xv, wv) = (Var::from_tensor(x).unwrap(), Var::from_tensor(w).unwrap());
        let loss = f(xv.as_tensor(), wv.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap();
        loss.sorted_nodes().len()
    }

    #[test]
    fn convs_match_candles_conv2d_forward_and_backward() {
        let mut rng = Rng::new(11);
        // (n, cin, cout, k, padding, groups, h, w): odd sizes, 1x1 and 3x3, 1 to 5 groups.
        let cases = [
            (2, 6, 4, 1, 0, 1, 5, 7),
            (3, 10, 15, 1, 0, 5, 4, 3),
            (2, 12, 8, 1, 0, 4, 6, 6),
            (2, 3, 5, 3, 1, 1, 7, 5),
            (2, 9, 6, 3, 1, 3, 5, 6),
            (1, 8, 12, 3, 1, 4, 8, 8),
            (2, 4, 2, 3, 0, 2, 5, 4),
        ];
        for dtype in [DType::F64, DType::F32] {
            let tol = if dtype == DType::F64 { 1e-10 } else { 1e-4 };
            for (n, cin, cout, k, pad, groups, h, w) in cases {
                let x = random(&mut rng, &[n, cin, h, w], dtype);
                let wt = random(&mut rng, &[cout, cin / groups, k, k], dtype);
                let (ho, wo) = (h + 2 * pad + 1 - k, w + 2 * pad + 1 - k);
                let up = random(&mut rng, &[n, cout, ho, wo], dtype);
                let ours = with_grads(&x, &wt, &up, |x, w| conv2d(x, w, pad, groups));
                let theirs = with_grads(&x, &wt, &up, |x, w| x.conv2d(w, pad, 1, 1, groups));
                let case = format!("{dtype:?} {:?}", (n, cin, cout, k, pad, groups, h, w));
                assert_close(&ours, &theirs, tol, &case);
            }
        }
    }

    #[test]
    fn depthwise_matches_candles_grouped_conv_forward_and_backward() {
        let mut rng = Rng::new(12);
        for dtype in [DType::F64, DType::F32] {
            let tol = if dtype == DType::F64 { 1e-10 } else { 1e-4 };
            for (n, c, h, w) in [(2, 5, 6, 7), (1, 3, 1, 1), (3, 7, 4, 2), (2, 9, 8, 8)] {
                let x = random(&mut rng, &[n, c, h, w], dtype);
                let wt = random(&mut rng, &[c, 1, 3, 3], dtype);
                let up = random(&mut rng, &[n, c, h, w], dtype);
                let ours = with_grads(&x, &wt, &up, depthwise3x3);
                let theirs = with_grads(&x, &wt, &up, |x, w| x.conv2d(w, 1, 1, 1, c));
                let case = format!("{dtype:?} {:?}", (n, c, h, w));
                assert_close(&ours, &theirs, tol, &case);
            }
        }
    }

    #[test]
    fn the_number_of_ops_does_not_grow_with_channels_or_groups() {
        let mut rng = Rng::new(13);
        let dw = |c: usize, rng: &mut Rng| {
            let x = random(rng, &[2, c, 6, 6], DType::F32);
            let w = random(rng, &[c, 1, 3, 3], DType::F32);
            (x, w)
        };
        let (small, large) = (dw(4, &mut rng), dw(64, &mut rng));
        let ours = |(x, w): &(Tensor, Tensor)| graph_ops(x, w, depthwise3x3);
        assert_eq!(ours(&small), ours(&large));
        // candle's own grouped conv: a conv and a narrow per channel.
        let theirs = |(x, w): &(Tensor, Tensor)| {
            graph_ops(x, w, |x, w| x.conv2d(w, 1, 1, 1, w.dim(0).unwrap()))
        };
        assert!(
            theirs(&large) > 16 * theirs(&small) / 2,
            "the check itself sees launches"
        );

        for k in [1, 3] {
            let ops = |groups: usize, rng: &mut Rng| {
                let x = random(rng, &[2, 8 * groups, 5, 5], DType::F32);
                let w = random(rng, &[4 * groups, 8, k, k], DType::F32);
                graph_ops(&x, &w, |x, w| conv2d(x, w, k / 2, groups))
            };
            let two = ops(2, &mut rng);
            assert_eq!(two, ops(4, &mut rng), "{k}x{k}");
            assert_eq!(two, ops(16, &mut rng), "{k}x{k}");
        }
    }
}
