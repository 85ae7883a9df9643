//! The report's tables from grouped runs: Table I (FLOPs, params, top-1, size) and Table II
//! (training time) beside the CondenseNeXt paper's values, and the ablation table (each
//! variant against its baseline).

use super::aggregate::{GroupRow, Stat};
use super::compare::Comparison;
use super::paper::{self, PaperRow, PAPER_DEVICE};
use super::trained_on;
use crate::table::Table;

/// Which top-1 a report shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Metric {
    /// The last epoch's test top-1.
    Final,
    /// The best epoch's test top-1.
    Best,
}

impl Metric {
    pub fn column(self) -> &'static str {
        match self {
            Self::Final => "final_top1",
            Self::Best => "best_top1",
        }
    }
}

/// Why our CondenseNeXt counts differ from the paper's (one sentence, printed under Table I).
pub const COUNT_NOTE: &str = "The paper's 23.80M FLOPs / 0.16M params for CondenseNeXt cannot be \
    reproduced from its released code, whose counter cannot see the learned depthwise-separable \
    layer (it prints 3.80M / 0.0095M for the released configuration, which executes 61.3M \
    multiply-adds), so this table counts the layers our deploy model really executes.";

/// What "trained on" says, and when the paper's top-1 stands beside a row.
pub const TRAINED_ON_NOTE: &str = "Trained on: the data set, the training images of one epoch and \
    the epochs. The paper's top-1 (94.24%, 92.28%) is from CIFAR-10, all 50,000 training images, \
    200 epochs: it and its Δ stand beside a row only where the row was trained so; elsewhere the \
    cell says what differs (n/c: not comparable). FLOPs, parameters and sizes do not depend on \
    the data.";

/// Why the paper's sizes are set against our checkpoint size.
pub const SIZE_NOTE: &str = "The paper's model sizes (16.7 MB, 2.9 MB) match training \
    checkpoints (weights, masks, BN statistics and momentum), not deployable models; both of ours \
    are shown.";

pub const TIME_NOTE: &str = "The paper's times are 200 epochs of CIFAR-10 (50,000 images) on one \
    NVIDIA Tesla V100 (PyTorch 1.1); each of our rows names the device it ran on. `CIFAR-10 epoch` \
    is 50,000 images at the run's measured training speed: comparable to the paper's per-epoch \
    time only on the same device, while the speed-up against the baseline compares across devices.";

fn paper_row(g: &GroupRow) -> Option<&'static PaperRow> {
    paper::row_of(&g.model_name)
}

/// `12.34 ± 0.56` (no ± for one value), `-` for none.
fn pm(s: Stat, scale: f64, digits: usize) -> String {
    match (s.mean, s.std) {
        (None, _) => "-".into(),
        (Some(m), None) => format!("{:.*}", digits, m * scale),
        (Some(m), Some(sd)) => format!("{:.*} ± {:.*}", digits, m * scale, digits, sd * scale),
    }
}

fn delta(ours: Option<f64>, theirs: f64, digits: usize) -> String {
    ours.map_or("-".into(), |o| format!("{:+.*}", digits, o - theirs))
}

/// How a group is named in tables and figures: its label or axes, or its model.
pub(crate) fn name(g: &GroupRow) -> String {
    if g.group == "(base)" || g.group.starts_with("preset=") {
        g.model_name.clone()
    } else {
        g.group.clone()
    }
}

/// `HH:MM:SS`.
pub fn hms(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

pub fn table1(groups: &[GroupRow], metric: Metric) -> Table {
    let mut rows = Vec::new();
    for g in groups {
        let top1 = g.stat(metric.column());
        let flops = g.stat("flops_paper");
        let params = g.stat("params_paper");
        let paper = paper_row(g);
        let p = |f: fn(&PaperRow) -> f64, digits: usize| {
            paper.map_or("-".into(), |p| format!("{:.*}", digits, f(p)))
        };
        let d = |ours: Option<f64>, f: fn(&PaperRow) -> f64, digits: usize| {
            paper.map_or("-".into(), |p| delta(ours, f(p), digits))
        };
        // The paper's top-1 only beside a row trained as the paper trained.
        let unlike = paper.and_then(|_| trained_on::unlike_paper(&g.trained_on));
        let (paper_top1, d_top1) = match &unlike {
            Some(why) => (why.clone(), "n/c".into()),
            None => (p(|p| p.top1, 2), d(top1.mean, |p| p.top1, 2)),
        };
        rows.push(vec![
            name(g),
            format!("{}/{}", g.n, g.total),
            trained_on::label(&g.trained_on),
            pm(flops, 1e-6, 2),
            pm(g.stat("flops_executed"), 1e-6, 2),
            pm(params, 1e-6, 3),
            pm(g.stat("params_executed"), 1e-6, 3),
            pm(top1, 1.0, 2),
            pm(g.stat("deploy_bytes"), 1e-6, 2),
            pm(g.stat("checkpoint_bytes"), 1e-6, 2),
            p(|p| p.flops_m, 2),
            d(flops.mean.map(|v| v * 1e-6), |p| p.flops_m, 2),
            p(|p| p.params_m, 2),
            d(params.mean.map(|v| v * 1e-6), |p| p.params_m, 2),
            paper_top1,
            d_top1,
            p(|p| p.size_mb, 1),
            d(
                g.stat("checkpoint_bytes").mean.map(|v| v * 1e-6),
                |p| p.size_mb,
                2,
            ),
        ]);
    }
    Table {
        title: format!(
            "Table I: FLOPs, parameters, top-1 ({} epoch) and model size",
            match metric {
                Metric::Final => "final",
                Metric::Best => "best",
            }
        ),
        columns: [
            "model",
            "n/N",
            "trained on",
            "FLOPs (M)",
            "FLOPs executed (M)",
            "params (M)",
            "params executed (M)",
            "top-1 (%)",
            "deploy size (MB)",
            "checkpoint size (MB)",
            "paper FLOPs (M)",
            "Δ FLOPs (M)",
            "paper params (M)",
            "Δ params (M)",
            "paper top-1 (%)",
            "Δ top-1 (pp)",
            "paper size (MB)",
            "Δ size vs checkpoint (MB)",
        ]
        .map(String::from)
        .to_vec(),
        rows,
        notes: vec![
            "FLOPs are multiply-adds at batch 1 in the paper's convention (CondenseNet's measure_model); \"executed\" counts every stored parameter and masked conv at full size. Values are mean ± std over the finished seeds (n of N planned runs).".into(),
            TRAINED_ON_NOTE.into(),
            COUNT_NOTE.into(),
            SIZE_NOTE.into(),
        ],
    }
}

/// Images in one CIFAR-10 training epoch.
const CIFAR10_TRAIN_IMAGES: f64 = 50_000.0;

pub fn table2(groups: &[GroupRow]) -> Table {
    let base = baseline(groups);
    let base_ips = base.and_then(|b| b.stat("images_per_second").mean);
    let base_paper = base.and_then(paper_row);
    let mut table = Table::new(
        "Table II: training time",
        &[
            "model",
            "n/N",
            "trained on",
            "total training time (HH:MM:SS)",
            "time per epoch (s)",
            "speed-up vs baseline (per image)",
            "images/s",
            "CIFAR-10 epoch (s)",
            "device",
            "paper total",
            "paper per epoch (s)",
            "paper speed-up",
            "paper device",
        ],
    );
    for g in groups {
        // Time per image: epochs of different sizes compare alike.
        let speedup = match (base_ips, g.stat("images_per_second").mean) {
            (Some(b), Some(ips)) if b > 0.0 => format!("{:.2}x", ips / b),
            _ => "-".into(),
        };
        let cifar_epoch = g
            .stat("images_per_second")
            .mean
            .filter(|&ips| ips > 0.0)
            .map_or("-".into(), |ips| {
                format!("{:.0}", CIFAR10_TRAIN_IMAGES / ips)
            });
        let paper = paper_row(g);
        let paper_speedup = match (base_paper, paper) {
            (Some(b), Some(p)) => format!("{:.2}x", b.epoch_seconds / p.epoch_seconds),
            _ => "-".into(),
        };
        table.push(vec![
            name(g),
            format!("{}/{}", g.n, g.total),
            trained_on::label(&g.trained_on),
            g.stat("train_seconds").mean.map_or("-".into(), hms),
            pm(g.stat("epoch_seconds"), 1.0, 1),
            speedup,
            pm(g.stat("images_per_second"), 1.0, 0),
            cifar_epoch,
            g.device.clone(),
            paper.map_or("-".into(), |p| hms(p.total_seconds)),
            paper.map_or("-".into(), |p| format!("{:.2}", p.epoch_seconds)),
            paper_speedup,
            paper.map_or("-", |_| PAPER_DEVICE).into(),
        ]);
    }
    table
        .note(format!(
            "Training time excludes evaluation; time per epoch is each run's median over its \
             epochs, then mean ± std over seeds. Speed-up is the row's training images per second \
             over the baseline's ({}): time per image, so runs whose epochs differ in size \
             compare alike.",
            base.map_or_else(|| "-".into(), name)
        ))
        .note(TIME_NOTE)
}

/// The baseline of an ablation: the group labelled `baseline`, else the first.
pub fn baseline(groups: &[GroupRow]) -> Option<&GroupRow> {
    groups
        .iter()
        .find(|g| g.group == "baseline")
        .or_else(|| groups.first())
}

pub fn ablation(groups: &[GroupRow], metric: Metric) -> Table {
    let base = baseline(groups);
    let rel = |g: &GroupRow, m: &str| -> String {
        match (g.stat(m).mean, base.and_then(|b| b.stat(m).mean)) {
            (Some(v), Some(b)) if b != 0.0 => format!("{:+.1}%", 100.0 * (v - b) / b),
            _ => "-".into(),
        }
    };
    // Each variant's test against the baseline; Holm's adjustment over the table's p-values.
    let comparisons: Vec<Option<Comparison>> = groups
        .iter()
        .map(|g| {
            base.filter(|b| !std::ptr::eq(*b, g))
                .map(|b| Comparison::new(g, b, metric.column()))
        })
        .collect();
    let holm = super::power::holm(
        &comparisons
            .iter()
            .map(|c| c.as_ref().and_then(|c| c.test.as_ref().ok()).map(|t| t.p))
            .collect::<Vec<_>>(),
    );
    let rows = groups
        .iter()
        .zip(comparisons.iter().zip(&holm))
        .map(|(g, (comparison, holm))| {
            let top1 = g.stat(metric.column());
            let base_top1 = base.map(|b| b.stat(metric.column()));
            let d_top1 = match (top1.mean, base_top1.and_then(|b| b.mean)) {
                (Some(v), Some(b)) => format!("{:+.2}", v - b),
                _ => "-".into(),
            };
            let cells = TestCells::new(
                comparison.as_ref(),
                *holm,
                top1.mean
                    .zip(base_top1.and_then(|b| b.mean))
                    .map(|(v, b)| v - b),
            );
            let claim = match (base.and_then(|b| b.model.as_ref()), g.model.as_ref()) {
                (Some(b), Some(v)) => paper::claim_for(b, v),
                _ => None,
            };
            let percent = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:+.2}%", 100.0 * v));
            // The paper's top-1 change only beside rows trained as the paper trained.
            let unlike = trained_on::unlike_paper(&g.trained_on)
                .or_else(|| base.and_then(|b| trained_on::unlike_paper(&b.trained_on)));
            let paper_d_top1 = match (claim.and_then(|c| c.top1_pp), unlike) {
                (None, _) => "-".into(),
                (Some(_), Some(why)) => why,
                (Some(v), None) => format!("{v:+.3}"),
            };
            // Time per image: epochs of different sizes compare alike.
            let d_time = match (
                g.stat("images_per_second").mean,
                base.and_then(|b| b.stat("images_per_second").mean),
            ) {
                (Some(v), Some(b)) if v > 0.0 => format!("{:+.1}%", 100.0 * (b / v - 1.0)),
                _ => "-".into(),
            };
            vec![
                name(g),
                format!("{}/{}", g.n, g.total),
                pm(top1, 1.0, 2),
                d_top1,
                cells.test,
                cells.interval,
                cells.p,
                cells.holm,
                cells.detectable,
                cells.seeds,
                pm(g.stat("flops_paper"), 1e-6, 2),
                rel(g, "flops_paper"),
                pm(g.stat("params_paper"), 1e-6, 3),
                rel(g, "params_paper"),
                pm(g.stat("deploy_bytes"), 1e-6, 2),
                rel(g, "deploy_bytes"),
                pm(g.stat("epoch_seconds"), 1.0, 1),
                d_time,
                claim.map_or("-", |c| c.name).into(),
                percent(claim.and_then(|c| c.flops)),
                percent(claim.and_then(|c| c.params)),
                paper_d_top1,
            ]
        })
        .collect();
    Table {
        title: format!(
            "Ablation: each variant against {}",
            base.map_or_else(|| "-".into(), name)
        ),
        columns: [
            "variant",
            "n/N",
            "top-1 (%)",
            "Δ top-1 (pp)",
            "test",
            "95% CI (pp)",
            "p",
            "p (Holm)",
            "detectable Δ (pp)",
            "seeds/arm for Δ",
            "FLOPs (M)",
            "Δ FLOPs",
            "params (M)",
            "Δ params",
            "deploy size (MB)",
            "Δ size",
            "time per epoch (s)",
            "Δ time per image",
            "paper's change",
            "paper Δ FLOPs",
            "paper Δ params",
            "paper Δ top-1 (pp)",
        ]
        .map(String::from)
        .to_vec(),
        rows,
        notes: vec![
            "Δ is against the baseline row: percentage points for top-1, relative change otherwise; means over finished seeds.".into(),
            "Paper columns: the change the CondenseNeXt paper's text claims an effect for, where this row is exactly the baseline with that change (depthwise-separable 3x3: -7.3% FLOPs, -11.5% params, -1.17 pp; pruning with cardinality at the baseline's p: -60.99%, -65.21%, -0.88 pp; ReLU6: +0.577 pp). The paper takes its steps one after another from CondenseNet toward CondenseNeXt; this table changes one key of the baseline at a time. The paper's top-1 change stands only beside rows trained in its setting (CIFAR-10, 50,000 images, 200 epochs); elsewhere the cell says what differs.".into(),
            "test, 95% CI and p: the paired t-test of the per-seed differences where the variant and the baseline finished the same seeds (2 or more) on the same data (a seed fixes the data order and augmentation draws), else Welch's t-test of the two groups; at least 2 finished seeds on each side and some spread are needed (when every seed of both lands on the same top-1, or every seed moves by the same step, no test can be given); \"n.s.\" marks an interval that contains 0, a difference not distinguishable from seed noise.".into(),
            "p (Holm): the p-values of this table's variants adjusted together by Holm's step-down method (Holm 1979), so that testing many variants at once does not find a change by chance; a row is significant at 5% over the whole table when it is below 0.05.".into(),
            "detectable Δ: the smallest top-1 difference the seeds run so far detect with 80% power at the 5% level (two-sided t-test, noncentral t; Cohen 1988), at the spread they show (the pooled standard deviation, or that of the paired differences). seeds/arm for Δ: the seeds per arm, in the same design, that would detect the observed Δ with 80% power (\"never\" when Δ is 0, \">100000\" beyond that). `ablate plan --seeds-for DELTA` prices the seeds a chosen difference needs.".into(),
        ],
    }
}

/// The test columns of one ablation row, as table cells ("-" for the baseline row).
struct TestCells {
    test: String,
    interval: String,
    p: String,
    holm: String,
    detectable: String,
    seeds: String,
}

impl TestCells {
    /// `diff` is the row's mean difference from the baseline (the observed Δ).
    fn new(comparison: Option<&Comparison>, holm: Option<f64>, diff: Option<f64>) -> Self {
        let dash = || "-".to_string();
        let Some(c) = comparison else {
            return Self {
                test: dash(),
                interval: dash(),
                p: dash(),
                holm: dash(),
                detectable: dash(),
                seeds: dash(),
            };
        };
        let test = c.kind().map_or_else(dash, |k| k.to_string());
        let (interval, p) = match &c.test {
            Ok(t) => (
                format!(
                    "[{:+.2}, {:+.2}]{}",
                    t.ci.0,
                    t.ci.1,
                    if t.significant() { "" } else { " n.s." }
                ),
                format!("{:.3}", t.p),
            ),
            Err(why) => (why.to_string(), dash()),
        };
        let seeds = match diff.map(|d| c.seeds_for(d)) {
            Some(Ok(Some(n))) => n.to_string(),
            Some(Ok(None)) if diff == Some(0.0) => "never".into(),
            Some(Ok(None)) => format!(">{}", super::power::MAX_SEEDS),
            Some(Err(_)) | None => dash(),
        };
        Self {
            test,
            interval,
            p,
            holm: holm.map_or_else(dash, |p| format!("{p:.3}")),
            detectable: c.detectable().map_or_else(dash, |d| format!("{d:.2}")),
            seeds,
        }
    }
}
