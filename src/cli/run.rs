//! `ablate run`: every unfinished run of an experiment, here or through Slurm.

use std::path::PathBuf;

use super::slots::choose;
use crate::clock::unix_seconds;
use crate::experiment::Experiment;
use crate::schedule::device::DevicesError;
use crate::schedule::slurm::{self, SlurmOptions};
use crate::schedule::{run_local, LocalOptions, Outcome, Policy, Slot, Stopped};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// Child processes on this machine's GPUs or CPU slots.
    Local,
    /// One sbatch job array.
    Slurm,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The experiment TOML file.
    pub file: PathBuf,
    /// Results root: runs go to <results>/<experiment>/<run id>/.
    #[arg(long, env = "ABLATE_RESULTS", default_value = "results")]
    pub results: PathBuf,
    /// Folder holding cifar-10-batches-bin/ (downloaded there when missing).
    #[arg(long, env = "ABLATE_DATA", default_value = "data")]
    pub data_dir: PathBuf,
    /// Where a local session writes the experiment's report when it ends:
    /// <reports>/<experiment>/ (as `ablate report` does).
    #[arg(long, env = "ABLATE_REPORTS", default_value = "reports")]
    pub reports: PathBuf,
    #[arg(long, value_enum, default_value = "local")]
    pub backend: Backend,
    /// Local slots: `cuda:0,cuda:1`, `cpu` or `cpu:2` [default: every GPU nvidia-smi lists,
    /// else one CPU slot].
    #[arg(long)]
    pub devices: Option<String>,
    /// Retries of a failed run [default: the experiment's `retries`, else 1].
    #[arg(long)]
    pub retries: Option<u32>,
    /// Run failed runs again, with a fresh retry budget.
    #[arg(long)]
    pub rerun_failed: bool,
    /// Train every run from scratch; earlier run dirs move to <experiment>/.replaced/.
    #[arg(long)]
    pub force: bool,
    /// Runs write no TensorBoard event files, and the experiment no HParams record.
    #[arg(long, env = super::NO_TENSORBOARD, value_parser = clap::builder::BoolishValueParser::new())]
    pub no_tensorboard: bool,
    /// Slurm partition.
    #[arg(long)]
    pub partition: Option<String>,
    /// GPUs per Slurm task; 0 trains on CPU.
    #[arg(long, default_value_t = 1)]
    pub gpus_per_run: u32,
    /// CPUs per Slurm task.
    #[arg(long, default_value_t = 2)]
    pub cpus_per_run: u32,
    /// Slurm tasks at once.
    #[arg(long)]
    pub max_parallel: Option<u32>,
    /// Slurm time limit per run, HH:MM:SS or D-HH:MM:SS.
    #[arg(long)]
    pub time: Option<String>,
}

pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    super::expect_dir("--results", &args.results)?;
    let exp = Experiment::load(&args.file)?;
    let policy = Policy {
        retries: args.retries.unwrap_or(exp.retries),
        rerun_failed: args.rerun_failed,
        force: args.force,
        since: unix_seconds(),
        tensorboard: !args.no_tensorboard,
    };
    match args.backend {
        Backend::Local => {
            let choice = choose(
                &exp,
                &args.results,
                args.devices.as_deref(),
                None,
                &mut None,
            )?;
            let gpus: Vec<String> = choice
                .slots
                .iter()
                .filter(|s| matches!(s, Slot::Gpu { .. }))
                .map(Slot::label)
                .collect();
            if !gpus.is_empty()
                && !cfg!(feature = "cuda")
                && std::env::var_os(crate::cli::CUDA_ON_CPU).is_none()
            {
                let (given, found) = match &args.devices {
                    Some(d) => (d.clone(), "asks for"),
                    None => (gpus.join(","), "found"),
                };
                return Err(DevicesError {
                    given,
                    message: format!(
                        "{found} GPU{} {} but this ablate was built without CUDA: rebuild \
                         with `cargo build --release --features cuda`, or pass --devices cpu",
                        if gpus.len() == 1 { "" } else { "s" },
                        gpus.join(", ")
                    ),
                }
                .into());
            }
            if let Some(why) = &choice.why {
                crate::schedule::say(&format!("slots: {why}"));
            }
            let slots = choice.slots;
            let outcome = run_local(
                &exp,
                &LocalOptions {
                    results: args.results.clone(),
                    data_dir: args.data_dir.clone(),
                    slots,
                    policy,
                },
            )?;
            if !outcome.interrupted {
                report(&exp, args);
            }
            finish(&exp, &outcome)
        }
        Backend::Slurm => {
            let time = args.time.as_deref().map(slurm::parse_time).transpose()?;
            if args.max_parallel == Some(0) {
                anyhow::bail!("--max-parallel must be at least 1");
            }
            let submitted = slurm::submit(
                &exp,
                &SlurmOptions {
                    results: args.results.clone(),
                    data_dir: args.data_dir.clone(),
                    partition: args.partition.clone(),
                    gpus_per_run: args.gpus_per_run,
                    cpus_per_run: args.cpus_per_run.max(1),
                    max_parallel: args.max_parallel,
                    time,
                    policy,
                },
            )?;
            let o = &submitted.outcome;
            crate::schedule::say(&format!(
                "{}: {} runs; {} done, {} already in Slurm, {} failed out of retries, {} diverged",
                exp.name,
                exp.runs.len(),
                o.skipped_done,
                submitted.in_slurm,
                o.failed.len(),
                o.diverged.len()
            ));
            match &submitted.job_id {
                Some(job) => crate::schedule::say(&format!(
                    "submitted job array {job} with {} runs; follow with `ablate status {}`",
                    submitted.runs.len(),
                    args.file.display()
                )),
                None => crate::schedule::say("nothing to submit"),
            }
            Ok(())
        }
    }
}

/// Writes the experiment's report (tables, figures, report.md) into `<reports>/<experiment>/`
/// and prints Table I and Table II. A report that cannot be made is a warning: the runs are
/// what the session was for, and `ablate report` can make it later.
fn report(exp: &Experiment, args: &RunArgs) {
    use crate::report::{write_report, Format, Metric};
    let out = args.reports.join(&exp.name);
    let formats = [Format::Md, Format::Csv, Format::Tex];
    match write_report(
        &exp.results_dir(&args.results),
        &out,
        &formats,
        Metric::Final,
    ) {
        Ok(written) => {
            for table in ["table1.md", "table2.md"] {
                if let Ok(text) = std::fs::read_to_string(out.join(table)) {
                    crate::schedule::say(&format!("\n{}", text.trim_end()));
                }
            }
            crate::schedule::say(&format!(
                "\nreport: {} files in {} (report.md has every table and figure)",
                written.len(),
                out.display()
            ));
        }
        Err(e) => eprintln!(
            "warning: the report of {} could not be written ({e:#}); make it with `ablate report`",
            exp.name
        ),
    }
}

/// The closing line of a local session, and its exit: an error when runs failed or it was
/// stopped.
fn finish(exp: &Experiment, o: &Outcome) -> anyhow::Result<()> {
    crate::schedule::say(&format!(
        "{}: {} trained now, {} done before, {} failed, {} diverged{}",
        exp.name,
        o.done.len(),
        o.skipped_done,
        o.failed.len(),
        o.diverged.len(),
        if o.interrupted {
            format!(
                ", {} stopped and {} not started (run the same command to resume)",
                o.stopped.len(),
                o.not_started
            )
        } else {
            String::new()
        }
    ));
    if o.interrupted {
        return Err(Stopped.into());
    }
    if !o.stopped.is_empty() {
        anyhow::bail!(
            "{} runs were stopped by a signal from outside; run the same command to resume them",
            o.stopped.len()
        );
    }
    if !o.failed.is_empty() {
        let ids: Vec<String> = o.failed.iter().map(ToString::to_string).collect();
        anyhow::bail!(
            "{} runs failed: {}; see their train.log and output.log, then run again with --rerun-failed",
            ids.len(),
            ids.join(", ")
        );
    }
    Ok(())
}
