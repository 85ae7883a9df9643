//! ablate's own evaluation of an exported graph: each node of an [`onnx::Graph`] computed as
//! the ONNX operator specifies, in candle on the CPU. It is the reference the int8 export is
//! measured with (the QDQ graph's outputs, exactly the fake-quant arithmetic the file states)
//! and what calibration observes the float graph's activations through.
//!
//! Only the ops the exporter writes are implemented, with the attributes it writes (anything
//! else is an error naming the node, never a silent guess):
//!
//! | op                   | computed as                                                         |
//! |----------------------|---------------------------------------------------------------------|
//! | QuantizeLinear       | `saturate(round_half_to_even(x / scale) + zero_point)`, per tensor  |
//! | DequantizeLinear     | `(q - zero_point) * scale`, per tensor or per axis                  |
//! | Conv                 | the deploy form's own convolution (`crate::model::convolve`)       |
//! | Gemm                 | `A B^T + C` (`transB = 1`) or `A B + C`                             |
//! | BatchNormalization   | `(x - mean) / sqrt(var + epsilon) * scale + bias`                   |
//! | Mul, Add, Sub, Div   | broadcasting elementwise                                            |
//! | Relu, Clip           | `max(x, 0)`, `min(max(x, lo), hi)`                                  |
//! | Gather (axis 1)      | index-select of channels, on float or integer tensors               |
//! | Reshape, Transpose, Flatten, Concat | as ONNX, on float or integer tensors                 |
//! | AveragePool          | kernel = stride, no padding                                         |
//!
//! Integer tensors (uint8, int8, int32) are held as f32 tensors of their exact values (int32
//! values beyond 2^24 rounded as `static_cast<float>` rounds them, which is what
//! DequantizeLinear computes with), with their element type beside them.

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use super::onnx::{AttrValue, ElemType, Graph, Node, Tensor as Constant};
use crate::model::{convolve, Conv2dConfig};

/// Why a graph cannot be evaluated.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("node `{node}` ({op}): {message}")]
    Node {
        node: String,
        op: &'static str,
        message: String,
    },
    #[error("the graph has no value `{0}`")]
    Missing(String),
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

type Result<T> = std::result::Result<T, EvalError>;

/// A value of the graph under evaluation.
#[derive(Debug, Clone)]
pub enum Value {
    /// A float32 tensor.
    Float(Tensor),
    /// An integer tensor: f32 values that are the exact integers (see the module doc).
    Int { data: Tensor, elem: ElemType },
}

impl Value {
    fn tensor(&self) -> &Tensor {
        match self {
            Value::Float(t) | Value::Int { data: t, .. } => t,
        }
    }

    /// The same kind of value holding `t`.
    fn with(&self, t: Tensor) -> Value {
        match self {
            Value::Float(_) => Value::Float(t),
            Value::Int { elem, .. } => Value::Int {
                data: t,
                elem: *elem,
            },
        }
    }
}

/// `round_half_to_even(x / scale) + zero_point`, saturated to `[lo, hi]`: ONNX QuantizeLinear
/// for one element (the division in f32, as the operator and onnxruntime compute it).
pub fn quantize(x: f32, scale: f32, zero_point: f32, lo: f32, hi: f32) -> f32 {
    ((x / scale).round_ties_even() + zero_point).clamp(lo, hi)
}

/// The range of an integer element type.
fn range(elem: ElemType) -> Option<(f32, f32)> {
    match elem {
        ElemType::Uint8 => Some((0.0, 255.0)),
        ElemType::Int8 => Some((-128.0, 127.0)),
        _ => None,
    }
}

/// Evaluates `graph` on its one input `x`; calls `observe` with the name and value of the
/// input and of every float node output (calibration's hook) and returns the first graph
/// output.
pub fn evaluate(
    graph: &Graph,
    x: &Tensor,
    observe: &mut dyn FnMut(&str, &Tensor),
) -> Result<Tensor> {
    let constants: HashMap<&str, &Constant> = graph
        .initializers
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let input = graph
        .inputs
        .first()
        .ok_or_else(|| EvalError::Missing("(a graph input)".into()))?;
    let output = graph
        .outputs
        .first()
        .ok_or_else(|| EvalError::Missing("(a graph output)".into()))?;
    // The last node reading each value, so it is freed after that node.
    let mut last_use: HashMap<&str, usize> = HashMap::new();
    for (i, n) in graph.nodes.iter().enumerate() {
        for name in &n.inputs {
            last_use.insert(name.as_str(), i);
        }
    }
    let mut values: HashMap<String, Value> = HashMap::new();
    observe(&input.name, x);
    values.insert(input.name.clone(), Value::Float(x.clone()));
    for (i, node) in graph.nodes.iter().enumerate() {
        let env = Env {
            node,
            values: &values,
            constants: &constants,
        };
        let y = env.run()?;
        if let Value::Float(t) = &y {
            observe(&node.outputs[0], t);
        }
        for name in &node.inputs {
            if last_use.get(name.as_str()) == Some(&i) && *name != output.name {
                values.remove(name);
            }
        }
        values.insert(node.outputs[0].clone(), y);
    }
    match values.remove(&output.name) {
        Some(Value::Float(t)) => Ok(t),
        Some(Value::Int { .. }) => Err(EvalError::Missing(format!(
            "{} as float (it is an integer tensor)",
            output.name
        ))),
        None => Err(EvalError::Missing(output.name.clone())),
    }
}

/// One node with the values it can read.
struct Env<'a> {
    node: &'a Node,
    values: &'a HashMap<String, Value>,
    constants: &'a HashMap<&'a str, &'a Constant>,
}

impl Env<'_> {
    fn fail(&self, message: impl Into<String>) -> EvalError {
        EvalError::Node {
            node: self.node.name.clone(),
            op: self.node.op_type,
            message: message.into(),
        }
    }

    /// Input `i`: a computed value or an initializer.
    fn value(&self, i: usize) -> Result<Value> {
        let name = self
            .node
            .inputs
            .get(i)
            .ok_or_else(|| self.fail(format!("expected an input {i}")))?;
        if let Some(v) = self.values.get(name) {
            return Ok(v.clone());
        }
        let c = self
            .constants
            .get(name.as_str())
            .ok_or_else(|| EvalError::Missing(name.clone()))?;
        let dims: Vec<usize> = c.dims.iter().map(|&d| d as usize).collect();
        let data = Tensor::from_vec(c.data.to_f32(), dims, &Device::Cpu)?;
        Ok(match c.data.elem_type() {
            ElemType::Float => Value::Float(data),
            elem => Value::Int { data, elem },
        })
    }

    fn float(&self, i: usize) -> Result<Tensor> {
        match self.value(i)? {
            Value::Float(t) => Ok(t),
            Value::Int { elem, .. } => {
                Err(self.fail(format!("input {i} is {elem:?}; expected float")))
            }
        }
    }

    /// Input `i`, an integer initializer (indices, shapes).
    fn ints(&self, i: usize) -> Result<Vec<i64>> {
        let name = self.node.inputs.get(i).map(String::as_str).unwrap_or("");
        self.constants
            .get(name)
            .and_then(|c| c.data.to_i64())
            .ok_or_else(|| self.fail(format!("input {i} must be an integer initializer")))
    }

    fn int_attr(&self, name: &str, default: Option<i64>) -> Result<i64> {
        match self.node.attribute(name) {
            Some(AttrValue::Int(v)) => Ok(*v),
            None => default.ok_or_else(|| self.fail(format!("missing attribute {name}"))),
            Some(_) => Err(self.fail(format!("attribute {name} is not an int"))),
        }
    }

    fn ints_attr(&self, name: &str) -> Result<Vec<i64>> {
        match self.node.attribute(name) {
            Some(AttrValue::Ints(v)) => Ok(v.clone()),
            _ => Err(self.fail(format!("missing ints attribute {name}"))),
        }
    }

    /// `axis` for a tensor of `rank` dims (negative counts from the end).
    fn axis(&self, rank: usize, default: i64) -> Result<usize> {
        let a = self.int_attr("axis", Some(default))?;
        let a = if a < 0 { a + rank as i64 } else { a };
        usize::try_from(a)
            .ok()
            .filter(|&a| a < rank.max(1))
            .ok_or_else(|| self.fail(format!("axis {a} out of range for rank {rank}")))
    }

    fn run(&self) -> Result<Value> {
        let f = |t: Tensor| Ok(Value::Float(t));
        match self.node.op_type {
            "QuantizeLinear" => self.quantize_linear(),
            "DequantizeLinear" => self.dequantize_linear(),
            "Conv" => f(self.conv()?),
            "Gemm" => f(self.gemm()?),
            "BatchNormalization" => f(self.batch_norm()?),
            "Mul" => f(self.float(0)?.broadcast_mul(&self.float(1)?)?),
            "Add" => f(self.float(0)?.broadcast_add(&self.float(1)?)?),
            "Sub" => f(self.float(0)?.broadcast_sub(&self.float(1)?)?),
            "Div" => f(self.float(0)?.broadcast_div(&self.float(1)?)?),
            "Relu" => f(self.float(0)?.relu()?),
            "Clip" => {
                let scalar =
                    |i| -> Result<f32> { Ok(self.float(i)?.flatten_all()?.to_vec1::<f32>()?[0]) };
                f(self.float(0)?.clamp(scalar(1)?, scalar(2)?)?)
            }
            "Gather" => {
                let x = self.value(0)?;
                let axis = self.axis(x.tensor().rank(), 0)?;
                let index = self.ints(1)?;
                let n = x.tensor().dim(axis)? as i64;
                let index: Vec<u32> = index
                    .iter()
                    .map(|&i| if i < 0 { i + n } else { i })
                    .map(|i| u32::try_from(i).ok().filter(|&i| (i as i64) < n))
                    .collect::<Option<_>>()
                    .ok_or_else(|| self.fail(format!("an index is outside 0..{n}")))?;
                let len = index.len();
                let index = Tensor::from_vec(index, len, &Device::Cpu)?;
                Ok(x.with(x.tensor().index_select(&index, axis)?))
            }
            "Reshape" => {
                let x = self.value(0)?;
                let dims = self.reshape_dims(x.tensor().dims(), &self.ints(1)?)?;
                Ok(x.with(x.tensor().reshape(dims)?))
            }
            "Transpose" => {
                let x = self.value(0)?;
                let perm: Vec<usize> = self
                    .ints_attr("perm")?
                    .iter()
                    .map(|&p| p as usize)
                    .collect();
                Ok(x.with(x.tensor().permute(perm)?.contiguous()?))
            }
            "Flatten" => {
                let x = self.value(0)?;
                let axis = self.axis(x.tensor().rank(), 1)?;
                let dims = x.tensor().dims();
                let (outer, inner) = (
                    dims[..axis].iter().product::<usize>(),
                    dims[axis..].iter().product::<usize>(),
                );
                Ok(x.with(x.tensor().reshape((outer, inner))?))
            }
            "Concat" => {
                let parts = (0..self.node.inputs.len())
                    .map(|i| self.value(i))
                    .collect::<Result<Vec<_>>>()?;
                let first = parts.first().ok_or_else(|| self.fail("no inputs"))?;
                let axis = self.axis(first.tensor().rank(), 0)?;
                let same = parts.iter().all(|p| match (p, first) {
                    (Value::Float(_), Value::Float(_)) => true,
                    (Value::Int { elem: a, .. }, Value::Int { elem: b, .. }) => a == b,
                    _ => false,
                });
                if !same {
                    return Err(self.fail("inputs of different element types"));
                }
                let tensors: Vec<&Tensor> = parts.iter().map(Value::tensor).collect();
                Ok(first.with(Tensor::cat(&tensors, axis)?))
            }
            "AveragePool" => {
                let k = self.ints_attr("kernel_shape")?;
                let s = self.ints_attr("strides")?;
                if k.len() != 2 || k[0] != k[1] || s != k || self.node.attribute("pads").is_some() {
                    return Err(self.fail("only square kernels with stride = kernel and no pads"));
                }
                f(self.float(0)?.avg_pool2d(k[0] as usize)?)
            }
            op => Err(self.fail(format!("{op} is not an op the exporter writes"))),
        }
    }

    /// A Reshape's target: 0 copies the input's dim, -1 takes what is left.
    fn reshape_dims(&self, input: &[usize], shape: &[i64]) -> Result<Vec<usize>> {
        let total: usize = input.iter().product();
        let mut dims = Vec::with_capacity(shape.len());
        let mut infer = None;
        for (i, &d) in shape.iter().enumerate() {
            match d {
                0 => dims.push(
                    *input
                        .get(i)
                        .ok_or_else(|| self.fail("0 beyond the input's rank"))?,
                ),
                -1 if infer.is_none() => {
                    infer = Some(i);
                    dims.push(1);
                }
                d if d > 0 => dims.push(d as usize),
                d => return Err(self.fail(format!("shape entry {d}"))),
            }
        }
        let known: usize = dims.iter().product();
        if let Some(i) = infer {
            if known == 0 || !total.is_multiple_of(known) {
                return Err(self.fail("cannot infer the -1 dimension"));
            }
            dims[i] = total / known;
        }
        if dims.iter().product::<usize>() != total {
            return Err(self.fail(format!("cannot reshape {input:?} to {shape:?}")));
        }
        Ok(dims)
    }

    fn quantize_linear(&self) -> Result<Value> {
        let x = self.float(0)?;
        let scale = self.float(1)?;
        let zp = self.value(2)?;
        let Value::Int { data: zp, elem } = zp else {
            return Err(self.fail("the zero point must be uint8 or int8"));
        };
        let (lo, hi) =
            range(elem).ok_or_else(|| self.fail("the zero point must be uint8 or int8"))?;
        if scale.elem_count() != 1 || zp.elem_count() != 1 {
            return Err(self.fail("only per-tensor quantization of activations is written"));
        }
        let s = scale.flatten_all()?.to_vec1::<f32>()?[0];
        let z = zp.flatten_all()?.to_vec1::<f32>()?[0];
        let q: Vec<f32> = x
            .flatten_all()?
            .to_vec1::<f32>()?
            .into_iter()
            .map(|v| quantize(v, s, z, lo, hi))
            .collect();
        Ok(Value::Int {
            data: Tensor::from_vec(q, x.dims(), &Device::Cpu)?,
            elem,
        })
    }

    fn dequantize_linear(&self) -> Result<Value> {
        let Value::Int { data: q, .. } = self.value(0)? else {
            return Err(self.fail("the input must be an integer tensor"));
        };
        let scale = self.float(1)?;
        let zp = match self.node.inputs.get(2) {
            Some(_) => self.value(2)?.tensor().clone(),
            None => Tensor::zeros_like(&scale)?,
        };
        let (scale, zp) = if scale.elem_count() == 1 {
            (scale.flatten_all()?, zp.flatten_all()?)
        } else {
            // Per axis: a 1-D scale along `axis`, broadcast over the other dims.
            let axis = self.axis(q.rank(), 1)?;
            let mut shape = vec![1; q.rank()];
            shape[axis] = scale.elem_count();
            (scale.reshape(shape.clone())?, zp.reshape(shape)?)
        };
        Ok(Value::Float(q.broadcast_sub(&zp)?.broadcast_mul(&scale)?))
    }

    fn conv(&self) -> Result<Tensor> {
        let (x, w) = (self.float(0)?, self.float(1)?);
        let k = self.ints_attr("kernel_shape")?;
        let pads = self.ints_attr("pads")?;
        let ones = |name| -> Result<bool> {
            Ok(match self.node.attribute(name) {
                None => true,
                Some(_) => self.ints_attr(name)?.iter().all(|&v| v == 1),
            })
        };
        if k.len() != 2 || k[0] != k[1] || pads.iter().any(|&p| p != pads[0]) {
            return Err(self.fail("only square kernels with equal pads are written"));
        }
        if !ones("strides")? || !ones("dilations")? {
            return Err(self.fail("only stride 1 and dilation 1 are written"));
        }
        let cfg = Conv2dConfig {
            kernel: k[0] as usize,
            padding: pads[0] as usize,
            stride: 1,
            groups: self.int_attr("group", Some(1))? as usize,
        };
        let y = convolve(&x.contiguous()?, &w.contiguous()?, cfg)?;
        match self.node.inputs.get(2) {
            Some(_) => {
                let b = self.float(2)?;
                let c = b.elem_count();
                Ok(y.broadcast_add(&b.reshape((1, c, 1, 1))?)?)
            }
            None => Ok(y),
        }
    }

    fn gemm(&self) -> Result<Tensor> {
        let (a, b) = (self.float(0)?, self.float(1)?);
        for name in ["alpha", "beta"] {
            if let Some(AttrValue::Float(v)) = self.node.attribute(name) {
                if *v != 1.0 {
                    return Err(self.fail(format!("{name} other than 1")));
                }
            }
        }
        if self.int_attr("transA", Some(0))? != 0 {
            return Err(self.fail("transA"));
        }
        let b = if self.int_attr("transB", Some(0))? == 1 {
            b.t()?
        } else {
            b
        };
        let y = a.matmul(&b.contiguous()?)?;
        match self.node.inputs.get(2) {
            Some(_) => Ok(y.broadcast_add(&self.float(2)?)?),
            None => Ok(y),
        }
    }

    fn batch_norm(&self) -> Result<Tensor> {
        let x = self.float(0)?;
        let eps = match self.node.attribute("epsilon") {
            Some(AttrValue::Float(e)) => *e as f64,
            _ => 1e-5,
        };
        let c = x.dim(1)?;
        let per_channel = |i| -> Result<Tensor> { Ok(self.float(i)?.reshape((1, c, 1, 1))?) };
        let (scale, bias, mean, var) = (
            per_channel(1)?,
            per_channel(2)?,
            per_channel(3)?,
            per_channel(4)?,
        );
        let std = (var + eps)?.sqrt()?;
        Ok(x.broadcast_sub(&mean)?
            .broadcast_div(&std)?
            .broadcast_mul(&scale)?
            .broadcast_add(&bias)?)
    }
}
