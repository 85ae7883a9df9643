//! Runs grouped by the axes that differ (seeds aggregated), with polars: n/N, and mean and
//! standard deviation (ddof 1) of every metric over each group's finished runs.

use polars::prelude::*;

use super::load::RunRow;

/// Mean and sample standard deviation over a group's finished runs; `None` without any.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Stat {
    pub mean: Option<f64>,
    /// `None` with fewer than two values.
    pub std: Option<f64>,
    /// Finished runs with a value.
    pub n: usize,
}

/// The metrics of [`RunRow`] that are aggregated, by column name.
pub const METRICS: &[&str] = &[
    "final_top1",
    "best_top1",
    "deploy_top1",
    "flops_paper",
    "params_paper",
    "flops_executed",
    "params_executed",
    "deploy_bytes",
    "checkpoint_bytes",
    "train_seconds",
    "epoch_seconds",
    "images_per_second",
];

fn metric(row: &RunRow, name: &str) -> Option<f64> {
    match name {
        "final_top1" => row.final_top1,
        "best_top1" => row.best_top1,
        "deploy_top1" => row.deploy_top1,
        "flops_paper" => row.flops_paper,
        "params_paper" => row.params_paper,
        "flops_executed" => row.flops_executed,
        "params_executed" => row.params_executed,
        "deploy_bytes" => row.deploy_bytes,
        "checkpoint_bytes" => row.checkpoint_bytes,
        "train_seconds" => row.train_seconds,
        "epoch_seconds" => row.epoch_seconds,
        "images_per_second" => row.images_per_second,
        _ => None,
    }
}

/// One row of a report: a group of runs that differ only by seed.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupRow {
    pub group: String,
    pub model_name: String,
    /// The model of the group's runs (they differ only by seed).
    pub model: Option<crate::config::ModelSpec>,
    /// Finished runs.
    pub n: usize,
    /// Planned runs.
    pub total: usize,
    /// Per metric of [`METRICS`], in that order.
    pub stats: Vec<Stat>,
    /// The devices the finished runs ran on, joined.
    pub device: String,
    /// What the group's runs were trained on, each distinct setting once.
    pub trained_on: Vec<super::trained_on::TrainedOn>,
    /// The finished runs, in plan order: each one's seed and metrics.
    pub finished: Vec<SeedRow>,
}

/// One finished run of a group.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedRow {
    pub seed: u64,
    /// Per metric of [`METRICS`], in that order.
    pub values: Vec<Option<f64>>,
}

impl GroupRow {
    pub fn stat(&self, name: &str) -> Stat {
        METRICS
            .iter()
            .position(|m| *m == name)
            .map_or_else(Stat::default, |i| self.stats[i])
    }

    /// `(seed, value)` of metric `name` over the finished runs that have it, in plan order.
    pub fn by_seed(&self, name: &str) -> Vec<(u64, f64)> {
        let Some(i) = METRICS.iter().position(|m| *m == name) else {
            return Vec::new();
        };
        self.finished
            .iter()
            .filter_map(|r| Some((r.seed, r.values[i]?)))
            .collect()
    }
}

/// The runs as a polars frame: `group`, `model_name`, `done` (1 or 0) and one column per
/// metric, null unless the run is done.
pub fn runs_frame(rows: &[RunRow]) -> PolarsResult<DataFrame> {
    let mut columns = vec![
        Column::new(
            "group".into(),
            rows.iter().map(|r| r.group.as_str()).collect::<Vec<_>>(),
        ),
        Column::new(
            "done".into(),
            rows.iter()
                .map(|r| u32::from(r.status.is_done()))
                .collect::<Vec<_>>(),
        ),
    ];
    for name in METRICS {
        let values: Vec<Option<f64>> = rows
            .iter()
            .map(|r| metric(r, name).filter(|_| r.status.is_done()))
            .collect();
        columns.push(Column::new((*name).into(), values));
    }
    DataFrame::new(rows.len(), columns)
}

/// Groups in order of first appearance.
pub fn aggregate(rows: &[RunRow]) -> anyhow::Result<Vec<GroupRow>> {
    let df = runs_frame(rows)?;
    #[allow(deprecated)]
    let means = df
        .group_by_stable(["group"])?
        .select(METRICS.to_vec())
        .mean()?;
    #[allow(deprecated)]
    let stds = df
        .group_by_stable(["group"])?
        .select(METRICS.to_vec())
        .std(1)?;
    #[allow(deprecated)]
    let counts = df.group_by_stable(["group"])?.select(["done"]).sum()?;
    #[allow(deprecated)]
    let totals = df.group_by_stable(["group"])?.select(["done"]).count()?;
    let names = means.column("group")?.str()?.clone();
    let groups: Vec<String> = (0..names.len())
        .map(|i| names.get(i).unwrap_or_default().to_string())
        .collect();
    let f64_at = |df: &DataFrame, col: &str, i: usize| -> anyhow::Result<Option<f64>> {
        let c = df.column(col)?.cast(&DataType::Float64)?;
        Ok(c.f64()?.get(i).filter(|v| v.is_finite()))
    };
    let mut out = Vec::with_capacity(groups.len());
    for (i, group) in groups.into_iter().enumerate() {
        let members: Vec<&RunRow> = rows.iter().filter(|r| r.group == group).collect();
        let mut stats = Vec::with_capacity(METRICS.len());
        for m in METRICS {
            stats.push(Stat {
                mean: f64_at(&means, &format!("{m}_mean"), i)?,
                std: f64_at(&stds, &format!("{m}_agg_std"), i)?,
                n: members
                    .iter()
                    .filter(|r| r.status.is_done() && metric(r, m).is_some())
                    .count(),
            });
        }
        let mut devices: Vec<String> = members
            .iter()
            .filter(|r| r.status.is_done())
            .filter_map(|r| r.device.clone())
            .collect();
        devices.sort();
        devices.dedup();
        let mut trained_on = Vec::new();
        for t in members.iter().filter_map(|r| r.trained_on) {
            if !trained_on.contains(&t) {
                trained_on.push(t);
            }
        }
        let finished = members
            .iter()
            .filter(|r| r.status.is_done())
            .map(|r| SeedRow {
                seed: r.seed,
                values: METRICS.iter().map(|m| metric(r, m)).collect(),
            })
            .collect();
        out.push(GroupRow {
            finished,
            trained_on,
            model_name: members
                .first()
                .map_or_else(String::new, |r| r.model_name.clone()),
            model: members.iter().find_map(|r| r.model.clone()),
            n: f64_at(&counts, "done_sum", i)?.unwrap_or(0.0) as usize,
            total: f64_at(&totals, "done_count", i)?.unwrap_or(0.0) as usize,
            stats,
            device: if devices.is_empty() {
                "-".into()
            } else {
                devices.join(", ")
            },
            group,
        });
    }
    Ok(out)
}
