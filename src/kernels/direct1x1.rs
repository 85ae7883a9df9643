//! 1x1 convolution (a product of the weight with the planes, over their positions) as
//! register-blocked direct loops over planes wherever they lie: the forward and the input
//! gradient of one image are the same loop (rows of the destination from planes of the
//! source), the weight gradient a block of dot products.
//!
//! A GEMM library packs both operands into panels on every call; the products here are thin
//! (8 to 32 outputs per group, or a transposed product summing over 8 to 32 output planes)
//! and the planes are already rows of contiguous positions, which is the layout the
//! microkernel streams: a block of up to [`MR`] destination rows times a tile of positions
//! stays in registers while the source planes pass through, each plane one vector load per
//! tile column and one broadcast weight per row. Blocks name their rows and their planes
//! (any rows of the destination, any planes of the source), so the interleaved groups of a
//! learned-group conv and the inputs only some groups read need no copy: rows that read the
//! same planes form blocks together, and a block reads only its planes.
//!
//! The f32 loops run at the process's SIMD level (AVX-512: tiles of up to 8 rows x 48
//! positions, the weight gradient 4 x 6 dot products; AVX2 + FMA: 6 rows x 16 positions,
//! 3 x 3 dot products; portable loops in the same order, and for f64). Every output sums
//! its planes in the block's order, so the forward and the input gradient give the same bits
//! at every level; the weight gradient sums positions in fixed lanes (16 at AVX-512, 8
//! below), the same bits on every run at one level. At AVX-512 a weight gradient of 16 or
//! more outputs per group is instead a transposed product ([`dots1x1_t`]) that sums the
//! positions in order.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::simd::Simd;
use super::sparse_conv::Float;

/// Rows of a register block, at most.
pub(super) const MR: usize = 8;

/// Rows of a register block at `simd`.
fn max_rows(simd: Simd) -> usize {
    if simd >= Simd::Avx512 {
        8
    } else {
        6
    }
}

/// One register block: destination rows `writes[..rows]`, reading the source planes
/// `reads[first..end]` of the packing; its weights are `data[offset..]` as `[plane][row]`.
#[derive(Debug, Clone, Copy)]
struct Block {
    rows: usize,
    writes: [u32; MR],
    first: usize,
    end: usize,
    offset: usize,
}

/// A 1x1 conv's weights in the order the microkernel reads them.
#[derive(Debug, Clone)]
pub(super) struct Packed1x1<T> {
    blocks: Vec<Block>,
    reads: Vec<u32>,
    data: Vec<T>,
    /// One past the largest destination row and source plane.
    rows_end: usize,
    planes_end: usize,
    simd: Simd,
}

impl<T: Float> Packed1x1<T> {
    /// An empty packing for the active level.
    pub(super) fn new() -> Self {
        Self::at(Simd::active())
    }

    /// An empty packing for the level `simd`.
    pub(super) fn at(simd: Simd) -> Self {
        Self {
            blocks: Vec::new(),
            reads: Vec::new(),
            data: Vec::new(),
            rows_end: 0,
            planes_end: 0,
            simd,
        }
    }

    /// Adds destination rows `rows` that each read the source planes `reads` (in this order,
    /// which is the order each row sums them in), row `rows[j]` weighting plane `reads[k]`
    /// by `w(j, k)`. No row may be named twice in one packing.
    pub(super) fn add(&mut self, rows: &[u32], reads: &[u32], w: impl Fn(usize, usize) -> T) {
        if rows.is_empty() {
            return;
        }
        let first = self.reads.len();
        self.reads.extend_from_slice(reads);
        let end = self.reads.len();
        let per = max_rows(self.simd);
        self.data.reserve(rows.len() * reads.len());
        // As even a split into blocks as the registers allow.
        let blocks = rows.len().div_ceil(per);
        let mut j0 = 0;
        for b in 0..blocks {
            let j1 = (b + 1) * rows.len() / blocks;
            let mut writes = [0u32; MR];
            writes[..j1 - j0].copy_from_slice(&rows[j0..j1]);
            self.blocks.push(Block {
                rows: j1 - j0,
                writes,
                first,
                end,
                offset: self.data.len(),
            });
            let start = self.data.len();
            self.data
                .resize(start + reads.len() * (j1 - j0), T::from_f64(0.0));
            for (k, plane) in self.data[start..].chunks_exact_mut(j1 - j0).enumerate() {
                for (j, v) in plane.iter_mut().enumerate() {
                    *v = w(j0 + j, k);
                }
            }
            j0 = j1;
        }
        let max = |s: &[u32]| s.iter().map(|&v| v as usize + 1).max().unwrap_or(0);
        self.rows_end = self.rows_end.max(max(rows));
        self.planes_end = self.planes_end.max(max(reads));
    }
}

/// One image's 1x1 conv: the rows of `dst` (planes of `plane` positions) that the packing
/// names, each written once, from the planes of `src`. A row no block names is left as it
/// is; a block with no planes writes zeros. `parallel`: the blocks in parallel (for a batch
/// too small to keep every thread busy with images).
pub(super) fn conv1x1_image<T: Direct1x1>(
    dst: &mut [MaybeUninit<T>],
    src: &[T],
    packed: &Packed1x1<T>,
    plane: usize,
    parallel: bool,
) {
    assert!(
        dst.len() >= packed.rows_end * plane && src.len() >= packed.planes_end * plane,
        "conv1x1_image: short planes"
    );
    let d = Shared(dst.as_mut_ptr().cast::<T>());
    let run = |b: &Block| {
        let s = src.as_ptr();
        let reads = &packed.reads[b.first..b.end];
        let w = &packed.data[b.offset..b.offset + reads.len() * b.rows];
        // SAFETY: the rows and planes a block names are below `rows_end` and `planes_end`
        // (checked above), its weights are `reads.len() * rows` values, and no two blocks
        // name the same row (`Packed1x1::add`'s callers name each row once).
        unsafe {
            T::rows_block(
                packed.simd,
                d.get(),
                s,
                &b.writes[..b.rows],
                reads,
                w,
                plane,
            )
        };
    };
    let macs: usize = packed
        .blocks
        .iter()
        .map(|b| b.rows * (b.end - b.first))
        .sum::<usize>()
        * plane;
    if super::splits(parallel, macs) {
        // As many pieces as threads, of whole blocks.
        let per = packed
            .blocks
            .len()
            .div_ceil(rayon::current_num_threads().max(1));
        packed
            .blocks
            .par_chunks(per.max(1))
            .for_each(|bs| bs.iter().for_each(run));
    } else {
        packed.blocks.iter().for_each(run);
    }
}

/// The destination shared by the blocks of a parallel conv, which write disjoint rows.
#[derive(Clone, Copy)]
struct Shared<T>(*mut T);
// SAFETY: the blocks that share it write disjoint rows.
unsafe impl<T> Send for Shared<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// The pointer (a method, so that closures capture the whole `Shared`).
    fn get(self) -> *mut T {
        self.0
    }
}

/// `dw[j * cols + k] += sum over the positions of dy[row j] * x[plane k]` for the rows `dy`
/// and the planes `x` (each `plane` long; `cols = x.len()`), in register blocks of dot
/// products, a block of rows against every plane. (Blocking the positions as well, to read
/// each plane from L2 once per block of rows, measured no faster inside a training step and
/// 10-25% slower alone: more reductions.)
pub(super) fn dots1x1<T: Direct1x1>(dw: &mut [T], dy: &[&[T]], x: &[&[T]], plane: usize) {
    let cols = x.len();
    assert!(dw.len() >= dy.len() * cols);
    assert!(
        dy.iter().chain(x).all(|r| r.len() >= plane),
        "dots1x1: short planes"
    );
    let simd = Simd::active();
    let rows = T::dot_rows(simd);
    for (j0, ys) in dy.chunks(rows).enumerate() {
        T::dots(simd, &mut dw[j0 * rows * cols..], cols, ys, x, 0..plane);
    }
}

/// Output rows of a weight gradient from which [`dots1x1_t`] runs at AVX-512: a whole
/// vector of them. Single-thread GFLOP/s against [`dots1x1`] (AMD Zen 4): 32 rows over 64
/// positions 111 against 43 (the dot products' final reductions cost as much as their
/// multiply-adds there), 16 rows over 256 108 against 80, 32 and 16 rows over 1024 91-95
/// against 85; but 8 rows (a half-empty vector) 52-54 against 81-103.
const TRANSPOSED_MIN_ROWS: usize = 16;

/// Whether the weight gradient of a 1x1 with `rows` outputs per group is taken by
/// [`dots1x1_t`] (its partial sums then lie transposed, `[plane k][row j]`) rather than by
/// [`dots1x1`]: f32 at AVX-512, with [`TRANSPOSED_MIN_ROWS`] or more.
pub(super) fn transposed_dots<T: Direct1x1>(rows: usize) -> bool {
    T::TRANSPOSED_DOTS && Simd::active() == Simd::Avx512 && rows >= TRANSPOSED_MIN_ROWS
}

/// `dyt[q * rows + j] = dy[j][q]`: the rows `dy` (each at least `plane` long) transposed for
/// [`dots1x1_t`].
pub(super) fn transpose_rows<T: Copy>(dyt: &mut [T], dy: &[&[T]], plane: usize) {
    let rows = dy.len();
    assert!(dyt.len() >= rows * plane && dy.iter().all(|r| r.len() >= plane));
    for (j, row) in dy.iter().enumerate() {
        for (q, &v) in row[..plane].iter().enumerate() {
            dyt[q * rows + j] = v;
        }
    }
}

/// `dwt[k * rows + j] += sum over the positions q of x[k][q] * dyt[q * rows + j]`: the weight
/// gradient of [`dots1x1`] transposed, from the output-gradient rows transposed
/// ([`transpose_rows`]). A block of planes times a row of `rows` outputs stays in registers
/// while the positions pass through (each a broadcast per plane and a vector load per 16
/// outputs), so there is no reduction across lanes at the end: on the planes of 64-256
/// positions where those reductions dominate, about twice the dot products' speed. Every
/// element sums its positions in order, by fused multiply-adds from zero, then is added
/// into `dwt`.
pub(super) fn dots1x1_t<T: Direct1x1>(
    dwt: &mut [T],
    dyt: &[T],
    rows: usize,
    x: &[&[T]],
    plane: usize,
) {
    assert!(dwt.len() >= x.len() * rows && dyt.len() >= rows * plane);
    assert!(
        x.iter().all(|r| r.len() >= plane),
        "dots1x1_t: short planes"
    );
    T::dots_t(dwt, dyt, rows, x, plane)
}

/// The microkernels, per float type.
pub(super) trait Direct1x1: Float {
    /// Whether [`transposed_dots`] may choose [`dots1x1_t`] (f32 only).
    const TRANSPOSED_DOTS: bool;
    /// [`dots1x1_t`] once its lengths are checked.
    fn dots_t(dwt: &mut [Self], dyt: &[Self], rows: usize, x: &[&[Self]], plane: usize);

    /// `dst[writes[r] * plane + q] = sum over k of w[k * rows + r] * src[reads[k] * plane + q]`
    /// for every position `q < plane`, at the level `simd` (which the CPU has).
    ///
    /// # Safety
    /// `dst` writable and `src` readable for the rows and planes named.
    unsafe fn rows_block(
        simd: Simd,
        dst: *mut Self,
        src: *const Self,
        writes: &[u32],
        reads: &[u32],
        w: &[Self],
        plane: usize,
    );
    /// Rows of one call of [`Self::dots`] at `simd`, at most.
    fn dot_rows(simd: Simd) -> usize;
    /// `dw[j * cols + k] += sum over q in positions of dy[j][q] * x[k][q]` for the rows `dy`
    /// (at most [`Self::dot_rows`]) and every plane of `x`.
    fn dots(
        simd: Simd,
        dw: &mut [Self],
        cols: usize,
        dy: &[&[Self]],
        x: &[&[Self]],
        positions: std::ops::Range<usize>,
    );
}

impl Direct1x1 for f64 {
    const TRANSPOSED_DOTS: bool = false;
    fn dots_t(dwt: &mut [Self], dyt: &[Self], rows: usize, x: &[&[Self]], plane: usize) {
        portable::dots_t(dwt, dyt, rows, x, plane)
    }
    unsafe fn rows_block(
        _: Simd,
        dst: *mut Self,
        src: *const Self,
        writes: &[u32],
        reads: &[u32],
        w: &[Self],
        plane: usize,
    ) {
        // SAFETY: as the caller guarantees.
        unsafe { portable::rows_block(dst, src, writes, reads, w, plane) }
    }
    fn dot_rows(_: Simd) -> usize {
        4
    }
    fn dots(
        _: Simd,
        dw: &mut [Self],
        cols: usize,
        dy: &[&[Self]],
        x: &[&[Self]],
        positions: std::ops::Range<usize>,
    ) {
        portable::dots(dw, cols, dy, x, positions)
    }
}

impl Direct1x1 for f32 {
    const TRANSPOSED_DOTS: bool = true;
    fn dots_t(dwt: &mut [Self], dyt: &[Self], rows: usize, x: &[&[Self]], plane: usize) {
        #[cfg(target_arch = "x86_64")]
        if Simd::detected() == Simd::Avx512 {
            // SAFETY: the CPU has AVX-512; `dots1x1_t` checked the lengths.
            return unsafe { avx512::dots_t(dwt, dyt, rows, x, plane) };
        }
        portable::dots_t(dwt, dyt, rows, x, plane)
    }
    unsafe fn rows_block(
        simd: Simd,
        dst: *mut Self,
        src: *const Self,
        writes: &[u32],
        reads: &[u32],
        w: &[Self],
        plane: usize,
    ) {
        #[cfg(target_arch = "x86_64")]
        match simd.min(Simd::detected()) {
            // SAFETY: the CPU has the level; the rest as the caller guarantees.
            Simd::Avx512 => {
                return unsafe { avx512::rows_block(dst, src, writes, reads, w, plane) }
            }
            // SAFETY: as above.
            Simd::Avx2 => return unsafe { avx2::rows_block(dst, src, writes, reads, w, plane) },
            Simd::Portable => {}
        }
        let _ = simd;
        // SAFETY: as the caller guarantees.
        unsafe { portable::rows_block(dst, src, writes, reads, w, plane) }
    }
    fn dot_rows(simd: Simd) -> usize {
        match simd {
            Simd::Avx512 => 4,
            Simd::Avx2 => 3,
            Simd::Portable => 4,
        }
    }
    fn dots(
        simd: Simd,
        dw: &mut [Self],
        cols: usize,
        dy: &[&[Self]],
        x: &[&[Self]],
        positions: std::ops::Range<usize>,
    ) {
        assert!(dy.is_empty() || dw.len() >= (dy.len() - 1) * cols + x.len());
        assert!(dy.iter().chain(x).all(|r| r.len() >= positions.end));
        #[cfg(target_arch = "x86_64")]
        match simd.min(Simd::detected()) {
            // SAFETY: the CPU has the level; the lengths are checked above.
            Simd::Avx512 => return unsafe { avx512::dots(dw, cols, dy, x, positions) },
            // SAFETY: as above.
            Simd::Avx2 => return unsafe { avx2::dots(dw, cols, dy, x, positions) },
            Simd::Portable => {}
        }
        let _ = simd;
        portable::dots(dw, cols, dy, x, positions)
    }
}

mod portable {
    //! The loops in plain Rust, in the vector loops' order (the dot products in 8 lanes).
    use super::*;

    /// # Safety
    /// As [`Direct1x1::block`].
    pub(super) unsafe fn rows_block<T: Float>(
        dst: *mut T,
        src: *const T,
        writes: &[u32],
        reads: &[u32],
        w: &[T],
        plane: usize,
    ) {
        let rows = writes.len();
        for (r, &row) in writes.iter().enumerate() {
            // SAFETY: as the caller guarantees.
            let out =
                unsafe { std::slice::from_raw_parts_mut(dst.add(row as usize * plane), plane) };
            out.fill(T::from_f64(0.0));
            for (k, &p) in reads.iter().enumerate() {
                // SAFETY: as the caller guarantees.
                let s = unsafe { std::slice::from_raw_parts(src.add(p as usize * plane), plane) };
                let wk = w[k * rows + r];
                for (a, &v) in out.iter_mut().zip(s) {
                    *a = wk.fma(v, *a);
                }
            }
        }
    }

    /// [`super::dots1x1_t`] in the vector loops' order.
    pub(super) fn dots_t<T: Float>(
        dwt: &mut [T],
        dyt: &[T],
        rows: usize,
        x: &[&[T]],
        plane: usize,
    ) {
        for (k, xk) in x.iter().enumerate() {
            for j in 0..rows {
                let mut a = T::from_f64(0.0);
                for (q, &v) in xk[..plane].iter().enumerate() {
                    a = v.fma(dyt[q * rows + j], a);
                }
                dwt[k * rows + j] += a;
            }
        }
    }

    pub(super) fn dots<T: Float>(
        dw: &mut [T],
        cols: usize,
        dy: &[&[T]],
        x: &[&[T]],
        positions: std::ops::Range<usize>,
    ) {
        const LANES: usize = 8;
        for (j, d) in dy.iter().enumerate() {
            for (k, s) in x.iter().enumerate() {
                let mut lanes = [T::from_f64(0.0); LANES];
                let (d, s) = (&d[positions.clone()], &s[positions.clone()]);
                for (dc, sc) in d.chunks(LANES).zip(s.chunks(LANES)) {
                    for l in 0..dc.len() {
                        lanes[l] = dc[l].fma(sc[l], lanes[l]);
                    }
                }
                dw[j * cols + k] += lanes.iter().fold(T::from_f64(0.0), |a, &b| a + b);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! f32 microkernels in AVX2 + FMA intrinsics.
    use std::arch::x86_64::*;

    use crate::kernels::simd::lanes::first8 as first;

    /// `R` rows times `V` vectors from position `q`; the last vector masked to `tail`
    /// positions when `MASK`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const R: usize, const V: usize, const MASK: bool>(
        dst: &[*mut f32; R],
        src: *const f32,
        reads: &[u32],
        w: *const f32,
        plane: usize,
        q: usize,
        tail: usize,
    ) {
        // SAFETY: as `block`'s caller guarantees; masked lanes are not touched.
        unsafe {
            let m = first(tail);
            let mut acc = [[_mm256_setzero_ps(); V]; R];
            for (k, &p) in reads.iter().enumerate() {
                let s = src.add(p as usize * plane + q);
                let x: [__m256; V] = std::array::from_fn(|v| {
                    if MASK && v == V - 1 {
                        _mm256_maskload_ps(s.add(8 * v), m)
                    } else {
                        _mm256_loadu_ps(s.add(8 * v))
                    }
                });
                let wk = w.add(k * R);
                for (r, row) in acc.iter_mut().enumerate() {
                    let kr = _mm256_broadcast_ss(&*wk.add(r));
                    for (a, xv) in row.iter_mut().zip(x) {
                        *a = _mm256_fmadd_ps(kr, xv, *a);
                    }
                }
            }
            for (row, d) in acc.iter().zip(dst) {
                for (v, a) in row.iter().enumerate() {
                    if MASK && v == V - 1 {
                        _mm256_maskstore_ps(d.add(q + 8 * v), m, *a);
                    } else {
                        _mm256_storeu_ps(d.add(q + 8 * v), *a);
                    }
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline(never)]
    unsafe fn rows<const R: usize>(
        dst: *mut f32,
        src: *const f32,
        writes: &[u32],
        reads: &[u32],
        w: *const f32,
        plane: usize,
    ) {
        let d: [*mut f32; R] = std::array::from_fn(|r| {
            // SAFETY: the rows are inside `dst` (the caller's promise).
            unsafe { dst.add(writes[r] as usize * plane) }
        });
        let full = plane / 16 * 16;
        // SAFETY: every tile lies inside the rows and planes; the tail is masked.
        unsafe {
            for q in (0..full).step_by(16) {
                tile::<R, 2, false>(&d, src, reads, w, plane, q, 8);
            }
            let mut q = full;
            while plane - q >= 8 {
                tile::<R, 1, false>(&d, src, reads, w, plane, q, 8);
                q += 8;
            }
            if q < plane {
                tile::<R, 1, true>(&d, src, reads, w, plane, q, plane - q);
            }
        }
    }

    /// # Safety
    /// AVX2 and FMA; as [`Direct1x1::block`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn rows_block(
        dst: *mut f32,
        src: *const f32,
        writes: &[u32],
        reads: &[u32],
        w: &[f32],
        plane: usize,
    ) {
        let w = w.as_ptr();
        // SAFETY: as the caller guarantees.
        unsafe {
            match writes.len() {
                6 => rows::<6>(dst, src, writes, reads, w, plane),
                5 => rows::<5>(dst, src, writes, reads, w, plane),
                4 => rows::<4>(dst, src, writes, reads, w, plane),
                3 => rows::<3>(dst, src, writes, reads, w, plane),
                2 => rows::<2>(dst, src, writes, reads, w, plane),
                1 => rows::<1>(dst, src, writes, reads, w, plane),
                n => panic!("conv1x1_image: {n} rows in an AVX2 register block"),
            }
        }
    }

    /// `J x K` dot products of the rows `d` with the planes `x`, 8 positions at a time (the
    /// last vector masked), added into `dw` (rows of `cols`, from column `k0`).
    #[inline(always)]
    unsafe fn dot_tile<const J: usize, const K: usize>(
        dw: &mut [f32],
        cols: usize,
        d: &[*const f32; J],
        x: &[&[f32]],
        k0: usize,
        (p0, plane): (usize, usize),
    ) {
        // SAFETY: the rows hold `plane` values (checked by `dots1x1`); masked lanes are not
        // read.
        unsafe {
            let s: [*const f32; K] = std::array::from_fn(|k| x[k0 + k][p0..].as_ptr());
            let mut acc = [[_mm256_setzero_ps(); K]; J];
            let step = |acc: &mut [[__m256; K]; J], q: usize, m: Option<__m256i>| {
                let load = |p: *const f32| match m {
                    Some(m) => _mm256_maskload_ps(p.add(q), m),
                    None => _mm256_loadu_ps(p.add(q)),
                };
                let xs: [__m256; K] = std::array::from_fn(|k| load(s[k]));
                for (row, &dp) in acc.iter_mut().zip(d) {
                    let dv = load(dp);
                    for (a, xv) in row.iter_mut().zip(xs) {
                        *a = _mm256_fmadd_ps(dv, xv, *a);
                    }
                }
            };
            let full = plane / 8 * 8;
            for q in (0..full).step_by(8) {
                step(&mut acc, q, None);
            }
            if full < plane {
                step(&mut acc, full, Some(first(plane - full)));
            }
            for (j, row) in acc.iter().enumerate() {
                for (k, a) in row.iter().enumerate() {
                    dw[j * cols + k0 + k] += super::super::direct3x3::hsum256(*a);
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline(never)]
    unsafe fn dot_rows<const J: usize>(
        dw: &mut [f32],
        cols: usize,
        dy: &[&[f32]],
        x: &[&[f32]],
        positions: std::ops::Range<usize>,
    ) {
        let d = std::array::from_fn(|j| dy[j][positions.start..].as_ptr());
        let span = (positions.start, positions.len());
        let n = x.len();
        let mut k0 = 0;
        // SAFETY: as `dots`' caller guarantees.
        unsafe {
            while k0 + 3 <= n {
                dot_tile::<J, 3>(dw, cols, &d, x, k0, span);
                k0 += 3;
            }
            match n - k0 {
                2 => dot_tile::<J, 2>(dw, cols, &d, x, k0, span),
                1 => dot_tile::<J, 1>(dw, cols, &d, x, k0, span),
                _ => {}
            }
        }
    }

    /// # Safety
    /// AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dots(
        dw: &mut [f32],
        cols: usize,
        dy: &[&[f32]],
        x: &[&[f32]],
        positions: std::ops::Range<usize>,
    ) {
        // SAFETY: as the caller guarantees.
        unsafe {
            match dy.len() {
                3 => dot_rows::<3>(dw, cols, dy, x, positions),
                2 => dot_rows::<2>(dw, cols, dy, x, positions),
                1 => dot_rows::<1>(dw, cols, dy, x, positions),
                j => panic!("dots1x1: {j} rows at AVX2"),
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    //! f32 microkernels in AVX-512 intrinsics.
    use std::arch::x86_64::*;

    use crate::kernels::simd::lanes::first16 as first;

    /// `R` rows times `V` vectors from position `q`; the last vector masked to `tail`
    /// positions when `MASK`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const R: usize, const V: usize, const MASK: bool>(
        dst: &[*mut f32; R],
        src: *const f32,
        reads: &[u32],
        w: *const f32,
        plane: usize,
        q: usize,
        tail: usize,
    ) {
        // SAFETY: as `block`'s caller guarantees; masked lanes are not touched.
        unsafe {
            let m = first(tail);
            let mut acc = [[_mm512_setzero_ps(); V]; R];
            for (k, &p) in reads.iter().enumerate() {
                let s = src.add(p as usize * plane + q);
                let x: [__m512; V] = std::array::from_fn(|v| {
                    if MASK && v == V - 1 {
                        _mm512_maskz_loadu_ps(m, s.add(16 * v))
                    } else {
                        _mm512_loadu_ps(s.add(16 * v))
                    }
                });
                let wk = w.add(k * R);
                for (r, row) in acc.iter_mut().enumerate() {
                    let kr = _mm512_set1_ps(*wk.add(r));
                    for (a, xv) in row.iter_mut().zip(x) {
                        *a = _mm512_fmadd_ps(kr, xv, *a);
                    }
                }
            }
            for (row, d) in acc.iter().zip(dst) {
                for (v, a) in row.iter().enumerate() {
                    if MASK && v == V - 1 {
                        _mm512_mask_storeu_ps(d.add(q + 16 * v), m, *a);
                    } else {
                        _mm512_storeu_ps(d.add(q + 16 * v), *a);
                    }
                }
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    #[inline(never)]
    unsafe fn rows<const R: usize, const V: usize>(
        dst: *mut f32,
        src: *const f32,
        writes: &[u32],
        reads: &[u32],
        w: *const f32,
        plane: usize,
    ) {
        let d: [*mut f32; R] = std::array::from_fn(|r| {
            // SAFETY: the rows are inside `dst` (the caller's promise).
            unsafe { dst.add(writes[r] as usize * plane) }
        });
        let width = 16 * V;
        let full = plane / width * width;
        // SAFETY: every tile lies inside the rows and planes; the tail is masked.
        unsafe {
            for q in (0..full).step_by(width) {
                tile::<R, V, false>(&d, src, reads, w, plane, q, 16);
            }
            let mut q = full;
            while plane - q >= 16 {
                tile::<R, 1, false>(&d, src, reads, w, plane, q, 16);
                q += 16;
            }
            if q < plane {
                tile::<R, 1, true>(&d, src, reads, w, plane, q, plane - q);
            }
        }
    }

    /// # Safety
    /// AVX-512 (F, BW, VL, DQ) and FMA; as [`Direct1x1::block`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    pub(super) unsafe fn rows_block(
        dst: *mut f32,
        src: *const f32,
        writes: &[u32],
        reads: &[u32],
        w: &[f32],
        plane: usize,
    ) {
        let w = w.as_ptr();
        // Tiles of 64 positions where 4 vectors fit beside the rows' accumulators, else 48.
        // SAFETY: as the caller guarantees.
        unsafe {
            match writes.len() {
                8 => rows::<8, 3>(dst, src, writes, reads, w, plane),
                7 => rows::<7, 3>(dst, src, writes, reads, w, plane),
                6 => rows::<6, 4>(dst, src, writes, reads, w, plane),
                5 => rows::<5, 4>(dst, src, writes, reads, w, plane),
                4 => rows::<4, 4>(dst, src, writes, reads, w, plane),
                3 => rows::<3, 4>(dst, src, writes, reads, w, plane),
                2 => rows::<2, 4>(dst, src, writes, reads, w, plane),
                1 => rows::<1, 4>(dst, src, writes, reads, w, plane),
                n => panic!("conv1x1_image: {n} rows in an AVX-512 register block"),
            }
        }
    }

    /// The sum of the 16 lanes of each of the 16 vectors `a`, lane `i` holding `a[i]`'s: a
    /// tree of 15 vector adds (about 3 instructions a vector, against 8 for one sum at a
    /// time), the same additions in the same order on every call.
    #[inline(always)]
    unsafe fn reduce16(a: &[__m512; 16]) -> __m512 {
        // SAFETY: AVX-512F is enabled by the caller.
        unsafe {
            // 16 -> 8: B[i] holds a[i]'s and a[i + 8]'s 256-bit halves added (8 lanes each).
            let b: [__m512; 8] = std::array::from_fn(|i| {
                let t = _mm512_shuffle_f32x4::<0x44>(a[i], a[i + 8]);
                let u = _mm512_shuffle_f32x4::<0xEE>(a[i], a[i + 8]);
                _mm512_add_ps(t, u)
            });
            // 8 -> 4: C[i]'s 128-bit chunks hold 4-lane partials of a[i], a[i + 8], a[i + 4],
            // a[i + 12].
            let c: [__m512; 4] = std::array::from_fn(|i| {
                let t = _mm512_shuffle_f32x4::<0x88>(b[i], b[i + 4]);
                let u = _mm512_shuffle_f32x4::<0xDD>(b[i], b[i + 4]);
                _mm512_add_ps(t, u)
            });
            // 4 -> 2 -> 1, within the chunks.
            let d: [__m512; 2] = std::array::from_fn(|i| {
                let t = _mm512_shuffle_ps::<0x88>(c[i], c[i + 2]);
                let u = _mm512_shuffle_ps::<0xDD>(c[i], c[i + 2]);
                _mm512_add_ps(t, u)
            });
            let e = _mm512_add_ps(
                _mm512_shuffle_ps::<0x88>(d[0], d[1]),
                _mm512_shuffle_ps::<0xDD>(d[0], d[1]),
            );
            // Lane 4k + m of `e` holds C[[0, 2, 1, 3][m]]'s chunk k, chunk k of C[i] being
            // a[i + [0, 8, 4, 12][k]]: put lane `i` in place `i`.
            let order = _mm512_setr_epi32(0, 2, 1, 3, 8, 10, 9, 11, 4, 6, 5, 7, 12, 14, 13, 15);
            _mm512_permutexvar_ps(order, e)
        }
    }

    /// `J x K` dot products of the rows `d` with the planes `x`, 16 positions at a time (the
    /// last vector masked), added into `dw` (rows of `cols`, from column `k0`).
    #[inline(always)]
    unsafe fn dot_tile<const J: usize, const K: usize>(
        dw: &mut [f32],
        cols: usize,
        d: &[*const f32; J],
        x: &[&[f32]],
        k0: usize,
        (p0, plane): (usize, usize),
    ) {
        // SAFETY: the rows hold `plane` values (checked by `dots1x1`); masked lanes are not
        // read.
        unsafe {
            let s: [*const f32; K] = std::array::from_fn(|k| x[k0 + k][p0..].as_ptr());
            let mut acc = [[_mm512_setzero_ps(); K]; J];
            let full = plane / 16 * 16;
            for q in (0..full).step_by(16) {
                let xs: [__m512; K] = std::array::from_fn(|k| _mm512_loadu_ps(s[k].add(q)));
                for (row, &dp) in acc.iter_mut().zip(d) {
                    let dv = _mm512_loadu_ps(dp.add(q));
                    for (a, xv) in row.iter_mut().zip(xs) {
                        *a = _mm512_fmadd_ps(dv, xv, *a);
                    }
                }
            }
            if full < plane {
                let m = first(plane - full);
                let xs: [__m512; K] =
                    std::array::from_fn(|k| _mm512_maskz_loadu_ps(m, s[k].add(full)));
                for (row, &dp) in acc.iter_mut().zip(d) {
                    let dv = _mm512_maskz_loadu_ps(m, dp.add(full));
                    for (a, xv) in row.iter_mut().zip(xs) {
                        *a = _mm512_fmadd_ps(dv, xv, *a);
                    }
                }
            }
            // The lanes of every accumulator summed together, 16 accumulators at a time.
            let mut flat = [_mm512_setzero_ps(); 32];
            for (j, row) in acc.iter().enumerate() {
                flat[j * K..(j + 1) * K].copy_from_slice(row);
            }
            let mut sums = [0f32; 32];
            for batch in 0..(J * K).div_ceil(16) {
                let v: [__m512; 16] = std::array::from_fn(|i| flat[batch * 16 + i]);
                _mm512_storeu_ps(sums.as_mut_ptr().add(batch * 16), reduce16(&v));
            }
            for (a, &s) in sums.iter().enumerate().take(J * K) {
                dw[(a / K) * cols + k0 + a % K] += s;
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    #[inline(never)]
    unsafe fn dot_rows<const J: usize>(
        dw: &mut [f32],
        cols: usize,
        dy: &[&[f32]],
        x: &[&[f32]],
        positions: std::ops::Range<usize>,
    ) {
        let d = std::array::from_fn(|j| dy[j][positions.start..].as_ptr());
        let span = (positions.start, positions.len());
        let n = x.len();
        let mut k0 = 0;
        // SAFETY: as `dots`' caller guarantees.
        unsafe {
            while k0 + 6 <= n {
                dot_tile::<J, 6>(dw, cols, &d, x, k0, span);
                k0 += 6;
            }
            match n - k0 {
                5 => dot_tile::<J, 5>(dw, cols, &d, x, k0, span),
                4 => dot_tile::<J, 4>(dw, cols, &d, x, k0, span),
                3 => dot_tile::<J, 3>(dw, cols, &d, x, k0, span),
                2 => dot_tile::<J, 2>(dw, cols, &d, x, k0, span),
                1 => dot_tile::<J, 1>(dw, cols, &d, x, k0, span),
                _ => {}
            }
        }
    }

    /// # Safety
    /// AVX-512 (F, BW, VL, DQ) and FMA; the lengths as [`super::dots1x1_t`] checks them.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    pub(super) unsafe fn dots_t(
        dwt: &mut [f32],
        dyt: &[f32],
        rows: usize,
        x: &[&[f32]],
        plane: usize,
    ) {
        // Output columns in runs of two vectors, then one (the last one masked).
        let mut j0 = 0;
        // SAFETY: as the caller guarantees.
        unsafe {
            while j0 < rows {
                let n = (rows - j0).min(32);
                let m = [first(n), first(n.saturating_sub(16))];
                let run = TRun {
                    dwt: dwt.as_mut_ptr(),
                    dyt: dyt.as_ptr(),
                    rows,
                    j0,
                    m,
                    plane,
                };
                match (n > 16, n % 16 == 0) {
                    (true, true) => run.planes::<2, false>(x),
                    (true, false) => run.planes::<2, true>(x),
                    (false, true) => run.planes::<1, false>(x),
                    (false, false) => run.planes::<1, true>(x),
                }
                j0 += n;
            }
        }
    }

    /// One run of output columns `j0..` of [`dots_t`].
    struct TRun {
        dwt: *mut f32,
        dyt: *const f32,
        rows: usize,
        j0: usize,
        /// The lanes of each vector inside the run.
        m: [__mmask16; 2],
        plane: usize,
    }

    impl TRun {
        /// Every plane of `x`, eight at a time.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
        #[inline]
        unsafe fn planes<const V: usize, const MASKED: bool>(&self, x: &[&[f32]]) {
            let mut k0 = 0;
            // SAFETY: as `dots_t`'s caller guarantees.
            unsafe {
                while k0 + 8 <= x.len() {
                    self.block::<8, V, MASKED>(x, k0);
                    k0 += 8;
                }
                while k0 < x.len() {
                    self.block::<1, V, MASKED>(x, k0);
                    k0 += 1;
                }
            }
        }

        /// Planes `k0..k0 + K` against the run's columns, over every position.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
        #[inline]
        unsafe fn block<const K: usize, const V: usize, const MASKED: bool>(
            &self,
            x: &[&[f32]],
            k0: usize,
        ) {
            // SAFETY: the planes hold `plane` values and `dyt` `plane` rows of `rows`, `dwt`
            // the block's rows (checked by `dots1x1_t`); masked lanes are not touched.
            unsafe {
                let load = |p: *const f32, v: usize| {
                    if MASKED {
                        _mm512_maskz_loadu_ps(self.m[v], p)
                    } else {
                        _mm512_loadu_ps(p)
                    }
                };
                let xs: [*const f32; K] = std::array::from_fn(|k| x[k0 + k].as_ptr());
                let mut acc = [[_mm512_setzero_ps(); V]; K];
                let mut d = self.dyt.add(self.j0);
                for q in 0..self.plane {
                    let dv: [__m512; V] = std::array::from_fn(|v| load(d.add(16 * v), v));
                    for (a, xk) in acc.iter_mut().zip(&xs) {
                        let b = _mm512_set1_ps(*xk.add(q));
                        for (a, dv) in a.iter_mut().zip(&dv) {
                            *a = _mm512_fmadd_ps(b, *dv, *a);
                        }
                    }
                    d = d.add(self.rows);
                }
                for (k, a) in acc.iter().enumerate() {
                    let w = self.dwt.add((k0 + k) * self.rows + self.j0);
                    for (v, a) in a.iter().enumerate() {
                        let sum = _mm512_add_ps(load(w.add(16 * v), v), *a);
                        if MASKED {
                            _mm512_mask_storeu_ps(w.add(16 * v), self.m[v], sum);
                        } else {
                            _mm512_storeu_ps(w.add(16 * v), sum);
                        }
                    }
                }
            }
        }
    }

    /// # Safety
    /// AVX-512 (F, BW, VL, DQ) and FMA.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    pub(super) unsafe fn dots(
        dw: &mut [f32],
        cols: usize,
        dy: &[&[f32]],
        x: &[&[f32]],
        positions: std::ops::Range<usize>,
    ) {
        // SAFETY: as the caller guarantees.
        unsafe {
            match dy.len() {
                4 => dot_rows::<4>(dw, cols, dy, x, positions),
                3 => dot_rows::<3>(dw, cols, dy, x, positions),
                2 => dot_rows::<2>(dw, cols, dy, x, positions),
                1 => dot_rows::<1>(dw, cols, dy, x, positions),
                j => panic!("dots1x1: {j} rows at AVX-512"),
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

    fn levels() -> Vec<Simd> {
        let l: Vec<Simd> = [Simd::Portable, Simd::Avx2, Simd::Avx512]
            .into_iter()
            .filter(|&l| l <= Simd::detected())
            .collect();
        println!("1x1 loops tested at {l:?}");
        l
    }

    /// Every level against a plain triple loop in the same order (the same bits): rows and
    /// planes in any order, blocks of every size, planes whose length ends inside a vector;
    /// and the dot products within rounding.
    #[test]
    fn the_loops_match_a_plain_product() {
        let mut rng = Rng::new(17);
        for simd in levels() {
            for plane in [1, 7, 16, 31, 64, 100, 1024] {
                for (nrows, nreads) in [(1, 1), (3, 5), (8, 2), (13, 9), (24, 45)] {
                    let src = random(&mut rng, 50 * plane);
                    // (24 x 45 at 1024 positions is split among threads when asked to.)
                    let writes: Vec<u32> = (0..nrows as u32).map(|r| (r * 7 + 3) % 29).collect();
                    let mut uniq = writes.clone();
                    uniq.sort_unstable();
                    uniq.dedup();
                    let writes = uniq;
                    let reads: Vec<u32> = (0..nreads as u32).map(|k| (k * 11 + 1) % 50).collect();
                    let w = random(&mut rng, writes.len() * reads.len());
                    let mut packed = Packed1x1::at(simd);
                    packed.add(&writes, &reads, |j, k| w[j * reads.len() + k]);
                    let mut dst = vec![MaybeUninit::new(f32::NAN); 29 * plane];
                    conv1x1_image(&mut dst, &src, &packed, plane, plane % 2 == 0);
                    for (j, &row) in writes.iter().enumerate() {
                        for q in 0..plane {
                            let mut a = 0f32;
                            for (k, &p) in reads.iter().enumerate() {
                                a = w[j * reads.len() + k].mul_add(src[p as usize * plane + q], a);
                            }
                            // SAFETY: every named row is written.
                            let got = unsafe { dst[row as usize * plane + q].assume_init() };
                            assert_eq!(
                                a.to_bits(),
                                got.to_bits(),
                                "{simd:?} plane {plane} row {row}"
                            );
                        }
                    }
                }
            }
        }
        // The dot products (at the active level: they read it), against float64 sums within
        // float32 rounding of the sum of the terms' magnitudes.
        for plane in [1, 9, 16, 17, 64, 100, 1024] {
            for (rows, cols) in [(7, 10), (1, 1), (4, 6), (3, 13), (5, 5), (8, 12), (9, 50)] {
                let a = random(&mut rng, rows * plane);
                let b = random(&mut rng, cols * plane);
                let dy: Vec<&[f32]> = a.chunks(plane).collect();
                let x: Vec<&[f32]> = b.chunks(plane).collect();
                let mut dw = vec![1f32; rows * cols];
                dots1x1(&mut dw, &dy, &x, plane);
                for j in 0..rows {
                    for k in 0..cols {
                        let terms = (0..plane).map(|q| dy[j][q] as f64 * x[k][q] as f64);
                        let (e, mag) = terms.fold((1.0, 1.0), |(s, m), t| (s + t, m + t.abs()));
                        let got = dw[j * cols + k] as f64;
                        assert!(
                            (e - got).abs() < 4e-7 * mag,
                            "dots {plane} {rows}x{cols} at {j} {k}: {got} vs {e}"
                        );
                    }
                }
            }
        }
    }

    /// The transposed weight gradient: the AVX-512 loops give the portable loops' bits (run
    /// where the CPU has AVX-512) and both give the dot products' sums within rounding, for
    /// output counts that fill two vectors, one, or part of one, and plane counts that do and
    /// do not fill a block, added into what `dwt` held.
    #[test]
    fn transposed_dots_match_the_dot_products() {
        let mut rng = Rng::new(17);
        for (rows, cols, plane) in [
            (32, 19, 64),
            (16, 8, 256),
            (8, 3, 5),
            (40, 9, 17),
            (1, 1, 1),
        ] {
            let dy = random(&mut rng, rows * plane);
            let x = random(&mut rng, cols * plane);
            let (dys, xs): (Vec<&[f32]>, Vec<&[f32]>) =
                (dy.chunks(plane).collect(), x.chunks(plane).collect());
            let start = random(&mut rng, rows * cols);
            let mut dw = start.clone();
            dots1x1(&mut dw, &dys, &xs, plane);
            let mut dyt = vec![0f32; rows * plane];
            transpose_rows(&mut dyt, &dys, plane);
            // `start` transposed, so both add into the same values.
            let mut dwt: Vec<f32> = (0..cols * rows)
                .map(|i| start[(i % rows) * cols + i / rows])
                .collect();
            let mut portable = dwt.clone();
            dots1x1_t(&mut dwt, &dyt, rows, &xs, plane);
            portable::dots_t(&mut portable, &dyt, rows, &xs, plane);
            println!(
                "transposed dots at {:?}",
                Simd::detected().min(Simd::Avx512)
            );
            for k in 0..cols {
                for j in 0..rows {
                    let (t, p, d) = (dwt[k * rows + j], portable[k * rows + j], dw[j * cols + k]);
                    assert!(
                        t.to_bits() == p.to_bits(),
                        "{rows}x{cols}x{plane} ({j},{k}): {t} vs {p}"
                    );
                    assert!(
                        (t - d).abs() < 1e-4 * (1.0 + d.abs()),
                        "{rows}x{cols}x{plane}: {t} vs {d}"
                    );
                }
            }
        }
    }

    /// Single-thread speed against the GEMM library on CondenseNet-86's 1x1 shapes
    /// (`cargo test --release --lib direct1x1 -- --ignored --nocapture`).
    #[test]
    #[ignore = "a timing, not a check"]
    fn time_against_the_gemm_library() {
        use super::super::conv::{matmul, matmul_into, Mat};
        use gemm::Parallelism;
        // Run alone: the level is the process's (ABLATE_SIMD caps it).
        crate::kernels::simd::set_from_env().unwrap();
        println!("at {:?}", Simd::active());
        let mut rng = Rng::new(3);
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
            best
        };
        // (outputs, inputs, plane)
        for (m, k, plane) in [
            (8, 128, 1024),
            (32, 128, 1024),
            (16, 300, 256),
            (32, 600, 64),
            (32, 160, 1024),
            (16, 250, 256),
            (32, 800, 64),
            (16, 128, 1024),
            (8, 128, 256),
        ] {
            let a = random(&mut rng, k * plane);
            let dy = random(&mut rng, m * plane);
            let w = random(&mut rng, m * k);
            let flops = 2.0 * (m * k * plane) as f64 / 1e9;
            let rows: Vec<u32> = (0..m as u32).collect();
            let reads: Vec<u32> = (0..k as u32).collect();
            let mut packed = Packed1x1::new();
            packed.add(&rows, &reads, |j, kk| w[j * k + kk]);
            let mut back = Packed1x1::new();
            back.add(&reads, &rows, |c, o| w[o * k + c]);
            let mut y = vec![MaybeUninit::new(0f32); m * plane];
            let mut da = vec![MaybeUninit::new(0f32); k * plane];
            let ours = time(&mut || conv1x1_image(&mut y, &a, &packed, plane, false));
            let ours_b = time(&mut || conv1x1_image(&mut da, &dy, &back, plane, false));
            let (dys, xs): (Vec<&[f32]>, Vec<&[f32]>) =
                (dy.chunks(plane).collect(), a.chunks(plane).collect());
            let mut dw = vec![0f32; m * k];
            let ours_w = time(&mut || dots1x1(&mut dw, &dys, &xs, plane));
            let mut dyt = vec![0f32; m * plane];
            let ours_t = time(&mut || {
                transpose_rows(&mut dyt, &dys, plane);
                dots1x1_t(&mut dw, &dyt, m, &xs, plane)
            });
            let p = Parallelism::None;
            let theirs = time(&mut || {
                matmul_into(
                    &mut y,
                    (m, plane, k),
                    Mat::rows(&w, k),
                    Mat::rows(&a, plane),
                    p,
                )
            });
            let mut dab = vec![0f32; k * plane];
            let theirs_b = time(&mut || {
                matmul(
                    &mut dab,
                    (k, plane, m),
                    Mat::transposed(&w, k),
                    Mat::rows(&dy, plane),
                    false,
                    p,
                )
            });
            let theirs_w = time(&mut || {
                matmul(
                    &mut dw,
                    (m, k, plane),
                    Mat::rows(&dy, plane),
                    Mat::transposed(&a, plane),
                    true,
                    p,
                )
            });
            println!(
                "{m:3} x {k:3} x {plane:4}: forward {:5.1} vs gemm {:5.1} GFLOP/s, input gradient {:5.1} vs {:5.1}, weight gradient {:5.1} (transposed {:5.1}) vs {:5.1}",
                flops / ours, flops / theirs, flops / ours_b, flops / theirs_b, flops / ours_w, flops / ours_t, flops / theirs_w
            );
        }
    }
}
