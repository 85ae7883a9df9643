//! `ablate report`: tables (and `report.md`) from whatever `results/` holds.

use std::path::PathBuf;

use crate::report::{experiment_dirs, write_report, Format, Metric};

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// An experiment name, an experiment's results dir, or a results root [default: every
    /// experiment in --results].
    pub target: Option<String>,
    #[arg(long, env = "ABLATE_RESULTS", default_value = "results")]
    pub results: PathBuf,
    /// Reports go to <out>/<experiment>/.
    #[arg(long, default_value = "reports")]
    pub out: PathBuf,
    /// Write the tables in this format only [default: md, csv and tex].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Which test top-1 the tables show.
    #[arg(long, value_enum, default_value = "final")]
    pub metric: Metric,
}

pub fn run(args: &ReportArgs) -> anyhow::Result<()> {
    let target = match &args.target {
        Some(t) if PathBuf::from(t).is_dir() => PathBuf::from(t),
        target => {
            super::expect_dir("--results", &args.results)?;
            target
                .as_ref()
                .map_or_else(|| args.results.clone(), |n| args.results.join(n))
        }
    };
    let dirs = experiment_dirs(&target);
    if dirs.is_empty() {
        anyhow::bail!(
            "{}: no experiment results (a dir with plan.json); run `ablate run <experiment.toml>` first",
            target.display()
        );
    }
    let formats = match args.format {
        Some(f) => vec![f],
        None => vec![Format::Md, Format::Csv, Format::Tex],
    };
    for dir in dirs {
        let name = dir
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        let out = args.out.join(name);
        let written = write_report(&dir, &out, &formats, args.metric)?;
        println!(
            "{}: {} files in {}",
            dir.display(),
            written.len(),
            out.display()
        );
    }
    Ok(())
}
