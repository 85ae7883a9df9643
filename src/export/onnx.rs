//! The ONNX messages an exported model needs, with their field numbers from `onnx/onnx.proto`
//! (ModelProto, GraphProto, NodeProto, AttributeProto, TensorProto, ValueInfoProto, TypeProto,
//! TensorShapeProto, OperatorSetIdProto, StringStringEntryProto), encoded by [`crate::proto`].
//!
//! Only what the exporter writes is modelled: float32, int64 and (for the int8 QDQ form) uint8,
//! int8 and int32 tensors stored as `raw_data` (little-endian), attributes of type INT, FLOAT
//! and INTS, tensor-typed graph inputs and outputs, the default operator-set domain.

use crate::proto::Writer;

/// `TensorProto.DataType` values used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i64)]
pub enum ElemType {
    Float = 1,
    Uint8 = 2,
    Int8 = 3,
    Int32 = 6,
    Int64 = 7,
}

/// The oldest and newest default-domain operator set the exporter writes. Every op it emits
/// has the same inference semantics in this range (Clip takes min/max as inputs from 11 on).
pub const OPSETS: std::ops::RangeInclusive<i64> = 11..=21;

/// The IR version that goes with `opset` (onnx's `helper.VERSION_TABLE`: the IR version of the
/// onnx release that introduced the opset), so that runtimes of that release accept the file.
pub fn ir_version(opset: i64) -> i64 {
    match opset {
        ..=11 => 6,
        12..=14 => 7,
        15..=18 => 8,
        19..=20 => 9,
        _ => 10,
    }
}

/// A tensor's elements.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    I64(Vec<i64>),
    U8(Vec<u8>),
    I8(Vec<i8>),
    I32(Vec<i32>),
}

impl TensorData {
    pub fn elem_type(&self) -> ElemType {
        match self {
            Self::F32(_) => ElemType::Float,
            Self::I64(_) => ElemType::Int64,
            Self::U8(_) => ElemType::Uint8,
            Self::I8(_) => ElemType::Int8,
            Self::I32(_) => ElemType::Int32,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::I64(v) => v.len(),
            Self::U8(v) => v.len(),
            Self::I8(v) => v.len(),
            Self::I32(v) => v.len(),
        }
    }

    /// The elements as `f32`: exact for the 8-bit types, rounded to the nearest `f32` for
    /// large int32 and int64 values (as `static_cast<float>` does).
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            Self::F32(v) => v.clone(),
            Self::I64(v) => v.iter().map(|&x| x as f32).collect(),
            Self::U8(v) => v.iter().map(|&x| x as f32).collect(),
            Self::I8(v) => v.iter().map(|&x| x as f32).collect(),
            Self::I32(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// The elements as `i64`, for integer tensors (indices, shapes, zero points).
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        match self {
            Self::F32(_) => None,
            Self::I64(v) => Some(v.clone()),
            Self::U8(v) => Some(v.iter().map(|&x| x as i64).collect()),
            Self::I8(v) => Some(v.iter().map(|&x| x as i64).collect()),
            Self::I32(v) => Some(v.iter().map(|&x| x as i64).collect()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Little-endian fixed-width bytes, as `raw_data` holds them.
    fn raw(&self) -> Vec<u8> {
        match self {
            Self::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::U8(v) => v.clone(),
            Self::I8(v) => v.iter().map(|&x| x as u8).collect(),
            Self::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

/// `TensorProto`: a named constant (an initializer). `dims` multiply to `data.len()` (an
/// empty `dims` is a scalar).
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub dims: Vec<i64>,
    pub data: TensorData,
}

impl Tensor {
    fn encode(&self, w: &mut Writer) {
        w.repeated_int64(1, &self.dims);
        w.int64(2, self.data.elem_type() as i64);
        w.string(8, &self.name);
        w.bytes(9, &self.data.raw());
    }
}

/// An attribute value (`AttributeProto.type` INT = 2, FLOAT = 1, INTS = 7).
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Int(i64),
    Float(f32),
    Ints(Vec<i64>),
}

/// `AttributeProto`.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribute {
    pub name: &'static str,
    pub value: AttrValue,
}

impl Attribute {
    pub fn int(name: &'static str, v: i64) -> Self {
        Self {
            name,
            value: AttrValue::Int(v),
        }
    }

    pub fn float(name: &'static str, v: f32) -> Self {
        Self {
            name,
            value: AttrValue::Float(v),
        }
    }

    pub fn ints(name: &'static str, v: &[i64]) -> Self {
        Self {
            name,
            value: AttrValue::Ints(v.to_vec()),
        }
    }

    fn encode(&self, w: &mut Writer) {
        w.string(1, self.name);
        match &self.value {
            AttrValue::Float(v) => {
                w.float(2, *v);
                w.int64(20, 1);
            }
            AttrValue::Int(v) => {
                w.int64(3, *v);
                w.int64(20, 2);
            }
            AttrValue::Ints(v) => {
                w.repeated_int64(8, v);
                w.int64(20, 7);
            }
        }
    }
}

/// `NodeProto` of the default domain.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    pub op_type: &'static str,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attributes: Vec<Attribute>,
}

impl Node {
    /// The attribute `name`, if the node has it.
    pub fn attribute(&self, name: &str) -> Option<&AttrValue> {
        self.attributes
            .iter()
            .find(|a| a.name == name)
            .map(|a| &a.value)
    }

    fn encode(&self, w: &mut Writer) {
        for input in &self.inputs {
            w.string(1, input);
        }
        for output in &self.outputs {
            w.string(2, output);
        }
        if !self.name.is_empty() {
            w.string(3, &self.name);
        }
        w.string(4, self.op_type);
        for a in &self.attributes {
            w.message(5, |m| a.encode(m));
        }
    }
}

/// One dimension of a `TensorShapeProto`.
#[derive(Debug, Clone, PartialEq)]
pub enum Dim {
    Value(i64),
    /// A symbolic dimension (`dim_param`), e.g. the batch `N`.
    Param(String),
}

/// `ValueInfoProto` of a tensor: a graph input or output.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueInfo {
    pub name: String,
    pub elem_type: ElemType,
    pub dims: Vec<Dim>,
    pub doc: String,
}

impl ValueInfo {
    fn encode(&self, w: &mut Writer) {
        w.string(1, &self.name);
        // TypeProto { tensor_type = 1: Tensor { elem_type = 1, shape = 2 } }
        w.message(2, |t| {
            t.message(1, |tensor| {
                tensor.int64(1, self.elem_type as i64);
                tensor.message(2, |shape| {
                    for d in &self.dims {
                        shape.message(1, |dim| match d {
                            Dim::Value(v) => dim.int64(1, *v),
                            Dim::Param(p) => dim.string(2, p),
                        });
                    }
                });
            });
        });
        if !self.doc.is_empty() {
            w.string(3, &self.doc);
        }
    }
}

/// `GraphProto`: nodes in topological order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Graph {
    pub name: String,
    pub doc: String,
    pub nodes: Vec<Node>,
    pub initializers: Vec<Tensor>,
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
}

impl Graph {
    fn encode(&self, w: &mut Writer) {
        for n in &self.nodes {
            w.message(1, |m| n.encode(m));
        }
        w.string(2, &self.name);
        for t in &self.initializers {
            w.message(5, |m| t.encode(m));
        }
        if !self.doc.is_empty() {
            w.string(10, &self.doc);
        }
        for v in &self.inputs {
            w.message(11, |m| v.encode(m));
        }
        for v in &self.outputs {
            w.message(12, |m| v.encode(m));
        }
    }
}

/// `ModelProto` importing the default domain at `opset`.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub opset: i64,
    pub producer_name: String,
    pub producer_version: String,
    pub doc: String,
    pub graph: Graph,
    /// `metadata_props`, keys distinct, in this order.
    pub metadata: Vec<(String, String)>,
}

impl Model {
    /// The serialised `ModelProto` (what a `.onnx` file holds).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.int64(1, ir_version(self.opset));
        w.string(2, &self.producer_name);
        w.string(3, &self.producer_version);
        w.string(6, &self.doc);
        w.message(7, |g| self.graph.encode(g));
        // OperatorSetIdProto { domain = 1 (empty: the default one), version = 2 }
        w.message(8, |o| {
            o.string(1, "");
            o.int64(2, self.opset);
        });
        for (key, value) in &self.metadata {
            w.message(14, |e| {
                e.string(1, key);
                e.string(2, value);
            });
        }
        w.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ir_versions_follow_onnx_releases() {
        assert_eq!(ir_version(11), 6);
        assert_eq!(ir_version(13), 7);
        assert_eq!(ir_version(17), 8);
        assert_eq!(ir_version(19), 9);
        assert_eq!(ir_version(21), 10);
    }

    #[test]
    fn a_tensor_encodes_dims_type_name_and_raw_data() {
        let t = Tensor {
            name: "w".into(),
            dims: vec![2],
            data: TensorData::F32(vec![1.0, -2.5]),
        };
        let mut w = Writer::new();
        t.encode(&mut w);
        assert_eq!(
            w.into_bytes(),
            [
                0x08, 0x02, // dims = [2]
                0x10, 0x01, // data_type = FLOAT
                0x42, 0x01, b'w', // name = "w"
                0x4a, 0x08, 0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x20, 0xc0, // raw_data
            ]
        );
        let idx = Tensor {
            name: "i".into(),
            dims: vec![],
            data: TensorData::I64(vec![-1]),
        };
        let mut w = Writer::new();
        idx.encode(&mut w);
        assert_eq!(
            w.into_bytes(),
            [
                0x10, 0x07, 0x42, 0x01, b'i', 0x4a, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                0xff
            ]
        );
    }

    /// The quantized types: uint8 = 2, int8 = 3 (two's complement bytes), int32 = 6.
    #[test]
    fn quantized_tensors_encode_their_type_and_bytes() {
        let encode = |data: TensorData| {
            let mut w = Writer::new();
            Tensor {
                name: "q".into(),
                dims: vec![2],
                data,
            }
            .encode(&mut w);
            w.into_bytes()
        };
        let head = |t: u8| vec![0x08, 0x02, 0x10, t, 0x42, 0x01, b'q', 0x4a];
        assert_eq!(
            encode(TensorData::U8(vec![0, 255])),
            [head(2), vec![2, 0, 255]].concat()
        );
        assert_eq!(
            encode(TensorData::I8(vec![-1, 127])),
            [head(3), vec![2, 0xff, 0x7f]].concat()
        );
        assert_eq!(
            encode(TensorData::I32(vec![-2, 1])),
            [head(6), vec![8, 0xfe, 0xff, 0xff, 0xff, 1, 0, 0, 0]].concat()
        );
    }

    #[test]
    fn attributes_carry_their_type() {
        let mut w = Writer::new();
        Attribute::ints("perm", &[0, 2]).encode(&mut w);
        assert_eq!(
            w.into_bytes(),
            [0x0a, 0x04, b'p', b'e', b'r', b'm', 0x40, 0x00, 0x40, 0x02, 0xa0, 0x01, 0x07]
        );
        let mut w = Writer::new();
        Attribute::int("axis", 1).encode(&mut w);
        assert_eq!(
            w.into_bytes(),
            [0x0a, 0x04, b'a', b'x', b'i', b's', 0x18, 0x01, 0xa0, 0x01, 0x02]
        );
        let mut w = Writer::new();
        Attribute::float("epsilon", 1.0).encode(&mut w);
        assert_eq!(
            w.into_bytes(),
            [
                0x0a, 0x07, b'e', b'p', b's', b'i', b'l', b'o', b'n', 0x15, 0x00, 0x00, 0x80, 0x3f,
                0xa0, 0x01, 0x01
            ]
        );
    }

    #[test]
    fn a_dynamic_batch_dimension_is_a_dim_param() {
        let v = ValueInfo {
            name: "x".into(),
            elem_type: ElemType::Float,
            dims: vec![Dim::Param("N".into()), Dim::Value(3)],
            doc: String::new(),
        };
        let mut w = Writer::new();
        v.encode(&mut w);
        assert_eq!(
            w.into_bytes(),
            [
                0x0a, 0x01, b'x', // name
                0x12, 0x0f, // type: TypeProto
                0x0a, 0x0d, // tensor_type
                0x08, 0x01, // elem_type FLOAT
                0x12, 0x09, // shape
                0x0a, 0x03, 0x12, 0x01, b'N', // dim { dim_param: "N" }
                0x0a, 0x02, 0x08, 0x03, // dim { dim_value: 3 }
            ]
        );
    }
}
