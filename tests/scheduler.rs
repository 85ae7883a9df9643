//! The local scheduler end to end, with real child `ablate train` processes on tiny runs:
//! resuming after the scheduler is SIGKILLed, skipping finished work, the GPU path behind a fake
//! `nvidia-smi`, Ctrl-C, and the lock against a second scheduler.

mod common;
use common::scratch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ablate::experiment::Experiment;
use ablate::run_dir::{read_status, RunStatus, StatusRecord};

/// An experiment of `runs` tiny CondenseNeXt runs (seeds) of `epochs` epochs each.
fn experiment(dir: &Path, runs: usize, epochs: usize) -> PathBuf {
    let seeds: Vec<String> = (0..runs).map(|s| s.to_string()).collect();
    let text = format!(
        "name = \"tiny\"\nseeds = [{}]\n[base]\npreset = \"condensenext\"\nmodel.stages = [1, 1, 1]\n\
         train.epochs = {epochs}\ntrain.batch = 32\ndata.dataset = \"synthetic\"\n\
         data.train_size = 96\ndata.test_size = 32\n",
        seeds.join(", ")
    );
    let path = dir.join("tiny.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn command(file: &Path, results: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ablate"));
    c.arg("run")
        .arg(file)
        .arg("--results")
        .arg(results)
        .arg("--reports")
        .arg(results.with_file_name("reports"))
        .args(extra)
        .env("ABLATE_CACHE_DIR", common::CACHE)
        .env_remove("RAYON_NUM_THREADS");
    c
}

fn run(file: &Path, results: &Path, extra: &[&str]) -> Output {
    command(file, results, extra).output().unwrap()
}

/// A scheduler on two CPU slots in the background, and the run dirs of its experiment.
fn start(file: &Path, results: &Path, output: fn() -> Stdio) -> (Child, Vec<PathBuf>) {
    let child = command(file, results, &["--devices", "cpu:2"])
        .stdout(output())
        .stderr(output())
        .spawn()
        .unwrap();
    let exp = Experiment::load(file).unwrap();
    let dirs = exp.runs.iter().map(|r| exp.run_dir(results, r)).collect();
    (child, dirs)
}

fn statuses(file: &Path, results: &Path) -> Vec<StatusRecord> {
    let exp = Experiment::load(file).unwrap();
    exp.runs
        .iter()
        .map(|r| read_status(&exp.run_dir(results, r)).expect("a status.json"))
        .collect()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn kill(child: &Child, signal: i32) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, signal) };
}

/// Waits until two of the run dirs `dirs` are running.
fn wait_for_two_running(dirs: &[PathBuf]) {
    wait_until("two runs in progress", Duration::from_secs(300), || {
        dirs.iter()
            .filter(|d| read_status(d).is_some_and(|s| s.status == RunStatus::Running))
            .count()
            == 2
    });
}

#[test]
fn sigkill_of_the_scheduler_loses_no_run_and_trains_none_twice() {
    let dir = scratch("sigkill");
    let (file, results) = (experiment(&dir, 5, 3), dir.join("results"));
    let (mut first, dirs) = start(&file, &results, Stdio::null);
    // Kill it once a run is done and others are mid-way.
    wait_until("a finished run", Duration::from_secs(300), || {
        dirs.iter()
            .any(|d| read_status(d).is_some_and(|s| s.status == RunStatus::Done))
    });
    wait_until("a run in progress", Duration::from_secs(300), || {
        dirs.iter().any(|d| {
            read_status(d).is_some_and(|s| s.status == RunStatus::Running && s.epochs_done >= 1)
        })
    });
    kill(&first, libc::SIGKILL);
    first.wait().unwrap();
    // A second scheduler right away: the orphaned children are still finishing their step; it
    // must wait for them, not train beside them.
    let again = run(&file, &results, &["--devices", "cpu:2"]);
    assert!(again.status.success(), "{}", text(&again));
    for (d, s) in dirs.iter().zip(statuses(&file, &results)) {
        assert_eq!(s.status, RunStatus::Done, "{}", d.display());
        let completions = s
            .history
            .iter()
            .filter(|a| a.outcome == Some(RunStatus::Done))
            .count();
        assert_eq!(completions, 1, "{}: {:?}", d.display(), s.history);
        // Every attempt after the first resumed where the one before stopped.
        for pair in s.history.windows(2) {
            assert!(pair[1].started >= pair[0].ended.unwrap(), "{:?}", s.history);
            assert!(pair[1].epochs_at_start <= 3);
        }
        let metrics = std::fs::read_to_string(d.join("metrics.csv")).unwrap();
        assert_eq!(metrics.lines().count(), 4, "{metrics}");
    }
    // Nothing left to do: a third start trains nothing and rewrites no status.
    let before: Vec<String> = dirs
        .iter()
        .map(|d| std::fs::read_to_string(d.join("status.json")).unwrap())
        .collect();
    let third = run(&file, &results, &["--devices", "cpu:2"]);
    assert!(third.status.success(), "{}", text(&third));
    assert!(
        text(&third).contains("0 trained now, 5 done before"),
        "{}",
        text(&third)
    );
    let after: Vec<String> = dirs
        .iter()
        .map(|d| std::fs::read_to_string(d.join("status.json")).unwrap())
        .collect();
    assert_eq!(before, after);
}

#[test]
fn fake_gpus_get_one_run_each_at_a_time() {
    let dir = scratch("gpus");
    let (file, results) = (experiment(&dir, 4, 1), dir.join("results"));
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let smi = bin.join("nvidia-smi");
    std::fs::write(
        &smi,
        "#!/bin/sh\necho '0, Fake GPU A, 16384'\necho '1, Fake GPU B, 16384'\n",
    )
    .unwrap();
    std::fs::set_permissions(&smi, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    // Without CUDA in this build, GPUs found are not used: `plan` and `run` agree on CPU
    // slots and both say why and the two ways on (was: `run` refused, `plan` said GPUs); GPUs
    // named with --devices are refused (a usage error: exit 2).
    if !cfg!(feature = "cuda") {
        let cpu_results = dir.join("cpu-results");
        let said = "found 2 GPUs (cuda:0 (Fake GPU A, 16384 MiB), cuda:1 (Fake GPU B, 16384 MiB)) \
                    but this ablate was built without CUDA";
        let plan = Command::new(env!("CARGO_BIN_EXE_ablate"))
            .args(["plan"])
            .arg(&file)
            .arg("--results")
            .arg(&cpu_results)
            .env("ABLATE_CACHE_DIR", common::CACHE)
            .env("PATH", &path)
            .output()
            .unwrap();
        assert!(plan.status.success(), "{}", text(&plan));
        assert!(text(&plan).contains(said), "{}", text(&plan));
        assert!(text(&plan).contains("--devices cpu"), "{}", text(&plan));
        assert!(text(&plan).contains("CPU slot"), "{}", text(&plan));
        let on_cpu = command(&file, &cpu_results, &[])
            .env("PATH", &path)
            .output()
            .unwrap();
        assert!(on_cpu.status.success(), "{}", text(&on_cpu));
        assert!(text(&on_cpu).contains(said), "{}", text(&on_cpu));
        for s in statuses(&file, &cpu_results) {
            assert_eq!(s.status, RunStatus::Done);
            assert!(s.history.iter().all(|a| a.device == "cpu"), "{s:?}");
        }
        let refused = command(&file, &results, &["--devices", "cuda:0,cuda:1"])
            .env("PATH", &path)
            .output()
            .unwrap();
        assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
        assert!(
            text(&refused).contains("built without CUDA"),
            "{}",
            text(&refused)
        );
    }
    // ...unless (in either build) the test switch lets `cuda:0` train on the CPU.
    let o = command(&file, &results, &[])
        .env("PATH", &path)
        .env("ABLATE_TEST_CUDA_ON_CPU", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("slots: cuda:0 (Fake GPU A, 16384 MiB), cuda:1 (Fake GPU B, 16384 MiB)"),
        "{}",
        text(&o)
    );
    let mut per_device: HashMap<String, Vec<(f64, f64)>> = HashMap::new();
    for s in statuses(&file, &results) {
        assert_eq!(s.status, RunStatus::Done);
        for a in &s.history {
            let gpu = a
                .cuda_visible_devices
                .clone()
                .expect("CUDA_VISIBLE_DEVICES set");
            per_device
                .entry(gpu)
                .or_default()
                .push((a.started, a.ended.unwrap()));
        }
    }
    let mut gpus: Vec<&String> = per_device.keys().collect();
    gpus.sort();
    assert_eq!(gpus, ["0", "1"], "both GPUs used, each run on one");
    for (gpu, mut spans) in per_device {
        spans.sort_by(|a, b| a.0.total_cmp(&b.0));
        for w in spans.windows(2) {
            assert!(
                w[1].0 >= w[0].1,
                "two runs overlapped on GPU {gpu}: {spans:?}"
            );
        }
    }
}

#[test]
fn ctrl_c_stops_children_resumably_and_a_second_scheduler_is_refused() {
    let dir = scratch("ctrlc");
    let (file, results) = (experiment(&dir, 3, 4), dir.join("results"));
    let (first, dirs) = start(&file, &results, Stdio::piped);
    wait_for_two_running(&dirs);
    // The experiment is locked while the first scheduler lives.
    let second = run(&file, &results, &["--devices", "cpu:2"]);
    assert_eq!(second.status.code(), Some(2), "{}", text(&second));
    assert!(
        text(&second).contains("another scheduler is running this experiment"),
        "{}",
        text(&second)
    );
    kill(&first, libc::SIGINT);
    let out = first.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert!(
        text(&out).contains("run the same command to resume"),
        "{}",
        text(&out)
    );
    let stopped = statuses(&file, &results);
    assert!(
        stopped.iter().any(|s| s.status == RunStatus::Interrupted),
        "{stopped:?}"
    );
    assert!(stopped.iter().all(|s| s.status != RunStatus::Running));
    // The lock died with its holder; the same command finishes the experiment.
    let again = run(&file, &results, &["--devices", "cpu:2"]);
    assert!(again.status.success(), "{}", text(&again));
    for s in statuses(&file, &results) {
        assert_eq!(s.status, RunStatus::Done);
        assert_eq!(s.epochs_done, 4);
    }
}

#[test]
fn failed_runs_are_retried_then_skipped_until_rerun_failed_and_force_keeps_old_results() {
    let dir = scratch("retries");
    let results = dir.join("results");
    // CIFAR-10 that is neither present nor downloadable: every attempt fails at once.
    let file = dir.join("broken.toml");
    std::fs::write(
        &file,
        "retries = 1\n[base]\npreset = \"condensenext\"\nmodel.stages = [1, 1, 1]\ndata.dataset = \"cifar10\"\n",
    )
    .unwrap();
    let offline = |extra: &[&str]| {
        command(&file, &results, extra)
            .arg("--data-dir")
            .arg(dir.join("no-data"))
            .env(
                "ABLATE_CIFAR10_URL",
                "file:///nonexistent/cifar-10-binary.tar.gz",
            )
            .output()
            .unwrap()
    };
    let o = offline(&[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("retrying"), "{}", text(&o));
    assert!(text(&o).contains("1 runs failed"), "{}", text(&o));
    let s = &statuses(&file, &results)[0];
    assert_eq!(
        (s.status, s.attempts),
        (RunStatus::Failed, 2),
        "one try and one retry"
    );
    assert!(
        s.message.as_deref().unwrap_or("").contains("cifar"),
        "{s:?}"
    );
    // Out of retries: skipped, still reported, no new attempt.
    let o = offline(&[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("skipping 1 failed"), "{}", text(&o));
    assert_eq!(statuses(&file, &results)[0].attempts, 2);
    // --rerun-failed: a fresh budget.
    let o = offline(&["--rerun-failed"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(statuses(&file, &results)[0].attempts, 4);

    // --force on a finished run: trained again, the old run dir kept under .replaced/.
    let tiny = experiment(&dir, 1, 1);
    let o = run(&tiny, &results, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let first = statuses(&tiny, &results)[0].clone();
    let o = run(&tiny, &results, &["--force"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("1 trained now"), "{}", text(&o));
    let second = statuses(&tiny, &results)[0].clone();
    assert_eq!((second.status, second.attempts), (RunStatus::Done, 1));
    assert!(second.started > first.finished);
    let replaced: Vec<PathBuf> = std::fs::read_dir(results.join("tiny/.replaced"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(replaced.len(), 1);
    assert_eq!(read_status(&replaced[0]).unwrap(), first);
    assert!(replaced[0].join("model.safetensors").is_file());
}

/// A second Ctrl-C kills the runs a first one asked to stop; they were still stopped on the
/// user's request: recorded as interrupted, resumable, with no retry spent (was: failed, and
/// after two such stops skipped as out of retries).
#[test]
fn runs_killed_by_a_second_ctrl_c_spend_no_retry() {
    let dir = scratch("ctrlc-twice");
    let (file, results) = (experiment(&dir, 2, 50), dir.join("results"));
    for _ in 0..3 {
        let (first, dirs) = start(&file, &results, Stdio::piped);
        wait_for_two_running(&dirs);
        kill(&first, libc::SIGINT);
        std::thread::sleep(Duration::from_millis(20));
        kill(&first, libc::SIGINT);
        let out = first.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(130), "{}", text(&out));
        for s in statuses(&file, &results) {
            assert_eq!(s.status, RunStatus::Interrupted, "{s:?}");
            assert!(
                s.history
                    .iter()
                    .all(|a| a.outcome != Some(RunStatus::Failed)),
                "{s:?}"
            );
        }
    }
}
