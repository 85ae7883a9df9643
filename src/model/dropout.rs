//! Dropout whose noise comes from the project's seeded [`Rng`], so training is reproducible.

use std::sync::Mutex;

use candle_core::{Result, Tensor};
use candle_nn::ModuleT;

use crate::rng::Rng;

/// Inverted dropout: in training, zeroes each element with probability `rate` and scales the
/// rest by `1 / (1 - rate)`; identity in eval mode. Costs nothing in either convention.
#[derive(Debug)]
pub struct Dropout {
    rate: f64,
    rng: Mutex<Rng>,
}

impl Dropout {
    /// `rate` in [0, 1) (checked by `ModelSpec::validate`); the noise stream is named `name`.
    pub fn new(rate: f64, seed: u64, name: &str) -> Self {
        Self {
            rate,
            rng: Mutex::new(Rng::for_stream(seed, name)),
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }
}

impl Clone for Dropout {
    fn clone(&self) -> Self {
        let rng = self.rng.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Self {
            rate: self.rate,
            rng: Mutex::new(rng),
        }
    }
}

impl ModuleT for Dropout {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train || self.rate == 0.0 {
            return Ok(x.clone());
        }
        let keep = 1.0 - self.rate;
        let scale = (1.0 / keep) as f32;
        let mask: Vec<f32> = {
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            (0..x.elem_count())
                .map(|_| if rng.next_f64() < keep { scale } else { 0.0 })
                .collect()
        };
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
        x * mask
    }
}
