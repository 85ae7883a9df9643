//! `ablate report`: tables (and `report.md`) from whatever `results/` holds.

use std::path::PathBuf;

use std::path::Path;

use crate::report::{experiment_dirs, write_report, Format, Metric};
use crate::run_dir::Plan;
use crate::train::{backfill, Backfilled};

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
    /// Write no TensorBoard event files. By default the report first gives every run dir
    /// without them (trained before they existed, or with steps missing) the files training
    /// writes, from its metrics.csv and summary.json, and each experiment its HParams record.
    #[arg(long, env = super::NO_TENSORBOARD, value_parser = clap::builder::BoolishValueParser::new())]
    pub no_tensorboard: bool,
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
        // Bad input (a target or results dir with nothing to report): a usage error, exit 2.
        return Err(crate::config::ConfigError::invalid(
            if args.target.is_some() { "TARGET" } else { "--results" },
            format!(
                "{}: no experiment results (a dir with plan.json); run `ablate run <experiment.toml>` first",
                target.display()
            ),
        )
        .into());
    }
    let formats = match args.format {
        Some(f) => vec![f],
        None => vec![Format::Md, Format::Csv, Format::Tex],
    };
    // One experiment that cannot be reported stops no other: it is named and skipped.
    let (several, mut reported) = (dirs.len() > 1, 0);
    for dir in &dirs {
        let name = dir
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        let out = args.out.join(name);
        if !args.no_tensorboard {
            tensorboard(dir);
        }
        match write_report(dir, &out, &formats, args.metric) {
            Ok(written) => {
                reported += 1;
                println!(
                    "{}: {} files in {}",
                    dir.display(),
                    written.len(),
                    out.display()
                );
            }
            Err(e) if several => {
                eprintln!("warning: {}: {e:#}; skipped", dir.display());
            }
            Err(e) => return Err(e),
        }
    }
    if reported == 0 {
        anyhow::bail!(
            "{}: none of its {} experiments could be reported (see the warnings)",
            target.display(),
            dirs.len()
        );
    }
    Ok(())
}

/// Gives the experiment in `dir` its HParams record and each of its idle run dirs the event
/// files it lacks ([`backfill`]). Every problem is a warning: the report is what was asked for.
fn tensorboard(dir: &Path) {
    let warn = |what: &str| eprintln!("warning: tensorboard: {what}");
    let plan = match Plan::read(dir) {
        Ok(plan) => plan,
        Err(e) => return warn(&format!("{e:#}")),
    };
    if let Err(e) = crate::tensorboard::write_experiment(dir, &plan) {
        warn(&format!("{e:#}"));
    }
    let mut filled = 0;
    for run in &plan.runs {
        let root = dir.join(&run.id);
        if !root.is_dir() {
            continue;
        }
        match backfill(&root) {
            Ok((done, warnings)) => {
                for w in warnings {
                    warn(&w);
                }
                filled += usize::from(matches!(done, Backfilled::Wrote(n) if n > 0));
            }
            Err(e) => warn(&format!(
                "{}: {e:#}; no event files written",
                root.display()
            )),
        }
    }
    if filled > 0 {
        println!(
            "{}: TensorBoard event files written for {filled} runs that lacked them",
            dir.display()
        );
    }
}
