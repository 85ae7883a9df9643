//! `ablate train` end to end on the synthetic set: learning, bit-reproducibility, resume after
//! SIGKILL, the deploy model against the training form, divergence, and refusing to overwrite.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ablate::config::{Activation, RunConfig};
use ablate::io::load_safetensors;
use ablate::run_dir::{read_metrics, read_status, RunStatus};
use candle_core::{DType, Device, Tensor};

/// One thread per run: the test harness runs two tests at a time on this 2-core machine, and
/// candle's spinning worker pool slows to a crawl when oversubscribed.
fn ablate(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ablate"));
    c.args(args)
        .env("RAYON_NUM_THREADS", "1")
        // Never the user's calibration cache (a calibration under the tests' load spoils it).
        .env(
            "ABLATE_CACHE_DIR",
            concat!(env!("CARGO_TARGET_TMPDIR"), "/ablate-cache"),
        );
    c
}

fn run(args: &[&str]) -> Output {
    ablate(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ablate-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}\n{}",
        o.status,
        text(&o.stderr)
    );
}

fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

/// Every tensor of a safetensors file, as f64 values.
fn tensors(path: &Path) -> Vec<(String, Vec<f64>)> {
    let (map, _) = load_safetensors(path, &Device::Cpu).unwrap();
    let mut v: Vec<(String, Vec<f64>)> = map
        .into_iter()
        .map(|(k, t)| {
            let values = t.flatten_all().unwrap().to_dtype(DType::F64).unwrap();
            (k, values.to_vec1().unwrap())
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// The metrics of a run without the timing columns.
fn outcomes(dir: &Path) -> Vec<[f64; 6]> {
    read_metrics(&dir.join("metrics.csv"))
        .unwrap()
        .iter()
        .map(|r| r.outcome())
        .collect()
}

/// A small CondenseNeXt (dropout, focal loss, in-training conversion in epoch 3 of 4).
const NEXT_TINY: &[&str] = &[
    "train",
    "--model",
    "condensenext",
    "--set",
    "stages=[1,1,1]",
    "--dataset",
    "synthetic",
    "--subset",
    "192",
    "--test-subset",
    "100",
    "--batch",
    "32",
    "--epochs",
    "4",
    "--seed",
    "7",
];

fn with_out<'a>(base: &[&'a str], out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = base.to_vec();
    v.extend(["--out", out]);
    v.extend(extra);
    v
}

#[test]
fn same_seed_same_run_and_resume_after_sigkill_is_bit_identical() {
    let a = fresh_dir("a");
    let b = fresh_dir("b");
    let (sa, sb) = (a.to_str().unwrap(), b.to_str().unwrap());
    assert_ok(&run(&with_out(NEXT_TINY, sa, &[])));

    // B: killed (SIGKILL) right after its epoch-2 checkpoint, then resumed.
    let mut child = ablate(&with_out(NEXT_TINY, sb, &[]))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if read_status(&b).is_some_and(|s| s.epochs_done >= 2) {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "run B ended before it was killed"
        );
        assert!(start.elapsed() < Duration::from_secs(600), "run B too slow");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let killed_at = read_status(&b).unwrap().epochs_done;
    assert!(killed_at < 4, "killed too late ({killed_at} epochs done)");
    assert!(!b.join("summary.json").exists());

    // Without --resume the run dir is not touched.
    let o = run(&with_out(NEXT_TINY, sb, &[]));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("--resume"), "{}", text(&o.stderr));

    let o = run(&with_out(NEXT_TINY, sb, &["--resume"]));
    assert_ok(&o);
    let log = std::fs::read_to_string(b.join("train.log")).unwrap();
    assert!(
        log.contains(&format!("resuming after epoch {killed_at} of 4")),
        "{log}"
    );

    assert_eq!(outcomes(&a).len(), 4);
    assert_eq!(outcomes(&a), outcomes(&b), "metrics differ after resume");
    assert_eq!(
        tensors(&a.join("model.safetensors")),
        tensors(&b.join("model.safetensors")),
        "deploy weights differ after resume"
    );
    assert_eq!(
        tensors(&a.join("checkpoint.safetensors")),
        tensors(&b.join("checkpoint.safetensors")),
        "final checkpoints differ after resume"
    );
    assert_eq!(read_status(&b).unwrap().status, RunStatus::Done);
    assert_eq!(
        summary(&a)["deploy_test_top1"],
        summary(&b)["deploy_test_top1"]
    );

    // A third run of the same config, uninterrupted: the same again (determinism).
    let c = fresh_dir("c");
    assert_ok(&run(&with_out(NEXT_TINY, c.to_str().unwrap(), &[])));
    assert_eq!(outcomes(&a), outcomes(&c));
    assert_eq!(
        tensors(&a.join("model.safetensors")),
        tensors(&c.join("model.safetensors"))
    );
    // Another seed is another run.
    let d = fresh_dir("d");
    let mut other = NEXT_TINY.to_vec();
    *other.last_mut().unwrap() = "8";
    assert_ok(&run(&with_out(&other, d.to_str().unwrap(), &[])));
    assert_ne!(outcomes(&a), outcomes(&d));
    for dir in [a, b, c, d] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// One and two threads train to the same bits: every metric and every tensor of the deploy
/// model and the checkpoint, for a small CondenseNeXt (dropout, focal loss, the conversion)
/// and a small CondenseNet (its learned-group drops and the live-input kernel), with a batch
/// that is not a whole number of weight-gradient chunks.
#[test]
fn one_and_two_threads_train_to_the_same_bits() {
    let net_tiny: Vec<&str> = NEXT_TINY
        .iter()
        .map(|&a| match a {
            "condensenext" => "condensenet-86",
            "32" => "30",
            other => other,
        })
        .collect();
    for (name, args) in [("next", NEXT_TINY.to_vec()), ("net", net_tiny)] {
        let dirs: Vec<PathBuf> = ["1", "2"]
            .iter()
            .map(|threads| {
                let dir = fresh_dir(&format!("threads-{name}-{threads}"));
                let o = ablate(&with_out(&args, dir.to_str().unwrap(), &[]))
                    .env("RAYON_NUM_THREADS", threads)
                    .output()
                    .unwrap();
                assert_ok(&o);
                dir
            })
            .collect();
        assert_eq!(outcomes(&dirs[0]), outcomes(&dirs[1]), "{name}: metrics");
        for file in ["model.safetensors", "checkpoint.safetensors"] {
            assert_eq!(
                tensors(&dirs[0].join(file)),
                tensors(&dirs[1].join(file)),
                "{name}: {file}"
            );
        }
        for dir in dirs {
            std::fs::remove_dir_all(dir).unwrap();
        }
    }
}

/// Fraction of ones of each row block of a mask: `[W, Cin, 1, 1]` learned-group masks.
fn mask_density(mask: &Tensor) -> f64 {
    let v: Vec<f32> = mask.flatten_all().unwrap().to_vec1().unwrap();
    v.iter().filter(|&&x| x != 0.0).count() as f64 / v.len() as f64
}

/// Trains `model` at stages [2,2,2] on 640 synthetic images (batch 32), checks that it reaches
/// 90% test top-1 and that the deploy model agrees with the training form on every test image;
/// returns the run dir.
fn learns(model: &str, epochs: &str, name: &str) -> PathBuf {
    let dir = fresh_dir(name);
    let o = run(&[
        "train",
        "--model",
        model,
        "--set",
        "stages=[2,2,2]",
        "--dataset",
        "synthetic",
        "--subset",
        "640",
        "--test-subset",
        "400",
        "--epochs",
        epochs,
        "--batch",
        "32",
        "--seed",
        "1",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_ok(&o);
    let s = summary(&dir);
    let top1 = s["last"]["test_top1"].as_f64().unwrap();
    assert!(top1 >= 90.0, "{model}: test top1 {top1}");
    assert_eq!(s["deploy_agreement"].as_f64(), Some(1.0), "{s}");
    dir
}

#[test]
fn small_condensenet_learns_and_condenses_to_one_over_p() {
    let dir = learns("condensenet-86", "3", "cn");
    // Every learned-group mask ends at density 1/p = 1/4, each group at its own Cin/4 inputs.
    let (ckpt, _) = load_safetensors(&dir.join("checkpoint.safetensors"), &Device::Cpu).unwrap();
    let masks: Vec<_> = ckpt
        .iter()
        .filter(|(k, _)| k.ends_with("conv.mask"))
        .collect();
    assert_eq!(masks.len(), 6);
    for (name, m) in masks {
        assert_eq!(mask_density(m), 0.25, "{name}");
    }
    // The deploy model's group convs read Cin/4 channels per group.
    let (deploy, _) = load_safetensors(&dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let idx = &deploy["block0.layer0.bottleneck.index"];
    let w = &deploy["block0.layer0.bottleneck.conv.weight"];
    let cin = 16; // stem channels = 2 * growth[0]
    assert_eq!(idx.dims(), &[cin / 4 * 4]);
    assert_eq!(w.dims(), &[32, cin / 4, 1, 1]);
    // Three learned-group drops at 1/6, 2/6 and 3/6 of the 3 epochs.
    let events = summary(&dir)["schedule"].clone();
    assert_eq!(
        events,
        serde_json::json!([
            {"progress": 1.0 / 6.0, "epoch": 0.5, "structure": "learned-group 3/4 live"},
            {"progress": 2.0 / 6.0, "epoch": 1.0, "structure": "learned-group 2/4 live"},
            {"progress": 0.5, "epoch": 1.5, "structure": "learned-group 1/4 live"},
        ])
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn small_condensenext_learns_and_keeps_the_spec_kernel_count() {
    let dir = learns("condensenext", "6", "cnx");
    let (deploy, _) = load_safetensors(&dir.join("model.safetensors"), &Device::Cpu).unwrap();
    // Layer 0: Cin = 16, W = 32, cardinality W -> one group of 16 inputs x 32 outputs = 512
    // kernels; 8 drops of floor(16 * (32 - 4) / 8) = 56 leave 512 - 448 = 64 = p * Cin.
    let idx = &deploy["block0.layer0.bottleneck.index"];
    assert_eq!(idx.dims(), &[64]);
    assert_eq!(
        deploy["block0.layer0.bottleneck.dw.weight"].dims(),
        &[64, 1, 3, 3]
    );
    assert_eq!(
        deploy["block0.layer0.bottleneck.pw.weight"].dims(),
        &[32, 64, 1, 1]
    );
    let log = std::fs::read_to_string(dir.join("train.log")).unwrap();
    assert!(log.contains("converted to separable form"), "{log}");
    // The summary lists the schedule's 8 drops, at m/12 of the run (6 epochs: every half
    // epoch up to epoch 4), the last one converting.
    let events = summary(&dir)["schedule"].as_array().unwrap().clone();
    assert_eq!(events.len(), 8, "{events:?}");
    for (m, e) in events.iter().enumerate() {
        let epoch = e["epoch"].as_f64().unwrap();
        assert!((epoch - 0.5 * (m + 1) as f64).abs() < 1e-9, "{e}");
    }
    assert_eq!(events[0]["structure"], "learned-dsc 1/8 drops");
    assert_eq!(events[7]["structure"], "learned-dsc converted");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_divergent_run_stops_with_status_diverged() {
    let dir = fresh_dir("diverge");
    let o = run(&[
        "train",
        "--model",
        "condensenet-86",
        "--set",
        "stages=[1,1,1]",
        "--dataset",
        "synthetic",
        "--subset",
        "128",
        "--test-subset",
        "50",
        "--epochs",
        "2",
        "--lr",
        "1e6",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("diverged") && err.contains("lr"), "{err}");
    let status = read_status(&dir).unwrap();
    assert_eq!(status.status, RunStatus::Diverged);
    let message = status.message.unwrap();
    assert!(message.contains("training loss"), "{message}");
    assert!(!dir.join("summary.json").exists());
    std::fs::remove_dir_all(dir).unwrap();
}

/// A loss that explodes but stays finite (ReLU6 keeps CondenseNeXt's outputs finite) is
/// caught by the bound of `DIVERGED_ABOVE * ln(classes)`: status `diverged`, exit 3, and a
/// message that does not claim a checkpoint that was never written.
#[test]
fn an_exploding_finite_loss_is_divergence() {
    let dir = fresh_dir("explode");
    let o = run(&[
        "train",
        "--model",
        "condensenext",
        "--set",
        "stages=[1,1,1]",
        "--dataset",
        "synthetic",
        "--subset",
        "128",
        "--test-subset",
        "50",
        "--epochs",
        "2",
        "--lr",
        "1e3",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("No checkpoint was written"), "{err}");
    let status = read_status(&dir).unwrap();
    assert_eq!(status.status, RunStatus::Diverged);
    let message = status.message.unwrap();
    let loss: f64 = message
        .split("training loss at step ")
        .nth(1)
        .and_then(|rest| rest.split(" is ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no loss in {message}"));
    assert!(
        loss.is_finite() && loss > ablate::train::DIVERGED_ABOVE * 10f64.ln(),
        "{message}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_run_dir_of_another_config_is_refused_and_left_alone() {
    let dir = fresh_dir("other");
    let out = dir.to_str().unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    let base = [
        "train",
        "--model",
        "condensenet-86",
        "--set",
        "stages=[1,1,1]",
        "--dataset",
        "synthetic",
        "--subset",
        "64",
        "--test-subset",
        "20",
        "--epochs",
        "1",
        "--out",
        out,
    ];
    assert_ok(&run(&base));
    let before = std::fs::read(dir.join("model.safetensors")).unwrap();
    let mut other = base.to_vec();
    *other.iter_mut().rev().nth(2).unwrap() = "2"; // --epochs 2
    other.push("--resume");
    let o = run(&other);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("train.epochs is 1 there, 2 here"), "{err}");
    assert_eq!(
        std::fs::read(dir.join("model.safetensors")).unwrap(),
        before
    );

    let o = run(&["train", "--out", out]);
    assert!(
        text(&o.stderr).contains("--model is required"),
        "{}",
        text(&o.stderr)
    );
    let o = run(&[
        "train",
        "--model",
        "condensenext",
        "--device",
        "cuda:0",
        "--out",
        out,
    ]);
    assert!(
        !o.status.success() && text(&o.stderr).contains("cuda"),
        "{}",
        text(&o.stderr)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// How far a run got comes from its checkpoint, not from a `status.json` that was emptied,
/// deleted or hand-edited, and a deleted checkpoint means a restart from epoch 0 in the
/// history too.
#[test]
fn status_is_derived_from_the_checkpoint() {
    let dir = fresh_dir("derive");
    let out = dir.to_str().unwrap();
    let args = [
        "train",
        "--model",
        "condensenext",
        "--set",
        "stages=[1,1,1]",
        "--dataset",
        "synthetic",
        "--subset",
        "64",
        "--test-subset",
        "20",
        "--epochs",
        "2",
        "--out",
        out,
    ];
    assert_ok(&run(&args));
    let status_file = dir.join("status.json");
    let resume = ["train", "--resume", "--out", out];
    for damage in ["", "deleted", "{\"status\": \"done\", \"epochs_done\": 5"] {
        match damage {
            "deleted" => std::fs::remove_file(&status_file).unwrap(),
            text => std::fs::write(&status_file, text).unwrap(),
        }
        assert_ok(&run(&resume));
        let s = read_status(&dir).unwrap();
        assert_eq!(
            (s.status, s.epochs_done),
            (RunStatus::Done, 2),
            "{damage:?}"
        );
    }
    // A hand-edited epochs_done of a done run.
    let mut s = read_status(&dir).unwrap();
    s.epochs_done = 5;
    std::fs::write(&status_file, serde_json::to_string(&s).unwrap()).unwrap();
    assert_ok(&run(&resume));
    assert_eq!(read_status(&dir).unwrap().epochs_done, 2);
    // The checkpoint deleted: the resume starts over, and its attempt says so.
    std::fs::remove_file(dir.join("checkpoint.safetensors")).unwrap();
    let mut s = read_status(&dir).unwrap();
    s.status = RunStatus::Interrupted;
    s.epochs_done = 1;
    std::fs::write(&status_file, serde_json::to_string(&s).unwrap()).unwrap();
    assert_ok(&run(&resume));
    let s = read_status(&dir).unwrap();
    assert_eq!((s.status, s.epochs_done), (RunStatus::Done, 2));
    assert_eq!(s.history.last().unwrap().epochs_at_start, 0);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Resuming from a checkpoint whose tensor data was overwritten (header intact) is a usage
/// error naming the file (exit 2, which the scheduler does not retry), never a silent resume.
#[test]
fn a_damaged_checkpoint_stops_the_resume() {
    let dir = fresh_dir("damaged");
    let out = dir.to_str().unwrap();
    assert_ok(&run(&[
        "train",
        "--model",
        "condensenext",
        "--set",
        "stages=[1,1,1]",
        "--dataset",
        "synthetic",
        "--subset",
        "64",
        "--test-subset",
        "20",
        "--epochs",
        "2",
        "--out",
        out,
    ]));
    let ckpt = dir.join("checkpoint.safetensors");
    let mut bytes = std::fs::read(&ckpt).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 4096] {
        *b = !*b;
    }
    std::fs::write(&ckpt, &bytes).unwrap();
    // Make the run look interrupted so that the resume reads the checkpoint.
    let mut s = read_status(&dir).unwrap();
    s.status = RunStatus::Interrupted;
    std::fs::write(dir.join("status.json"), serde_json::to_string(&s).unwrap()).unwrap();
    let o = run(&["train", "--resume", "--out", out]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("checkpoint.safetensors") && err.contains("damaged"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// `train --resume` after editing `lr`, `epochs`, `activation` and `p` in `config.toml` is
/// refused before anything changes, done run or not: exit 2 (which the scheduler does not
/// retry), one line naming every key that differs from the checkpoint's, and `status.json`
/// as it was (not `failed`).
#[test]
fn resume_after_editing_the_config_names_the_keys() {
    let dir = fresh_dir("edited");
    let out = dir.to_str().unwrap();
    assert_ok(&run(&[
        "train",
        "--model",
        "condensenext",
        "--set",
        "stages=[1,1,1]",
        "--dataset",
        "synthetic",
        "--subset",
        "64",
        "--test-subset",
        "20",
        "--epochs",
        "2",
        "--out",
        out,
    ]));
    let config = dir.join("config.toml");
    let mut edited =
        RunConfig::from_toml(&config, &std::fs::read_to_string(&config).unwrap()).unwrap();
    edited.train.lr = 0.05;
    edited.model.activation = Activation::Relu;
    edited.model.p = 2;
    let status_file = dir.join("status.json");
    for (state, epochs) in [(RunStatus::Done, 2), (RunStatus::Interrupted, 3)] {
        edited.train.epochs = epochs;
        std::fs::write(&config, edited.to_toml()).unwrap();
        let mut s = read_status(&dir).unwrap();
        s.status = state;
        std::fs::write(&status_file, serde_json::to_string(&s).unwrap()).unwrap();
        let o = run(&["train", "--resume", "--out", out]);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{state}: {err}");
        assert_eq!(err.lines().count(), 1, "{state}: {err}");
        for needle in [
            "config.toml: differs from the config the run trained with, kept in",
            "checkpoint.safetensors",
            "train.lr is 0.1 there, 0.05 here",
            "model.activation is \"relu6\" there, \"relu\" here",
            "model.p is 4 there, 2 here",
        ] {
            assert!(err.contains(needle), "{state}: {needle:?} missing: {err}");
        }
        assert_eq!(
            err.contains("train.epochs is 2 there, 3 here"),
            epochs == 3,
            "{err}"
        );
        assert_eq!(
            read_status(&dir).unwrap(),
            s,
            "{state}: status.json changed"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// The end of a run (the schedule finished, the conversion, the evaluations of the training and
/// the deploy form) needs no more memory than its training did: at most 1.2x the peak resident
/// memory the process reached in its epochs, as the run itself measures and records it. It was
/// 7-12x (5.6-6.1 GB against 0.5) while evaluation kept the whole forward graph of its batches.
#[test]
fn the_end_of_a_run_stays_within_its_training_memory() {
    for model in ["condensenet-86", "condensenext"] {
        let dir = fresh_dir(&format!("end-memory-{model}"));
        let out = dir.to_str().unwrap();
        assert_ok(&run(&[
            "train",
            "--model",
            model,
            "--dataset",
            "digits",
            "--subset",
            "64",
            "--test-subset",
            "500",
            "--epochs",
            "1",
            "--batch",
            "32",
            "--out",
            out,
        ]));
        let s = summary(&dir);
        let (training, end) = (
            s["peak_rss_training_bytes"].as_u64().unwrap(),
            s["peak_rss_bytes"].as_u64().unwrap(),
        );
        if training == 0 {
            eprintln!("no VmHWM on this OS: nothing to check");
            return;
        }
        assert!(
            end as f64 <= 1.2 * training as f64,
            "{model}: the end of the run peaked at {} MB, its training at {} MB",
            end >> 20,
            training >> 20
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A data set larger than this machine's memory is one `error:` line naming its key, exit 2,
/// before anything is allocated or written (was: an aborted allocation of 3 PB, exit 134, and
/// a status left `running`).
#[test]
fn a_data_set_that_cannot_fit_is_refused_before_anything_is_written() {
    let dir = fresh_dir("huge-data");
    let out = dir.to_str().unwrap();
    let o = run(&[
        "train",
        "--model",
        "condensenext",
        "--dataset",
        "synthetic",
        "--subset",
        "1000000000000",
        "--epochs",
        "1",
        "--out",
        out,
    ]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("data.train_size") && err.contains("GB"),
        "{err}"
    );
    assert!(!dir.exists(), "nothing written");
}

/// A batch larger than the training set trains at the set's size, and the memory check sizes
/// the step so (was: `--batch 2048` on 128 images refused as needing 25.5 GB).
#[test]
fn a_batch_larger_than_the_training_set_is_checked_at_the_sets_size() {
    let dir = fresh_dir("big-batch");
    let out = dir.to_str().unwrap();
    let o = run(&[
        "train",
        "--model",
        "condensenet-86",
        "--dataset",
        "digits",
        "--subset",
        "16",
        "--test-subset",
        "16",
        "--batch",
        "1000000",
        "--epochs",
        "1",
        "--out",
        out,
    ]);
    assert_ok(&o);
    assert_eq!(summary(&dir)["status"], "done");
    let _ = std::fs::remove_dir_all(&dir);
}
