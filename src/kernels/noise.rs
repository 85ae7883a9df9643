//! Inverted-dropout noise as the fused kernels draw it: element `i` of a layer's input (in
//! NCHW order) is kept iff the `i`-th draw of the step's stream is below `keep`, and a kept
//! element is scaled by `1 / keep` (rounded to f32). [`crate::model::Dropout`] draws its mask
//! through the same rule, so a fused kernel and the separate dropout op drop the same elements.

use candle_core::WithDType;

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
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            return unsafe { self.fill_avx2(start, out) };
        }
        self.fill_any(start, out)
    }

    /// [`Self::fill`] compiled for AVX2 (its 64-bit lanes draw four elements at a time).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn fill_avx2<T: WithDType>(&self, start: usize, out: &mut [T]) {
        self.fill_any(start, out)
    }

    #[inline(always)]
    fn fill_any<T: WithDType>(&self, start: usize, out: &mut [T]) {
        let (scale, zero) = (self.scale::<T>(), T::from_f64(0.0));
        // `(d >> 11) * 2^-53 < keep` exactly when `d >> 11 < ceil(keep * 2^53)` (both sides
        // are exact in f64): the same draws as `next_f64() < keep`, compared as integers.
        let below = (self.keep * (1u64 << 53) as f64).ceil() as u64;
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
}
