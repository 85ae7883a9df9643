//! The analyzer against the spec's exact reference counts (paper convention, section 5).

mod common;

use ablate::analyze::{Convention, Cost};
use ablate::model::Form;
use common::{analysis, counts};

#[test]
fn condensenet_86_deploy_and_training() {
    assert_eq!(
        counts("condensenet-86", Form::Deploy, Convention::Paper),
        Cost::new(65_812_394, 516_202)
    );
    assert_eq!(
        counts("condensenet-86", Form::Training, Convention::Paper),
        Cost::new(65_816_394, 520_202)
    );
}

#[test]
fn condensenet_182_deploy() {
    assert_eq!(
        counts("condensenet-182", Form::Deploy, Convention::Paper),
        Cost::new(512_658_874, 4_209_226)
    );
}

#[test]
fn condensenet_86_dsc_deploy() {
    assert_eq!(
        counts("condensenet-86-dsc", Form::Deploy, Convention::Paper),
        Cost::new(60_077_994, 456_618)
    );
}

#[test]
fn executed_convention_counts_masked_convs_at_full_size() {
    // The reference's "actual training-time compute": masked 1x1 convs run dense.
    assert_eq!(
        counts("condensenet-86", Form::Training, Convention::Executed),
        Cost::new(177_293_130, 1_451_594)
    );
    // Deploy forms run exactly what the paper convention counts.
    for name in ["condensenet-86", "condensenet-86-dsc", "condensenext"] {
        assert_eq!(
            counts(name, Form::Deploy, Convention::Executed),
            counts(name, Form::Deploy, Convention::Paper),
            "{name}"
        );
    }
}

/// The closed form of the reference's per-layer table (docs/specification.md, section 5, "CondenseNet-86 layer by layer"), written out
/// independently of the model code: G = C = 4, bottleneck 4, growth k, input Cin, side S.
fn condensenet_closed_form(layers: usize, growth: [usize; 3]) -> Cost {
    let mut flops = 0;
    let mut params = 0;
    let mut cin = 2 * growth[0];
    flops += 3 * cin * 9 * 32 * 32; // stem
    params += 3 * cin * 9;
    for (b, &k) in growth.iter().enumerate() {
        let s2 = (32 >> b) * (32 >> b);
        for _ in 0..layers {
            flops += cin * s2 + cin * k * s2 + 4 * k * s2 + 9 * k * k * s2;
            params += 2 * cin + cin * k + 8 * k + 9 * k * k;
            cin += k;
        }
        if b < 2 {
            flops += cin * (s2 / 4) * 4; // 2x2 pool
        }
    }
    flops += cin * 64 + cin * 64; // head ReLU + pool over 8x8
    params += 2 * cin;
    let linear = (cin / 2) * 10 + 10;
    Cost::new((flops + linear) as u64, (params + linear) as u64)
}

#[test]
fn every_condensenet_depth_comes_from_the_same_code() {
    // README of the reference repo: training-form counts, rounded to 0.1M FLOPs / 0.01M params.
    let readme = [
        (50, 28.6, 0.22),
        (74, 51.9, 0.41),
        (86, 65.8, 0.52),
        (98, 81.3, 0.65),
        (110, 98.2, 0.79),
        (122, 116.7, 0.95),
    ];
    for (depth, mflops, mparams) in readme {
        let name = format!("condensenet-{depth}");
        let got = counts(&name, Form::Deploy, Convention::Paper);
        assert_eq!(
            got,
            condensenet_closed_form((depth - 2) / 6, [8, 16, 32]),
            "{name}"
        );
        // The README lists the training-form counts (measure_model before conversion).
        let train = counts(&name, Form::Training, Convention::Paper);
        assert_eq!(
            format!("{:.1}", train.flops as f64 / 1e6),
            format!("{mflops:.1}"),
            "{name} FLOPs"
        );
        assert_eq!(
            format!("{:.2}", train.params as f64 / 1e6),
            format!("{mparams:.2}"),
            "{name} params"
        );
    }
    assert_eq!(
        condensenet_closed_form(30, [12, 24, 48]),
        Cost::new(512_658_874, 4_209_226)
    );
}

#[test]
fn condensenet_86_sizes() {
    let a = analysis("condensenet-86", Form::Deploy);
    // The paper's "16.7 MB": the training checkpoint (16.71 MB of tensors in the reference).
    let rel = (a.checkpoint_bytes as f64 - 16.71e6).abs() / 16.71e6;
    assert!(
        rel < 0.01,
        "checkpoint_bytes {} is {:.2}% from 16.71 MB",
        a.checkpoint_bytes,
        rel * 100.0
    );
    // The deploy model's float32 parameters: 2.06 MB.
    assert_eq!(a.deploy_param_bytes, 4 * 516_202);
    assert_eq!(format!("{:.2}", a.deploy_param_bytes as f64 / 1e6), "2.06");
    // The file also holds BN running stats and index tensors.
    assert!(a.deploy_bytes > a.deploy_param_bytes && a.deploy_bytes < a.checkpoint_bytes);
}

#[test]
fn executed_params_are_every_stored_parameter() {
    for name in [
        "condensenet-86",
        "condensenet-86-dsc",
        "condensenext",
        "condensenet-50",
    ] {
        for form in [Form::Training, Form::Deploy] {
            let a = analysis(name, form);
            let mut net = ablate::model::Network::seeded(
                &common::model(name).spec,
                0,
                &candle_core::Device::Cpu,
            )
            .unwrap();
            if form == Form::Deploy {
                net.finish_pruning().unwrap();
                net = net.condense().unwrap();
            }
            let stored: u64 = net
                .trainable()
                .iter()
                .map(|(_, v)| v.elem_count() as u64)
                .sum();
            assert_eq!(
                a.total(Convention::Executed).params,
                stored,
                "{name} {form}"
            );
        }
    }
}
