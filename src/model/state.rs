//! A model's state as named tensors: what checkpoints and deploy files hold and what the
//! optimiser trains. Every layer lists its own.

use std::collections::HashMap;

use candle_core::{Tensor, Var};

/// One named tensor of a model's state, by role.
#[derive(Debug, Clone)]
pub enum StateTensor {
    /// Trainable parameter (receives a gradient).
    Param(Var),
    /// 0/1 pruning mask, float32.
    Mask(Tensor),
    /// BN running mean or variance (updated in training mode, not by gradients).
    RunningStat(Var),
    /// Channel index of an index-select (u32).
    Index(Tensor),
}

impl StateTensor {
    pub fn tensor(&self) -> &Tensor {
        match self {
            Self::Param(v) | Self::RunningStat(v) => v.as_tensor(),
            Self::Mask(t) | Self::Index(t) => t,
        }
    }

    pub fn is_param(&self) -> bool {
        matches!(self, Self::Param(_))
    }
}

/// Named state entries, in the order a model lists them.
pub type State = Vec<(String, StateTensor)>;

/// Tensors read back from a checkpoint, by state name.
pub type Saved = HashMap<String, Tensor>;

/// The tensor `name` of `saved`, with the shape `like` has.
pub(crate) fn saved_like<'a>(
    saved: &'a Saved,
    name: &str,
    like: &Tensor,
) -> candle_core::Result<&'a Tensor> {
    let t = saved
        .get(name)
        .ok_or_else(|| candle_core::Error::Msg(format!("checkpoint has no tensor `{name}`")))?;
    if t.dims() != like.dims() {
        candle_core::bail!(
            "checkpoint tensor `{name}` has shape {:?}, the model expects {:?}",
            t.dims(),
            like.dims()
        );
    }
    Ok(t)
}

/// Layers that own state push their entries as `"{prefix}.{field}"`.
pub trait HasState {
    fn collect_state(&self, out: &mut State);
}

/// The values of `t`, flattened, as f64 (exact for f32 and f64 tensors).
pub(crate) fn host_values(t: &Tensor) -> candle_core::Result<Vec<f64>> {
    t.flatten_all()?
        .to_dtype(candle_core::DType::F64)?
        .to_vec1()
}

/// A tensor of `shape` holding `values`, with the dtype and device of `like`.
pub(crate) fn from_host<S: Into<candle_core::Shape>>(
    values: Vec<f64>,
    shape: S,
    like: &Tensor,
) -> candle_core::Result<Tensor> {
    Tensor::from_vec(values, shape, like.device())?.to_dtype(like.dtype())
}

/// A trainable copy of `t` that shares nothing with it.
pub(crate) fn fresh_var(t: &Tensor) -> candle_core::Result<Var> {
    Var::from_tensor(&t.detach())
}
