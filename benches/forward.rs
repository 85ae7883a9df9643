//! Forward-pass latency of the deploy models at batch 1, and the cost of one `count`.
//! Run: `cargo bench --bench forward`.

use ablate::analyze::trace_costs;
use ablate::config::ModelSource;
use ablate::model::Network;
use candle_core::Device;
use candle_nn::ModuleT;
use criterion::{criterion_group, criterion_main, Criterion};

fn deploy(name: &str) -> Network {
    let spec = ModelSource::parse(name).resolve(&[]).unwrap().spec;
    let mut net = Network::seeded(&spec, 0, &Device::Cpu).unwrap();
    net.finish_pruning().unwrap();
    net.condense().unwrap()
}

fn inference_batch1(c: &mut Criterion) {
    let x = Network::zeros_input(1, &Device::Cpu).unwrap();
    let mut group = c.benchmark_group("deploy_forward_b1");
    group.sample_size(20);
    for name in ["condensenet-86", "condensenext"] {
        let net = deploy(name);
        group.bench_function(name, |b| b.iter(|| net.forward_t(&x, false).unwrap()));
    }
    group.finish();
}

fn trace(c: &mut Criterion) {
    let net = deploy("condensenet-86");
    c.bench_function("trace_costs/condensenet-86", |b| {
        b.iter(|| trace_costs(&net).unwrap())
    });
}

criterion_group!(benches, inference_batch1, trace);
criterion_main!(benches);
