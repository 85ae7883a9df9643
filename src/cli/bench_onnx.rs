//! `ablate bench --onnx`: file sizes and batch-1 latency of the exported ONNX files (float and
//! int8 QDQ) in onnxruntime beside ablate's own deploy form, with one thread and with every
//! core. ablate's
//! latency is measured in a child process per thread count (its thread pool is fixed at start).

use std::process::{Command, Stdio};

use anyhow::Context;

use super::format::{thousands, OutputFormat};
use crate::analyze::write_deploy;
use crate::bench::onnx::{deploy_latency_ms, ort_latency_ms, ort_version, OnnxRow, OrtUnavailable};
use crate::config::{ConfigError, ModelSource, ModelSpec};
use crate::export::{int8, reference, to_onnx, ExportOptions, Exportable};
use crate::io::write_atomic;
use crate::table::Table;

/// What `ablate bench --onnx` takes from the command line.
pub struct OnnxBench<'a> {
    /// The Python interpreter that has onnxruntime.
    pub python: &'a str,
    /// Timed batch-1 forward passes.
    pub latency_runs: usize,
    /// Measure ablate's latency in this process and print it as JSON (what each child runs).
    pub child: bool,
    pub format: OutputFormat,
}

pub fn run(args: &OnnxBench, specs: &[(String, ModelSpec)]) -> anyhow::Result<()> {
    if args.child {
        let (_, spec) = &specs[0];
        let ms = deploy_latency_ms(spec, args.latency_runs)?;
        println!("{}", serde_json::json!({ "latency_ms": ms }));
        return Ok(());
    }
    ort_version(&args.python).map_err(unavailable)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut threads = vec![1, cores];
    threads.dedup();
    let scratch = std::env::temp_dir().join(format!("ablate-bench-onnx-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let rows = rows(args, specs, &threads, &scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    print!("{}", render(&rows?, &threads, args.format)?);
    Ok(())
}

/// A Python without onnxruntime is bad input (exit 2).
fn unavailable(e: OrtUnavailable) -> ConfigError {
    ConfigError::invalid(
        "--python",
        format!(
            "{e}; install onnxruntime (pip install -r tests/onnx/requirements.txt) and pass that \
             interpreter"
        ),
    )
}

fn rows(
    args: &OnnxBench,
    specs: &[(String, ModelSpec)],
    threads: &[usize],
    scratch: &std::path::Path,
) -> anyhow::Result<Vec<OnnxRow>> {
    let exe = std::env::current_exe().context("finding the ablate executable")?;
    let mut rows = Vec::new();
    for (i, (name, _)) in specs.iter().enumerate() {
        eprintln!("bench --onnx: {name}, batch 1, threads {threads:?} ...");
        let item = Exportable::from_model(&ModelSource::parse(name), &[], 0)?;
        let opts = ExportOptions::default();
        let model = to_onnx(&item.net, item.metadata(false), &opts)?;
        let bytes = model.encode();
        let file = scratch.join(format!("model{i}.onnx"));
        write_atomic(&file, &bytes)?;
        let deploy_bytes = write_deploy(&item.net, &scratch.join(format!("model{i}.safetensors")))?;
        let mut ablate_ms = Vec::new();
        for &t in threads {
            let out = Command::new(&exe)
                .args(["bench", "--onnx", "--child", "--models", name])
                .args(["--latency-runs", &args.latency_runs.to_string()])
                .env("RAYON_NUM_THREADS", t.to_string())
                .stderr(Stdio::inherit())
                .output()
                .with_context(|| format!("running {}", exe.display()))?;
            if !out.status.success() {
                anyhow::bail!("measuring {name} failed ({})", out.status);
            }
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)
                .with_context(|| format!("reading the measurement of {name}"))?;
            ablate_ms.push(v["latency_ms"].as_f64().unwrap_or(f64::NAN));
        }
        let (version, ort_ms) =
            ort_latency_ms(&args.python, &file, args.latency_runs, threads).map_err(unavailable)?;
        let int8_bytes = int8_file(&item, &model)?;
        let int8_path = scratch.join(format!("model{i}-int8.onnx"));
        write_atomic(&int8_path, &int8_bytes)?;
        let (_, int8_ms) = ort_latency_ms(args.python, &int8_path, args.latency_runs, threads)
            .map_err(unavailable)?;
        rows.push(OnnxRow {
            model: name.clone(),
            onnx_bytes: bytes.len() as u64,
            deploy_bytes,
            threads: threads.to_vec(),
            ablate_ms,
            onnxruntime_ms: ort_ms,
            int8_bytes: int8_bytes.len() as u64,
            int8_onnxruntime_ms: int8_ms,
            onnxruntime: version,
        });
    }
    Ok(rows)
}

/// Synthetic images that calibrate the int8 file of a seeded model (its size and latency do
/// not depend on which images: only its scales do).
const CALIBRATION_IMAGES: usize = 32;

/// The int8 QDQ file of `item` (seeded weights), calibrated on synthetic training images.
fn int8_file(item: &Exportable, float: &crate::export::onnx::Model) -> anyhow::Result<Vec<u8>> {
    let classes = item.net.spec().classes;
    let images = crate::data::synthetic(CALIBRATION_IMAGES, classes, 0, "train").images;
    let (_, input) = reference::inputs(&images, false)?;
    Ok(int8::quantize(float, &input)?.encode())
}

fn render(rows: &[OnnxRow], threads: &[usize], format: OutputFormat) -> anyhow::Result<String> {
    let plural = |t: usize| if t == 1 { "thread" } else { "threads" };
    let mut columns = vec![
        "model".to_string(),
        "ONNX bytes".to_string(),
        "int8 ONNX bytes".to_string(),
        "safetensors bytes".to_string(),
    ];
    for who in ["ablate", "onnxruntime", "onnxruntime int8"] {
        for &t in threads {
            columns.push(format!("{who} {t} {} ms", plural(t)));
        }
    }
    let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
    let mut table = Table::new("", &columns);
    for r in rows {
        let mut cells = vec![
            r.model.clone(),
            thousands(r.onnx_bytes),
            thousands(r.int8_bytes),
            thousands(r.deploy_bytes),
        ];
        cells.extend(r.ablate_ms.iter().map(|ms| format!("{ms:.2}")));
        cells.extend(r.onnxruntime_ms.iter().map(|ms| format!("{ms:.2}")));
        cells.extend(r.int8_onnxruntime_ms.iter().map(|ms| format!("{ms:.2}")));
        table.push(cells);
    }
    let version = rows.first().map_or("", |r| r.onnxruntime.as_str());
    let table = table.note(format!(
        "batch 1, medians; seeded weights, opset 17; int8: the QDQ form of `export --int8`, \
         calibrated on {CALIBRATION_IMAGES} synthetic images; onnxruntime {version} (CPU \
         execution provider, all graph optimisations, intra-op threads as given)."
    ));
    Ok(match format.render(&[table]) {
        Some(text) => text,
        None => serde_json::to_string_pretty(rows)? + "\n",
    })
}
