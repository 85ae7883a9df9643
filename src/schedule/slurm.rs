//! The Slurm backend: the unfinished runs of an experiment go into a manifest, and one
//! `sbatch` job array runs them, each task `ablate worker --manifest M --index I` training one
//! run in its run dir, exactly as the local scheduler would. Submitting again skips runs that
//! are done or still queued or running in Slurm.
//!
//! Files, in `results/<experiment>/slurm/`: `manifest-<unix>.json`, `job-<unix>.sh`,
//! `jobs.json` (every submission: job id, manifest) and `logs/<job>_<task>.out`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::queue::{prepare, triage, Policy, Triage};
use super::{lock_experiment, Outcome};
use crate::clock::unix_seconds;
use crate::experiment::{Experiment, RunId};
use crate::io::write_atomic;
use crate::run_dir::is_busy;

#[derive(Debug, Clone)]
pub struct SlurmOptions {
    pub results: PathBuf,
    pub data_dir: PathBuf,
    pub partition: Option<String>,
    /// GPUs per array task (`--gres=gpu:N`); 0 trains on CPU.
    pub gpus_per_run: u32,
    /// CPUs per array task (`--cpus-per-task`), also the run's thread count.
    pub cpus_per_run: u32,
    /// At most this many tasks at once (`--array=0-N%K`).
    pub max_parallel: Option<u32>,
    /// Time limit per task, `[D-]HH:MM:SS`.
    pub time: Option<String>,
    pub policy: Policy,
}

/// The runs of one submission; task `i` of the array trains `runs[i]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub experiment: String,
    pub data_dir: PathBuf,
    pub gpus_per_run: u32,
    pub runs: Vec<ManifestRun>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestRun {
    pub id: String,
    /// Absolute run dir.
    pub dir: PathBuf,
}

/// One `sbatch` of this experiment, in `jobs.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Submission {
    pub job_id: String,
    pub manifest: PathBuf,
    /// Unix seconds.
    pub submitted: f64,
}

/// What [`submit`] did.
#[derive(Debug)]
pub struct Submitted {
    pub job_id: Option<String>,
    pub runs: Vec<RunId>,
    /// Runs already queued or running in Slurm.
    pub in_slurm: usize,
    pub outcome: Outcome,
}

/// Validates `--time`: `[D-]HH:MM:SS`.
pub fn parse_time(t: &str) -> anyhow::Result<String> {
    let (days, hms) = match t.split_once('-') {
        Some((d, rest)) => (Some(d), rest),
        None => (None, t),
    };
    let fields: Option<Vec<u32>> = hms
        .split(':')
        .map(|p| (p.len() == 2).then(|| p.parse().ok()).flatten())
        .collect();
    let ok = days.is_none_or(|d| d.parse::<u32>().is_ok())
        && matches!(fields.as_deref(), Some([_, m, s]) if *m < 60 && *s < 60);
    if !ok {
        anyhow::bail!("--time {t}: expected HH:MM:SS or D-HH:MM:SS");
    }
    Ok(t.to_string())
}

fn slurm_dir(exp: &Experiment, results: &Path) -> PathBuf {
    exp.results_dir(results).join("slurm")
}

/// Submits every unfinished run of `exp` that Slurm does not already hold as one job array.
pub fn submit(exp: &Experiment, opts: &SlurmOptions) -> anyhow::Result<Submitted> {
    let results = std::path::absolute(&opts.results).context("resolving --results")?;
    let _lock = lock_experiment(exp, &results, "ablate run --backend slurm")?;
    let prepared = prepare(exp, &results, &opts.policy)?;
    let live = live_tasks(exp, &results)?;
    let Triage { to_run, outcome } = triage(exp, &prepared, &opts.policy);
    let mut todo = Vec::new();
    let mut in_slurm = 0;
    for p in to_run.into_iter().map(|i| &prepared[i]) {
        if live.contains_key(exp.runs[p.index].id.as_str()) || is_busy(&p.dir) {
            in_slurm += 1;
        } else {
            todo.push(p);
        }
    }
    let mut submitted = Submitted {
        job_id: None,
        runs: todo.iter().map(|p| exp.runs[p.index].id.clone()).collect(),
        in_slurm,
        outcome,
    };
    if todo.is_empty() {
        return Ok(submitted);
    }
    let dir = slurm_dir(exp, &results);
    std::fs::create_dir_all(dir.join("logs"))
        .with_context(|| format!("creating {}", dir.join("logs").display()))?;
    let stamp = format!("{:.0}", unix_seconds() * 1000.0);
    let manifest_path = dir.join(format!("manifest-{stamp}.json"));
    let manifest = Manifest {
        experiment: exp.name.clone(),
        data_dir: std::path::absolute(&opts.data_dir).context("resolving --data-dir")?,
        gpus_per_run: opts.gpus_per_run,
        runs: todo
            .iter()
            .map(|p| ManifestRun {
                id: exp.runs[p.index].id.to_string(),
                dir: p.dir.clone(),
            })
            .collect(),
    };
    write_atomic(
        &manifest_path,
        serde_json::to_string_pretty(&manifest)?.as_bytes(),
    )?;
    let script_path = dir.join(format!("job-{stamp}.sh"));
    let script = job_script(
        exp,
        opts,
        &manifest_path,
        manifest.runs.len(),
        &dir.join("logs"),
    )?;
    write_atomic(&script_path, script.as_bytes())?;
    let out = Command::new("sbatch")
        .arg("--parsable")
        .arg(&script_path)
        .output()
        .context("running sbatch (is Slurm's client installed and SLURM_CONF set?)")?;
    if !out.status.success() {
        anyhow::bail!(
            "sbatch {} failed ({}): {}",
            script_path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let job_id = stdout.trim().split(';').next().unwrap_or("").to_string();
    if job_id.is_empty() {
        anyhow::bail!("sbatch printed no job id: {stdout:?}");
    }
    let mut jobs = read_jobs(exp, &results);
    jobs.push(Submission {
        job_id: job_id.clone(),
        manifest: manifest_path,
        submitted: unix_seconds(),
    });
    write_atomic(
        &dir.join("jobs.json"),
        serde_json::to_string_pretty(&jobs)?.as_bytes(),
    )?;
    submitted.job_id = Some(job_id);
    Ok(submitted)
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn job_script(
    exp: &Experiment,
    opts: &SlurmOptions,
    manifest: &Path,
    tasks: usize,
    logs: &Path,
) -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("finding the ablate executable")?;
    let mut s = String::from("#!/bin/bash\n");
    s += &format!("#SBATCH --job-name=ablate-{}\n", exp.name);
    s += &format!(
        "#SBATCH --array=0-{}{}\n",
        tasks - 1,
        opts.max_parallel.map_or(String::new(), |k| format!("%{k}"))
    );
    s += &format!("#SBATCH --output={}/%A_%a.out\n", logs.display());
    s += &format!("#SBATCH --cpus-per-task={}\n", opts.cpus_per_run);
    if opts.gpus_per_run > 0 {
        s += &format!("#SBATCH --gres=gpu:{}\n", opts.gpus_per_run);
    }
    if let Some(p) = &opts.partition {
        s += &format!("#SBATCH --partition={p}\n");
    }
    if let Some(t) = &opts.time {
        s += &format!("#SBATCH --time={t}\n");
    }
    s += "# Written by `ablate run --backend slurm`; each task trains one run of the manifest.\n";
    s += "export RAYON_NUM_THREADS=\"${SLURM_CPUS_PER_TASK:-1}\"\n";
    s += &format!(
        "exec {} worker --manifest {} --index \"$SLURM_ARRAY_TASK_ID\"{}\n",
        shell_quote(&exe.to_string_lossy()),
        shell_quote(&manifest.to_string_lossy()),
        if opts.policy.tensorboard {
            ""
        } else {
            " --no-tensorboard"
        }
    );
    Ok(s)
}

/// Every submission of this experiment so far.
pub fn read_jobs(exp: &Experiment, results: &Path) -> Vec<Submission> {
    std::fs::read_to_string(slurm_dir(exp, results).join("jobs.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// A Slurm task that holds a run: `job_task` and its state (PENDING, RUNNING, ...).
#[derive(Debug, Clone)]
pub struct LiveTask {
    pub task: String,
    pub state: String,
}

/// Runs (by id) whose array task Slurm still lists, pending or running.
pub fn live_tasks(exp: &Experiment, results: &Path) -> anyhow::Result<HashMap<String, LiveTask>> {
    let jobs = read_jobs(exp, results);
    let mut live = HashMap::new();
    if jobs.is_empty() {
        return Ok(live);
    }
    let out = Command::new("squeue")
        .args(["-h", "-r", "-o", "%i %T", "--name"])
        .arg(format!("ablate-{}", exp.name))
        .output()
        .context("running squeue (is Slurm's client installed and SLURM_CONF set?)")?;
    if !out.status.success() {
        anyhow::bail!(
            "squeue failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let manifests: HashMap<&str, Option<Manifest>> = jobs
        .iter()
        .map(|j| {
            let m = std::fs::read_to_string(&j.manifest)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
            (j.job_id.as_str(), m)
        })
        .collect();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut fields = line.split_whitespace();
        let (Some(task), Some(state)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some((job, index)) = task.split_once('_') else {
            continue;
        };
        let (Some(Some(manifest)), Ok(index)) = (manifests.get(job), index.parse::<usize>()) else {
            continue;
        };
        if let Some(run) = manifest.runs.get(index) {
            live.insert(
                run.id.clone(),
                LiveTask {
                    task: task.to_string(),
                    state: state.to_string(),
                },
            );
        }
    }
    Ok(live)
}

/// Reads a manifest written by [`submit`].
pub fn read_manifest(path: &Path) -> anyhow::Result<Manifest> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{}: not an ablate manifest", path.display()))
}
