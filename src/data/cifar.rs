//! Reader for the official CIFAR-10 binary version (`cifar-10-batches-bin/`).
//!
//! Each file holds 10,000 records of 1 label byte followed by 3,072 pixel bytes (1,024 red,
//! 1,024 green, 1,024 blue, row-major).

use std::path::{Path, PathBuf};

use super::{DataError, Dataset, IMAGE_BYTES};

/// Folder the archive unpacks to, under the data dir.
pub const CIFAR10_DIR: &str = "cifar-10-batches-bin";
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
pub const TEST_FILE: &str = "test_batch.bin";
/// Classes of CIFAR-10: labels are `0..CIFAR10_CLASSES`.
pub const CIFAR10_CLASSES: usize = crate::config::DatasetKind::Cifar10.classes();
/// Bytes of one record: label + image.
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
const RECORDS_PER_FILE: usize = 10_000;

/// (train, test) from `data_dir/cifar-10-batches-bin/`; every file is checked for its exact size.
pub fn load_cifar10(data_dir: &Path) -> Result<(Dataset, Dataset), DataError> {
    let dir = data_dir.join(CIFAR10_DIR);
    let missing: Vec<String> = TRAIN_FILES
        .iter()
        .chain([&TEST_FILE])
        .filter(|f| !dir.join(f).is_file())
        .map(|f| f.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(DataError::Missing { dir, missing });
    }
    let mut train = Dataset {
        images: Vec::new(),
        labels: Vec::new(),
        classes: CIFAR10_CLASSES,
    };
    for f in TRAIN_FILES {
        read_batch(&dir.join(f), &mut train)?;
    }
    let mut test = Dataset {
        images: Vec::new(),
        labels: Vec::new(),
        classes: CIFAR10_CLASSES,
    };
    read_batch(&dir.join(TEST_FILE), &mut test)?;
    Ok((train, test))
}

/// Appends the records of one batch file to `into`.
fn read_batch(file: &Path, into: &mut Dataset) -> Result<(), DataError> {
    let io = |source| DataError::Io {
        file: PathBuf::from(file),
        source,
    };
    let expected = (RECORDS_PER_FILE * RECORD_BYTES) as u64;
    let found = std::fs::metadata(file).map_err(io)?.len();
    if found != expected {
        return Err(DataError::WrongSize {
            file: file.to_path_buf(),
            expected,
            found,
        });
    }
    let bytes = std::fs::read(file).map_err(io)?;
    into.images.reserve(RECORDS_PER_FILE * IMAGE_BYTES);
    for (record, chunk) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        let label = chunk[0];
        if usize::from(label) >= CIFAR10_CLASSES {
            return Err(DataError::BadLabel {
                file: file.to_path_buf(),
                record,
                label,
            });
        }
        into.labels.push(label);
        into.images.extend_from_slice(&chunk[1..]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a complete fake CIFAR-10 folder: record r of every file has label r % 10 and
    /// pixels (r + p) % 251.
    fn write_files(dir: &Path) {
        let d = dir.join(CIFAR10_DIR);
        std::fs::create_dir_all(&d).unwrap();
        for f in TRAIN_FILES.iter().chain([&TEST_FILE]) {
            let mut bytes = Vec::with_capacity(RECORDS_PER_FILE * RECORD_BYTES);
            for r in 0..RECORDS_PER_FILE {
                bytes.push((r % 10) as u8);
                bytes.extend((0..IMAGE_BYTES).map(|p| ((r + p) % 251) as u8));
            }
            std::fs::write(d.join(f), bytes).unwrap();
        }
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ablate-cifar-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn reads_records_in_file_order() {
        let dir = temp("ok");
        write_files(&dir);
        let (train, test) = load_cifar10(&dir).unwrap();
        assert_eq!((train.len(), test.len()), (50_000, 10_000));
        assert_eq!(train.class_counts(), vec![5_000; 10]);
        assert_eq!(train.labels[10_003], 3);
        assert_eq!(train.image(10_003)[..3], [3, 4, 5]);
        assert_eq!(
            test.image(7)[IMAGE_BYTES - 1],
            ((7 + IMAGE_BYTES - 1) % 251) as u8
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn truncated_and_missing_files_are_named() {
        let dir = temp("bad");
        write_files(&dir);
        let f = dir.join(CIFAR10_DIR).join("data_batch_3.bin");
        let len = std::fs::metadata(&f).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&f)
            .unwrap()
            .set_len(len - 100)
            .unwrap();
        let e = load_cifar10(&dir).unwrap_err().to_string();
        assert!(
            e.contains("data_batch_3.bin")
                && e.contains("expected 30730000 bytes")
                && e.contains("found 30729900"),
            "{e}"
        );
        std::fs::remove_file(dir.join(CIFAR10_DIR).join(TEST_FILE)).unwrap();
        let e = load_cifar10(&dir).unwrap_err().to_string();
        assert!(
            e.contains("test_batch.bin") && e.contains(CIFAR10_DIR),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bad_label_is_an_error() {
        let dir = temp("label");
        write_files(&dir);
        let f = dir.join(CIFAR10_DIR).join(TEST_FILE);
        let mut bytes = std::fs::read(&f).unwrap();
        bytes[2 * RECORD_BYTES] = 42;
        std::fs::write(&f, bytes).unwrap();
        let e = load_cifar10(&dir).unwrap_err().to_string();
        assert!(e.contains("record 2 has label 42"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
