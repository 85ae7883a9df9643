//! What a run was trained on (data set, training images, epochs), and whether that is the
//! setting of the paper's numbers, so that a table never sets a result beside the paper's
//! unless both were trained alike.

use crate::config::{DatasetKind, RunConfig};

/// The paper's training setting: CIFAR-10, all its 50,000 training images, 200 epochs.
pub const PAPER_DATASET: DatasetKind = DatasetKind::Cifar10;
pub const PAPER_TRAIN_IMAGES: usize = crate::data::CIFAR10_SIZES.0;
pub const PAPER_EPOCHS: usize = 200;

/// The data a run trains on and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrainedOn {
    pub dataset: DatasetKind,
    /// Images in one training epoch.
    pub train_images: usize,
    pub epochs: usize,
}

impl TrainedOn {
    /// From a run's config (the sizes its data set gives, without loading it).
    pub fn of(cfg: &RunConfig) -> Self {
        Self {
            dataset: cfg.data.dataset,
            train_images: crate::data::sizes(&cfg.data).0,
            epochs: cfg.train.epochs,
        }
    }

    /// Why a result trained so is not comparable with the paper's (a table cell), or `None`
    /// in the paper's setting.
    pub fn unlike_paper(&self) -> Option<String> {
        if self.dataset != PAPER_DATASET {
            Some(format!("n/c: {}, not {PAPER_DATASET}", self.dataset))
        } else if self.train_images != PAPER_TRAIN_IMAGES {
            Some(format!(
                "n/c: {} of {PAPER_TRAIN_IMAGES} images",
                self.train_images
            ))
        } else if self.epochs != PAPER_EPOCHS {
            Some(format!("n/c: {} of {PAPER_EPOCHS} epochs", self.epochs))
        } else {
            None
        }
    }
}

impl std::fmt::Display for TrainedOn {
    /// `digits, 640 img x 6 ep`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}, {} img x {} ep",
            self.dataset, self.train_images, self.epochs
        )
    }
}

/// What a group of runs was trained on, for a table: each distinct setting once.
pub fn label(settings: &[TrainedOn]) -> String {
    if settings.is_empty() {
        return "-".into();
    }
    settings
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why a group's results are not comparable with the paper's, or `None` when every run of
/// it was trained in the paper's setting.
pub fn unlike_paper(settings: &[TrainedOn]) -> Option<String> {
    if settings.is_empty() {
        return Some("n/c: data not recorded".into());
    }
    settings.iter().find_map(TrainedOn::unlike_paper)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(dataset: DatasetKind, train_images: usize, epochs: usize) -> TrainedOn {
        TrainedOn {
            dataset,
            train_images,
            epochs,
        }
    }

    #[test]
    fn only_the_papers_setting_is_comparable() {
        let paper = on(DatasetKind::Cifar10, 50_000, 200);
        assert_eq!(paper.unlike_paper(), None);
        assert_eq!(unlike_paper(&[paper]), None);
        assert_eq!(
            on(DatasetKind::Digits, 640, 6).unlike_paper().unwrap(),
            "n/c: digits, not cifar10"
        );
        assert_eq!(
            on(DatasetKind::Cifar10, 5_000, 200).unlike_paper().unwrap(),
            "n/c: 5000 of 50000 images"
        );
        assert_eq!(
            on(DatasetKind::Cifar10, 50_000, 6).unlike_paper().unwrap(),
            "n/c: 6 of 200 epochs"
        );
        // One run of a group outside the setting is enough.
        assert!(unlike_paper(&[paper, on(DatasetKind::Cifar10, 50_000, 6)]).is_some());
        assert!(unlike_paper(&[]).is_some());
        assert_eq!(
            label(&[on(DatasetKind::Digits, 640, 6)]),
            "digits, 640 img x 6 ep"
        );
    }
}
