//! `ablate count`: FLOPs, parameters and sizes of one model.

use anyhow::Context;

use super::format::{thousands, OutputFormat};
use crate::analyze::{Analysis, Convention};
use crate::config::ModelSource;
use crate::model::Form;
use crate::table::Table;

#[derive(Debug, clap::Args)]
pub struct CountArgs {
    /// A preset (condensenet-<N> for N = 6L+2, condensenet-182, condensenet-86-dsc,
    /// condensenext) or a model TOML file (`preset = "..."` plus any model keys).
    pub model: String,
    /// Override a model key, e.g. `--set p=2` (repeatable, applied in order).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Which form to count; sizes are always reported for both.
    #[arg(long, value_enum, default_value_t = Form::Deploy)]
    pub form: Form,
    /// Counting rules; table and md show both when not given, csv and json default to paper.
    #[arg(long, value_enum)]
    pub convention: Option<Convention>,
    /// List every op with its cost.
    #[arg(long)]
    pub layers: bool,
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Seed of the random weights the pruning schedule runs on (counts do not depend on it).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(args: &CountArgs) -> anyhow::Result<()> {
    let model = ModelSource::parse(&args.model).resolve(&args.set)?;
    crate::config::check_fits(&model.spec, 0)?;
    let scratch = std::env::temp_dir().join(format!("ablate-count-{}", std::process::id()));
    let analysis = Analysis::of(&model, args.form, args.seed, &scratch);
    std::fs::remove_dir_all(&scratch).with_context(|| format!("removing {}", scratch.display()))?;
    let analysis = analysis?;
    let conventions = match (args.convention, args.format) {
        (Some(c), _) => vec![c],
        (None, OutputFormat::Table | OutputFormat::Md) => {
            vec![Convention::Paper, Convention::Executed]
        }
        (None, OutputFormat::Csv | OutputFormat::Json) => vec![Convention::Paper],
    };
    let text = match args
        .format
        .render(&tables(&analysis, &conventions, args.layers, args.format))
    {
        Some(text) => text,
        None => json(&analysis, conventions[0])?,
    };
    print!("{text}");
    Ok(())
}

/// Totals per convention, then the model's sizes.
fn totals(a: &Analysis, conventions: &[Convention]) -> Table {
    let mut columns = vec![format!("{} ({} form)", a.model, a.form)];
    columns.extend(conventions.iter().map(|c| c.to_string()));
    let mut t = Table {
        columns,
        ..Table::default()
    };
    t.push(
        std::iter::once("FLOPs (multiply-adds)".to_string())
            .chain(conventions.iter().map(|&c| thousands(a.total(c).flops)))
            .collect(),
    );
    t.push(
        std::iter::once("params".to_string())
            .chain(conventions.iter().map(|&c| thousands(a.total(c).params)))
            .collect(),
    );
    t
}

fn sizes(a: &Analysis) -> Table {
    let mut t = Table::new("", &["file", "bytes", "MB"]);
    for (label, bytes) in [
        ("deploy_bytes (safetensors)", a.deploy_bytes),
        ("deploy float32 params", a.deploy_param_bytes),
        ("checkpoint_bytes (training)", a.checkpoint_bytes),
    ] {
        t.push(vec![
            label.to_string(),
            thousands(bytes),
            format!("{:.2}", bytes as f64 / 1e6),
        ]);
    }
    t
}

/// Every op with its cost; `machine` gives plain numbers and snake-case headers (CSV).
fn layers(a: &Analysis, conventions: &[Convention], machine: bool) -> Table {
    let mut columns = vec![
        if machine { "name" } else { "layer" }.to_string(),
        "op".to_string(),
    ];
    for c in conventions {
        if machine {
            columns.push(format!("{c}_flops"));
            columns.push(format!("{c}_params"));
        } else {
            columns.push(format!("{c} FLOPs"));
            columns.push(format!("{c} params"));
        }
    }
    let number = |n: u64| if machine { n.to_string() } else { thousands(n) };
    let mut t = Table {
        columns,
        ..Table::default()
    };
    for l in &a.layers {
        let mut row = vec![l.name.clone(), l.op.clone()];
        for &c in conventions {
            row.push(number(l.get(c).flops));
            row.push(number(l.get(c).params));
        }
        t.push(row);
    }
    t
}

/// One line per convention with plain numbers (the CSV without `--layers`).
fn totals_machine(a: &Analysis, conventions: &[Convention]) -> Table {
    let mut t = Table::new(
        "",
        &[
            "model",
            "form",
            "convention",
            "flops",
            "params",
            "deploy_bytes",
            "checkpoint_bytes",
        ],
    );
    for &c in conventions {
        let total = a.total(c);
        t.push(vec![
            a.model.clone(),
            a.form.to_string(),
            c.to_string(),
            total.flops.to_string(),
            total.params.to_string(),
            a.deploy_bytes.to_string(),
            a.checkpoint_bytes.to_string(),
        ]);
    }
    t
}

/// The tables `count` prints in `format` (not JSON).
fn tables(
    a: &Analysis,
    conventions: &[Convention],
    with_layers: bool,
    format: OutputFormat,
) -> Vec<Table> {
    match (format, with_layers) {
        (OutputFormat::Csv, true) => vec![layers(a, conventions, true)],
        (OutputFormat::Csv, false) => vec![totals_machine(a, conventions)],
        (_, true) => vec![
            totals(a, conventions),
            sizes(a),
            layers(a, conventions, false),
        ],
        (_, false) => vec![totals(a, conventions), sizes(a)],
    }
}

fn json(a: &Analysis, c: Convention) -> anyhow::Result<String> {
    let t = a.total(c);
    let layers: Vec<_> = a
        .layers
        .iter()
        .map(|l| serde_json::json!({"name": l.name, "op": l.op, "flops": l.get(c).flops, "params": l.get(c).params}))
        .collect();
    let value = serde_json::json!({
        "model": a.model,
        "form": a.form,
        "convention": c,
        "flops": t.flops,
        "params": t.params,
        "deploy_bytes": a.deploy_bytes,
        "checkpoint_bytes": a.checkpoint_bytes,
        "layers": layers,
    });
    Ok(serde_json::to_string_pretty(&value)? + "\n")
}
