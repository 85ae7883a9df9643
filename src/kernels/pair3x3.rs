//! A 3x3 convolution (stride 1, zero padding 1) over a list of live kernels, tile by tile:
//! the learned-dsc conv after its drops, whose dropped (output, input) kernels are not run at
//! all, in the forward, the input gradient or the weight gradient.
//!
//! The register-blocked loops of [`super::direct3x3`] keep a block of outputs in registers
//! and stream every input of the block through them: a dropped kernel inside a block still
//! costs its multiply-adds (as zeros). Here the roles turn around: a tile of positions of
//! every output lives in a small scratch (in L1), and the planes are read one at a time, each
//! read's nine shifted input vectors held in registers while every live kernel that reads the
//! plane adds its nine taps into its output's row of the tile (one load, nine FMAs with the
//! tap broadcast, one store). The cost is the live kernels' multiply-adds, at about the rate
//! of the dense loops, whatever the pattern of drops.
//!
//! The reads are in ascending plane order and each kernel's taps in tap order, which is the
//! order the dense loops sum in: a conv over the live kernels gives the same bits as the
//! dense loops over the masked weight (up to the sign of an exact zero).

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::direct3x3::{check_dot_lengths, dy_row, Direct3x3};
use super::simd::Simd;
use super::sparse_conv::{Float, Plane};

/// A conv's live kernels in the order the microkernel runs them.
#[derive(Debug, Clone)]
pub(super) struct PackedPairs<T> {
    /// `(plane read, end of its kernels)`: the kernels `[end of the previous, end)` read it;
    /// planes no kernel reads are left out.
    reads: Vec<(u32, u32)>,
    /// Per kernel: the output row it adds into (ascending within a read).
    writes: Vec<u32>,
    /// Per kernel: its place in the weight (`w[slot * 9..][..9]`), where its gradient goes.
    slots: Vec<u32>,
    /// Per kernel: its 9 taps in the order they are applied.
    taps: Vec<T>,
    outputs: usize,
    /// The level that runs it (the tile width depends on it).
    simd: Simd,
}

/// Which kernels of a conv `[cout, cin / groups, 3, 3]` are live: `live(o, i)` for output `o`
/// and input `i` of its group.
pub(super) type LiveFn<'a> = &'a dyn Fn(usize, usize) -> bool;

impl<T: Float> PackedPairs<T> {
    /// From `(read, write, slot, taps)` in ascending read order, then write order.
    fn collect(
        outputs: usize,
        kernels: impl Iterator<Item = (usize, usize, usize, [T; 9])>,
    ) -> Self {
        let (mut reads, mut writes, mut slots, mut taps) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (read, write, slot, k) in kernels {
            match reads.last_mut() {
                Some((r, end)) if *r as usize == read => *end += 1,
                _ => reads.push((read as u32, writes.len() as u32 + 1)),
            }
            writes.push(write as u32);
            slots.push(slot as u32);
            taps.extend_from_slice(&k);
        }
        Self {
            reads,
            writes,
            slots,
            taps,
            outputs,
            simd: Simd::active(),
        }
    }

    /// The same kernels run at `simd` (which the CPU must have).
    #[cfg(test)]
    pub(super) fn at(mut self, simd: Simd) -> Self {
        self.simd = simd;
        self
    }

    /// The forward of weights `w` (`[cout, cin / groups, 3, 3]`) over their live kernels.
    pub(super) fn forward(
        w: &[T],
        (cout, cin, groups): (usize, usize, usize),
        live: LiveFn,
    ) -> Self {
        let (cin_g, cout_g) = (cin / groups, cout / groups);
        let kernels = (0..cin).flat_map(move |c| {
            let (grp, i) = (c / cin_g, c % cin_g);
            (grp * cout_g..(grp + 1) * cout_g)
                .filter(move |&o| live(o, i))
                .map(move |o| {
                    let k = std::array::from_fn(|t| w[(o * cin_g + i) * 9 + t]);
                    (c, o, o * cin_g + i, k)
                })
        });
        Self::collect(cout, kernels)
    }

    /// The input gradient of the same conv: input channel `c` sums the output gradients of
    /// its group's outputs through the rotated live kernels `w[o, c, 8 - tap]`.
    pub(super) fn input_grad(
        w: &[T],
        (cout, cin, groups): (usize, usize, usize),
        live: LiveFn,
    ) -> Self {
        let (cin_g, cout_g) = (cin / groups, cout / groups);
        let kernels = (0..cout).flat_map(move |o| {
            let grp = o / cout_g;
            (grp * cin_g..(grp + 1) * cin_g)
                .filter(move |&c| live(o, c % cin_g))
                .map(move |c| {
                    let slot = o * cin_g + c % cin_g;
                    let k = std::array::from_fn(|t| w[slot * 9 + 8 - t]);
                    (o, c, slot, k)
                })
        });
        Self::collect(cin, kernels)
    }

    /// The depthwise 3x3 of the channels `index` gathers (repeats allowed), weights `dw`
    /// (`[T, 1, 3, 3]`): output `t` is channel `index[t]` through kernel `t`.
    pub(super) fn gathered(dw: &[T], index: &[u32]) -> Self {
        let mut kernels: Vec<(usize, usize)> = index
            .iter()
            .enumerate()
            .map(|(t, &c)| (c as usize, t))
            .collect();
        kernels.sort_unstable();
        let taps = |t: usize| std::array::from_fn(|j| dw[t * 9 + j]);
        Self::collect(
            index.len(),
            kernels.into_iter().map(|(c, t)| (c, t, t, taps(t))),
        )
    }

    /// The input gradient of [`Self::gathered`] over `cin` channels: channel `c` sums the
    /// output gradients of the outputs that gather it, through their rotated kernels.
    pub(super) fn gathered_input_grad(dw: &[T], index: &[u32], cin: usize) -> Self {
        let kernels = index.iter().enumerate().map(|(t, &c)| {
            let k = std::array::from_fn(|j| dw[t * 9 + 8 - j]);
            (t, c as usize, t, k)
        });
        Self::collect(cin, kernels)
    }

    /// The live kernels.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.writes.len()
    }

    /// Every kernel as `(plane read, output row written, its 9 taps)`, in the order the tiles
    /// run them (ascending read).
    pub(super) fn kernels(&self) -> impl Iterator<Item = (usize, usize, &[T])> + '_ {
        self.read_lists()
            .flat_map(|(c, writes)| writes.iter().map(move |&o| (c, o as usize)))
            .zip(self.taps.chunks_exact(9))
            .map(|((c, o), k)| (c, o, k))
    }

    /// Output planes.
    pub(super) fn outputs(&self) -> usize {
        self.outputs
    }

    /// The level that runs it.
    pub(super) fn simd(&self) -> Simd {
        self.simd
    }

    /// `(plane read, the rows written)` of every read, in order.
    fn read_lists(&self) -> impl Iterator<Item = (usize, &[u32])> + '_ {
        let starts = std::iter::once(0).chain(self.reads.iter().map(|&(_, end)| end));
        self.reads.iter().zip(starts).map(|(&(read, end), start)| {
            (read as usize, &self.writes[start as usize..end as usize])
        })
    }
}

/// Positions of the widest tile.
const MAX_TILE: usize = 32;

/// Scratch for [`pair_conv_image`] of `outputs` output planes: one tile of each (in L1).
pub(super) fn pair_scratch_len(outputs: usize) -> usize {
    outputs * MAX_TILE
}

/// Positions per tile at `simd`.
fn tile_len(simd: Simd, g: Plane) -> usize {
    match simd {
        // Two vectors, unless the plane is a whole number of single vectors and not of pairs.
        Simd::Avx512 if g.acc_len().div_ceil(16) % 2 == 1 => 16,
        Simd::Avx512 => 32,
        Simd::Avx2 => 8,
        Simd::Portable => 8,
    }
}

/// A raw pointer shared by the tasks of a parallel loop that write disjoint parts of it.
#[derive(Clone, Copy)]
struct Shared<T>(*mut T);
// SAFETY: the tasks that share it write disjoint elements (each its own tiles' positions).
unsafe impl<T> Send for Shared<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// The pointer (a method, so that closures capture the whole `Shared`).
    fn get(self) -> *mut T {
        self.0
    }
}

/// One image's conv over the live kernels: the compact planes `dst` (`[outputs, h * w]`, all
/// written; an output no kernel writes is zero) from the padded planes `src` (stride
/// `g.padded_len()`, borders zero, followed by at least `g.slack()` elements), tile by tile
/// through `scratch` ([`pair_scratch_len`]), each tile's positions copied out as it is done.
/// `parallel`: the tiles in parallel, each task with a scratch of its own.
pub(super) fn pair_conv_image<T: PairTiles>(
    dst: &mut [MaybeUninit<T>],
    src: &[T],
    packed: &PackedPairs<T>,
    g: Plane,
    scratch: &mut [T],
    parallel: bool,
) {
    let (tiled, plane, pl) = (g.tiled_len(), g.len(), g.padded_len());
    assert!(dst.len() >= packed.outputs * plane);
    assert!(scratch.len() >= pair_scratch_len(packed.outputs));
    let last_read = packed.reads.last().map_or(0, |&(r, _)| r as usize);
    assert!(
        src.len() >= last_read * pl + tiled + 2 * g.wp() + 2,
        "pair_conv_image: short input"
    );
    let len = tile_len(packed.simd, g);
    let tiles = g.acc_len().div_ceil(len);
    let out = Shared(dst.as_mut_ptr().cast::<T>());
    let run = |buf: &mut [T], first: usize, end: usize| {
        for q0 in (first..end).map(|t| t * len) {
            // SAFETY: `buf` holds a tile of every output; `src` reaches every tile's reads.
            unsafe { T::tile(packed, src, g, q0, len, buf.as_mut_ptr()) };
            // The tile's positions inside the plane, row by row: runs of columns.
            let mut q = q0;
            while q < (q0 + len).min(g.acc_len()) {
                let (row, col) = (q / g.wp(), q % g.wp());
                let run_len = (g.wp() - col).min(q0 + len - q);
                if col < g.w {
                    let n = run_len.min(g.w - col);
                    for o in 0..packed.outputs {
                        let from = &buf[o * len + q - q0..][..n];
                        // SAFETY: the run lies inside output `o`'s plane, which only this
                        // tile writes at these positions.
                        unsafe {
                            let to = out.get().add(o * plane + row * g.w + col);
                            std::ptr::copy_nonoverlapping(from.as_ptr(), to, n);
                        }
                    }
                }
                q += run_len;
            }
        }
    };
    let macs = 9 * packed.writes.len() * g.acc_len();
    if super::splits(parallel, macs) {
        let threads = rayon::current_num_threads().max(1);
        let per = tiles.div_ceil(threads);
        let zero = T::from_f64(0.0);
        (0..threads).into_par_iter().for_each(|k| {
            let mut buf = vec![zero; pair_scratch_len(packed.outputs)];
            run(&mut buf, (k * per).min(tiles), ((k + 1) * per).min(tiles))
        });
    } else {
        run(scratch, 0, tiles);
    }
}

/// One image's weight gradient of the kernels of `forward` (a forward packing), each added
/// into its slot of `dw` (`[.., 9]`; the slots of dropped kernels are left as they are):
/// `xpad` holds the `cin` padded input planes, `dypad` the padded output-gradient planes
/// (both with their slack).
pub(super) fn pair_weight_grad_image<T: Direct3x3>(
    dw: &mut [T],
    xpad: &[T],
    dypad: &[T],
    forward: &PackedPairs<T>,
    cin: usize,
    g: Plane,
) {
    check_dot_lengths(xpad, dypad, (cin, forward.outputs), g);
    let simd = Simd::active();
    let per_pass = super::direct3x3::dot_rows(simd, g);
    let mut rows: Vec<&[T]> = Vec::with_capacity(per_pass);
    let mut first = 0;
    for (c, writes) in forward.read_lists() {
        let x = &xpad[c * g.padded_len()..];
        for outs in writes.chunks(per_pass) {
            rows.clear();
            rows.extend(outs.iter().map(|&o| dy_row(dypad, o as usize, g)));
            let mut taps = [[T::from_f64(0.0); 9]; super::direct3x3::MR];
            T::tap_dots(simd, &mut taps, &rows, x, g);
            let slots = &forward.slots[first..first + outs.len()];
            first += outs.len();
            for (&slot, t) in slots.iter().zip(&taps) {
                let d = &mut dw[slot as usize * 9..][..9];
                for (d, t) in d.iter_mut().zip(t) {
                    *d += *t;
                }
            }
        }
    }
}

/// The tile loop, per float type.
pub(super) trait PairTiles: Float {
    /// The tile of `len` positions from `q0` of every output, into `out` (a row of `len` per
    /// output): zeroed, then every live kernel's taps added.
    ///
    /// # Safety
    /// `out` is writable for `packed.outputs` rows of `len`, and `src` reaches every read of
    /// the tile (as [`pair_conv_image`] checks).
    unsafe fn tile(
        packed: &PackedPairs<Self>,
        src: &[Self],
        g: Plane,
        q0: usize,
        len: usize,
        out: *mut Self,
    );
}

impl PairTiles for f64 {
    unsafe fn tile(
        packed: &PackedPairs<Self>,
        src: &[Self],
        g: Plane,
        q0: usize,
        len: usize,
        out: *mut Self,
    ) {
        // SAFETY: as the caller guarantees.
        unsafe { portable::tile(packed, src, g, q0, len, out) }
    }
}

impl PairTiles for f32 {
    unsafe fn tile(
        packed: &PackedPairs<Self>,
        src: &[Self],
        g: Plane,
        q0: usize,
        len: usize,
        out: *mut Self,
    ) {
        #[cfg(target_arch = "x86_64")]
        match packed.simd.min(Simd::detected()) {
            // SAFETY: the CPU has the level; the rest as the caller guarantees (a tile of
            // 16 or 32 positions at AVX-512, 8 at AVX2: `tile_len`).
            Simd::Avx512 if len == 32 => {
                return unsafe { avx512::tile::<2>(packed, src, g, q0, out) }
            }
            // SAFETY: as above.
            Simd::Avx512 => return unsafe { avx512::tile::<1>(packed, src, g, q0, out) },
            // SAFETY: as above.
            Simd::Avx2 => return unsafe { avx2::tile(packed, src, g, q0, out) },
            Simd::Portable => {}
        }
        // SAFETY: as the caller guarantees.
        unsafe { portable::tile(packed, src, g, q0, len, out) }
    }
}

/// The nine taps' offsets in a padded plane with rows of `wp`.
#[inline(always)]
fn offsets(wp: usize) -> [usize; 9] {
    [0, 1, 2, wp, wp + 1, wp + 2, 2 * wp, 2 * wp + 1, 2 * wp + 2]
}

mod portable {
    //! The tile loop in plain Rust, in the vector loops' order.
    use super::*;

    /// # Safety
    /// As [`PairTiles::tile`].
    pub(super) unsafe fn tile<T: Float>(
        packed: &PackedPairs<T>,
        src: &[T],
        g: Plane,
        q0: usize,
        len: usize,
        out: *mut T,
    ) {
        let (pl, off, zero) = (g.padded_len(), offsets(g.wp()), T::from_f64(0.0));
        // SAFETY: the caller's promise: every output has a row of the tile.
        let row = |o: usize| unsafe { std::slice::from_raw_parts_mut(out.add(o * len), len) };
        for o in 0..packed.outputs {
            row(o).fill(zero);
        }
        let mut p = 0;
        for (c, writes) in packed.read_lists() {
            let s = &src[c * pl + q0..];
            for &o in writes {
                let k = &packed.taps[p * 9..p * 9 + 9];
                for (q, a) in row(o as usize).iter_mut().enumerate() {
                    for t in 0..9 {
                        *a = k[t].fma(s[q + off[t]], *a);
                    }
                }
                p += 1;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! The tile loop in AVX2 + FMA intrinsics: tiles of one 8-wide vector.
    use std::arch::x86_64::*;

    use super::*;

    /// # Safety
    /// AVX2 and FMA; as [`PairTiles::tile`], with a tile of 8 positions.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile(
        packed: &PackedPairs<f32>,
        src: &[f32],
        g: Plane,
        q0: usize,
        out: *mut f32,
    ) {
        let (pl, off) = (g.padded_len(), offsets(g.wp()));
        // SAFETY: as the caller guarantees.
        unsafe {
            for o in 0..packed.outputs {
                _mm256_storeu_ps(out.add(o * 8), _mm256_setzero_ps());
            }
            let (mut k, src) = (packed.taps.as_ptr(), src.as_ptr().add(q0));
            for (c, writes) in packed.read_lists() {
                let s = src.add(c * pl);
                let x: [__m256; 9] = std::array::from_fn(|t| _mm256_loadu_ps(s.add(off[t])));
                for &o in writes {
                    let a = out.add(o as usize * 8);
                    let mut acc = _mm256_loadu_ps(a);
                    for (t, xt) in x.iter().enumerate() {
                        acc = _mm256_fmadd_ps(_mm256_broadcast_ss(&*k.add(t)), *xt, acc);
                    }
                    _mm256_storeu_ps(a, acc);
                    k = k.add(9);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    //! The tile loop in AVX-512 intrinsics: tiles of `V` 16-wide vectors.
    use std::arch::x86_64::*;

    use super::*;

    /// # Safety
    /// AVX-512F and FMA; as [`PairTiles::tile`], with a tile of `16 V` positions.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    pub(super) unsafe fn tile<const V: usize>(
        packed: &PackedPairs<f32>,
        src: &[f32],
        g: Plane,
        q0: usize,
        out: *mut f32,
    ) {
        let (pl, off) = (g.padded_len(), offsets(g.wp()));
        // SAFETY: as the caller guarantees.
        unsafe {
            for o in 0..packed.outputs {
                for v in 0..V {
                    _mm512_storeu_ps(out.add(o * 16 * V + 16 * v), _mm512_setzero_ps());
                }
            }
            let (mut k, src) = (packed.taps.as_ptr(), src.as_ptr().add(q0));
            for (c, writes) in packed.read_lists() {
                let s = src.add(c * pl);
                let x: [[__m512; V]; 9] = std::array::from_fn(|t| {
                    std::array::from_fn(|v| _mm512_loadu_ps(s.add(off[t] + 16 * v)))
                });
                for &o in writes {
                    let a = out.add(o as usize * 16 * V);
                    let mut acc: [__m512; V] =
                        std::array::from_fn(|v| _mm512_loadu_ps(a.add(16 * v)));
                    for (t, xt) in x.iter().enumerate() {
                        let kt = _mm512_set1_ps(*k.add(t));
                        for (av, xv) in acc.iter_mut().zip(xt) {
                            *av = _mm512_fmadd_ps(kt, *xv, *av);
                        }
                    }
                    for (v, av) in acc.iter().enumerate() {
                        _mm512_storeu_ps(a.add(16 * v), *av);
                    }
                    k = k.add(9);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::direct3x3::{conv_image, scratch_len, weight_grad_image, Packed3x3};
    use super::*;
    use crate::rng::Rng;

    fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.uniform(-1.0, 1.0) as f32).collect()
    }

    /// The live kernels give the dense loops' result over the masked weight, bit for bit
    /// (forward and input gradient), and the same weight gradient on the live kernels, at
    /// several densities, group counts and plane sizes.
    #[test]
    fn live_kernels_match_the_dense_loops_over_the_masked_weight() {
        let mut rng = Rng::new(11);
        let levels: Vec<Simd> = [Simd::Portable, Simd::Avx2, Simd::Avx512]
            .into_iter()
            .filter(|&l| l <= Simd::detected())
            .collect();
        println!("pair tiles tested at {levels:?}");
        for (h, w, cin, cout, groups) in [
            // Large enough to be split among threads when asked to.
            (32, 32, 24, 16, 1),
            (32, 32, 12, 8, 1),
            (16, 16, 8, 12, 4),
            (8, 8, 6, 6, 1),
            (5, 7, 4, 6, 2),
            (1, 3, 3, 5, 1),
        ] {
            let g = Plane { h, w };
            let cin_g = cin / groups;
            for density in [1.0, 0.6, 0.25, 0.0] {
                let kept: Vec<bool> = (0..cout * cin_g)
                    .map(|_| rng.uniform(0.0, 1.0) < density)
                    .collect();
                let live = |o: usize, i: usize| kept[o * cin_g + i];
                let wts = random(&mut rng, cout * cin_g * 9);
                let masked: Vec<f32> = wts
                    .iter()
                    .enumerate()
                    .map(|(j, &v)| if kept[j / 9] { v } else { 0.0 })
                    .collect();
                let x = random(&mut rng, g.padded_buffer_len(cin));
                let dy = random(&mut rng, g.padded_buffer_len(cout));
                // Zero borders, as the callers pad.
                let zero_borders = |v: &mut Vec<f32>, planes: usize| {
                    for p in 0..planes {
                        for (q, e) in v[p * g.padded_len()..(p + 1) * g.padded_len()]
                            .iter_mut()
                            .enumerate()
                        {
                            let (r, col) = (q / g.wp(), q % g.wp());
                            if r == 0 || r > h || col == 0 || col > w {
                                *e = 0.0;
                            }
                        }
                    }
                    let tail = planes * g.padded_len();
                    v[tail..].fill(0.0);
                };
                let (mut x, mut dy) = (x, dy);
                zero_borders(&mut x, cin);
                zero_borders(&mut dy, cout);
                let shape = (cout, cin, groups);
                for (which, src, outputs, dense, pairs) in levels.iter().flat_map(|&simd| {
                    [
                        (
                            "forward",
                            &x,
                            cout,
                            Packed3x3::forward_at(simd, &masked, cout, cin, groups, g),
                            PackedPairs::forward(&wts, shape, &live).at(simd),
                        ),
                        (
                            "input gradient",
                            &dy,
                            cin,
                            Packed3x3::input_grad_at(simd, &masked, cout, cin, groups, g),
                            PackedPairs::input_grad(&wts, shape, &live).at(simd),
                        ),
                    ]
                }) {
                    let expect_kernels = kept.iter().filter(|&&k| k).count();
                    assert_eq!(pairs.len(), expect_kernels);
                    let mut a = vec![MaybeUninit::uninit(); outputs * g.len()];
                    let mut b = vec![MaybeUninit::uninit(); outputs * g.len()];
                    conv_image(
                        &mut a,
                        src,
                        &dense,
                        g,
                        &mut vec![0.0; scratch_len(g)],
                        false,
                    );
                    for parallel in [false, true] {
                        let mut s = vec![f32::NAN; pair_scratch_len(outputs)];
                        pair_conv_image(&mut b, src, &pairs, g, &mut s, parallel);
                        for (j, (p, q)) in a.iter().zip(&b).enumerate() {
                            // SAFETY: both convs write every element.
                            let (p, q) = unsafe { (p.assume_init(), q.assume_init()) };
                            assert!(
                                p == q,
                                "{which} {h}x{w} {cin}->{cout}/{groups} density {density} at {j}: {p} vs {q}"
                            );
                        }
                    }
                }
                let (mut dw_dense, mut dw_pairs) = (vec![0f32; wts.len()], vec![0f32; wts.len()]);
                weight_grad_image(&mut dw_dense, &x, &dy, shape, g);
                let forward = PackedPairs::forward(&wts, shape, &live);
                pair_weight_grad_image(&mut dw_pairs, &x, &dy, &forward, cin, g);
                for (j, (p, q)) in dw_dense.iter().zip(&dw_pairs).enumerate() {
                    // The same dot products, so the same bits.
                    let expect = if kept[j / 9] { *p } else { 0.0 };
                    assert!(
                        expect.to_bits() == q.to_bits(),
                        "weight gradient {h}x{w} density {density} at {j}: {expect} vs {q}"
                    );
                }
            }
        }
    }

    /// Single-thread speed of the live-kernel loops against the dense loops over the masked
    /// weight, on CondenseNeXt's first learned-dsc conv at the densities of its schedule
    /// (`cargo test --release --lib pair3x3 -- --ignored --nocapture`).
    #[test]
    #[ignore = "a timing, not a check"]
    fn time_live_kernels_against_the_dense_loops() {
        let mut rng = Rng::new(5);
        let simd = match std::env::var("ABLATE_SIMD").as_deref() {
            Ok("avx2") => Simd::Avx2,
            _ => Simd::active(),
        };
        println!("at {simd:?} (the weight gradient at {:?})", Simd::active());
        for (side, cin, cout) in [(32, 40, 32), (16, 72, 32), (8, 104, 32)] {
            let g = Plane { h: side, w: side };
            let x = random(&mut rng, g.padded_buffer_len(cin));
            let dy = random(&mut rng, g.padded_buffer_len(cout));
            let wts = random(&mut rng, cout * cin * 9);
            let shape = (cout, cin, 1);
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
                best * 1e6
            };
            let mut out = vec![MaybeUninit::uninit(); cout.max(cin) * g.len()];
            let mut scratch = vec![0f32; pair_scratch_len(cout.max(cin)).max(scratch_len(g))];
            let mut dw = vec![0f32; wts.len()];
            let dense_f = Packed3x3::forward_at(simd, &wts, cout, cin, 1, g);
            let dense_b = Packed3x3::input_grad_at(simd, &wts, cout, cin, 1, g);
            let df = time(&mut || conv_image(&mut out, &x, &dense_f, g, &mut scratch, false));
            let db = time(&mut || conv_image(&mut out, &dy, &dense_b, g, &mut scratch, false));
            let dwg = time(&mut || weight_grad_image(&mut dw, &x, &dy, shape, g));
            println!(
                "{side}x{side} {cin}->{cout} dense: forward {df:7.1} us, input gradient {db:7.1} us, weight gradient {dwg:7.1} us"
            );
            for density in [1.0, 0.78, 0.56, 0.34, 0.23, 0.125] {
                let kept: Vec<bool> = (0..cout * cin)
                    .map(|_| rng.uniform(0.0, 1.0) < density)
                    .collect();
                let live = |o: usize, i: usize| kept[o * cin + i];
                let pf = PackedPairs::forward(&wts, shape, &live).at(simd);
                let pb = PackedPairs::input_grad(&wts, shape, &live).at(simd);
                let tf = time(&mut || pair_conv_image(&mut out, &x, &pf, g, &mut scratch, false));
                let tb = time(&mut || pair_conv_image(&mut out, &dy, &pb, g, &mut scratch, false));
                let tw = time(&mut || pair_weight_grad_image(&mut dw, &x, &dy, &pf, cin, g));
                println!(
                    "  live {density:5.3}: forward {tf:7.1} us ({:4.2}x dense), input gradient {tb:7.1} us ({:4.2}x), weight gradient {tw:7.1} us ({:4.2}x)",
                    tf / df,
                    tb / db,
                    tw / dwg
                );
            }
        }
    }
}
