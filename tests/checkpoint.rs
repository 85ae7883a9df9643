//! A checkpoint restores the whole training state: parameters, BN statistics, masks, the
//! pruning stages and a learned-dsc layer's conversion.

mod common;

use std::collections::HashMap;

use ablate::config::ModelSpec;
use ablate::model::checkpoint_tensors;
use ablate::model::Network;
use candle_core::{Device, Tensor};
use candle_nn::ModuleT;
use common::{model, randomize_norms, relative_error};

fn small(name: &str) -> ModelSpec {
    let mut spec = model(name).spec;
    spec.stages = vec![2, 2, 2];
    spec
}

/// Net A is trained-like (schedule at `t`, random BN stats), saved, and loaded into net B
/// built from another seed: same state, same outputs.
fn round_trip(spec: &ModelSpec, t: f64) {
    let mut a = Network::seeded(spec, 1, &Device::Cpu).unwrap();
    a.advance_schedule(t).unwrap();
    randomize_norms(&a, 5);
    let saved: HashMap<String, Tensor> = checkpoint_tensors(&a, |_| None)
        .unwrap()
        .into_iter()
        .collect();
    let mut b = Network::seeded(spec, 2, &Device::Cpu).unwrap();
    b.restore(t, &saved).unwrap();
    let (sa, sb) = (a.state(), b.state());
    let names = |s: &ablate::model::State| s.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&sa), names(&sb), "t = {t}");
    for ((name, x), (_, y)) in sa.iter().zip(&sb) {
        let (x, y) = (x.tensor(), y.tensor());
        assert_eq!(x.dims(), y.dims(), "{name}");
        let d = (x.to_dtype(candle_core::DType::F64).unwrap()
            - y.to_dtype(candle_core::DType::F64).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
        assert_eq!(d, 0.0, "{name} at t = {t}");
    }
    // The schedules continue identically from there.
    a.advance_schedule(0.99).unwrap();
    b.advance_schedule(0.99).unwrap();
    let x = common::uniform(&mut ablate::rng::Rng::new(3), &[2, 3, 32, 32], -2.0, 2.0);
    let (ya, yb) = (
        a.forward_t(&x, false).unwrap(),
        b.forward_t(&x, false).unwrap(),
    );
    assert_eq!(relative_error(&ya, &yb), 0.0, "t = {t}");
}

#[test]
fn condensenet_restores_masks_and_stages() {
    for t in [0.0, 0.2, 0.4, 0.6] {
        round_trip(&small("condensenet-86"), t);
    }
}

#[test]
fn condensenext_restores_masked_and_converted_layers() {
    for t in [0.1, 0.5, 0.7] {
        round_trip(&small("condensenext"), t);
    }
}

#[test]
fn a_checkpoint_of_another_model_is_refused_by_name() {
    let a = Network::seeded(&small("condensenext"), 1, &Device::Cpu).unwrap();
    let saved: HashMap<String, Tensor> = checkpoint_tensors(&a, |_| None)
        .unwrap()
        .into_iter()
        .collect();
    let mut b = Network::seeded(&small("condensenet-86"), 1, &Device::Cpu).unwrap();
    let e = b.restore(0.1, &saved).unwrap_err().to_string();
    assert!(e.contains("checkpoint"), "{e}");
}

/// A checkpoint whose tensor data was overwritten (header intact) is refused on load with an
/// error naming the file, instead of resuming from damaged weights.
#[test]
fn a_damaged_checkpoint_is_refused_by_name() {
    use ablate::train::checkpoint::{load, save, TrainedSoFar};
    use ablate::train::{Sgd, SgdConfig};
    let net = Network::seeded(&small("condensenext"), 1, &Device::Cpu).unwrap();
    let sgd = Sgd::new(net.trainable(), SgdConfig::default());
    let dir = std::env::temp_dir().join(format!("ablate-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("checkpoint.safetensors");
    save(
        &path,
        &net,
        &sgd,
        &TrainedSoFar::default(),
        "preset = \"condensenext\"",
    )
    .unwrap();
    assert!(load(&path, &Device::Cpu).is_ok());
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 4096] {
        *b ^= 0x5a;
    }
    std::fs::write(&path, &bytes).unwrap();
    let e = format!("{:#}", load(&path, &Device::Cpu).err().unwrap());
    assert!(e.contains(&path.display().to_string()), "{e}");
    assert!(e.contains("damaged"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
