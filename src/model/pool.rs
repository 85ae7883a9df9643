//! Average pooling with kernel = stride (transitions and the head).

use candle_core::{Module, Result, Tensor};

use crate::cost::{trace, Cost, LayerCost};

#[derive(Debug, Clone)]
pub struct AvgPool2d {
    name: String,
    kernel: usize,
}

impl AvgPool2d {
    pub fn new(name: String, kernel: usize) -> Self {
        Self { name, kernel }
    }

    /// Kernel side, equal to the stride.
    pub fn kernel(&self) -> usize {
        self.kernel
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Module for AvgPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let k = self.kernel;
        let y = x.avg_pool2d(k)?;
        trace::record(|| {
            let per_sample = y.elem_count() / y.dim(0).unwrap_or(1).max(1);
            LayerCost::same(
                &self.name,
                format!("avgpool{k}"),
                Cost::new((per_sample * k * k) as u64, 0),
            )
        });
        Ok(y)
    }
}
