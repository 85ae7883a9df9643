//! `ablate bench`'s measurements: training and inference speed, batch-1 latency, peak memory
//! and achieved GFLOP/s of one model, in this process.
//!
//! Every time is a median over timed repetitions that follow untimed warm-up ones. FLOPs are
//! the executed count of the analyzer (multiply-adds, batch 1) of the form that ran, times two
//! for FLOP; a training step is counted as three forward passes (forward, input gradient,
//! weight gradient).

pub mod calibrate;
mod cpu_load;
pub mod estimate;
pub mod onnx;

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::ModuleT;
use serde::{Deserialize, Serialize};

use crate::analyze::{total, trace_costs, Convention};
use crate::config::ModelSpec;
use crate::model::Network;
use crate::rng::Rng;
use crate::run_dir::median;
use crate::train::{cross_entropy, Sgd, SgdConfig};

/// Images in one CIFAR-10 training epoch.
pub const EPOCH_IMAGES: f64 = 50_000.0;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Images per training step and per batched inference.
    pub batch: usize,
    /// Timed training steps per schedule phase (and batched inference passes).
    pub steps: usize,
    /// Untimed steps before them.
    pub warmup: usize,
    /// `None`: time training in every phase of the pruning schedule and weight each by the
    /// share of a run it lasts. `Some(t)`: time training at progress `t` in [0, 1] only (0 is
    /// the first step, nothing pruned; 1 the end, every drop made).
    pub progress: Option<f64>,
    /// Timed batch-1 forward passes.
    pub latency_runs: usize,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            batch: 64,
            steps: 5,
            warmup: 1,
            progress: None,
            latency_runs: 30,
        }
    }
}

/// Training speed in one phase of the pruning schedule, where the structure is fixed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Phase {
    /// Progress at which the phase starts and ends, `[start, end)`; a single-progress
    /// measurement is one phase with `start == end`.
    pub start: f64,
    pub end: f64,
    /// The layers' structure in this phase ([`Network::schedule_state`]).
    pub structure: String,
    /// Median training images per second (forward, loss, backward, SGD step).
    pub images_per_s: f64,
    /// Executed multiply-adds per image of the training form in this phase.
    pub train_macs: u64,
    /// Ops between the parameters and the loss of one training step (candle's autograd
    /// nodes, views included): at most one launch each forward on a GPU, a few each
    /// backward. 0 in a measurement
    /// made before it was counted.
    #[serde(default)]
    pub graph_ops: usize,
    /// The time model's training images per second for this phase
    /// ([`estimate::CostModel`]); `None` where it was not asked for or cannot price it.
    #[serde(default)]
    pub estimate_images_per_s: Option<f64>,
}

impl Phase {
    /// The share of a run's images this phase trains (1 for a single-progress measurement).
    pub fn share(&self) -> f64 {
        if self.end > self.start {
            self.end - self.start
        } else {
            1.0
        }
    }
}

/// One model's measurements.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchRow {
    pub model: String,
    pub kernels: String,
    pub allocator: String,
    /// The SIMD level the kernels' loops ran at.
    #[serde(default)]
    pub simd: String,
    pub threads: usize,
    pub batch: usize,
    /// The training speed of each schedule phase, in order.
    pub phases: Vec<Phase>,
    /// Training images per second over a whole run: the phases weighted by their share,
    /// `1 / sum(share / images_per_s)`.
    pub train_images_per_s: f64,
    /// Seconds of one CIFAR-10 epoch (50,000 images) at `train_images_per_s`.
    pub epoch_seconds: f64,
    /// Median deploy-form inference images per second at `batch`.
    pub infer_images_per_s: f64,
    /// Median deploy-form forward time at batch 1, milliseconds.
    pub latency_ms: f64,
    /// Peak resident memory of the process after the training steps, bytes.
    pub train_peak_rss: u64,
    /// Peak resident memory after what ends a run as well (the schedule finished, the
    /// conversion, deploy-form evaluation at `batch`), bytes: what a run's slot needs.
    #[serde(default)]
    pub run_peak_rss: u64,
    /// Executed multiply-adds per image of the training form, averaged over the phases by
    /// their share.
    pub train_macs: f64,
    /// Executed multiply-adds per image of the deploy form.
    pub deploy_macs: u64,
    /// Achieved training GFLOP/s: `3 * 2 * train_macs * train_images_per_s / 1e9`.
    pub train_gflops: f64,
    /// Achieved inference GFLOP/s at `batch`: `2 * deploy_macs * infer_images_per_s / 1e9`.
    pub infer_gflops: f64,
    /// The time model's training images per second over a whole run, beside the measured
    /// `train_images_per_s` (what `ablate plan` estimates with); `None` where not priced.
    #[serde(default)]
    pub estimate_images_per_s: Option<f64>,
}

impl BenchRow {
    /// Training images per second of the first phase (progress 0 in a schedule).
    pub fn first_images_per_s(&self) -> f64 {
        self.phases.first().map_or(f64::NAN, |p| p.images_per_s)
    }

    /// The most ops one training step takes in any phase ([`Phase::graph_ops`]).
    pub fn max_graph_ops(&self) -> usize {
        self.phases.iter().map(|p| p.graph_ops).max().unwrap_or(0)
    }
}

/// Seconds of each of `timed` calls of `f`, after `warmup` untimed ones.
fn time_runs(
    warmup: usize,
    timed: usize,
    mut f: impl FnMut() -> candle_core::Result<()>,
) -> candle_core::Result<Vec<f64>> {
    for _ in 0..warmup {
        f()?;
    }
    (0..timed)
        .map(|_| {
            let t = Instant::now();
            f()?;
            Ok(t.elapsed().as_secs_f64())
        })
        .collect()
}

/// Seconds of each of `timed` training steps of `net` (forward, cross-entropy, backward, SGD)
/// on `(x, y)`, after `warmup` untimed ones, with a fresh optimiser (a schedule conversion
/// replaces parameters).
pub(crate) fn time_training(
    net: &Network,
    x: &Tensor,
    y: &Tensor,
    warmup: usize,
    timed: usize,
) -> candle_core::Result<Vec<f64>> {
    let mut sgd = Sgd::new(net.trainable(), SgdConfig::default());
    time_runs(warmup, timed, || {
        let logits = net.forward_t(x, true)?;
        let loss = cross_entropy(&logits, y)?;
        let grads = loss.backward()?;
        sgd.step(&grads, 0.01)
    })
}

/// A seeded batch of `n` images with pixel values in [-2, 2) and labels `0, 1, ..., 9, 0, ...`.
pub(crate) fn batch(n: usize, classes: usize) -> candle_core::Result<(Tensor, Tensor)> {
    let mut rng = Rng::for_stream(0, "bench/input");
    let pixels: Vec<f32> = (0..n * 3 * 32 * 32)
        .map(|_| rng.uniform(-2.0, 2.0) as f32)
        .collect();
    let labels: Vec<u32> = (0..n).map(|i| (i % classes) as u32).collect();
    Ok((
        Tensor::from_vec(pixels, (n, 3, 32, 32), &Device::Cpu)?,
        Tensor::from_vec(labels, n, &Device::Cpu)?,
    ))
}

pub use crate::alloc::peak_rss;

/// Measures `spec` (named `model`) on the CPU with the kernels and allocator now active.
pub fn measure(model: &str, spec: &ModelSpec, cfg: &BenchConfig) -> anyhow::Result<BenchRow> {
    let device = Device::Cpu;
    let mut net = Network::seeded(spec, 0, &device)?;
    let (x, y) = batch(cfg.batch, spec.classes)?;
    let med = |times: &[f64]| median(times.iter().copied()).unwrap_or(f64::NAN);
    let per_s = |times: &[f64]| cfg.batch as f64 / med(times);

    let spans = match cfg.progress {
        Some(t) => vec![(t, t)],
        None => net.schedule_phases(),
    };
    let mut phases = Vec::with_capacity(spans.len());
    for (start, end) in spans {
        // The structure is fixed inside a phase; its middle is clear of the boundaries.
        net.advance_schedule((start + end) / 2.0)?;
        let train_macs = total(&trace_costs(&net)?, Convention::Executed).flops;
        let graph_ops = cross_entropy(&net.forward_t(&x, true)?, &y)?
            .sorted_nodes()
            .len();
        let times = time_training(&net, &x, &y, cfg.warmup, cfg.steps)?;
        phases.push(Phase {
            start,
            end,
            structure: net.schedule_state(),
            images_per_s: per_s(&times),
            train_macs,
            graph_ops,
            estimate_images_per_s: None,
        });
    }
    let train_peak_rss = peak_rss();

    net.finish_pruning()?;
    let deploy = net.condense()?;
    drop(net);
    let deploy_macs = total(&trace_costs(&deploy)?, Convention::Executed).flops;
    let infer_times = time_runs(cfg.warmup, cfg.steps, || {
        deploy.forward_t(&x, false)?.to_dtype(DType::F32).map(drop)
    })?;
    let run_peak_rss = peak_rss();
    let one = x.narrow(0, 0, 1)?.contiguous()?;
    let latency = time_runs(3, cfg.latency_runs, || {
        deploy.forward_t(&one, false).map(drop)
    })?;

    let run_seconds_per_image: f64 = phases.iter().map(|p| p.share() / p.images_per_s).sum();
    let train_images_per_s = 1.0 / run_seconds_per_image;
    let train_macs: f64 = phases.iter().map(|p| p.share() * p.train_macs as f64).sum();
    let infer_images_per_s = per_s(&infer_times);
    Ok(BenchRow {
        model: model.to_string(),
        kernels: crate::kernels::active().name().to_string(),
        allocator: crate::alloc::active().name().to_string(),
        simd: crate::kernels::Simd::active().name().to_string(),
        threads: rayon::current_num_threads(),
        batch: cfg.batch,
        phases,
        train_images_per_s,
        epoch_seconds: EPOCH_IMAGES / train_images_per_s,
        infer_images_per_s,
        latency_ms: med(&latency) * 1e3,
        train_peak_rss,
        run_peak_rss,
        train_macs,
        deploy_macs,
        train_gflops: 6.0 * train_macs * train_images_per_s / 1e9,
        infer_gflops: 2.0 * deploy_macs as f64 * infer_images_per_s / 1e9,
        estimate_images_per_s: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelSource;

    fn spec(model: &str, sets: &[&str]) -> ModelSpec {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        ModelSource::parse(model).resolve(&sets).unwrap().spec
    }

    /// The phases tile [0, 1) at the spec's drop points: CondenseNet's three stages then the
    /// fixed second half, CondenseNeXt's eight drops up to 2/3 then the converted third.
    #[test]
    fn phases_follow_the_schedules() {
        let net = Network::seeded(&spec("condensenet-86", &[]), 0, &Device::Cpu).unwrap();
        let expect = [
            (0.0, 1.0 / 6.0),
            (1.0 / 6.0, 2.0 / 6.0),
            (2.0 / 6.0, 0.5),
            (0.5, 1.0),
        ];
        let got = net.schedule_phases();
        assert_eq!(got.len(), expect.len());
        for ((a, b), (c, d)) in got.iter().zip(expect) {
            assert!((a - c).abs() < 1e-12 && (b - d).abs() < 1e-12, "{got:?}");
        }
        let net = Network::seeded(&spec("condensenext", &[]), 0, &Device::Cpu).unwrap();
        let got = net.schedule_phases();
        assert_eq!(got.len(), 9, "{got:?}");
        assert!((got[8].0 - 2.0 / 3.0).abs() < 1e-12 && got[8].1 == 1.0);
        assert!(got.windows(2).all(|w| w[0].1 == w[1].0));
    }

    /// A whole-schedule measurement has one phase per structure, each named, their shares
    /// summing to 1, and a run speed between the slowest and fastest phase.
    #[test]
    fn a_schedule_measurement_weights_every_phase() {
        let cfg = BenchConfig {
            batch: 2,
            steps: 1,
            warmup: 0,
            progress: None,
            latency_runs: 1,
        };
        let row = measure("tiny", &spec("condensenext", &["stages=[1,1,1]"]), &cfg).unwrap();
        assert_eq!(row.phases.len(), 9);
        let structures: Vec<&str> = row.phases.iter().map(|p| p.structure.as_str()).collect();
        assert_eq!(structures[0], "learned-dsc 0/8 drops");
        assert_eq!(structures[8], "learned-dsc converted");
        assert!(row.phases.iter().all(|p| p.graph_ops > 0), "{row:?}");
        let share: f64 = row.phases.iter().map(Phase::share).sum();
        assert!((share - 1.0).abs() < 1e-12);
        let speeds = row.phases.iter().map(|p| p.images_per_s);
        let (lo, hi) = (
            speeds.clone().fold(f64::INFINITY, f64::min),
            speeds.fold(0.0, f64::max),
        );
        assert!(
            lo <= row.train_images_per_s && row.train_images_per_s <= hi,
            "{row:?}"
        );
        assert!((row.epoch_seconds * row.train_images_per_s - EPOCH_IMAGES).abs() < 1e-6);
    }
}
