//! What an experiment will cost before it runs: each run's wall time on the slots `ablate run`
//! would use, from a short measurement of its model on this machine (the same one `ablate
//! bench` makes: a few training steps in every phase of the pruning schedule, weighted by the
//! share of a run each phase lasts), cached per model, batch, threads and CPU.
//!
//! A run's estimate is `epochs * (train images / training speed + test images / evaluation
//! speed)`, with evaluation taken as one forward pass, a third of a training step's work. A CPU
//! slot with fewer threads than this process is assumed to train proportionally slower. GPU
//! slots are not measured here: their runs have no estimate.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{measure, BenchConfig};
use crate::config::RunConfig;
use crate::io::write_atomic;

/// Overrides where measured speeds are cached (default `$XDG_CACHE_HOME/ablate`, else
/// `~/.cache/ablate`).
pub const CACHE_ENV: &str = "ABLATE_CACHE_DIR";

/// The cache file inside the cache dir.
const CACHE_FILE: &str = "throughput.json";

/// Timed training steps per schedule phase of an estimate's measurement (after one warm-up):
/// a model takes 2 steps per phase, 5-20 s on 2 cores at batch 64.
const STEPS: usize = 1;

/// A model's measured speed on this machine, whole-schedule weighted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// Training images per second over a whole run.
    pub train_images_per_s: f64,
    /// Threads the measurement ran on.
    pub threads: usize,
}

impl Throughput {
    /// Seconds the remaining `epochs` of `cfg` take on `threads` threads.
    pub fn seconds(&self, cfg: &RunConfig, epochs: usize, threads: usize) -> f64 {
        let (train, test) = crate::data::sizes(&cfg.data);
        let speed = self.train_images_per_s * threads as f64 / self.threads.max(1) as f64;
        // Evaluation is a forward pass: a third of a training step (forward, input gradient,
        // weight gradient).
        epochs as f64 * (train as f64 + test as f64 / 3.0) / speed
    }
}

/// Measured speeds by key, read from and written to the cache file.
pub struct ThroughputCache {
    file: Option<PathBuf>,
    entries: BTreeMap<String, Throughput>,
    /// How many speeds were measured now (not found in the cache).
    pub measured: usize,
}

impl ThroughputCache {
    /// The cache in the default place (none when no home or cache dir is known).
    pub fn open() -> Self {
        let dir = std::env::var_os(CACHE_ENV)
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("ablate")))
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ablate")));
        Self::at(dir.map(|d| d.join(CACHE_FILE)))
    }

    /// The cache in `file` (`None`: in memory only). A file that cannot be read as a cache
    /// counts as empty and is replaced on the next write.
    pub fn at(file: Option<PathBuf>) -> Self {
        let entries = file
            .as_deref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        Self {
            file,
            entries,
            measured: 0,
        }
    }

    /// The throughput of `cfg`'s model at its batch on this CPU with this process's threads:
    /// from the cache, else measured now (seconds to a minute) and cached.
    pub fn get(&mut self, cfg: &RunConfig) -> anyhow::Result<Throughput> {
        let key = key(cfg);
        if let Some(t) = self.entries.get(&key) {
            return Ok(*t);
        }
        eprintln!(
            "measuring the training speed of {} at batch {} on this machine (once; cached) ...",
            cfg.model_name, cfg.train.batch
        );
        let row = measure(
            &cfg.model_name,
            &cfg.model,
            &BenchConfig {
                batch: cfg.train.batch,
                steps: STEPS,
                warmup: 1,
                progress: None,
                latency_runs: 1,
            },
        )?;
        let t = Throughput {
            train_images_per_s: row.train_images_per_s,
            threads: row.threads,
        };
        self.entries.insert(key, t);
        self.measured += 1;
        self.save();
        Ok(t)
    }

    /// Writes the cache; a cache that cannot be written is only slower next time.
    fn save(&self) {
        let Some(file) = &self.file else { return };
        let write = || -> anyhow::Result<()> {
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            write_atomic(
                file,
                serde_json::to_string_pretty(&self.entries)?.as_bytes(),
            )
        };
        if let Err(e) = write() {
            eprintln!("note: speeds not cached ({e:#})");
        }
    }

    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }
}

/// What a speed depends on: the model, the batch, the CPU, its threads, the kernels and this
/// build.
fn key(cfg: &RunConfig) -> String {
    format!(
        "{} | batch {} | {} | {} threads | {} kernels | ablate {}",
        serde_json::to_string(&cfg.model).unwrap_or_default(),
        cfg.train.batch,
        cpu_model(),
        rayon::current_num_threads(),
        crate::kernels::active().name(),
        env!("CARGO_PKG_VERSION"),
    )
}

/// The CPU's model name from /proc/cpuinfo (`unknown CPU` elsewhere).
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// When each run finishes if `seconds` (in launch order) go onto `slots` slots as the local
/// scheduler does: each run on the slot that frees first. Returns the whole experiment's wall
/// time.
pub fn makespan(seconds: &[f64], slots: usize) -> f64 {
    let mut free_at = vec![0.0f64; slots.max(1)];
    for &s in seconds {
        let first = free_at
            .iter_mut()
            .min_by(|a, b| a.total_cmp(b))
            .expect("at least one slot");
        *first += s;
    }
    free_at.into_iter().fold(0.0, f64::max)
}

/// `3 min`, `2.4 h`, `5.1 days`: a duration as a person reads an estimate.
pub fn human(seconds: f64) -> String {
    match seconds {
        s if s < 90.0 => format!("{s:.0} s"),
        s if s < 5400.0 => format!("{:.0} min", s / 60.0),
        s if s < 2.0 * 86400.0 => format!("{:.1} h", s / 3600.0),
        s => format!("{:.1} days", s / 86400.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makespan_fills_the_slot_that_frees_first() {
        assert_eq!(makespan(&[], 2), 0.0);
        assert_eq!(makespan(&[10.0, 10.0, 10.0], 1), 30.0);
        // 10 and 4 start together; 3 and 3 follow on the slot of 4.
        assert_eq!(makespan(&[10.0, 4.0, 3.0, 3.0], 2), 10.0);
        assert_eq!(makespan(&[10.0, 4.0, 3.0, 3.0, 5.0], 2), 15.0);
    }

    #[test]
    fn run_seconds_count_training_evaluation_and_threads() {
        use crate::config::{DataConfig, DatasetKind, ModelSpec, TrainConfig};
        let cfg = RunConfig {
            model_name: "condensenet-86".into(),
            model: ModelSpec::default(),
            train: TrainConfig::default(),
            data: DataConfig {
                dataset: DatasetKind::Synthetic,
                train_size: Some(300),
                test_size: Some(300),
            },
        };
        let t = Throughput {
            train_images_per_s: 100.0,
            threads: 2,
        };
        // 2 epochs of (300 / 100 + 100 / 100) s.
        assert!((t.seconds(&cfg, 2, 2) - 8.0).abs() < 1e-12);
        // One thread of the two: half the speed.
        assert!((t.seconds(&cfg, 2, 1) - 16.0).abs() < 1e-12);
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(42.0), "42 s");
        assert_eq!(human(600.0), "10 min");
        assert_eq!(human(3.0 * 3600.0), "3.0 h");
        assert_eq!(human(7.0 * 86400.0), "7.0 days");
    }

    #[test]
    fn an_unreadable_cache_is_empty() {
        let dir = std::env::temp_dir().join(format!("ablate-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(CACHE_FILE);
        std::fs::write(&file, "not json").unwrap();
        assert!(ThroughputCache::at(Some(file)).entries.is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
