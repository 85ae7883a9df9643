//! What an experiment will cost before it runs, answered at once: a time model priced from a
//! per-machine calibration of the kernels ([`super::calibrate`], a few seconds once, cached)
//! and each model's per-stage work ([`Network::step_work`], read off the layers in every
//! phase of the pruning schedule; milliseconds, nothing trained).
//!
//! A run's estimate is `epochs * (train images + test images / 3) * seconds per image`, where
//! the seconds per image weight each schedule phase by the share of the run it lasts, and
//! evaluation counts as one forward pass, a third of a training step. The same model gives
//! the split of a CPU into slots that finishes an experiment first ([`best_split`]). GPU slots
//! are not priced.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use anyhow::Context;
use candle_core::Device;

use super::calibrate::{reference_work, Calibration, Rates, Scale};
use super::cpu_load::OtherLoad;
use crate::config::{ModelSpec, RunConfig};
use crate::io::write_atomic;
use crate::lock::LockFile;
use crate::model::{Network, StepWork};

/// Overrides where calibrations are cached (default `$XDG_CACHE_HOME/ablate`, else
/// `~/.cache/ablate`).
pub const CACHE_ENV: &str = "ABLATE_CACHE_DIR";

/// The cache file inside the cache dir.
const CACHE_FILE: &str = "calibration.json";

/// Other processes' CPU use during a calibration above which it is not cached, in cores.
const MAX_OTHER_LOAD: f64 = 0.25;

/// The work of a run's training step in each phase of its pruning schedule.
#[derive(Debug, Clone)]
pub struct RunProfile {
    /// `(share of the run, work per image)` of each phase, in order.
    phases: Vec<(f64, StepWork)>,
}

impl RunProfile {
    /// The profile of `spec` (seeded weights: the schedule's structure does not depend on
    /// them); `None` where a layer has no fused CPU form (the time model cannot price it).
    pub fn of(spec: &ModelSpec) -> anyhow::Result<Option<Self>> {
        crate::config::check_fits(spec, 0)?;
        let mut net = Network::seeded(spec, 0, &Device::Cpu).context("building the model")?;
        let mut phases = Vec::new();
        for (start, end) in net.schedule_phases() {
            net.advance_schedule((start + end) / 2.0)?;
            match net.step_work()? {
                Some(work) => phases.push((end - start, work)),
                None => return Ok(None),
            }
        }
        Ok(Some(Self { phases }))
    }

    /// Seconds of one training image in each phase at `rates`, with the phase's share.
    fn phase_seconds<'a>(&'a self, rates: &'a Rates) -> impl Iterator<Item = (f64, f64)> + 'a {
        self.phases.iter().map(|(share, w)| {
            let (elements, macs) = rates.step_seconds(w);
            (*share, elements + macs)
        })
    }

    /// Seconds of one training image over a whole run at `rates`.
    pub fn seconds_per_image(&self, rates: &Rates) -> f64 {
        self.phase_seconds(rates).map(|(share, s)| share * s).sum()
    }
}

/// The time model of this machine: its calibration, the scale its reference networks fix,
/// and the coefficients solved for each setting asked for.
pub struct CostModel {
    calibration: Calibration,
    /// Cores of the machine priced: the calibrated one's, or a larger one of its kind.
    cores: usize,
    scale: Scale,
    rates: RefCell<BTreeMap<(usize, usize), Rc<Rates>>>,
}

impl CostModel {
    pub fn new(calibration: Calibration) -> anyhow::Result<Self> {
        // The scale is fitted on the rates the model prices a run on every core with: the
        // `all` probes as [`Calibration::at`] reads them (its scaling law, clamped), so that
        // the references come out at their measured times.
        let n = calibration.cores;
        let all = Rates::solve(&calibration.at(n, n, n))?;
        let scale = Scale::fit(&all, &reference_work()?, &calibration.references);
        Ok(Self {
            cores: calibration.cores,
            calibration,
            scale,
            rates: Default::default(),
        })
    }

    /// The same model for a machine of this kind with `cores` cores (extrapolated: the
    /// threads' serial share and the sharing per core measured here).
    pub fn with_cores(mut self, cores: usize) -> Self {
        self.cores = cores.max(1);
        self.rates = Default::default();
        self
    }

    /// Logical CPUs of the machine priced.
    pub fn cores(&self) -> usize {
        self.cores
    }

    /// The coefficients of a run on `threads` threads while `busy` cores work.
    fn rates(&self, threads: usize, busy: usize) -> anyhow::Result<Rc<Rates>> {
        if let Some(r) = self.rates.borrow().get(&(threads, busy)) {
            return Ok(r.clone());
        }
        let raw = Rates::solve(&self.calibration.at(threads, busy, self.cores))?;
        let r = Rc::new(raw.scaled(self.scale));
        self.rates.borrow_mut().insert((threads, busy), r.clone());
        Ok(r)
    }

    /// Training images per second of `profile` over a whole run, on `threads` threads while
    /// `busy` cores of the machine work (its own included).
    pub fn images_per_s(
        &self,
        profile: &RunProfile,
        threads: usize,
        busy: usize,
    ) -> anyhow::Result<f64> {
        let rates = self.rates(threads, busy)?;
        Ok(1.0 / profile.seconds_per_image(&rates))
    }

    /// Training images per second of each phase of `profile` (as
    /// [`Self::images_per_s`]).
    pub fn phase_images_per_s(
        &self,
        profile: &RunProfile,
        threads: usize,
        busy: usize,
    ) -> anyhow::Result<Vec<f64>> {
        let rates = self.rates(threads, busy)?;
        Ok(profile
            .phase_seconds(&rates)
            .map(|(_, s)| 1.0 / s)
            .collect())
    }

    /// Seconds of `epochs` epochs of `cfg` (its model's `profile`) on `threads` threads while
    /// `busy` cores work.
    pub fn run_seconds(
        &self,
        cfg: &RunConfig,
        profile: &RunProfile,
        epochs: usize,
        threads: usize,
        busy: usize,
    ) -> anyhow::Result<f64> {
        let per_image = 1.0 / self.images_per_s(profile, threads, busy)?;
        Ok(seconds_at(cfg, epochs, per_image))
    }
}

/// Seconds of `epochs` of `cfg` at `per_image` seconds a training image. Evaluation is a
/// forward pass: a third of a training step (forward, input gradient, weight gradient).
fn seconds_at(cfg: &RunConfig, epochs: usize, per_image: f64) -> f64 {
    let (train, test) = crate::data::sizes(&cfg.data);
    epochs as f64 * (train as f64 + test as f64 / 3.0) * per_image
}

/// One run still to train, as the split and the makespan see it.
pub struct PendingRun<'a> {
    pub config: &'a RunConfig,
    pub profile: &'a RunProfile,
    pub epochs: usize,
}

/// A split of the CPU into slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuSplit {
    pub slots: usize,
    pub threads: usize,
}

/// Each run's seconds (launch order) when `split` runs them.
pub fn split_seconds(
    model: &CostModel,
    runs: &[PendingRun],
    split: CpuSplit,
) -> anyhow::Result<Vec<f64>> {
    let busy = split.slots * split.threads;
    // One price per distinct model (runs of one model share its profile): a grid of 10^4
    // seeds is priced once, not 10^4 times, per split.
    let mut per_image: std::collections::HashMap<*const RunProfile, f64> =
        std::collections::HashMap::new();
    runs.iter()
        .map(|r| {
            let key: *const RunProfile = r.profile;
            let p = match per_image.get(&key) {
                Some(&p) => p,
                None => {
                    let p = 1.0 / model.images_per_s(r.profile, split.threads, busy)?;
                    per_image.insert(key, p);
                    p
                }
            };
            Ok(seconds_at(r.config, r.epochs, p))
        })
        .collect()
}

/// The split of `cores` into `slots x threads` (threads = cores / slots, at most one slot per
/// run to train, and no more slots than `memory` bytes hold at each run's memory floor) that
/// finishes `runs` first, as the scheduler runs them; ties go to fewer slots. With more runs
/// than slots this is the split of the most images per second for the whole machine.
pub fn best_split(
    model: &CostModel,
    runs: &[PendingRun],
    cores: usize,
    memory: Option<u128>,
) -> anyhow::Result<(CpuSplit, f64)> {
    let fit = memory.map_or(usize::MAX, |m| slots_that_fit(runs, m));
    let most = cores.max(1).min(runs.len().max(1)).min(fit);
    let mut best: Option<(CpuSplit, f64)> = None;
    for slots in candidate_slots(cores, most) {
        let split = CpuSplit {
            slots,
            threads: cores.max(1) / slots,
        };
        let time = makespan(&split_seconds(model, runs, split)?, slots);
        // Prefer fewer slots unless more finish at least 1% sooner.
        if best.is_none_or(|(_, t)| time < 0.99 * t) {
            best = Some((split, time));
        }
    }
    Ok(best.unwrap_or((
        CpuSplit {
            slots: 1,
            threads: cores.max(1),
        },
        0.0,
    )))
}

/// Bytes of memory one slot needs for `runs`: the largest memory floor of a training step
/// among them.
pub fn slot_memory(runs: &[PendingRun]) -> u128 {
    runs.iter()
        .map(|r| {
            crate::config::MemoryFloor::of(&r.config.model, crate::data::step_images(&r.config))
                .total()
        })
        .max()
        .unwrap_or(0)
        .max(1)
}

/// How many slots of `runs` fit in `memory` bytes at once (at least one).
pub fn slots_that_fit(runs: &[PendingRun], memory: u128) -> usize {
    (memory / slot_memory(runs)).max(1) as usize
}

/// Every slot count up to [`ALL_SLOTS_UP_TO`], and above it, for each thread count, the most
/// slots that thread count allows (more slots of the same threads never finish later): about
/// `64 + 2 sqrt(cores)` candidates, so pricing a split takes bounded time at any core count
/// (every count of 4096 cores for 10^5 runs took minutes).
fn candidate_slots(cores: usize, most: usize) -> Vec<usize> {
    let cores = cores.max(1);
    let mut slots: Vec<usize> = (1..=most.min(ALL_SLOTS_UP_TO)).collect();
    let mut s = ALL_SLOTS_UP_TO + 1;
    while s <= most {
        // The largest slot count with the same threads as `s`, within `most`.
        let threads = cores / s;
        let last = (cores / threads.max(1)).min(most);
        slots.push(last);
        s = last + 1;
    }
    slots
}

/// Slot counts up to which every count is priced.
const ALL_SLOTS_UP_TO: usize = 64;

/// Where a cost model came from, for the plan's last line.
#[derive(Debug, Clone, PartialEq)]
pub enum Provenance {
    /// Read from the cache file.
    Cached(PathBuf),
    /// Measured now and written to the cache file.
    Measured { seconds: f64, file: PathBuf },
    /// Measured now and not cached, for the reason given.
    NotCached { seconds: f64, reason: String },
}

impl std::fmt::Display for Provenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cached(file) => write!(f, "cached in {}", file.display()),
            Self::Measured { seconds, file } => {
                write!(
                    f,
                    "measured now in {seconds:.1} s, cached in {}",
                    file.display()
                )
            }
            Self::NotCached { seconds, reason } => {
                write!(f, "measured now in {seconds:.1} s, not cached: {reason}")
            }
        }
    }
}

/// Calibrations by machine, read from and written to the cache file under a lock.
pub struct CalibrationCache {
    /// The cache file; `None` when no cache dir is known.
    file: Option<PathBuf>,
}

impl CalibrationCache {
    /// The cache in the default place.
    pub fn open() -> Self {
        let dir = std::env::var_os(CACHE_ENV)
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("ablate")))
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ablate")));
        Self::at(dir.map(|d| d.join(CACHE_FILE)))
    }

    /// The cache in `file` (`None`: never cached).
    pub fn at(file: Option<PathBuf>) -> Self {
        Self { file }
    }

    /// This machine's cost model at `cores` threads: the cached calibration when a valid one
    /// is there, else measured now (a few seconds) and cached unless other processes loaded
    /// the machine meanwhile. Concurrent callers take turns: the second finds the first's.
    pub fn model(&self, cores: usize) -> anyhow::Result<(CostModel, Provenance)> {
        let kernels = crate::kernels::active();
        if kernels != crate::kernels::Kernels::Fast {
            anyhow::bail!(
                "the time model prices the fast CPU kernels, and this process runs the {} ones \
                 ({})",
                kernels.name(),
                crate::kernels::KERNELS_ENV
            );
        }
        let key = key(cores);
        let Some(file) = &self.file else {
            let (cal, seconds, _) = measure(cores)?;
            let reason = "no cache dir (set ABLATE_CACHE_DIR or HOME)".to_string();
            return Ok((
                CostModel::new(cal)?,
                Provenance::NotCached { seconds, reason },
            ));
        };
        let dir = file.parent().unwrap_or(Path::new("."));
        // The lock serialises the read, the measurement and the write.
        let lock = std::fs::create_dir_all(dir)
            .and_then(|()| LockFile::acquire(&file.with_extension("lock")));
        let lock = match lock {
            Ok(lock) => lock,
            Err(e) => {
                // A cache that cannot be locked (a read-only dir) is still read.
                if let Some(cal) = read_entries(file)
                    .remove(&key)
                    .filter(|c| c.is_valid() && c.cores == cores)
                {
                    return Ok((CostModel::new(cal)?, Provenance::Cached(file.clone())));
                }
                let (cal, seconds, _) = measure(cores)?;
                let reason = format!("cannot use the cache dir {}: {e}", dir.display());
                return Ok((
                    CostModel::new(cal)?,
                    Provenance::NotCached { seconds, reason },
                ));
            }
        };
        let mut entries = read_entries(file);
        if let Some(cal) = entries
            .get(&key)
            .filter(|c| c.is_valid() && c.cores == cores)
        {
            return Ok((
                CostModel::new(cal.clone())?,
                Provenance::Cached(file.clone()),
            ));
        }
        let (cal, seconds, load) = measure(cores)?;
        let provenance = if load > MAX_OTHER_LOAD {
            Provenance::NotCached {
                seconds,
                reason: format!(
                    "other processes used {load:.1} cores meanwhile, so it may be slow; it \
                     is measured again next time"
                ),
            }
        } else {
            entries.insert(key, cal.clone());
            let text = serde_json::to_string_pretty(&entries)?;
            match write_atomic(file, text.as_bytes()) {
                Ok(()) => Provenance::Measured {
                    seconds,
                    file: file.clone(),
                },
                Err(e) => Provenance::NotCached {
                    seconds,
                    reason: format!("{e:#}"),
                },
            }
        };
        drop(lock);
        Ok((CostModel::new(cal)?, provenance))
    }

    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }
}

/// Bytes a calibration cache may have; a file larger than this is not one.
const CACHE_CAP: u64 = 1 << 20;

/// The cache's entries; an unreadable file or entry counts as missing (and is replaced). Only
/// a regular file of at most [`CACHE_CAP`] bytes is read: a FIFO or a device at the cache's
/// path is never opened (a FIFO hung `plan` while it held the cache lock).
fn read_entries(file: &Path) -> BTreeMap<String, Calibration> {
    let Some(text) = crate::io::read_small_text(file, CACHE_CAP) else {
        return BTreeMap::new();
    };
    let Ok(raw) = serde_json::from_str::<BTreeMap<String, serde_json::Value>>(&text) else {
        return BTreeMap::new();
    };
    raw.into_iter()
        .filter_map(|(k, v)| serde_json::from_value(v).ok().map(|c| (k, c)))
        .collect()
}

/// Calibrates at `cores` threads: the calibration, its seconds, and the cores other processes
/// used meanwhile.
fn measure(cores: usize) -> anyhow::Result<(Calibration, f64, f64)> {
    eprintln!(
        "calibrating this machine's kernels for the time model (a few seconds; cached for next \
         time unless other processes load the machine meanwhile) ..."
    );
    let load = OtherLoad::start();
    let start = Instant::now();
    let cal = Calibration::measure(cores).context("calibrating the kernels")?;
    let seconds = start.elapsed().as_secs_f64();
    let other = load.cores();
    if !cal.is_valid() {
        anyhow::bail!("the kernel calibration gave implausible times: {cal:?}");
    }
    Ok((cal, seconds, other))
}

/// What a calibration depends on: the CPU, the cores it used, the kernels and this build.
fn key(cores: usize) -> String {
    format!(
        "{} | {cores} threads | {} kernels | ablate {}",
        cpu_model(),
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
    /// A slot's free time, ordered so that the heap's top is the earliest.
    #[derive(PartialEq)]
    struct FreeAt(f64);
    impl Eq for FreeAt {}
    impl PartialOrd for FreeAt {
        fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(other))
        }
    }
    impl Ord for FreeAt {
        fn cmp(&self, other: &Self) -> std::cmp::Ordering {
            other.0.total_cmp(&self.0)
        }
    }
    // The slot that frees first takes the next run: a heap, so 10^5 runs on 4096 slots take
    // 10^5 log 4096 steps, not 10^5 x 4096.
    let mut free_at: std::collections::BinaryHeap<FreeAt> =
        (0..slots.max(1)).map(|_| FreeAt(0.0)).collect();
    for &s in seconds {
        if let Some(mut first) = free_at.peek_mut() {
            first.0 += s;
        }
    }
    free_at.into_iter().map(|f| f.0).fold(0.0, f64::max)
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

    /// Every count up to 64 slots, then one per thread count: bounded at any core count (was:
    /// every count, so a plan of 10^5 runs at `--cores 4096` priced 4096 splits of 10^5 runs
    /// on up to 4096 slots each). Each thread count keeps its largest slot count.
    #[test]
    fn the_splits_priced_are_few_at_any_core_count() {
        assert_eq!(candidate_slots(2, 2), [1, 2]);
        assert_eq!(candidate_slots(64, 64), (1..=64).collect::<Vec<_>>());
        let many = candidate_slots(4096, 4096);
        assert!(many.len() <= 64 + 2 * 64, "{}", many.len());
        assert_eq!(many.last(), Some(&4096));
        assert!(many.windows(2).all(|w| w[0] < w[1]));
        for s in 65..=4096 {
            let t = 4096 / s;
            let largest = 4096 / t;
            assert!(
                many.contains(&largest),
                "threads {t}: {largest} slots missing"
            );
        }
        // Capped by the runs (or memory): never more slots than `most`.
        assert!(candidate_slots(4096, 100).iter().all(|&s| s <= 100));
        assert!(candidate_slots(4096, 100).contains(&100));
    }

    impl CostModel {
        fn new_ok(c: Calibration) -> Self {
            Self::new(c).unwrap()
        }
    }

    #[test]
    fn makespan_fills_the_slot_that_frees_first() {
        assert_eq!(makespan(&[], 2), 0.0);
        assert_eq!(makespan(&[1.0; 10_000], 4096), 3.0);
        assert_eq!(makespan(&[10.0, 10.0, 10.0], 1), 30.0);
        // 10 and 4 start together; 3 and 3 follow on the slot of 4.
        assert_eq!(makespan(&[10.0, 4.0, 3.0, 3.0], 2), 10.0);
        assert_eq!(makespan(&[10.0, 4.0, 3.0, 3.0, 5.0], 2), 15.0);
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(42.0), "42 s");
        assert_eq!(human(600.0), "10 min");
        assert_eq!(human(3.0 * 3600.0), "3.0 h");
        assert_eq!(human(7.0 * 86400.0), "7.0 days");
    }

    /// A calibration with every probe at `one`, `all` and `shared` seconds, and references
    /// that take what the probes predict (scale 1).
    fn calibration(cores: usize, one: f64, all: f64, shared: f64) -> Calibration {
        let probes = |t: f64| vec![t; crate::bench::calibrate::PROBES];
        let rates = Rates::solve(&probes(all)).unwrap();
        let references = reference_work()
            .unwrap()
            .iter()
            .map(|w| {
                let (e, m) = rates.step_seconds(w);
                e + m
            })
            .collect();
        Calibration {
            cores,
            one: probes(one),
            all: probes(all),
            shared: probes(shared),
            references,
        }
    }

    fn config(model: &str) -> RunConfig {
        use crate::config::{DataConfig, DatasetKind, ModelSource, TrainConfig};
        let sets = vec!["stages=[1,1,1]".to_string()];
        RunConfig {
            model_name: model.into(),
            model: ModelSource::parse(model).resolve(&sets).unwrap().spec,
            train: TrainConfig::default(),
            data: DataConfig {
                dataset: DatasetKind::Synthetic,
                train_size: Some(300),
                test_size: Some(300),
            },
        }
    }

    /// A run's seconds are its epochs of (train + test / 3) images at the modelled speed,
    /// which follows the calibration: twice the probe times, half the speed.
    #[test]
    fn run_seconds_follow_the_images_and_the_calibration() {
        let cfg = config("condensenext");
        let profile = RunProfile::of(&cfg.model).unwrap().unwrap();
        assert_eq!(profile.phases.len(), 9);
        let fast = CostModel::new_ok(calibration(1, 1e-4, 1e-4, 1e-4));
        let slow = CostModel::new_ok(calibration(1, 2e-4, 2e-4, 2e-4));
        let speed = fast.images_per_s(&profile, 1, 1).unwrap();
        assert!(speed.is_finite() && speed > 0.0);
        let half = slow.images_per_s(&profile, 1, 1).unwrap();
        assert!((speed / half - 2.0).abs() < 1e-9, "{speed} {half}");
        let s = fast.run_seconds(&cfg, &profile, 2, 1, 1).unwrap();
        assert!((s - 2.0 * 400.0 / speed).abs() < 1e-6 * s);
    }

    /// Threads with a serial share make one run per core the fastest split; threads that
    /// scale perfectly leave every split equal and the fewest slots win; never more slots
    /// than runs, nor than memory holds.
    #[test]
    fn the_split_follows_the_measured_scaling() {
        let cfg = config("condensenet-86");
        let profile = RunProfile::of(&cfg.model).unwrap().unwrap();
        let runs: Vec<PendingRun> = (0..8)
            .map(|_| PendingRun {
                config: &cfg,
                profile: &profile,
                epochs: 1,
            })
            .collect();
        // Perfect sharing, threads that scale badly (4 threads: 2x).
        let model = CostModel::new_ok(calibration(4, 1.0, 0.5, 1.0));
        let (split, _) = best_split(&model, &runs, 4, None).unwrap();
        assert_eq!(
            split,
            CpuSplit {
                slots: 4,
                threads: 1
            }
        );
        // Threads that scale perfectly: every split is as fast; the fewest slots win.
        let model = CostModel::new_ok(calibration(4, 1.0, 0.25, 1.0));
        let (split, _) = best_split(&model, &runs, 4, None).unwrap();
        assert_eq!(
            split,
            CpuSplit {
                slots: 1,
                threads: 4
            }
        );
        // Two runs: at most two slots; memory for one: one slot.
        let model = CostModel::new_ok(calibration(4, 1.0, 0.5, 1.0));
        let (split, _) = best_split(&model, &runs[..2], 4, None).unwrap();
        assert_eq!(
            split,
            CpuSplit {
                slots: 2,
                threads: 2
            }
        );
        let floor = crate::config::MemoryFloor::of(&cfg.model, cfg.train.batch).total();
        let (split, _) = best_split(&model, &runs, 4, Some(floor + 1)).unwrap();
        assert_eq!(split.slots, 1);
    }

    /// A cache file with a bad entry (zero, negative, tiny or missing times) is measured again
    /// and the entry replaced.
    #[test]
    fn a_bad_cache_entry_is_measured_again() {
        let dir = std::env::temp_dir().join(format!("ablate-cal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(CACHE_FILE);
        for bad in [0.0, -5.0, 1e-300] {
            let mut entries = BTreeMap::new();
            entries.insert(key(1), calibration(1, bad, bad, bad));
            std::fs::write(&file, serde_json::to_string(&entries).unwrap()).unwrap();
            let cache = CalibrationCache::at(Some(file.clone()));
            let (model, provenance) = cache.model(1).unwrap();
            assert!(!matches!(provenance, Provenance::Cached(_)), "{bad}");
            assert!(model.calibration.is_valid());
        }
        std::fs::write(&file, "not json").unwrap();
        assert!(read_entries(&file).is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
