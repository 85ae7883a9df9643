//! A run's TensorBoard events ([`crate::tensorboard`] has the format), written from its durable
//! records: an epoch's values once its checkpoint (and so its `metrics.csv` row) is written,
//! the end-of-run values once `summary.json` is, and never a value the run's event folder
//! holds already. A resumed run so continues in a new file with exactly the steps the folder
//! lacks (an epoch checkpointed just before a kill, whose events were never written, comes
//! first), and [`backfill`] gives a run trained before event files existed the same files from
//! its `metrics.csv` and `summary.json`. Nothing here fails a run: every error is a warning.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::checkpoint;
use super::structure::replay;
use crate::clock::unix_seconds;
use crate::config::RunConfig;
use crate::run_dir::{
    lock_idle, read_metrics, read_status, EpochRecord, Plan, RunStatus, CHECKPOINT_FILE,
    CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, TENSORBOARD_DIR,
};
use crate::tensorboard::hparams::{
    session_end, session_start, HParamValue, SessionStatus, PLUGIN_NAME, SESSION_END_TAG,
    SESSION_START_TAG,
};
use crate::tensorboard::{epoch_values, final_values, EpochStructure, EventFolder, Grid, Value};

/// The event folder of one run dir, as this process writes it.
#[derive(Debug)]
pub struct RunEvents {
    root: PathBuf,
    folder: EventFolder,
    /// The pruning schedule per epoch (entry `e - 1` is epoch `e`); `None` when the
    /// iterations per epoch are unknown (an old run dir with neither summary nor checkpoint).
    structure: Option<Vec<EpochStructure>>,
    warnings: Vec<String>,
    /// Values this process wrote.
    written: usize,
}

impl RunEvents {
    /// The event folder of the run dir `root` training `cfg`, scanned, with the pruning
    /// schedule replayed at `iterations_per_epoch`.
    pub fn open(root: &Path, cfg: &RunConfig, iterations_per_epoch: Option<usize>) -> Self {
        let (folder, mut warnings) = EventFolder::scan(&root.join(TENSORBOARD_DIR));
        let structure = iterations_per_epoch.and_then(|n| match replay(cfg, n) {
            Ok(s) => Some(s),
            Err(e) => {
                warnings.push(format!(
                    "replaying the pruning schedule: {e}; the live fractions are left out"
                ));
                None
            }
        });
        Self {
            root: root.to_path_buf(),
            folder,
            structure,
            warnings,
            written: 0,
        }
    }

    /// The warnings since the last call (each one line).
    pub fn warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    fn write(&mut self, wall_time: f64, step: i64, values: Vec<Value>) {
        match self.folder.write(wall_time, step, values) {
            Ok(n) => self.written += n,
            Err(e) => self.warnings.push(format!(
                "{e}; the run goes on without its event file (once the folder can be written, \
                 `ablate train --resume --out {}` writes the steps it lacks, even after the \
                 run is done; so does `ablate report` for a run of an experiment)",
                self.root.display()
            )),
        }
    }

    /// The run's HParams session, when it is a run of a planned experiment: its axis values
    /// (one row per run dir).
    pub fn session_start(&mut self, start_time: f64) {
        let Some(hparams) = planned(&self.root) else {
            return;
        };
        let uri = self.root.display().to_string();
        let content = session_start(&hparams, &uri, start_time);
        let value = Value::plugin(SESSION_START_TAG, PLUGIN_NAME, content);
        self.write(start_time, 0, vec![value]);
    }

    /// The values of epoch `record.epoch`.
    pub fn epoch(&mut self, record: &EpochRecord, wall_time: f64) {
        let structure = self
            .structure
            .as_ref()
            .and_then(|s| s.get(record.epoch.checked_sub(1)?))
            .cloned()
            .unwrap_or_default();
        self.write(
            wall_time,
            record.epoch as i64,
            epoch_values(record, &structure),
        );
    }

    /// Every one of `records` (epochs 1, 2, ...) the folder lacks, at wall times counted from
    /// `start` (the run's start) by the epochs' training and evaluation seconds.
    pub fn epochs(&mut self, records: &[EpochRecord], start: f64) {
        let mut t = start;
        for r in records {
            t += r.epoch_seconds + r.eval_seconds;
            self.epoch(r, t);
        }
    }

    /// The end-of-run values of the `summary` (a `summary.json`) at step `epochs`, and the end
    /// of the HParams session.
    pub fn finish(&mut self, summary: &serde_json::Value, epochs: usize, wall_time: f64) {
        self.write(wall_time, epochs as i64, final_values(summary));
        self.end(SessionStatus::Success, wall_time);
    }

    /// The end of the HParams session (a diverged run is a failure).
    pub fn end(&mut self, status: SessionStatus, wall_time: f64) {
        if planned(&self.root).is_none() {
            return;
        }
        let value = Value::plugin(SESSION_END_TAG, PLUGIN_NAME, session_end(status, wall_time));
        self.write(wall_time, 0, vec![value]);
    }
}

/// The hyperparameters of the run dir `root` as its experiment's plan (`plan.json` beside it)
/// gives them; `None` for a run dir no plan lists.
fn planned(root: &Path) -> Option<Vec<(String, HParamValue)>> {
    let id = root.file_name()?.to_str()?;
    let plan = Plan::read(root.parent()?).ok()?;
    let entry = plan.runs.iter().find(|r| r.id == id)?;
    Some(Grid::of(&plan).values(entry))
}

/// What [`backfill`] did in a run dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backfilled {
    /// A live process works in it (and writes its own events).
    Busy,
    /// No epoch done yet: nothing to write.
    Empty,
    /// Wrote this many values (0: the folder held them all).
    Wrote(usize),
}

/// Writes the event files of the run dir `root` from its `metrics.csv` (the epochs its
/// checkpoint holds, or all of a done run) and `summary.json`: what its event folder lacks, in
/// a new file, exactly as training would have written it (wall times estimated from the
/// run's start and its epochs' seconds). Returns what it did and its warnings; an error means
/// the run dir's own files could not be read.
pub fn backfill(root: &Path) -> anyhow::Result<(Backfilled, Vec<String>)> {
    let Some(_lock) = lock_idle(root)? else {
        return Ok((Backfilled::Busy, Vec::new()));
    };
    let config = root.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&config)
        .with_context(|| format!("reading {}", config.display()))?;
    let cfg = RunConfig::from_toml(&config, &text)?;
    let status = read_status(root);
    let state = status.as_ref().map(|s| s.status);
    let summary_path = root.join(SUMMARY_FILE);
    let summary: Option<serde_json::Value> = match state {
        Some(RunStatus::Done) => match std::fs::read_to_string(&summary_path) {
            Ok(text) => Some(
                serde_json::from_str(&text)
                    .with_context(|| format!("{}: not JSON", summary_path.display()))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", summary_path.display())),
        },
        _ => None,
    };
    let metrics = root.join(METRICS_FILE);
    let mut records = if metrics.is_file() {
        read_metrics(&metrics)?
    } else {
        Vec::new()
    };
    if let Some(i) = records
        .iter()
        .enumerate()
        .position(|(i, r)| r.epoch != i + 1)
    {
        anyhow::bail!(
            "{}: row {} is not epoch {}",
            metrics.display(),
            i + 2,
            i + 1
        );
    }
    // Only epochs that are durable: all of a done run, else those its checkpoint holds (a
    // row written just before a kill is trained again by the resume).
    let saved = checkpoint::progress_of(&root.join(CHECKPOINT_FILE));
    if summary.is_none() {
        records.truncate(saved.as_ref().map_or(0, |p| p.epochs_done));
    }
    if records.is_empty() {
        return Ok((Backfilled::Empty, Vec::new()));
    }
    let from_summary = summary
        .as_ref()
        .and_then(|s| s.get("train_images")?.as_u64())
        .map(|n| (n as usize).div_ceil(cfg.train.batch));
    let from_checkpoint = saved
        .filter(|p| p.epochs_done > 0)
        .map(|p| p.iterations_done as usize / p.epochs_done);
    let mut events = RunEvents::open(root, &cfg, from_summary.or(from_checkpoint));
    let start = status
        .as_ref()
        .and_then(|s| s.started)
        .unwrap_or_else(unix_seconds);
    events.session_start(start);
    events.epochs(&records, start);
    let end = status
        .as_ref()
        .and_then(|s| s.finished)
        .unwrap_or_else(unix_seconds);
    if let Some(summary) = &summary {
        events.finish(summary, records.len(), end);
    } else if state == Some(RunStatus::Diverged) {
        events.end(SessionStatus::Failure, end);
    }
    let warnings = events.warnings();
    Ok((Backfilled::Wrote(events.written), warnings))
}
