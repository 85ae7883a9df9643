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

/// `path` with its existing part resolved (symlinks, `.`, `..`): the canonical path of the file
/// when it exists, otherwise its folder's joined with its name; `None` when the folder does not
/// exist either. Two spellings of one file (existing or about to be written) resolve alike.
pub fn resolved(path: &Path) -> Option<PathBuf> {
    if let Ok(p) = path.canonicalize() {
        return Some(p);
    }
    let name = path.file_name()?;
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Some(folder.canonicalize().ok()?.join(name))
}

/// Writes `bytes` to `path` atomically. On failure (a full disk) the temp file is removed and
/// `path` keeps what it had.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = temp_path(path);
    let written = std::fs::write(&tmp, bytes)
        .with_context(|| format!("writing {}", path.display()))
        .and_then(|()| {
            std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
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

/// A file whose content contradicts its own checksum: reading it again gives the same error,
/// so it is a usage error (exit 2) that no retry fixes.
#[derive(Debug, thiserror::Error)]
#[error(
    "{}: its tensor data does not match the checksum in its header (the file is damaged); \
     restore it or train the run again with --force",
    path.display()
)]
pub struct DamagedFile {
    pub path: PathBuf,
}

/// Header key of the MD5 of a safetensors file's tensor data (see
/// [`save_safetensors_checksummed`]).
pub const CHECKSUM_KEY: &str = "ablate.data_md5";

/// The tensor data of a serialised safetensors file: what follows its 8-byte header length
/// and the header.
fn data_section(bytes: &[u8]) -> Option<&[u8]> {
    let len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    bytes.get(8usize.checked_add(usize::try_from(len).ok()?)?..)
}

/// The MD5 of `data` in lowercase hex.
pub fn md5_hex(data: &[u8]) -> String {
    use md5::{Digest, Md5};
    Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// [`save_safetensors_with`], with the MD5 of the tensor data in the header
/// ([`CHECKSUM_KEY`]) so that [`load_safetensors_verified`] detects damaged data.
pub fn save_safetensors_checksummed(
    path: &Path,
    tensors: Vec<(String, Tensor)>,
    mut metadata: HashMap<String, String>,
) -> anyhow::Result<u64> {
    // The data section does not depend on the header: serialise once to hash it.
    let plain = safetensors::serialize(tensors.clone(), Some(metadata.clone()))
        .with_context(|| format!("serialising {}", path.display()))?;
    let data = data_section(&plain).context("a serialised safetensors file has a data section")?;
    metadata.insert(CHECKSUM_KEY.to_string(), md5_hex(data));
    save_safetensors_with(path, tensors, Some(metadata))
}

/// Tensors and header metadata of a safetensors file.
type Loaded = (HashMap<String, Tensor>, HashMap<String, String>);

/// [`load_safetensors`], failing with an error naming the file when its tensor data does not
/// match the checksum in its header. A file without a checksum loads as it is.
pub fn load_safetensors_verified(
    path: &Path,
    device: &candle_core::Device,
) -> anyhow::Result<Loaded> {
    load(path, device, true)
}

/// The tensors (on `device`) and header metadata of a safetensors file.
pub fn load_safetensors(path: &Path, device: &candle_core::Device) -> anyhow::Result<Loaded> {
    load(path, device, false)
}

/// The string metadata in the header of the safetensors file at `path`, read without its
/// tensor data; `None` when there is no readable safetensors header.
pub fn safetensors_header(path: &Path) -> Option<HashMap<String, String>> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).ok()?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).ok()?;
    let len = usize::try_from(u64::from_le_bytes(len)).ok()?;
    // A safetensors header is JSON of at most 100 MB (the format's own limit).
    if len > 100_000_000 {
        return None;
    }
    let mut header = vec![0u8; len];
    file.read_exact(&mut header).ok()?;
    let header: serde_json::Value = serde_json::from_slice(&header).ok()?;
    serde_json::from_value(header.get("__metadata__")?.clone()).ok()
}

/// Reads `path`; with `verify`, checks the tensor data against the header's checksum if it
/// has one.
fn load(path: &Path, device: &candle_core::Device, verify: bool) -> anyhow::Result<Loaded> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    if let Some(expected) = metadata.get(CHECKSUM_KEY).filter(|_| verify) {
        let actual = data_section(&bytes).map(md5_hex);
        if actual.as_deref() != Some(expected.as_str()) {
            return Err(DamagedFile {
                path: path.to_path_buf(),
            }
            .into());
        }
    }
    let tensors = candle_core::safetensors::load_buffer(&bytes, device)
        .with_context(|| format!("{}: reading tensors", path.display()))?;
    Ok((tensors, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write that cannot complete (here the target is a non-empty directory; on a full disk
    /// the write itself fails) leaves no temp file behind and the target as it was.
    /// Two spellings of one file resolve alike, whether it exists or not.
    #[test]
    fn spellings_of_one_file_resolve_alike() {
        let dir = std::env::temp_dir().join(format!("ablate-resolved-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a"), "").unwrap();
        let a = resolved(&dir.join("a")).unwrap();
        assert_eq!(resolved(&dir.join("sub/../a")), Some(a.clone()));
        assert_eq!(resolved(&dir.join("./sub/../b")), resolved(&dir.join("b")));
        assert_ne!(resolved(&dir.join("b")), Some(a));
        assert_eq!(resolved(&dir.join("missing/b")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_atomic_write_leaves_no_temp_file() {
        let dir = std::env::temp_dir().join(format!("ablate-io-{}", std::process::id()));
        let target = dir.join("status.json");
        std::fs::create_dir_all(target.join("occupied")).unwrap();
        let e = write_atomic(&target, b"{}").unwrap_err();
        assert!(format!("{e:#}").contains("status.json"), "{e:#}");
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["status.json"]);
        assert!(target.join("occupied").is_dir());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
