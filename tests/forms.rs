//! Training form vs deploy form, and the pruning schedules (spec sections 3 and 4).

mod common;

use ablate::model::{Bottleneck, Form, Network};
use ablate::rng::Rng;
use candle_core::Device;
use candle_nn::ModuleT;
use common::{model, randomize_norms, relative_error, uniform};

/// Random weights -> whole pruning schedule -> conversion: the deploy form's eval output
/// equals the masked training form's.
fn deploy_equals_masked_training(name: &str) {
    let mut net = Network::seeded(&model(name).spec, 7, &Device::Cpu).unwrap();
    randomize_norms(&net, 11);
    // Walk the schedule as training would, iteration by iteration, then to its end.
    for i in 0..60 {
        net.advance_schedule(i as f64 / 60.0).unwrap();
    }
    net.finish_pruning().unwrap();
    let deploy = net.condense().unwrap();
    assert_eq!(deploy.form(), Form::Deploy);
    let x = uniform(&mut Rng::new(3), &[4, 3, 32, 32], -2.0, 2.0);
    let trained = net.forward_t(&x, false).unwrap();
    let deployed = deploy.forward_t(&x, false).unwrap();
    assert_eq!(deployed.dims(), &[4, 10]);
    let err = relative_error(&deployed, &trained);
    assert!(err < 1e-5, "{name}: relative error {err}");
}

#[test]
fn condensenet_86_deploy_equals_training() {
    deploy_equals_masked_training("condensenet-86");
}

#[test]
fn condensenet_86_dsc_deploy_equals_training() {
    deploy_equals_masked_training("condensenet-86-dsc");
}

#[test]
fn condensenext_deploy_equals_training() {
    deploy_equals_masked_training("condensenext");
}

#[test]
fn other_groupings_and_bottlenecks_convert_exactly() {
    let cases = [
        ("condensenet-50", vec!["cardinality=2"]),
        ("condensenet-50", vec!["cardinality=8", "p=8"]),
        (
            "condensenet-50",
            vec!["bottleneck_conv=dense", "spatial_conv=dsc"],
        ),
        ("condensenext", vec!["cardinality=8", "p=2"]),
        (
            "condensenext",
            vec!["p=1", "prune_steps=3", "activation=relu"],
        ),
    ];
    for (name, sets) in cases {
        let sets: Vec<String> = sets.into_iter().map(String::from).collect();
        let spec = ablate::config::ModelSource::parse(name)
            .resolve(&sets)
            .unwrap()
            .spec;
        let mut net = Network::seeded(&spec, 1, &Device::Cpu).unwrap();
        randomize_norms(&net, 2);
        net.finish_pruning().unwrap();
        let deploy = net.condense().unwrap();
        let x = uniform(&mut Rng::new(4), &[2, 3, 32, 32], -2.0, 2.0);
        let err = relative_error(
            &deploy.forward_t(&x, false).unwrap(),
            &net.forward_t(&x, false).unwrap(),
        );
        assert!(err < 1e-5, "{name} {sets:?}: relative error {err}");
    }
}

#[test]
fn learned_group_drops_at_one_sixth_two_sixths_half() {
    let mut net = Network::seeded(&model("condensenet-86").spec, 0, &Device::Cpu).unwrap();
    let live = |net: &Network| match net.layers().nth(3).unwrap().bottleneck() {
        Bottleneck::LearnedGroup(c) => c.live_per_group(),
        _ => unreachable!(),
    };
    // Layer 3 of block 0 sees 16 + 3*8 = 40 channels; C = 4 drops 10 per stage.
    for (t, expected) in [
        (0.0, 40),
        (0.166, 40),
        (1.0 / 6.0 + 1e-9, 30),
        (0.33, 30),
        (0.34, 20),
        (0.49, 20),
        (0.5, 10),
        (0.99, 10),
    ] {
        net.advance_schedule(t).unwrap();
        assert_eq!(live(&net), expected, "t = {t}");
    }
    assert!(net.condense().is_err(), "the classifier is not pruned yet");
}

#[test]
fn learned_dsc_drops_eight_times_then_converts() {
    let mut net = Network::seeded(&model("condensenext").spec, 0, &Device::Cpu).unwrap();
    let first = |net: &Network| match net.layers().next().unwrap().bottleneck() {
        Bottleneck::LearnedDsc(c) => (c.kernels_per_group(), c.is_separable()),
        _ => unreachable!(),
    };
    // Cin 16, W 32, cardinality 32 (one group), p 4: delta = floor(16 * 28 / 8) = 56.
    let until = 2.0 / 3.0;
    assert_eq!(first(&net), (vec![512], false));
    for m in 1..=8 {
        let t = m as f64 / 8.0 * until;
        net.advance_schedule(t - 1e-9).unwrap();
        assert_eq!(
            first(&net),
            (vec![512 - 56 * (m - 1)], false),
            "before drop {m}"
        );
        let report = net.advance_schedule(t).unwrap();
        assert_eq!(report.drops, 12, "all 12 layers drop at once");
        if m < 8 {
            assert_eq!(first(&net), (vec![512 - 56 * m], false), "after drop {m}");
        } else {
            assert_eq!(report.conversions, 12);
            assert_eq!(
                first(&net),
                (vec![64], true),
                "p * in_per_group kernels remain"
            );
        }
    }
}

#[test]
fn same_seed_same_weights() {
    let spec = model("condensenext").spec;
    let a = Network::seeded(&spec, 5, &Device::Cpu).unwrap();
    let b = Network::seeded(&spec, 5, &Device::Cpu).unwrap();
    let c = Network::seeded(&spec, 6, &Device::Cpu).unwrap();
    let flat = |n: &Network| -> Vec<f32> {
        n.trainable()
            .iter()
            .flat_map(|(_, v)| v.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .collect()
    };
    assert_eq!(flat(&a), flat(&b));
    assert_ne!(flat(&a), flat(&c));
}
