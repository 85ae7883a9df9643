//! The local scheduler: every run of an experiment as a child `ablate train` process, one per
//! slot at a time, so a crash or an out-of-memory kills only that run.
//!
//! Children run in their own process group (a terminal's Ctrl-C reaches only the scheduler)
//! and get SIGTERM if the scheduler dies, so they stop at a step boundary and stay resumable.
//! The first SIGINT/SIGTERM stops launching and asks every child to stop; a second one kills
//! them. Starting the scheduler again resumes every unfinished run from its checkpoint.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::device::Slot;
use super::display::{duration, Console};
use super::queue::{decide, prepare, Decision, Policy, Prepared};
use super::{lock_experiment, Outcome};
use crate::experiment::Experiment;
use crate::train::{is_busy, mark_lost, read_status, RunStatus, SUMMARY_FILE};

/// Where the scheduler's own lines go, in the experiment's results dir, once its stdout is
/// closed.
pub const SCHEDULER_LOG: &str = "scheduler.log";

/// Where the child's stdout and stderr go, in its run dir.
pub const OUTPUT_FILE: &str = "output.log";

#[derive(Debug, Clone)]
pub struct LocalOptions {
    pub results: PathBuf,
    /// Passed to every run as `--data-dir`.
    pub data_dir: PathBuf,
    pub slots: Vec<Slot>,
    pub policy: Policy,
}

struct Running {
    run: usize,
    slot: usize,
    child: Child,
    started: Instant,
}

/// Runs every unfinished run of `exp` on `opts.slots` and returns how it went.
pub fn run_local(exp: &Experiment, opts: &LocalOptions) -> anyhow::Result<Outcome> {
    let _lock = lock_experiment(exp, &opts.results, "ablate run")?;
    super::log_to(exp.results_dir(&opts.results).join(SCHEDULER_LOG));
    let prepared = prepare(exp, &opts.results, &opts.policy)?;
    let mut outcome = Outcome::default();
    let mut pending: VecDeque<usize> = VecDeque::new();
    for (i, p) in prepared.iter().enumerate() {
        match decide(&p.status, &opts.policy) {
            Decision::Run => pending.push_back(i),
            Decision::Done => outcome.skipped_done += 1,
            Decision::Diverged => outcome.diverged.push(exp.runs[p.index].id.clone()),
            Decision::OutOfRetries { .. } => outcome.failed.push(exp.runs[p.index].id.clone()),
        }
    }
    super::say(&format!(
        "{}: {} runs; {} done already, {} to run{}",
        exp.name,
        exp.runs.len(),
        outcome.skipped_done,
        pending.len(),
        match (outcome.failed.len(), outcome.diverged.len()) {
            (0, 0) => String::new(),
            (f, d) =>
                format!("; skipping {f} failed (out of retries; --rerun-failed) and {d} diverged"),
        }
    ));
    if pending.is_empty() {
        return Ok(outcome);
    }
    super::say(&format!(
        "slots: {}",
        opts.slots
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let data_dir = std::path::absolute(&opts.data_dir).unwrap_or_else(|_| opts.data_dir.clone());
    let mut launches = vec![0u32; prepared.len()];
    let mut running: Vec<Running> = Vec::new();
    let mut free: Vec<bool> = vec![true; opts.slots.len()];
    let mut display = Console::new(pending.len());
    let mut finished = 0usize;
    let (mut stopping, mut killed) = (false, false);
    let mut waiting_note = Instant::now() - Duration::from_secs(60);
    loop {
        let signals = crate::signal::count();
        if signals >= 1 && !stopping {
            stopping = true;
            display.event(&format!(
                "stopping: no new runs; asking {} running runs to stop at their next step (again to kill them)",
                running.len()
            ));
            for r in &running {
                // SAFETY: plain kill(2) on a child we spawned and have not reaped.
                unsafe { libc::kill(r.child.id() as libc::pid_t, libc::SIGTERM) };
            }
        }
        if signals >= 2 && !killed {
            killed = true;
            for r in &mut running {
                let _ = r.child.kill();
            }
        }
        // Reap.
        let mut i = 0;
        while i < running.len() {
            match running[i].child.try_wait()? {
                Some(exit) => {
                    let r = running.swap_remove(i);
                    free[r.slot] = true;
                    let p = &prepared[r.run];
                    let requeue = settle(
                        exp,
                        p,
                        &opts.policy,
                        exit,
                        &r,
                        &launches,
                        stopping,
                        &display,
                        &mut outcome,
                    );
                    if requeue {
                        pending.push_back(r.run);
                    } else {
                        finished += 1;
                    }
                }
                None => i += 1,
            }
        }
        // Launch.
        if !stopping {
            while let Some(slot) = free.iter().position(|&f| f) {
                let Some(k) = pending.iter().position(|&i| !is_busy(&prepared[i].dir)) else {
                    if !pending.is_empty() && waiting_note.elapsed() >= Duration::from_secs(30) {
                        waiting_note = Instant::now();
                        display.event(&format!(
                            "waiting: {} runs are held by other processes (an earlier scheduler's children finishing their step)",
                            pending.len()
                        ));
                    }
                    break;
                };
                let run = pending.remove(k).expect("index from position");
                let p = &prepared[run];
                let child = spawn(p, &opts.slots[slot], &data_dir)?;
                launches[run] += 1;
                display.event(&format!(
                    "start {} on {} (pid {}): {}",
                    exp.runs[p.index].id,
                    opts.slots[slot].label(),
                    child.id(),
                    exp.runs[p.index].describe()
                ));
                free[slot] = false;
                running.push(Running {
                    run,
                    slot,
                    child,
                    started: Instant::now(),
                });
            }
        }
        if running.is_empty() && (pending.is_empty() || stopping) {
            break;
        }
        display.state(
            finished,
            &state_line(
                exp,
                &prepared,
                &running,
                &outcome,
                pending.len(),
                &opts.slots,
            ),
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    display.finish();
    outcome.interrupted = stopping;
    outcome.not_started = pending.len();
    Ok(outcome)
}

/// Records how a child's run ended; true when it should run again.
#[allow(clippy::too_many_arguments)]
fn settle(
    exp: &Experiment,
    p: &Prepared,
    policy: &Policy,
    exit: ExitStatus,
    r: &Running,
    launches: &[u32],
    stopping: bool,
    display: &Console,
    outcome: &mut Outcome,
) -> bool {
    let run = &exp.runs[p.index];
    let took = duration(r.started.elapsed().as_secs_f64());
    let mut status = read_status(&p.dir);
    if status
        .as_ref()
        .is_some_and(|s| s.status == RunStatus::Running)
    {
        if is_busy(&p.dir) {
            // Our child found the run held by another process and left; try again later.
            return !stopping;
        }
        let message = format!("its process ended ({exit}) without recording an end");
        status = mark_lost(&p.dir, &message).ok().flatten().or(status);
    }
    let Some(status) = status else {
        display.event(&format!(
            "failed {}: no status.json after {exit}; see {}",
            run.id,
            p.dir.join(OUTPUT_FILE).display()
        ));
        outcome.failed.push(run.id.clone());
        return false;
    };
    match status.status {
        RunStatus::Done => {
            let top1 = std::fs::read_to_string(p.dir.join(SUMMARY_FILE))
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v["deploy_test_top1"].as_f64());
            display.event(&format!(
                "done {} in {took}{}: {}",
                run.id,
                top1.map_or(String::new(), |t| format!(", deploy test top1 {t:.2}%")),
                run.describe()
            ));
            outcome.done.push(run.id.clone());
            false
        }
        RunStatus::Diverged => {
            display.event(&format!(
                "diverged {}: {}",
                run.id,
                status.message.unwrap_or_default()
            ));
            outcome.diverged.push(run.id.clone());
            false
        }
        RunStatus::Interrupted => {
            display.event(&format!(
                "stopped {} after {} of {} epochs (resumable)",
                run.id, status.epochs_done, status.epochs
            ));
            outcome.stopped.push(run.id.clone());
            false
        }
        RunStatus::Queued | RunStatus::Failed | RunStatus::Running => {
            let why = status
                .message
                .clone()
                .or_else(|| last_line(&p.dir.join(OUTPUT_FILE)))
                .unwrap_or_else(|| exit.to_string());
            // Exit 2 is a usage error (a config this machine refuses, a damaged file): it
            // fails the same way every time, so it is not retried.
            let usage_error = exit.code() == Some(2);
            // A child that never recorded an attempt (it failed before opening the run) still
            // used one of this session's launches.
            let retry = !stopping
                && !usage_error
                && decide(&status, policy) == Decision::Run
                && launches[r.run] <= policy.retries;
            display.event(&format!(
                "failed {} ({exit}): {why}{}",
                run.id,
                if retry {
                    "; retrying"
                } else if usage_error {
                    "; not retried: it would fail the same way until the cause is fixed"
                } else {
                    ""
                }
            ));
            if !retry {
                outcome.failed.push(run.id.clone());
            }
            retry
        }
    }
}

/// `2/8 done, 1 failed | running: 3fa9c2d1e0b4 cuda:0 epoch 3/10 ETA 2m10s, ...`
fn state_line(
    exp: &Experiment,
    prepared: &[Prepared],
    running: &[Running],
    outcome: &Outcome,
    pending: usize,
    slots: &[Slot],
) -> String {
    let mut parts = vec![format!(
        "{} done, {} failed, {} diverged, {} waiting",
        outcome.done.len() + outcome.skipped_done,
        outcome.failed.len(),
        outcome.diverged.len(),
        pending
    )];
    for r in running {
        let p = &prepared[r.run];
        let id = &exp.runs[p.index].id;
        let detail = match read_status(&p.dir) {
            Some(s) if s.status == RunStatus::Running => format!(
                "epoch {}/{}{}",
                s.epochs_done,
                s.epochs,
                s.eta_seconds()
                    .map_or(String::new(), |e| format!(" ETA {}", duration(e)))
            ),
            _ => "starting".into(),
        };
        parts.push(format!("{id} {} {detail}", slots[r.slot].label()));
    }
    parts.join(" | ")
}

fn last_line(file: &Path) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
}

/// Starts `ablate train --resume` for the run in its dir on `slot`.
fn spawn(p: &Prepared, slot: &Slot, data_dir: &Path) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("finding the ablate executable")?;
    let output = OpenOptions::new()
        .create(true)
        .append(true)
        .open(p.dir.join(OUTPUT_FILE))
        .with_context(|| format!("opening {}", p.dir.join(OUTPUT_FILE).display()))?;
    let mut cmd = Command::new(exe);
    cmd.arg("train")
        .arg("--out")
        .arg(&p.dir)
        .arg("--resume")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--device")
        .arg(slot.train_device())
        .stdin(Stdio::null())
        .stdout(output.try_clone()?)
        .stderr(output)
        .process_group(0);
    match slot {
        Slot::Gpu { index, .. } => {
            cmd.env("CUDA_VISIBLE_DEVICES", index.to_string());
        }
        Slot::Cpu { threads, .. } => {
            cmd.env("RAYON_NUM_THREADS", threads.to_string())
                .env("CUDA_VISIBLE_DEVICES", "");
        }
    }
    // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            // If the scheduler dies, the child is asked to stop (and stays resumable).
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .with_context(|| format!("starting the run in {}", p.dir.display()))
}
