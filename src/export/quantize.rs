//! The int8 QDQ form of an exported float graph: QuantizeLinear / DequantizeLinear pairs
//! around every Conv and the Gemm and on the tensors between them, the layout onnxruntime,
//! TensorRT and the vendors' converters read.
//!
//! - **Weights**: per output channel symmetric int8 ([`quantize_weight`]): `scale_c =
//!   max|w_c| / 127`, zero point 0 (left out for convs: an omitted zero point is 0),
//!   dequantized by a per-axis DequantizeLinear (axis 0, opset 13 on: [`MIN_OPSET`]). The
//!   Gemm bias is int32 with `scale_c = scale_A * scale_W,c`.
//! - **Activations**: per tensor asymmetric uint8 ([`QParams::covering`]) from the range
//!   calibration saw (min/max, widened to hold 0 so that 0 is exact), at the
//!   [`points`]: the data input of every Conv and of the Gemm (traced back through the ops
//!   that only move elements), and the output of every Conv, Concat and AveragePool.
//! - **Pass-through**: Gather (every index-select), Reshape / Transpose (the channel shuffle)
//!   and Flatten run on the uint8 tensor itself, keeping its scale: nothing is quantized
//!   twice, and a consumer that computes gets its own DequantizeLinear.
//! - **BN** stays explicit as Mul / Add with `a = gamma / sqrt(var + eps)`, `b = beta - mean *
//!   a` (in f64, stored f32): every BN of the family is a pre-activation followed by ReLU or
//!   ReLU6 before its conv, so folding it into that conv is not exact, and there is no conv
//!   before it. Its ReLU / ReLU6 output is quantized with zero point 0, so runtimes can fuse
//!   the activation into the QuantizeLinear.
//!
//! The arithmetic every node states is what [`super::interpret`] computes.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use candle_core::Tensor;

use super::graph::GraphBuilder;
use super::onnx::{AttrValue, Attribute, Graph, Node, Tensor as Constant, TensorData};

/// The scheme in words, for the file's metadata and the report.
pub const SCHEME: &str = "QDQ (QuantizeLinear/DequantizeLinear); weights int8 per output channel, \
    symmetric (zero point 0); activations uint8 per tensor, asymmetric; Gemm bias int32; BN as \
    Mul/Add; Gather, Reshape, Transpose, Flatten on the uint8 tensors";

/// The oldest operator set whose DequantizeLinear takes per-axis scales.
pub const MIN_OPSET: i64 = 13;

/// Ops that only move or select elements: they run on the quantized tensor unchanged.
const PASS_THROUGH: [&str; 4] = ["Gather", "Reshape", "Transpose", "Flatten"];

/// Why a graph cannot be quantized.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    #[error("node `{node}`: {message}")]
    Node { node: String, message: String },
    #[error("calibration saw no values for `{0}`")]
    Uncalibrated(String),
    #[error("calibration saw a non-finite value at `{0}`; the model cannot be quantized")]
    NonFinite(String),
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

type Result<T> = std::result::Result<T, QuantizeError>;

/// The uint8 parameters of one activation tensor: `x ~ (q - zero_point) * scale`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QParams {
    /// > 0.
    pub scale: f32,
    pub zero_point: u8,
}

impl QParams {
    /// The parameters covering `[min(lo, 0), max(hi, 0)]` with 255 steps; 0 is exactly
    /// representable (the zero point is an integer), and a range that is only 0 gets scale 1.
    pub fn covering(lo: f32, hi: f32) -> Self {
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        let scale = (hi - lo) / 255.0;
        if scale.is_nan() || scale <= 0.0 || scale.is_infinite() {
            return Self {
                scale: 1.0,
                zero_point: 0,
            };
        }
        let zero_point = (-lo / scale).round_ties_even().clamp(0.0, 255.0) as u8;
        Self { scale, zero_point }
    }
}

/// Per output channel (dim 0 of `w`, `channels` rows) symmetric int8: `scale_c = max|w_c| /
/// 127` (1 for an all-zero channel), `q = round_half_to_even(w / scale_c)` in [-127, 127].
pub fn quantize_weight(w: &[f32], channels: usize) -> (Vec<i8>, Vec<f32>) {
    let per = w.len() / channels.max(1);
    let mut q = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(channels);
    for row in w.chunks(per.max(1)) {
        let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        q.extend(
            row.iter()
                .map(|v| (v / scale).round_ties_even().clamp(-127.0, 127.0) as i8),
        );
        scales.push(scale);
    }
    (q, scales)
}

/// The values of `graph` that the int8 graph holds quantized, by name.
pub fn points(graph: &Graph) -> BTreeSet<String> {
    let producer: HashMap<&str, &Node> = graph
        .nodes
        .iter()
        .flat_map(|n| n.outputs.iter().map(move |o| (o.as_str(), n)))
        .collect();
    let mut points = BTreeSet::new();
    for n in &graph.nodes {
        if matches!(n.op_type, "Conv" | "Gemm") {
            // The value the data input comes from, through the ops that only move elements.
            let mut v = n.inputs[0].as_str();
            while let Some(p) = producer
                .get(v)
                .filter(|p| PASS_THROUGH.contains(&p.op_type))
            {
                v = &p.inputs[0];
            }
            points.insert(v.to_string());
        }
        if matches!(n.op_type, "Conv" | "Concat" | "AveragePool") {
            points.insert(n.outputs[0].clone());
        }
    }
    points
}

/// The range of each point seen so far: `(min, max)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ranges(BTreeMap<String, (f32, f32)>);

impl Ranges {
    /// Widens `name`'s range to hold `t`'s values.
    pub fn observe(&mut self, name: &str, t: &Tensor) -> Result<()> {
        let flat = t.flatten_all()?;
        let lo = flat.min(0)?.to_scalar::<f32>()?;
        let hi = flat.max(0)?.to_scalar::<f32>()?;
        if !lo.is_finite() || !hi.is_finite() {
            return Err(QuantizeError::NonFinite(name.to_string()));
        }
        let r = self.0.entry(name.to_string()).or_insert((lo, hi));
        *r = (r.0.min(lo), r.1.max(hi));
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<(f32, f32)> {
        self.0.get(name).copied()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A source value as emitted into the QDQ graph.
#[derive(Debug, Clone)]
enum Emitted {
    Float(String),
    /// uint8 `name` with its parameters and their constants' names.
    Quant {
        name: String,
        q: QParams,
        scale: String,
        zero_point: String,
    },
}

/// `graph` (float, as [`super::to_onnx`] writes it) in QDQ form with the activation ranges
/// `ranges` (one per [`points`] value).
pub fn to_qdq(graph: &Graph, ranges: &Ranges) -> Result<Graph> {
    let inputs: Vec<&str> = graph.inputs.iter().map(|v| v.name.as_str()).collect();
    let mut pass = Pass {
        constants: graph
            .initializers
            .iter()
            .map(|t| (t.name.as_str(), t))
            .collect(),
        g: GraphBuilder::new(&inputs),
        values: HashMap::new(),
        copied: HashMap::new(),
        points: points(graph),
        ranges,
    };
    for name in &inputs {
        pass.values
            .insert(name.to_string(), Emitted::Float(name.to_string()));
        pass.quantize_if_point(name)?;
    }
    for node in &graph.nodes {
        pass.node(node)?;
    }
    let mut outputs = graph.outputs.clone();
    for o in &mut outputs {
        match pass.values.get(&o.name) {
            Some(Emitted::Float(name)) if *name == o.name => {}
            _ => {
                return Err(QuantizeError::Node {
                    node: o.name.clone(),
                    message: "the graph output must stay a float value of the same name".into(),
                })
            }
        }
    }
    let qdq = pass
        .g
        .finish(&graph.name, &graph.doc, graph.inputs.clone(), outputs);
    Ok(compact(qdq))
}

/// `graph` with short value names: every node output and initializer is renamed `t<n>` (n in
/// base 36) except the graph's inputs and outputs; a node keeps its name (the layer it belongs
/// to) unless it is a QuantizeLinear / DequantizeLinear, whose consumer names the layer;
/// integer indices are stored as int32 (Gather takes either); and a Conv states no attribute
/// at its default value. The int8 file is about weights: the float graph's long names,
/// repeated on every Q/DQ pair, would otherwise be a third of it.
fn compact(mut graph: Graph) -> Graph {
    let keep: BTreeSet<String> = graph
        .inputs
        .iter()
        .chain(&graph.outputs)
        .map(|v| v.name.clone())
        .collect();
    let mut names: HashMap<String, String> = HashMap::new();
    let mut rename = |name: &mut String| {
        if keep.contains(name.as_str()) {
            return;
        }
        let next = names.len();
        *name = names
            .entry(name.clone())
            .or_insert_with(|| format!("t{}", base36(next)))
            .clone();
    };
    let gathered: BTreeSet<String> = graph
        .nodes
        .iter()
        .filter(|n| n.op_type == "Gather")
        .filter_map(|n| n.inputs.get(1).cloned())
        .collect();
    for t in &mut graph.initializers {
        if gathered.contains(&t.name) {
            if let TensorData::I64(v) = &t.data {
                if let Ok(v) = v.iter().map(|&i| i32::try_from(i)).collect() {
                    t.data = TensorData::I32(v);
                }
            }
        }
        rename(&mut t.name);
    }
    for n in &mut graph.nodes {
        for v in n.inputs.iter_mut().chain(n.outputs.iter_mut()) {
            rename(v);
        }
        if matches!(n.op_type, "QuantizeLinear" | "DequantizeLinear") {
            n.name.clear();
        }
        if n.op_type == "Conv" {
            n.attributes.retain(|a| !is_conv_default(a));
        }
    }
    graph
}

/// A Conv attribute that states its default: strides or dilations of all 1, or group 1.
fn is_conv_default(a: &Attribute) -> bool {
    match (a.name, &a.value) {
        ("strides" | "dilations", AttrValue::Ints(v)) => v.iter().all(|&x| x == 1),
        ("group", AttrValue::Int(g)) => *g == 1,
        _ => false,
    }
}

/// `n` in base 36, lower case.
fn base36(mut n: usize) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(digits[n % 36]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a weight's DequantizeLinear states its zero point of 0 or leaves it out (which
/// means 0). Convs leave it out; the Gemm states it, because onnxruntime (1.20) fuses a QDQ
/// Gemm into a QGemm that then fails on per-channel scales without zero points of their shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ZeroPoint {
    Omitted,
    Stated,
}

struct Pass<'a> {
    constants: HashMap<&'a str, &'a Constant>,
    g: GraphBuilder,
    /// Every source value emitted so far, by its source name.
    values: HashMap<String, Emitted>,
    /// Source initializers copied so far: source name -> name in the new graph.
    copied: HashMap<String, String>,
    points: BTreeSet<String>,
    ranges: &'a Ranges,
}

impl Pass<'_> {
    fn fail(node: &Node, message: impl Into<String>) -> QuantizeError {
        QuantizeError::Node {
            node: node.name.clone(),
            message: message.into(),
        }
    }

    /// The source initializer `name`, copied into the new graph on first use.
    fn constant(&mut self, name: &str) -> Option<String> {
        if let Some(n) = self.copied.get(name) {
            return Some(n.clone());
        }
        let c = *self.constants.get(name)?;
        let dims: Vec<usize> = c.dims.iter().map(|&d| d as usize).collect();
        let new = self.g.constant(&c.name, &dims, c.data.clone());
        self.copied.insert(name.to_string(), new.clone());
        Some(new)
    }

    /// Input `name` of `node` as a float value: a DequantizeLinear of its own for a quantized
    /// value, the value itself or a copied initializer otherwise.
    fn float_input(&mut self, node: &Node, name: &str) -> Result<String> {
        match self.values.get(name).cloned() {
            Some(Emitted::Float(n)) => Ok(n),
            Some(Emitted::Quant {
                name: q,
                scale,
                zero_point,
                ..
            }) => Ok(self.g.node(
                "DequantizeLinear",
                &format!("{name}.dequantized"),
                &[&q, &scale, &zero_point],
                vec![],
            )),
            None => self
                .constant(name)
                .ok_or_else(|| Self::fail(node, format!("reads an undefined value `{name}`"))),
        }
    }

    /// After `name` is emitted as a float value: a QuantizeLinear if it is a point.
    fn quantize_if_point(&mut self, name: &str) -> Result<()> {
        if !self.points.contains(name) {
            return Ok(());
        }
        let Some(Emitted::Float(value)) = self.values.get(name).cloned() else {
            return Ok(());
        };
        let (lo, hi) = self
            .ranges
            .get(name)
            .ok_or_else(|| QuantizeError::Uncalibrated(name.to_string()))?;
        let q = QParams::covering(lo, hi);
        let scale = self.g.constant(
            &format!("{name}.scale"),
            &[],
            TensorData::F32(vec![q.scale]),
        );
        let zero_point = self.g.constant(
            &format!("{name}.zero_point"),
            &[],
            TensorData::U8(vec![q.zero_point]),
        );
        let quantized = self.g.node(
            "QuantizeLinear",
            &format!("{name}.quantized"),
            &[&value, &scale, &zero_point],
            vec![],
        );
        self.values.insert(
            name.to_string(),
            Emitted::Quant {
                name: quantized,
                q,
                scale,
                zero_point,
            },
        );
        Ok(())
    }

    fn node(&mut self, node: &Node) -> Result<()> {
        let output = node
            .outputs
            .first()
            .ok_or_else(|| Self::fail(node, "has no output"))?
            .clone();
        let emitted = match (node.op_type, self.values.get(&node.inputs[0]).cloned()) {
            (
                op,
                Some(Emitted::Quant {
                    name,
                    q,
                    scale,
                    zero_point,
                }),
            ) if PASS_THROUGH.contains(&op) => {
                let mut inputs = vec![name];
                for i in &node.inputs[1..] {
                    inputs.push(self.float_input(node, i)?);
                }
                let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                let name = self
                    .g
                    .node(op, &node.name, &inputs, node.attributes.clone());
                Emitted::Quant {
                    name,
                    q,
                    scale,
                    zero_point,
                }
            }
            ("Conv", _) => {
                let x = self.float_input(node, &node.inputs[0])?;
                let (w, _) = self.weight(node, 1, ZeroPoint::Omitted)?;
                let mut inputs = vec![x, w];
                if let Some(b) = node.inputs.get(2) {
                    inputs.push(self.float_input(node, b)?);
                }
                let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                Emitted::Float(
                    self.g
                        .node("Conv", &node.name, &inputs, node.attributes.clone()),
                )
            }
            ("Gemm", a) => self.gemm(node, a)?,
            ("BatchNormalization", _) => self.batch_norm(node)?,
            (op, _) => {
                let inputs = node
                    .inputs
                    .iter()
                    .map(|i| self.float_input(node, i))
                    .collect::<Result<Vec<_>>>()?;
                let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                Emitted::Float(
                    self.g
                        .node(op, &node.name, &inputs, node.attributes.clone()),
                )
            }
        };
        self.values.insert(output.clone(), emitted);
        self.quantize_if_point(&output)
    }

    /// Input `i` of `node`, a float weight initializer, as int8 per output channel (its first
    /// axis) behind a per-axis DequantizeLinear: the float value's name and the scales.
    fn weight(&mut self, node: &Node, i: usize, zp: ZeroPoint) -> Result<(String, Vec<f32>)> {
        let name = &node.inputs[i];
        let c = *self
            .constants
            .get(name.as_str())
            .ok_or_else(|| Self::fail(node, format!("weight `{name}` is not an initializer")))?;
        let TensorData::F32(w) = &c.data else {
            return Err(Self::fail(node, format!("weight `{name}` is not float")));
        };
        if c.dims.is_empty() {
            return Err(Self::fail(node, format!("weight `{name}` is a scalar")));
        }
        let dims: Vec<usize> = c.dims.iter().map(|&d| d as usize).collect();
        let channels = dims[0];
        let (q, scales) = quantize_weight(w, channels);
        let quantized = self
            .g
            .constant(&format!("{name}.quantized"), &dims, TensorData::I8(q));
        let scale = self.g.constant(
            &format!("{name}.scale"),
            &[channels],
            TensorData::F32(scales.clone()),
        );
        let mut inputs = vec![quantized, scale];
        if zp == ZeroPoint::Stated {
            inputs.push(self.g.constant(
                &format!("{name}.zero_point"),
                &[channels],
                TensorData::I8(vec![0; channels]),
            ));
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let value = self.g.node(
            "DequantizeLinear",
            &format!("{name}.dequantized"),
            &inputs,
            vec![Attribute::int("axis", 0)],
        );
        Ok((value, scales))
    }

    /// `A B^T + C` with A quantized, B int8 per row and C int32 at `scale_A * scale_B,row`.
    fn gemm(&mut self, node: &Node, a: Option<Emitted>) -> Result<Emitted> {
        let Some(Emitted::Quant { q, .. }) = a else {
            return Err(Self::fail(node, "its input A is not quantized"));
        };
        if node.attribute("transB") != Some(&AttrValue::Int(1)) {
            return Err(Self::fail(
                node,
                "expected transB = 1 (weights [outputs, inputs])",
            ));
        }
        let a = self.float_input(node, &node.inputs[0])?;
        let (b, scales) = self.weight(node, 1, ZeroPoint::Stated)?;
        let mut inputs = vec![a, b];
        if let Some(name) = node.inputs.get(2) {
            let c = *self
                .constants
                .get(name.as_str())
                .ok_or_else(|| Self::fail(node, format!("bias `{name}` is not an initializer")))?;
            let TensorData::F32(bias) = &c.data else {
                return Err(Self::fail(node, format!("bias `{name}` is not float")));
            };
            if bias.len() != scales.len() {
                return Err(Self::fail(node, "bias and weight rows differ in number"));
            }
            let bias_scales: Vec<f32> = scales.iter().map(|s| q.scale * s).collect();
            let quantized: Vec<i32> = bias
                .iter()
                .zip(&bias_scales)
                .map(|(&b, &s)| {
                    (b as f64 / s as f64)
                        .round_ties_even()
                        .clamp(i32::MIN as f64, i32::MAX as f64) as i32
                })
                .collect();
            let n = quantized.len();
            let qb = self.g.constant(
                &format!("{name}.quantized"),
                &[n],
                TensorData::I32(quantized),
            );
            let scale =
                self.g
                    .constant(&format!("{name}.scale"), &[n], TensorData::F32(bias_scales));
            inputs.push(self.g.node(
                "DequantizeLinear",
                &format!("{name}.dequantized"),
                &[&qb, &scale],
                vec![Attribute::int("axis", 0)],
            ));
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        Ok(Emitted::Float(self.g.node(
            "Gemm",
            &node.name,
            &inputs,
            node.attributes.clone(),
        )))
    }

    /// BatchNormalization as `x * a + b` per channel.
    fn batch_norm(&mut self, node: &Node) -> Result<Emitted> {
        let x = self.float_input(node, &node.inputs[0])?;
        let param = |i: usize| -> Result<Vec<f64>> {
            let name = node.inputs.get(i).map(String::as_str).unwrap_or("");
            match self.constants.get(name).map(|c| &c.data) {
                Some(TensorData::F32(v)) => Ok(v.iter().map(|&x| x as f64).collect()),
                _ => Err(Self::fail(
                    node,
                    format!("input {i} is not a float initializer"),
                )),
            }
        };
        let (gamma, beta, mean, var) = (param(1)?, param(2)?, param(3)?, param(4)?);
        let eps = match node.attribute("epsilon") {
            Some(AttrValue::Float(e)) => *e as f64,
            _ => 1e-5,
        };
        let c = gamma.len();
        if [&beta, &mean, &var].iter().any(|v| v.len() != c) {
            return Err(Self::fail(node, "parameters of different lengths"));
        }
        let a: Vec<f64> = (0..c).map(|i| gamma[i] / (var[i] + eps).sqrt()).collect();
        let b: Vec<f32> = (0..c).map(|i| (beta[i] - mean[i] * a[i]) as f32).collect();
        let a: Vec<f32> = a.into_iter().map(|v| v as f32).collect();
        let n = &node.name;
        let a = self.g.constant(
            &format!("{n}.multiplier"),
            &[1, c, 1, 1],
            TensorData::F32(a),
        );
        let b = self
            .g
            .constant(&format!("{n}.offset"), &[1, c, 1, 1], TensorData::F32(b));
        let scaled = self.g.node("Mul", &format!("{n}.scale"), &[&x, &a], vec![]);
        Ok(Emitted::Float(self.g.node(
            "Add",
            n,
            &[&scaled, &b],
            vec![],
        )))
    }
}
