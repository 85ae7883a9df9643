//! Backprop through the training forms against central finite differences, in float64.

use ablate::config::ModelSource;
use ablate::model::{Network, SeededInit};
use ablate::rng::Rng;
use ablate::train::{cross_entropy, focal_loss};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::ModuleT;

fn net_f64(preset: &str, sets: &[&str], t: f64) -> Network {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    let spec = ModelSource::parse(preset).resolve(&sets).unwrap().spec;
    let mut net = Network::new(
        &spec,
        1,
        SeededInit::new(1).var_builder(DType::F64, &Device::Cpu),
    )
    .unwrap();
    net.advance_schedule(t).unwrap();
    net
}

fn loss(net: &Network, x: &Tensor, y: &Tensor, focal: bool) -> Tensor {
    let logits = net.forward_t(x, true).unwrap();
    if focal {
        focal_loss(&logits, y, &[1.0; 10], 1.0).unwrap()
    } else {
        cross_entropy(&logits, y).unwrap()
    }
}

/// Checks `coords` entries of every parameter whose name contains one of `params`.
fn check(net: &Network, params: &[&str], focal: bool) {
    let mut rng = Rng::new(9);
    let x: Vec<f64> = (0..2 * 3 * 32 * 32).map(|_| rng.normal()).collect();
    let x = Tensor::from_vec(x, (2, 3, 32, 32), &Device::Cpu).unwrap();
    let y = Tensor::new(&[3u32, 7], &Device::Cpu).unwrap();
    let grads = loss(net, &x, &y, focal).backward().unwrap();
    let scalar = |net: &Network| loss(net, &x, &y, focal).to_scalar::<f64>().unwrap();
    let mut checked = 0;
    for (name, var) in net.trainable() {
        if !params.iter().any(|p| name.contains(p)) {
            continue;
        }
        let g: Vec<f64> = grads
            .get(&var)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let w0 = var.as_tensor().copy().unwrap();
        let flat: Vec<f64> = w0.flatten_all().unwrap().to_vec1().unwrap();
        for _ in 0..4 {
            let k = (rng.next_u64() % flat.len() as u64) as usize;
            // Small enough that no ReLU kink falls inside [w - eps, w + eps] (at 1e-5 one did).
            let eps = 1e-7;
            let at = |delta: f64, var: &Var| {
                let mut v = flat.clone();
                v[k] += delta;
                var.set(&Tensor::from_vec(v, w0.shape(), &Device::Cpu).unwrap())
                    .unwrap();
            };
            at(eps, &var);
            let up = scalar(net);
            at(-eps, &var);
            let down = scalar(net);
            var.set(&w0).unwrap();
            let fd = (up - down) / (2.0 * eps);
            assert!(
                (g[k] - fd).abs() <= 1e-6 + 1e-4 * fd.abs(),
                "{name}[{k}]: backprop {} vs finite difference {fd}",
                g[k]
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 4 * params.len(),
        "only {checked} entries checked"
    );
}

#[test]
fn condensenet_training_form_after_two_drops() {
    let net = net_f64("condensenet-8", &["growth=[4, 4, 4]"], 0.4);
    check(
        &net,
        &[
            "stem.conv",
            "block0.layer0.bottleneck.conv",
            "block1.layer0.bottleneck.bn.weight",
            "block2.layer0.spatial.conv",
            "classifier.weight",
            "head.bn.bias",
        ],
        false,
    );
}

#[test]
fn condensenext_masked_and_separable_forms() {
    let sets = ["growth=[4, 4, 4]", "dropout=0.0"];
    let masked = net_f64("condensenext", &sets, 0.3);
    check(
        &masked,
        &[
            "block0.layer0.bottleneck.conv",
            "block2.layer0.spatial.conv",
            "classifier.bias",
        ],
        true,
    );
    let separable = net_f64("condensenext", &sets, 0.9);
    check(
        &separable,
        &[
            "block0.layer0.bottleneck.dw",
            "block1.layer0.bottleneck.pw",
            "block2.layer0.bottleneck.bn.weight",
        ],
        true,
    );
}
