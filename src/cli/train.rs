//! `ablate train`: one training run into a run directory.

use std::path::PathBuf;

use anyhow::Context;
use candle_core::Device;

use crate::config::{
    ConfigError, DataConfig, DatasetKind, ModelSource, RunConfig, TrainConfig, MODEL_KEYS,
};
use crate::run_dir::{CONFIG_FILE, MODEL_FILE};
use crate::train::{train, Outcome, TrainOptions};

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// A preset or a model TOML file. Optional with --resume: the run dir's config is used.
    #[arg(long)]
    pub model: Option<String>,
    /// Override a model key, e.g. `--set p=2` (repeatable, applied in order).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Training epochs [default: 200].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Images per step [default: 64].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Peak learning rate of the cosine schedule [default: 0.1].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Seeds initialisation, shuffling, augmentation and dropout [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// [default: cifar10]
    #[arg(long, value_enum)]
    pub dataset: Option<DatasetKind>,
    /// Train on the first N training images only.
    #[arg(long, value_name = "N")]
    pub subset: Option<usize>,
    /// Test on the first N test images only.
    #[arg(long, value_name = "N")]
    pub test_subset: Option<usize>,
    /// Folder holding cifar-10-batches-bin/ (downloaded there when missing).
    #[arg(long, env = "ABLATE_DATA", default_value = "data")]
    pub data_dir: PathBuf,
    /// `cpu` or `cuda:N` (needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// The run directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Write no TensorBoard event files (<out>/tensorboard/).
    #[arg(long, env = super::NO_TENSORBOARD, value_parser = clap::builder::BoolishValueParser::new())]
    pub no_tensorboard: bool,
}

/// `cpu` or `cuda:N`.
pub fn parse_device(arg: &str) -> anyhow::Result<Device> {
    if arg == "cpu" {
        return Ok(Device::Cpu);
    }
    let Some(index) = arg
        .strip_prefix("cuda:")
        .and_then(|i| i.parse::<usize>().ok())
    else {
        return Err(ConfigError::invalid(
            "--device",
            format!("`{arg}`: expected `cpu` or `cuda:N`"),
        )
        .into());
    };
    if std::env::var_os(super::CUDA_ON_CPU).is_some() {
        eprintln!(
            "warning: {arg} runs on the CPU ({} is set; a test of GPU scheduling)",
            super::CUDA_ON_CPU
        );
        return Ok(Device::Cpu);
    }
    if !cfg!(feature = "cuda") {
        anyhow::bail!(
            "--device {arg}: this ablate was built without CUDA; rebuild with \
             `cargo build --release --features cuda` (needs nvcc)"
        );
    }
    Device::new_cuda(index).with_context(|| format!("--device {arg}: opening the GPU"))
}

impl TrainArgs {
    /// The run: the run dir's config (with --resume and no --model) or the model's defaults,
    /// then every flag given.
    pub fn run_config(&self) -> anyhow::Result<RunConfig> {
        let snapshot = self.out.join(CONFIG_FILE);
        let mut cfg = match &self.model {
            Some(model) => {
                let model = ModelSource::parse(model).resolve(&self.set)?;
                RunConfig {
                    model_name: model.name,
                    model: model.spec,
                    train: TrainConfig::default(),
                    data: DataConfig::default(),
                }
            }
            None if self.resume && snapshot.is_file() => {
                if !self.set.is_empty() {
                    anyhow::bail!("--set needs --model");
                }
                let text = std::fs::read_to_string(&snapshot)
                    .with_context(|| format!("reading {}", snapshot.display()))?;
                RunConfig::from_toml(&snapshot, &text)?
            }
            None => anyhow::bail!(
                "--model is required (a preset or a model TOML file) unless --resume finds {}",
                snapshot.display()
            ),
        };
        let t = &mut cfg.train;
        if let Some(v) = self.epochs {
            t.epochs = v;
        }
        if let Some(v) = self.batch {
            t.batch = v;
        }
        if let Some(v) = self.lr {
            t.lr = v;
        }
        if let Some(v) = self.seed {
            t.seed = v;
        }
        if let Some(v) = self.dataset {
            cfg.data.dataset = v;
        }
        if self.subset.is_some() {
            cfg.data.train_size = self.subset;
        }
        if self.test_subset.is_some() {
            cfg.data.test_size = self.test_subset;
        }
        cfg.validate().map_err(|e| self.locate(e))?;
        Ok(cfg)
    }

    /// `e`, when it is about a model key, with where that key was given: its last `--set`,
    /// else the model file.
    fn locate(&self, e: ConfigError) -> ConfigError {
        let ConfigError::Invalid { key, .. } = &e else {
            return e;
        };
        if !MODEL_KEYS.contains(key) {
            return e;
        }
        let set = self
            .set
            .iter()
            .rev()
            .find(|s| s.split_once('=').is_some_and(|(k, _)| k.trim() == *key));
        let context = match (set, self.model.as_deref().map(ModelSource::parse)) {
            (Some(set), _) => format!("--set {set}"),
            (None, Some(ModelSource::File(file))) => file.display().to_string(),
            _ => return e,
        };
        ConfigError::Context {
            context,
            source: Box::new(e),
        }
    }
}

/// Gives a done run the TensorBoard event values its folder lacks (the folder could not be
/// written while it trained); every problem is a warning.
fn backfill_events(dir: &std::path::Path) {
    match crate::train::backfill(dir) {
        Ok((crate::train::Backfilled::Wrote(n), warnings)) => {
            for w in warnings {
                eprintln!("warning: tensorboard: {w}");
            }
            if n > 0 {
                crate::schedule::say(&format!(
                    "{}: wrote the {n} TensorBoard values its event files lacked",
                    dir.display()
                ));
            }
        }
        Ok((_, warnings)) => {
            for w in warnings {
                eprintln!("warning: tensorboard: {w}");
            }
        }
        Err(e) => eprintln!("warning: tensorboard: {e:#}; no event files written"),
    }
}

pub fn run(args: &TrainArgs) -> anyhow::Result<()> {
    let cfg = args.run_config()?;
    let opts = TrainOptions {
        data_dir: args.data_dir.clone(),
        device: parse_device(&args.device)?,
        resume: args.resume,
        tensorboard: !args.no_tensorboard,
    };
    let summary = match train(&cfg, &args.out, &opts)? {
        Outcome::Trained(summary) => summary,
        Outcome::AlreadyDone => {
            crate::schedule::say(&format!(
                "{}: already done; nothing to train",
                args.out.display()
            ));
            if opts.tensorboard {
                backfill_events(&args.out);
            }
            return Ok(());
        }
        Outcome::Rebuilt { bytes } => {
            crate::schedule::say(&format!(
                "{}: already done; its missing {MODEL_FILE} is rebuilt from the final \
                 checkpoint ({bytes} bytes)",
                args.out.display()
            ));
            return Ok(());
        }
    };
    crate::schedule::say(&format!(
        "{}: {} epochs, test top1 {:.2}% (best {:.2}% at epoch {}), deploy {:.2}%, \
         {:.1} s/epoch median, {:.0} img/s",
        args.out.display(),
        summary.epochs,
        summary.last.test_top1,
        summary.best_test_top1,
        summary.best_epoch,
        summary.deploy_test_top1,
        summary.median_epoch_seconds,
        summary.median_images_per_second
    ));
    Ok(())
}
