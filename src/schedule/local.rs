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
use super::queue::{after_failure, prepare, triage, AfterFailure, Policy, Prepared, Triage};
use super::{lock_experiment, Outcome};
use crate::experiment::Experiment;
use crate::run_dir::{is_busy, mark_lost, mark_stopped, read_status, read_summary, RunStatus};

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

/// A child training one run on one slot.
struct Running {
    /// Index into the prepared runs.
    run: usize,
    /// Index into the slots.
    slot: usize,
    child: Child,
    started: Instant,
}

/// How far a session has been asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Not asked: runs are launched as slots free up.
    No,
    /// One signal: no new runs, every child asked (SIGTERM) to stop at its next step.
    Asked,
    /// Two signals: every child killed.
    Killed,
}

/// Runs every unfinished run of `exp` on `opts.slots` and returns how it went.
pub fn run_local(exp: &Experiment, opts: &LocalOptions) -> anyhow::Result<Outcome> {
    let _lock = lock_experiment(exp, &opts.results, "ablate run")?;
    super::log_to(exp.results_dir(&opts.results).join(SCHEDULER_LOG));
    let prepared = prepare(exp, &opts.results, &opts.policy)?;
    let Triage { to_run, outcome } = triage(exp, &prepared, &opts.policy);
    super::say(&format!(
        "{}: {} runs; {} done already, {} to run{}",
        exp.name,
        exp.runs.len(),
        outcome.skipped_done,
        to_run.len(),
        match (outcome.failed.len(), outcome.diverged.len()) {
            (0, 0) => String::new(),
            (f, d) =>
                format!("; skipping {f} failed (out of retries; --rerun-failed) and {d} diverged"),
        }
    ));
    if to_run.is_empty() {
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
    Session::new(exp, opts, &prepared, to_run, outcome).run()
}

/// One scheduling session: runs wait in `pending` for a free slot, train as `running`
/// children, and are settled into `outcome` (or queued again to retry) when their child ends.
/// Each turn of [`Session::run`] handles signals, reaps ended children, launches pending runs
/// on free slots and shows the state.
struct Session<'a> {
    exp: &'a Experiment,
    opts: &'a LocalOptions,
    prepared: &'a [Prepared],
    /// `opts.data_dir`, absolute.
    data_dir: PathBuf,
    /// Runs (indices into `prepared`) waiting for a slot, in order.
    pending: VecDeque<usize>,
    running: Vec<Running>,
    /// Whether each slot is free.
    free: Vec<bool>,
    /// Children started for each run in this session.
    launches: Vec<u32>,
    /// Runs settled for good in this session.
    finished: usize,
    outcome: Outcome,
    console: Console,
    stop: Stop,
    /// When the last `waiting:` line was shown.
    waiting_note: Option<Instant>,
}

impl<'a> Session<'a> {
    /// A session that will run `to_run` (indices into `prepared`); `outcome` counts the runs
    /// skipped.
    fn new(
        exp: &'a Experiment,
        opts: &'a LocalOptions,
        prepared: &'a [Prepared],
        to_run: Vec<usize>,
        outcome: Outcome,
    ) -> Self {
        Self {
            exp,
            opts,
            prepared,
            data_dir: std::path::absolute(&opts.data_dir).unwrap_or_else(|_| opts.data_dir.clone()),
            console: Console::new(to_run.len()),
            pending: to_run.into(),
            running: Vec::new(),
            free: vec![true; opts.slots.len()],
            launches: vec![0; prepared.len()],
            finished: 0,
            outcome,
            stop: Stop::No,
            waiting_note: None,
        }
    }

    /// Runs the session until every run is settled, or, once stopping, until every child has
    /// ended.
    fn run(mut self) -> anyhow::Result<Outcome> {
        loop {
            self.handle_signals();
            self.reap()?;
            if self.stop == Stop::No {
                self.launch()?;
            }
            if self.running.is_empty() && (self.pending.is_empty() || self.stop != Stop::No) {
                break;
            }
            self.console.state(self.finished, &self.state_line());
            std::thread::sleep(Duration::from_millis(250));
        }
        self.console.finish();
        self.outcome.interrupted = self.stop != Stop::No;
        self.outcome.not_started = self.pending.len();
        Ok(self.outcome)
    }

    /// The first SIGINT/SIGTERM stops launching and asks every child to stop at its next step;
    /// the second kills them.
    fn handle_signals(&mut self) {
        let signals = crate::signal::count();
        if signals >= 1 && self.stop == Stop::No {
            self.stop = Stop::Asked;
            self.console.event(&format!(
                "stopping: no new runs; asking {} running runs to stop at their next step (again to kill them)",
                self.running.len()
            ));
            for r in &self.running {
                // SAFETY: plain kill(2) on a child we spawned and have not reaped.
                unsafe { libc::kill(r.child.id() as libc::pid_t, libc::SIGTERM) };
            }
        }
        if signals >= 2 && self.stop != Stop::Killed {
            self.stop = Stop::Killed;
            for r in &mut self.running {
                let _ = r.child.kill();
            }
        }
    }

    /// Settles every child that has ended, freeing its slot; a run to retry goes back to the
    /// end of the queue.
    fn reap(&mut self) -> anyhow::Result<()> {
        let mut i = 0;
        while i < self.running.len() {
            let Some(exit) = self.running[i].child.try_wait()? else {
                i += 1;
                continue;
            };
            let r = self.running.swap_remove(i);
            self.free[r.slot] = true;
            if self.settle(&r, exit) {
                self.pending.push_back(r.run);
            } else {
                self.finished += 1;
            }
        }
        Ok(())
    }

    /// Starts pending runs on free slots, skipping runs another process holds (and saying so
    /// every 30 s while that is all that is left).
    fn launch(&mut self) -> anyhow::Result<()> {
        let prepared = self.prepared;
        while let Some(slot) = self.free.iter().position(|&f| f) {
            let Some(k) = self
                .pending
                .iter()
                .position(|&i| !is_busy(&prepared[i].dir))
            else {
                if !self.pending.is_empty()
                    && self
                        .waiting_note
                        .is_none_or(|t| t.elapsed() >= Duration::from_secs(30))
                {
                    self.waiting_note = Some(Instant::now());
                    self.console.event(&format!(
                        "waiting: {} runs are held by other processes (an earlier scheduler's children finishing their step)",
                        self.pending.len()
                    ));
                }
                break;
            };
            let run = self.pending.remove(k).expect("index from position");
            let p = &prepared[run];
            let child = spawn(p, &self.opts.slots[slot], &self.data_dir, &self.opts.policy)?;
            self.launches[run] += 1;
            let spec = &self.exp.runs[p.index];
            self.console.event(&format!(
                "start {} on {} (pid {}): {}",
                spec.id,
                self.opts.slots[slot].label(),
                child.id(),
                spec.describe()
            ));
            self.free[slot] = false;
            self.running.push(Running {
                run,
                slot,
                child,
                started: Instant::now(),
            });
        }
        Ok(())
    }

    /// Records how a child's run ended; true when it should run again.
    fn settle(&mut self, r: &Running, exit: ExitStatus) -> bool {
        let p = &self.prepared[r.run];
        let run = &self.exp.runs[p.index];
        let stopping = self.stop != Stop::No;
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
            status = if stopping {
                // The user's stop ended it (a second Ctrl-C kills): it resumes, no retry spent.
                let message = format!("stopped on request ({exit}) before recording an end");
                mark_stopped(&p.dir, &message).ok().flatten().or(status)
            } else {
                let message = format!("its process ended ({exit}) without recording an end");
                mark_lost(&p.dir, &message).ok().flatten().or(status)
            };
        }
        let Some(status) = status else {
            self.console.event(&format!(
                "failed {}: no status.json after {exit}; see {}",
                run.id,
                p.dir.join(OUTPUT_FILE).display()
            ));
            self.outcome.failed.push(run.id.clone());
            return false;
        };
        match status.status {
            RunStatus::Done => {
                let top1 = read_summary(&p.dir)
                    .ok()
                    .flatten()
                    .map(|s| s.deploy_test_top1);
                self.console.event(&format!(
                    "done {} in {took}{}: {}",
                    run.id,
                    top1.map_or(String::new(), |t| format!(", deploy test top1 {t:.2}%")),
                    run.describe()
                ));
                self.outcome.done.push(run.id.clone());
                false
            }
            RunStatus::Diverged => {
                self.console.event(&format!(
                    "diverged {}: {}",
                    run.id,
                    status.message.unwrap_or_default()
                ));
                self.outcome.diverged.push(run.id.clone());
                false
            }
            RunStatus::Interrupted => {
                self.console.event(&format!(
                    "stopped {} after {} of {} epochs (resumable)",
                    run.id, status.epochs_done, status.epochs
                ));
                self.outcome.stopped.push(run.id.clone());
                false
            }
            RunStatus::Queued | RunStatus::Failed | RunStatus::Running => {
                let why = status
                    .message
                    .clone()
                    .or_else(|| last_line(&p.dir.join(OUTPUT_FILE)))
                    .unwrap_or_else(|| exit.to_string());
                let then = after_failure(
                    &status,
                    &self.opts.policy,
                    exit.code(),
                    self.launches[r.run],
                    stopping,
                );
                self.console.event(&format!(
                    "failed {} ({exit}): {why}{}",
                    run.id,
                    match then {
                        AfterFailure::Retry => "; retrying",
                        AfterFailure::UsageError =>
                            "; not retried: it would fail the same way until the cause is fixed",
                        AfterFailure::GiveUp => "",
                    }
                ));
                if then != AfterFailure::Retry {
                    self.outcome.failed.push(run.id.clone());
                }
                then == AfterFailure::Retry
            }
        }
    }

    /// `2 done, 1 failed, 0 diverged, 3 waiting | 3fa9c2d1e0b4 cuda:0 epoch 3/10 ETA 2m10s | ...`
    fn state_line(&self) -> String {
        let outcome = &self.outcome;
        let mut parts = vec![format!(
            "{} done, {} failed, {} diverged, {} waiting",
            outcome.done.len() + outcome.skipped_done,
            outcome.failed.len(),
            outcome.diverged.len(),
            self.pending.len()
        )];
        for r in &self.running {
            let p = &self.prepared[r.run];
            let id = &self.exp.runs[p.index].id;
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
            parts.push(format!("{id} {} {detail}", self.opts.slots[r.slot].label()));
        }
        parts.join(" | ")
    }
}

fn last_line(file: &Path) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
}

/// Starts `ablate train --resume` for the run in its dir on `slot`.
fn spawn(p: &Prepared, slot: &Slot, data_dir: &Path, policy: &Policy) -> anyhow::Result<Child> {
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
        .args((!policy.tensorboard).then_some("--no-tensorboard"))
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
