//! `ablate count`: FLOPs, parameters and sizes of one model.

use anyhow::Context;

use super::format::{aligned, csv_line, markdown, megabytes, thousands};
use crate::analyze::{Analysis, Convention};
use crate::config::ModelSource;
use crate::model::Form;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Md,
    Csv,
    Json,
}

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
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
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
        (None, Format::Table | Format::Md) => vec![Convention::Paper, Convention::Executed],
        (None, Format::Csv | Format::Json) => vec![Convention::Paper],
    };
    let text = match args.format {
        Format::Table => table(&analysis, &conventions, args.layers),
        Format::Md => md(&analysis, &conventions, args.layers),
        Format::Csv => csv(&analysis, &conventions, args.layers),
        Format::Json => json(&analysis, conventions[0])?,
    };
    print!("{text}");
    Ok(())
}

fn summary_rows(a: &Analysis, conventions: &[Convention]) -> Vec<Vec<String>> {
    let mut rows = vec![
        std::iter::once(String::new())
            .chain(conventions.iter().map(|c| c.to_string()))
            .collect(),
        std::iter::once("FLOPs (multiply-adds)".to_string())
            .chain(conventions.iter().map(|&c| thousands(a.total(c).flops)))
            .collect(),
        std::iter::once("params".to_string())
            .chain(conventions.iter().map(|&c| thousands(a.total(c).params)))
            .collect(),
    ];
    for (label, bytes) in [
        ("deploy_bytes (safetensors)", a.deploy_bytes),
        ("deploy float32 params", a.deploy_param_bytes),
        ("checkpoint_bytes (training)", a.checkpoint_bytes),
    ] {
        rows.push(vec![
            label.to_string(),
            format!("{} ({})", thousands(bytes), megabytes(bytes)),
        ]);
    }
    rows
}

fn layer_rows(a: &Analysis, conventions: &[Convention]) -> Vec<Vec<String>> {
    a.layers
        .iter()
        .map(|l| {
            let mut row = vec![l.name.clone(), l.op.clone()];
            for &c in conventions {
                row.push(thousands(l.get(c).flops));
                row.push(thousands(l.get(c).params));
            }
            row
        })
        .collect()
}

fn layer_header(conventions: &[Convention]) -> Vec<String> {
    let mut header = vec!["layer".to_string(), "op".to_string()];
    for c in conventions {
        header.push(format!("{c} FLOPs"));
        header.push(format!("{c} params"));
    }
    header
}

fn table(a: &Analysis, conventions: &[Convention], layers: bool) -> String {
    let mut out = format!("model  {}\nform   {}\n\n", a.model, a.form);
    out += &aligned(&summary_rows(a, conventions));
    if layers {
        let mut rows = vec![layer_header(conventions)];
        rows.extend(layer_rows(a, conventions));
        out += "\n";
        out += &aligned(&rows);
    }
    out
}

fn md(a: &Analysis, conventions: &[Convention], layers: bool) -> String {
    let rows = summary_rows(a, conventions);
    let mut header = rows[0].clone();
    header[0] = format!("{} ({})", a.model, a.form);
    let body: Vec<Vec<String>> = rows[1..]
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.resize(header.len(), String::new());
            r
        })
        .collect();
    let mut out = markdown(&header, &body);
    if layers {
        out += "\n";
        out += &markdown(&layer_header(conventions), &layer_rows(a, conventions));
    }
    out
}

fn csv(a: &Analysis, conventions: &[Convention], layers: bool) -> String {
    if layers {
        let mut header = vec!["name".to_string(), "op".to_string()];
        for c in conventions {
            header.push(format!("{c}_flops"));
            header.push(format!("{c}_params"));
        }
        let mut out = csv_line(&header);
        for l in &a.layers {
            let mut row = vec![l.name.clone(), l.op.clone()];
            for &c in conventions {
                row.push(l.get(c).flops.to_string());
                row.push(l.get(c).params.to_string());
            }
            out += &csv_line(&row);
        }
        return out;
    }
    let header = [
        "model",
        "form",
        "convention",
        "flops",
        "params",
        "deploy_bytes",
        "checkpoint_bytes",
    ]
    .map(String::from);
    let mut out = csv_line(&header);
    for &c in conventions {
        let t = a.total(c);
        let row = [
            a.model.clone(),
            a.form.to_string(),
            c.to_string(),
            t.flops.to_string(),
            t.params.to_string(),
            a.deploy_bytes.to_string(),
            a.checkpoint_bytes.to_string(),
        ];
        out += &csv_line(&row);
    }
    out
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
