//! What to do with each run of an experiment, from its run dir: skip it (done, diverged, out of
//! retries), wait for it (another process holds it) or run it. Shared by every backend.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::experiment::Experiment;
use crate::io::write_atomic;
use crate::train::{is_busy, mark_lost, queue, unix_seconds, RunStatus, StatusRecord};

/// How finished and failed runs are treated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// A run may fail this many times and still be started again.
    pub retries: u32,
    /// Failures before `since` do not count: failed runs get a fresh budget.
    pub rerun_failed: bool,
    /// Start every run from scratch; earlier run dirs are moved to `.replaced/`, not deleted.
    pub force: bool,
    /// Unix seconds this scheduling session started.
    pub since: f64,
}

/// The state of one run before scheduling.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Run,
    Done,
    Diverged,
    /// Failed more often than the retry budget allows.
    OutOfRetries {
        failures: usize,
    },
}

/// Failed attempts of a run that count against its retry budget.
pub fn failures(status: &StatusRecord, policy: &Policy) -> usize {
    status
        .history
        .iter()
        .filter(|a| a.outcome == Some(RunStatus::Failed))
        .filter(|a| !policy.rerun_failed || a.started >= policy.since)
        .count()
}

/// The decision for a run whose status is `status` (and whose dir is not busy).
pub fn decide(status: &StatusRecord, policy: &Policy) -> Decision {
    match status.status {
        RunStatus::Done => Decision::Done,
        RunStatus::Diverged => Decision::Diverged,
        RunStatus::Failed => {
            let failures = failures(status, policy);
            if failures > policy.retries as usize {
                Decision::OutOfRetries { failures }
            } else {
                Decision::Run
            }
        }
        RunStatus::Queued | RunStatus::Running | RunStatus::Interrupted => Decision::Run,
    }
}

/// A run dir ready for scheduling.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Index into the experiment's runs.
    pub index: usize,
    pub dir: PathBuf,
    pub status: StatusRecord,
}

/// Writes the experiment's snapshot and plan, then queues every run dir (config snapshot,
/// `queued` status), repairing the status of attempts whose process died. With `force`, earlier
/// run dirs are moved aside first. Refuses (touching nothing) when a run dir is in use and
/// `force` is set.
pub fn prepare(exp: &Experiment, results: &Path, policy: &Policy) -> anyhow::Result<Vec<Prepared>> {
    let root = exp.results_dir(results);
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    if policy.force {
        let busy: Vec<String> = exp
            .runs
            .iter()
            .filter(|r| is_busy(&exp.run_dir(results, r)))
            .map(|r| r.id.to_string())
            .collect();
        if !busy.is_empty() {
            anyhow::bail!(
                "--force: runs {} are in use by another process; stop it first",
                busy.join(", ")
            );
        }
    }
    let text =
        std::fs::read(&exp.file).with_context(|| format!("reading {}", exp.file.display()))?;
    write_atomic(&root.join("experiment.toml"), &text)?;
    write_atomic(
        &root.join("plan.json"),
        serde_json::to_string_pretty(exp)?.as_bytes(),
    )?;
    let mut prepared = Vec::with_capacity(exp.runs.len());
    for (index, run) in exp.runs.iter().enumerate() {
        let dir = exp.run_dir(results, run);
        if policy.force && dir.exists() {
            let aside =
                root.join(".replaced")
                    .join(format!("{}-{}", run.id, unix_seconds() as u64));
            std::fs::create_dir_all(aside.parent().expect("has a parent"))?;
            std::fs::rename(&dir, &aside).with_context(|| {
                format!("moving {} aside to {}", dir.display(), aside.display())
            })?;
        }
        let mut status = queue(&dir, &run.config)?;
        if status.status == RunStatus::Running && !is_busy(&dir) {
            if let Some(s) = mark_lost(&dir, "its process died without recording an end")? {
                status = s;
            }
        }
        prepared.push(Prepared { index, dir, status });
    }
    Ok(prepared)
}
