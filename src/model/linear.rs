//! Fully connected layer with bias; counted as weight + bias elements (ops and params).

use candle_core::{Module, Result, Tensor, Var};
use candle_nn::{Init, VarBuilder};

use super::state::{fresh_var, HasState, State, StateTensor};
use crate::cost::{trace, Cost, LayerCost};

#[derive(Debug, Clone)]
pub struct Linear {
    name: String,
    /// `[out, in]`
    weight: Var,
    /// `[out]`
    bias: Var,
}

impl Linear {
    /// Weight U(+-1/sqrt(in)) (PyTorch's default, kept by the reference), bias constant `bias`.
    pub fn new(inputs: usize, outputs: usize, bias: f64, vb: VarBuilder) -> Result<Self> {
        let bound = 1.0 / (inputs as f64).sqrt();
        let weight = vb.get_with_hints(
            (outputs, inputs),
            "weight",
            Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?;
        let bias = vb.get_with_hints(outputs, "bias", Init::Const(bias))?;
        Self::from_tensors(vb.prefix(), &weight, &bias)
    }

    pub fn from_tensors(name: String, weight: &Tensor, bias: &Tensor) -> Result<Self> {
        Ok(Self {
            name,
            weight: fresh_var(weight)?,
            bias: fresh_var(bias)?,
        })
    }

    pub fn weight(&self) -> &Tensor {
        self.weight.as_tensor()
    }

    pub fn bias(&self) -> &Tensor {
        self.bias.as_tensor()
    }

    /// The state-name prefix (`{name}.weight`, `{name}.bias`).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        trace::record(|| {
            let n = (self.weight.elem_count() + self.bias.elem_count()) as u64;
            LayerCost::same(&self.name, "linear", Cost::new(n, n))
        });
        x.matmul(&self.weight.as_tensor().t()?)?
            .broadcast_add(self.bias.as_tensor())
    }
}

impl HasState for Linear {
    fn collect_state(&self, out: &mut State) {
        out.push((
            format!("{}.weight", self.name),
            StateTensor::Param(self.weight.clone()),
        ));
        out.push((
            format!("{}.bias", self.name),
            StateTensor::Param(self.bias.clone()),
        ));
    }
}
