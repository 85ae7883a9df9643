use std::process::ExitCode;

use clap::Parser;

use ablate::cli::{run, Cli};
use ablate::config::ConfigError;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Bad input (a preset, file, key or value) is a usage error: exit 2, one line.
            if let Some(config) = e.downcast_ref::<ConfigError>() {
                eprintln!("error: {config}");
                return ExitCode::from(2);
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
