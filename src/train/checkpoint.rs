//! The training checkpoint: one safetensors file with every state tensor of the network, the
//! optimiser's momentum buffers (`momentum.<param>`) and, in its header, where training stands
//! and the records so far, with the MD5 of the tensor data (checked on load: a damaged file is
//! an error, never a silent resume). Written atomically at the end of every epoch.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::optim::Sgd;
use crate::io::{load_safetensors_verified, safetensors_header, save_safetensors_checksummed};
use crate::model::checkpoint_tensors;
use crate::model::{Network, Saved};
use crate::run_dir::EpochRecord;

/// Header key of the [`TrainedSoFar`] JSON.
const STATE_KEY: &str = "ablate.progress";
/// Header key of the run's `config.toml` text (in the checkpoint and in the deploy model).
pub const CONFIG_KEY: &str = "ablate.config";

/// How far a run got.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainedSoFar {
    pub epochs_done: usize,
    /// Training iterations done, over all epochs.
    pub iterations_done: u64,
    pub records: Vec<EpochRecord>,
}

/// Writes the checkpoint of `net` and `sgd` at `progress`; returns the file's bytes.
pub fn save(
    path: &Path,
    net: &Network,
    sgd: &Sgd,
    progress: &TrainedSoFar,
    config_toml: &str,
) -> anyhow::Result<u64> {
    let tensors = checkpoint_tensors(net, |name| sgd.momentum(name))?;
    let metadata = HashMap::from([
        (STATE_KEY.to_string(), serde_json::to_string(progress)?),
        (CONFIG_KEY.to_string(), config_toml.to_string()),
    ]);
    save_safetensors_checksummed(path, tensors, metadata)
}

/// A checkpoint read back: its tensors (network state and momentum), progress and config text.
pub struct Loaded {
    pub tensors: Saved,
    pub progress: TrainedSoFar,
    pub config_toml: String,
}

pub fn load(path: &Path, device: &Device) -> anyhow::Result<Loaded> {
    let (tensors, metadata) = load_safetensors_verified(path, device)?;
    let field = |key: &str| {
        metadata.get(key).with_context(|| {
            format!(
                "{}: not an ablate checkpoint (no `{key}` in its header)",
                path.display()
            )
        })
    };
    let progress = serde_json::from_str(field(STATE_KEY)?)
        .with_context(|| format!("{}: reading `{STATE_KEY}`", path.display()))?;
    Ok(Loaded {
        tensors,
        progress,
        config_toml: field(CONFIG_KEY)?.clone(),
    })
}

/// The progress recorded in the header of the checkpoint at `path`, read without loading its
/// tensors; `None` when there is no readable checkpoint. The truth about how far a run got:
/// `status.json` is a summary of it that a crash or a hand may have damaged.
pub fn progress_of(path: &Path) -> Option<TrainedSoFar> {
    serde_json::from_str(safetensors_header(path)?.get(STATE_KEY)?).ok()
}

/// The `config.toml` text recorded in the header of the checkpoint at `path` (the config the
/// run trained with), read without loading its tensors; `None` when there is no readable
/// checkpoint.
pub fn config_of(path: &Path) -> Option<String> {
    safetensors_header(path)?.remove(CONFIG_KEY)
}

/// Gives `sgd` the momentum buffers of `saved` for the parameters it trains.
pub fn restore_momentum(sgd: &mut Sgd, net: &Network, saved: &Saved) {
    for (name, _) in net.trainable() {
        if let Some(buffer) = saved.get(&format!("momentum.{name}")) {
            sgd.set_momentum(&name, buffer.clone());
        }
    }
}
