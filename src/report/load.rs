//! Reading an experiment's results: `plan.json`, then each planned run's `config.toml`,
//! `status.json`, `summary.json` and `metrics.csv`, each through its reader in
//! [`crate::run_dir`]. Missing, failed and
//! partial runs are kept, with whatever they have; a run whose files cannot be read or
//! contradict each other (a garbage metrics row, a summary that is not JSON, a `config.toml`
//! that is not a run's config, a done run without its metrics) is marked `damaged`, with the
//! file named, and left out of every mean, while the report of the others is written. Of a
//! summary only the fields the report uses must be there ([`RecordedSummary`]).

use std::path::{Path, PathBuf};

use crate::config::{ModelSpec, RunConfig};
use crate::run_dir::HEADER as METRICS_COLUMNS;
use crate::run_dir::{
    median, read_metrics, read_status, read_summary, EpochRecord, Plan, PlanEntry, PruningEvent,
    RecordedSummary, RunStatus, CONFIG_FILE, METRICS_FILE, STATUS_FILE, SUMMARY_FILE,
};

/// One planned run and what its dir holds. Every measured field is `None` when the run has
/// not produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub id: String,
    /// The include label, if any.
    pub label: Option<String>,
    /// The run's axis values without the seed: runs that differ only by seed share it.
    pub group: String,
    pub model_name: String,
    /// The model the run trains, from its `config.toml` (`None` without one).
    pub model: Option<ModelSpec>,
    pub seed: u64,
    pub status: RunState,
    pub epochs_done: usize,
    pub epochs: usize,
    /// Test top-1 (percent) of the last recorded epoch.
    pub final_top1: Option<f64>,
    /// Best test top-1 over the recorded epochs.
    pub best_top1: Option<f64>,
    pub deploy_top1: Option<f64>,
    /// Deploy form, `paper` convention (multiply-adds and parameters, batch 1).
    pub flops_paper: Option<f64>,
    pub params_paper: Option<f64>,
    /// Deploy form, `executed` convention.
    pub flops_executed: Option<f64>,
    pub params_executed: Option<f64>,
    pub deploy_bytes: Option<f64>,
    pub checkpoint_bytes: Option<f64>,
    /// Sum of the recorded epochs' training seconds.
    pub train_seconds: Option<f64>,
    /// Median over the recorded epochs.
    pub epoch_seconds: Option<f64>,
    pub images_per_second: Option<f64>,
    /// The pruning schedule's events, from the summary (empty without one).
    pub pruning: Vec<PruningEvent>,
    /// The data set, training images and epochs of its config (`None` without one).
    pub trained_on: Option<super::trained_on::TrainedOn>,
    /// `cpu @ host` or `cuda:0 @ host` of the latest attempt.
    pub device: Option<String>,
    /// Why the run's files cannot be trusted (naming the file); such a run has status
    /// `damaged`, is shown as such and left out of every mean.
    pub problem: Option<String>,
    pub dir: PathBuf,
}

/// Where a planned run stands, as the report sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// No run dir (or no status in it).
    Missing,
    /// Its files contradict each other or cannot be read ([`RunRow::problem`] says which):
    /// shown as such and left out of every mean.
    Damaged,
    /// What its `status.json` records.
    Recorded(RunStatus),
}

impl RunState {
    pub fn is_done(self) -> bool {
        self == Self::Recorded(RunStatus::Done)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Damaged => DAMAGED,
            Self::Recorded(s) => s.name(),
        }
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A state compares equal to its name (`"done"`, `"missing"`, `"damaged"`, ...).
impl PartialEq<&str> for RunState {
    fn eq(&self, name: &&str) -> bool {
        self.name() == *name
    }
}

/// The name of [`RunState::Damaged`].
pub const DAMAGED: &str = "damaged";

/// Checks a run's metrics rows: a finite number in every column, epochs numbered 1, 2, ... and,
/// for a done run, as many rows as its status records epochs (a running run may be between
/// writing the two).
fn check_metrics(records: &[EpochRecord], expected_rows: Option<usize>) -> Result<(), String> {
    for (i, r) in records.iter().enumerate() {
        let values = [
            r.train_loss,
            r.train_top1,
            r.test_loss,
            r.test_top1,
            r.lr,
            r.epoch_seconds,
            r.data_seconds,
            r.compute_seconds,
            r.eval_seconds,
            r.images_per_second,
        ];
        if let Some(k) = values.iter().position(|v| !v.is_finite()) {
            return Err(format!(
                "row {}: `{}` is not a finite number",
                i + 1,
                METRICS_COLUMNS[k + 1]
            ));
        }
        // Accuracies are percentages.
        for (name, v) in [("train_top1", r.train_top1), ("test_top1", r.test_top1)] {
            if !(0.0..=100.0).contains(&v) {
                return Err(format!("row {}: `{name}` is {v}, not a percentage", i + 1));
            }
        }
        if r.epoch != i + 1 {
            return Err(format!("row {}: epoch is not {}", i + 1, i + 1));
        }
    }
    if let Some(expected) = expected_rows.filter(|&e| e != records.len()) {
        return Err(format!(
            "has {} rows but the run's status records {expected} epochs",
            records.len()
        ));
    }
    Ok(())
}

/// Every run of the experiment in `exp_dir` (a dir with `plan.json`), in plan order.
pub fn load_experiment(exp_dir: &Path) -> anyhow::Result<Vec<RunRow>> {
    Plan::read(exp_dir)?
        .runs
        .into_iter()
        .map(|entry| Ok(load_run(exp_dir, entry)))
        .collect()
}

/// The row of one planned run; whatever of its files cannot be read is a problem of that run
/// (it is damaged), never an error of the whole report.
fn load_run(exp_dir: &Path, entry: PlanEntry) -> RunRow {
    let PlanEntry { id, label, point } = entry;
    let dir = exp_dir.join(&id);
    let mut problems: Vec<String> = Vec::new();
    let config_path = dir.join(CONFIG_FILE);
    let config = match std::fs::read_to_string(&config_path) {
        Ok(text) => match RunConfig::from_toml(&config_path, &text) {
            Ok(config) => Some(config),
            Err(e) => {
                problems.push(e.to_string());
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            problems.push(format!("{}: {e}", config_path.display()));
            None
        }
    };
    let axes: Vec<String> = point
        .iter()
        .filter(|(k, _)| k != "train.seed")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let group = match (&label, axes.is_empty()) {
        (Some(l), _) => l.clone(),
        (None, false) => axes.join(" "),
        (None, true) => "(base)".into(),
    };
    let status = read_status(&dir);
    let status_path = dir.join(STATUS_FILE);
    if status.is_none() && status_path.exists() {
        problems.push(format!("{}: not a status record", status_path.display()));
    }
    let summary_path = dir.join(SUMMARY_FILE);
    let summary: Option<RecordedSummary> = match read_summary(&dir) {
        Ok(s) => s,
        Err(e) => {
            problems.push(format!("{e:#}"));
            None
        }
    };
    if let Some(v) = summary
        .as_ref()
        .map(|s| s.deploy_test_top1)
        .filter(|v| !(0.0..=100.0).contains(v))
    {
        problems.push(format!(
            "{}: `deploy_test_top1` is {v}, not a percentage",
            summary_path.display()
        ));
    }
    let done = status.as_ref().is_some_and(|s| s.status == RunStatus::Done);
    if done && summary.is_none() && problems.is_empty() {
        problems.push(format!(
            "{}: missing for a done run",
            summary_path.display()
        ));
    }
    let metrics_path = dir.join(METRICS_FILE);
    let metrics = if metrics_path.is_file() {
        match read_metrics(&metrics_path) {
            Ok(records) => {
                let expected = status.as_ref().filter(|_| done).map(|s| s.epochs_done);
                match check_metrics(&records, expected) {
                    Ok(()) => Some(records),
                    Err(why) => {
                        problems.push(format!("{}: {why}", metrics_path.display()));
                        None
                    }
                }
            }
            Err(e) => {
                problems.push(format!("{e:#}"));
                None
            }
        }
    } else {
        if done {
            problems.push(format!(
                "{}: missing for a done run",
                metrics_path.display()
            ));
        }
        None
    };
    let (mut final_top1, mut best_top1, mut train_seconds, mut epoch_seconds, mut ips) =
        (None, None, None, None, None);
    if let Some(records) = metrics.as_ref().filter(|r| !r.is_empty()) {
        let top1 = records.iter().map(|r| r.test_top1);
        final_top1 = records.last().map(|r| r.test_top1);
        best_top1 = top1.reduce(f64::max);
        train_seconds = Some(records.iter().map(|r| r.epoch_seconds).sum());
        epoch_seconds = median(records.iter().map(|r| r.epoch_seconds));
        ips = median(records.iter().map(|r| r.images_per_second));
    }
    let from_summary = |f: fn(&RecordedSummary) -> f64| summary.as_ref().map(f);
    RunRow {
        id,
        label,
        group,
        model_name: config
            .as_ref()
            .map_or_else(|| "?".into(), |c| c.model_name.clone()),
        model: config.as_ref().map(|c| c.model.clone()),
        seed: point
            .iter()
            .find(|(k, _)| k == "train.seed")
            .and_then(|(_, v)| v.parse().ok())
            .or(config.as_ref().map(|c| c.train.seed))
            .unwrap_or(0),
        status: match (&status, problems.is_empty()) {
            (_, false) => RunState::Damaged,
            (None, true) => RunState::Missing,
            (Some(s), true) => RunState::Recorded(s.status),
        },
        epochs_done: status.as_ref().map_or(0, |s| s.epochs_done),
        epochs: config.as_ref().map_or(0, |c| c.train.epochs),
        final_top1,
        best_top1,
        deploy_top1: from_summary(|s| s.deploy_test_top1),
        flops_paper: from_summary(|s| s.deploy.paper.flops as f64),
        params_paper: from_summary(|s| s.deploy.paper.params as f64),
        flops_executed: from_summary(|s| s.deploy.executed.flops as f64),
        params_executed: from_summary(|s| s.deploy.executed.params as f64),
        deploy_bytes: from_summary(|s| s.deploy_bytes as f64),
        checkpoint_bytes: from_summary(|s| s.checkpoint_bytes as f64),
        train_seconds,
        epoch_seconds,
        images_per_second: ips,
        pruning: summary.map(|s| s.schedule).unwrap_or_default(),
        trained_on: config.as_ref().map(super::trained_on::TrainedOn::of),
        device: status
            .as_ref()
            .filter(|s| !s.host.is_empty())
            .map(|s| format!("{} @ {}", s.device, s.host)),
        problem: (!problems.is_empty()).then(|| problems.join("; ")),
        dir,
    }
}
