//! The `ablate` command line.

mod count;
mod format;

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
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Count(args) => count::run(&args),
    }
}
