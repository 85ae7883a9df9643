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
/// `path` keeps what it had. A file that already holds exactly `bytes` is left alone: a
/// command that changes nothing writes nothing (and so works on a full disk).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    // The rename would put a regular file in place of a device, FIFO, socket or directory
    // (`--out /dev/null` as root replaced the device): such a path is never written.
    if let Ok(meta) = std::fs::metadata(path) {
        if !meta.is_file() {
            anyhow::bail!(
                "{}: not a regular file; refusing to replace it with one",
                path.display()
            );
        }
        if meta.len() == bytes.len() as u64 && std::fs::read(path).is_ok_and(|old| old == bytes) {
            return Ok(());
        }
    }
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

/// The text of `path` if it is a regular file (a symlink to one counts) of at most `cap` bytes;
/// `None` for anything else, checked before the file is opened: a FIFO is never waited on, a
/// device (`/dev/zero`) never read without end.
pub fn read_small_text(path: &Path, cap: u64) -> Option<String> {
    use std::io::Read;
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() > cap {
        return None;
    }
    let mut text = String::new();
    // The cap again, should the file grow between the two looks.
    std::fs::File::open(path)
        .ok()?
        .take(cap + 1)
        .read_to_string(&mut text)
        .ok()?;
    (text.len() as u64 <= cap).then_some(text)
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
    let bytes = canonical_header(bytes);
    write_atomic(path, &bytes)?;
    Ok(bytes.len() as u64)
}

/// A safetensors file with its header's keys in sorted order, at every level: the same tensors
/// and metadata give the same bytes (safetensors writes its metadata map in hash order, so
/// training one config twice gave files that differed in the header alone). The header keeps
/// its length (the same keys and values, reordered), so the data offsets stay valid; a file
/// that is not as `serialize` writes it is returned unchanged.
fn canonical_header(bytes: Vec<u8>) -> Vec<u8> {
    let Some(n) = bytes
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(|b| u64::from_le_bytes(b) as usize)
    else {
        return bytes;
    };
    let Some(header) = n.checked_add(8).and_then(|end| bytes.get(8..end)) else {
        return bytes;
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(header) else {
        return bytes;
    };
    let sorted_text = match canonical_json(&value) {
        Some(t) if t.len() <= n => t,
        _ => return bytes,
    };
    let mut out = bytes;
    out[8..8 + n].fill(b' ');
    out[8..8 + sorted_text.len()].copy_from_slice(sorted_text.as_bytes());
    out
}

/// Compact JSON of `v` with every object's keys in sorted order.
fn canonical_json(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let parts: Option<Vec<String>> = keys
                .into_iter()
                .map(|k| {
                    Some(format!(
                        "{}:{}",
                        serde_json::to_string(k).ok()?,
                        canonical_json(&map[k])?
                    ))
                })
                .collect();
            Some(format!("{{{}}}", parts?.join(",")))
        }
        serde_json::Value::Array(items) => {
            let parts: Option<Vec<String>> = items.iter().map(canonical_json).collect();
            Some(format!("[{}]", parts?.join(",")))
        }
        other => serde_json::to_string(other).ok(),
    }
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
    // One self-contained message (callers may show only the innermost error): the file is
    // damaged, and what its reader found.
    let damaged = |what: String| {
        anyhow::anyhow!(
            "{}: damaged or not a safetensors file ({what})",
            path.display()
        )
    };
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| damaged(format!("its header does not parse: {e}")))?;
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
        .map_err(|e| damaged(format!("its tensors do not read: {e}")))?;
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

    /// A path that is not a regular file (here a FIFO; `/dev/null` as root was replaced) is
    /// never renamed over: the write fails naming it and the path keeps what it was.
    #[test]
    fn an_atomic_write_never_replaces_what_is_not_a_regular_file() {
        let dir = std::env::temp_dir().join(format!("ablate-io-fifo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("pipe");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!("no mkfifo here: nothing to check");
            return;
        }
        let e = write_atomic(&fifo, b"{}").unwrap_err();
        assert!(format!("{e:#}").contains("not a regular file"), "{e:#}");
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The same tensors and metadata give the same bytes, however the metadata map iterates
    /// (a file of a run trained twice differed in 1 of 4 tries), and the file still loads.
    #[test]
    fn safetensors_files_are_byte_identical_for_the_same_content() {
        let dir = std::env::temp_dir().join(format!("ablate-io-st-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tensors = || {
            vec![
                (
                    "b".to_string(),
                    Tensor::new(&[1f32, 2.0], &candle_core::Device::Cpu).unwrap(),
                ),
                (
                    "a".to_string(),
                    Tensor::new(&[3f32], &candle_core::Device::Cpu).unwrap(),
                ),
            ]
        };
        let metadata = || {
            Some(
                (0..16)
                    .map(|i| (format!("key{i}"), format!("value {i}")))
                    .collect::<HashMap<String, String>>(),
            )
        };
        let mut files = Vec::new();
        for i in 0..8 {
            let path = dir.join(format!("m{i}.safetensors"));
            save_safetensors_with(&path, tensors(), metadata()).unwrap();
            files.push(std::fs::read(&path).unwrap());
        }
        assert!(files.windows(2).all(|w| w[0] == w[1]));
        let (loaded, meta) =
            load_safetensors(&dir.join("m0.safetensors"), &candle_core::Device::Cpu).unwrap();
        assert_eq!(loaded["b"].to_vec1::<f32>().unwrap(), [1.0, 2.0]);
        assert_eq!(meta["key7"], "value 7");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Only regular files of at most the cap are read, without opening anything else: a FIFO
    /// (which would block), `/dev/zero` (endless) and a file over the cap give `None`.
    #[test]
    fn small_text_reads_only_small_regular_files() {
        let dir = std::env::temp_dir().join(format!("ablate-io-small-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("cache.json");
        std::fs::write(&file, "{}").unwrap();
        assert_eq!(read_small_text(&file, 16).as_deref(), Some("{}"));
        assert_eq!(read_small_text(&file, 1), None, "over the cap");
        assert_eq!(read_small_text(Path::new("/dev/zero"), 1 << 20), None);
        let link = dir.join("zero.json");
        if std::os::unix::fs::symlink("/dev/zero", &link).is_ok() {
            assert_eq!(read_small_text(&link, 1 << 20), None);
        }
        let fifo = dir.join("fifo.json");
        if std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .is_ok_and(|s| s.success())
        {
            assert_eq!(read_small_text(&fifo, 1 << 20), None, "returns at once");
        }
        assert_eq!(read_small_text(&dir.join("missing"), 16), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A file whose header is garbage or cut short says that it is damaged, naming it, in
    /// its innermost error (was: "header too large", "EOF while parsing a string").
    #[test]
    fn a_damaged_header_says_the_file_is_damaged() {
        let dir = std::env::temp_dir().join(format!("ablate-io-dmg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("model.safetensors");
        let t = Tensor::new(&[1f32, 2.0], &candle_core::Device::Cpu).unwrap();
        save_safetensors(&path, vec![("w".into(), t)]).unwrap();
        let good = std::fs::read(&path).unwrap();
        let mut huge = good.clone();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        for bytes in [huge, good[..20].to_vec(), b"not a model".to_vec()] {
            std::fs::write(&path, &bytes).unwrap();
            let e = load_safetensors(&path, &candle_core::Device::Cpu).unwrap_err();
            let root = e.root_cause().to_string();
            assert!(
                root.contains("model.safetensors: damaged or not a safetensors file"),
                "{root}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Writing what a file already holds leaves it alone (its modification time too); a
    /// change is written.
    #[test]
    fn an_atomic_write_of_the_same_bytes_writes_nothing() {
        let dir = std::env::temp_dir().join(format!("ablate-io-same-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("plan.json");
        write_atomic(&path, b"{\"a\": 1}").unwrap();
        let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let first = inode(&path);
        write_atomic(&path, b"{\"a\": 1}").unwrap();
        assert_eq!(inode(&path), first, "not replaced");
        write_atomic(&path, b"{\"a\": 2}").unwrap();
        assert_ne!(inode(&path), first, "replaced");
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\": 2}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
