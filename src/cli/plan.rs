//! `ablate plan`: the runs of an experiment file and what they will cost, without running
//! anything.

use std::path::PathBuf;

use super::runs_table::{Column, RunRow, RunsTable};
use super::slots::{choose, epochs_left, given, Estimator};
use crate::bench::estimate::{cpu_model, human, makespan};
use crate::experiment::Experiment;
use crate::schedule::Slot;

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// The experiment TOML file.
    pub file: PathBuf,
    /// Results root; a run's status is shown when its dir exists.
    #[arg(long, env = "ABLATE_RESULTS", default_value = "results")]
    pub results: PathBuf,
    /// The slots to estimate for, as `ablate run --devices` takes them [default: what `ablate
    /// run` would use].
    #[arg(long)]
    pub devices: Option<String>,
    /// Price the default CPU split for a machine of this CPU's kind with this many cores
    /// (extrapolated from this machine's calibration: its threads' serial share and how much
    /// runs slow each other per core).
    #[arg(long, conflicts_with = "devices", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub cores: Option<u32>,
    /// List the runs only: no wall-time estimate (which calibrates this machine's kernels
    /// once, a few seconds, then reads the calibration from a cache).
    #[arg(long, conflicts_with = "cores")]
    pub no_estimate: bool,
    #[arg(long, value_enum, default_value = "table")]
    pub format: PlanFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum PlanFormat {
    Table,
    /// The plan as `plan.json` stores it, plus each run's full config.
    Json,
}

pub fn run(args: &PlanArgs) -> anyhow::Result<()> {
    super::expect_dir("--results", &args.results)?;
    let exp = Experiment::load(&args.file)?;
    match args.format {
        PlanFormat::Json => {
            let mut value = serde_json::to_value(&exp)?;
            for (run, v) in exp
                .runs
                .iter()
                .zip(value["runs"].as_array_mut().into_iter().flatten())
            {
                v["config"] = serde_json::to_value(&run.config)?;
                v["model_name"] = run.config.model_name.clone().into();
            }
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        PlanFormat::Table => table(&exp, args)?,
    }
    Ok(())
}

fn table(exp: &Experiment, args: &PlanArgs) -> anyhow::Result<()> {
    let mut estimator = None;
    let cores = args.cores.map(|c| c as usize);
    let choice = if args.no_estimate {
        // The devices are still checked (and oversubscription said), not priced.
        if let Some(devices) = &args.devices {
            given(devices)?;
        }
        None
    } else {
        Some(choose(
            exp,
            &args.results,
            args.devices.as_deref(),
            cores,
            &mut estimator,
        )?)
    };
    let slots = choice.as_ref().map_or(&[][..], |c| &c.slots[..]);
    let cpu: Vec<usize> = slots
        .iter()
        .filter_map(|s| match s {
            Slot::Cpu { threads, .. } => Some(*threads),
            Slot::Gpu { .. } => None,
        })
        .collect();
    // Every CPU slot trains with this many threads; GPU slots are not estimated.
    let cpu_threads = cpu.first().copied();
    let mut no_model = None;
    // Nothing left to train, nothing to price: no calibration.
    let anything_left = exp
        .runs
        .iter()
        .any(|run| super::slots::epochs_left(&RunRow::read(exp, &args.results, run)) > 0);
    if cpu_threads.is_some() && estimator.is_none() && anything_left {
        match Estimator::new(cores) {
            Ok(e) => estimator = Some(e),
            Err(e) => no_model = Some(format!("{e:#}")),
        }
    }
    println!(
        "{}: {} runs (retries {}), results in {}",
        exp.name,
        exp.runs.len(),
        exp.retries,
        exp.results_dir(&args.results).display()
    );
    if let Some(d) = &exp.description {
        println!("{d}");
    }
    let table = if cpu_threads.is_some() && estimator.is_some() {
        RunsTable::new(9, &[Column::right("estimate", 9)])
    } else {
        RunsTable::new(9, &[])
    };
    println!("{}", table.header());
    let mut remaining = Vec::new();
    let mut unpriced = Vec::new();
    for run in &exp.runs {
        let row = RunRow::read(exp, &args.results, run);
        let state = row
            .status
            .as_ref()
            .map_or("-".into(), |s| s.status.to_string());
        let epochs = format!("{}/{}", row.epochs_done(), row.epochs());
        let (Some(threads), Some(est)) = (cpu_threads, estimator.as_mut()) else {
            println!("{}", table.line(&row, &state, &epochs, &[]));
            continue;
        };
        let left = epochs_left(&row);
        let estimate = if left == 0 {
            remaining.push(0.0);
            "-".to_string()
        } else {
            match est.profile(&run.config.model)? {
                Some(profile) => {
                    let busy = cpu.iter().sum::<usize>();
                    let seconds =
                        est.model
                            .run_seconds(&run.config, &profile, left, threads, busy)?;
                    remaining.push(seconds);
                    human(seconds)
                }
                None => {
                    unpriced.push(run.id.clone());
                    "?".to_string()
                }
            }
        };
        println!("{}", table.line(&row, &state, &epochs, &[estimate]));
    }
    let Some(choice) = &choice else {
        return Ok(());
    };
    match (cpu_threads, &estimator) {
        (Some(threads), Some(est)) => {
            let cpu_slots = cpu.len();
            let todo = remaining.iter().filter(|&&s| s > 0.0).count();
            println!(
                "\n{}: {todo} runs to train, about {} on {cpu_slots} CPU slot{} ({threads} \
                 thread{} each, {})",
                args.file.display(),
                human(makespan(&remaining, cpu_slots)),
                if cpu_slots == 1 { "" } else { "s" },
                if threads == 1 { "" } else { "s" },
                match cores {
                    Some(n) => format!("{n} cores of {}, extrapolated", cpu_model()),
                    None => cpu_model(),
                }
            );
            if let Some(why) = &choice.why {
                println!("Slots: {why}; `--devices cpu:K` picks another split.");
            }
            if cpu_slots < slots.len() {
                println!("(GPU slots are not estimated: the CPU slots alone are assumed)");
            }
            if !unpriced.is_empty() {
                println!(
                    "No estimate (`?`) for {}: a layer the time model cannot price (no fused \
                     CPU form); the total leaves them out.",
                    unpriced
                        .iter()
                        .map(|id| id.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            println!(
                "Estimated by a time model: this machine's kernel speeds ({}) priced on each \
                 model's per-stage work in every phase of its pruning schedule; evaluation \
                 counted as a third of a training step.",
                est.provenance
            );
        }
        (Some(_), None) if !anything_left => {
            println!(
                "\n{}: 0 runs to train; nothing to estimate.",
                args.file.display()
            );
        }
        _ => match no_model {
            Some(why) => println!("\nNo estimate: {why}."),
            None => println!(
                "\nNo estimate: `ablate run` would use GPUs ({}), which this command does not \
                 measure; `--devices cpu` estimates for the CPU.",
                slots.iter().map(Slot::label).collect::<Vec<_>>().join(", ")
            ),
        },
    }
    Ok(())
}
