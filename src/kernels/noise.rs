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
        let (scale, zero) = (self.scale::<T>(), T::from_f64(0.0));
        let mut rng = self.rng.ahead(start as u64);
        for v in out {
            *v = if rng.next_f64() < self.keep { scale } else { zero };
        }
    }
}
