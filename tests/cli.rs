//! `ablate count` end to end: output formats, and bad input giving one error line and exit 2.

mod common;
use common::{ablate, assert_usage_error, scratch, stderr, stdout, tiny_experiment};

use std::path::PathBuf;
use std::process::Command;

/// A model file in a fresh temp dir.
fn model_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ablate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn json_has_the_documented_shape() {
    let o = ablate(&["count", "condensenet-86", "--format", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "model",
            "form",
            "convention",
            "flops",
            "params",
            "deploy_bytes",
            "checkpoint_bytes",
            "layers"
        ]
    );
    assert_eq!(v["model"], "condensenet-86");
    assert_eq!(v["form"], "deploy");
    assert_eq!(v["convention"], "paper");
    assert_eq!(v["flops"].as_u64(), Some(65_812_394));
    assert_eq!(v["params"].as_u64(), Some(516_202));
    let layers = v["layers"].as_array().unwrap();
    let sum = |k: &str| layers.iter().map(|l| l[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!((sum("flops"), sum("params")), (65_812_394, 516_202));
    let first: Vec<&str> = layers[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(first, ["name", "op", "flops", "params"]);
}

#[test]
fn table_shows_both_conventions() {
    let o = ablate(&["count", "condensenext"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("paper") && out.contains("executed"), "{out}");
    let training = stdout(&ablate(&["count", "condensenet-86", "--form", "training"]));
    assert!(
        training.contains("65,816,394") && training.contains("177,293,130"),
        "{training}"
    );
}

#[test]
fn csv_layers_sum_to_the_total() {
    let o = ablate(&[
        "count",
        "condensenet-86-dsc",
        "--format",
        "csv",
        "--layers",
        "--convention",
        "executed",
    ]);
    let out = stdout(&o);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("name,op,executed_flops,executed_params"));
    let flops: u64 = lines
        .map(|l| l.split(',').nth(2).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(flops, 60_077_994);
}

#[test]
fn a_model_file_with_preset_and_overrides() {
    let file = model_file("p2.toml", "preset = \"condensenext\"\np = 2\n");
    let o = ablate(&["count", file.to_str().unwrap(), "--format", "csv"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let with_set = ablate(&["count", "condensenext", "--set", "p=2", "--format", "csv"]);
    let numbers = |s: String| {
        s.lines()
            .nth(1)
            .unwrap()
            .split(',')
            .skip(3)
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(numbers(stdout(&o)), numbers(stdout(&with_set)));
    assert_ne!(
        numbers(stdout(&o)),
        numbers(stdout(&ablate(&[
            "count",
            "condensenext",
            "--format",
            "csv"
        ])))
    );
}

#[test]
fn unknown_preset() {
    assert_usage_error(
        &ablate(&["count", "condensenet-87"]),
        &["unknown preset `condensenet-87`", "6L+2"],
    );
}

#[test]
fn wrong_type_in_model_file() {
    let file = model_file(
        "wrong_type.toml",
        "preset = \"condensenext\"\np = \"two\"\n",
    );
    assert_usage_error(
        &ablate(&["count", file.to_str().unwrap()]),
        &["wrong_type.toml:2:", "key `p`", "expected usize"],
    );
}

#[test]
fn unknown_key_in_model_file() {
    let file = model_file(
        "unknown_key.toml",
        "preset = \"condensenet-86\"\ngroth = [8, 16, 32]\n",
    );
    assert_usage_error(
        &ablate(&["count", file.to_str().unwrap()]),
        &["unknown_key.toml:2:1", "unknown field `groth`"],
    );
}

#[test]
fn malformed_toml() {
    let file = model_file(
        "malformed.toml",
        "preset = \"condensenet-86\"\nstages = [14, 14\n",
    );
    assert_usage_error(
        &ablate(&["count", file.to_str().unwrap()]),
        &["malformed.toml:2:"],
    );
}

#[test]
fn invalid_combinations() {
    let file = model_file("bad_p.toml", "preset = \"condensenext\"\np = 40\n");
    assert_usage_error(
        &ablate(&["count", file.to_str().unwrap()]),
        &["bad_p.toml", "key `p`", "p <= cardinality"],
    );
    assert_usage_error(
        &ablate(&["count", "condensenet-86", "--set", "p=3"]),
        &["key `p`", "not divisible"],
    );
    assert_usage_error(
        &ablate(&["count", "condensenet-86", "--set", "spatial_groups=3"]),
        &["key `spatial_groups`"],
    );
    assert_usage_error(
        &ablate(&["count", "condensenet-86", "--set", "dropout=1.0"]),
        &["key `dropout`", "[0, 1)"],
    );
    assert_usage_error(
        &ablate(&["count", "condensenet-86", "--set", "stages=[]"]),
        &["key `stages`"],
    );
    assert_usage_error(
        &ablate(&["count", "condensenet-86", "--set", "bogus=1"]),
        &["--set bogus=1", "unknown field `bogus`"],
    );
}

/// Reads the first line of `ablate args`'s stdout, closes the pipe, and returns the exit
/// status and stderr once it ends (`ablate ... | head -1`).
fn first_line_then_close(args: &[&str]) -> (std::process::ExitStatus, String) {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ablate"))
        .args(args)
        .env("ABLATE_CACHE_DIR", common::CACHE)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(!first.is_empty());
    // The reader (and with it the pipe) is dropped here.
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (child.wait().unwrap(), err)
}

/// A closed stdout ends a listing command quietly (by SIGPIPE, as Unix tools do), never
/// with a panic.
#[test]
fn a_closed_pipe_ends_a_listing_quietly() {
    let (status, err) = first_line_then_close(&["count", "condensenet-182", "--layers"]);
    assert_ne!(status.code(), Some(101), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.is_empty(), "{err}");
}

/// A closed stdout does not stop the scheduler: its runs finish and its lines go on in the
/// experiment's `scheduler.log`.
#[test]
fn a_closed_pipe_leaves_the_scheduler_running() {
    let (dir, file) = tiny_experiment("pipe");
    let results = dir.join("results");
    let reports = dir.join("reports");
    let (status, err) = first_line_then_close(&[
        "run",
        file.to_str().unwrap(),
        "--results",
        results.to_str().unwrap(),
        "--reports",
        reports.to_str().unwrap(),
        "--devices",
        "cpu",
    ]);
    assert!(status.success(), "{status:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let log = std::fs::read_to_string(results.join("tiny/scheduler.log")).unwrap();
    assert!(log.contains("tiny: 2 trained now"), "{log}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Sizes whose products overflow (or exceed any buildable model) are located usage errors,
/// never a division by a wrapped zero, a capacity overflow or a wrapped number.
#[test]
fn overflowing_sizes_are_usage_errors() {
    let cases: [(&str, &[&str]); 4] = [
        (
            "bottleneck=4611686018427387904",
            &["key `bottleneck`", "4611686018427387904 * 8"],
        ),
        (
            "growth=[4611686018427387904,8,8]",
            &["key `growth`", "2 * 4611686018427387904"],
        ),
        (
            "growth=[9223372036854775807,8,8]",
            &["key `growth`", "9223372036854775807"],
        ),
        (
            "stages=[9223372036854775807,1,1]",
            &["key `stages`", "9223372036854775807 layers"],
        ),
    ];
    for (set, needles) in cases {
        let o = ablate(&["count", "condensenext", "--set", set]);
        assert_usage_error(&o, needles);
    }
}

/// A model that cannot fit in memory is refused before anything is allocated: a usage error
/// naming the key that takes the most and the estimate (these need terabytes).
#[test]
fn a_model_too_big_for_memory_is_refused() {
    let o = ablate(&["count", "condensenext", "--set", "classes=4000000000"]);
    assert_usage_error(&o, &["key `classes`", "needs at least", "GB available"]);
    let o = ablate(&["count", "condensenext", "--set", "stages=[100000,1,1]"]);
    assert_usage_error(&o, &["key `stages`", "needs at least"]);
    let dir = std::env::temp_dir().join(format!("ablate-cli-huge-{}", std::process::id()));
    let out = dir.join("run");
    let o = ablate(&[
        "train",
        "--model",
        "condensenext",
        "--set",
        "stages=[100000,1,1]",
        "--dataset",
        "synthetic",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_usage_error(&o, &["needs at least", "a training step at batch 64"]);
    assert!(!out.exists(), "nothing is written for a refused run");
}

/// Messages that were wrong or exit codes that were not 2: a number beyond 64 bits in --set,
/// an unknown --device, a model file that names no preset.
#[test]
fn misleading_messages_are_precise_usage_errors() {
    let o = ablate(&["count", "condensenext", "--set", "p=99999999999999999999"]);
    assert_usage_error(&o, &["--set p=99999999999999999999", "out of range"]);
    let dir = std::env::temp_dir().join(format!("ablate-cli-tpu-{}", std::process::id()));
    let o = ablate(&[
        "train",
        "--model",
        "condensenext",
        "--device",
        "tpu",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_usage_error(&o, &["--device", "`tpu`", "cuda:N"]);
    let empty = model_file("empty.toml", "");
    assert_usage_error(
        &ablate(&["count", empty.to_str().unwrap()]),
        &["empty.toml:1:1", "key `preset`", "missing"],
    );
}

/// `ablate status` shows an unreadable `status.json` as damaged (not as planned) and a run
/// recorded as running on this host with no live process as died.
#[test]
fn status_shows_damaged_and_died_runs() {
    let (dir, file) = tiny_experiment("status");
    let results = dir.join("results");
    let (f, r) = (file.to_str().unwrap(), results.to_str().unwrap());
    let reports = dir.join("reports");
    let rep = reports.to_str().unwrap();
    assert!(ablate(&[
        "run",
        f,
        "--results",
        r,
        "--reports",
        rep,
        "--devices",
        "cpu"
    ])
    .status
    .success());
    let exp = ablate::experiment::Experiment::load(&file).unwrap();
    let dirs: Vec<PathBuf> = exp
        .runs
        .iter()
        .map(|run| exp.run_dir(&results, run))
        .collect();
    std::fs::write(dirs[0].join("status.json"), "{garbage").unwrap();
    let mut s = ablate::run_dir::read_status(&dirs[1]).unwrap();
    s.status = ablate::run_dir::RunStatus::Running;
    std::fs::write(
        dirs[1].join("status.json"),
        serde_json::to_string(&s).unwrap(),
    )
    .unwrap();
    let o = ablate(&["status", f, "--results", r]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let line = |id: &str| out.lines().find(|l| l.starts_with(id)).unwrap().to_string();
    assert!(line(exp.runs[0].id.as_str()).contains("damaged"), "{out}");
    assert!(line(exp.runs[1].id.as_str()).contains("died"), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A finished local session writes the experiment's report and prints Table I and Table II.
#[test]
fn run_ends_with_the_report() {
    let (dir, file) = tiny_experiment("report");
    let (results, reports) = (dir.join("results"), dir.join("reports"));
    let o = ablate(&[
        "run",
        file.to_str().unwrap(),
        "--results",
        results.to_str().unwrap(),
        "--reports",
        reports.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("### Table I") && out.contains("### Table II"),
        "{out}"
    );
    assert!(
        out.contains("report: ") && out.contains("tiny: 2 trained now"),
        "{out}"
    );
    // Without --devices and GPUs, the CPU split the time model finds fastest for the 2 runs.
    assert!(
        out.contains("slots: ") && out.contains("the split of") && out.contains("CPU slot"),
        "{out}"
    );
    let report = std::fs::read_to_string(reports.join("tiny/report.md")).unwrap();
    assert!(report.contains("2 of 2 planned runs are done"), "{report}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `ablate bench --format csv` is a CSV file: a header and one line per row, no blank lines.
#[test]
fn bench_csv_has_no_blank_lines() {
    let o = ablate(&[
        "bench",
        "--models",
        "condensenext",
        "--batch",
        "2",
        "--steps",
        "1",
        "--latency-runs",
        "1",
        "--progress",
        "0.5",
        "--format",
        "csv",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 2, "{out:?}");
    assert!(out.lines().all(|l| !l.is_empty()), "{out:?}");
    assert!(out.starts_with("model,kernels,allocator,"), "{out}");
}

/// A model whose `classes` is not the dataset's is a located usage error before anything is
/// written: in `train` (CondenseNeXt's focal loss trained 3 outputs on labels 0-9 to `done`;
/// condensenet-86's cross-entropy failed on the first label >= 3 with exit 1, retried) and when
/// an experiment is planned, so `ablate run` launches nothing.
#[test]
fn a_model_with_other_classes_than_the_dataset_is_refused() {
    let dir = scratch("classes");
    for model in ["condensenext", "condensenet-86"] {
        let out = dir.join(model);
        let o = ablate(&[
            "train",
            "--model",
            model,
            "--set",
            "stages=[1,1,1]",
            "--set",
            "classes=3",
            "--dataset",
            "synthetic",
            "--subset",
            "64",
            "--test-subset",
            "20",
            "--epochs",
            "1",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_usage_error(
            &o,
            &[
                "--set classes=3: key `classes`: is 3",
                "synthetic dataset has 10 classes",
            ],
        );
        assert!(
            !out.exists(),
            "{model}: nothing is written for a refused run"
        );
    }
    let model = dir.join("four.toml");
    std::fs::write(&model, "preset = \"condensenext\"\nclasses = 4\n").unwrap();
    let out = dir.join("four");
    let o = ablate(&[
        "train",
        "--model",
        model.to_str().unwrap(),
        "--dataset",
        "synthetic",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_usage_error(&o, &["four.toml: key `classes`: is 4", "10 classes"]);
    let file = dir.join("classes.toml");
    std::fs::write(
        &file,
        "name = \"classes\"\n[base]\npreset = \"condensenet-86\"\n\
         model.stages = [1, 1, 1]\ntrain.epochs = 1\ndata.dataset = \"synthetic\"\n\
         data.train_size = 64\n[sweep]\n\"model.classes\" = [10, 3]\n",
    )
    .unwrap();
    let results = dir.join("results");
    for command in ["plan", "run"] {
        let o = ablate(&[
            command,
            file.to_str().unwrap(),
            "--results",
            results.to_str().unwrap(),
        ]);
        assert_usage_error(
            &o,
            &["classes.toml:9:", "model.classes=3", "key `classes`: is 3"],
        );
    }
    assert!(!results.exists(), "`ablate run` started nothing");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--results` naming a regular file, or a path under one, is one line naming the path and
/// what was expected, exit 2, for `run`, `plan`, `status` and `report` (was: "File exists" or
/// "Not a directory", exit 1, or a plan of nothing); the file is left as it was.
#[test]
fn a_results_root_that_is_a_file_is_a_usage_error() {
    let (dir, file) = tiny_experiment("resultsfile");
    let results = dir.join("results");
    std::fs::write(&results, "not a dir").unwrap();
    let f = file.to_str().unwrap();
    let is_a_file = format!("{} is a file", results.display());
    for root in [results.clone(), results.join("sub")] {
        let r = root.to_str().unwrap();
        for args in [
            vec!["run", f, "--results", r],
            vec!["plan", f, "--no-estimate", "--results", r],
            vec!["status", f, "--results", r],
            vec!["report", "--results", r],
            vec!["report", "tiny", "--results", r],
        ] {
            let o = ablate(&args);
            assert_usage_error(&o, &["--results", r, &is_a_file, "expected a directory"]);
        }
    }
    assert_eq!(std::fs::read_to_string(&results).unwrap(), "not a dir");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--devices` asking for GPUs on a build without CUDA names only the GPUs asked for, exit 2
/// (it listed the CPU slots too, exit 1); more CPU threads than cores is a warning; an absurd
/// slot count is refused at once with the limit (it built 10^8 slots for 23 s and 8.8 GB).
#[cfg(not(feature = "cuda"))]
#[test]
fn devices_that_cannot_run_are_refused_and_oversubscription_is_said() {
    let (dir, file) = tiny_experiment("devices");
    let (f, results) = (file.to_str().unwrap(), dir.join("results"));
    let r = results.to_str().unwrap();
    for devices in ["cuda:0", "cpu:2,cuda:0"] {
        let o = ablate(&["run", f, "--results", r, "--devices", devices]);
        assert_usage_error(&o, &["cuda:0", "without CUDA"]);
        assert!(!stderr(&o).contains("cpu#"), "{}", stderr(&o));
    }
    assert!(!results.join("tiny").exists(), "nothing may be written");
    let start = std::time::Instant::now();
    let o = ablate(&["plan", f, "--results", r, "--devices", "cpu:100000000"]);
    assert_usage_error(&o, &["cpu:100000000", "at most"]);
    assert!(start.elapsed().as_secs() < 5, "{:?}", start.elapsed());
    let cores = std::thread::available_parallelism().unwrap().get();
    let many = format!("cpu:{}", cores + 1);
    for devices in [many.as_str(), "cpu,cpu"] {
        let o = ablate(&[
            "plan",
            f,
            "--results",
            r,
            "--devices",
            devices,
            "--no-estimate",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("warning: the CPU slots ask for"),
            "{devices}: {}",
            stderr(&o)
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `ablate plan` with `ABLATE_CACHE_DIR` at `cache`.
fn plan_with_cache(
    file: &std::path::Path,
    results: &std::path::Path,
    cache: &std::path::Path,
) -> std::process::Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ablate"));
    c.arg("plan")
        .arg(file)
        .arg("--results")
        .arg(results)
        .env("ABLATE_CACHE_DIR", cache);
    c
}

/// Two plans at once on an empty cache take turns: both estimate, and the cache file holds a
/// whole calibration (one plan's entries were lost); a calibration made while other processes
/// load the machine is said and not cached (a speed measured under contention was kept for
/// good); a cache dir that cannot be made is one line naming it, with no claim of caching.
#[test]
fn the_calibration_cache_is_shared_safely() {
    let (dir, file) = tiny_experiment("cache");
    let results = dir.join("results");
    let cache = dir.join("cache");
    let children: Vec<_> = (0..2)
        .map(|_| {
            plan_with_cache(&file, &results, &cache)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            stdout(&o).contains("2 runs to train, about"),
            "{}",
            stdout(&o)
        );
    }
    if let Ok(text) = std::fs::read_to_string(cache.join("calibration.json")) {
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 1, "{text}");
    }

    // Every core kept busy by other processes while it calibrates.
    let cores = std::thread::available_parallelism().unwrap().get();
    let busy: Vec<_> = (0..cores)
        .map(|_| {
            Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .spawn()
                .unwrap()
        })
        .collect();
    let loaded = dir.join("loaded-cache");
    let o = plan_with_cache(&file, &results, &loaded).output().unwrap();
    for mut b in busy {
        b.kill().unwrap();
        b.wait().unwrap();
    }
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("not cached: other processes used"),
        "{}",
        stdout(&o)
    );
    assert!(!loaded.join("calibration.json").exists());

    // A cache dir under a regular file.
    let blocker = dir.join("a-file");
    std::fs::write(&blocker, "").unwrap();
    let bad = blocker.join("cache");
    let o = plan_with_cache(&file, &results, &bad).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let all = format!("{}{}", stdout(&o), stderr(&o));
    let naming: Vec<&str> = all.lines().filter(|l| l.contains("a-file")).collect();
    assert_eq!(naming.len(), 1, "{all}");
    assert!(
        naming[0].contains("not cached: cannot use the cache dir"),
        "{all}"
    );
    assert!(!all.contains("cached in"), "{all}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An `ABLATE_*` variable set to the empty string means unset: with `ABLATE_NO_TENSORBOARD=`
/// and `ABLATE_RESULTS=` a command does what it does without them (was: exit 2 naming
/// `--no-tensorboard`), reading the default results dir.
#[test]
fn an_empty_setting_is_unset() {
    let dir = scratch("empty-env");
    std::fs::create_dir_all(dir.join("results")).unwrap();
    let report = |empty: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ablate"));
        c.args(["report", "--out", "reports"])
            .current_dir(&dir)
            .env("ABLATE_CACHE_DIR", common::CACHE)
            .env_remove("ABLATE_NO_TENSORBOARD")
            .env_remove("ABLATE_RESULTS");
        for k in empty {
            c.env(k, "");
        }
        c.output().unwrap()
    };
    let unset = report(&[]);
    let empty = report(&["ABLATE_NO_TENSORBOARD", "ABLATE_RESULTS"]);
    assert_eq!(
        empty.status.code(),
        unset.status.code(),
        "{}",
        stderr(&empty)
    );
    assert_eq!(stderr(&empty), stderr(&unset));
    assert!(
        stderr(&empty).starts_with("error: key `--results`: results: no experiment results"),
        "{}",
        stderr(&empty)
    );
}

/// `ablate report` of a target or results dir with nothing to report is bad input: one line,
/// exit 2 (was: exit 1).
#[test]
fn report_of_nothing_is_a_usage_error() {
    let dir = scratch("report-nothing");
    std::fs::create_dir_all(dir.join("results")).unwrap();
    let results = dir.join("results");
    let out = dir.join("reports");
    let (results, out) = (results.to_str().unwrap(), out.to_str().unwrap());
    for args in [
        vec!["report", "--results", results, "--out", out],
        vec![
            "report",
            "no-such-experiment",
            "--results",
            results,
            "--out",
            out,
        ],
    ] {
        assert_usage_error(&ablate(&args), &["no experiment results"]);
    }
}

/// When memory, not speed, caps the CPU slots, `plan` says so, with the memory it assumed and,
/// under `--cores`, that it is this machine's (was: silent, so a slower split looked chosen
/// for speed).
#[test]
fn plan_says_when_memory_caps_the_slots_and_whose_memory() {
    let dir = scratch("memory-cap");
    std::fs::create_dir_all(&dir).unwrap();
    let seeds: Vec<String> = (0..200).map(|s| s.to_string()).collect();
    let file = dir.join("cap.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"cap\"\nseeds = [{}]\n[base]\npreset = \"condensenet-86\"\n\
             train.epochs = 1\ntrain.batch = 1297\ndata.dataset = \"digits\"\n",
            seeds.join(", ")
        ),
    )
    .unwrap();
    let results = dir.join("results");
    let o = ablate(&[
        "plan",
        file.to_str().unwrap(),
        "--results",
        results.to_str().unwrap(),
        "--cores",
        "4096",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o) + &stderr(&o);
    if !std::fs::read_to_string("/proc/meminfo").is_ok_and(|m| m.contains("MemAvailable")) {
        return;
    }
    assert!(
        out.contains("slots fit in") || out.contains("slot fit in"),
        "{out}"
    );
    assert!(out.contains("GB of available memory"), "{out}");
    assert!(
        out.contains("--cores prices another machine's cores, not its memory"),
        "{out}"
    );
}
