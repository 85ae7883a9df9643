//! A run directory: the config snapshot, status, log, metrics, checkpoint, model and summary of
//! one run, side by side. Every file is written atomically except the append-only log.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::config::RunConfig;
use crate::io::write_atomic;

pub const CONFIG_FILE: &str = "config.toml";
pub const STATUS_FILE: &str = "status.json";
pub const LOG_FILE: &str = "train.log";
pub const METRICS_FILE: &str = "metrics.csv";
pub const SUMMARY_FILE: &str = "summary.json";
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
pub const MODEL_FILE: &str = "model.safetensors";

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    Running,
    Done,
    /// Stopped by an error; the last checkpoint is intact and `--resume` retries.
    Failed,
    /// Stopped because the loss became NaN or infinite.
    Diverged,
}

/// `status.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusRecord {
    pub status: RunStatus,
    pub epochs_done: usize,
    pub epochs: usize,
    /// What stopped a failed or diverged run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// Unix seconds of this update.
    pub updated: u64,
}

/// Why a run directory cannot be used for a run.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    #[error(
        "{}: holds a different run ({}); choose another --out",
        dir.display(),
        differences.iter().map(|(k, a, b)| format!("{k} is {a} there, {b} here")).collect::<Vec<_>>().join("; ")
    )]
    Different {
        dir: PathBuf,
        differences: Vec<(String, String, String)>,
    },
    #[error("{}: already holds this run ({state}); pass --resume to continue it, or choose another --out", dir.display())]
    Exists { dir: PathBuf, state: String },
}

/// An open run directory.
#[derive(Debug)]
pub struct RunDir {
    root: PathBuf,
    log: std::fs::File,
    started: Instant,
}

impl RunDir {
    /// Opens `root` for `cfg`: creates it and the config snapshot for a new run; for an existing
    /// run of the same config, needs `resume`. A directory holding a different run is refused,
    /// and nothing in it is touched.
    pub fn open(root: &Path, cfg: &RunConfig, resume: bool) -> anyhow::Result<Self> {
        let config = root.join(CONFIG_FILE);
        if config.is_file() {
            let text = std::fs::read_to_string(&config)
                .with_context(|| format!("reading {}", config.display()))?;
            let theirs = RunConfig::from_toml(&config, &text)?;
            let differences = theirs.differences(cfg);
            if !differences.is_empty() {
                return Err(RunDirError::Different {
                    dir: root.to_path_buf(),
                    differences,
                }
                .into());
            }
            if !resume {
                let state = match read_status(root) {
                    Some(s) => format!(
                        "{:?}, {} of {} epochs done",
                        s.status, s.epochs_done, s.epochs
                    )
                    .to_lowercase(),
                    None => "started".into(),
                };
                return Err(RunDirError::Exists {
                    dir: root.to_path_buf(),
                    state,
                }
                .into());
            }
        } else {
            std::fs::create_dir_all(root)
                .with_context(|| format!("creating run dir {}", root.display()))?;
            write_atomic(&config, cfg.to_toml().as_bytes())?;
        }
        let log_path = root.join(LOG_FILE);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        Ok(Self {
            root: root.to_path_buf(),
            log,
            started: Instant::now(),
        })
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.root.join(file)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Appends a line to the log, prefixed with Unix seconds and this session's elapsed time.
    pub fn log(&mut self, line: &str) {
        let stamp = format!(
            "[{} +{:.1}s]",
            unix_now(),
            self.started.elapsed().as_secs_f64()
        );
        // The log is a convenience; failing to write it must not stop training.
        let _ = writeln!(self.log, "{stamp} {line}");
    }

    pub fn write_status(&self, status: &StatusRecord) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(status)?;
        write_atomic(&self.path(STATUS_FILE), text.as_bytes())
    }
}

/// The `status.json` of a run dir, if it has a readable one.
pub fn read_status(root: &Path) -> Option<StatusRecord> {
    let text = std::fs::read_to_string(root.join(STATUS_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
