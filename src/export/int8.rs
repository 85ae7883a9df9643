//! The int8 export end to end: calibration images drawn from a run's training set, the float
//! graph's activation ranges on them ([`calibrate`]), the QDQ model ([`quantize`]), and its
//! logits as ablate's own reference computation gives them ([`graph_logits`]), which is how
//! the accuracy cost is measured rather than assumed.

use candle_core::Tensor;
use serde::Serialize;

use super::interpret::{evaluate, EvalError};
use super::onnx::{Graph, Model};
use super::quantize::{points, to_qdq, QuantizeError, Ranges};
use super::reference::{in_batches, BATCH};
use crate::rng::Rng;

/// Calibration images when `--calibration-images` is not given.
pub const DEFAULT_CALIBRATION_IMAGES: usize = 256;
/// How activation ranges are set: the minimum and maximum over the calibration images.
pub const CALIBRATION_RULE: &str = "min-max";

/// Why an int8 model could not be made or evaluated.
#[derive(Debug, thiserror::Error)]
pub enum Int8Error {
    #[error(transparent)]
    Eval(#[from] EvalError),
    #[error(transparent)]
    Quantize(#[from] QuantizeError),
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

/// Which images calibrated the activation ranges, as the file's metadata and the report say.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    /// [`CALIBRATION_RULE`].
    pub rule: &'static str,
    /// Images used.
    pub images: usize,
    /// The set they were drawn from, and its size.
    pub split: &'static str,
    pub of: usize,
    pub dataset: String,
    /// Drawn without replacement by this seed (the run's), stream `export/calibration`.
    pub seed: u64,
    /// The transform applied: the test-time one (no augmentation).
    pub transform: &'static str,
}

impl Calibration {
    pub fn new(images: usize, of: usize, dataset: String, seed: u64) -> Self {
        Self {
            rule: CALIBRATION_RULE,
            images,
            split: "train",
            of,
            dataset,
            seed,
            transform: "test-time (normalised, no augmentation)",
        }
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        format!(
            "{} of {} {} images ({}) drawn by seed {}; activation ranges {}",
            self.images, self.of, self.split, self.dataset, self.seed, self.rule
        )
    }
}

/// What the int8 export measured, kept beside the model (`<out>.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Int8Report {
    pub model: String,
    pub onnx: String,
    pub onnx_bytes: u64,
    pub opset: i64,
    /// [`super::quantize::SCHEME`].
    pub quantization: &'static str,
    pub calibration: Calibration,
    /// Test images evaluated: the run's whole test set.
    pub test_images: usize,
    /// Top-1 (percent) of ablate's deploy network on them.
    pub float_test_top1: f64,
    /// Top-1 (percent) of the QDQ graph on them, by ablate's reference computation.
    pub int8_test_top1: f64,
    /// `int8_test_top1 - float_test_top1`, percentage points.
    pub difference: f64,
    /// The run's own `deploy_test_top1` from its summary.json.
    pub run_deploy_test_top1: Option<f64>,
}

/// `n` distinct indices of `0..len` (all of them when `n >= len`), drawn by `seed`: a partial
/// Fisher-Yates shuffle from the project's seeded generator.
pub fn calibration_indices(len: usize, n: usize, seed: u64) -> Vec<usize> {
    let n = n.min(len);
    let mut order: Vec<usize> = (0..len).collect();
    let mut rng = Rng::for_stream(seed, "export/calibration");
    for i in 0..n {
        let j = i + (rng.next_u64() % (len - i) as u64) as usize;
        order.swap(i, j);
    }
    order.truncate(n);
    order
}

/// The activation range of every [`points`] value of the float `graph` over `input` (images in
/// the graph's input convention), [`BATCH`] images at a time.
pub fn calibrate(graph: &Graph, input: &Tensor) -> Result<Ranges, Int8Error> {
    let points = points(graph);
    let mut ranges = Ranges::default();
    let mut failed = None;
    let n = input.dim(0)?;
    for start in (0..n).step_by(BATCH) {
        let x = input.narrow(0, start, BATCH.min(n - start))?;
        evaluate(graph, &x, &mut |name, t| {
            if failed.is_none() && points.contains(name) {
                if let Err(e) = ranges.observe(name, t) {
                    failed = Some(e);
                }
            }
        })?;
        if let Some(e) = failed.take() {
            return Err(e.into());
        }
    }
    Ok(ranges)
}

/// `float` in QDQ form, its activations calibrated on `input`; the same opset, producer and
/// metadata (the caller adds the int8 keys).
pub fn quantize(float: &Model, input: &Tensor) -> Result<Model, Int8Error> {
    let ranges = calibrate(&float.graph, input)?;
    let graph = to_qdq(&float.graph, &ranges)?;
    Ok(Model {
        graph,
        ..float.clone()
    })
}

/// The logits `graph` gives for `input` by ablate's own evaluation, [`BATCH`] at a time.
pub fn graph_logits(graph: &Graph, input: &Tensor) -> Result<Tensor, Int8Error> {
    let mut failed = None;
    let logits = in_batches(input.dim(0)?, BATCH, |r| {
        let x = input.narrow(0, r.start, r.len())?;
        evaluate(graph, &x, &mut |_, _| {}).map_err(|e| {
            let message = e.to_string();
            failed = Some(e);
            candle_core::Error::Msg(message)
        })
    });
    match (logits, failed) {
        (_, Some(e)) => Err(e.into()),
        (logits, None) => Ok(logits?),
    }
}
