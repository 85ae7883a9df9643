//! Each custom kernel against candle's reference op (and against the kernels it replaced),
//! forward + backward, on layer-sized inputs of the networks at batch 64 (f32, this
//! machine's threads), and a whole dense block as one op against its layers run one by one.
//! Run: `cargo bench --bench kernels` (or `just criterion kernels`).

use std::sync::Arc;

use ablate::kernels::{
    bn_act, bn_stats, conv2d, dense_block, depthwise3x3, preact_conv, select_channels,
    sparse_conv3x3, ActKind, BlockLayer, BlockStage, ChannelIndex, GroupInputs, KernelPairs,
    StageConv,
};
use ablate::rng::Rng;
use candle_core::{Device, Tensor, Var, D};
use criterion::{criterion_group, criterion_main, Criterion};

fn random(rng: &mut Rng, shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Forward, then backward of `sum(y * up)`.
fn step(f: &dyn Fn() -> Tensor, up: &Tensor) {
    let y = f();
    (y * up).unwrap().sum_all().unwrap().backward().unwrap();
}

/// candle's BN (batch statistics) followed by ReLU.
fn candle_bn_relu(x: &Tensor, gamma: &Tensor, beta: &Tensor) -> Tensor {
    let c = x.dim(1).unwrap();
    let xc = x.transpose(0, 1).unwrap().flatten_from(1).unwrap();
    let mean = xc.mean(D::Minus1).unwrap();
    let var = xc
        .broadcast_sub(&mean.unsqueeze(1).unwrap())
        .unwrap()
        .sqr()
        .unwrap()
        .mean(D::Minus1)
        .unwrap();
    let scale = (gamma / (var + 1e-5).unwrap().sqrt().unwrap()).unwrap();
    let shift = (beta - (mean * &scale).unwrap()).unwrap();
    let per = |t: &Tensor| t.reshape((1, c, 1, 1)).unwrap();
    x.broadcast_mul(&per(&scale))
        .unwrap()
        .broadcast_add(&per(&shift))
        .unwrap()
        .relu()
        .unwrap()
}

fn params(x: &Tensor, gamma: &Var, beta: &Var) -> Tensor {
    let affine = Tensor::stack(&[gamma.as_tensor(), beta.as_tensor()], 0).unwrap();
    Tensor::cat(&[&bn_stats(x).unwrap(), &affine], 0).unwrap()
}

fn kernels(c: &mut Criterion) {
    let mut rng = Rng::new(1);
    let mut group = c.benchmark_group("kernel_fwd_bwd_b64");
    group.sample_size(10);

    // (name, x dims, cout, k, padding, groups): CondenseNet-86's bottleneck 1x1 in the last
    // block, its grouped spatial 3x3 in the first, and the stem.
    for (name, dims, cout, k, p, g) in [
        ("conv1x1_704to128_8x8", [64, 704, 8, 8], 128, 1, 0, 1),
        ("conv3x3_40to32_32x32", [64, 40, 32, 32], 32, 3, 1, 1),
        ("conv3x3_104to32_8x8", [64, 104, 8, 8], 32, 3, 1, 1),
        ("conv3x3_g4_32to8_32x32", [64, 32, 32, 32], 8, 3, 1, 4),
        ("conv3x3_g4_128to32_8x8", [64, 128, 8, 8], 32, 3, 1, 4),
        ("conv3x3_3to16_32x32", [64, 3, 32, 32], 16, 3, 1, 1),
    ] {
        let x = Var::from_tensor(&random(&mut rng, &dims)).unwrap();
        let w = Var::from_tensor(&random(&mut rng, &[cout, dims[1] / g, k, k])).unwrap();
        let up = random(&mut rng, &[64, cout, dims[2], dims[3]]);
        group.bench_function(format!("{name}/ours"), |b| {
            b.iter(|| step(&|| conv2d(&x, &w, p, g).unwrap(), &up))
        });
        group.bench_function(format!("{name}/candle"), |b| {
            b.iter(|| step(&|| x.conv2d(&w, p, 1, 1, g).unwrap(), &up))
        });
        if k == 3 && dims[1] > 3 {
            // BN -> ReLU -> the same 3x3 as the direct loops of one fused op.
            let (gamma, beta) = (
                Var::from_tensor(&random(&mut rng, &[dims[1]])).unwrap(),
                Var::from_tensor(&random(&mut rng, &[dims[1]])).unwrap(),
            );
            let conv = StageConv::Conv3x3 { groups: g };
            group.bench_function(format!("bn_relu_{name}/direct_fused"), |b| {
                b.iter(|| {
                    let pr = params(&x, &gamma, &beta);
                    let f = || {
                        preact_conv(&x, &pr, &w, conv.clone(), 1e-5, ActKind::Relu, true, None)
                            .unwrap()
                    };
                    step(&f, &up)
                })
            });
            group.bench_function(format!("bn_relu_{name}/bn_relu_then_im2col"), |b| {
                b.iter(|| {
                    let pr = params(&x, &gamma, &beta);
                    let a = || bn_act(&x, &pr, 1e-5, ActKind::Relu, true).unwrap();
                    step(&|| conv2d(&a(), &w, p, g).unwrap(), &up)
                })
            });
        }
        if k == 3 && g > 1 {
            // The same grouped conv as kernel pairs.
            let (cin_g, cout_g) = (dims[1] / g, cout / g);
            let pairs: Vec<(u32, u32)> = (0..cout)
                .flat_map(|o| {
                    (0..cin_g).map(move |i| (o as u32, ((o / cout_g) * cin_g + i) as u32))
                })
                .collect();
            let kp = KernelPairs::new(dims[1], cout, &pairs).unwrap();
            let wp = Var::from_tensor(&random(&mut rng, &[pairs.len(), 1, 3, 3])).unwrap();
            group.bench_function(format!("{name}/pairs"), |b| {
                b.iter(|| step(&|| sparse_conv3x3(&x, &wp, &kp).unwrap(), &up))
            });
        }
    }

    let dims = [64, 128, 32, 32];
    let x = Var::from_tensor(&random(&mut rng, &dims)).unwrap();
    let up = random(&mut rng, &dims);
    let w = Var::from_tensor(&random(&mut rng, &[128, 1, 3, 3])).unwrap();
    group.bench_function("depthwise3x3_128_32x32/ours", |b| {
        b.iter(|| step(&|| depthwise3x3(&x, &w).unwrap(), &up))
    });
    group.bench_function("depthwise3x3_128_32x32/candle", |b| {
        b.iter(|| step(&|| x.conv2d(&w, 1, 1, 1, 128).unwrap(), &up))
    });

    let gamma = Var::from_tensor(&random(&mut rng, &[128])).unwrap();
    let beta = Var::from_tensor(&random(&mut rng, &[128])).unwrap();
    group.bench_function("bn_relu_128_32x32/ours", |b| {
        b.iter(|| {
            let p = params(&x, &gamma, &beta);
            step(&|| bn_act(&x, &p, 1e-5, ActKind::Relu, true).unwrap(), &up)
        })
    });
    group.bench_function("bn_relu_128_32x32/candle", |b| {
        b.iter(|| step(&|| candle_bn_relu(&x, &gamma, &beta), &up))
    });

    // BN -> ReLU -> 1x1 conv 128 -> 32 at 32x32: fused against our two kernels and candle.
    let w1 = Var::from_tensor(&random(&mut rng, &[32, 128, 1, 1])).unwrap();
    let up1 = random(&mut rng, &[64, 32, 32, 32]);
    let pointwise = StageConv::Pointwise { groups: 1 };
    group.bench_function("bn_relu_conv1x1_128to32_32x32/fused", |b| {
        b.iter(|| {
            let p = params(&x, &gamma, &beta);
            let f = || {
                preact_conv(
                    &x,
                    &p,
                    &w1,
                    pointwise.clone(),
                    1e-5,
                    ActKind::Relu,
                    true,
                    None,
                )
                .unwrap()
            };
            step(&f, &up1)
        })
    });
    group.bench_function("bn_relu_conv1x1_128to32_32x32/two_kernels", |b| {
        b.iter(|| {
            let p = params(&x, &gamma, &beta);
            let f = || {
                conv2d(
                    &bn_act(&x, &p, 1e-5, ActKind::Relu, true).unwrap(),
                    &w1,
                    0,
                    1,
                )
            };
            step(&|| f().unwrap(), &up1)
        })
    });
    group.bench_function("bn_relu_conv1x1_128to32_32x32/candle", |b| {
        b.iter(|| {
            let f = || candle_bn_relu(&x, &gamma, &beta).conv2d(&w1, 0, 1, 1, 1);
            step(&|| f().unwrap(), &up1)
        })
    });

    // CondenseNeXt-style index-select with repeats (256 of 128 channels) and a shuffle.
    let picks: Vec<u32> = (0..256).map(|i| (i * 37 % 128) as u32).collect();
    let index = ChannelIndex::new(picks.clone());
    let t = Tensor::from_vec(picks, 256, &Device::Cpu).unwrap();
    let up2 = random(&mut rng, &[64, 256, 32, 32]);
    group.bench_function("index_select_128to256_32x32/ours", |b| {
        b.iter(|| step(&|| select_channels(&x, &index).unwrap(), &up2))
    });
    group.bench_function("index_select_128to256_32x32/candle", |b| {
        b.iter(|| step(&|| x.index_select(&t, 1).unwrap(), &up2))
    });
    let shuffle = ChannelIndex::shuffle(128, 4);
    group.bench_function("shuffle_128_g4_32x32/ours", |b| {
        b.iter(|| step(&|| select_channels(&x, &shuffle).unwrap(), &up))
    });
    group.bench_function("shuffle_128_g4_32x32/candle", |b| {
        b.iter(|| {
            let f = || {
                x.reshape((64, 4, 32, 32, 32))?
                    .transpose(1, 2)?
                    .reshape((64, 128, 32, 32))
            };
            step(&|| f().unwrap(), &up)
        })
    });

    // CondenseNet-86's last-block bottleneck after the second drop (half of each group's
    // inputs live): the live-input kernel against the masked dense one.
    let (cin, cout, groups) = (704, 128, 4);
    let x = Var::from_tensor(&random(&mut rng, &[64, cin, 8, 8])).unwrap();
    let (gamma, beta) = (
        Var::from_tensor(&random(&mut rng, &[cin])).unwrap(),
        Var::from_tensor(&random(&mut rng, &[cin])).unwrap(),
    );
    let w = Var::from_tensor(&random(&mut rng, &[cout, cin, 1, 1])).unwrap();
    let kept: Vec<Vec<bool>> = (0..groups)
        .map(|g| (0..cin).map(|j| (j * 7 + g) % 4 < 2).collect())
        .collect();
    let live = GroupInputs::from_kept(&kept).unwrap();
    let mask: Vec<f32> = (0..cout)
        .flat_map(|o| kept[o % groups].iter().map(|&k| f32::from(u8::from(k))))
        .collect();
    let mask = Tensor::from_vec(mask, (cout, cin, 1, 1), &Device::Cpu).unwrap();
    let up3 = random(&mut rng, &[64, cout, 8, 8]);
    group.bench_function("learned_group1x1_704to128_half_live_8x8/live", |b| {
        b.iter(|| {
            let f = || {
                let p = params(&x, &gamma, &beta);
                let conv = StageConv::Live(live.clone());
                preact_conv(&x, &p, &w, conv, 1e-5, ActKind::Relu, true, None).unwrap()
            };
            step(&f, &up3)
        })
    });
    group.bench_function("learned_group1x1_704to128_half_live_8x8/masked", |b| {
        b.iter(|| {
            let f = || {
                let p = params(&x, &gamma, &beta);
                let wm = w.as_tensor().mul(&mask).unwrap();
                let conv = StageConv::Pointwise { groups: 1 };
                preact_conv(&x, &p, &wm, conv, 1e-5, ActKind::Relu, true, None).unwrap()
            };
            step(&f, &up3)
        })
    });

    // CondenseNeXt's first-block learned-dsc 3x3 (40 -> 32) with a quarter and an eighth of
    // its kernels live: the pair kernel against the masked dense conv (im2col + GEMM, and the
    // direct loops the layer runs).
    let (cin, cout) = (40, 32);
    let x = Var::from_tensor(&random(&mut rng, &[64, cin, 32, 32])).unwrap();
    let w = Var::from_tensor(&random(&mut rng, &[cout, cin, 3, 3])).unwrap();
    let up4 = random(&mut rng, &[64, cout, 32, 32]);
    for every in [4, 8] {
        let kept: Vec<bool> = (0..cout * cin).map(|k| (k * 13) % every == 0).collect();
        let ids: Vec<u32> = (0..kept.len() as u32)
            .filter(|&k| kept[k as usize])
            .collect();
        let pairs: Vec<(u32, u32)> = ids
            .iter()
            .map(|&k| (k / cin as u32, k % cin as u32))
            .collect();
        let kp = KernelPairs::new(cin, cout, &pairs).unwrap();
        let idx = Tensor::from_vec(ids.clone(), ids.len(), &Device::Cpu).unwrap();
        let mask: Vec<f32> = kept.iter().map(|&k| f32::from(u8::from(k))).collect();
        let mask = Tensor::from_vec(mask, (cout, cin, 1, 1), &Device::Cpu).unwrap();
        group.bench_function(
            format!("learned_dsc3x3_40to32_1of{every}_32x32/pairs"),
            |b| {
                b.iter(|| {
                    let f = || {
                        let wp = w
                            .as_tensor()
                            .reshape((cout * cin, 9))
                            .unwrap()
                            .index_select(&idx, 0)
                            .unwrap()
                            .reshape((ids.len(), 1, 3, 3))
                            .unwrap();
                        sparse_conv3x3(&x, &wp, &kp).unwrap()
                    };
                    step(&f, &up4)
                })
            },
        );
        group.bench_function(
            format!("learned_dsc3x3_40to32_1of{every}_32x32/masked"),
            |b| {
                b.iter(|| {
                    let f = || {
                        let wm = w.as_tensor().broadcast_mul(&mask).unwrap();
                        conv2d(&x, &wm, 1, 1).unwrap()
                    };
                    step(&f, &up4)
                })
            },
        );
        let (gamma, beta) = (
            Var::from_tensor(&random(&mut rng, &[cin])).unwrap(),
            Var::from_tensor(&random(&mut rng, &[cin])).unwrap(),
        );
        group.bench_function(
            format!("learned_dsc3x3_40to32_1of{every}_32x32/masked_direct_fused"),
            |b| {
                b.iter(|| {
                    let f = || {
                        let wm = w.as_tensor().broadcast_mul(&mask).unwrap();
                        let p = params(&x, &gamma, &beta);
                        let conv = StageConv::Conv3x3 { groups: 1 };
                        preact_conv(&x, &p, &wm, conv, 1e-5, ActKind::Relu, true, None).unwrap()
                    };
                    step(&f, &up4)
                })
            },
        );
    }

    // The converted form's depthwise on the gathered channels (160 of 40, repeats), fused
    // against index-select then depthwise.
    let picks: Vec<u32> = (0..160).map(|i| (i * 7 % 40) as u32).collect();
    let kp = KernelPairs::gathered(40, &picks).unwrap();
    let index = ChannelIndex::new(picks);
    let wd = Var::from_tensor(&random(&mut rng, &[160, 1, 3, 3])).unwrap();
    let up5 = random(&mut rng, &[64, 160, 32, 32]);
    group.bench_function("gathered_depthwise3x3_40to160_32x32/fused", |b| {
        b.iter(|| step(&|| sparse_conv3x3(&x, &wd, &kp).unwrap(), &up5))
    });
    group.bench_function(
        "gathered_depthwise3x3_40to160_32x32/select_then_depthwise",
        |b| {
            b.iter(|| {
                let f = || depthwise3x3(&select_channels(&x, &index).unwrap(), &wd).unwrap();
                step(&f, &up5)
            })
        },
    );
    group.finish();
}

/// CondenseNet-86's first dense block (14 layers, 16 -> 128 channels at 32x32) in training:
/// the block as one op against its layers as fused ops joined by candle's concatenation.
fn dense_block_op(c: &mut Criterion) {
    let mut rng = Rng::new(2);
    let mut group = c.benchmark_group("dense_block_fwd_bwd_b64");
    group.sample_size(10);
    let (c0, growth, width) = (16, 8, 32);
    let stage = |conv, cin, cout| BlockStage {
        conv,
        cin,
        cout,
        act: ActKind::Relu,
        eps: 1e-5,
        noise: None,
    };
    let layers: Arc<[BlockLayer]> = (0..14)
        .map(|l| BlockLayer {
            stages: vec![
                stage(StageConv::Pointwise { groups: 1 }, c0 + l * growth, width),
                stage(StageConv::Conv3x3 { groups: 4 }, width, growth),
            ],
        })
        .collect();
    let vars: Vec<Vec<(Var, Var, Var)>> = layers
        .iter()
        .map(|l| {
            l.stages
                .iter()
                .map(|s| {
                    let k = if matches!(s.conv, StageConv::Conv3x3 { .. }) {
                        3
                    } else {
                        1
                    };
                    let per_out = if k == 3 { s.cin / 4 } else { s.cin };
                    (
                        Var::from_tensor(&random(&mut rng, &[s.cin])).unwrap(),
                        Var::from_tensor(&random(&mut rng, &[s.cin])).unwrap(),
                        Var::from_tensor(&random(&mut rng, &[s.cout, per_out, k, k])).unwrap(),
                    )
                })
                .collect()
        })
        .collect();
    let x = Var::from_tensor(&random(&mut rng, &[64, c0, 32, 32])).unwrap();
    let up = random(&mut rng, &[64, c0 + 14 * growth, 32, 32]);
    group.bench_function("condensenet86_block0/one_op", |b| {
        b.iter(|| {
            let f = || {
                let pieces: Vec<Tensor> = vars
                    .iter()
                    .flatten()
                    .flat_map(|(g, be, w)| {
                        // Running mean 0 and variance 1 (not read in training).
                        let ones = Tensor::ones(g.dims(), g.dtype(), g.device()).unwrap();
                        let zeros = ones.zeros_like().unwrap();
                        let (g, be) = (g.as_tensor().clone(), be.as_tensor().clone());
                        [zeros, ones, g, be, w.flatten_all().unwrap()]
                    })
                    .collect();
                let params = Tensor::cat(&pieces, 0).unwrap();
                dense_block(&x, &params, &layers, true).unwrap().0
            };
            step(&f, &up)
        })
    });
    group.bench_function("condensenet86_block0/layer_by_layer", |b| {
        b.iter(|| {
            let f = || {
                let mut feats = x.as_tensor().clone();
                for (layer, vs) in layers.iter().zip(&vars) {
                    let mut z = feats.clone();
                    for (s, (g, be, w)) in layer.stages.iter().zip(vs) {
                        let p = params(&z, g, be);
                        z = preact_conv(&z, &p, w, s.conv.clone(), 1e-5, ActKind::Relu, true, None)
                            .unwrap();
                    }
                    feats = Tensor::cat(&[&feats, &z], 1).unwrap();
                }
                feats
            };
            step(&f, &up)
        })
    });
    group.finish();
}

criterion_group!(benches, kernels, dense_block_op);
criterion_main!(benches);
