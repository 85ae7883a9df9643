//! The `ablate` command line.

mod bench;
mod bench_onnx;
mod count;
mod export;
mod format;
mod plan;
mod report;
mod run;
mod runs_table;
mod slots;
mod status;
mod train;
mod worker;

/// Set (to anything) to run `--device cuda:N` on the CPU, in builds with or without CUDA: how
/// the scheduler's GPU path is tested on machines without GPUs (so the test suite passes under
/// `--features cuda` on a machine without one too). Never set it otherwise.
pub const CUDA_ON_CPU: &str = "ABLATE_TEST_CUDA_ON_CPU";

/// Set to `1` (or `true`, `yes`, `on`) to write no TensorBoard event files: the environment
/// form of `--no-tensorboard` of `train`, `run`, `worker` and `report` (`0`, `false`, `no`,
/// `off` keep them on).
pub const NO_TENSORBOARD: &str = "ABLATE_NO_TENSORBOARD";

use std::path::Path;

use clap::{Parser, Subcommand};

use crate::config::ConfigError;

/// Reproduce, count and ablate CondenseNet / CondenseNeXt on CIFAR-10.
#[derive(Debug, Parser)]
#[command(name = "ablate", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Count FLOPs, parameters and model sizes of a preset or a model TOML file.
    Count(count::CountArgs),
    /// Write the deploy form of a done run, a preset or a model file as an ONNX file.
    Export(export::ExportArgs),
    /// Train one model into a run directory (metrics, checkpoints, deploy model, summary).
    Train(train::TrainArgs),
    /// List the runs of an experiment file (ids and the keys that differ) without running.
    Plan(plan::PlanArgs),
    /// Run every unfinished run of an experiment: locally on GPUs / CPU slots, or via Slurm.
    Run(run::RunArgs),
    /// Show each run of an experiment: status, epochs, attempts, where, Slurm task.
    Status(status::StatusArgs),
    /// Tables (Table I, Table II, ablation) and report.md from the results of experiments.
    Report(report::ReportArgs),
    /// Speed and memory on this CPU: training and inference images/s, batch-1 latency, peak
    /// RSS, GFLOP/s; optionally against candle's reference ops and the system allocator.
    Bench(bench::BenchArgs),
    /// Train one run of a Slurm manifest (what each array task executes).
    Worker(worker::WorkerArgs),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    // Commands whose job is their output end quietly when its reader goes away; the others
    // (training, the scheduler) keep working and handle a closed stdout themselves.
    if matches!(
        cli.command,
        Command::Count(_)
            | Command::Export(_)
            | Command::Plan(_)
            | Command::Status(_)
            | Command::Report(_)
            | Command::Bench(_)
    ) {
        crate::signal::die_on_closed_pipe();
    }
    match cli.command {
        Command::Count(args) => count::run(&args),
        Command::Export(args) => export::run(&args),
        Command::Train(args) => {
            crate::signal::install();
            train::run(&args)
        }
        Command::Plan(args) => plan::run(&args),
        Command::Run(args) => {
            crate::signal::install();
            run::run(&args)
        }
        Command::Status(args) => status::run(&args),
        Command::Report(args) => report::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Worker(args) => {
            crate::signal::install();
            worker::run(&args)
        }
    }
}

/// Refuses a directory argument (`flag`; it may be missing) that names a file or lies under
/// one, as one line naming the path, before anything is read or written.
fn expect_dir(flag: &'static str, path: &Path) -> Result<(), ConfigError> {
    // The nearest part of the path that exists must be a directory.
    match path.ancestors().find(|p| std::fs::metadata(p).is_ok()) {
        Some(found) if !found.is_dir() => {
            let within = if found == path {
                String::new()
            } else {
                format!("{}: ", path.display())
            };
            Err(ConfigError::invalid(
                flag,
                format!(
                    "{within}{} is a file; expected a directory",
                    found.display()
                ),
            ))
        }
        _ => Ok(()),
    }
}
