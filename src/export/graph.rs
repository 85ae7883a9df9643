//! Building an ONNX graph node by node: value names kept unique, constants (initializers)
//! taken from candle tensors, one helper per op the deploy form uses.
//!
//! Invariant: every name a node reads is a graph input, an initializer or the output of an
//! earlier node, so the nodes come out in topological order.

use std::collections::HashSet;

use candle_core::{DType, Tensor};

use super::onnx::Tensor as Constant;
use super::onnx::{Attribute, Dim, ElemType, Graph, Node, TensorData, ValueInfo};

/// A graph under construction; values are named by the caller (layer names), made unique.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    nodes: Vec<Node>,
    initializers: Vec<Constant>,
    /// Every value name in use: inputs, initializers, node outputs.
    values: HashSet<String>,
}

impl GraphBuilder {
    /// A graph whose input values are `inputs`.
    pub fn new(inputs: &[&str]) -> Self {
        Self {
            values: inputs.iter().map(|s| s.to_string()).collect(),
            ..Self::default()
        }
    }

    /// `name`, or `name_2`, `name_3`, ... if it is taken; reserved from now on.
    fn unique(&mut self, name: &str) -> String {
        let mut candidate = name.to_string();
        let mut n = 1;
        while self.values.contains(&candidate) {
            n += 1;
            candidate = format!("{name}_{n}");
        }
        self.values.insert(candidate.clone());
        candidate
    }

    /// Adds a constant; returns its value name.
    pub fn constant(&mut self, name: &str, dims: &[usize], data: TensorData) -> String {
        debug_assert_eq!(dims.iter().product::<usize>(), data.len(), "{name}");
        let name = self.unique(name);
        self.initializers.push(Constant {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data,
        });
        name
    }

    /// A float32 constant holding `t` (any float dtype), with `t`'s shape.
    pub fn tensor(&mut self, name: &str, t: &Tensor) -> candle_core::Result<String> {
        let values = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        Ok(self.constant(name, t.dims(), TensorData::F32(values)))
    }

    /// An int64 1-D constant holding the channel index `values`.
    pub fn index(&mut self, name: &str, values: &[u32]) -> String {
        let data = TensorData::I64(values.iter().map(|&v| v as i64).collect());
        self.constant(name, &[values.len()], data)
    }

    /// An int64 1-D constant (a shape).
    pub fn shape(&mut self, name: &str, dims: &[i64]) -> String {
        self.constant(name, &[dims.len()], TensorData::I64(dims.to_vec()))
    }

    /// Adds a node `op(inputs)` named `name` with one output, also named `name` (made
    /// unique); returns the output's name.
    pub fn node(
        &mut self,
        op: &'static str,
        name: &str,
        inputs: &[&str],
        attributes: Vec<Attribute>,
    ) -> String {
        debug_assert!(
            inputs.iter().all(|i| self.values.contains(*i)),
            "{op} {name} reads an undefined value: {inputs:?}"
        );
        let output = self.unique(name);
        self.nodes.push(Node {
            name: output.clone(),
            op_type: op,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: vec![output.clone()],
            attributes,
        });
        output
    }

    /// The nodes so far.
    #[cfg(test)]
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The finished graph: `inputs` and `outputs` name values of this graph.
    pub fn finish(
        self,
        name: &str,
        doc: &str,
        inputs: Vec<ValueInfo>,
        outputs: Vec<ValueInfo>,
    ) -> Graph {
        Graph {
            name: name.to_string(),
            doc: doc.to_string(),
            nodes: self.nodes,
            initializers: self.initializers,
            inputs,
            outputs,
        }
    }
}

/// A float32 tensor value of the given dims, for graph inputs and outputs.
pub fn float_value(name: &str, dims: Vec<Dim>, doc: &str) -> ValueInfo {
    ValueInfo {
        name: name.to_string(),
        elem_type: ElemType::Float,
        dims,
        doc: doc.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_unique() {
        let mut g = GraphBuilder::new(&["input"]);
        let a = g.node("Relu", "input", &["input"], vec![]);
        assert_eq!(a, "input_2");
        let b = g.node("Relu", "act", &[&a], vec![]);
        let c = g.node("Relu", "act", &[&b], vec![]);
        assert_eq!((b.as_str(), c.as_str()), ("act", "act_2"));
        let k = g.shape("act", &[0, -1]);
        assert_eq!(k, "act_3");
        assert_eq!(g.nodes().len(), 3);
    }
}
