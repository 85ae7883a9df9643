//! The network's activation (ReLU or ReLU6), counted as one op per input element.

use candle_core::{Module, Result, Tensor};

use crate::analyze::{trace, Cost, LayerCost};
use crate::config::Activation;

#[derive(Debug, Clone)]
pub struct Act {
    name: String,
    kind: Activation,
}

impl Act {
    pub fn new(name: String, kind: Activation) -> Self {
        Self { name, kind }
    }
}

impl Module for Act {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (op, y) = match self.kind {
            Activation::Relu => ("relu", x.relu()?),
            Activation::Relu6 => ("relu6", x.relu()?.minimum(6f32)?),
        };
        trace::record(|| {
            let per_sample = x.elem_count() / x.dim(0).unwrap_or(1).max(1);
            LayerCost::same(&self.name, op, Cost::new(per_sample as u64, 0))
        });
        Ok(y)
    }
}
