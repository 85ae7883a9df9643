//! Dropout whose noise comes from the project's seeded [`Rng`], so training is reproducible.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use candle_core::{Result, Tensor};
use candle_nn::ModuleT;
use rayon::prelude::*;

use crate::kernels::DropoutNoise;
use crate::rng::Rng;

/// The training step that dropout noise is drawn for, shared by every [`Dropout`] of a
/// network. The noise of a step depends only on (seed, layer name, step), so a run resumed
/// from a checkpoint draws exactly the noise the uninterrupted run would have.
#[derive(Debug, Clone, Default)]
pub struct NoiseClock(Arc<AtomicU64>);

impl NoiseClock {
    pub fn set(&self, step: u64) {
        self.0.store(step, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Inverted dropout: in training, zeroes each element with probability `rate` and scales the
/// rest by `1 / (1 - rate)`; identity in eval mode. Costs nothing in either convention.
#[derive(Debug, Clone)]
pub struct Dropout {
    rate: f64,
    seed: u64,
    /// Names the noise stream.
    name: String,
    clock: NoiseClock,
}

impl Dropout {
    /// `rate` in [0, 1) (checked by `ModelSpec::validate`).
    pub fn new(rate: f64, seed: u64, name: &str, clock: NoiseClock) -> Self {
        Self {
            rate,
            seed,
            name: name.to_string(),
            clock,
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The noise of the step the clock shows, for a kernel that fuses the dropout; `None` in
    /// eval mode or at rate 0 (identity).
    pub fn noise_for(&self, train: bool) -> Option<DropoutNoise> {
        (train && self.rate > 0.0).then(|| self.noise())
    }

    fn noise(&self) -> DropoutNoise {
        let step = self.clock.get();
        let rng = Rng::for_stream(self.seed, &format!("{}/{step}", self.name));
        DropoutNoise::new(rng, 1.0 - self.rate)
    }
}

impl ModuleT for Dropout {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train || self.rate == 0.0 {
            return Ok(x.clone());
        }
        let noise = self.noise();
        // The stream drawn in parallel pieces: element i takes the stream's i-th draw.
        const PIECE: usize = 1 << 14;
        let mut mask = vec![0f32; x.elem_count()];
        mask.par_chunks_mut(PIECE)
            .enumerate()
            .for_each(|(i, m)| noise.fill(i * PIECE, m));
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
        x * mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn noise_depends_on_the_step_only() {
        let clock = NoiseClock::default();
        let d = Dropout::new(0.5, 7, "l.dropout", clock.clone());
        let x = Tensor::ones(1000, candle_core::DType::F32, &Device::Cpu).unwrap();
        let draw = |step| {
            clock.set(step);
            d.forward_t(&x, true).unwrap().to_vec1::<f32>().unwrap()
        };
        let (a, b, a2) = (draw(3), draw(4), draw(3));
        assert_eq!(a, a2);
        assert_ne!(a, b);
        let zeros = a.iter().filter(|&&v| v == 0.0).count();
        assert!((400..600).contains(&zeros), "{zeros} of 1000 dropped");
        assert!(a.iter().all(|&v| v == 0.0 || v == 2.0));
        assert_eq!(
            d.forward_t(&x, false).unwrap().to_vec1::<f32>().unwrap(),
            vec![1.0; 1000]
        );
    }
}
