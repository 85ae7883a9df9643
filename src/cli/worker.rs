//! `ablate worker`: one task of a Slurm job array, training one run of a manifest.

use std::path::PathBuf;

use anyhow::Context;

use crate::config::RunConfig;
use crate::run_dir::CONFIG_FILE;
use crate::schedule::slurm::read_manifest;
use crate::train::{train, Outcome, TrainOptions};

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// The manifest `ablate run --backend slurm` wrote.
    #[arg(long)]
    pub manifest: PathBuf,
    /// The run to train: its index in the manifest ($SLURM_ARRAY_TASK_ID).
    #[arg(long)]
    pub index: usize,
    /// Write no TensorBoard event files (`ablate run --no-tensorboard` sets the variable in
    /// the job script).
    #[arg(long, env = super::NO_TENSORBOARD, value_parser = clap::builder::BoolishValueParser::new())]
    pub no_tensorboard: bool,
}

pub fn run(args: &WorkerArgs) -> anyhow::Result<()> {
    let manifest = read_manifest(&args.manifest)?;
    let Some(run) = manifest.runs.get(args.index) else {
        anyhow::bail!(
            "--index {}: {} lists {} runs",
            args.index,
            args.manifest.display(),
            manifest.runs.len()
        );
    };
    let snapshot = run.dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&snapshot)
        .with_context(|| format!("reading {}", snapshot.display()))?;
    let cfg = RunConfig::from_toml(&snapshot, &text)?;
    let device = if manifest.gpus_per_run > 0 {
        "cuda:0"
    } else {
        "cpu"
    };
    let opts = TrainOptions {
        data_dir: manifest.data_dir.clone(),
        device: super::train::parse_device(device)?,
        resume: true,
        tensorboard: !args.no_tensorboard,
    };
    match train(&cfg, &run.dir, &opts)? {
        Outcome::AlreadyDone => crate::schedule::say(&format!(
            "{}: already done; nothing to train",
            run.dir.display()
        )),
        Outcome::Rebuilt { bytes } => crate::schedule::say(&format!(
            "{}: already done; its missing deploy model is rebuilt from the final checkpoint \
             ({bytes} bytes)",
            run.dir.display()
        )),
        Outcome::Trained(summary) => crate::schedule::say(&format!(
            "{}: done, deploy test top1 {:.2}%",
            run.dir.display(),
            summary.deploy_test_top1
        )),
    }
    Ok(())
}
