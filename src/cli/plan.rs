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
    /// Instead of the runs: from the experiment's finished runs, the seeds per arm each variant
    /// needs against the baseline to detect a final top-1 difference of DELTA percentage
    /// points with 80% power at the 5% level, and what the missing runs would cost.
    #[arg(long, value_name = "DELTA", value_parser = positive_points, conflicts_with = "format")]
    pub seeds_for: Option<f64>,
}

/// A difference in percentage points: a finite number above 0.
fn positive_points(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!(
            "expected a top-1 difference in percentage points above 0, got {s:?}"
        )),
    }
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
        PlanFormat::Table => match args.seeds_for {
            Some(delta) => seeds_table(&exp, args, delta)?,
            None => table(&exp, args)?,
        },
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
    let cpu = cpu_threads(slots);
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

/// The threads of each CPU slot (GPU slots are not priced).
fn cpu_threads(slots: &[Slot]) -> Vec<usize> {
    slots
        .iter()
        .filter_map(|s| match s {
            Slot::Cpu { threads, .. } => Some(*threads),
            Slot::Gpu { .. } => None,
        })
        .collect()
}

/// `--seeds-for DELTA`: per variant, the seeds per arm that detect DELTA against the baseline
/// (at the spread its finished seeds show) and the cost of the runs that are missing.
fn seeds_table(exp: &Experiment, args: &PlanArgs, delta: f64) -> anyhow::Result<()> {
    use crate::report::{aggregate::aggregate, compare::Comparison, load::load_experiment};
    let dir = exp.results_dir(&args.results);
    let rows = if dir.join(crate::run_dir::PLAN_FILE).is_file() {
        load_experiment(&dir)?
    } else {
        Vec::new()
    };
    let groups = aggregate(&rows)?;
    let Some(base) = crate::report::tables::baseline(&groups) else {
        // Nothing to plan from: a usage error, exit 2.
        return Err(crate::config::ConfigError::invalid(
            "--seeds-for",
            format!(
                "{}: no runs in {} yet; it plans from the spread of finished seeds, so run some first",
                args.file.display(),
                dir.display()
            ),
        )
        .into());
    };
    // The time model, for the cost of the runs still to train.
    let mut estimator = None;
    let cores = args.cores.map(|c| c as usize);
    let choice = choose(
        exp,
        &args.results,
        args.devices.as_deref(),
        cores,
        &mut estimator,
    )?;
    let cpu = cpu_threads(&choice.slots);
    if !cpu.is_empty() && estimator.is_none() {
        estimator = Estimator::new(cores).ok();
    }
    // One run of a group, priced whole (its config's epochs).
    let mut run_cost = |group: &str| -> anyhow::Result<Option<f64>> {
        let (Some(threads), Some(est)) = (cpu.first().copied(), estimator.as_mut()) else {
            return Ok(None);
        };
        let Some(run) = rows
            .iter()
            .find(|r| r.group == group)
            .and_then(|r| exp.runs.iter().find(|p| p.id.to_string() == r.id))
        else {
            return Ok(None);
        };
        let Some(profile) = est.profile(&run.config.model)? else {
            return Ok(None);
        };
        let busy = cpu.iter().sum::<usize>();
        let epochs = run.config.train.epochs;
        Ok(Some(est.model.run_seconds(
            &run.config,
            &profile,
            epochs,
            threads,
            busy,
        )?))
    };
    println!(
        "{}: seeds per arm to detect a final top-1 difference of {delta} pp against {} (80% power, \
         5% two-sided), at the spread of the finished seeds",
        exp.name, base.group
    );
    let row = |cells: [&str; 7]| {
        let [group, test, std, run, needed, add, cost] = cells;
        println!("{group:<24} {test:>6} {std:>8} {run:>9} {needed:>10} {add:>10} {cost:>12}");
    };
    row([
        "variant",
        "test",
        "std (pp)",
        "seeds run",
        "seeds/arm",
        "runs to add",
        "their cost",
    ]);
    let (mut base_needed, mut extra) = (0usize, Vec::new());
    let mut total_runs = 0usize;
    for g in groups.iter().filter(|g| !std::ptr::eq(*g, base)) {
        let c = Comparison::new(g, base, "final_top1");
        let test = c.kind().map_or_else(|| "-".into(), |k| k.to_string());
        let std = c.std.map_or("-".into(), |s| format!("{s:.3}"));
        let run = format!("{}/{}", g.n, base.n);
        let (needed, add, cost) = match c.seeds_for(delta) {
            Ok(Some(n)) => {
                base_needed = base_needed.max(n);
                let add = n.saturating_sub(g.n);
                total_runs += add;
                let cost = price(&mut run_cost, &mut extra, &g.group, add)?;
                (n.to_string(), add.to_string(), cost)
            }
            Ok(None) => (
                format!(">{}", crate::report::power::MAX_SEEDS),
                "-".into(),
                "-".into(),
            ),
            Err(why) => (why.to_string(), "-".into(), "-".into()),
        };
        row([&g.group, &test, &std, &run, &needed, &add, &cost]);
    }
    let base_add = base_needed.saturating_sub(base.n);
    if base_add > 0 {
        total_runs += base_add;
        let cost = price(&mut run_cost, &mut extra, &base.group, base_add)?;
        let (n, needed, add) = (
            base.n.to_string(),
            base_needed.to_string(),
            base_add.to_string(),
        );
        row([&base.group, "", "", &n, &needed, &add, &cost]);
    }
    if cpu.is_empty() || extra.is_empty() {
        println!("\n{total_runs} runs to add.");
    } else {
        println!(
            "\n{total_runs} runs to add, about {} on {} CPU slot{} ({}).",
            human(makespan(&extra, cpu.len())),
            cpu.len(),
            if cpu.len() == 1 { "" } else { "s" },
            cpu_model()
        );
    }
    println!(
        "seeds/arm: the fewest seeds in each arm, in the design the finished seeds use (paired \
         where both ran the same seeds, else two independent groups with their pooled standard \
         deviation), whose t-test detects {delta} pp with 80% power at the 5% level (noncentral \
         t, as statsmodels' TTestPower / TTestIndPower); the baseline needs the most any \
         variant does. Costs are the plan's time model for whole runs of each group."
    );
    Ok(())
}

/// The cost of `add` more runs of `group` as a cell ("?" where the time model has no price),
/// each run's seconds added to `extra`.
fn price(
    run_cost: &mut impl FnMut(&str) -> anyhow::Result<Option<f64>>,
    extra: &mut Vec<f64>,
    group: &str,
    add: usize,
) -> anyhow::Result<String> {
    Ok(match run_cost(group)? {
        Some(one) => {
            extra.extend(std::iter::repeat_n(one, add));
            human(one * add as f64)
        }
        None => "?".into(),
    })
}
