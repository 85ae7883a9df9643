//! `model.safetensors`: the deploy model a done run leaves, laid out as
//! [`deploy_tensors`] says, with in its header the MD5 of its tensor data (so that a reader,
//! [`crate::io::load_safetensors_verified`], refuses a damaged file instead of running a
//! silently different model) and the run's `config.toml` text (the config its weights were
//! trained with, [`CONFIG_KEY`]). Written atomically.

use std::collections::HashMap;
use std::path::Path;

use super::checkpoint::CONFIG_KEY;
use crate::io::save_safetensors_checksummed;
use crate::model::{deploy_tensors, Network};

/// Writes the deploy-form `net`, trained with the config `config_toml`, to `path`; returns the
/// file's bytes.
pub fn save(path: &Path, net: &Network, config_toml: &str) -> anyhow::Result<u64> {
    let metadata = HashMap::from([(CONFIG_KEY.to_string(), config_toml.to_string())]);
    save_safetensors_checksummed(path, deploy_tensors(net), metadata)
}

/// The config text in the header `metadata` of a deploy model file; `None` in files written
/// before it was recorded.
pub fn config_of(metadata: &HashMap<String, String>) -> Option<&str> {
    metadata.get(CONFIG_KEY).map(String::as_str)
}
