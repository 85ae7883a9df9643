//! What to do with each run of an experiment, from its run dir: skip it (done, diverged, out of
//! retries), wait for it (another process holds it) or run it ([`triage`]), and whether a failed
//! attempt is tried again ([`after_failure`]). Shared by every backend.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::Outcome;
use crate::clock::unix_seconds;
use crate::experiment::Experiment;
use crate::io::write_atomic;
use crate::run_dir::{is_busy, mark_lost, queue, RunStatus, StatusRecord, EXPERIMENT_FILE};

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
    /// Runs write TensorBoard event files, and the experiment its HParams record
    /// ([`crate::tensorboard`]).
    pub tensorboard: bool,
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

/// The runs of an experiment sorted before scheduling: those to run, and the others counted.
#[derive(Debug, Default)]
pub struct Triage {
    /// Runs to start (indices into the prepared runs), in the experiment's order.
    pub to_run: Vec<usize>,
    /// The runs skipped: done before, diverged, or failed out of retries.
    pub outcome: Outcome,
}

/// Sorts `prepared` by [`decide`]: runs to start, and the others counted as done before,
/// diverged or failed (out of retries).
pub fn triage(exp: &Experiment, prepared: &[Prepared], policy: &Policy) -> Triage {
    let mut sorted = Triage::default();
    for (i, p) in prepared.iter().enumerate() {
        let id = || exp.runs[p.index].id.clone();
        match decide(&p.status, policy) {
            Decision::Run => sorted.to_run.push(i),
            Decision::Done => sorted.outcome.skipped_done += 1,
            Decision::Diverged => sorted.outcome.diverged.push(id()),
            Decision::OutOfRetries { .. } => sorted.outcome.failed.push(id()),
        }
    }
    sorted
}

/// What becomes of a run whose attempt ended without finishing (failed, or with no end
/// recorded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Start it again.
    Retry,
    /// The attempt exited 2, a usage error (a config this machine refuses, a damaged file): it
    /// fails the same way every time, so it is not retried.
    UsageError,
    /// Out of retries, or the session is stopping.
    GiveUp,
}

/// Whether a run whose attempt ended as `status`, its process with `exit_code`, is started
/// again: not when it was a usage error or the session is stopping; otherwise while its
/// failures are within the retry budget and it has been launched at most `policy.retries`
/// times in this session (a child that never recorded an attempt, failing before it opened the
/// run, still used one of the session's launches).
pub fn after_failure(
    status: &StatusRecord,
    policy: &Policy,
    exit_code: Option<i32>,
    launches: u32,
    stopping: bool,
) -> AfterFailure {
    if exit_code == Some(2) {
        AfterFailure::UsageError
    } else if !stopping && decide(status, policy) == Decision::Run && launches <= policy.retries {
        AfterFailure::Retry
    } else {
        AfterFailure::GiveUp
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
/// `force` is set, or when the results dir holds the plan of another experiment file with the
/// same name.
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
    let plan = exp.plan();
    plan.check_replaces(&root, &text)?;
    write_atomic(&root.join(EXPERIMENT_FILE), &text)?;
    plan.write(&root)?;
    if policy.tensorboard {
        // The dashboard's grid is no reason to stop a session.
        if let Err(e) = crate::tensorboard::write_experiment(&root, &plan) {
            eprintln!("warning: tensorboard: {e:#}; the HParams dashboard lacks its grid");
        }
    }
    let mut prepared = Vec::with_capacity(exp.runs.len());
    for (index, run) in exp.runs.iter().enumerate() {
        let dir = exp.run_dir(results, run);
        if policy.force && dir.exists() {
            let aside = aside_name(&root.join(".replaced"), &run.id.to_string());
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

/// A name under `replaced` that nothing has yet: `<id>-<unix seconds>`, then `-2`, `-3`, ...
/// for more replacements within the same second.
fn aside_name(replaced: &Path, id: &str) -> PathBuf {
    let stem = format!("{id}-{}", unix_seconds() as u64);
    let mut aside = replaced.join(&stem);
    let mut k = 2;
    while aside.exists() {
        aside = replaced.join(format!("{stem}-{k}"));
        k += 1;
    }
    aside
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two replacements of a run within one second get two names (was: the second rename
    /// failed with "Directory not empty").
    #[test]
    fn replacements_within_one_second_get_their_own_names() {
        let replaced = std::env::temp_dir().join(format!("ablate-aside-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&replaced);
        std::fs::create_dir_all(&replaced).unwrap();
        let first = aside_name(&replaced, "abc");
        std::fs::create_dir(&first).unwrap();
        let second = aside_name(&replaced, "abc");
        assert_ne!(first, second);
        assert!(
            second.to_str().unwrap().ends_with("-2"),
            "{}",
            second.display()
        );
        std::fs::create_dir(&second).unwrap();
        assert!(aside_name(&replaced, "abc")
            .to_str()
            .unwrap()
            .ends_with("-3"));
        std::fs::remove_dir_all(&replaced).unwrap();
    }

    /// A `failed` status whose history holds `failures` failed attempts started at `started`.
    fn failed(failures: usize, started: f64) -> StatusRecord {
        let attempt = serde_json::json!({
            "started": started, "outcome": "failed", "host": "h", "pid": 1, "device": "cpu",
            "git_commit": "", "epochs_at_start": 0,
        });
        serde_json::from_value(serde_json::json!({
            "status": "failed", "epochs_done": 0, "epochs": 2, "updated": 0.0,
            "attempts": failures, "history": vec![attempt; failures],
        }))
        .unwrap()
    }

    fn policy(retries: u32, rerun_failed: bool) -> Policy {
        Policy {
            retries,
            rerun_failed,
            force: false,
            since: 100.0,
            tensorboard: true,
        }
    }

    #[test]
    fn failed_runs_are_retried_within_their_budget() {
        let p = policy(1, false);
        assert_eq!(decide(&failed(1, 0.0), &p), Decision::Run);
        assert_eq!(
            decide(&failed(2, 0.0), &p),
            Decision::OutOfRetries { failures: 2 }
        );
        // --rerun-failed: failures before the session started do not count.
        assert_eq!(decide(&failed(2, 0.0), &policy(1, true)), Decision::Run);
        assert_eq!(
            after_failure(&failed(1, 0.0), &p, Some(1), 1, false),
            AfterFailure::Retry
        );
        // Out of this session's launches, out of retries, or stopping: given up.
        assert_eq!(
            after_failure(&failed(1, 0.0), &p, Some(1), 2, false),
            AfterFailure::GiveUp
        );
        assert_eq!(
            after_failure(&failed(2, 0.0), &p, Some(1), 1, false),
            AfterFailure::GiveUp
        );
        assert_eq!(
            after_failure(&failed(1, 0.0), &p, Some(1), 1, true),
            AfterFailure::GiveUp
        );
        // Exit 2, a usage error, is never retried.
        assert_eq!(
            after_failure(&failed(0, 0.0), &policy(5, false), Some(2), 1, false),
            AfterFailure::UsageError
        );
    }
}
