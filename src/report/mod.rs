//! Reports: every run of an experiment read from its run dirs ([`load`]), grouped by the axes
//! that differ with seeds aggregated ([`aggregate`]), and rendered as the paper's Table I and
//! Table II and an ablation table ([`tables`]) in Markdown, CSV and LaTeX, plus a combined
//! `report.md`.

pub mod aggregate;
pub mod compare;
pub mod load;
pub mod paper;
pub mod plots;
pub mod power;
pub mod tables;
pub mod trained_on;
pub mod ttest;

use std::fmt::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::io::write_atomic;
pub use crate::table::{Format, Table};
pub use aggregate::{aggregate, GroupRow, Stat};
pub use load::{load_experiment, RunRow, RunState};
pub use tables::Metric;

/// The experiment dirs at `target`: itself when it holds a `plan.json`, else its subdirs that
/// do, sorted by name.
pub fn experiment_dirs(target: &Path) -> Vec<PathBuf> {
    if target.join(crate::run_dir::PLAN_FILE).is_file() {
        return vec![target.to_path_buf()];
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(target)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(crate::run_dir::PLAN_FILE).is_file())
        .collect();
    dirs.sort();
    dirs
}

/// Writes the report of the experiment in `exp_dir` as the folder `out` and returns the files
/// written. Whole or not at all: the report is made in a folder beside `out` and swapped in
/// when complete, so a failure (a full disk, a figure that cannot be drawn) leaves `out` as it
/// was, never half new and half old.
pub fn write_report(
    exp_dir: &Path,
    out: &Path,
    formats: &[Format],
    metric: Metric,
) -> anyhow::Result<Vec<PathBuf>> {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report".into());
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let pid = std::process::id();
    let staging = parent.join(format!(".{name}.partial-{pid}"));
    let old = parent.join(format!(".{name}.old-{pid}"));
    let _ = std::fs::remove_dir_all(&staging);
    let written = match write_report_into(exp_dir, &staging, formats, metric) {
        Ok(w) => w,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    let _ = std::fs::remove_dir_all(&old);
    let had_old = out.exists();
    if had_old {
        if let Err(e) = std::fs::rename(out, &old) {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e).with_context(|| format!("replacing {}", out.display()));
        }
    }
    if let Err(e) = std::fs::rename(&staging, out) {
        if had_old {
            let _ = std::fs::rename(&old, out);
        }
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e).with_context(|| format!("writing {}", out.display()));
    }
    let _ = std::fs::remove_dir_all(&old);
    Ok(written
        .into_iter()
        .map(|p| match p.strip_prefix(&staging) {
            Ok(rel) => out.join(rel),
            Err(_) => p,
        })
        .collect())
}

/// [`write_report`]'s files, written into the folder `out` (made if missing).
fn write_report_into(
    exp_dir: &Path,
    out: &Path,
    formats: &[Format],
    metric: Metric,
) -> anyhow::Result<Vec<PathBuf>> {
    let rows = load_experiment(exp_dir)?;
    for row in &rows {
        if let Some(problem) = &row.problem {
            eprintln!(
                "warning: run {}: {problem}; shown as {} and left out of every mean",
                row.id,
                load::DAMAGED
            );
        }
    }
    let groups = aggregate(&rows)?;
    let tables = [
        ("table1", tables::table1(&groups, metric)),
        ("table2", tables::table2(&groups)),
        ("ablation", tables::ablation(&groups, metric)),
    ];
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut written = Vec::new();
    for (stem, table) in &tables {
        for format in formats {
            let path = out.join(format!("{stem}.{}", format.extension()));
            write_atomic(&path, table.render(*format).as_bytes())?;
            written.push(path);
        }
    }
    let mut figures = Vec::new();
    for (file, caption) in [
        (
            plots::accuracy_vs_flops(out, &groups, metric)?,
            "Top-1 against FLOPs",
        ),
        (
            plots::time_per_epoch(out, &groups)?,
            "Training time per epoch",
        ),
    ] {
        if let Some(png) = file
            .iter()
            .find(|p| p.extension().is_some_and(|e| e == "png"))
        {
            figures.push((caption.to_string(), png.clone()));
        }
        written.extend(file);
    }
    for row in rows
        .iter()
        .filter(|r| r.status != RunState::Missing && r.problem.is_none())
    {
        let Some(mut c) = plots::Curves::read(&row.dir.join(crate::run_dir::METRICS_FILE))? else {
            continue;
        };
        c.pruning = row.pruning.clone();
        let title = format!(
            "{} — {} (seed {}, {})",
            row.id, row.group, row.seed, row.status
        );
        let file = plots::curves(out, &row.id, &title, &c)?;
        if let Some(png) = file
            .iter()
            .find(|p| p.extension().is_some_and(|e| e == "png"))
        {
            let mut caption = format!(
                "Training curves of {} ({}, seed {})",
                row.id, row.group, row.seed
            );
            if !row.pruning.is_empty() {
                let events: Vec<String> = row
                    .pruning
                    .iter()
                    .map(|e| format!("{:.2}: {}", e.epoch, e.structure))
                    .collect();
                caption += &format!(
                    "; dashed lines mark the pruning schedule (epoch: structure from there on): {}",
                    events.join(", ")
                );
            }
            figures.push((caption, png.clone()));
        }
        written.extend(file);
    }
    let path = out.join("report.md");
    write_atomic(
        &path,
        combined(exp_dir, &rows, &tables, &figures).as_bytes(),
    )?;
    written.push(path);
    Ok(written)
}

/// `report.md`: the experiment, its runs' state, and every table.
fn combined(
    exp_dir: &Path,
    rows: &[RunRow],
    tables: &[(&str, Table)],
    figures: &[(String, PathBuf)],
) -> String {
    let name = exp_dir
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let done = rows.iter().filter(|r| r.status.is_done()).count();
    let mut s = format!("# Report: {name}\n\n");
    let _ = writeln!(
        s,
        "{done} of {} planned runs are done; results from `{}`.\n",
        rows.len(),
        exp_dir.display()
    );
    for (_, table) in tables {
        s += &table.markdown();
        s += "\n";
    }
    if !figures.is_empty() {
        s += "### Figures\n\n";
        for (caption, png) in figures {
            let file = png
                .file_name()
                .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
            let _ = writeln!(s, "**{caption}**\n\n![{caption}]({file})\n");
        }
    }
    s += "### Runs\n\n| id | group | seed | status | epochs | final top-1 (%) | best top-1 (%) | device |\n|---|---|---|---|---|---|---|---|\n";
    let opt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {}/{} | {} | {} | {} |",
            r.id,
            r.group.replace('|', "\\|"),
            r.seed,
            r.status,
            r.epochs_done,
            r.epochs,
            opt(r.final_top1),
            opt(r.best_top1),
            r.device.as_deref().unwrap_or("-")
        );
    }
    let damaged: Vec<&RunRow> = rows.iter().filter(|r| r.problem.is_some()).collect();
    if !damaged.is_empty() {
        s += "\n### Damaged runs (left out of every mean)\n\n";
        for r in damaged {
            let _ = writeln!(
                s,
                "- {}: {}",
                r.id,
                r.problem.as_deref().unwrap_or_default()
            );
        }
    }
    s
}
