//! The fast kernels against candle's reference ops on whole networks: a few SGD steps of small
//! CondenseNet and CondenseNeXt variants through the pruning schedule (drops, the learned-dsc
//! conversion) give the same losses, outputs and weights within float tolerance, and the fast
//! path is bit-reproducible run to run.
//!
//! One test only: the kernel choice is process-wide.

use ablate::config::ModelSource;
use ablate::kernels::{self, Kernels};
use ablate::model::Network;
use ablate::rng::Rng;
use ablate::train::{cross_entropy, Sgd, SgdConfig};
use candle_core::{DType, Device, Tensor};
use candle_nn::ModuleT;

/// Losses of each step, then the eval-mode logits and every parameter after the last one.
struct Trace {
    losses: Vec<f32>,
    logits: Vec<f32>,
    params: Vec<Vec<f32>>,
}

fn run(model: &str, sets: &[&str]) -> Trace {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    let spec = ModelSource::parse(model).resolve(&sets).unwrap().spec;
    let mut net = Network::seeded(&spec, 3, &Device::Cpu).unwrap();
    let mut rng = Rng::new(8);
    let n = 8;
    let pixels: Vec<f32> = (0..n * 3 * 32 * 32)
        .map(|_| rng.uniform(-2.0, 2.0) as f32)
        .collect();
    let x = Tensor::from_vec(pixels, (n, 3, 32, 32), &Device::Cpu).unwrap();
    let y = Tensor::from_vec(
        (0..n as u32).map(|i| i % 10).collect::<Vec<_>>(),
        n,
        &Device::Cpu,
    )
    .unwrap();
    let mut losses = Vec::new();
    // Through every stage of both schedules: nothing pruned, drops, converted, condensed.
    for t in [0.0, 0.2, 0.4, 0.6, 1.0] {
        net.update_progress(t).unwrap();
        let mut sgd = Sgd::new(net.trainable(), SgdConfig::default());
        let loss = cross_entropy(&net.forward_t(&x, true).unwrap(), &y).unwrap();
        losses.push(loss.to_scalar::<f32>().unwrap());
        sgd.step(&loss.backward().unwrap(), 0.05).unwrap();
    }
    let logits = net
        .forward_t(&x, false)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let params = net
        .trainable()
        .iter()
        .map(|(_, v)| {
            v.as_tensor()
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect();
    Trace {
        losses,
        logits,
        params,
    }
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / (1.0 + x.abs().max(y.abs())))
        .fold(0.0, f32::max)
}

#[test]
fn fast_kernels_match_reference_ops_and_reproduce_bit_for_bit() {
    let variants: [(&str, &[&str]); 3] = [
        ("condensenet-86", &["stages=[2,2,2]"]),
        ("condensenext", &["stages=[1,1,1]"]),
        (
            "condensenet-86",
            &["stages=[1,1,1]", "activation=\"relu6\""],
        ),
    ];
    for (model, sets) in variants {
        kernels::set(Kernels::Fast);
        let fast = run(model, sets);
        let again = run(model, sets);
        kernels::set(Kernels::Reference);
        let reference = run(model, sets);
        kernels::set(Kernels::Fast);
        let case = format!("{model} {sets:?}");

        assert_eq!(fast.losses, again.losses, "{case}: losses not reproducible");
        assert_eq!(fast.logits, again.logits, "{case}: logits not reproducible");
        assert!(
            fast.params == again.params,
            "{case}: weights not reproducible"
        );

        let d = max_rel_diff(&fast.losses, &reference.losses);
        assert!(
            d < 1e-4,
            "{case}: losses {:?} vs {:?}",
            fast.losses,
            reference.losses
        );
        let d = max_rel_diff(&fast.logits, &reference.logits);
        assert!(d < 1e-3, "{case}: logits differ by {d}");
        for (i, (a, b)) in fast.params.iter().zip(&reference.params).enumerate() {
            let d = max_rel_diff(a, b);
            assert!(d < 1e-3, "{case}: parameter {i} differs by {d}");
        }
    }
}
