//! How fast this machine runs each kind of work a training step is made of: the calibration
//! of the time model ([`super::estimate`]).
//!
//! A probe is a one-layer dense block run through the fused block op the network trains with
//! ([`crate::kernels::dense_block`], forward and backward), whose first stage is of the kind
//! it measures and whose second is a small 1x1 to one channel. A stage costs seconds per
//! activation element ([`StageWork::elements`]: normalising, activating and their
//! gradients, the same for every kind) plus seconds per multiply-add of its kind. The element
//! and the 1x1's coefficients come from a narrow and a wide 1x1 probe; every other kind's
//! from its own probe, given the element cost; the 3x3 from two, one with few outputs per
//! group (CondenseNet's grouped 3x3) and one dense (CondenseNeXt's), since the direct loops'
//! speed per multiply-add grows with the outputs per group; dropout's extra per element from
//! the narrow probe with masks. Probes are taken at the three plane sides CIFAR networks run
//! at (32, 16, 8), in three settings: one thread alone, every core in one run, and every core
//! running its own one-thread copy at once. From the first the coefficients are solved
//! ([`Rates`]); the other two give how a run speeds up with its threads and slows down when
//! other runs share the machine ([`Calibration::at`]).
//!
//! A one-layer probe runs in cache at a small batch and pays once per read what a real block
//! pays once per channel (its batch statistics), so the probes give the kinds' speeds
//! relative to each other, not the absolute level. That comes from two real networks, timed
//! for a training step at batch 64 with every core ([`REFERENCES`]): CondenseNet (1x1s and
//! grouped 3x3s, where the element work weighs most) and CondenseNeXt (dense 3x3s, where the
//! multiply-adds do). Their times fix one scale for every element coefficient and one for
//! every multiply-add coefficient ([`Scale`]).

use std::sync::{Arc, Barrier};
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::config::{ModelSource, ModelSpec};
use crate::kernels::{
    dense_block, ActKind, BlockLayer, BlockStage, DropoutNoise, GroupInputs, StageConv,
};
use crate::model::{Network, StageKind, StageWork, StepWork};
use crate::rng::Rng;

/// The plane sides probed, pixels.
pub const SIDES: [usize; 3] = [32, 16, 8];

/// The networks whose training steps (at progress 0, batch [`REFERENCE_BATCH`]) fix the
/// time model's absolute scale: a preset and its overrides.
pub const REFERENCES: [(&str, &[&str]); 2] = [
    ("condensenet-86", &["stages=[4,4,4]"]),
    ("condensenext", &[]),
];

/// Images per training step of a reference network.
const REFERENCE_BATCH: usize = 64;

/// The reference networks' specs.
fn reference_specs() -> anyhow::Result<Vec<ModelSpec>> {
    REFERENCES
        .iter()
        .map(|(preset, sets)| {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            Ok(ModelSource::parse(preset).resolve(&sets)?.spec)
        })
        .collect()
}

/// What one training step of each reference network runs per image (at progress 0).
pub fn reference_work() -> anyhow::Result<Vec<StepWork>> {
    reference_specs()?
        .iter()
        .map(|spec| {
            Network::seeded(spec, 0, &Device::Cpu)?
                .step_work()?
                .ok_or_else(|| anyhow::anyhow!("a reference network has no fused form"))
        })
        .collect()
}

/// Seconds per image of a training step of each reference network on this thread pool
/// (median of three after one untimed step).
fn time_references() -> anyhow::Result<Vec<f64>> {
    let (x, y) = super::batch(REFERENCE_BATCH, 10)?;
    reference_specs()?
        .iter()
        .map(|spec| {
            let net = Network::seeded(spec, 0, &Device::Cpu)?;
            let mut t = super::time_training(&net, &x, &y, 1, 3)?;
            t.sort_by(f64::total_cmp);
            Ok(t[1] / REFERENCE_BATCH as f64)
        })
        .collect()
}

/// Probes in a calibration, in the order of its times.
pub const PROBES: usize = SIDES.len() * TARGETS.len();

/// Images per probe call.
const BATCH: usize = 16;

/// Timed calls per probe (after one untimed call); the median is kept.
const REPEATS: usize = 5;

/// What a probe measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// A 1x1 to few outputs: mostly the per-element cost.
    Elements,
    /// The narrow 1x1 with dropout masks: dropout's extra per element.
    Dropout,
    /// A wide 1x1.
    Pointwise,
    /// The learned-group 1x1, half its inputs live.
    Live,
    /// A grouped 3x3 with two outputs per group.
    Conv3x3Narrow,
    /// A dense 3x3.
    Conv3x3Wide,
    Depthwise3x3,
}

const TARGETS: [Target; 7] = [
    Target::Elements,
    Target::Dropout,
    Target::Pointwise,
    Target::Live,
    Target::Conv3x3Narrow,
    Target::Conv3x3Wide,
    Target::Depthwise3x3,
];

/// Outputs per group of the narrow and the wide 3x3 probe at `side`.
fn conv3x3_outputs(side: usize) -> (usize, usize) {
    (2, probe_channels(side).1)
}

/// `(inputs, width)` of the probes at `side`: the BN input of a bottleneck and the
/// bottleneck width typical of a CIFAR dense block there.
fn probe_channels(side: usize) -> (usize, usize) {
    match side {
        32 => (96, 32),
        16 => (224, 64),
        _ => (512, 128),
    }
}

/// One probe: a block input of `c0` channels at `side` and its one layer.
struct Probe {
    side: usize,
    c0: usize,
    stages: Vec<BlockStage>,
    /// The same stages as the time model prices them.
    work: Vec<StageWork>,
}

impl Probe {
    /// The probe of `target` at `side`, with channel counts typical of a CIFAR dense block at
    /// that side (the BN input of a bottleneck, the bottleneck width).
    fn new(target: Target, side: usize) -> candle_core::Result<Self> {
        let (inputs, width) = probe_channels(side);
        let one = StageConv::Pointwise { groups: 1 };
        let (c0, first, cout) = match target {
            Target::Elements | Target::Dropout => (inputs, one.clone(), 16),
            Target::Pointwise => (inputs, one.clone(), 2 * width),
            Target::Live => {
                // Four groups, each reading every other input.
                let kept: Vec<Vec<bool>> = (0..4)
                    .map(|g| (0..inputs).map(|j| (j + g) % 2 == 0).collect())
                    .collect();
                (
                    inputs,
                    StageConv::Live(GroupInputs::from_kept(&kept)?),
                    width,
                )
            }
            Target::Conv3x3Narrow => {
                let groups = width / 4;
                let outputs = groups * conv3x3_outputs(side).0;
                (4 * width, StageConv::Conv3x3 { groups }, outputs)
            }
            Target::Conv3x3Wide => (width, StageConv::Conv3x3 { groups: 1 }, width),
            Target::Depthwise3x3 => (width, StageConv::Conv3x3 { groups: width }, width),
        };
        let dropout = target == Target::Dropout;
        let stage = |conv: StageConv, cin: usize, cout: usize, name: &str| BlockStage {
            conv,
            cin,
            cout,
            act: ActKind::Relu,
            eps: 1e-5,
            noise: dropout.then(|| DropoutNoise::new(Rng::for_stream(0, name), 0.9)),
        };
        let stages = vec![
            stage(first, c0, cout, "probe/0"),
            stage(one, cout, 1, "probe/1"),
        ];
        let work = stages
            .iter()
            .map(|s| StageWork::new(&s.conv, s.cin, s.cout, side, s.noise.is_some()))
            .collect();
        Ok(Self {
            side,
            c0,
            stages,
            work,
        })
    }

    /// Seconds per image of a training forward and backward pass of this probe (median).
    fn time(&self) -> candle_core::Result<f64> {
        self.time_at(BATCH)
    }

    fn time_at(&self, batch: usize) -> candle_core::Result<f64> {
        let mut rng = Rng::for_stream(0, "calibrate/input");
        let mut uniform = |n: usize, lo: f64, hi: f64| -> Vec<f32> {
            (0..n).map(|_| rng.uniform(lo, hi) as f32).collect()
        };
        let x = Tensor::from_vec(
            uniform(batch * self.c0 * self.side * self.side, -2.0, 2.0),
            (batch, self.c0, self.side, self.side),
            &Device::Cpu,
        )?;
        let mut params = Vec::new();
        for s in &self.stages {
            let c = s.cin;
            params.extend(std::iter::repeat_n(0f32, c)); // running mean
            params.extend(std::iter::repeat_n(1f32, 2 * c)); // running var, gamma
            params.extend(std::iter::repeat_n(0.1f32, c)); // beta
            let weights = s.params_len() - 4 * c;
            params.extend(uniform(weights, -0.1, 0.1));
        }
        let n = params.len();
        let params = Var::from_tensor(&Tensor::from_vec(params, n, &Device::Cpu)?)?;
        let plan: Arc<[BlockLayer]> = vec![BlockLayer {
            stages: self.stages.clone(),
        }]
        .into();
        let step = || -> candle_core::Result<()> {
            let (y, _) = dense_block(&x, params.as_tensor(), &plan, true)?;
            y.sum_all()?.backward().map(drop)
        };
        step()?;
        let mut times = (0..REPEATS)
            .map(|_| {
                let t = Instant::now();
                step()?;
                Ok(t.elapsed().as_secs_f64() / batch as f64)
            })
            .collect::<candle_core::Result<Vec<f64>>>()?;
        times.sort_by(f64::total_cmp);
        Ok(times[REPEATS / 2])
    }
}

/// Every probe, side by side, in a fixed order.
fn probes() -> candle_core::Result<Vec<Probe>> {
    SIDES
        .iter()
        .flat_map(|&side| TARGETS.iter().map(move |&t| Probe::new(t, side)))
        .collect()
}

/// Seconds per image of every probe, in [`probes`] order.
pub type ProbeTimes = Vec<f64>;

/// Times every probe on a pool of `threads` threads.
fn time_probes(threads: usize) -> anyhow::Result<ProbeTimes> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let probes = probes()?;
    Ok(pool.install(|| {
        probes
            .iter()
            .map(Probe::time)
            .collect::<candle_core::Result<_>>()
    })?)
}

/// Times every probe in `copies` one-thread copies running at once; the median copy's time
/// of each probe.
fn time_shared(copies: usize) -> anyhow::Result<ProbeTimes> {
    let start = Arc::new(Barrier::new(copies));
    let handles: Vec<_> = (0..copies)
        .map(|_| {
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                time_probes(1)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(copies);
    for h in handles {
        let times = h
            .join()
            .map_err(|_| anyhow::anyhow!("a calibration thread panicked"))??;
        all.push(times);
    }
    Ok((0..all[0].len())
        .map(|i| {
            let mut v: Vec<f64> = all.iter().map(|t| t[i]).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        })
        .collect())
}

/// The probes' times on this machine in the three settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Logical CPUs the settings used.
    pub cores: usize,
    /// One thread, nothing else running.
    pub one: ProbeTimes,
    /// One run on `cores` threads.
    pub all: ProbeTimes,
    /// `cores` one-thread copies at once (each copy's time).
    pub shared: ProbeTimes,
    /// Seconds per image of a training step of each of [`REFERENCES`] on `cores` threads.
    pub references: Vec<f64>,
}

impl Calibration {
    /// Measures this machine with `cores` threads (a few seconds).
    pub fn measure(cores: usize) -> anyhow::Result<Self> {
        let cores = cores.max(1);
        let one = time_probes(1)?;
        let (all, shared) = if cores == 1 {
            (one.clone(), one.clone())
        } else {
            (time_probes(cores)?, time_shared(cores)?)
        };
        let pool = rayon::ThreadPoolBuilder::new().num_threads(cores).build()?;
        let references = pool.install(time_references)?;
        Ok(Self {
            cores,
            one,
            all,
            shared,
            references,
        })
    }

    /// Whether every time is a positive, finite number of a plausible size (a nanosecond to
    /// ten seconds per image) and there is one per probe and reference.
    pub fn is_valid(&self) -> bool {
        let plausible = |t: &[f64], count: usize| {
            t.len() == count && t.iter().all(|s| s.is_finite() && (1e-9..=10.0).contains(s))
        };
        self.cores >= 1
            && [&self.one, &self.all, &self.shared]
                .iter()
                .all(|t| plausible(t, PROBES))
            && plausible(&self.references, REFERENCES.len())
    }

    /// The probes' times of a run on `threads` threads while `busy` cores of the machine are
    /// working (its own included): Amdahl's law for the threads, with the serial share fitted
    /// to `all`, and a slowdown linear in the busy cores, fitted to `shared`. Beyond the
    /// calibrated cores the slowdown stays what it was with all of them busy (a larger
    /// machine of the same kind, of `cores` cores, is assumed to share as well per core), and
    /// more busy threads than `cores` take turns.
    pub fn at(&self, threads: usize, busy: usize, cores: usize) -> ProbeTimes {
        let n = self.cores as f64;
        let (t, busy) = (threads.max(1) as f64, busy.max(threads).max(1) as f64);
        let turns = (busy / cores.max(1) as f64).max(1.0);
        let busy = busy.min(n);
        (0..self.one.len())
            .map(|i| {
                let (one, all, shared) = (self.one[i], self.all[i], self.shared[i]);
                if self.cores == 1 {
                    return one * turns;
                }
                // shared = one * (1 + beta (n - 1)); all = one (1 + sigma (n - 1)) / n * shared / one.
                let beta = ((shared / one - 1.0) / (n - 1.0)).max(0.0);
                let sigma = ((n * all / shared - 1.0) / (n - 1.0)).clamp(0.0, 1.0);
                one * (1.0 + sigma * (t - 1.0)) / t * (1.0 + beta * (busy - 1.0)) * turns
            })
            .collect()
    }
}

/// Seconds per unit of work at one side, solved from the probes' times.
#[derive(Debug, Clone, Copy, PartialEq)]
struct SideRates {
    /// Per stage element ([`StageWork::elements`]), training forward and backward.
    element: f64,
    /// Extra per element of a stage with dropout.
    dropout: f64,
    /// Per forward multiply-add of a 1x1, of the live 1x1, and of a depthwise 3x3.
    pointwise: f64,
    live: f64,
    depthwise: f64,
    /// Per forward multiply-add of a 3x3 with the narrow and with the wide probe's outputs
    /// per group ([`conv3x3_outputs`]).
    conv3x3: (f64, f64),
    /// Those outputs per group.
    outputs: (usize, usize),
}

impl SideRates {
    /// Seconds per multiply-add of a 3x3 with `outputs` per group: between the two probes'
    /// by the logarithm of the outputs per group, held at either end beyond them.
    fn conv3x3(&self, outputs: usize) -> f64 {
        let (lo, hi) = (self.outputs.0 as f64, self.outputs.1 as f64);
        let f = ((outputs.max(1) as f64).ln() - lo.ln()) / (hi.ln() - lo.ln());
        let f = f.clamp(0.0, 1.0);
        // Geometric interpolation: the speeds differ by a factor, not an offset.
        (self.conv3x3.0.ln() * (1.0 - f) + self.conv3x3.1.ln() * f).exp()
    }

    /// A stage's seconds per image: `(element work, multiply-add work)`.
    fn stage(&self, w: &StageWork) -> (f64, f64) {
        let mac = match w.kind {
            StageKind::Pointwise => self.pointwise,
            StageKind::Live => self.live,
            StageKind::Conv3x3 => self.conv3x3(w.outputs_per_group()),
            StageKind::Depthwise3x3 => self.depthwise,
        };
        let element = self.element + if w.dropout { self.dropout } else { 0.0 };
        (w.elements() as f64 * element, w.macs as f64 * mac)
    }
}

/// The time model's coefficients for one setting (threads, busy cores).
#[derive(Debug, Clone, PartialEq)]
pub struct Rates {
    sides: Vec<(usize, SideRates)>,
}

impl Rates {
    /// Solves the coefficients from the probes' `times` ([`probes`] order). A probe's time is
    /// its stages' prices: the element and 1x1 coefficients solve the two 1x1 probes (two
    /// equations), then each other kind's multiply-add cost is what its probe's time leaves
    /// after the element cost and the second stage (at least 2% of the time: noise must not
    /// make it negative).
    pub fn solve(times: &[f64]) -> anyhow::Result<Self> {
        let probes = probes()?;
        let mut sides = Vec::new();
        for (s, &side) in SIDES.iter().enumerate() {
            let at = |t: Target| {
                let i = TARGETS.iter().position(|&x| x == t).unwrap_or(0);
                (&probes[s * TARGETS.len() + i], times[s * TARGETS.len() + i])
            };
            let sum = |p: &Probe, f: &dyn Fn(&StageWork) -> u64| -> f64 {
                p.work.iter().map(|w| f(w) as f64).sum()
            };
            // [elements, macs] . [element, pointwise] = time, for the two 1x1 probes.
            let (pe, te) = at(Target::Elements);
            let (pp, tp) = at(Target::Pointwise);
            let (a, b) = (sum(pe, &|w| w.elements()), sum(pe, &|w| w.macs));
            let (c, d) = (sum(pp, &|w| w.elements()), sum(pp, &|w| w.macs));
            let det = a * d - b * c;
            let mut element = (te * d - b * tp) / det;
            let mut pointwise = (a * tp - c * te) / det;
            if !(element > 0.0 && pointwise > 0.0) {
                // Noise swamped the split: charge each probe's time to its main term.
                element = te / a;
                pointwise = tp / d.max(1.0);
            }
            let (pd, td) = at(Target::Dropout);
            let dropout = ((td - te) / sum(pd, &|w| w.elements())).max(0.0);
            // The first stage's multiply-add cost, given the rest.
            let mac = |t: Target| {
                let (p, time) = at(t);
                let rest = sum(p, &|w| w.elements()) * element
                    + p.work[1..].iter().map(|w| w.macs as f64).sum::<f64>() * pointwise;
                (time - rest).max(0.02 * time) / p.work[0].macs.max(1) as f64
            };
            sides.push((
                side,
                SideRates {
                    element,
                    dropout,
                    pointwise,
                    live: mac(Target::Live),
                    depthwise: mac(Target::Depthwise3x3),
                    conv3x3: (mac(Target::Conv3x3Narrow), mac(Target::Conv3x3Wide)),
                    outputs: conv3x3_outputs(side),
                },
            ));
        }
        Ok(Self { sides })
    }

    /// The coefficients of the probed side nearest `side` (by ratio).
    fn near(&self, side: usize) -> Option<&SideRates> {
        let side = side.max(1) as f64;
        let d = |s: usize| (s as f64 / side).ln().abs();
        self.sides
            .iter()
            .min_by(|a, b| d(a.0).total_cmp(&d(b.0)))
            .map(|(_, r)| r)
    }

    /// Seconds per image of a training step that runs `work`, as `(element work, multiply-add
    /// work)`.
    pub fn step_seconds(&self, work: &StepWork) -> (f64, f64) {
        let (mut elements, mut macs) = work
            .stages
            .iter()
            .filter_map(|w| self.near(w.side).map(|r| r.stage(w)))
            .fold((0.0, 0.0), |(e, m), (de, dm)| (e + de, m + dm));
        // Outside the blocks: the stem conv and the classifier priced as 1x1s at the largest
        // side, the element-wise ops as a stage's elements.
        if let Some(r) = self.near(SIDES[0]) {
            elements += work.other_elements as f64 * r.element;
            macs += work.other_macs as f64 * r.pointwise;
        }
        (elements, macs)
    }

    /// These rates with every element coefficient times `scale.element` and every
    /// multiply-add coefficient times `scale.mac`.
    pub fn scaled(&self, scale: Scale) -> Self {
        let (e, m) = (scale.element, scale.mac);
        let sides = self
            .sides
            .iter()
            .map(|&(side, r)| {
                let r = SideRates {
                    element: r.element * e,
                    dropout: r.dropout * e,
                    pointwise: r.pointwise * m,
                    live: r.live * m,
                    depthwise: r.depthwise * m,
                    conv3x3: (r.conv3x3.0 * m, r.conv3x3.1 * m),
                    outputs: r.outputs,
                };
                (side, r)
            })
            .collect();
        Self { sides }
    }
}

/// The factors that bring the probes' coefficients to what whole networks take.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    pub element: f64,
    pub mac: f64,
}

impl Scale {
    /// Least share of element work by which two references must differ before they fix the two
    /// factors apart: closer, the two equations are nearly the same one, and a few percent of
    /// timing noise swings the factors 2x in opposite directions (measured: element 0.36, mac
    /// 1.76 from one calibration, 0.71 and 0.71 from the next).
    const MIN_SHARE_GAP: f64 = 0.2;

    /// The factors under which `rates` price each of `work` at its measured `seconds`: two
    /// equations for the two factors where the references differ enough in their mix of
    /// element and multiply-add work ([`Self::MIN_SHARE_GAP`]) and the solution is positive;
    /// else one factor for both, fitted by least squares on the relative error.
    pub fn fit(rates: &Rates, work: &[StepWork], seconds: &[f64]) -> Self {
        let parts: Vec<(f64, f64)> = work.iter().map(|w| rates.step_seconds(w)).collect();
        if let ([(e1, m1), (e2, m2)], [t1, t2]) = (&parts[..], seconds) {
            let share = |e: f64, m: f64| e / (e + m);
            if (share(*e1, *m1) - share(*e2, *m2)).abs() >= Self::MIN_SHARE_GAP {
                let det = e1 * m2 - e2 * m1;
                let element = (t1 * m2 - t2 * m1) / det;
                let mac = (e1 * t2 - e2 * t1) / det;
                if element > 0.0 && mac > 0.0 && element.is_finite() && mac.is_finite() {
                    return Self { element, mac };
                }
            }
        }
        // Minimises the sum of (scale * predicted / measured - 1)^2.
        let ratios: Vec<f64> = parts
            .iter()
            .zip(seconds)
            .map(|((e, m), t)| (e + m) / t)
            .filter(|r| r.is_finite() && *r > 0.0)
            .collect();
        let num: f64 = ratios.iter().sum();
        let den: f64 = ratios.iter().map(|r| r * r).sum();
        let one = if den > 0.0 { num / den } else { 1.0 };
        Self {
            element: one,
            mac: one,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made-up coefficients at `side`, of the magnitudes a calibration gives.
    fn sample_rates(side: usize) -> SideRates {
        SideRates {
            element: 1e-9 * (1.0 + side as f64 / 64.0),
            dropout: 5e-10,
            pointwise: 3e-11,
            live: 4e-11,
            depthwise: 2e-10,
            conv3x3: (9e-11, 2.5e-11),
            outputs: conv3x3_outputs(side),
        }
    }

    /// The solver recovers the coefficients that made a set of probe times, and prices a
    /// 3x3 between its two probes by its outputs per group.
    #[test]
    fn rates_are_solved_back_from_their_own_prices() {
        let probes = probes().unwrap();
        let price = |p: &Probe| {
            p.work
                .iter()
                .map(|w| {
                    let (e, m) = sample_rates(p.side).stage(w);
                    e + m
                })
                .sum::<f64>()
        };
        let times: Vec<f64> = probes.iter().map(price).collect();
        let rates = Rates::solve(&times).unwrap();
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b.abs();
        for &(side, got) in &rates.sides {
            let want = sample_rates(side);
            assert!(close(got.element, want.element), "{side}: {got:?}");
            assert!(close(got.dropout, want.dropout), "{side}: {got:?}");
            assert!(close(got.pointwise, want.pointwise), "{side}: {got:?}");
            assert!(close(got.live, want.live), "{side}: {got:?}");
            assert!(close(got.depthwise, want.depthwise), "{side}: {got:?}");
            assert!(close(got.conv3x3.0, want.conv3x3.0), "{side}: {got:?}");
            assert!(close(got.conv3x3.1, want.conv3x3.1), "{side}: {got:?}");
            // Outputs per group between the probes' are priced between them.
            let (lo, hi) = got.outputs;
            let mid = got.conv3x3((lo * hi).isqrt());
            assert!(mid < got.conv3x3(lo) && mid > got.conv3x3(hi), "{got:?}");
            assert_eq!(got.conv3x3(1), got.conv3x3(lo));
            assert_eq!(got.conv3x3(4 * hi), got.conv3x3(hi));
        }
        // A probe's price is what its stages cost.
        for p in &probes {
            let priced = price(p);
            let (e, m) = rates.step_seconds(&StepWork {
                stages: p.work.clone(),
                other_macs: 0,
                other_elements: 0,
            });
            assert!((e + m - priced).abs() <= 1e-6 * priced);
        }
    }

    /// The thread model reproduces its three measured settings and lies between them.
    #[test]
    fn the_thread_model_fits_its_settings() {
        let cal = Calibration {
            cores: 4,
            one: vec![1.0; PROBES],
            all: vec![0.4; PROBES],
            shared: vec![1.3; PROBES],
            references: vec![1e-2, 1e-3],
        };
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(cal.at(1, 1, 4)[0], 1.0));
        assert!(close(cal.at(4, 4, 4)[0], 0.4));
        assert!(close(cal.at(1, 4, 4)[0], 1.3));
        let two = cal.at(2, 4, 4)[0];
        assert!(two > 0.4 && two < 1.3, "{two}");
        // Twice the threads the machine has: they take turns.
        assert!(close(cal.at(1, 8, 4)[0], 2.0 * 1.3));
        // A larger machine of this kind shares as the calibrated one did with all cores busy.
        assert!(close(cal.at(1, 16, 16)[0], 1.3));
        assert!(cal.is_valid());
        let mut bad = cal.clone();
        bad.all[3] = 0.0;
        assert!(!bad.is_valid());
        bad.all[3] = f64::NAN;
        assert!(!bad.is_valid());
        bad.all[3] = 1e-300;
        assert!(!bad.is_valid());
        bad.all.pop();
        assert!(!bad.is_valid());
    }

    /// References whose work mixes elements and multiply-adds alike fix one factor for both,
    /// near the truth, where the two-equation solve would swing them apart on a few percent of
    /// noise; references that differ fix the two factors apart.
    #[test]
    fn the_scale_is_one_factor_when_the_references_mix_alike() {
        let rates = Rates {
            sides: SIDES
                .iter()
                .map(|&side| (side, sample_rates(side)))
                .collect(),
        };
        let stage = |reads: usize, macs: u64| StageWork {
            kind: StageKind::Pointwise,
            cin: reads,
            cout: 16,
            side: 32,
            groups: 1,
            reads,
            dropout: false,
            macs,
        };
        let work = |reads: usize, macs: u64| StepWork {
            stages: vec![stage(reads, macs)],
            other_macs: 0,
            other_elements: 0,
        };
        let price = |w: &StepWork| {
            let (e, m) = rates.step_seconds(w);
            (e, m, e + m)
        };
        // Element shares 0.85 and 0.83: the true factor 0.8, timed 5% off each way.
        let alike = [work(96, 1_000_000), work(112, 1_350_000)];
        let (e0, m0, t0) = price(&alike[0]);
        let (e1, m1, t1) = price(&alike[1]);
        assert!(
            (e0 / t0 - e1 / t1).abs() < Scale::MIN_SHARE_GAP,
            "{e0} {m0} {e1} {m1}"
        );
        let scale = Scale::fit(&rates, &alike, &[0.8 * t0 * 1.05, 0.8 * t1 * 0.95]);
        assert_eq!(scale.element, scale.mac);
        assert!((scale.element - 0.8).abs() < 0.05, "{scale:?}");
        // Shares 1.0 and 0.04: the factors come apart, exactly.
        let apart = [work(512, 100_000), work(16, 40_000_000)];
        let seconds: Vec<f64> = apart
            .iter()
            .map(|w| {
                let (e, m, _) = price(w);
                0.5 * e + 2.0 * m
            })
            .collect();
        let scale = Scale::fit(&rates, &apart, &seconds);
        assert!(
            (scale.element - 0.5).abs() < 1e-9 && (scale.mac - 2.0).abs() < 1e-9,
            "{scale:?}"
        );
    }

    /// A real calibration on this machine gives valid, positive coefficients.
    #[test]
    fn a_measured_calibration_is_valid() {
        let cal = Calibration::measure(1).unwrap();
        assert!(cal.is_valid(), "{cal:?}");
        let rates = Rates::solve(&cal.one).unwrap();
        for (_, r) in &rates.sides {
            let macs = [r.pointwise, r.live, r.depthwise, r.conv3x3.0, r.conv3x3.1];
            assert!(r.element > 0.0 && macs.iter().all(|&m| m > 0.0), "{r:?}");
        }
    }
}
