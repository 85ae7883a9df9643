//! The int8 form: the quantization arithmetic, ablate's own evaluation of a graph against the
//! deploy network, and the structure of the QDQ graph (what is quantized, what passes the
//! uint8 tensors through). Agreement with onnxruntime is `tests/onnx/check_int8.py`'s job.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use candle_nn::ModuleT;

use super::graph::GraphBuilder;
use super::int8::{calibrate, calibration_indices, graph_logits, quantize};
use super::interpret::{evaluate, quantize as quantize_one};
use super::onnx::{AttrValue, Attribute, Graph, Model, Node, TensorData};
use super::quantize::{points, quantize_weight, to_qdq, QParams, QuantizeError, Ranges};
use super::reference::{inputs, random_images};
use super::*;
use crate::config::ModelSource;

fn deploy(model: &str, sets: &[&str], seed: u64) -> Network {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    let spec = ModelSource::parse(model).resolve(&sets).unwrap().spec;
    let mut net = Network::seeded(&spec, seed, &Device::Cpu).unwrap();
    net.finish_pruning().unwrap();
    net.condense().unwrap()
}

fn float_model(net: &Network, opts: &ExportOptions) -> Model {
    to_onnx(net, vec![("model".into(), "test".into())], opts).unwrap()
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn quantize_rounds_half_to_even_and_saturates() {
    let q = |x| quantize_one(x, 1.0, 0.0, 0.0, 255.0);
    assert_eq!(
        [q(2.5), q(3.5), q(-0.5), q(0.49), q(254.6), q(300.0)],
        [2.0, 4.0, 0.0, 0.0, 255.0, 255.0]
    );
    // With a zero point: -1.5 rounds to -2 (even), + 128.
    assert_eq!(quantize_one(-1.5, 1.0, 128.0, 0.0, 255.0), 126.0);
    assert_eq!(quantize_one(-1000.0, 0.5, 128.0, 0.0, 255.0), 0.0);
    // The division is in f32, as the operator states: 0.3 / 0.1 is 2.9999998, rounded to 3.
    assert_eq!(quantize_one(0.3, 0.1, 0.0, 0.0, 255.0), 3.0);
    assert_eq!(quantize_one(-128.6, 1.0, 0.0, -128.0, 127.0), -128.0);
}

#[test]
fn activation_parameters_hold_zero_exactly() {
    let q = QParams::covering(-1.0, 3.0);
    assert_eq!(q.scale, 4.0 / 255.0);
    assert_eq!(q.zero_point, 64);
    // After a ReLU the range starts at 0: zero point 0, so the ReLU can fuse into the Q.
    let relu = QParams::covering(0.0, 6.0);
    assert_eq!((relu.scale, relu.zero_point), (6.0 / 255.0, 0));
    // A range not holding 0 is widened to it; an empty range gets scale 1.
    assert_eq!(QParams::covering(2.0, 5.1), QParams::covering(0.0, 5.1));
    assert_eq!(
        QParams::covering(0.0, 0.0),
        QParams {
            scale: 1.0,
            zero_point: 0
        }
    );
    assert_eq!(QParams::covering(-2.0, -1.0).zero_point, 255);
}

#[test]
fn weights_are_symmetric_per_output_channel() {
    let w = [1.0, -0.5, 0.25, 0.0, 0.0, 0.0, -0.2, 0.1];
    let (q, scales) = quantize_weight(&w, 4);
    assert_eq!(scales, [1.0 / 127.0, 0.25 / 127.0, 1.0, 0.2 / 127.0]);
    assert_eq!(q, [127, -64, 127, 0, 0, 0, -127, 64]);
}

#[test]
fn calibration_images_are_distinct_and_drawn_by_the_seed() {
    let a = calibration_indices(1000, 256, 3);
    assert_eq!(a.len(), 256);
    let mut sorted = a.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 256, "drawn without replacement");
    assert_eq!(a, calibration_indices(1000, 256, 3));
    assert_ne!(a, calibration_indices(1000, 256, 4));
    let all = calibration_indices(100, 256, 3);
    assert_eq!(all.len(), 100, "a smaller set is used whole");
}

/// A hand-made graph: input -> QuantizeLinear -> Gather -> DequantizeLinear (per tensor), and
/// a per-axis DequantizeLinear of an int8 constant: the values ONNX specifies, exactly.
#[test]
fn quantize_and_dequantize_nodes_compute_what_onnx_specifies() {
    let mut g = GraphBuilder::new(&["input"]);
    let s = g.constant("s", &[], TensorData::F32(vec![0.1]));
    let z = g.constant("z", &[], TensorData::U8(vec![10]));
    let q = g.node("QuantizeLinear", "q", &["input", &s, &z], vec![]);
    let index = g.index("index", &[1, 0]);
    let q = g.node(
        "Gather",
        "g",
        &[&q, &index],
        vec![Attribute::int("axis", 1)],
    );
    let x = g.node("DequantizeLinear", "dq", &[&q, &s, &z], vec![]);
    let w = g.constant("w", &[2, 1, 1, 1], TensorData::I8(vec![-3, 5]));
    let ws = g.constant("ws", &[2], TensorData::F32(vec![0.5, 0.25]));
    let wz = g.constant("wz", &[2], TensorData::I8(vec![0, 0]));
    let w = g.node(
        "DequantizeLinear",
        "wdq",
        &[&w, &ws, &wz],
        vec![Attribute::int("axis", 0)],
    );
    let attrs = vec![
        Attribute::int("group", 2),
        Attribute::ints("kernel_shape", &[1, 1]),
        Attribute::ints("pads", &[0, 0, 0, 0]),
    ];
    // Two channels, one 1x1 kernel each (two groups): y_c = w_c x_c.
    let graph = g.finish("t", "", vec![], vec![]);
    let mut graph = Graph {
        inputs: vec![graph::float_value("input", vec![], "")],
        outputs: vec![graph::float_value("dq", vec![], "")],
        ..graph
    };
    let x_in = Tensor::new(&[[[[0.25f32]], [[-2.0]]]], &Device::Cpu).unwrap();
    let y = evaluate(&graph, &x_in, &mut |_, _| {}).unwrap();
    // 0.25/0.1 = 2.5 -> 2 (+10 = 12); -2/0.1 = -20 -> -10 -> saturates at 0; swapped by the Gather.
    let got: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(got, [(0.0 - 10.0) * 0.1f32, (12.0 - 10.0) * 0.1f32]);
    // The per-axis weight: (-3) * 0.5, 5 * 0.25, through a 1x1 conv of the dequantized input.
    let conv = Node {
        name: "conv".into(),
        op_type: "Conv",
        inputs: vec![x.clone(), w.clone()],
        outputs: vec!["conv".into()],
        attributes: attrs,
    };
    graph.nodes.push(conv);
    graph.outputs = vec![graph::float_value("conv", vec![], "")];
    let y = evaluate(&graph, &x_in, &mut |_, _| {}).unwrap();
    let got: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
    let x = [(0.0 - 10.0) * 0.1f32, (12.0 - 10.0) * 0.1f32];
    assert_eq!(got, [(-3.0 * 0.5f32) * x[0], (5.0 * 0.25f32) * x[1]]);
}

/// ablate's evaluation of the float graph is the deploy network's forward.
#[test]
fn the_float_graph_evaluates_as_the_network_does() {
    for (model, sets, normalize_input) in [
        ("condensenet-86", &["stages=[1,1,1]"][..], false),
        ("condensenext", &["stages=[1,1,1]"][..], true),
        (
            "condensenet-86-dsc",
            &["stages=[1,1,1]", "activation=relu6"][..],
            false,
        ),
    ] {
        let net = deploy(model, sets, 2);
        let opts = ExportOptions {
            normalize_input,
            ..ExportOptions::default()
        };
        let m = float_model(&net, &opts);
        let (x, input) = inputs(&random_images(5, 1), normalize_input).unwrap();
        let want = net.forward_t(&x, false).unwrap();
        let got = evaluate(&m.graph, &input, &mut |_, _| {}).unwrap();
        let err = max_abs(&(&got - &want).unwrap());
        assert!(err < 1e-4 * max_abs(&want).max(1.0), "{model}: {err}");
    }
}

/// The producer of each value, by name.
fn producers(g: &Graph) -> HashMap<&str, &Node> {
    g.nodes
        .iter()
        .flat_map(|n| n.outputs.iter().map(move |o| (o.as_str(), n)))
        .collect()
}

const MOVES: [&str; 4] = ["Gather", "Reshape", "Transpose", "Flatten"];

/// Whether `value` is a uint8 tensor: a QuantizeLinear's output, moved by pass-through ops.
fn is_quantized<'g>(p: &HashMap<&str, &'g Node>, mut value: &'g str) -> bool {
    while let Some(n) = p.get(value) {
        match n.op_type {
            "QuantizeLinear" => return true,
            op if MOVES.contains(&op) => value = &n.inputs[0],
            _ => return false,
        }
    }
    false
}

fn qdq(model: &str, sets: &[&str]) -> (Network, Model, Model, Tensor) {
    let net = deploy(model, sets, 1);
    let float = float_model(&net, &ExportOptions::default());
    let (_, input) = inputs(&random_images(20, 2), false).unwrap();
    let int8 = quantize(&float, &input).unwrap();
    (net, float, int8, input)
}

/// Every Conv and the Gemm read dequantized uint8 activations and int8 weights; every Conv's
/// output is quantized at once; the index-selects and the shuffle run on uint8 tensors; BN is
/// Mul/Add; the Gemm's bias is int32.
#[test]
fn the_qdq_graph_quantizes_every_conv_and_moves_uint8_tensors() {
    for model in ["condensenet-86", "condensenext"] {
        let (net, float, int8, _) = qdq(model, &["stages=[1,1,1]"]);
        let g = &int8.graph;
        let p = producers(g);
        let consumers = |v: &str| {
            g.nodes
                .iter()
                .filter(|n| n.inputs.iter().any(|i| i == v))
                .collect::<Vec<_>>()
        };
        let count = |m: &Model, op: &str| op_counts(m).get(op).copied().unwrap_or(0);
        assert_eq!(count(&int8, "Conv"), count(&float, "Conv"), "{model}");
        assert_eq!(count(&int8, "BatchNormalization"), 0);
        assert_eq!(count(&int8, "Mul"), count(&float, "BatchNormalization"));
        assert_eq!(count(&int8, "Add"), count(&float, "BatchNormalization"));
        let constant = |name: &str| g.initializers.iter().find(|t| t.name == name);
        for n in &g.nodes {
            match n.op_type {
                "Conv" | "Gemm" => {
                    let dq = p[n.inputs[0].as_str()];
                    assert_eq!(dq.op_type, "DequantizeLinear", "{model} {}", n.name);
                    assert!(is_quantized(&p, &dq.inputs[0]), "{}", n.name);
                    let w = p[n.inputs[1].as_str()];
                    assert_eq!(w.op_type, "DequantizeLinear");
                    assert_eq!(w.attribute("axis"), Some(&AttrValue::Int(0)));
                    let q = constant(&w.inputs[0]).unwrap();
                    assert!(matches!(q.data, TensorData::I8(_)), "int8 weights");
                    assert_eq!(
                        constant(&w.inputs[1]).unwrap().dims,
                        [q.dims[0]],
                        "a scale per output channel"
                    );
                    // Convs leave their zero point of 0 out; the Gemm states it (onnxruntime's
                    // QGemm needs it), all zeros.
                    match (n.op_type, w.inputs.get(2)) {
                        ("Conv", None) => {}
                        ("Gemm", Some(zp)) => assert_eq!(
                            constant(zp).unwrap().data,
                            TensorData::I8(vec![0; q.dims[0] as usize])
                        ),
                        other => panic!("{model} {}: weight zero point {other:?}", n.name),
                    }
                    if n.op_type == "Conv" {
                        // No attribute at its default value.
                        for a in &n.attributes {
                            let default = match (a.name, &a.value) {
                                ("group", AttrValue::Int(g)) => *g == 1,
                                ("strides" | "dilations", AttrValue::Ints(v)) => {
                                    v.iter().all(|&x| x == 1)
                                }
                                _ => false,
                            };
                            assert!(!default, "{model} {}: {a:?}", n.name);
                        }
                        let after = consumers(&n.outputs[0]);
                        assert!(
                            after.iter().all(|c| c.op_type == "QuantizeLinear"),
                            "{}",
                            n.name
                        );
                    } else {
                        let b = p[n.inputs[2].as_str()];
                        assert!(matches!(
                            constant(&b.inputs[0]).unwrap().data,
                            TensorData::I32(_)
                        ));
                    }
                }
                op if MOVES.contains(&op) && n.name.contains("shuffle") || op == "Gather" => {
                    assert!(
                        is_quantized(&p, &n.inputs[0]),
                        "{model} {op} {} runs on uint8",
                        n.name
                    );
                }
                "QuantizeLinear" => {
                    assert!(!MOVES.contains(&p.get(n.inputs[0].as_str()).map_or("", |x| x.op_type)));
                    let TensorData::U8(_) = constant(&n.inputs[2]).unwrap().data else {
                        panic!("activations are uint8")
                    };
                }
                _ => {}
            }
        }
        // Every activation read by a ReLU / ReLU6 before a conv is quantized with zero point 0.
        for n in g.nodes.iter().filter(|n| n.op_type == "QuantizeLinear") {
            let from = p.get(n.inputs[0].as_str()).map_or("", |x| x.op_type);
            if from == "Relu" || from == "Clip" {
                assert_eq!(
                    constant(&n.inputs[2]).unwrap().data,
                    TensorData::U8(vec![0])
                );
            }
        }
        assert_eq!(net.spec().classes, 10);
    }
}

/// The int8 graph's logits, by ablate's reference computation, stay close to the float ones,
/// and a graph lacking a calibrated range is refused rather than quantized with a guess.
#[test]
fn int8_logits_track_the_float_logits() {
    let (net, float, int8, input) = qdq("condensenext", &["stages=[1,1,1]"]);
    let want = net.forward_t(&input, false).unwrap();
    let got = graph_logits(&int8.graph, &input).unwrap();
    let rel = max_abs(&(&got - &want).unwrap()) / max_abs(&want);
    assert!(rel > 0.0 && rel < 0.1, "relative error {rel}");
    let ranges = calibrate(&float.graph, &input).unwrap();
    assert_eq!(ranges.len(), points(&float.graph).len());
    match to_qdq(&float.graph, &Ranges::default()) {
        Err(QuantizeError::Uncalibrated(name)) => assert_eq!(name, INPUT),
        other => panic!("{other:?}"),
    }
}
