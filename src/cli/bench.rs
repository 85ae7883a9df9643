//! `ablate bench`: speed and memory of models on this machine's CPU, one child process per
//! (model, kernels, allocator), so each row's peak memory is its own and the allocator can
//! differ between rows.

use std::process::{Command, Stdio};

use anyhow::Context;

use super::format::OutputFormat;
use crate::alloc::{Allocator, ALLOCATOR_ENV};
use crate::bench::{measure, BenchConfig, BenchRow};
use crate::config::{ConfigError, ModelSource, ModelSpec};
use crate::kernels::simd::SIMD_ENV;
use crate::kernels::{Kernels, Simd, KERNELS_ENV};
use crate::table::Table;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Presets or model TOML files, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "condensenet-86,condensenext"
    )]
    pub models: Vec<String>,
    /// Images per training step and per batched inference.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Timed training steps and batched inference passes (after one warm-up).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Timed batch-1 forward passes.
    #[arg(long, default_value_t = 30)]
    pub latency_runs: usize,
    /// Time training at this progress in [0, 1] only (0: nothing pruned yet) instead of in
    /// every phase of the pruning schedule.
    #[arg(long)]
    pub progress: Option<f64>,
    /// Kernels: this crate's CPU kernels (`fast`), the device path a GPU runs, here on the CPU
    /// (`device`), candle's own ops (`reference`), or a row of each.
    #[arg(long, value_delimiter = ',', default_value = "fast")]
    pub kernels: Vec<Kernels>,
    /// Global allocator of the measuring process, or a row of each.
    #[arg(long, value_delimiter = ',', default_value = "mimalloc")]
    pub allocator: Vec<Allocator>,
    /// SIMD level of the kernels' loops (`portable`, `avx2`, `avx512`; at most this CPU's),
    /// or a row of each; default: the widest this CPU runs (or `ABLATE_SIMD`'s).
    #[arg(long, value_delimiter = ',')]
    pub simd: Vec<Simd>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Instead of training speed: export each model (seeded weights) to ONNX and time it in
    /// onnxruntime beside ablate's own deploy form, at batch 1 with one thread and with all
    /// threads; report the file sizes.
    #[arg(long)]
    pub onnx: bool,
    /// The Python interpreter that has onnxruntime, for --onnx (e.g. a venv's bin/python;
    /// `pip install -r tests/onnx/requirements.txt`).
    #[arg(long, env = "ABLATE_PYTHON", default_value = "python3")]
    pub python: String,
    /// Measure one model in this process and print its row as JSON (what each child runs).
    #[arg(long, hide = true)]
    pub child: bool,
}

fn config(args: &BenchArgs) -> BenchConfig {
    BenchConfig {
        batch: args.batch,
        steps: args.steps,
        latency_runs: args.latency_runs,
        progress: args.progress,
        ..BenchConfig::default()
    }
}

fn check(args: &BenchArgs) -> Result<(), ConfigError> {
    for (key, value) in [
        ("--batch", args.batch),
        ("--steps", args.steps),
        ("--latency-runs", args.latency_runs),
    ] {
        if value == 0 {
            return Err(ConfigError::invalid(
                key,
                "expected a positive number, got 0",
            ));
        }
    }
    if let Some(&level) = args.simd.iter().find(|&&l| l > Simd::detected()) {
        return Err(ConfigError::invalid(
            "--simd",
            format!(
                "`{}`: this CPU runs at most `{}`",
                level.name(),
                Simd::detected().name()
            ),
        ));
    }
    if let Some(t) = args.progress.filter(|t| !(0.0..=1.0).contains(t)) {
        return Err(ConfigError::invalid(
            "--progress",
            format!("expected a number in [0, 1], got {t}"),
        ));
    }
    Ok(())
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    check(args)?;
    // Resolve every model first: a typo fails before minutes of measuring.
    let specs = args
        .models
        .iter()
        .map(|m| {
            ModelSource::parse(m)
                .resolve(&[])
                .map(|r| (m.clone(), r.spec))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if args.onnx {
        let onnx = super::bench_onnx::OnnxBench {
            python: &args.python,
            latency_runs: args.latency_runs,
            child: args.child,
            format: args.format,
        };
        return super::bench_onnx::run(&onnx, &specs);
    }
    for (_, spec) in &specs {
        crate::config::check_fits(spec, args.batch)?;
    }
    if args.child {
        let (name, spec) = &specs[0];
        let row = measure(name, spec, &config(args))?;
        println!("{}", serde_json::to_string(&row)?);
        return Ok(());
    }
    let exe = std::env::current_exe().context("finding the ablate executable")?;
    let levels = match &args.simd[..] {
        [] => vec![Simd::active()],
        levels => levels.to_vec(),
    };
    let mut rows = Vec::new();
    for (name, _) in &specs {
        let combos = args.kernels.iter().flat_map(|&k| {
            let levels = &levels;
            args.allocator
                .iter()
                .flat_map(move |&a| levels.iter().map(move |&s| (k, a, s)))
        });
        for (kernels, allocator, simd) in combos {
            eprintln!(
                "bench: {name}, {} kernels, {} allocator, {} loops, batch {}, {} steps ...",
                kernels.name(),
                allocator.name(),
                simd.name(),
                args.batch,
                args.steps
            );
            let mut child = Command::new(&exe);
            child
                .arg("bench")
                .arg("--child")
                .args(["--models", name])
                .args(["--batch", &args.batch.to_string()])
                .args(["--steps", &args.steps.to_string()])
                .args(["--latency-runs", &args.latency_runs.to_string()]);
            if let Some(t) = args.progress {
                child.args(["--progress", &t.to_string()]);
            }
            let out = child
                .env(KERNELS_ENV, kernels.name())
                .env(ALLOCATOR_ENV, allocator.name())
                .env(SIMD_ENV, simd.name())
                .stderr(Stdio::inherit())
                .output()
                .with_context(|| format!("running {}", exe.display()))?;
            if !out.status.success() {
                anyhow::bail!("measuring {name} failed ({})", out.status);
            }
            let line = String::from_utf8_lossy(&out.stdout);
            let row: BenchRow = serde_json::from_str(line.trim())
                .with_context(|| format!("reading the measurement of {name}: {line}"))?;
            eprintln!(
                "bench: {name}: {:.1} train img/s over a run ({:.1} s per CIFAR-10 epoch), \
                     {:.2} ms at batch 1",
                row.train_images_per_s, row.epoch_seconds, row.latency_ms
            );
            rows.push(row);
        }
    }
    if let Err(e) = add_estimates(&mut rows, &specs) {
        eprintln!("bench: no time-model estimates ({e:#})");
    }
    print!("{}", render(&rows, args.format)?);
    Ok(())
}

/// The time model's speeds beside the measured ones, for rows of the fast kernels (what
/// `ablate plan` estimates with), at each row's threads and batch.
fn add_estimates(rows: &mut [BenchRow], specs: &[(String, ModelSpec)]) -> anyhow::Result<()> {
    if !rows.iter().any(|r| r.kernels == Kernels::Fast.name()) {
        return Ok(());
    }
    let mut estimator = super::slots::Estimator::new(None)?;
    for row in rows
        .iter_mut()
        .filter(|r| r.kernels == Kernels::Fast.name())
    {
        let Some((_, spec)) = specs.iter().find(|(name, _)| *name == row.model) else {
            continue;
        };
        let Some(profile) = estimator.profile(spec)? else {
            continue;
        };
        let model = &estimator.model;
        row.estimate_images_per_s = Some(model.images_per_s(&profile, row.threads, row.threads)?);
        let phases = model.phase_images_per_s(&profile, row.threads, row.threads)?;
        if phases.len() == row.phases.len() {
            for (p, e) in row.phases.iter_mut().zip(phases) {
                p.estimate_images_per_s = Some(e);
            }
        }
    }
    Ok(())
}

/// `estimate (estimate / measured)`, or `-`.
fn estimate_cell(estimate: Option<f64>, measured: f64) -> String {
    estimate.map_or("-".into(), |e| format!("{e:.1} ({:.2}x)", e / measured))
}

const HEADER: [&str; 17] = [
    "model",
    "kernels",
    "allocator",
    "simd",
    "run train img/s",
    "estimate img/s",
    "epoch s",
    "first-phase img/s",
    "train GFLOP/s",
    "peak RSS (MB)",
    "run end peak (MB)",
    "infer img/s",
    "batch-1 ms",
    "train MMAC/img",
    "deploy MMAC/img",
    "ops/step",
    "threads",
];

fn cells(r: &BenchRow) -> Vec<String> {
    vec![
        r.model.clone(),
        r.kernels.clone(),
        r.allocator.clone(),
        r.simd.clone(),
        format!("{:.1}", r.train_images_per_s),
        estimate_cell(r.estimate_images_per_s, r.train_images_per_s),
        format!("{:.0}", r.epoch_seconds),
        format!("{:.1}", r.first_images_per_s()),
        format!("{:.1}", r.train_gflops),
        format!("{:.0}", r.train_peak_rss as f64 / 1e6),
        format!("{:.0}", r.run_peak_rss as f64 / 1e6),
        format!("{:.1}", r.infer_images_per_s),
        format!("{:.2}", r.latency_ms),
        format!("{:.1}", r.train_macs / 1e6),
        format!("{:.1}", r.deploy_macs as f64 / 1e6),
        r.max_graph_ops().to_string(),
        r.threads.to_string(),
    ]
}

const PHASE_HEADER: [&str; 11] = [
    "model",
    "kernels",
    "allocator",
    "simd",
    "progress",
    "structure",
    "share of run",
    "train img/s",
    "estimate img/s",
    "train MMAC/img",
    "ops/step",
];

/// One row per schedule phase of every measurement.
fn phase_cells(rows: &[BenchRow]) -> Vec<Vec<String>> {
    rows.iter()
        .flat_map(|r| {
            r.phases.iter().map(|p| {
                let span = if p.end > p.start {
                    format!("[{:.3}, {:.3})", p.start, p.end)
                } else {
                    format!("{}", p.start)
                };
                vec![
                    r.model.clone(),
                    r.kernels.clone(),
                    r.allocator.clone(),
                    r.simd.clone(),
                    span,
                    p.structure.clone(),
                    format!("{:.1}%", 100.0 * p.share()),
                    format!("{:.1}", p.images_per_s),
                    estimate_cell(p.estimate_images_per_s, p.images_per_s),
                    format!("{:.1}", p.train_macs as f64 / 1e6),
                    p.graph_ops.to_string(),
                ]
            })
        })
        .collect()
}

fn render(rows: &[BenchRow], format: OutputFormat) -> anyhow::Result<String> {
    let batch = rows.first().map_or(0, |r| r.batch);
    let mut speed = Table::new("", &HEADER);
    for r in rows {
        speed.push(cells(r));
    }
    let mut phases = Table::new("", &PHASE_HEADER);
    for row in phase_cells(rows) {
        phases.push(row);
    }
    let phases = phases.note(format!(
        "batch {batch}; medians. `run train img/s` weights each phase of the pruning schedule by \
         the share of a run it lasts; `epoch s` is one CIFAR-10 epoch (50,000 images) at that \
         speed. `estimate img/s` is the time model `ablate plan` estimates with (this \
         machine's calibrated kernel speeds priced on the model's per-stage work), with its \
         ratio to the measurement. Training GFLOP/s count a step as 3 forward passes of the executed multiply-adds \
         (masked convs at full size). `ops/step` counts the ops between the parameters and \
         the loss of one training step (candle's autograd nodes, views included; in the first \
         table, the largest phase's): at most one launch each on a GPU forward, a few each \
         backward. \
         The `device` rows run the GPU's op path on this CPU: a proxy for its launch count and \
         its memory traffic, not for its speed."
    ));
    Ok(match format.render(&[speed, phases]) {
        Some(text) => text,
        None => serde_json::to_string_pretty(rows)? + "\n",
    })
}
