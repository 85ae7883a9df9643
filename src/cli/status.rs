//! `ablate status`: each run of an experiment as its run dir records it (status, epochs,
//! attempts, where it runs), with its Slurm task while Slurm holds it.

use std::path::PathBuf;

use super::runs_table::{Column, RunRow, RunsTable};
use crate::experiment::Experiment;
use crate::run_dir::{is_busy, RunStatus};
use crate::schedule::slurm;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The experiment TOML file.
    pub file: PathBuf,
    #[arg(long, env = "ABLATE_RESULTS", default_value = "results")]
    pub results: PathBuf,
}

/// `ablate status`: each run's status.json, with its Slurm task when Slurm still holds it.
pub fn run(args: &StatusArgs) -> anyhow::Result<()> {
    super::expect_dir("--results", &args.results)?;
    let exp = Experiment::load(&args.file)?;
    let results = std::path::absolute(&args.results)?;
    let live = match slurm::live_tasks(&exp, &results) {
        Ok(live) => live,
        Err(e) => {
            eprintln!("warning: {e:#}; showing the run dirs only");
            Default::default()
        }
    };
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    let table = RunsTable::new(
        7,
        &[
            Column::left("attempts", 8),
            Column::left("where", 24),
            Column::left("slurm", 20),
        ],
    );
    println!("{}", table.header());
    let host = crate::provenance::hostname();
    for run in &exp.runs {
        let row = RunRow::read(&exp, &results, run);
        let task = live.get(run.id.as_str());
        let (state, epochs, attempts, place) = match &row.status {
            // `running` on this host with no live process in the run dir: it died unrecorded.
            Some(s) if s.status == RunStatus::Running && s.host == host && !is_busy(&row.dir) => (
                "died".to_string(),
                format!("{}/{}", s.epochs_done, s.epochs),
                s.attempts.to_string(),
                format!("{} @ {}", s.device, s.host),
            ),
            Some(s) => (
                s.status.to_string(),
                format!("{}/{}", s.epochs_done, s.epochs),
                s.attempts.to_string(),
                if s.host.is_empty() {
                    "-".to_string()
                } else {
                    format!("{} @ {}", s.device, s.host)
                },
            ),
            // A status file that cannot be read is shown as such, not as never started.
            None if row.damaged() => (
                "damaged".into(),
                format!("?/{}", row.epochs()),
                "?".into(),
                "-".into(),
            ),
            None => (
                "planned".into(),
                format!("0/{}", row.epochs()),
                "0".into(),
                "-".into(),
            ),
        };
        *counts.entry(state.clone()).or_default() += 1;
        let slurm = task.map_or("-".to_string(), |t| format!("{} {}", t.task, t.state));
        println!(
            "{}",
            table.line(&row, &state, &epochs, &[attempts, place, slurm])
        );
    }
    let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    println!(
        "{}: {} runs: {}",
        exp.name,
        exp.runs.len(),
        summary.join(", ")
    );
    Ok(())
}
