//! `model.safetensors`: the deploy model a done run leaves, laid out as
//! [`deploy_tensors`] says, with the MD5 of its tensor data in its header so that a reader
//! ([`crate::io::load_safetensors_verified`]) refuses a damaged file instead of running a
//! silently different model. Written atomically.

use std::collections::HashMap;
use std::path::Path;

use crate::io::save_safetensors_checksummed;
use crate::model::{deploy_tensors, Network};

/// Writes the deploy-form `net` to `path`; returns the file's bytes.
pub fn save(path: &Path, net: &Network) -> anyhow::Result<u64> {
    save_safetensors_checksummed(path, deploy_tensors(net), HashMap::new())
}
