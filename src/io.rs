//! Writing result files so that a crash never leaves a half-written one: temp file + rename.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::Tensor;

/// The temp path beside `path` that an atomic write goes through.
fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = temp_path(path);
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// Writes named tensors as one safetensors file, atomically; returns the file's size in bytes.
pub fn save_safetensors(path: &Path, tensors: Vec<(String, Tensor)>) -> anyhow::Result<u64> {
    save_safetensors_with(path, tensors, None)
}

/// [`save_safetensors`] with string `metadata` in the file's header.
pub fn save_safetensors_with(
    path: &Path,
    tensors: Vec<(String, Tensor)>,
    metadata: Option<HashMap<String, String>>,
) -> anyhow::Result<u64> {
    let bytes = safetensors::serialize(tensors, metadata)
        .with_context(|| format!("serialising {}", path.display()))?;
    write_atomic(path, &bytes)?;
    Ok(bytes.len() as u64)
}

/// The tensors (on `device`) and header metadata of a safetensors file.
pub fn load_safetensors(
    path: &Path,
    device: &candle_core::Device,
) -> anyhow::Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let tensors = candle_core::safetensors::load_buffer(&bytes, device)
        .with_context(|| format!("{}: reading tensors", path.display()))?;
    Ok((tensors, metadata))
}
