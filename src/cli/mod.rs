//! The `ablate` command line.

mod count;
mod format;
mod train;

use clap::{Parser, Subcommand};

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
    /// Train one model into a run directory (metrics, checkpoints, deploy model, summary).
    Train(train::TrainArgs),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Count(args) => count::run(&args),
        Command::Train(args) => train::run(&args),
    }
}
