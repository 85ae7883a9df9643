//! The slots `ablate run` uses for an experiment, which `ablate plan` prices: `--devices` as
//! given, else every GPU found, else the split of the CPU (runs at once x threads each) that
//! the time model finds finishes the runs still to train first.

use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use super::runs_table::RunRow;
use crate::bench::estimate::{
    best_split, human, makespan, slot_memory, slots_that_fit, split_seconds, CalibrationCache,
    CostModel, CpuSplit, PendingRun, Provenance, RunProfile,
};
use crate::config::ModelSpec;
use crate::experiment::Experiment;
use crate::run_dir::RunStatus;
use crate::schedule::device::{cpu_count, cpu_slots, discover_gpus, oversubscribed, slots};
use crate::schedule::Slot;

/// Epochs `row`'s run still has to train (none once done).
pub fn epochs_left(row: &RunRow) -> usize {
    match row.status.as_ref().map(|s| s.status) {
        Some(RunStatus::Done) => 0,
        _ => row.epochs().saturating_sub(row.epochs_done()),
    }
}

/// This machine's time model and the profiles of the models priced so far.
pub struct Estimator {
    pub model: CostModel,
    pub provenance: Provenance,
    profiles: BTreeMap<String, Option<Rc<RunProfile>>>,
}

impl Estimator {
    /// The time model of this machine (cached, else calibrated now), or of one of its kind
    /// with `cores` cores.
    pub fn new(cores: Option<usize>) -> anyhow::Result<Self> {
        let (model, provenance) = CalibrationCache::open().model(cpu_count())?;
        let model = match cores {
            Some(cores) => model.with_cores(cores),
            None => model,
        };
        Ok(Self {
            model,
            provenance,
            profiles: BTreeMap::new(),
        })
    }

    /// The profile of `spec` (one per distinct model); `None` where the time model cannot
    /// price it.
    pub fn profile(&mut self, spec: &ModelSpec) -> anyhow::Result<Option<Rc<RunProfile>>> {
        let key = serde_json::to_string(spec)?;
        if let Some(p) = self.profiles.get(&key) {
            return Ok(p.clone());
        }
        let p = RunProfile::of(spec)?.map(Rc::new);
        self.profiles.insert(key, p.clone());
        Ok(p)
    }
}

/// The slots for `exp` and, where the CPU split was chosen here, the line that says why.
pub struct SlotChoice {
    pub slots: Vec<Slot>,
    pub why: Option<String>,
}

/// The slots `--devices` names, with a warning when they ask for more threads than cores.
pub fn given(devices: &str) -> anyhow::Result<Vec<Slot>> {
    let slots = slots(devices)?;
    if let Some(warning) = oversubscribed(&slots) {
        eprintln!("warning: {warning}");
    }
    Ok(slots)
}

/// The slots `ablate run` uses for `exp` (results under `results`): `devices` when given;
/// else every GPU found; else the split of the CPU (of this machine, or of one of its kind
/// with `cores` cores) that the time model finds fastest for the runs left (`estimator` is
/// made if missing; one run or none needs no split); one slot with every core where no time
/// model can be had.
pub fn choose(
    exp: &Experiment,
    results: &Path,
    devices: Option<&str>,
    cores: Option<usize>,
    estimator: &mut Option<Estimator>,
) -> anyhow::Result<SlotChoice> {
    if let Some(devices) = devices {
        return Ok(SlotChoice {
            slots: given(devices)?,
            why: None,
        });
    }
    if cores.is_none() {
        let gpus = discover_gpus();
        let usable = cfg!(feature = "cuda") || std::env::var_os(crate::cli::CUDA_ON_CPU).is_some();
        if !gpus.is_empty() && usable {
            return Ok(SlotChoice {
                slots: gpus,
                why: None,
            });
        }
        if !gpus.is_empty() {
            // `plan` and `run` alike: the CPU, said once, with both ways on.
            let names: Vec<String> = gpus.iter().map(ToString::to_string).collect();
            eprintln!(
                "warning: found {} GPU{} ({}) but this ablate was built without CUDA, so the \
                 runs train on the CPU; rebuild with `cargo build --release --features cuda` \
                 to use them, or pass --devices cpu to choose the CPU",
                gpus.len(),
                if gpus.len() == 1 { "" } else { "s" },
                names.join(", ")
            );
        }
    }
    let cores_given = cores.is_some();
    let cores = cores.unwrap_or_else(cpu_count);
    let all_cores = |why: String| SlotChoice {
        slots: cpu_slots(1, cores),
        why: Some(why),
    };
    if cores == 1 {
        return Ok(SlotChoice {
            slots: cpu_slots(1, 1),
            why: None,
        });
    }
    let rows: Vec<RunRow> = exp
        .runs
        .iter()
        .map(|run| RunRow::read(exp, results, run))
        .collect();
    let todo: Vec<(&RunRow, usize)> = rows
        .iter()
        .map(|row| (row, epochs_left(row)))
        .filter(|&(_, left)| left > 0)
        .collect();
    if todo.len() < 2 {
        // One run or none: nothing to split.
        return Ok(SlotChoice {
            slots: cpu_slots(1, cores),
            why: None,
        });
    }
    if estimator.is_none() {
        match Estimator::new(Some(cores)) {
            Ok(e) => *estimator = Some(e),
            Err(e) => {
                return Ok(all_cores(format!(
                    "one CPU slot with every core (no time model to split by: {e:#})"
                )))
            }
        }
    }
    let Some(est) = estimator.as_mut() else {
        return Ok(all_cores("one CPU slot with every core".into()));
    };
    let mut priced = Vec::new();
    for (row, left) in todo {
        match est.profile(&row.run.config.model)? {
            Some(p) => priced.push((&row.run.config, p, left)),
            None => {
                return Ok(all_cores(format!(
                    "one CPU slot with every core ({} has a layer the time model cannot \
                     price)",
                    row.run.config.model_name
                )))
            }
        }
    }
    let pending: Vec<PendingRun> = priced
        .iter()
        .map(|(config, profile, epochs)| PendingRun {
            config,
            profile,
            epochs: *epochs,
        })
        .collect();
    let memory = crate::config::available_memory();
    let (split, time) = best_split(&est.model, &pending, cores, memory)?;
    let fit = memory.map(|m| slots_that_fit(&pending, m));
    let mut others = Vec::new();
    for other in [1, cores] {
        if other != split.slots && other <= pending.len() {
            let s = CpuSplit {
                slots: other,
                threads: cores / other,
            };
            let t = makespan(&split_seconds(&est.model, &pending, s)?, other);
            let unfit = if fit.is_some_and(|f| other > f) {
                ", does not fit in memory"
            } else {
                ""
            };
            others.push(format!("{} x {}: {}{unfit}", other, s.threads, human(t)));
        }
    }
    // Say when memory, not speed, capped the slots, and whose memory that is.
    let cap = match (fit, memory) {
        (Some(f), Some(m)) if f < cores.min(pending.len()) => format!(
            "; at most {f} slot{} fit in {:.1} GB of available memory ({:.1} GB a slot){}",
            plural(f),
            m as f64 / 1e9,
            slot_memory(&pending) as f64 / 1e9,
            if cores_given {
                ", this machine's: --cores prices another machine's cores, not its memory"
            } else {
                ""
            }
        ),
        _ => String::new(),
    };
    let why = format!(
        "{} CPU slot{} x {} thread{}: the split of {cores} cores that the time model finds \
         finishes the {} run{} to train first ({}{})",
        split.slots,
        plural(split.slots),
        split.threads,
        plural(split.threads),
        pending.len(),
        plural(pending.len()),
        human(time),
        if others.is_empty() {
            String::new()
        } else {
            format!("; {}", others.join(", "))
        }
    ) + &cap;
    Ok(SlotChoice {
        slots: cpu_slots(split.slots, split.threads),
        why: Some(why),
    })
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
