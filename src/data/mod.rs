//! Image datasets: the official CIFAR-10 binary files and a synthetic stand-in.

mod cifar;
mod pipeline;
mod synthetic;

pub use cifar::{load_cifar10, CIFAR10_DIR, RECORD_BYTES, TEST_FILE, TRAIN_FILES};
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
         (get cifar-10-binary.tar.gz from the CIFAR-10 page and unpack it in the data dir)",
        missing.join(", "),
        dir.display()
    )]
    Missing {
        dir: std::path::PathBuf,
        missing: Vec<String>,
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
