//! `ablate plan`: the runs of an experiment file and what they will cost, without running
//! anything.

use std::path::PathBuf;

use super::runs_table::{Column, RunRow, RunsTable};
use crate::bench::estimate::{cpu_model, human, makespan, ThroughputCache};
use crate::experiment::Experiment;
use crate::run_dir::RunStatus;
use crate::schedule::{slots, Slot};

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
    /// List the runs only: no wall-time estimate (which measures each model's speed on this
    /// machine once, then reads it from a cache).
    #[arg(long)]
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
    let slots = if args.no_estimate {
        Vec::new()
    } else {
        slots(args.devices.as_deref())?
    };
    // Every CPU slot trains with this many threads; GPU slots are not estimated.
    let cpu_threads = slots.iter().find_map(|s| match s {
        Slot::Cpu { threads, .. } => Some(*threads),
        Slot::Gpu { .. } => None,
    });
    let mut cache = ThroughputCache::open();
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
    let table = if cpu_threads.is_some() {
        RunsTable::new(9, &[Column::right("estimate", 9)])
    } else {
        RunsTable::new(9, &[])
    };
    println!("{}", table.header());
    let mut remaining = Vec::new();
    for run in &exp.runs {
        let row = RunRow::read(exp, &args.results, run);
        let state = row
            .status
            .as_ref()
            .map_or("-".into(), |s| s.status.to_string());
        let epochs = format!("{}/{}", row.epochs_done(), row.epochs());
        let Some(threads) = cpu_threads else {
            println!("{}", table.line(&row, &state, &epochs, &[]));
            continue;
        };
        let left = match row.status.as_ref().map(|s| s.status) {
            Some(RunStatus::Done) => 0,
            _ => row.epochs().saturating_sub(row.epochs_done()),
        };
        let seconds = if left == 0 {
            0.0
        } else {
            cache.get(&run.config)?.seconds(&run.config, left, threads)
        };
        remaining.push(seconds);
        let estimate = if left == 0 {
            "-".into()
        } else {
            human(seconds)
        };
        println!("{}", table.line(&row, &state, &epochs, &[estimate]));
    }
    if let Some(threads) = cpu_threads {
        let cpu_slots = slots
            .iter()
            .filter(|s| matches!(s, Slot::Cpu { .. }))
            .count();
        let gpu_slots = slots.len() - cpu_slots;
        let todo = remaining.iter().filter(|&&s| s > 0.0).count();
        println!(
            "\n{}: {todo} runs to train, about {} on {cpu_slots} CPU slot{} ({threads} thread{} each, {})",
            args.file.display(),
            human(makespan(&remaining, cpu_slots)),
            if cpu_slots == 1 { "" } else { "s" },
            if threads == 1 { "" } else { "s" },
            cpu_model()
        );
        if gpu_slots > 0 {
            println!("(GPU slots are not estimated: the CPU slots alone are assumed)");
        }
        println!(
            "Estimated from each model's training speed measured on this machine over its pruning \
             schedule ({} measured now{}); evaluation counted as a third of a training step.",
            cache.measured,
            cache
                .file()
                .map_or_else(String::new, |f| format!(", cached in {}", f.display()))
        );
    } else if !args.no_estimate {
        println!(
            "\nNo estimate: `ablate run` would use GPUs ({}), which this command does not \
             measure; `--devices cpu` estimates for the CPU.",
            slots.iter().map(Slot::label).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}
