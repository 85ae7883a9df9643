//! What a saved model holds, by tensor name: the deploy file (what the deploy form needs to run)
//! and the training checkpoint as the spec defines it. The trainer writes these and the analyzer
//! measures their sizes; both read the layout from here, beside the network.

use candle_core::Tensor;

use super::network::Network;
use super::state::StateTensor;

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
