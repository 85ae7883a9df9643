//! ONNX export of the deploy form: a standard file that any ONNX runtime can execute.
//!
//! - [`onnx`]: the ONNX messages the file holds, with onnx.proto's field numbers, encoded by
//!   [`crate::proto`] (the protobuf wire format, hand-written: no `protoc`, no codegen).
//! - `graph`: a graph builder (unique value names, constants from candle tensors).
//! - `lower`: the deploy network's layer objects, one by one, as ONNX nodes.
//! - [`source`]: what to export (a done run dir's trained model, or a preset / model file with
//!   seeded weights), and the typed errors of bad input.
//! - [`reference`]: images with ablate's own logits for them, to check a runtime against.
//! - [`quantize`]: the int8 QDQ form of an exported graph; [`interpret`]: ablate's own
//!   evaluation of a graph (the reference int8 computation); [`int8`]: calibration and the
//!   measured accuracy cost.
//!
//! The file's input `input` is `[N, 3, 32, 32]` float32 with a dynamic batch `N`: RGB planes of
//! pixels scaled to [0, 1] and normalised with the CIFAR-10 [`MEAN`] and [`STD`] (the test-time
//! transform of training), or, with [`ExportOptions::normalize_input`], the scaled pixels
//! themselves and the normalisation as the graph's first two nodes. Its output `logits` is
//! `[N, classes]`.

mod graph;
pub mod int8;
pub mod interpret;
mod lower;
pub mod onnx;
pub mod quantize;
pub mod reference;
pub mod source;

pub use lower::LowerError;
pub use source::{ExportError, Exportable};

use graph::{float_value, GraphBuilder};
use onnx::{Dim, TensorData};

use crate::config::{INPUT_CHANNELS, INPUT_SIDE};
pub use crate::data::{MEAN, STD};
use crate::model::Network;

/// The graph input's name.
pub const INPUT: &str = "input";
/// The graph output's name.
pub const OUTPUT: &str = "logits";
/// The operator set written unless `--opset` says otherwise: supported by onnxruntime since
/// 1.14 and by the common embedded toolchains.
pub const DEFAULT_OPSET: i64 = 17;

/// How to write the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportOptions {
    /// Default-domain operator set, in [`onnx::OPSETS`].
    pub opset: i64,
    /// Take pixels scaled to [0, 1] and normalise inside the graph (Sub, Div).
    pub normalize_input: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            opset: DEFAULT_OPSET,
            normalize_input: false,
        }
    }
}

/// What the input holds, for the file's doc strings and metadata.
pub fn input_doc(normalize_input: bool) -> String {
    let stats = format!(
        "mean ({}, {}, {}), std ({}, {}, {})",
        MEAN[0], MEAN[1], MEAN[2], STD[0], STD[1], STD[2]
    );
    if normalize_input {
        format!(
            "float32 [N, 3, 32, 32]: RGB planes of pixels scaled to [0, 1] (byte / 255); the \
             graph normalises them per channel with the CIFAR-10 {stats}"
        )
    } else {
        format!(
            "float32 [N, 3, 32, 32]: RGB planes of pixels scaled to [0, 1] (byte / 255), then \
             normalised per channel as (x - mean) / std with the CIFAR-10 {stats}"
        )
    }
}

/// `net` (deploy form) as an ONNX model with `metadata` as its `metadata_props`.
pub fn to_onnx(
    net: &Network,
    metadata: Vec<(String, String)>,
    opts: &ExportOptions,
) -> Result<onnx::Model, LowerError> {
    let mut g = GraphBuilder::new(&[INPUT]);
    let x = if opts.normalize_input {
        let stats = |name: &str, v: [f32; 3], g: &mut GraphBuilder| {
            g.constant(name, &[1, 3, 1, 1], TensorData::F32(v.to_vec()))
        };
        let mean = stats("normalize.mean", MEAN, &mut g);
        let std = stats("normalize.std", STD, &mut g);
        let centred = g.node("Sub", "normalize.centre", &[INPUT, &mean], vec![]);
        g.node("Div", "normalize", &[&centred, &std], vec![])
    } else {
        INPUT.to_string()
    };
    lower::Lowering::new(&mut g).network(net, &x, OUTPUT)?;
    let classes = net.spec().classes as i64;
    let side = INPUT_SIDE as i64;
    let input = float_value(
        INPUT,
        vec![
            Dim::Param("N".into()),
            Dim::Value(INPUT_CHANNELS as i64),
            Dim::Value(side),
            Dim::Value(side),
        ],
        &input_doc(opts.normalize_input),
    );
    let output = float_value(
        OUTPUT,
        vec![Dim::Param("N".into()), Dim::Value(classes)],
        "float32 [N, classes]: class scores before softmax (cross-entropy models) or sigmoid \
         (focal-loss models); argmax is the prediction",
    );
    let name = metadata
        .iter()
        .find(|(k, _)| k == "model")
        .map_or("ablate", |(_, v)| v.as_str())
        .to_string();
    let doc = format!(
        "{name}: the deploy form of a CondenseNet-family network exported by ablate. Input \
         `{INPUT}`: {}. Output `{OUTPUT}`: [N, {classes}] class scores.",
        input_doc(opts.normalize_input)
    );
    let graph = g.finish(&name, &doc, vec![input], vec![output]);
    Ok(onnx::Model {
        opset: opts.opset,
        producer_name: "ablate".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc,
        graph,
        metadata,
    })
}

/// How many nodes of each op type `model` has, by op type.
pub fn op_counts(model: &onnx::Model) -> std::collections::BTreeMap<&'static str, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for n in &model.graph.nodes {
        *counts.entry(n.op_type).or_insert(0) += 1;
    }
    counts
}

#[cfg(test)]
mod int8_tests;
#[cfg(test)]
mod tests;
