//! What one training run is: the model, the training recipe and the data. A run directory keeps
//! this as `config.toml`; everything that can change a run's result is in it, and nothing else
//! (where the data lives and which device runs it are not).

use serde::{Deserialize, Serialize};

use super::{ConfigError, ModelSpec};

/// The recipe of spec section 6.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub epochs: usize,
    /// Images per training step.
    pub batch: usize,
    /// Peak learning rate of the per-iteration cosine schedule.
    pub lr: f64,
    pub momentum: f64,
    pub nesterov: bool,
    /// L2 weight decay on every parameter.
    pub weight_decay: f64,
    /// Seeds initialisation, shuffling, augmentation and dropout.
    pub seed: u64,
    /// beta of the class-balanced focal loss (used when the model's loss is `focal`).
    pub focal_beta: f64,
    /// gamma of the focal loss.
    pub focal_gamma: f64,
}

impl Default for TrainConfig {
    /// The CondenseNeXt paper's tables: 200 epochs, batch 64, lr 0.1, Nesterov 0.9, wd 1e-4.
    fn default() -> Self {
        Self {
            epochs: 200,
            batch: 64,
            lr: 0.1,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 1e-4,
            seed: 0,
            focal_beta: 0.9999,
            focal_gamma: 1.0,
        }
    }
}

/// Which images a run trains and tests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// The official CIFAR-10 binary files (50,000 train, 10,000 test).
    Cifar10,
    /// The deterministic synthetic stand-in (see `data::synthetic`).
    Synthetic,
    /// The UCI handwritten digits compiled into the binary (1,297 train, 500 test; real
    /// images, see `data::digits`).
    Digits,
}

impl DatasetKind {
    /// Classes of the set: its labels are `0..classes()`. The synthetic set stands in for
    /// CIFAR-10 and has as many.
    pub const fn classes(self) -> usize {
        match self {
            Self::Cifar10 | Self::Synthetic | Self::Digits => 10,
        }
    }

    /// Whether training augments by mirroring left-right (a mirrored digit is not the same
    /// digit; a mirrored photograph is the same scene).
    pub const fn mirrors(self) -> bool {
        !matches!(self, Self::Digits)
    }
}

impl std::fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Cifar10 => "cifar10",
            Self::Synthetic => "synthetic",
            Self::Digits => "digits",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    pub dataset: DatasetKind,
    /// Training images used: the first N of the set (all when absent). Synthetic sets are
    /// generated at this size (default 5,000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_size: Option<usize>,
    /// Test images used: the first N (all when absent; synthetic default 1,000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_size: Option<usize>,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dataset: DatasetKind::Cifar10,
            train_size: None,
            test_size: None,
        }
    }
}

/// One run, complete: two equal configs train to the same result on the same device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The name the model is reported under (preset name plus overrides).
    pub model_name: String,
    pub model: ModelSpec,
    pub train: TrainConfig,
    pub data: DataConfig,
}

impl RunConfig {
    /// Checks every rule: the model's, and the training and data keys'.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.model.validate()?;
        let t = &self.train;
        let rule = |ok: bool, key: &'static str, rule: &str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::invalid(key, rule))
            }
        };
        // A model with fewer outputs than the set has labels cannot be trained on it (labels
        // beyond its outputs), one with more has outputs no image ever has.
        let classes = self.data.dataset.classes();
        rule(
            self.model.classes == classes,
            "classes",
            &format!(
                "is {} but the {} dataset has {classes} classes (labels 0-{}); set classes = {classes}",
                self.model.classes,
                self.data.dataset,
                classes - 1
            ),
        )?;
        rule(t.epochs >= 1, "train.epochs", "must be at least 1")?;
        rule(t.batch >= 1, "train.batch", "must be at least 1")?;
        rule(
            t.lr.is_finite() && t.lr > 0.0,
            "train.lr",
            "must be a finite number > 0",
        )?;
        rule(
            (0.0..1.0).contains(&t.momentum),
            "train.momentum",
            "must be in [0, 1)",
        )?;
        rule(
            !t.nesterov || t.momentum > 0.0,
            "train.nesterov",
            "needs train.momentum > 0",
        )?;
        rule(
            t.weight_decay.is_finite() && t.weight_decay >= 0.0,
            "train.weight_decay",
            "must be a finite number >= 0",
        )?;
        rule(
            (0.0..1.0).contains(&t.focal_beta),
            "train.focal_beta",
            "must be in [0, 1)",
        )?;
        rule(
            t.focal_gamma.is_finite() && t.focal_gamma >= 0.0,
            "train.focal_gamma",
            "must be a finite number >= 0",
        )?;
        rule(
            self.data.train_size != Some(0),
            "data.train_size",
            "must be at least 1",
        )?;
        rule(
            self.data.test_size != Some(0),
            "data.test_size",
            "must be at least 1",
        )?;
        Ok(())
    }

    /// The `config.toml` text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a run config always serialises")
    }

    /// Reads a `config.toml`; `file` names it in errors.
    pub fn from_toml(file: &std::path::Path, text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::parse(file, text, &e))
    }

    /// Dotted keys whose values differ between `self` and `other`, with both values.
    pub fn differences(&self, other: &Self) -> Vec<(String, String, String)> {
        let (a, b) = (flatten(self), flatten(other));
        let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
        keys.sort();
        keys.dedup();
        let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "(absent)".into());
        keys.into_iter()
            .filter(|k| a.get(*k) != b.get(*k))
            .map(|k| (k.clone(), show(a.get(k)), show(b.get(k))))
            .collect()
    }
}

/// `section.key -> value as TOML text` for every leaf of the config.
fn flatten(cfg: &RunConfig) -> std::collections::BTreeMap<String, String> {
    fn walk(prefix: &str, v: &toml::Value, out: &mut std::collections::BTreeMap<String, String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    if let Ok(v) = toml::Value::try_from(cfg) {
        walk("", &v, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RunConfig {
        RunConfig {
            model_name: "condensenext".into(),
            model: super::super::preset("condensenext").unwrap(),
            train: TrainConfig::default(),
            data: DataConfig::default(),
        }
    }

    #[test]
    fn toml_round_trip_is_exact() {
        let mut c = cfg();
        c.train.lr = 0.1 + 1e-17 + 1.0 / 3.0;
        c.data.train_size = Some(500);
        let back = RunConfig::from_toml("x".as_ref(), &c.to_toml()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn differences_name_dotted_keys() {
        let a = cfg();
        let mut b = cfg();
        b.train.epochs = 4;
        b.model.p = 2;
        let d = a.differences(&b);
        let keys: Vec<&str> = d.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(keys, ["model.p", "train.epochs"]);
        assert_eq!(d[1].1, "200");
        assert_eq!(d[1].2, "4");
    }

    #[test]
    fn model_classes_must_be_the_datasets() {
        let mut c = cfg();
        c.model.classes = 3;
        c.data.dataset = DatasetKind::Synthetic;
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("key `classes`: is 3") && e.contains("synthetic dataset has 10 classes"),
            "{e}"
        );
        c.model.classes = 10;
        c.validate().unwrap();
    }

    #[test]
    fn validation_names_the_key() {
        let mut c = cfg();
        c.train.lr = f64::NAN;
        assert!(c.validate().unwrap_err().to_string().contains("train.lr"));
        let mut c = cfg();
        c.data.train_size = Some(0);
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("data.train_size"));
    }
}
