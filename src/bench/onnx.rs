//! `ablate bench --onnx`: the exported deploy form in onnxruntime beside ablate's own deploy
//! form, at batch 1 (the embedded case), with one thread and with every core.
//!
//! onnxruntime runs in a Python interpreter the caller names (it has no Rust binding this
//! project builds without downloads): [`ORT_LATENCY_SCRIPT`] is passed to `python -c`. Both
//! sides time the same thing: the median of `runs` forward passes of one `[1, 3, 32, 32]`
//! image after warm-up passes, the session or network built beforehand.

use std::path::Path;
use std::process::Command;

use candle_nn::ModuleT;
use serde::{Deserialize, Serialize};

use super::{batch, time_runs};
use crate::config::ModelSpec;
use crate::model::Network;
use crate::run_dir::median;

/// The Python program that times a file in onnxruntime (see its header for the protocol).
pub const ORT_LATENCY_SCRIPT: &str = include_str!("ort_latency.py");

/// One model's row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OnnxRow {
    pub model: String,
    /// Bytes of the ONNX file (opset 17, float32 weights).
    pub onnx_bytes: u64,
    /// Bytes of ablate's own deploy file (`model.safetensors`).
    pub deploy_bytes: u64,
    /// Thread counts, in the order of the latency columns.
    pub threads: Vec<usize>,
    /// ablate's deploy form, median batch-1 milliseconds per thread count.
    pub ablate_ms: Vec<f64>,
    /// onnxruntime (CPU execution provider), median batch-1 milliseconds per thread count.
    pub onnxruntime_ms: Vec<f64>,
    /// Bytes of the int8 QDQ file (`export --int8`'s form; calibrated on synthetic images,
    /// as the weights are seeded: for size and latency only).
    pub int8_bytes: u64,
    /// The int8 file in onnxruntime (all graph optimisations: QDQ fused into integer kernels),
    /// median batch-1 milliseconds per thread count.
    pub int8_onnxruntime_ms: Vec<f64>,
    /// onnxruntime's version.
    pub onnxruntime: String,
}

/// Median batch-1 latency in milliseconds of the seeded deploy form of `spec` in this process
/// (its thread count is the process's), after 3 warm-up passes.
pub fn deploy_latency_ms(spec: &ModelSpec, runs: usize) -> anyhow::Result<f64> {
    let mut net = Network::seeded(spec, 0, &candle_core::Device::Cpu)?;
    net.finish_pruning()?;
    let deploy = net.condense()?;
    let (x, _) = batch(1, spec.classes)?;
    let times = time_runs(3, runs, || deploy.forward_t(&x, false).map(drop))?;
    Ok(median(times).unwrap_or(f64::NAN) * 1e3)
}

/// Why onnxruntime could not be timed.
#[derive(Debug, thiserror::Error)]
#[error("`{python}` cannot time onnxruntime: {reason}")]
pub struct OrtUnavailable {
    pub python: String,
    pub reason: String,
}

#[derive(Deserialize)]
struct OrtReply {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    onnxruntime: String,
    #[serde(default)]
    latency_ms: std::collections::HashMap<String, f64>,
}

/// onnxruntime's version, if `python` can import it (and numpy): checked before measuring.
pub fn ort_version(python: &str) -> Result<String, OrtUnavailable> {
    let fail = |reason: String| OrtUnavailable {
        python: python.to_string(),
        reason,
    };
    let out = Command::new(python)
        .args([
            "-c",
            "import numpy, onnxruntime; print(onnxruntime.__version__)",
        ])
        .output()
        .map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(fail(err.lines().last().unwrap_or("no output").to_string()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// onnxruntime's version and median batch-1 milliseconds of `file` for each of `threads`
/// (intra-op threads), timed by `python` running [`ORT_LATENCY_SCRIPT`].
pub fn ort_latency_ms(
    python: &str,
    file: &Path,
    runs: usize,
    threads: &[usize],
) -> Result<(String, Vec<f64>), OrtUnavailable> {
    let fail = |reason: String| OrtUnavailable {
        python: python.to_string(),
        reason,
    };
    let list: Vec<String> = threads.iter().map(|t| t.to_string()).collect();
    let out = Command::new(python)
        .arg("-c")
        .arg(ORT_LATENCY_SCRIPT)
        .arg(file)
        .arg(runs.to_string())
        .arg(list.join(","))
        .output()
        .map_err(|e| fail(e.to_string()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let reply: Option<OrtReply> = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok());
    match reply {
        Some(OrtReply { error: Some(e), .. }) => Err(fail(e)),
        Some(r) if out.status.success() => {
            let ms = list
                .iter()
                .map(|t| r.latency_ms.get(t).copied())
                .collect::<Option<Vec<f64>>>()
                .ok_or_else(|| fail(format!("no latency for every thread count in: {stdout}")))?;
            Ok((r.onnxruntime, ms))
        }
        _ => {
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err.lines().last().unwrap_or("no output").to_string();
            Err(fail(format!("{} ({last})", out.status)))
        }
    }
}
