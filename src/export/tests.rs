//! The exporter's graphs: which nodes each family gets, how the shuffle is encoded, and that
//! the encoded file has the structure of the in-memory model. (Numerical agreement with
//! onnxruntime is `tests/onnx/check.py`'s job.)

use candle_core::Device;

use super::onnx::{AttrValue, Dim, Model, TensorData};
use super::*;
use crate::config::ModelSource;
use crate::kernels::ChannelIndex;

fn deploy(model: &str, sets: &[&str]) -> Network {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    let spec = ModelSource::parse(model).resolve(&sets).unwrap().spec;
    let mut net = Network::seeded(&spec, 0, &Device::Cpu).unwrap();
    net.finish_pruning().unwrap();
    net.condense().unwrap()
}

fn export(net: &Network, opts: &ExportOptions) -> Model {
    to_onnx(net, vec![("model".into(), "test".into())], opts).unwrap()
}

fn count(m: &Model, op: &str) -> usize {
    op_counts(m).get(op).copied().unwrap_or(0)
}

/// Every op of the file, per layer of the spec: L dense layers, 3 blocks.
#[test]
fn condensenet_has_one_node_group_per_layer_object() {
    let net = deploy("condensenet-86", &[]);
    let m = export(&net, &ExportOptions::default());
    let layers = net.spec().layers().len();
    assert_eq!(layers, 42);
    // stem + (grouped 1x1 + grouped 3x3) per layer
    assert_eq!(count(&m, "Conv"), 1 + 2 * layers);
    // two pre-activations per layer + the head
    assert_eq!(count(&m, "BatchNormalization"), 2 * layers + 1);
    assert_eq!(count(&m, "Relu"), 2 * layers + 1);
    assert_eq!(count(&m, "Clip"), 0);
    // the learned-group index-select per layer + the classifier's
    assert_eq!(count(&m, "Gather"), layers + 1);
    assert_eq!(count(&m, "Transpose"), layers);
    assert_eq!(count(&m, "Reshape"), 2 * layers);
    assert_eq!(count(&m, "Concat"), layers);
    assert_eq!(count(&m, "AveragePool"), 3);
    assert_eq!((count(&m, "Flatten"), count(&m, "Gemm")), (1, 1));
    assert_eq!(m.graph.nodes.len(), 1 + 11 * layers + 1 + 1 + 3 + 3);
    let groups: Vec<&AttrValue> = m
        .graph
        .nodes
        .iter()
        .filter(|n| n.op_type == "Conv")
        .map(|n| n.attribute("group").unwrap())
        .collect();
    assert_eq!(groups[0], &AttrValue::Int(1), "stem");
    assert!(groups[1..].iter().all(|g| **g == AttrValue::Int(4)));
}

#[test]
fn condensenext_is_select_depthwise_pointwise_with_relu6() {
    let net = deploy("condensenext", &[]);
    let m = export(&net, &ExportOptions::default());
    let layers = net.spec().layers().len();
    assert_eq!(layers, 12);
    // stem + (depthwise + pointwise + grouped 3x3) per layer
    assert_eq!(count(&m, "Conv"), 1 + 3 * layers);
    assert_eq!(count(&m, "Clip"), 2 * layers + 1);
    assert_eq!(count(&m, "Relu"), 0);
    assert_eq!(count(&m, "Gather"), layers + 1);
    assert_eq!(count(&m, "Transpose"), 0, "learned-dsc has no shuffle");
    // The depthwise conv has one group per gathered channel.
    let dw = m
        .graph
        .nodes
        .iter()
        .find(|n| n.name == "block0.layer0.bottleneck.dw")
        .unwrap();
    let taps = m
        .graph
        .initializers
        .iter()
        .find(|t| t.name == "block0.layer0.bottleneck.index")
        .unwrap()
        .dims[0];
    assert_eq!(taps, 64, "p * Cin kernels");
    assert_eq!(dw.attribute("group"), Some(&AttrValue::Int(taps)));
    let clip = m.graph.nodes.iter().find(|n| n.op_type == "Clip").unwrap();
    assert_eq!(clip.inputs[1..], ["relu6.min", "relu6.max"]);
}

#[test]
fn learned_dsc_with_groups_keeps_its_gather_and_grouped_kernels() {
    // cardinality 8 on W = 32: 4 groups of 8 outputs, each keeping p * Cin/4 kernels.
    let net = deploy("condensenext", &["cardinality=8", "p=2"]);
    let m = export(&net, &ExportOptions::default());
    let index = m
        .graph
        .initializers
        .iter()
        .find(|t| t.name == "block0.layer0.bottleneck.index")
        .unwrap();
    // Cin = 16, 4 groups of 4 inputs: each group keeps 4*8 - 8*floor(4*(8-2)/8) = 32 - 24 = 8.
    assert_eq!(index.dims, [32]);
    let TensorData::I64(values) = &index.data else {
        panic!("index is int64")
    };
    // Group g's kernels read inputs 4g..4g+4 only.
    for (k, &v) in values.iter().enumerate() {
        let group = k / 8;
        assert!(
            (4 * group as i64..4 * group as i64 + 4).contains(&v),
            "{k}: {v}"
        );
    }
}

/// The shuffle is Reshape [0, G, C/G, H, W] -> Transpose [0, 2, 1, 3, 4] -> Reshape
/// [0, C, H, W], and that computes the deploy form's permutation.
#[test]
fn the_shuffle_is_reshape_transpose_reshape() {
    let net = deploy("condensenet-86", &[]);
    let m = export(&net, &ExportOptions::default());
    let name = "block1.layer3.bottleneck";
    let at = m
        .graph
        .nodes
        .iter()
        .position(|n| n.name == format!("{name}.shuffle.split"))
        .unwrap();
    let nodes = &m.graph.nodes[at - 1..at + 3];
    let ops: Vec<&str> = nodes.iter().map(|n| n.op_type).collect();
    assert_eq!(ops, ["Conv", "Reshape", "Transpose", "Reshape"]);
    assert_eq!(nodes[1].inputs[0], nodes[0].outputs[0]);
    assert_eq!(
        nodes[2].attribute("perm"),
        Some(&AttrValue::Ints(vec![0, 2, 1, 3, 4]))
    );
    let shape = |value: &str| match &m
        .graph
        .initializers
        .iter()
        .find(|t| t.name == value)
        .unwrap()
        .data
    {
        TensorData::I64(v) => v.clone(),
        _ => panic!("{value} is not int64"),
    };
    // Block 1: growth 16, W = 64, 4 groups, 16x16 maps; 0 keeps the dynamic batch.
    let (g, c) = (4usize, 64usize);
    assert_eq!(shape(&nodes[1].inputs[1]), [0, 4, 16, 16, 16]);
    assert_eq!(shape(&nodes[3].inputs[1]), [0, 64, 16, 16]);
    // Applying the three ops to channel ids gives the permutation the deploy form runs.
    let mut out = vec![0u32; c];
    for a in 0..c / g {
        for gi in 0..g {
            out[a * g + gi] = (gi * (c / g) + a) as u32;
        }
    }
    assert_eq!(out, ChannelIndex::shuffle(c, g).to_vec());
}

#[test]
fn the_batch_is_dynamic_and_the_output_is_logits() {
    let m = export(&deploy("condensenext", &[]), &ExportOptions::default());
    let input = &m.graph.inputs[0];
    assert_eq!(input.name, INPUT);
    assert_eq!(
        input.dims,
        [
            Dim::Param("N".into()),
            Dim::Value(3),
            Dim::Value(32),
            Dim::Value(32)
        ]
    );
    let output = &m.graph.outputs[0];
    assert_eq!(output.name, OUTPUT);
    assert_eq!(output.dims, [Dim::Param("N".into()), Dim::Value(10)]);
    let last = m.graph.nodes.last().unwrap();
    assert_eq!((last.op_type, last.outputs[0].as_str()), ("Gemm", OUTPUT));
    assert_eq!(last.attribute("transB"), Some(&AttrValue::Int(1)));
}

#[test]
fn normalising_in_the_graph_adds_sub_and_div_first() {
    let opts = ExportOptions {
        normalize_input: true,
        ..ExportOptions::default()
    };
    let m = export(&deploy("condensenext", &[]), &opts);
    let first: Vec<(&str, &str)> = m.graph.nodes[..3]
        .iter()
        .map(|n| (n.op_type, n.inputs[0].as_str()))
        .collect();
    assert_eq!(
        first,
        [
            ("Sub", INPUT),
            ("Div", "normalize.centre"),
            ("Conv", "normalize")
        ]
    );
}

#[test]
fn the_training_form_is_refused() {
    let spec = ModelSource::parse("condensenext")
        .resolve(&[])
        .unwrap()
        .spec;
    let net = Network::seeded(&spec, 0, &Device::Cpu).unwrap();
    let e = to_onnx(&net, vec![], &ExportOptions::default()).unwrap_err();
    assert!(e.to_string().contains("only the deploy form"), "{e}");
}

/// The fields of an encoded message, read by [`crate::proto::fields`]: numbers as `Ok`, the
/// bytes of length-delimited fields as `Err`.
fn fields(b: &[u8]) -> Vec<(u32, Result<u64, &[u8]>)> {
    use crate::proto::FieldValue;
    crate::proto::fields(b)
        .map(|f| {
            let (n, v) = f.unwrap();
            let v = match v {
                FieldValue::Bytes(b) => Err(b),
                FieldValue::Varint(v) | FieldValue::Fixed64(v) => Ok(v),
                FieldValue::Fixed32(v) => Ok(u64::from(v)),
            };
            (n, v)
        })
        .collect()
}

#[test]
fn the_encoded_file_has_the_models_structure() {
    let net = deploy("condensenext", &[]);
    let m = to_onnx(
        &net,
        vec![
            ("model".into(), "condensenext".into()),
            ("git_commit".into(), "abc".into()),
        ],
        &ExportOptions::default(),
    )
    .unwrap();
    let bytes = m.encode();
    let top = fields(&bytes);
    let get = |f: u32| top.iter().filter(move |(n, _)| *n == f).map(|(_, v)| *v);
    assert_eq!(
        get(1).collect::<Vec<_>>(),
        [Ok(8)],
        "ir_version of opset 17"
    );
    let opset: Vec<_> = get(8).map(|v| fields(v.unwrap_err())).collect();
    assert_eq!(opset, [vec![(1, Err(&b""[..])), (2, Ok(17))]]);
    let meta: Vec<String> = get(14)
        .map(|v| String::from_utf8(fields(v.unwrap_err())[0].1.unwrap_err().to_vec()).unwrap())
        .collect();
    assert_eq!(meta, ["model", "git_commit"]);
    let graph = fields(get(7).next().unwrap().unwrap_err());
    let count = |f: u32| graph.iter().filter(|(n, _)| *n == f).count();
    assert_eq!(count(1), m.graph.nodes.len());
    assert_eq!(count(5), m.graph.initializers.len());
    assert_eq!((count(11), count(12)), (1, 1));
    // Every parameter of the deploy form is stored once, as float32 raw data.
    let float_bytes: usize = graph
        .iter()
        .filter(|(n, _)| *n == 5)
        .map(|(_, v)| fields(v.unwrap_err()))
        .filter(|t| t.contains(&(2, Ok(1))))
        .map(|t| {
            t.iter()
                .find(|(n, _)| *n == 9)
                .unwrap()
                .1
                .unwrap_err()
                .len()
        })
        .sum();
    let params: usize = net
        .state()
        .iter()
        .filter(|(_, t)| !matches!(t, crate::model::StateTensor::Index(_)))
        .map(|(_, t)| t.tensor().elem_count())
        .sum();
    assert_eq!(
        float_bytes,
        4 * (params + 2),
        "parameters + the two Clip bounds"
    );
}
