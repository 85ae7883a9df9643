//! Image datasets: the official CIFAR-10 binary files, the UCI handwritten digits (real images
//! compiled into the binary) and a synthetic stand-in.

mod cifar;
mod digits;
mod download;
mod pipeline;
mod synthetic;

pub use cifar::{load_cifar10, CIFAR10_CLASSES, CIFAR10_DIR, RECORD_BYTES, TEST_FILE, TRAIN_FILES};
pub use digits::{digits, DIGITS_TEST, DIGITS_TRAIN};
pub use download::{ensure_cifar10, md5_hex, CIFAR10_ARCHIVE, CIFAR10_MD5, CIFAR10_URL, URL_ENV};
pub use pipeline::{epoch_order, prepare_batch, transform, Crop, CROP_PAD, MEAN, STD};
pub use synthetic::synthetic;

/// Pixels per image: 3 x 32 x 32, channel-major (all red, then green, then blue).
pub const IMAGE_BYTES: usize = 3 * 32 * 32;

/// Images as raw bytes with their labels, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// `len() * IMAGE_BYTES` bytes, image after image, each channel-major.
    pub images: Vec<u8>,
    /// One class index per image, each `< classes`.
    pub labels: Vec<u8>,
    pub classes: usize,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES]
    }

    /// The first `n` images (all if fewer).
    pub fn subset(mut self, n: usize) -> Self {
        let n = n.min(self.len());
        self.images.truncate(n * IMAGE_BYTES);
        self.labels.truncate(n);
        self
    }

    /// Images per class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }
}

/// A dataset that could not be read; every variant names the file and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(
        "CIFAR-10 binary files not found: expected {} under {} \
         (unpack cifar-10-binary.tar.gz from {} there, or point --data-dir / ABLATE_DATA at \
         the folder that holds cifar-10-batches-bin/)",
        missing.join(", "),
        dir.display(),
        download::CIFAR10_URL
    )]
    Missing {
        dir: std::path::PathBuf,
        missing: Vec<String>,
    },
    #[error(
        "could not download {url}: {message}. Without network access, put {} (MD5 {}) or its \
         unpacked folder {}/ in {} yourself, or point --data-dir / ABLATE_DATA at a folder \
         that has them",
        download::CIFAR10_ARCHIVE,
        download::CIFAR10_MD5,
        cifar::CIFAR10_DIR,
        dir.display()
    )]
    Download {
        url: String,
        dir: std::path::PathBuf,
        message: String,
    },
    #[error("{}: MD5 is {found}, expected {expected} (corrupt or wrong file; delete it and retry)", file.display())]
    Checksum {
        file: std::path::PathBuf,
        expected: String,
        found: String,
    },
    #[error("{}: could not unpack: {message}", archive.display())]
    Unpack {
        archive: std::path::PathBuf,
        message: String,
    },
    #[error("{}: expected {expected} bytes ({} records of {RECORD_BYTES} bytes), found {found}", file.display(), expected / RECORD_BYTES as u64)]
    WrongSize {
        file: std::path::PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("{}: record {record} has label {label}; CIFAR-10 labels are 0..=9", file.display())]
    BadLabel {
        file: std::path::PathBuf,
        record: usize,
        label: u8,
    },
    #[error("{}: {source}", file.display())]
    Io {
        file: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Synthetic sizes when a run does not set them.
pub const SYNTHETIC_TRAIN: usize = 5_000;
pub const SYNTHETIC_TEST: usize = 1_000;
/// The synthetic set is the same for every run seed (seeds vary the training, not the data).
const SYNTHETIC_SEED: u64 = 0;

/// Images in CIFAR-10's training and test sets.
pub const CIFAR10_SIZES: (usize, usize) = (50_000, 10_000);

/// How many (train, test) images [`load`] gives for `cfg`, without loading anything.
pub fn sizes(cfg: &crate::config::DataConfig) -> (usize, usize) {
    use crate::config::DatasetKind;
    match cfg.dataset {
        DatasetKind::Cifar10 => (
            cfg.train_size
                .map_or(CIFAR10_SIZES.0, |n| n.min(CIFAR10_SIZES.0)),
            cfg.test_size
                .map_or(CIFAR10_SIZES.1, |n| n.min(CIFAR10_SIZES.1)),
        ),
        DatasetKind::Synthetic => (
            cfg.train_size.unwrap_or(SYNTHETIC_TRAIN),
            cfg.test_size.unwrap_or(SYNTHETIC_TEST),
        ),
        DatasetKind::Digits => (
            cfg.train_size.map_or(DIGITS_TRAIN, |n| n.min(DIGITS_TRAIN)),
            cfg.test_size.map_or(DIGITS_TEST, |n| n.min(DIGITS_TEST)),
        ),
    }
}

/// Images in one training step of `cfg`: its batch, or the whole training set where that is
/// smaller (an epoch of 128 images at batch 2048 is one step of 128). What memory checks and
/// the plan size a step by.
pub fn step_images(cfg: &crate::config::RunConfig) -> usize {
    cfg.train.batch.min(sizes(&cfg.data).0).max(1)
}

/// Refuses a data set that does not fit in this machine's available memory (its training and
/// test images as loaded, one byte per value), before anything is allocated: a synthetic set of
/// 10^12 images is one `error:` line naming `data.train_size`, not an aborted allocation.
pub fn check_fits(cfg: &crate::config::RunConfig) -> Result<(), crate::config::ConfigError> {
    let (train, test) = sizes(&cfg.data);
    let bytes = (train as u128 + test as u128) * (IMAGE_BYTES as u128 + 1);
    let key = if train >= test {
        "data.train_size"
    } else {
        "data.test_size"
    };
    crate::config::check_bytes(
        key,
        &format!("loading {train} training and {test} test images"),
        bytes,
        &format!("{IMAGE_BYTES} bytes an image"),
    )
}

/// The (train, test) sets a run asks for: CIFAR-10 from `data_dir` (fetched when missing), the
/// digits or the synthetic set, cut to the configured sizes.
pub fn load(
    cfg: &crate::config::DataConfig,
    data_dir: &std::path::Path,
) -> Result<(Dataset, Dataset), DataError> {
    use crate::config::DatasetKind;
    let cut = |d: Dataset, n: Option<usize>| match n {
        Some(n) => d.subset(n),
        None => d,
    };
    match cfg.dataset {
        DatasetKind::Cifar10 => {
            ensure_cifar10(data_dir)?;
            let (train, test) = load_cifar10(data_dir)?;
            Ok((cut(train, cfg.train_size), cut(test, cfg.test_size)))
        }
        DatasetKind::Digits => {
            let (train, test) = digits();
            Ok((cut(train, cfg.train_size), cut(test, cfg.test_size)))
        }
        DatasetKind::Synthetic => Ok((
            synthetic(
                cfg.train_size.unwrap_or(SYNTHETIC_TRAIN),
                cfg.dataset.classes(),
                SYNTHETIC_SEED,
                "train",
            ),
            synthetic(
                cfg.test_size.unwrap_or(SYNTHETIC_TEST),
                cfg.dataset.classes(),
                SYNTHETIC_SEED,
                "test",
            ),
        )),
    }
}
