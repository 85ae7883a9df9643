//! A dense block's layers, run as one op ([`crate::kernels::dense_block`], which owns the
//! block's feature and gradient buffers) where the fast kernels run and every layer has a
//! fused form, else layer by layer through candle (`concat([x, layer(x)])` per layer).

use std::sync::Arc;

use candle_core::{Result, Tensor};
use candle_nn::ModuleT;

use super::dense_layer::DenseLayer;
use super::fused_stage::FusedStage;
use crate::cost::trace;
use crate::kernels::{self, dense_block, BlockLayer};

/// `layers` over `x`: the features `[N, C + sum of growths, H, W]`.
pub fn forward(layers: &[DenseLayer], x: &Tensor, train: bool) -> Result<Tensor> {
    if kernels::fast_for(x) && !trace::capturing() {
        let mut fused = Vec::with_capacity(layers.len());
        for layer in layers {
            match layer.block_stages(train)? {
                Some(stages) => fused.push(stages),
                None => break,
            }
        }
        if fused.len() == layers.len() && !layers.is_empty() {
            return run(fused, x, train);
        }
    }
    layers.iter().try_fold(x.clone(), |x, layer| {
        let y = layer.forward_t(&x, train)?;
        Ok(unless_training(y, train))
    })
}

fn run(layers: Vec<Vec<FusedStage>>, x: &Tensor, train: bool) -> Result<Tensor> {
    let plan: Arc<[BlockLayer]> = layers
        .iter()
        .map(|stages| BlockLayer {
            stages: stages.iter().map(|s| s.stage.clone()).collect(),
        })
        .collect();
    let pieces: Vec<&Tensor> = layers
        .iter()
        .flatten()
        .flat_map(|s| s.params.iter())
        .collect();
    let params = Tensor::cat(&pieces, 0)?;
    let (y, stats) = dense_block(x, &params, &plan, train)?;
    if let Some(stats) = stats {
        for (stage, batch) in layers.iter().flatten().zip(stats.stages.iter().flatten()) {
            stage.norm.update_running_from(batch, stats.count)?;
        }
    }
    Ok(y)
}

/// `y` itself in training; in evaluation, `y` cut from the graph that made it. The parameters
/// are variables, so every op's output keeps its inputs alive for a backward pass; evaluation
/// never runs one, and cutting the graph after each layer lets the tensors of the layers
/// before be freed, so an evaluation holds about one layer's tensors, not the whole network's.
pub(crate) fn unless_training(y: Tensor, train: bool) -> Tensor {
    if train {
        y
    } else {
        y.detach()
    }
}
