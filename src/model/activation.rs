//! The network's activation (ReLU or ReLU6), counted as one op per input element.

use candle_core::{Module, Result, Tensor};

use crate::config::Activation;
use crate::cost::{trace, Cost, LayerCost};
use crate::kernels::ActKind;

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

impl Act {
    /// ReLU or ReLU6.
    pub fn kind(&self) -> Activation {
        self.kind
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The kernels' name for this activation.
    pub fn kernel(&self) -> ActKind {
        match self.kind {
            Activation::Relu => ActKind::Relu,
            Activation::Relu6 => ActKind::Relu6,
        }
    }

    /// Records the cost of applying this activation to `x` (for a fused kernel that did).
    pub fn record(&self, x: &Tensor) {
        trace::record(|| {
            let op = match self.kind {
                Activation::Relu => "relu",
                Activation::Relu6 => "relu6",
            };
            let per_sample = x.elem_count() / x.dim(0).unwrap_or(1).max(1);
            LayerCost::same(&self.name, op, Cost::new(per_sample as u64, 0))
        });
    }
}

impl Module for Act {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match self.kind {
            Activation::Relu => x.relu()?,
            Activation::Relu6 => x.relu()?.minimum(6f32)?,
        };
        self.record(x);
        Ok(y)
    }
}
