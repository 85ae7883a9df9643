//! A `VarBuilder` backend that initialises every tensor from the project's seeded [`Rng`].
//!
//! Each tensor draws from its own stream, keyed by the run seed and the tensor's full name,
//! so the values do not depend on the order in which layers are built.

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::{var_builder::SimpleBackend, Init, VarBuilder};

use crate::rng::Rng;

/// Seeded initialiser behind a [`VarBuilder`]; it owns nothing, every call makes a fresh tensor.
#[derive(Debug, Clone, Copy)]
pub struct SeededInit {
    seed: u64,
}

impl SeededInit {
    pub fn new(seed: u64) -> Self {
        Self { seed }
    }

    /// A `VarBuilder` whose `get_with_hints` draws from this initialiser (values are drawn in
    /// f32, then converted to `dtype`).
    pub fn var_builder(self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self), dtype, device.clone())
    }
}

impl SimpleBackend for SeededInit {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let n = s.elem_count();
        let mut rng = Rng::for_stream(self.seed, name);
        let values: Vec<f32> = match h {
            Init::Const(v) => vec![v as f32; n],
            Init::Randn { mean, stdev } => (0..n)
                .map(|_| (mean + stdev * rng.normal()) as f32)
                .collect(),
            Init::Uniform { lo, up } => (0..n).map(|_| rng.uniform(lo, up) as f32).collect(),
            Init::Kaiming { .. } => {
                candle_core::bail!("{name}: Kaiming init is not supported by SeededInit")
            }
        };
        Tensor::from_vec(values, s, dev)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        candle_core::bail!("{name}: SeededInit needs a shape to make a tensor")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}
