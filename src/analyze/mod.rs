//! The analyzer: FLOPs and parameters counted from the layer objects a forward pass runs,
//! and model sizes measured on the files really written.

mod size;

pub use crate::cost::{trace, Convention, Cost, LayerCost};
pub use size::{write_checkpoint, write_deploy};

use anyhow::Context;
use candle_core::Device;
use candle_nn::ModuleT;
use serde::Serialize;

use crate::config::ResolvedModel;
use crate::model::{Form, Network};

/// Runs one eval-mode forward pass of `net` on a zero image (batch 1) and returns what every
/// op it executed cost, in execution order.
pub fn trace_costs(net: &Network) -> candle_core::Result<Vec<LayerCost>> {
    let x = Network::zeros_input(1, net.device())?;
    let (_, layers) = trace::capture(|| net.forward_t(&x, false))?;
    Ok(layers)
}

/// Sum of `layers` in `convention`.
pub fn total(layers: &[LayerCost], convention: Convention) -> Cost {
    layers.iter().map(|l| l.get(convention)).sum()
}

/// Counts and sizes of one model.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub model: String,
    pub form: Form,
    /// Ops of the counted form, in execution order.
    #[serde(skip)]
    pub layers: Vec<LayerCost>,
    /// Bytes of the deploy model's safetensors file.
    pub deploy_bytes: u64,
    /// Bytes of the training checkpoint file (at the start of training).
    pub checkpoint_bytes: u64,
    /// Bytes of the deploy model's float32 parameters alone (no running stats or indices).
    pub deploy_param_bytes: u64,
}

impl Analysis {
    pub fn total(&self, convention: Convention) -> Cost {
        total(&self.layers, convention)
    }

    /// Builds `model` with random weights (seed `seed`), counts it in `form`, and writes both
    /// files into `scratch` to measure them.
    pub fn of(
        model: &ResolvedModel,
        form: Form,
        seed: u64,
        scratch: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let training =
            Network::seeded(&model.spec, seed, &Device::Cpu).context("building the model")?;
        let mut pruned = training.clone();
        pruned
            .finish_pruning()
            .context("running the pruning schedule")?;
        let deploy = pruned.condense().context("converting to the deploy form")?;
        std::fs::create_dir_all(scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;
        let checkpoint_bytes =
            write_checkpoint(&training, &scratch.join("checkpoint.safetensors"))?;
        let deploy_bytes = write_deploy(&deploy, &scratch.join("deploy.safetensors"))?;
        let counted = match form {
            Form::Training => &training,
            Form::Deploy => &deploy,
        };
        let layers = trace_costs(counted).context("tracing the forward pass")?;
        let deploy_param_bytes = deploy
            .trainable()
            .iter()
            .map(|(_, v)| 4 * v.elem_count() as u64)
            .sum();
        Ok(Self {
            model: model.name.clone(),
            form,
            layers,
            deploy_bytes,
            checkpoint_bytes,
            deploy_param_bytes,
        })
    }
}
