//! A 3x3 convolution (stride 1, zero padding 1) in which every output plane sums a list of
//! kernels, each over one input plane: the depthwise conv of the converted learned-dsc
//! layer (one kernel per output) and its input gradient (an input channel sums the few
//! depthwise channels that gather it); and the masked learned-dsc conv over its live kernels
//! on planes wider than 8 (see `stage::LISTS_MIN_WIDTH`).
//!
//! [`super::pair3x3`]'s tiles share each loaded input vector among all the kernels that read
//! a plane. The price is a tile row per output that is zeroed, then loaded and stored for
//! every kernel, and copied into the output plane at the end. With one to a few kernels per
//! output, that price is most of the work (the copies alone were 9% of a converted
//! CondenseNeXt step). Here each output keeps its accumulators in registers over a block of
//! rows (up to [`ROWS`] rows of up to 32 columns). Its kernels stream their input rows
//! through the block: each loaded input row serves the up to three output rows it touches.
//! The finished block is stored straight into the output plane.
//!
//! Order: every output element sums its kernels in ascending input plane, and each kernel's
//! taps in tap order, by fused multiply-adds from zero. That is the order of pair3x3's tiles,
//! so both give the same bits.

use std::mem::MaybeUninit;
use std::ops::Range;

use rayon::prelude::*;

use super::pair3x3::PackedPairs;
use super::simd::Simd;
use super::sparse_conv::{Float, Plane};

/// Output rows of a register block.
const ROWS: usize = 4;

/// Each output plane's kernels, in ascending order of the input plane they read.
#[derive(Debug, Clone)]
pub(super) struct KernelLists<T> {
    /// Output `o`'s kernels are `start[o]..start[o + 1]`.
    start: Vec<u32>,
    /// Per kernel: the input plane it reads.
    reads: Vec<u32>,
    /// Per kernel: its 9 taps in tap order.
    taps: Vec<T>,
    /// The level that runs it.
    simd: Simd,
}

impl<T: Float> KernelLists<T> {
    /// The kernels of `packed`, grouped by output plane (the outputs with none give zero).
    pub(super) fn by_output(packed: &PackedPairs<T>) -> Self {
        let outputs = packed.outputs();
        let mut start = vec![0u32; outputs + 1];
        for (_, o, _) in packed.kernels() {
            start[o + 1] += 1;
        }
        for o in 0..outputs {
            start[o + 1] += start[o];
        }
        let kernels = start[outputs] as usize;
        let mut next = start.clone();
        let (mut reads, mut taps) = (vec![0u32; kernels], vec![T::from_f64(0.0); 9 * kernels]);
        // `packed` runs its kernels in ascending read order, so each list is in that order.
        for (c, o, k) in packed.kernels() {
            let p = next[o] as usize;
            next[o] += 1;
            reads[p] = c as u32;
            taps[p * 9..][..9].copy_from_slice(k);
        }
        Self {
            start,
            reads,
            taps,
            simd: packed.simd(),
        }
    }

    fn outputs(&self) -> usize {
        self.start.len() - 1
    }

    /// Output `o`'s kernels.
    #[inline(always)]
    fn of(&self, o: usize) -> Range<usize> {
        self.start[o] as usize..self.start[o + 1] as usize
    }
}

/// One image's output planes `dst` (`[outputs, h * w]`, all written) from the padded planes
/// `src` (stride `g.padded_len()`, borders zero). `parallel`: the outputs split among the
/// threads.
pub(super) fn kernel_lists_image<T: ListPlanes>(
    dst: &mut [MaybeUninit<T>],
    src: &[T],
    lists: &KernelLists<T>,
    g: Plane,
    parallel: bool,
) {
    let (plane, outputs) = (g.len(), lists.outputs());
    assert!(dst.len() >= outputs * plane);
    let planes_read = lists.reads.iter().max().map_or(0, |&c| c as usize + 1);
    assert!(
        src.len() >= planes_read * g.padded_len(),
        "kernel_lists_image: short input"
    );
    if plane == 0 {
        return;
    }
    let dst = &mut dst[..outputs * plane];
    if super::splits(parallel, 9 * lists.reads.len() * plane) {
        let per = outputs.div_ceil(rayon::current_num_threads().max(1)).max(1);
        dst.par_chunks_mut(per * plane)
            .enumerate()
            // SAFETY: each chunk holds whole planes; `src` reaches every read (checked).
            .for_each(|(k, d)| unsafe { T::planes(lists, src, g, k * per, d) });
    } else {
        // SAFETY: as above.
        unsafe { T::planes(lists, src, g, 0, dst) }
    }
}

/// The loops, per float type.
pub(super) trait ListPlanes: Float {
    /// The output planes `first..` that `dst` holds (`dst.len() / (h w)` of them).
    ///
    /// # Safety
    /// `dst` holds whole planes of outputs `lists` has, and `src` reaches every plane it reads.
    unsafe fn planes(
        lists: &KernelLists<Self>,
        src: &[Self],
        g: Plane,
        first: usize,
        dst: &mut [MaybeUninit<Self>],
    );
}

impl ListPlanes for f64 {
    unsafe fn planes(
        lists: &KernelLists<Self>,
        src: &[Self],
        g: Plane,
        first: usize,
        dst: &mut [MaybeUninit<Self>],
    ) {
        portable::planes(lists, src, g, first, dst)
    }
}

impl ListPlanes for f32 {
    unsafe fn planes(
        lists: &KernelLists<Self>,
        src: &[Self],
        g: Plane,
        first: usize,
        dst: &mut [MaybeUninit<Self>],
    ) {
        #[cfg(target_arch = "x86_64")]
        match lists.simd.min(Simd::detected()) {
            // SAFETY: the CPU has the level; the rest as the caller guarantees.
            Simd::Avx512 => return unsafe { avx512::planes(lists, src, g, first, dst) },
            // SAFETY: as above.
            Simd::Avx2 => return unsafe { avx2::planes(lists, src, g, first, dst) },
            Simd::Portable => {}
        }
        portable::planes(lists, src, g, first, dst)
    }
}

mod portable {
    //! The loops in plain Rust, in the vector loops' order.
    use super::*;

    pub(super) fn planes<T: Float>(
        lists: &KernelLists<T>,
        src: &[T],
        g: Plane,
        first: usize,
        dst: &mut [MaybeUninit<T>],
    ) {
        let (pl, wp) = (g.padded_len(), g.wp());
        for (j, out) in dst.chunks_exact_mut(g.len()).enumerate() {
            let kernels = lists.of(first + j);
            for y in 0..g.h {
                for x in 0..g.w {
                    let mut a = T::from_f64(0.0);
                    for p in kernels.clone() {
                        let s = &src[lists.reads[p] as usize * pl + y * wp + x..];
                        let k = &lists.taps[p * 9..][..9];
                        for i in 0..3 {
                            for jj in 0..3 {
                                a = k[i * 3 + jj].fma(s[i * wp + jj], a);
                            }
                        }
                    }
                    out[y * g.w + x].write(a);
                }
            }
        }
    }
}

/// The column blocks of a plane row of `w`: `(first column, columns)`, `lanes * vectors`
/// columns each, the last one shorter.
#[cfg(target_arch = "x86_64")]
fn column_blocks(w: usize, width: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..w)
        .step_by(width)
        .map(move |x0| (x0, (w - x0).min(width)))
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    //! The loops in AVX-512 intrinsics: blocks of [`ROWS`] rows of two 16-wide vectors.
    use std::arch::x86_64::*;

    use super::*;
    use crate::kernels::simd::lanes::first16;

    /// # Safety
    /// AVX-512F and FMA; as [`ListPlanes::planes`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    pub(super) unsafe fn planes(
        lists: &KernelLists<f32>,
        src: &[f32],
        g: Plane,
        first: usize,
        dst: &mut [MaybeUninit<f32>],
    ) {
        if g.w <= 8 {
            // A row fits in 8 lanes: a half-masked 512-bit vector costs as much as a whole
            // one, so the 256-bit loops do the same sums in half the time (the same bits).
            // SAFETY: the CPU has AVX2 and FMA too; the rest as the caller guarantees.
            return unsafe { super::avx2::planes(lists, src, g, first, dst) };
        }
        let plane = g.len();
        for (j, out) in dst.chunks_exact_mut(plane).enumerate() {
            let kernels = lists.of(first + j);
            let out = out.as_mut_ptr().cast::<f32>();
            for (x0, cols) in column_blocks(g.w, 32) {
                let m = [first16(cols.min(16)), first16(cols.saturating_sub(16))];
                let b = Block {
                    lists,
                    kernels: kernels.clone(),
                    src: src.as_ptr(),
                    g,
                    x0,
                    m,
                    out,
                };
                // SAFETY: as the caller guarantees; the block's columns lie in the row.
                unsafe {
                    match (cols, cols % 16 == 0) {
                        (17.., true) => b.rows::<2, false>(),
                        (17.., false) => b.rows::<2, true>(),
                        (_, true) => b.rows::<1, false>(),
                        (_, false) => b.rows::<1, true>(),
                    }
                }
            }
        }
    }

    /// One output plane's column block.
    struct Block<'a> {
        lists: &'a KernelLists<f32>,
        kernels: Range<usize>,
        src: *const f32,
        g: Plane,
        x0: usize,
        /// The lanes of each vector inside the row.
        m: [__mmask16; 2],
        out: *mut f32,
    }

    impl Block<'_> {
        /// Every row of the column block, [`ROWS`] at a time; `V` vectors a row, `MASKED` when
        /// the last of them is partial.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
        #[inline]
        unsafe fn rows<const V: usize, const MASKED: bool>(&self) {
            let mut y0 = 0;
            // SAFETY: as the caller guarantees.
            unsafe {
                while y0 + ROWS <= self.g.h {
                    self.block::<ROWS, V, MASKED>(y0);
                    y0 += ROWS;
                }
                while y0 < self.g.h {
                    self.block::<1, V, MASKED>(y0);
                    y0 += 1;
                }
            }
        }

        /// Output rows `y0..y0 + R` of the column block.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
        #[inline]
        unsafe fn block<const R: usize, const V: usize, const MASKED: bool>(&self, y0: usize) {
            let (pl, wp) = (self.g.padded_len(), self.g.wp());
            // SAFETY: the caller's promise: the reads and the block lie in their planes (a
            // partial vector's lanes past the row are masked off).
            unsafe {
                let load = |p: *const f32, v: usize| {
                    if MASKED {
                        _mm512_maskz_loadu_ps(self.m[v], p)
                    } else {
                        _mm512_loadu_ps(p)
                    }
                };
                let mut acc = [[_mm512_setzero_ps(); V]; R];
                for p in self.kernels.clone() {
                    let k: [__m512; 9] =
                        std::array::from_fn(|t| _mm512_set1_ps(self.lists.taps[p * 9 + t]));
                    let c = self.lists.reads[p] as usize;
                    let s = self.src.add(c * pl + y0 * wp + self.x0);
                    for row in 0..R + 2 {
                        for dx in 0..3 {
                            let x: [__m512; V] =
                                std::array::from_fn(|v| load(s.add(row * wp + dx + 16 * v), v));
                            for (r, acc) in acc.iter_mut().enumerate() {
                                if row >= r && row - r < 3 {
                                    let t = (row - r) * 3 + dx;
                                    for (a, x) in acc.iter_mut().zip(&x) {
                                        *a = _mm512_fmadd_ps(k[t], *x, *a);
                                    }
                                }
                            }
                        }
                    }
                }
                for (r, acc) in acc.iter().enumerate() {
                    let o = self.out.add((y0 + r) * self.g.w + self.x0);
                    for (v, a) in acc.iter().enumerate() {
                        if MASKED {
                            _mm512_mask_storeu_ps(o.add(16 * v), self.m[v], *a);
                        } else {
                            _mm512_storeu_ps(o.add(16 * v), *a);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! The loops in AVX2 + FMA intrinsics: blocks of [`ROWS`] rows of one 8-wide vector.
    use std::arch::x86_64::*;

    use super::*;
    use crate::kernels::simd::lanes::first8;

    /// # Safety
    /// AVX2 and FMA; as [`ListPlanes::planes`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn planes(
        lists: &KernelLists<f32>,
        src: &[f32],
        g: Plane,
        first: usize,
        dst: &mut [MaybeUninit<f32>],
    ) {
        let plane = g.len();
        for (j, out) in dst.chunks_exact_mut(plane).enumerate() {
            let kernels = lists.of(first + j);
            let out = out.as_mut_ptr().cast::<f32>();
            for (x0, cols) in column_blocks(g.w, 8) {
                // SAFETY: the CPU has AVX2 (this function's features).
                let m = unsafe { first8(cols) };
                let b = Block {
                    lists,
                    kernels: kernels.clone(),
                    src: src.as_ptr(),
                    g,
                    x0,
                    m,
                    out,
                };
                // SAFETY: as the caller guarantees; the block's columns lie in the row.
                unsafe {
                    if cols == 8 {
                        b.rows::<false>()
                    } else {
                        b.rows::<true>()
                    }
                }
            }
        }
    }

    /// One output plane's column block.
    struct Block<'a> {
        lists: &'a KernelLists<f32>,
        kernels: Range<usize>,
        src: *const f32,
        g: Plane,
        x0: usize,
        /// The lanes inside the row (all ones in their sign bit, or none).
        m: __m256i,
        out: *mut f32,
    }

    impl Block<'_> {
        /// Every row of the column block, [`ROWS`] at a time; `MASKED` when the vector is
        /// partial.
        #[target_feature(enable = "avx2,fma")]
        #[inline]
        unsafe fn rows<const MASKED: bool>(&self) {
            let mut y0 = 0;
            // SAFETY: as the caller guarantees.
            unsafe {
                while y0 + ROWS <= self.g.h {
                    self.block::<ROWS, MASKED>(y0);
                    y0 += ROWS;
                }
                while y0 < self.g.h {
                    self.block::<1, MASKED>(y0);
                    y0 += 1;
                }
            }
        }

        /// Output rows `y0..y0 + R` of the column block.
        #[target_feature(enable = "avx2,fma")]
        #[inline]
        unsafe fn block<const R: usize, const MASKED: bool>(&self, y0: usize) {
            let (pl, wp) = (self.g.padded_len(), self.g.wp());
            // SAFETY: as in the AVX-512 loops.
            unsafe {
                let load = |p: *const f32| {
                    if MASKED {
                        _mm256_maskload_ps(p, self.m)
                    } else {
                        _mm256_loadu_ps(p)
                    }
                };
                let mut acc = [_mm256_setzero_ps(); R];
                for p in self.kernels.clone() {
                    let k: [__m256; 9] =
                        std::array::from_fn(|t| _mm256_set1_ps(self.lists.taps[p * 9 + t]));
                    let c = self.lists.reads[p] as usize;
                    let s = self.src.add(c * pl + y0 * wp + self.x0);
                    for row in 0..R + 2 {
                        for dx in 0..3 {
                            let x = load(s.add(row * wp + dx));
                            for (r, a) in acc.iter_mut().enumerate() {
                                if row >= r && row - r < 3 {
                                    *a = _mm256_fmadd_ps(k[(row - r) * 3 + dx], x, *a);
                                }
                            }
                        }
                    }
                }
                for (r, a) in acc.iter().enumerate() {
                    let o = self.out.add((y0 + r) * self.g.w + self.x0);
                    if MASKED {
                        _mm256_maskstore_ps(o, self.m, *a);
                    } else {
                        _mm256_storeu_ps(o, *a);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::pair3x3::{pair_conv_image, pair_scratch_len};
    use super::*;
    use crate::rng::Rng;

    fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.uniform(-1.0, 1.0) as f32).collect()
    }

    /// Padded planes with random interiors and zero borders (and slack), as the callers pad.
    fn padded(rng: &mut Rng, g: Plane, planes: usize) -> Vec<f32> {
        let mut v = random(rng, g.padded_buffer_len(planes));
        for (q, e) in v.iter_mut().enumerate() {
            let (p, q) = (q / g.padded_len(), q % g.padded_len());
            let (r, col) = (q / g.wp(), q % g.wp());
            if p >= planes || r == 0 || r > g.h || col == 0 || col > g.w {
                *e = 0.0;
            }
        }
        v
    }

    /// The lists give pair3x3's tiles bit for bit, at every SIMD level this CPU has, for the
    /// depthwise of gathered channels (repeats and unread channels) and its input gradient
    /// (inputs with several kernels and with none), on planes of every width class (full and
    /// partial vectors, row counts that are not a multiple of the block), in one thread and
    /// split among threads; and the f64 loops against a sum written out here.
    #[test]
    fn lists_match_the_pair_tiles() {
        let mut rng = Rng::new(23);
        let levels: Vec<Simd> = [Simd::Portable, Simd::Avx2, Simd::Avx512]
            .into_iter()
            .filter(|&l| l <= Simd::detected())
            .collect();
        println!("kernel lists tested at {levels:?}");
        for (h, w) in [
            (32, 32),
            (16, 16),
            (8, 8),
            (5, 7),
            (7, 20),
            (3, 33),
            (1, 1),
            (9, 48),
        ] {
            let g = Plane { h, w };
            for cin in [1, 3, 6] {
                let t = 4 * cin + 1;
                // Channel 0 gathered most, the last channel never (when there are several).
                let index: Vec<u32> = (0..t)
                    .map(|j| (j * j % (cin.max(2) - 1).max(1)) as u32)
                    .collect();
                let dw = random(&mut rng, t * 9);
                let x = padded(&mut rng, g, cin);
                let dd = padded(&mut rng, g, t);
                for simd in &levels {
                    for (which, src, packed) in [
                        ("forward", &x, PackedPairs::gathered(&dw, &index).at(*simd)),
                        (
                            "input gradient",
                            &dd,
                            PackedPairs::gathered_input_grad(&dw, &index, cin).at(*simd),
                        ),
                    ] {
                        let outputs = packed.outputs();
                        let lists = KernelLists::by_output(&packed);
                        let mut a = vec![MaybeUninit::uninit(); outputs * g.len()];
                        let mut s = vec![f32::NAN; pair_scratch_len(outputs)];
                        pair_conv_image(&mut a, src, &packed, g, &mut s, false);
                        for parallel in [false, true] {
                            let mut b = vec![MaybeUninit::new(f32::NAN); outputs * g.len()];
                            kernel_lists_image(&mut b, src, &lists, g, parallel);
                            for (j, (p, q)) in a.iter().zip(&b).enumerate() {
                                // SAFETY: both write every element.
                                let (p, q) = unsafe { (p.assume_init(), q.assume_init()) };
                                assert!(
                                    p.to_bits() == q.to_bits(),
                                    "{which} {simd:?} {h}x{w} cin {cin} parallel {parallel} at {j}: {p} vs {q}"
                                );
                            }
                        }
                    }
                }
                // f64: the sum of each output's kernels, written out.
                let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
                let dw64: Vec<f64> = dw.iter().map(|&v| v as f64).collect();
                let packed = PackedPairs::gathered(&dw64, &index);
                let mut b = vec![MaybeUninit::new(f64::NAN); t * g.len()];
                kernel_lists_image(&mut b, &x64, &KernelLists::by_output(&packed), g, false);
                for (o, &c) in index.iter().enumerate() {
                    for y in 0..h {
                        for xx in 0..w {
                            let mut e = 0.0;
                            for i in 0..3 {
                                for j in 0..3 {
                                    let q = c as usize * g.padded_len() + (y + i) * g.wp() + xx + j;
                                    e += dw64[o * 9 + i * 3 + j] * x64[q];
                                }
                            }
                            // SAFETY: written above.
                            let got = unsafe { b[o * g.len() + y * w + xx].assume_init() };
                            assert!((got - e).abs() < 1e-12, "f64 {h}x{w} {o}: {got} vs {e}");
                        }
                    }
                }
            }
        }
    }

    /// The same for the live kernels of a masked learned-dsc conv (forward and input
    /// gradient), in groups and not, at several densities (outputs with no live kernel
    /// included).
    #[test]
    fn lists_of_live_kernels_match_the_pair_tiles() {
        let mut rng = Rng::new(29);
        let levels: Vec<Simd> = [Simd::Portable, Simd::Avx2, Simd::Avx512]
            .into_iter()
            .filter(|&l| l <= Simd::detected())
            .collect();
        for (h, w, cin, cout, groups) in [
            (32, 32, 12, 8, 1),
            (16, 16, 8, 12, 4),
            (8, 8, 6, 6, 1),
            (5, 19, 4, 6, 2),
        ] {
            let (g, cin_g) = (Plane { h, w }, cin / groups);
            let x = padded(&mut rng, g, cin);
            let dy = padded(&mut rng, g, cout);
            let wts = random(&mut rng, cout * cin_g * 9);
            for density in [0.7, 0.3, 0.05] {
                let kept: Vec<bool> = (0..cout * cin_g)
                    .map(|_| rng.uniform(0.0, 1.0) < density)
                    .collect();
                let live = |o: usize, i: usize| kept[o * cin_g + i];
                let shape = (cout, cin, groups);
                for simd in &levels {
                    for (which, src, packed) in [
                        (
                            "forward",
                            &x,
                            PackedPairs::forward(&wts, shape, &live).at(*simd),
                        ),
                        (
                            "input gradient",
                            &dy,
                            PackedPairs::input_grad(&wts, shape, &live).at(*simd),
                        ),
                    ] {
                        let outputs = packed.outputs();
                        let mut a = vec![MaybeUninit::uninit(); outputs * g.len()];
                        let mut s = vec![f32::NAN; pair_scratch_len(outputs)];
                        pair_conv_image(&mut a, src, &packed, g, &mut s, false);
                        let mut b = vec![MaybeUninit::new(f32::NAN); outputs * g.len()];
                        kernel_lists_image(&mut b, src, &KernelLists::by_output(&packed), g, false);
                        for (j, (p, q)) in a.iter().zip(&b).enumerate() {
                            // SAFETY: both write every element.
                            let (p, q) = unsafe { (p.assume_init(), q.assume_init()) };
                            assert!(
                                p.to_bits() == q.to_bits(),
                                "{which} {simd:?} {h}x{w} {cin}->{cout}/{groups} density {density} at {j}: {p} vs {q}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Single-thread speed of the lists against pair3x3's tiles on CondenseNeXt's masked
    /// learned-dsc convs at the densities of its schedule (forward).
    #[test]
    #[ignore = "a timing, not a check"]
    fn time_lists_against_the_pair_tiles_on_live_kernels() {
        let mut rng = Rng::new(9);
        for (side, cin, cout) in [(32, 40, 32), (16, 72, 32), (8, 104, 32)] {
            let g = Plane { h: side, w: side };
            let x = padded(&mut rng, g, cin);
            let dy = padded(&mut rng, g, cout);
            let wts = random(&mut rng, cout * cin * 9);
            let mut out = vec![MaybeUninit::uninit(); cout.max(cin) * g.len()];
            let mut scratch = vec![0f32; pair_scratch_len(cout.max(cin))];
            let time = |f: &mut dyn FnMut()| {
                f();
                let mut best = f64::MAX;
                for _ in 0..5 {
                    let start = std::time::Instant::now();
                    for _ in 0..10 {
                        f();
                    }
                    best = best.min(start.elapsed().as_secs_f64() / 10.0);
                }
                best * 1e6
            };
            for density in [0.78, 0.56, 0.34, 0.23] {
                let kept: Vec<bool> = (0..cout * cin)
                    .map(|_| rng.uniform(0.0, 1.0) < density)
                    .collect();
                let live = |o: usize, i: usize| kept[o * cin + i];
                let pf = PackedPairs::forward(&wts, (cout, cin, 1), &live);
                let pb = PackedPairs::input_grad(&wts, (cout, cin, 1), &live);
                let (lf, lb) = (KernelLists::by_output(&pf), KernelLists::by_output(&pb));
                let tf = time(&mut || pair_conv_image(&mut out, &x, &pf, g, &mut scratch, false));
                let kf = time(&mut || kernel_lists_image(&mut out, &x, &lf, g, false));
                let tb = time(&mut || pair_conv_image(&mut out, &dy, &pb, g, &mut scratch, false));
                let kb = time(&mut || kernel_lists_image(&mut out, &dy, &lb, g, false));
                println!("{side}x{side} {cin}->{cout} live {density}: forward tiles {tf:6.1} lists {kf:6.1} us, input gradient tiles {tb:6.1} lists {kb:6.1} us");
            }
        }
    }

    /// Single-thread speed of the lists against pair3x3's tiles on the depthwise of
    /// CondenseNeXt's converted learned-dsc convs (about 4 gathered channels per input)
    /// and its input gradient (`cargo test --release --lib kernel_lists -- --ignored
    /// --nocapture`).
    #[test]
    #[ignore = "a timing, not a check"]
    fn time_lists_against_the_pair_tiles() {
        let mut rng = Rng::new(7);
        println!("at {:?}", Simd::active());
        for (side, cin) in [(32, 40), (16, 72), (8, 104)] {
            let (g, t) = (Plane { h: side, w: side }, 4 * cin);
            let index: Vec<u32> = (0..t).map(|j| ((j * 7) % cin) as u32).collect();
            let dw = random(&mut rng, t * 9);
            let x = padded(&mut rng, g, cin);
            let dd = padded(&mut rng, g, t);
            let time = |f: &mut dyn FnMut()| {
                f();
                let mut best = f64::MAX;
                for _ in 0..5 {
                    let start = std::time::Instant::now();
                    for _ in 0..20 {
                        f();
                    }
                    best = best.min(start.elapsed().as_secs_f64() / 20.0);
                }
                best * 1e6
            };
            let mut out = vec![MaybeUninit::uninit(); t * g.len()];
            let mut scratch = vec![0f32; pair_scratch_len(t)];
            for (which, src, packed) in [
                ("depthwise", &x, PackedPairs::gathered(&dw, &index)),
                (
                    "input gradient",
                    &dd,
                    PackedPairs::gathered_input_grad(&dw, &index, cin),
                ),
            ] {
                let lists = KernelLists::by_output(&packed);
                let tiles =
                    time(&mut || pair_conv_image(&mut out, src, &packed, g, &mut scratch, false));
                let rows = time(&mut || kernel_lists_image(&mut out, src, &lists, g, false));
                let gflops = 2.0 * 9.0 * (t * g.len()) as f64 / rows / 1e3;
                println!(
                    "{side}x{side} {t} channels {which}: tiles {tiles:7.1} us, lists {rows:7.1} us ({:4.2}x, {gflops:5.1} GFLOP/s)",
                    tiles / rows
                );
            }
        }
    }
}
