//! `ablate plan`: the runs of an experiment file, without running anything.

use std::path::PathBuf;

use crate::experiment::Experiment;
use crate::train::read_status;

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// The experiment TOML file.
    pub file: PathBuf,
    /// Results root; a run's status is shown when its dir exists.
    #[arg(long, env = "ABLATE_RESULTS", default_value = "results")]
    pub results: PathBuf,
    #[arg(long, value_enum, default_value = "table")]
    pub format: PlanFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum PlanFormat {
    Table,
    /// The plan as `plan.json` stores it, plus each run's full config.
    Json,
}

pub fn run(args: &PlanArgs) -> anyhow::Result<()> {
    let exp = Experiment::load(&args.file)?;
    match args.format {
        PlanFormat::Json => {
            let mut value = serde_json::to_value(&exp)?;
            for (run, v) in exp
                .runs
                .iter()
                .zip(value["runs"].as_array_mut().into_iter().flatten())
            {
                v["config"] = serde_json::to_value(&run.config)?;
                v["model_name"] = run.config.model_name.clone().into();
            }
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        PlanFormat::Table => {
            println!(
                "{}: {} runs (retries {}), results in {}",
                exp.name,
                exp.runs.len(),
                exp.retries,
                exp.results_dir(&args.results).display()
            );
            if let Some(d) = &exp.description {
                println!("{d}");
            }
            println!("{:<12}  {:<11}  {:<9}  run", "id", "status", "epochs");
            for run in &exp.runs {
                let status = read_status(&exp.run_dir(&args.results, run));
                let (state, epochs) = match &status {
                    Some(s) => (
                        s.status.to_string(),
                        format!("{}/{}", s.epochs_done, s.epochs),
                    ),
                    None => ("-".into(), format!("0/{}", run.config.train.epochs)),
                };
                println!(
                    "{:<12}  {state:<11}  {epochs:<9}  {}",
                    run.id,
                    run.describe()
                );
            }
        }
    }
    Ok(())
}
