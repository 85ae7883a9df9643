//! 3x3 convolution (stride 1, zero padding 1, any groups) as register-blocked direct loops
//! over zero-padded planes: the forward, the input gradient (the same loops on the output
//! gradient with the kernels transposed and rotated) and the weight gradient of one image.
//!
//! im2col + GEMM copies every input value nine times into a matrix that, at 32x32 with 40
//! channels, no longer fits in L2, and for the small output counts of these networks (32
//! outputs, or 2-8 per group) the GEMM runs at a third of the machine's FMA rate. Here no
//! matrix is built: with each plane padded into rows of `w + 2`, tap `(i, j)` of the output
//! at padded position `q` (row `q / (w + 2)`, column `q % (w + 2)`) reads the input at
//! `q + i (w + 2) + j`, so a tile of consecutive positions is a plain vector load per tap.
//! The microkernel keeps a block of up to [`MR`] output channels times a tile of positions in
//! registers and streams the input channels and taps through them; the two columns per row
//! past the plane's width are computed and dropped. The weight gradient keeps 4 output
//! channels times the 3 taps of one kernel row in registers and streams the positions.
//!
//! On x86-64 CPUs with AVX2 and FMA (checked at run time) the f32 loops use 8-wide vectors;
//! elsewhere, and for f64, portable loops of the same order run. Every output sums its
//! (input channel, tap) terms in one fixed order, and every weight gradient its positions in
//! fixed lanes, so a CPU gives the same bits on every run.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::sparse_conv::{Float, Plane};

/// Output channels per register block.
const MR: usize = 6;
/// Output positions are computed in tiles of 16, 24, 32, 40 or 48 ([`avx2::vectors`]); a
/// plane's scratch is rounded up to a multiple of all of them, so every tiling fits in it.
const Q_ALIGN: usize = 240;

impl Plane {
    /// Output positions the microkernel may compute per plane: `h` rows of `w + 2`, rounded
    /// up to whole tiles of any width.
    pub(super) fn tiled_len(&self) -> usize {
        self.acc_len().div_ceil(Q_ALIGN) * Q_ALIGN
    }

    /// Zero elements a buffer of padded planes needs after its last plane: the forward's
    /// tiles read up to `tiled_len - acc_len` elements past a plane's end (into the next
    /// plane, or here), and the weight gradient's output-gradient rows, read from the first
    /// interior pixel (`w + 3` in) over positions rounded up to 8, up to 8 more.
    pub(super) fn slack(&self) -> usize {
        self.tiled_len() - self.acc_len() + 8
    }

    /// Elements of a buffer of `planes` padded planes with its slack.
    pub(super) fn padded_buffer_len(&self, planes: usize) -> usize {
        planes * self.padded_len() + self.slack()
    }
}

/// One register block: `rows` output channels (the blocks cover the outputs in order) reading
/// input channels `in0..in0 + inputs`; its weights are `data[offset..]` as `[input][tap][rows]`.
#[derive(Debug, Clone, Copy)]
struct Block {
    rows: usize,
    in0: usize,
    inputs: usize,
    offset: usize,
}

/// A 3x3 conv's kernels in the order the microkernel reads them.
#[derive(Debug, Clone)]
pub(super) struct Packed3x3<T> {
    blocks: Vec<Block>,
    data: Vec<T>,
    outputs: usize,
}

impl<T: Float> Packed3x3<T> {
    /// `kernel(o, i, tap)` for `outputs` channels in `groups` groups, each output of group `g`
    /// reading the `inputs_per_group` channels from `g * inputs_per_group`.
    fn pack(
        outputs: usize,
        inputs_per_group: usize,
        groups: usize,
        kernel: impl Fn(usize, usize, usize) -> T,
    ) -> Self {
        let per_group = outputs / groups;
        let mut blocks = Vec::new();
        let mut data = Vec::with_capacity(outputs * inputs_per_group * 9);
        for g in 0..groups {
            let mut o = g * per_group;
            while o < (g + 1) * per_group {
                let rows = MR.min((g + 1) * per_group - o);
                blocks.push(Block {
                    rows,
                    in0: g * inputs_per_group,
                    inputs: inputs_per_group,
                    offset: data.len(),
                });
                for i in 0..inputs_per_group {
                    for t in 0..9 {
                        for r in 0..rows {
                            data.push(kernel(o + r, i, t));
                        }
                    }
                }
                o += rows;
            }
        }
        Self {
            blocks,
            data,
            outputs,
        }
    }

    /// The forward of weights `w: [cout, cin / groups, 3, 3]`.
    pub(super) fn forward(w: &[T], cout: usize, cin: usize, groups: usize) -> Self {
        let cin_g = cin / groups;
        Self::pack(cout, cin_g, groups, |o, i, t| w[(o * cin_g + i) * 9 + t])
    }

    /// The input gradient of the same weights: input channel `c` of group `g` sums the output
    /// gradients of `g`'s outputs through the rotated kernels `w[o, c, 8 - tap]`.
    pub(super) fn input_grad(w: &[T], cout: usize, cin: usize, groups: usize) -> Self {
        let (cin_g, cout_g) = (cin / groups, cout / groups);
        Self::pack(cin, cout_g, groups, |c, j, t| {
            let o = (c / cin_g) * cout_g + j;
            w[(o * cin_g + c % cin_g) * 9 + 8 - t]
        })
    }
}

/// Scratch for [`conv_image`]: `MR` tiled planes.
pub(super) fn scratch_len(g: Plane) -> usize {
    MR * g.tiled_len()
}

/// One image's conv: the compact planes `dst` (`[outputs, h * w]`, all written) from the
/// padded planes `src` (stride `g.padded_len()`, borders zero, followed by at least
/// `g.slack()` elements). `parallel`: the register blocks in parallel (for a batch too small
/// to keep every thread busy with images), each with its own scratch; else in `scratch`.
pub(super) fn conv_image<T: Direct3x3>(
    dst: &mut [MaybeUninit<T>],
    src: &[T],
    packed: &Packed3x3<T>,
    g: Plane,
    scratch: &mut [T],
    parallel: bool,
) {
    let plane = g.len();
    assert!(dst.len() >= packed.outputs * plane && scratch.len() >= MR * g.tiled_len());
    if !parallel {
        let mut rest = &mut dst[..];
        for b in &packed.blocks {
            let (out, tail) = rest.split_at_mut(b.rows * plane);
            conv_block(out, src, packed, b, g, scratch);
            rest = tail;
        }
        return;
    }
    let mut parts = Vec::with_capacity(packed.blocks.len());
    let mut rest = &mut dst[..];
    for b in &packed.blocks {
        let (out, tail) = rest.split_at_mut(b.rows * plane);
        parts.push((b, out));
        rest = tail;
    }
    let zero = T::from_f64(0.0);
    parts.into_par_iter().for_each_init(
        || vec![zero; scratch_len(g)],
        |scratch, (b, out)| conv_block(out, src, packed, b, g, scratch),
    );
}

/// One register block's output planes `out` (`[b.rows, h * w]`).
fn conv_block<T: Direct3x3>(
    out: &mut [MaybeUninit<T>],
    src: &[T],
    packed: &Packed3x3<T>,
    b: &Block,
    g: Plane,
    scratch: &mut [T],
) {
    let (tiled, plane) = (g.tiled_len(), g.len());
    let need = (b.in0 + b.inputs - 1) * g.padded_len() + tiled + 2 * g.wp() + 2;
    assert!(b.inputs > 0 && src.len() >= need, "conv_image: short input");
    let w = &packed.data[b.offset..b.offset + b.inputs * 9 * b.rows];
    T::block(
        &src[b.in0 * g.padded_len()..],
        w,
        b.rows,
        b.inputs,
        g,
        scratch,
    );
    for (r, out) in out.chunks_mut(plane).enumerate() {
        let rows = scratch[r * tiled..].chunks(g.wp());
        for (d, s) in out.chunks_mut(g.w).zip(rows) {
            for (d, &v) in d.iter_mut().zip(&s[..g.w]) {
                d.write(v);
            }
        }
    }
}

/// One image's weight gradient, added into `dw` (`[cout, cin / groups, 9]`): `xpad` holds the
/// padded input planes, `dypad` the padded output-gradient planes (both with their slack).
pub(super) fn weight_grad_image<T: Direct3x3>(
    dw: &mut [T],
    xpad: &[T],
    dypad: &[T],
    (cout, cin, groups): (usize, usize, usize),
    g: Plane,
) {
    let (cin_g, cout_g) = (cin / groups, cout / groups);
    let pl = g.padded_len();
    let positions = g.acc_len().div_ceil(8) * 8;
    assert!(
        xpad.len() >= (cin - 1) * pl + positions + 2 * g.wp() + 2
            && dypad.len() >= (cout - 1) * pl + g.wp() + 1 + positions,
        "weight_grad_image: short input"
    );
    for grp in 0..groups {
        let mut o = grp * cout_g;
        while o < (grp + 1) * cout_g {
            let rows = 4.min((grp + 1) * cout_g - o);
            // The output gradients from their first interior pixel: rows of `w + 2` whose two
            // extra columns are the zero border, so dropped positions add nothing.
            let dy = &dypad[o * pl + g.wp() + 1..];
            for i in 0..cin_g {
                let x = &xpad[(grp * cin_g + i) * pl..];
                let mut taps = [[T::from_f64(0.0); 9]; 4];
                T::tap_dots(&mut taps, dy, x, rows, positions, g);
                for r in 0..rows {
                    let d = &mut dw[((o + r) * cin_g + i) * 9..][..9];
                    for (d, t) in d.iter_mut().zip(taps[r]) {
                        *d += t;
                    }
                }
            }
            o += rows;
        }
    }
}

/// The microkernels, per float type.
pub(super) trait Direct3x3: Float {
    /// `out[r * tiled + q] = sum over inputs c and taps t of w[(c * 9 + t) * rows + r] *
    /// src[c * pl + q + offset(t)]` for every `q < h (w + 2)` (and, past it, up to the end of
    /// the last tile, values that are dropped).
    fn block(src: &[Self], w: &[Self], rows: usize, inputs: usize, g: Plane, out: &mut [Self]);
    /// `taps[r][i * 3 + j] = sum over q < positions of dy[r * pl + q] * x[q + i * wp + j]`.
    fn tap_dots(
        taps: &mut [[Self; 9]; 4],
        dy: &[Self],
        x: &[Self],
        rows: usize,
        positions: usize,
        g: Plane,
    );
}

impl Direct3x3 for f64 {
    fn block(src: &[Self], w: &[Self], rows: usize, inputs: usize, g: Plane, out: &mut [Self]) {
        portable::block(src, w, rows, inputs, g, out)
    }
    fn tap_dots(
        taps: &mut [[Self; 9]; 4],
        dy: &[Self],
        x: &[Self],
        rows: usize,
        positions: usize,
        g: Plane,
    ) {
        portable::tap_dots(taps, dy, x, rows, positions, g)
    }
}

impl Direct3x3 for f32 {
    fn block(src: &[Self], w: &[Self], rows: usize, inputs: usize, g: Plane, out: &mut [Self]) {
        #[cfg(target_arch = "x86_64")]
        if avx2::available() {
            // SAFETY: the CPU has AVX2 and FMA; `conv_image` checked the input's length and
            // `out` holds `MR` tiled planes.
            return unsafe { avx2::block(src, w, rows, inputs, g, out) };
        }
        portable::block(src, w, rows, inputs, g, out)
    }
    fn tap_dots(
        taps: &mut [[Self; 9]; 4],
        dy: &[Self],
        x: &[Self],
        rows: usize,
        positions: usize,
        g: Plane,
    ) {
        #[cfg(target_arch = "x86_64")]
        if avx2::available() {
            // SAFETY: as above; `weight_grad_image` checked the lengths.
            return unsafe { avx2::tap_dots(taps, dy, x, rows, positions, g) };
        }
        portable::tap_dots(taps, dy, x, rows, positions, g)
    }
}

/// The nine taps' offsets in a padded plane with rows of `wp`.
#[inline(always)]
fn offsets(wp: usize) -> [usize; 9] {
    [0, 1, 2, wp, wp + 1, wp + 2, 2 * wp, 2 * wp + 1, 2 * wp + 2]
}

mod portable {
    //! The loops in plain Rust, in the microkernels' summation order.
    use super::*;

    pub(super) fn block<T: Float>(
        src: &[T],
        w: &[T],
        rows: usize,
        inputs: usize,
        g: Plane,
        out: &mut [T],
    ) {
        let (tiled, pl, off) = (g.tiled_len(), g.padded_len(), offsets(g.wp()));
        let out = &mut out[..rows * tiled];
        out.fill(T::from_f64(0.0));
        for c in 0..inputs {
            let s = &src[c * pl..];
            for (t, &o) in off.iter().enumerate() {
                let s = &s[o..o + tiled];
                for r in 0..rows {
                    let k = w[(c * 9 + t) * rows + r];
                    for (a, &v) in out[r * tiled..(r + 1) * tiled].iter_mut().zip(s) {
                        *a = k.fma(v, *a);
                    }
                }
            }
        }
    }

    pub(super) fn tap_dots<T: Float>(
        taps: &mut [[T; 9]; 4],
        dy: &[T],
        x: &[T],
        rows: usize,
        positions: usize,
        g: Plane,
    ) {
        const LANES: usize = 8;
        let (pl, off) = (g.padded_len(), offsets(g.wp()));
        for (r, tr) in taps.iter_mut().enumerate().take(rows) {
            let d = &dy[r * pl..][..positions];
            for (t, &o) in off.iter().enumerate() {
                let s = &x[o..o + positions];
                let mut lanes = [T::from_f64(0.0); LANES];
                for (dc, sc) in d.chunks(LANES).zip(s.chunks(LANES)) {
                    for l in 0..dc.len() {
                        lanes[l] = dc[l].fma(sc[l], lanes[l]);
                    }
                }
                tr[t] = lanes.iter().fold(T::from_f64(0.0), |a, &b| a + b);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! f32 microkernels in AVX2 + FMA intrinsics.
    use std::arch::x86_64::*;

    use super::*;

    pub(super) fn available() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }

    /// A `R x 8V` tile: `R` output rows, `V` vectors of positions from `q0`.
    ///
    /// # Safety
    /// AVX2 and FMA; `src` readable for `inputs` planes of `pl` plus the tile's reach, `w`
    /// for `inputs * 9 * R` values, `out` writable for `R` rows of `stride` from `q0`.
    #[inline(always)]
    unsafe fn tile<const R: usize, const V: usize>(
        src: *const f32,
        pl: usize,
        off: &[usize; 9],
        w: *const f32,
        inputs: usize,
        out: *mut f32,
        stride: usize,
    ) {
        // SAFETY: as the caller guarantees.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); V]; R];
            let mut wk = w;
            for c in 0..inputs {
                let s = src.add(c * pl);
                for &o in off {
                    let p = s.add(o);
                    if V > R {
                        // Wide tiles: the R weights stay in registers, one input vector at a
                        // time (R * V + R + 1 registers).
                        let mut k = [_mm256_setzero_ps(); R];
                        for (r, kr) in k.iter_mut().enumerate() {
                            *kr = _mm256_broadcast_ss(&*wk.add(r));
                        }
                        for v in 0..V {
                            let x = _mm256_loadu_ps(p.add(8 * v));
                            for r in 0..R {
                                acc[r][v] = _mm256_fmadd_ps(k[r], x, acc[r][v]);
                            }
                        }
                    } else {
                        // Tall tiles: the V input vectors stay, one weight at a time
                        // (R * V + V + 1 registers).
                        let mut x = [_mm256_setzero_ps(); V];
                        for (v, xv) in x.iter_mut().enumerate() {
                            *xv = _mm256_loadu_ps(p.add(8 * v));
                        }
                        for row in acc.iter_mut() {
                            let k = _mm256_broadcast_ss(&*wk);
                            wk = wk.add(1);
                            for (a, xv) in row.iter_mut().zip(x) {
                                *a = _mm256_fmadd_ps(k, xv, *a);
                            }
                        }
                        continue;
                    }
                    wk = wk.add(R);
                }
            }
            for (r, row) in acc.iter().enumerate() {
                for (v, a) in row.iter().enumerate() {
                    _mm256_storeu_ps(out.add(r * stride + 8 * v), *a);
                }
            }
        }
    }

    /// Every tile of a block of `R` rows, `V` vectors wide, over `positions` (a multiple of
    /// `8 V`, at most `g.tiled_len()`). Each instance is compiled on its own, so that its
    /// accumulators are allocated to registers.
    #[target_feature(enable = "avx2,fma")]
    #[inline(never)]
    unsafe fn tiles<const R: usize, const V: usize>(
        src: &[f32],
        w: &[f32],
        inputs: usize,
        g: Plane,
        out: &mut [f32],
    ) {
        let (tiled, pl, off) = (g.tiled_len(), g.padded_len(), offsets(g.wp()));
        let positions = g.acc_len().div_ceil(8 * V) * 8 * V;
        assert!(positions <= tiled && w.len() >= inputs * 9 * R && inputs > 0);
        assert!(src.len() >= (inputs - 1) * pl + positions + 2 * g.wp() + 2);
        assert!(out.len() >= (R - 1) * tiled + positions);
        for q in (0..positions).step_by(8 * V) {
            // SAFETY: `conv_image` checked that `src` reaches every tile's reads; `out` holds
            // `R` rows of `tiled`.
            unsafe {
                tile::<R, V>(
                    src.as_ptr().add(q),
                    pl,
                    &off,
                    w.as_ptr(),
                    inputs,
                    out.as_mut_ptr().add(q),
                    tiled,
                )
            }
        }
    }

    /// The tile width, in vectors, for blocks of `rows` over the plane `g`: the widest whose
    /// accumulators, inputs and weight fit the 16 registers, unless a narrower one computes
    /// fewer dropped positions.
    pub(super) fn vectors(rows: usize, g: Plane) -> usize {
        let choices: &[usize] = match rows {
            4..=6 => &[2],
            3 => &[3, 2],
            _ => &[6, 5, 4, 3, 2],
        };
        let cost = |v: usize| {
            let computed = g.acc_len().div_ceil(8 * v) * 8 * v;
            // Fewer accumulators hide less of the FMA latency.
            computed as f64 * if rows * v < 10 { 1.1 } else { 1.0 }
        };
        choices
            .iter()
            .copied()
            .min_by(|&a, &b| cost(a).total_cmp(&cost(b)))
            .unwrap_or(2)
    }

    /// # Safety
    /// AVX2 and FMA; the lengths [`super::conv_image`] checks.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn block(
        src: &[f32],
        w: &[f32],
        rows: usize,
        inputs: usize,
        g: Plane,
        out: &mut [f32],
    ) {
        assert!(out.len() >= rows * g.tiled_len());
        macro_rules! run {
            ($r:literal: $($v:literal),*) => {
                match vectors($r, g) {
                    $($v => tiles::<$r, $v>(src, w, inputs, g, out),)*
                    _ => unreachable!(),
                }
            };
        }
        // SAFETY: the CPU has AVX2 and FMA (the caller's promise); `tiles` checks that the
        // slices cover every tile's reads and writes.
        unsafe {
            match rows {
                6 => run!(6: 2),
                5 => run!(5: 2),
                4 => run!(4: 2),
                3 => run!(3: 3, 2),
                2 => run!(2: 6, 5, 4, 3, 2),
                1 => run!(1: 6, 5, 4, 3, 2),
                _ => panic!("conv_image: {rows} rows in a register block"),
            }
        }
    }

    /// Horizontal sum of the 8 lanes, in a fixed order.
    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        // SAFETY: AVX is enabled by the caller.
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
            _mm_cvtss_f32(s)
        }
    }

    /// `R` output rows times the 3 taps of kernel row `i`.
    #[inline(always)]
    unsafe fn row_dots<const R: usize>(
        taps: &mut [[f32; 9]; 4],
        dy: *const f32,
        x: *const f32,
        pl: usize,
        i: usize,
        positions: usize,
        wp: usize,
    ) {
        // SAFETY: the caller's lengths cover `positions` (a multiple of 8) from each start.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 3]; R];
            let xs = x.add(i * wp);
            for q in (0..positions).step_by(8) {
                let xv = [
                    _mm256_loadu_ps(xs.add(q)),
                    _mm256_loadu_ps(xs.add(q + 1)),
                    _mm256_loadu_ps(xs.add(q + 2)),
                ];
                for (r, row) in acc.iter_mut().enumerate() {
                    let d = _mm256_loadu_ps(dy.add(r * pl + q));
                    for (a, x) in row.iter_mut().zip(xv) {
                        *a = _mm256_fmadd_ps(d, x, *a);
                    }
                }
            }
            for (r, row) in acc.iter().enumerate() {
                for (j, a) in row.iter().enumerate() {
                    taps[r][i * 3 + j] = hsum(*a);
                }
            }
        }
    }

    /// # Safety
    /// AVX2 and FMA; the lengths [`super::weight_grad_image`] checks.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tap_dots(
        taps: &mut [[f32; 9]; 4],
        dy: &[f32],
        x: &[f32],
        rows: usize,
        positions: usize,
        g: Plane,
    ) {
        let (pl, wp) = (g.padded_len(), g.wp());
        assert!(positions % 8 == 0 && (1..=4).contains(&rows));
        assert!(dy.len() >= (rows - 1) * pl + positions && x.len() >= positions + 2 * wp + 2);
        let (dy, x) = (dy.as_ptr(), x.as_ptr());
        for i in 0..3 {
            // SAFETY: checked above.
            unsafe {
                match rows {
                    4 => row_dots::<4>(taps, dy, x, pl, i, positions, wp),
                    3 => row_dots::<3>(taps, dy, x, pl, i, positions, wp),
                    2 => row_dots::<2>(taps, dy, x, pl, i, positions, wp),
                    _ => row_dots::<1>(taps, dy, x, pl, i, positions, wp),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.uniform(-1.0, 1.0) as f32).collect()
    }

    /// The vector microkernels against the portable loops (which the f64 tests run through
    /// every op) on random padded planes: every row count, plane widths whose rows end inside
    /// a vector, and the slack past the last plane.
    #[test]
    fn vector_loops_match_the_portable_ones() {
        #[cfg(target_arch = "x86_64")]
        if avx2::available() {
            let mut rng = Rng::new(3);
            for (h, w, inputs) in [
                (5, 3, 3),
                (8, 8, 7),
                (1, 13, 2),
                (32, 32, 5),
                (3, 1, 4),
                (16, 16, 3),
                (7, 11, 2),
            ] {
                let g = Plane { h, w };
                let src = random(&mut rng, g.padded_buffer_len(inputs));
                for rows in 1..=MR {
                    let wts = random(&mut rng, inputs * 9 * rows);
                    let (mut a, mut b) = (vec![0f32; scratch_len(g)], vec![0f32; scratch_len(g)]);
                    portable::block(&src, &wts, rows, inputs, g, &mut a);
                    // SAFETY: AVX2 and FMA are present; the buffers have the checked lengths.
                    unsafe { avx2::block(&src, &wts, rows, inputs, g, &mut b) };
                    for r in 0..rows {
                        for q in (0..g.acc_len()).filter(|q| q % g.wp() < w) {
                            let (x, y) = (a[r * g.tiled_len() + q], b[r * g.tiled_len() + q]);
                            assert!(
                                (x - y).abs() < 1e-4 * (1.0 + x.abs()),
                                "{h}x{w} rows {rows}"
                            );
                        }
                    }
                    let (rows, positions) = (rows.min(4), g.acc_len().div_ceil(8) * 8);
                    let dy = random(&mut rng, rows * g.padded_len() + positions);
                    let (mut ta, mut tb) = ([[0f32; 9]; 4], [[0f32; 9]; 4]);
                    portable::tap_dots(&mut ta, &dy, &src, rows, positions, g);
                    // SAFETY: as above.
                    unsafe { avx2::tap_dots(&mut tb, &dy, &src, rows, positions, g) };
                    for (x, y) in ta.iter().flatten().zip(tb.iter().flatten()) {
                        assert!(
                            (x - y).abs() < 1e-3 * (1.0 + x.abs()),
                            "{h}x{w} dots {rows}"
                        );
                    }
                }
            }
        }
    }
}
