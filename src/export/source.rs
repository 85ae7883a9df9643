//! What `ablate export` exports: the trained deploy model of a done run dir, or a preset /
//! model file with freshly initialised (seeded) weights; and the typed errors of bad input,
//! each one line naming the file and what was expected.

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::Serialize;

use crate::config::{ModelSource, ModelSpec, RunConfig};
use crate::io::load_safetensors_verified;
use crate::model::Network;
use crate::provenance::GIT_COMMIT;
use crate::run_dir::{
    check_trained_config, read_status, RunDirError, CHECKPOINT_FILE, CONFIG_FILE, MODEL_FILE,
    STATUS_FILE, SUMMARY_FILE,
};
use crate::train::{checkpoint, model_file};

/// Bad input to an export: a usage error (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(
        "{}: not a run dir (no {CONFIG_FILE}); expected a done run's directory, a preset or a \
         model TOML file",
        dir.display()
    )]
    NotRunDir { dir: PathBuf },
    #[error(
        "{}: the run is not done ({state}); only a done run has a deploy model to export \
         ({})",
        dir.display(),
        if *diverged {
            "a diverged run diverges again when resumed: train it anew with a lower learning \
             rate (`--lr`) or another seed"
        } else {
            "finish it with `ablate run` or `ablate train --resume`"
        }
    )]
    NotDone {
        dir: PathBuf,
        state: String,
        /// The run diverged: resuming it cannot finish it.
        diverged: bool,
    },
    #[error(
        "{}: missing; rebuild it from the run's final checkpoint with `ablate train --resume \
         --out {}`",
        dir.join(MODEL_FILE).display(),
        dir.display()
    )]
    MissingModel { dir: PathBuf },
    #[error("{}: {message}", path.display())]
    BadFile { path: PathBuf, message: String },
    #[error("cannot write {}: {message}", path.display())]
    Write { path: PathBuf, message: String },
    #[error(
        "{}: --int8 calibrates on the run's training images and measures the cost on its test \
         images, but its dataset (CIFAR-10) is not in {}: expected {}/ there; point --data-dir \
         or ABLATE_DATA at the folder that holds it",
        dir.display(),
        data_dir.display(),
        data_dir.join(crate::data::CIFAR10_DIR).display()
    )]
    NoData { dir: PathBuf, data_dir: PathBuf },
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
}

/// A deploy-form network ready to export, with what the file's metadata says about it.
#[derive(Debug)]
pub struct Exportable {
    /// The model's name (preset name plus overrides, model file stem, or the run's).
    pub name: String,
    /// The run's `config.toml`, or for a preset / model file the resolved model as TOML.
    pub config_toml: String,
    /// Deploy form.
    pub net: Network,
    /// Where the weights come from.
    pub weights: String,
    /// The run's deploy test top-1 (percent), from its `summary.json`.
    pub deploy_test_top1: Option<f64>,
    /// The run's config, for a run dir.
    pub run: Option<RunConfig>,
}

/// The resolved model of a preset or model file, in `config.toml`'s layout.
#[derive(Serialize)]
struct ModelConfig<'a> {
    model_name: &'a str,
    model: &'a ModelSpec,
}

/// `e` without the backtrace candle attaches under `RUST_BACKTRACE` (its message is one line).
fn without_backtrace(e: candle_core::Error) -> candle_core::Error {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => *inner,
        e => e,
    }
}

impl Exportable {
    /// A preset or model file with `sets` applied, initialised from `seed`, pruned and
    /// condensed exactly as training ends (on its random weights).
    pub fn from_model(source: &ModelSource, sets: &[String], seed: u64) -> anyhow::Result<Self> {
        let model = source.resolve(sets)?;
        crate::config::check_fits(&model.spec, 0)?;
        let mut net = Network::seeded(&model.spec, seed, &Device::Cpu)?;
        net.finish_pruning()?;
        let net = net.condense()?;
        let config_toml = toml::to_string(&ModelConfig {
            model_name: &model.name,
            model: &model.spec,
        })?;
        Ok(Self {
            name: model.name,
            config_toml,
            net,
            weights: format!("seeded initialisation (seed {seed}), not trained"),
            deploy_test_top1: None,
            run: None,
        })
    }

    /// The trained deploy model of the done run in `dir`.
    pub fn from_run_dir(dir: &Path) -> anyhow::Result<Self> {
        let config_path = dir.join(CONFIG_FILE);
        if !config_path.is_file() {
            return Err(ExportError::NotRunDir {
                dir: dir.to_path_buf(),
            }
            .into());
        }
        let config_toml =
            std::fs::read_to_string(&config_path).map_err(|e| ExportError::BadFile {
                path: config_path.clone(),
                message: e.to_string(),
            })?;
        let cfg = RunConfig::from_toml(&config_path, &config_toml)?;
        // The config the weights were trained with is the truth: the checkpoint keeps it.
        let checkpoint_path = dir.join(CHECKPOINT_FILE);
        if let Some(trained) = checkpoint::config_of(&checkpoint_path) {
            check_trained_config(&config_path, &cfg, &checkpoint_path, &trained)?;
        }
        crate::config::check_fits(&cfg.model, 0)?;
        let not_done = |state: String| ExportError::NotDone {
            dir: dir.to_path_buf(),
            state,
            diverged: false,
        };
        let status =
            read_status(dir).ok_or_else(|| not_done(format!("no readable {STATUS_FILE}")))?;
        if status.status != crate::run_dir::RunStatus::Done {
            return Err(ExportError::NotDone {
                dir: dir.to_path_buf(),
                state: format!(
                    "{}, {} of {} epochs",
                    status.status, status.epochs_done, status.epochs
                ),
                diverged: status.status == crate::run_dir::RunStatus::Diverged,
            }
            .into());
        }
        let summary_path = dir.join(SUMMARY_FILE);
        if !summary_path.is_file() {
            return Err(not_done(format!("done in {STATUS_FILE} but no {SUMMARY_FILE}")).into());
        }
        let bad = |path: &Path, message: String| ExportError::BadFile {
            path: path.to_path_buf(),
            message,
        };
        let summary: serde_json::Value = std::fs::read_to_string(&summary_path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
            .map_err(|e| bad(&summary_path, e))?;
        let top1 = summary["deploy_test_top1"]
            .as_f64()
            .ok_or_else(|| bad(&summary_path, "expected a number `deploy_test_top1`".into()))?;
        let model_path = dir.join(MODEL_FILE);
        if !model_path.is_file() {
            let dir = dir.to_path_buf();
            return Err(if checkpoint_path.is_file() {
                ExportError::MissingModel { dir }.into()
            } else {
                RunDirError::DeployModelLost { dir }.into()
            });
        }
        let (saved, metadata) =
            load_safetensors_verified(&model_path, &Device::Cpu).map_err(|e| {
                match e.downcast::<crate::io::DamagedFile>() {
                    Ok(_) if checkpoint_path.is_file() => bad(
                        &model_path,
                        format!(
                            "its tensor data does not match the checksum in its header (the \
                             file is damaged); remove it and rebuild it from the run's final \
                             checkpoint with `ablate train --resume --out {}`",
                            dir.display()
                        ),
                    )
                    .into(),
                    Ok(damaged) => anyhow::Error::new(damaged),
                    Err(e) => {
                        let root = e.root_cause().to_string();
                        let prefix = format!("{}: ", model_path.display());
                        let message = root.strip_prefix(&prefix).unwrap_or(&root).to_string();
                        bad(&model_path, message).into()
                    }
                }
            })?;
        // So does the deploy model (runs since it was recorded), also without a checkpoint.
        if let Some(trained) = model_file::config_of(&metadata) {
            check_trained_config(&config_path, &cfg, &model_path, trained)?;
        }
        let net = Network::from_deploy(&cfg.model, &saved, &Device::Cpu).map_err(|e| {
            bad(
                &model_path,
                format!(
                    "does not hold the deploy form of the model in {CONFIG_FILE}: {}",
                    without_backtrace(e)
                ),
            )
        })?;
        Ok(Self {
            name: cfg.model_name.clone(),
            config_toml,
            net,
            weights: format!("trained: {}", model_path.display()),
            deploy_test_top1: Some(top1),
            run: Some(cfg),
        })
    }

    /// The file's `metadata_props`.
    pub fn metadata(&self, normalize_input: bool) -> Vec<(String, String)> {
        let mut m = vec![
            ("model".to_string(), self.name.clone()),
            ("config".to_string(), self.config_toml.clone()),
            (
                "ablate_version".to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            ),
            ("git_commit".to_string(), GIT_COMMIT.to_string()),
            ("weights".to_string(), self.weights.clone()),
        ];
        if let Some(top1) = self.deploy_test_top1 {
            m.push(("deploy_test_top1".to_string(), format!("{top1}")));
        }
        m.push(("input".to_string(), super::input_doc(normalize_input)));
        m.push((
            "normalization".to_string(),
            serde_json::json!({
                "mean": super::MEAN,
                "std": super::STD,
                "in_graph": normalize_input,
            })
            .to_string(),
        ));
        m.push(("classes".to_string(), self.net.spec().classes.to_string()));
        m
    }
}
