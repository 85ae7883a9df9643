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
//! The f32 loops run at the SIMD level of the process ([`Simd::active`]): AVX-512 (16-wide
//! vectors, 32 registers: blocks of up to 8 outputs, tiles of up to 96 positions, the weight
//! gradient 8 outputs at a time), AVX2 + FMA (8-wide, 16 registers: blocks of up to 6, the
//! weight gradient 4 at a time), or portable loops of the same order (and f64, always).
//! Every output sums its (input channel, tap) terms in the same order at every level, so the
//! forward and the input gradient give the same bits at every level; every weight gradient
//! sums its positions in fixed lanes, 16 at AVX-512 and 8 below it, so it gives the same
//! bits on every run at one level, and differs between AVX-512 and the others in rounding.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::simd::Simd;
use super::sparse_conv::{Float, Plane};

/// Output channels per register block, at most: 6 in AVX2's 16 vector registers, 8 in
/// AVX-512's 32 (a group's outputs are split into blocks of as even a size as fits).
pub(super) const MR: usize = 8;

/// The widest tile, in positions: tiles of `8 V` (AVX2) or `16 V` (AVX-512) positions for
/// `V` up to 6.
const MAX_TILE: usize = 96;

/// Rows of a register block at `simd` over the plane `g`: 6 at AVX2; at AVX-512 the largest
/// of 8, 6 and 5 rows whose tiles (3, 4 or 5 vectors wide) compute the fewest dropped
/// positions (an 8x8 plane's 80 positions are five vectors exactly, and 8 rows fit only 3).
fn max_rows(simd: Simd, g: Plane) -> usize {
    if simd < Simd::Avx512 {
        return 6;
    }
    let computed = |vectors: usize| g.acc_len().next_multiple_of(16 * vectors);
    [(8, 3), (6, 4), (5, 5)]
        .into_iter()
        .min_by_key(|&(rows, v)| (computed(v), std::cmp::Reverse(rows)))
        .map_or(8, |(rows, _)| rows)
}

/// Output rows of one weight-gradient pass at `simd` over the plane `g` (3 taps of each in
/// registers): 4 at AVX2; 8 at AVX-512 but on small planes, whose few positions per pass
/// would not repay the horizontal sums of 24 accumulators.
pub(super) fn dot_rows(simd: Simd, g: Plane) -> usize {
    if simd >= Simd::Avx512 && g.acc_len() >= 256 {
        8
    } else {
        4
    }
}

impl Plane {
    /// Output positions the microkernels may compute per plane: `h` rows of `w + 2`, and
    /// room for the last tile of any width to run past them.
    pub(super) fn tiled_len(&self) -> usize {
        (self.acc_len() + MAX_TILE).next_multiple_of(16)
    }

    /// Zero elements a buffer of padded planes needs after its last plane: the forward's
    /// tiles read up to `tiled_len - acc_len` elements past a plane's end (into the next
    /// plane, or here), and the weight gradient's output-gradient rows, read from the first
    /// interior pixel (`w + 3` in) over positions rounded up to a vector, up to 16 more.
    pub(super) fn slack(&self) -> usize {
        self.tiled_len() - self.acc_len() + 16
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
    /// The level the blocks are sized for, and that runs them.
    simd: Simd,
}

impl<T: Float> Packed3x3<T> {
    /// `kernel(o, i, tap)` for `outputs` channels in `groups` groups, each output of group `g`
    /// reading the `inputs_per_group` channels from `g * inputs_per_group`.
    fn pack(
        simd: Simd,
        g: Plane,
        outputs: usize,
        inputs_per_group: usize,
        groups: usize,
        kernel: impl Fn(usize, usize, usize) -> T,
    ) -> Self {
        let per_group = outputs / groups;
        // As even a split of each group's outputs into blocks as the registers allow.
        let blocks_per_group = per_group.div_ceil(max_rows(simd, g));
        let mut blocks = Vec::new();
        let mut data = Vec::with_capacity(outputs * inputs_per_group * 9);
        for g in 0..groups {
            let mut o = g * per_group;
            for b in 0..blocks_per_group {
                let end = g * per_group + (b + 1) * per_group / blocks_per_group;
                let rows = end - o;
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
                o = end;
            }
        }
        Self {
            blocks,
            data,
            outputs,
            simd,
        }
    }

    /// The forward of weights `w: [cout, cin / groups, 3, 3]`, for the active SIMD level.
    pub(super) fn forward(w: &[T], cout: usize, cin: usize, groups: usize, g: Plane) -> Self {
        Self::forward_at(Simd::active(), w, cout, cin, groups, g)
    }

    /// [`Self::forward`] for the level `simd`.
    pub(super) fn forward_at(
        simd: Simd,
        w: &[T],
        cout: usize,
        cin: usize,
        groups: usize,
        g: Plane,
    ) -> Self {
        let cin_g = cin / groups;
        Self::pack(simd, g, cout, cin_g, groups, |o, i, t| {
            w[(o * cin_g + i) * 9 + t]
        })
    }

    /// The input gradient of the same weights: input channel `c` of group `g` sums the output
    /// gradients of `g`'s outputs through the rotated kernels `w[o, c, 8 - tap]`.
    pub(super) fn input_grad(w: &[T], cout: usize, cin: usize, groups: usize, g: Plane) -> Self {
        Self::input_grad_at(Simd::active(), w, cout, cin, groups, g)
    }

    /// [`Self::input_grad`] for the level `simd`.
    pub(super) fn input_grad_at(
        simd: Simd,
        w: &[T],
        cout: usize,
        cin: usize,
        groups: usize,
        g: Plane,
    ) -> Self {
        let (cin_g, cout_g) = (cin / groups, cout / groups);
        Self::pack(simd, g, cin, cout_g, groups, |c, j, t| {
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
    if !super::splits(parallel, packed.data.len() * plane) {
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
        packed.simd,
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
    check_dot_lengths(xpad, dypad, (cin, cout), g);
    let simd = Simd::active();
    let per_pass = dot_rows(simd, g);
    let mut rows: Vec<&[T]> = Vec::with_capacity(per_pass);
    for grp in 0..groups {
        let mut o = grp * cout_g;
        while o < (grp + 1) * cout_g {
            let n = per_pass.min((grp + 1) * cout_g - o);
            rows.clear();
            rows.extend((o..o + n).map(|r| dy_row(dypad, r, g)));
            for i in 0..cin_g {
                let x = &xpad[(grp * cin_g + i) * pl..];
                let mut taps = [[T::from_f64(0.0); 9]; MR];
                T::tap_dots(simd, &mut taps, &rows, x, g);
                for (r, t) in taps.iter().enumerate().take(n) {
                    let d = &mut dw[((o + r) * cin_g + i) * 9..][..9];
                    for (d, t) in d.iter_mut().zip(t) {
                        *d += *t;
                    }
                }
            }
            o += n;
        }
    }
}

/// Positions every weight-gradient dot product covers: `h` rows of `w + 2`, rounded up to a
/// whole number of 8-wide vectors (the rows' two extra columns, and the positions past the
/// last row, read the zero border of the output gradient, so they add nothing).
fn dot_positions(g: Plane) -> usize {
    g.acc_len().next_multiple_of(8)
}

/// Panics unless `xpad` holds `cin` and `dypad` `cout` padded planes with their slack.
pub(super) fn check_dot_lengths<T>(xpad: &[T], dypad: &[T], (cin, cout): (usize, usize), g: Plane) {
    let (pl, positions) = (g.padded_len(), dot_positions(g));
    assert!(
        cin > 0
            && cout > 0
            && xpad.len() >= (cin - 1) * pl + positions + 2 * g.wp() + 2
            && dypad.len() >= (cout - 1) * pl + g.wp() + 1 + positions,
        "weight_grad_image: short input"
    );
}

/// Output gradient `o`'s plane from its first interior pixel: rows of `w + 2` whose two
/// extra columns are the zero border, so the dropped positions add nothing.
#[inline(always)]
pub(super) fn dy_row<T>(dypad: &[T], o: usize, g: Plane) -> &[T] {
    &dypad[o * g.padded_len() + g.wp() + 1..][..dot_positions(g)]
}

/// The microkernels, per float type.
pub(super) trait Direct3x3:
    Float + super::pair3x3::PairTiles + super::kernel_lists::ListPlanes + super::direct1x1::Direct1x1
{
    /// `out[r * tiled + q] = sum over inputs c and taps t of w[(c * 9 + t) * rows + r] *
    /// src[c * pl + q + offset(t)]` for every `q < h (w + 2)` (and, past it, up to the end of
    /// the last tile, values that are dropped), at the level `simd` (which the CPU has).
    fn block(
        simd: Simd,
        src: &[Self],
        w: &[Self],
        rows: usize,
        inputs: usize,
        g: Plane,
        out: &mut [Self],
    );
    /// `taps[r][i * 3 + j] = sum over q of dy[r][q] * x[q + i * wp + j]` for the rows `dy`
    /// (at most [`dot_rows`]`(simd, g)`, each [`dot_positions`] long).
    fn tap_dots(simd: Simd, taps: &mut [[Self; 9]; MR], dy: &[&[Self]], x: &[Self], g: Plane);
}

impl Direct3x3 for f64 {
    fn block(
        _: Simd,
        src: &[Self],
        w: &[Self],
        rows: usize,
        inputs: usize,
        g: Plane,
        out: &mut [Self],
    ) {
        portable::block(src, w, rows, inputs, g, out)
    }
    fn tap_dots(_: Simd, taps: &mut [[Self; 9]; MR], dy: &[&[Self]], x: &[Self], g: Plane) {
        portable::tap_dots(taps, dy, x, g)
    }
}

impl Direct3x3 for f32 {
    fn block(
        simd: Simd,
        src: &[Self],
        w: &[Self],
        rows: usize,
        inputs: usize,
        g: Plane,
        out: &mut [Self],
    ) {
        #[cfg(target_arch = "x86_64")]
        match simd.min(Simd::detected()) {
            // SAFETY: the CPU has the level; `conv_image` checked the input's length and
            // `out` holds `MR` tiled planes.
            Simd::Avx512 => return unsafe { avx512::block(src, w, rows, inputs, g, out) },
            // SAFETY: as above.
            Simd::Avx2 => return unsafe { avx2::block(src, w, rows, inputs, g, out) },
            Simd::Portable => {}
        }
        let _ = simd;
        portable::block(src, w, rows, inputs, g, out)
    }
    fn tap_dots(simd: Simd, taps: &mut [[Self; 9]; MR], dy: &[&[Self]], x: &[Self], g: Plane) {
        #[cfg(target_arch = "x86_64")]
        match simd.min(Simd::detected()) {
            // SAFETY: the CPU has the level; the slices' lengths are checked inside.
            Simd::Avx512 => return unsafe { avx512::tap_dots(taps, dy, x, g) },
            // SAFETY: as above.
            Simd::Avx2 => return unsafe { avx2::tap_dots(taps, dy, x, g) },
            Simd::Portable => {}
        }
        let _ = simd;
        portable::tap_dots(taps, dy, x, g)
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) use avx2::hsum as hsum256;

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
        let (tiled, pl, off, len) = (g.tiled_len(), g.padded_len(), offsets(g.wp()), g.acc_len());
        let out = &mut out[..rows * tiled];
        out.fill(T::from_f64(0.0));
        for c in 0..inputs {
            let s = &src[c * pl..];
            for (t, &o) in off.iter().enumerate() {
                let s = &s[o..o + len];
                for r in 0..rows {
                    let k = w[(c * 9 + t) * rows + r];
                    for (a, &v) in out[r * tiled..r * tiled + len].iter_mut().zip(s) {
                        *a = k.fma(v, *a);
                    }
                }
            }
        }
    }

    /// In 8 fixed lanes, as the AVX2 loops.
    pub(super) fn tap_dots<T: Float>(taps: &mut [[T; 9]; MR], dy: &[&[T]], x: &[T], g: Plane) {
        const LANES: usize = 8;
        let off = offsets(g.wp());
        for (tr, d) in taps.iter_mut().zip(dy) {
            for (t, &o) in off.iter().enumerate() {
                let s = &x[o..o + d.len()];
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
                match vectors(8, &[$($v),*], $r, g) {
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
                _ => panic!("conv_image: {rows} rows in an AVX2 register block"),
            }
        }
    }

    /// Horizontal sum of the 8 lanes, in a fixed order.
    #[inline(always)]
    pub(in crate::kernels) unsafe fn hsum(v: __m256) -> f32 {
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
        taps: &mut [[f32; 9]; MR],
        dy: &[&[f32]],
        x: *const f32,
        i: usize,
        positions: usize,
        wp: usize,
    ) {
        // SAFETY: the caller's lengths cover `positions` (a multiple of 8) from each start.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 3]; R];
            let d: [*const f32; R] = std::array::from_fn(|r| dy[r].as_ptr());
            let xs = x.add(i * wp);
            for q in (0..positions).step_by(8) {
                let xv = [
                    _mm256_loadu_ps(xs.add(q)),
                    _mm256_loadu_ps(xs.add(q + 1)),
                    _mm256_loadu_ps(xs.add(q + 2)),
                ];
                for (row, dr) in acc.iter_mut().zip(d) {
                    let dv = _mm256_loadu_ps(dr.add(q));
                    for (a, x) in row.iter_mut().zip(xv) {
                        *a = _mm256_fmadd_ps(dv, x, *a);
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
    /// AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tap_dots(taps: &mut [[f32; 9]; MR], dy: &[&[f32]], x: &[f32], g: Plane) {
        let wp = g.wp();
        let positions = dy.first().map_or(0, |d| d.len());
        assert!(positions % 8 == 0 && (1..=4).contains(&dy.len()));
        assert!(dy.iter().all(|d| d.len() == positions) && x.len() >= positions + 2 * wp + 2);
        for i in 0..3 {
            // SAFETY: checked above.
            unsafe {
                match dy.len() {
                    4 => row_dots::<4>(taps, dy, x.as_ptr(), i, positions, wp),
                    3 => row_dots::<3>(taps, dy, x.as_ptr(), i, positions, wp),
                    2 => row_dots::<2>(taps, dy, x.as_ptr(), i, positions, wp),
                    _ => row_dots::<1>(taps, dy, x.as_ptr(), i, positions, wp),
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    //! f32 microkernels in AVX-512 intrinsics: the AVX2 loops at twice the width, with twice
    //! the registers (larger blocks and tiles), and masked loads where a row ends inside a
    //! vector.
    use std::arch::x86_64::*;

    use super::*;

    /// A `R x 16V` tile: `R` output rows, `V` vectors of positions from `q0`, summed in the
    /// AVX2 tile's order.
    ///
    /// # Safety
    /// AVX-512F; `src` readable for `inputs` planes of `pl` plus the tile's reach, `w` for
    /// `inputs * 9 * R` values, `out` writable for `R` rows of `stride` from `q0`.
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
            let mut acc = [[_mm512_setzero_ps(); V]; R];
            let mut wk = w;
            for c in 0..inputs {
                let s = src.add(c * pl);
                for &o in off {
                    let p = s.add(o);
                    if V > R {
                        // Wide tiles: R weights in registers, one input vector at a time.
                        let k: [__m512; R] = std::array::from_fn(|r| _mm512_set1_ps(*wk.add(r)));
                        for v in 0..V {
                            let x = _mm512_loadu_ps(p.add(16 * v));
                            for r in 0..R {
                                acc[r][v] = _mm512_fmadd_ps(k[r], x, acc[r][v]);
                            }
                        }
                    } else {
                        // Tall tiles: V input vectors in registers, one weight at a time.
                        let x: [__m512; V] =
                            std::array::from_fn(|v| _mm512_loadu_ps(p.add(16 * v)));
                        for (r, row) in acc.iter_mut().enumerate() {
                            let k = _mm512_set1_ps(*wk.add(r));
                            for (a, xv) in row.iter_mut().zip(x) {
                                *a = _mm512_fmadd_ps(k, xv, *a);
                            }
                        }
                    }
                    wk = wk.add(R);
                }
            }
            for (r, row) in acc.iter().enumerate() {
                for (v, a) in row.iter().enumerate() {
                    _mm512_storeu_ps(out.add(r * stride + 16 * v), *a);
                }
            }
        }
    }

    /// Every tile of a block of `R` rows, `V` vectors wide.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    #[inline(never)]
    unsafe fn tiles<const R: usize, const V: usize>(
        src: &[f32],
        w: &[f32],
        inputs: usize,
        g: Plane,
        out: &mut [f32],
    ) {
        let (tiled, pl, off) = (g.tiled_len(), g.padded_len(), offsets(g.wp()));
        let positions = g.acc_len().div_ceil(16 * V) * 16 * V;
        assert!(positions <= tiled && w.len() >= inputs * 9 * R && inputs > 0);
        assert!(src.len() >= (inputs - 1) * pl + positions + 2 * g.wp() + 2);
        assert!(out.len() >= (R - 1) * tiled + positions);
        for q in (0..positions).step_by(16 * V) {
            // SAFETY: checked above.
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

    /// # Safety
    /// AVX-512 (F, BW, VL, DQ) and FMA; the lengths [`super::conv_image`] checks.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
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
                match vectors(16, &[$($v),*], $r, g) {
                    $($v => tiles::<$r, $v>(src, w, inputs, g, out),)*
                    _ => unreachable!(),
                }
            };
        }
        // SAFETY: the CPU has the features (the caller's promise); `tiles` checks that the
        // slices cover every tile's reads and writes.
        unsafe {
            match rows {
                8 => run!(8: 3, 2),
                7 => run!(7: 3, 2),
                6 => run!(6: 4, 3, 2),
                5 => run!(5: 5, 4, 3, 2),
                4 => run!(4: 6, 5, 4, 3, 2),
                3 => run!(3: 6, 5, 4, 3, 2),
                2 => run!(2: 6, 5, 4, 3, 2),
                1 => run!(1: 6, 5, 4, 3, 2),
                _ => panic!("conv_image: {rows} rows in an AVX-512 register block"),
            }
        }
    }

    /// Horizontal sum of the 16 lanes, in a fixed order.
    #[inline(always)]
    unsafe fn hsum(v: __m512) -> f32 {
        // SAFETY: AVX-512F is enabled by the caller.
        unsafe {
            let lo = _mm512_castps512_ps256(v);
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
            super::avx2::hsum(_mm256_add_ps(lo, hi))
        }
    }

    /// `R` output rows times the 3 taps of kernel row `i`, 16 positions at a time; the last
    /// vector masked to the positions left.
    #[inline(always)]
    unsafe fn row_dots<const R: usize>(
        taps: &mut [[f32; 9]; MR],
        dy: &[&[f32]],
        x: *const f32,
        i: usize,
        positions: usize,
        wp: usize,
    ) {
        // SAFETY: the caller's lengths cover `positions` from each start; masked lanes are
        // not read.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 3]; R];
            let d: [*const f32; R] = std::array::from_fn(|r| dy[r].as_ptr());
            let xs = x.add(i * wp);
            let full = positions / 16 * 16;
            for q in (0..full).step_by(16) {
                let xv = [
                    _mm512_loadu_ps(xs.add(q)),
                    _mm512_loadu_ps(xs.add(q + 1)),
                    _mm512_loadu_ps(xs.add(q + 2)),
                ];
                for (row, dr) in acc.iter_mut().zip(d) {
                    let dv = _mm512_loadu_ps(dr.add(q));
                    for (a, x) in row.iter_mut().zip(xv) {
                        *a = _mm512_fmadd_ps(dv, x, *a);
                    }
                }
            }
            if full < positions {
                let (q, m) = (full, (1u16 << (positions - full)) - 1);
                let xv = [
                    _mm512_maskz_loadu_ps(m, xs.add(q)),
                    _mm512_maskz_loadu_ps(m, xs.add(q + 1)),
                    _mm512_maskz_loadu_ps(m, xs.add(q + 2)),
                ];
                for (row, dr) in acc.iter_mut().zip(d) {
                    let dv = _mm512_maskz_loadu_ps(m, dr.add(q));
                    for (a, x) in row.iter_mut().zip(xv) {
                        *a = _mm512_fmadd_ps(dv, x, *a);
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
    /// AVX-512 (F, BW, VL, DQ) and FMA.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    pub(super) unsafe fn tap_dots(taps: &mut [[f32; 9]; MR], dy: &[&[f32]], x: &[f32], g: Plane) {
        let wp = g.wp();
        let positions = dy.first().map_or(0, |d| d.len());
        assert!((1..=MR).contains(&dy.len()));
        assert!(dy.iter().all(|d| d.len() == positions) && x.len() >= positions + 2 * wp + 2);
        for i in 0..3 {
            // SAFETY: checked above.
            unsafe {
                let x = x.as_ptr();
                match dy.len() {
                    8 => row_dots::<8>(taps, dy, x, i, positions, wp),
                    7 => row_dots::<7>(taps, dy, x, i, positions, wp),
                    6 => row_dots::<6>(taps, dy, x, i, positions, wp),
                    5 => row_dots::<5>(taps, dy, x, i, positions, wp),
                    4 => row_dots::<4>(taps, dy, x, i, positions, wp),
                    3 => row_dots::<3>(taps, dy, x, i, positions, wp),
                    2 => row_dots::<2>(taps, dy, x, i, positions, wp),
                    _ => row_dots::<1>(taps, dy, x, i, positions, wp),
                }
            }
        }
    }
}

/// The tile width, in vectors of `lanes`, for blocks of `rows` over the plane `g`, out of
/// `choices` (those whose accumulators, inputs and weights fit the registers): the one that
/// computes the fewest dropped positions, a narrow one only where it saves some.
#[cfg(target_arch = "x86_64")]
fn vectors(lanes: usize, choices: &[usize], rows: usize, g: Plane) -> usize {
    let cost = |v: usize| {
        let computed = g.acc_len().div_ceil(lanes * v) * lanes * v;
        // Fewer accumulators hide less of the FMA latency.
        computed as f64 * if rows * v < 10 { 1.1 } else { 1.0 }
    };
    choices
        .iter()
        .copied()
        .min_by(|&a, &b| cost(a).total_cmp(&cost(b)))
        .unwrap_or(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.uniform(-1.0, 1.0) as f32).collect()
    }

    /// The levels above the portable loops that this CPU runs (printed: a level the CPU
    /// lacks is not tested here).
    fn vector_levels() -> Vec<Simd> {
        let levels: Vec<Simd> = [Simd::Avx2, Simd::Avx512]
            .into_iter()
            .filter(|&l| l <= Simd::detected())
            .collect();
        println!("vector levels tested on this CPU: {levels:?}");
        levels
    }

    /// The vector microkernels against the portable loops (which the f64 tests run through
    /// every op) on random padded planes: every row count, plane widths whose rows end inside
    /// a vector, and the slack past the last plane. The forward's sums are in one order at
    /// every level, so its bits are the same; the weight gradient's lanes differ in width.
    #[test]
    fn vector_loops_match_the_portable_ones() {
        let mut rng = Rng::new(3);
        for simd in vector_levels() {
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
                for rows in 1..=(if simd == Simd::Avx512 { MR } else { 6 }) {
                    let wts = random(&mut rng, inputs * 9 * rows);
                    let (mut a, mut b) = (vec![0f32; scratch_len(g)], vec![0f32; scratch_len(g)]);
                    portable::block(&src, &wts, rows, inputs, g, &mut a);
                    f32::block(simd, &src, &wts, rows, inputs, g, &mut b);
                    for r in 0..rows {
                        for q in (0..g.acc_len()).filter(|q| q % g.wp() < w) {
                            let (x, y) = (a[r * g.tiled_len() + q], b[r * g.tiled_len() + q]);
                            assert_eq!(x.to_bits(), y.to_bits(), "{simd:?} {h}x{w} rows {rows}");
                        }
                    }
                }
                let dy = random(&mut rng, g.padded_buffer_len(MR));
                for rows in 1..=dot_rows(simd, g) {
                    let dys: Vec<&[f32]> = (0..rows).map(|r| dy_row(&dy, r, g)).collect();
                    let (mut ta, mut tb) = ([[0f32; 9]; MR], [[0f32; 9]; MR]);
                    portable::tap_dots(&mut ta, &dys, &src, g);
                    f32::tap_dots(simd, &mut tb, &dys, &src, g);
                    for (x, y) in ta.iter().flatten().zip(tb.iter().flatten()) {
                        assert!(
                            (x - y).abs() < 1e-3 * (1.0 + x.abs()),
                            "{simd:?} {h}x{w} dots {rows}"
                        );
                    }
                }
            }
        }
    }

    /// Single-thread speed of the microkernels at every level this CPU runs, on the shapes
    /// of the two networks (`cargo test --release --lib direct3x3 -- --ignored --nocapture`).
    #[test]
    #[ignore = "a timing, not a check"]
    fn time_the_microkernels() {
        let mut rng = Rng::new(5);
        let levels: Vec<Simd> = [Simd::Portable, Simd::Avx2, Simd::Avx512]
            .into_iter()
            .filter(|&l| l <= Simd::detected())
            .collect();
        // (name, side, cin, cout, groups)
        for (name, side, cin, cout, groups) in [
            ("learned-dsc 40->32", 32, 40, 32, 1),
            ("learned-dsc 72->32 16x16", 16, 72, 32, 1),
            ("group3x3 32->8 g4", 32, 32, 8, 4),
            ("group3x3 128->32 g4 8x8", 8, 128, 32, 4),
        ] {
            let g = Plane { h: side, w: side };
            let src = random(&mut rng, g.padded_buffer_len(cin));
            let dy = random(&mut rng, g.padded_buffer_len(cout));
            let w = random(&mut rng, cout * cin / groups * 9);
            let macs = (cout * cin / groups * 9 * side * side) as f64;
            for &simd in &levels {
                let packed = Packed3x3::forward_at(simd, &w, cout, cin, groups, g);
                let mut dst = vec![MaybeUninit::<f32>::uninit(); cout * g.len()];
                let mut scratch = vec![0f32; scratch_len(g)];
                let mut dw = vec![0f32; w.len()];
                let time = |f: &mut dyn FnMut()| {
                    f();
                    let mut best = f64::MAX;
                    for _ in 0..5 {
                        let t = std::time::Instant::now();
                        for _ in 0..10 {
                            f();
                        }
                        best = best.min(t.elapsed().as_secs_f64() / 10.0);
                    }
                    2.0 * macs / best / 1e9
                };
                let fwd = time(&mut || conv_image(&mut dst, &src, &packed, g, &mut scratch, false));
                let prev = Simd::active();
                // Only this test changes the level, and only to the one timed.
                let wg = time(&mut || {
                    let per_pass = dot_rows(simd, g);
                    let (cin_g, cout_g) = (cin / groups, cout / groups);
                    let pl = g.padded_len();
                    for grp in 0..groups {
                        let mut o = grp * cout_g;
                        while o < (grp + 1) * cout_g {
                            let n = per_pass.min((grp + 1) * cout_g - o);
                            let rows: Vec<&[f32]> = (o..o + n).map(|r| dy_row(&dy, r, g)).collect();
                            for i in 0..cin_g {
                                let x = &src[(grp * cin_g + i) * pl..];
                                let mut taps = [[0f32; 9]; MR];
                                f32::tap_dots(simd, &mut taps, &rows, x, g);
                                dw[(o * cin_g + i) * 9] += taps[0][0];
                            }
                            o += n;
                        }
                    }
                });
                let _ = prev;
                println!(
                    "{name:28} {:8}: forward {fwd:6.1} GFLOP/s, weight gradient {wg:6.1} GFLOP/s",
                    simd.name()
                );
            }
        }
    }
}
