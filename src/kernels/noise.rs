//! Inverted-dropout noise as the fused kernels draw it: element `i` of a layer's input (in
//! NCHW order) is kept iff the `i`-th draw of the step's stream is below `keep`, and a kept
//! element is scaled by `1 / keep` (rounded to f32). [`crate::model::Dropout`] draws its mask
//! through the same rule, so a fused kernel and the separate dropout op drop the same elements.

use candle_core::WithDType;
use rayon::prelude::*;

use crate::rng::Rng;

/// One step's dropout noise for one layer.
#[derive(Debug, Clone)]
pub struct DropoutNoise {
    rng: Rng,
    keep: f64,
}

impl DropoutNoise {
    /// `rng` is the step's stream; `keep = 1 - rate` in (0, 1].
    pub fn new(rng: Rng, keep: f64) -> Self {
        Self { rng, keep }
    }

    /// The factor of a kept element.
    pub fn scale<T: WithDType>(&self) -> T {
        T::from_f64((1.0 / self.keep) as f32 as f64)
    }

    /// `out[k] = scale` if element `start + k` is kept, else 0.
    pub fn fill<T: WithDType>(&self, start: usize, out: &mut [T]) {
        // Vector lanes of 64 bits draw several elements at a time.
        super::simd_loops!({ self.fill_any(start, out) })
    }

    /// The mask of `n` images of `per_image` elements each (image `img` from element
    /// `img * per_image` of the stream), drawn in parallel.
    pub(super) fn mask(&self, n: usize, per_image: usize) -> KeepMask {
        let words = per_image.div_ceil(64);
        let mut bits = vec![0u64; n * words];
        bits.par_chunks_mut(words.max(1))
            .enumerate()
            .for_each(|(img, w)| self.bits_into(img * per_image, per_image, w));
        KeepMask {
            words,
            bits,
            scale: self.scale::<f64>(),
        }
    }

    /// Bit `b` of `out[k]` set iff element `start + 64 k + b` (below `start + len`) is kept.
    fn bits_into(&self, start: usize, len: usize, out: &mut [u64]) {
        super::simd_loops!({
            let below = self.below();
            let rng = self.rng.ahead(start as u64);
            for (k, word) in out.iter_mut().enumerate() {
                let mut w = 0u64;
                for b in 0..64.min(len - 64 * k) {
                    let kept = rng.draw((64 * k + b) as u64) >> 11 < below;
                    w |= u64::from(kept) << b;
                }
                *word = w;
            }
        })
    }

    /// `(d >> 11) * 2^-53 < keep` exactly when `d >> 11 < ceil(keep * 2^53)` (both sides are
    /// exact in f64): the draws `next_f64() < keep` keeps, compared as integers.
    fn below(&self) -> u64 {
        (self.keep * (1u64 << 53) as f64).ceil() as u64
    }

    #[inline(always)]
    fn fill_any<T: WithDType>(&self, start: usize, out: &mut [T]) {
        let (scale, zero) = (self.scale::<T>(), T::from_f64(0.0));
        let below = self.below();
        let rng = self.rng.ahead(start as u64);
        for (i, v) in out.iter_mut().enumerate() {
            *v = if rng.draw(i as u64) >> 11 < below {
                scale
            } else {
                zero
            };
        }
    }
}

/// A layer's dropout mask for one step, one bit per element, image by image: drawn once and
/// read by both the forward and the backward.
#[derive(Debug)]
pub(super) struct KeepMask {
    words: usize,
    bits: Vec<u64>,
    /// The factor of a kept element (as [`DropoutNoise::scale`]).
    scale: f64,
}

impl KeepMask {
    /// Image `img`'s factors (`scale` or 0) into `out`, one per element.
    pub(super) fn fill<T: WithDType>(&self, img: usize, out: &mut [T]) {
        let (scale, zero) = (T::from_f64(self.scale), T::from_f64(0.0));
        let words = &self.bits[img * self.words..][..self.words];
        super::simd_loops!({
            for (chunk, &w) in out.chunks_mut(64).zip(words) {
                for (b, v) in chunk.iter_mut().enumerate() {
                    *v = if (w >> b) & 1 == 1 { scale } else { zero };
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The integer comparison keeps exactly the elements whose `next_f64` is below `keep`.
    #[test]
    fn keeps_the_draws_below_keep() {
        for keep in [0.9, 0.5, 0.1, 1.0, 0.123_456_789] {
            let rng = Rng::new(11);
            let noise = DropoutNoise::new(rng.clone(), keep);
            let mut out = vec![0f64; 5000];
            noise.fill(17, &mut out);
            let mut walk = rng.ahead(17);
            let scale: f64 = noise.scale();
            for v in out {
                let expect = if walk.next_f64() < keep { scale } else { 0.0 };
                assert_eq!(v, expect, "keep {keep}");
            }
        }
    }

    /// The mask's bits give the factors `fill` draws, image by image, for image sizes that do
    /// and do not fill whole words.
    #[test]
    fn masks_hold_the_drawn_factors() {
        for per_image in [1, 63, 64, 65, 200] {
            let noise = DropoutNoise::new(Rng::new(4), 0.6);
            let mask = noise.mask(3, per_image);
            for img in 0..3 {
                let (mut a, mut b) = (vec![0f32; per_image], vec![0f32; per_image]);
                noise.fill(img * per_image, &mut a);
                mask.fill(img, &mut b);
                assert_eq!(a, b, "{per_image} per image, image {img}");
            }
        }
    }
}
