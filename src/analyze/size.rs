//! Model sizes, measured on files really written (spec section 5).

use std::path::Path;

use candle_core::Tensor;

use crate::io::save_safetensors;
use crate::model::{Network, StateTensor};

/// Everything the deploy model needs to run: parameters, BN running stats, index tensors.
pub fn deploy_tensors(net: &Network) -> Vec<(String, Tensor)> {
    net.state()
        .into_iter()
        .map(|(name, t)| (name, t.tensor().clone()))
        .collect()
}

/// The training checkpoint as the spec defines it: every parameter, every mask (float32), BN
/// running stats, index tensors, and an SGD momentum buffer (`momentum.<param>`) for every
/// parameter that receives a gradient. `momentum` gives the buffer of a parameter, if training
/// has made one; otherwise a zero buffer of the parameter's shape stands in.
pub fn checkpoint_tensors(
    net: &Network,
    momentum: impl Fn(&str) -> Option<Tensor>,
) -> candle_core::Result<Vec<(String, Tensor)>> {
    let mut out = Vec::new();
    for (name, t) in net.state() {
        if let StateTensor::Param(v) = &t {
            let buffer = match momentum(&name) {
                Some(m) => m,
                None => v.as_tensor().zeros_like()?,
            };
            out.push((format!("momentum.{name}"), buffer));
        }
        out.push((name, t.tensor().clone()));
    }
    Ok(out)
}

/// Bytes of the deploy model's safetensors file, written to `path`.
pub fn write_deploy(net: &Network, path: &Path) -> anyhow::Result<u64> {
    save_safetensors(path, deploy_tensors(net))
}

/// Bytes of a fresh training checkpoint of `net` (zero momentum), written to `path`.
pub fn write_checkpoint(net: &Network, path: &Path) -> anyhow::Result<u64> {
    save_safetensors(path, checkpoint_tensors(net, |_| None)?)
}
