//! Model sizes, measured on files really written (spec section 5).

use std::path::Path;

use crate::io::save_safetensors;
use crate::model::{checkpoint_tensors, deploy_tensors, Network};

/// Bytes of the deploy model's safetensors file, written to `path`.
pub fn write_deploy(net: &Network, path: &Path) -> anyhow::Result<u64> {
    save_safetensors(path, deploy_tensors(net))
}

/// Bytes of a fresh training checkpoint of `net` (zero momentum), written to `path`.
pub fn write_checkpoint(net: &Network, path: &Path) -> anyhow::Result<u64> {
    save_safetensors(path, checkpoint_tensors(net, |_| None)?)
}
