//! `ablate export` end to end: a trained run's deploy model read back from its files, the
//! reference file agreeing with the run's own test top-1, and bad input (a run that is not
//! done, a missing model.safetensors, an unwritable --out) giving one error line, exit 2 and
//! nothing written. Agreement with onnxruntime is checked by tests/onnx/check.sh.

mod common;
use common::{ablate, assert_usage_error, scratch, stderr, stdout};

use std::path::Path;

use ablate::analyze::write_deploy;
use ablate::io::load_safetensors;
use ablate::model::Network;
use candle_core::{Device, Tensor};
use candle_nn::ModuleT;

/// The files of `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Trains the tiny run every export test uses into `run`, with `sets` more `--set` overrides.
fn train_tiny(run: &Path, sets: &[&str]) {
    let mut args = vec![
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
        "40",
        "--batch",
        "32",
        "--epochs",
        "1",
        "--seed",
        "3",
        "--out",
        run.to_str().unwrap(),
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    let o = ablate(&args);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// A copy of the run dir `run` at `dest` (its files, not its lock or its TensorBoard folder).
fn copy_run(run: &Path, dest: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dest).unwrap();
    for name in listing(run) {
        if name != ".lock" && run.join(&name).is_file() {
            std::fs::copy(run.join(&name), dest.join(&name)).unwrap();
        }
    }
    dest.to_path_buf()
}

/// What a safetensors file holds: each tensor (name, dtype, shape, bytes) by name, and the
/// header's metadata. Two files with equal contents can differ in bytes: the header lists
/// its metadata in hash order.
type Contents = (
    Vec<(String, String, Vec<usize>, Vec<u8>)>,
    std::collections::BTreeMap<String, String>,
);

fn contents(bytes: &[u8]) -> Contents {
    let file = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let mut tensors: Vec<_> = file
        .tensors()
        .into_iter()
        .map(|(name, t)| {
            (
                name,
                format!("{:?}", t.dtype()),
                t.shape().to_vec(),
                t.data().to_vec(),
            )
        })
        .collect();
    tensors.sort();
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    let metadata = header.metadata().clone().unwrap_or_default();
    (tensors, metadata.into_iter().collect())
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// A deploy model written as a run writes it and read back gives the same network, with
/// the file's indices (seed 5 prunes other channels than the seed-0 skeleton it is read into).
#[test]
fn a_deploy_file_reads_back_into_the_same_network() {
    let dir = scratch("roundtrip");
    for name in ["condensenet-86", "condensenext"] {
        let spec = common::model(name).spec;
        let mut net = Network::seeded(&spec, 5, &Device::Cpu).unwrap();
        net.finish_pruning().unwrap();
        let net = net.condense().unwrap();
        common::randomize_norms(&net, 3);
        let path = dir.join(format!("{name}.safetensors"));
        write_deploy(&net, &path).unwrap();
        let (saved, _) = load_safetensors(&path, &Device::Cpu).unwrap();
        let back = Network::from_deploy(&spec, &saved, &Device::Cpu).unwrap();
        let mut rng = ablate::rng::Rng::new(1);
        let x = common::uniform(&mut rng, &[2, 3, 32, 32], -2.0, 2.0);
        let (a, b) = (
            net.forward_t(&x, false).unwrap(),
            back.forward_t(&x, false).unwrap(),
        );
        assert_eq!(max_abs_diff(&a, &b), 0.0, "{name}");

        // A file that does not fit the model is refused, naming the tensor.
        let index = "block0.layer1.bottleneck.index";
        let mut bad = saved.clone();
        let n = bad[index].dim(0).unwrap();
        let out_of_range = vec![10_000u32; n];
        bad.insert(
            index.into(),
            Tensor::from_vec(out_of_range, n, &Device::Cpu).unwrap(),
        );
        let e = Network::from_deploy(&spec, &bad, &Device::Cpu).unwrap_err();
        assert!(e.to_string().contains(index), "{e}");
        let mut bad = saved.clone();
        bad.remove("head.bn.running_var");
        let e = Network::from_deploy(&spec, &bad, &Device::Cpu).unwrap_err();
        assert!(e.to_string().contains("head.bn.running_var"), "{e}");
        let mut bad = saved.clone();
        bad.insert(
            "extra.weight".into(),
            Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap(),
        );
        let e = Network::from_deploy(&spec, &bad, &Device::Cpu).unwrap_err();
        assert!(e.to_string().contains("extra.weight"), "{e}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// One tiny trained run, exported; then every kind of bad input against copies of it.
#[test]
fn a_trained_run_exports_and_bad_input_is_one_line() {
    let root = scratch("run");
    let run = root.join("run");
    let run_s = run.to_str().unwrap();
    train_tiny(&run, &[]);

    // The export's reference logits on the run's test images give the run's deploy top-1.
    let out = root.join("m.onnx");
    let reference = root.join("ref.safetensors");
    let o = ablate(&[
        "export",
        run_s,
        "--out",
        out.to_str().unwrap(),
        "--reference",
        reference.to_str().unwrap(),
        "--reference-images",
        "1000",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("weights trained"), "{text}");
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(
        &bytes[..2],
        &[0x08, 0x08],
        "ModelProto starts with ir_version 8"
    );
    let (r, _) = load_safetensors(&reference, &Device::Cpu).unwrap();
    let predicted = r["test.logits"]
        .argmax(1)
        .unwrap()
        .to_vec1::<u32>()
        .unwrap();
    let labels = r["test.labels"].to_vec1::<u32>().unwrap();
    assert_eq!(labels.len(), 40);
    let right = predicted
        .iter()
        .zip(&labels)
        .filter(|(p, l)| p == l)
        .count();
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    let top1 = summary["deploy_test_top1"].as_f64().unwrap();
    assert!(
        (100.0 * right as f64 / 40.0 - top1).abs() < 1e-9,
        "{right}/40 vs {top1}"
    );
    assert_eq!(r["random.input"].dims(), &[1000, 3, 32, 32]);

    // Not done: the status says running.
    let copy = |name: &str, files: &[&str]| {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for f in files {
            std::fs::copy(run.join(f), dir.join(f)).unwrap();
        }
        dir
    };
    let running = copy(
        "running",
        &["config.toml", "summary.json", "model.safetensors"],
    );
    let status = std::fs::read_to_string(run.join("status.json")).unwrap();
    std::fs::write(
        running.join("status.json"),
        status.replacen("\"status\": \"done\"", "\"status\": \"running\"", 1),
    )
    .unwrap();
    let target = root.join("never.onnx");
    let t = target.to_str().unwrap();
    let o = ablate(&["export", running.to_str().unwrap(), "--out", t]);
    assert_usage_error(
        &o,
        &["running", "not done (running, 1 of 1 epochs)", "--resume"],
    );
    assert!(!target.exists());
    // A diverged run is not sent to `--resume`, which diverges again (was: it was).
    let diverged = copy(
        "diverged",
        &["config.toml", "summary.json", "model.safetensors"],
    );
    std::fs::write(
        diverged.join("status.json"),
        status.replacen("\"status\": \"done\"", "\"status\": \"diverged\"", 1),
    )
    .unwrap();
    let o = ablate(&["export", diverged.to_str().unwrap(), "--out", t]);
    assert_usage_error(&o, &["not done (diverged", "lower learning rate"]);
    assert!(!stderr(&o).contains("--resume"), "{}", stderr(&o));
    assert!(!target.exists());

    // Done, but model.safetensors is gone, and the checkpoint too.
    let no_model = copy("no-model", &["config.toml", "status.json", "summary.json"]);
    let o = ablate(&["export", no_model.to_str().unwrap(), "--out", t]);
    assert_usage_error(
        &o,
        &["no-model: done, but its deploy model (model.safetensors) and final checkpoint"],
    );
    assert!(!target.exists());

    // Not a run dir at all.
    let empty = scratch("empty");
    let o = ablate(&["export", empty.to_str().unwrap(), "--out", t]);
    assert_usage_error(&o, &["not a run dir (no config.toml)"]);

    // An --out that cannot be written: a missing folder, a folder; the reference written
    // before it is removed again, and no temp file stays.
    let before = listing(&root);
    let missing = root.join("no/such/folder/m.onnx");
    let ref2 = root.join("ref2.safetensors");
    let o = ablate(&[
        "export",
        run_s,
        "--out",
        missing.to_str().unwrap(),
        "--reference",
        ref2.to_str().unwrap(),
        "--reference-images",
        "2",
    ]);
    assert_usage_error(&o, &["--out", "no/such/folder/m.onnx", "does not exist"]);
    let o = ablate(&["export", run_s, "--out", empty.to_str().unwrap()]);
    assert_usage_error(&o, &["--out", empty.to_str().unwrap(), "is a directory"]);
    // `-` is no file name (was: a file named `-`); a FIFO (as `/dev/null` is a device) is
    // never replaced by a regular file (was: the device replaced, as root).
    let o = ablate(&["export", run_s, "--out", "-"]);
    assert_usage_error(&o, &["--out", "`-`", "not standard output"]);
    let fifo = root.join("pipe.onnx");
    if std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success())
    {
        let beside = root.join("beside.onnx");
        for flag in ["--out", "--reference"] {
            let mut args = vec!["export", run_s, flag, fifo.to_str().unwrap()];
            if flag == "--reference" {
                args.extend(["--out", beside.to_str().unwrap()]);
            }
            let o = ablate(&args);
            assert_usage_error(&o, &[flag, "not a regular file"]);
        }
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo());
        std::fs::remove_file(&fifo).unwrap();
    }
    assert_eq!(listing(&root), before, "nothing half-written");
    assert!(listing(&empty).is_empty());

    // An output that is one of the run dir's own files, however spelled, or the other
    // output, or the model file being exported: refused, and the run's files stay as they were.
    let model_before = std::fs::read(run.join("model.safetensors")).unwrap();
    let own = |name: &str| run.join(name).to_str().unwrap().to_string();
    let spelled = format!("{}/../run/checkpoint.safetensors", run.display());
    for (flag, path, file) in [
        ("--out", own("model.safetensors"), "model.safetensors"),
        ("--reference", own("model.safetensors"), "model.safetensors"),
        ("--out", spelled.clone(), "checkpoint.safetensors"),
        ("--reference", own("summary.json"), "summary.json"),
        ("--out", own("config.toml"), "config.toml"),
    ] {
        let mut args = vec!["export", run_s, flag, &path];
        if flag == "--reference" {
            args.extend(["--out", t]);
        }
        let o = ablate(&args);
        assert_usage_error(&o, &[flag, &format!("is the run dir's own {file}")]);
    }
    let same = root.join("same.out");
    let same_spelled = format!("{}/./same.out", root.display());
    let o = ablate(&[
        "export",
        run_s,
        "--out",
        same.to_str().unwrap(),
        "--reference",
        &same_spelled,
    ]);
    assert_usage_error(&o, &["--reference", "is the --out file too"]);
    assert!(!same.exists());
    let model_toml = root.join("tiny.toml");
    std::fs::write(
        &model_toml,
        "preset = \"condensenext\"\nstages = [1, 1, 1]\n",
    )
    .unwrap();
    let toml_s = model_toml.to_str().unwrap();
    let o = ablate(&["export", toml_s, "--out", toml_s]);
    assert_usage_error(&o, &["--out", "is the model file being exported"]);
    let o = ablate(&["export", toml_s, "--out", t]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::remove_file(&target).unwrap();
    std::fs::remove_file(&model_toml).unwrap();
    assert_eq!(
        std::fs::read(run.join("model.safetensors")).unwrap(),
        model_before
    );
    assert!(!target.exists());

    // Options that do not apply or are out of range.
    let o = ablate(&["export", run_s, "--out", t, "--set", "p=2"]);
    assert_usage_error(&o, &["--set", "run dir"]);
    let o = ablate(&["export", "condensenext", "--out", t, "--opset", "9"]);
    assert_usage_error(&o, &["--opset", "11 to 21, got 9"]);
    let o = ablate(&["export", "condensenet-87", "--out", t]);
    assert_usage_error(&o, &["unknown preset `condensenet-87`"]);
    assert!(!target.exists());
    // bench --onnx without a Python that has onnxruntime.
    let o = ablate(&[
        "bench",
        "--onnx",
        "--models",
        "condensenext",
        "--latency-runs",
        "1",
        "--python",
        "/nonexistent/python3",
    ]);
    assert_usage_error(
        &o,
        &["key `--python`: `/nonexistent/python3` cannot time onnxruntime"],
    );
    std::fs::remove_dir_all(root).unwrap();
    std::fs::remove_dir_all(empty).unwrap();
}

/// A reference count whose file cannot fit in memory is refused up front (one line, exit 2,
/// nothing written) instead of allocating until the kernel kills the process.
#[test]
fn a_reference_beyond_memory_is_refused() {
    let root = scratch("huge-reference");
    let out = root.join("m.onnx");
    let reference = root.join("ref.safetensors");
    let o = ablate(&[
        "export",
        "condensenext",
        "--set",
        "stages=[1,1,1]",
        "--out",
        out.to_str().unwrap(),
        "--reference",
        reference.to_str().unwrap(),
        "--reference-images",
        "1000000000000",
    ]);
    assert_usage_error(
        &o,
        &["--reference-images", "needs at least", "GB available"],
    );
    assert!(listing(&root).is_empty(), "{:?}", listing(&root));
    std::fs::remove_dir_all(root).unwrap();
}

/// An output that names a directory (existing or not, with a trailing slash) or lies in a
/// folder that is a file is refused naming the path and what was expected, before any work.
#[test]
fn an_output_that_is_a_directory_is_refused() {
    let root = scratch("dir-out");
    let existing = root.join("models");
    std::fs::create_dir_all(&existing).unwrap();
    let a_file = root.join("notes.txt");
    std::fs::write(&a_file, "x").unwrap();
    let good = root.join("m.onnx");
    let good = good.to_str().unwrap();
    // `export condensenext` with `--out m.onnx` unless `flag` is `--out`, and `flag path`.
    let export = |flag: &str, path: &str| {
        let mut args = vec![
            "export",
            "condensenext",
            "--set",
            "stages=[1,1,1]",
            flag,
            path,
        ];
        if flag != "--out" {
            args.extend(["--out", good]);
        }
        ablate(&args)
    };
    let new_dir = format!("{}/", root.join("new").display());
    let o = export("--out", &new_dir);
    assert_usage_error(
        &o,
        &[
            "key `--out`",
            &new_dir,
            "is a directory",
            "condensenext.onnx",
        ],
    );
    let existing_slash = format!("{}/", existing.display());
    let o = export("--out", &existing_slash);
    assert_usage_error(&o, &[&existing_slash, "is a directory"]);
    let in_file = a_file.join("m.onnx");
    let o = export("--out", in_file.to_str().unwrap());
    assert_usage_error(&o, &["notes.txt` is not a directory"]);
    let o = export("--reference", &new_dir);
    assert_usage_error(
        &o,
        &[
            "key `--reference`",
            "is a directory",
            "reference.safetensors",
        ],
    );
    assert_eq!(listing(&root), ["models", "notes.txt"]);
    assert!(listing(&existing).is_empty());
    std::fs::remove_dir_all(root).unwrap();
}

/// A model.safetensors whose tensors are of the wrong dtype, not finite, or a negative
/// variance, or whose data no longer matches its checksum, is refused naming the file and the
/// tensor, never exported; a file without a checksum (an older run) still exports.
#[test]
fn a_model_file_with_bad_tensors_is_refused() {
    let root = scratch("bad-model");
    let run = root.join("run");
    train_tiny(&run, &[]);
    let model = run.join("model.safetensors");
    let (saved, _) = load_safetensors(&model, &Device::Cpu).unwrap();
    let out = root.join("m.onnx");
    let export = |dir: &Path| {
        ablate(&[
            "export",
            dir.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
    };
    // A copy of the run whose model holds `saved` with `name` replaced by `f` of it, written
    // without a checksum as a hand-made or older file would be.
    let variant = |label: &str, name: &str, f: &dyn Fn(&Tensor) -> Tensor| {
        let dir = copy_run(&run, &root.join(label));
        let mut tensors: Vec<(String, Tensor)> =
            saved.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (k, v) in &mut tensors {
            if k == name {
                *v = f(v);
            }
        }
        ablate::io::save_safetensors(&dir.join("model.safetensors"), tensors).unwrap();
        dir
    };
    let with_first = |value: f32| {
        move |t: &Tensor| {
            let mut v = t.to_vec1::<f32>().unwrap();
            v[0] = value;
            Tensor::from_vec(v, t.dims(), &Device::Cpu).unwrap()
        }
    };
    let unchanged = variant("old-layout", "", &|t| t.clone());
    let o = export(&unchanged);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::remove_file(&out).unwrap();

    let int64 = variant("int64", "head.bn.weight", &|t| {
        t.to_dtype(candle_core::DType::I64).unwrap()
    });
    let o = export(&int64);
    assert_usage_error(
        &o,
        &[
            "model.safetensors",
            "`head.bn.weight` is stored as i64, the model expects f32",
        ],
    );
    let nan = variant("nan", "head.bn.bias", &with_first(f32::NAN));
    assert_usage_error(
        &export(&nan),
        &["`head.bn.bias` holds NaN; expected finite values"],
    );
    let negative = variant("negative", "head.bn.running_var", &with_first(-0.5));
    assert_usage_error(
        &export(&negative),
        &["`head.bn.running_var` holds the negative variance -0.5"],
    );

    // The file training writes carries its checksum: one changed byte is caught.
    let damaged = copy_run(&run, &root.join("damaged"));
    let mut bytes = std::fs::read(&model).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(damaged.join("model.safetensors"), bytes).unwrap();
    assert_usage_error(
        &export(&damaged),
        &["damaged/model.safetensors", "does not match the checksum"],
    );
    assert!(!out.exists());
    std::fs::remove_dir_all(root).unwrap();
}

/// The config a run trained with is kept in its checkpoint and its deploy model: a
/// config.toml edited afterwards (here ReLU6 made ReLU) is refused naming the keys, whichever
/// of the two files is left, instead of exporting other ops around the trained weights.
#[test]
fn an_edited_config_is_refused() {
    let root = scratch("edited");
    let run = root.join("run");
    train_tiny(&run, &[]);
    let out = root.join("m.onnx");
    let export = |dir: &Path| {
        ablate(&[
            "export",
            dir.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let edited = |label: &str| {
        let dir = copy_run(&run, &root.join(label));
        let config = dir.join("config.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(text.contains("activation = \"relu6\""), "{text}");
        std::fs::write(
            &config,
            text.replace("activation = \"relu6\"", "activation = \"relu\""),
        )
        .unwrap();
        dir
    };
    let keys = "model.activation is \"relu6\" there, \"relu\" here";

    let both = edited("both");
    assert_usage_error(
        &export(&both),
        &["both/config.toml", keys, "both/checkpoint.safetensors"],
    );
    let model_only = edited("model-only");
    std::fs::remove_file(model_only.join("checkpoint.safetensors")).unwrap();
    assert_usage_error(
        &export(&model_only),
        &[
            "model-only/config.toml",
            keys,
            "model-only/model.safetensors",
        ],
    );
    // A deploy model written before it recorded its config: the checkpoint still tells.
    let checkpoint_only = edited("checkpoint-only");
    let model = checkpoint_only.join("model.safetensors");
    let (tensors, _) = load_safetensors(&model, &Device::Cpu).unwrap();
    ablate::io::save_safetensors(&model, tensors.into_iter().collect()).unwrap();
    assert_usage_error(
        &export(&checkpoint_only),
        &[
            "checkpoint-only/config.toml",
            keys,
            "checkpoint.safetensors",
        ],
    );
    assert!(!out.exists());

    let o = export(&run);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::remove_dir_all(root).unwrap();
}

/// A done run whose model.safetensors is gone: export says which command rebuilds it, and
/// `train --resume` rebuilds it from the final checkpoint, byte for byte the file training
/// wrote, leaving the run's status as it was. With the checkpoint gone too, both say so with
/// the command that trains the run again, and that command does.
#[test]
fn a_lost_deploy_model_is_rebuilt_from_the_checkpoint() {
    let root = scratch("rebuild");
    let run = root.join("run");
    let run_s = run.to_str().unwrap();
    train_tiny(&run, &[]);
    let model = run.join("model.safetensors");
    let trained = std::fs::read(&model).unwrap();
    let status = std::fs::read_to_string(run.join("status.json")).unwrap();
    let out = root.join("m.onnx");
    let out_s = out.to_str().unwrap();

    std::fs::remove_file(&model).unwrap();
    let o = ablate(&["export", run_s, "--out", out_s]);
    let command = format!("ablate train --resume --out {run_s}");
    assert_usage_error(&o, &["run/model.safetensors: missing", &command]);
    let o = ablate(&["train", "--resume", "--out", run_s]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("rebuilt from the final checkpoint"),
        "{}",
        stdout(&o)
    );
    assert!(
        contents(&std::fs::read(&model).unwrap()) == contents(&trained),
        "the file training wrote"
    );
    assert_eq!(
        std::fs::read_to_string(run.join("status.json")).unwrap(),
        status
    );
    let o = ablate(&["export", run_s, "--out", out_s]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Nothing left to rebuild from: refused (exit 2) with the command that trains it again.
    std::fs::remove_file(&model).unwrap();
    std::fs::remove_file(run.join("checkpoint.safetensors")).unwrap();
    let o = ablate(&["train", "--resume", "--out", run_s]);
    assert_usage_error(&o, &["are both gone", "train the run again: `mv "]);
    let err = stderr(&o);
    let fix = err.split('`').nth(1).unwrap().to_string();
    let o = ablate(&["export", run_s, "--out", out_s]);
    assert_usage_error(&o, &[&fix]);
    let o = std::process::Command::new("sh")
        .args([
            "-c",
            &fix.replace("ablate ", &format!("{} ", env!("CARGO_BIN_EXE_ablate"))),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{fix}: {}", stderr(&o));
    assert!(
        contents(&std::fs::read(&model).unwrap()) == contents(&trained),
        "retrained bit-identically"
    );
    std::fs::remove_dir_all(root).unwrap();
}

/// `export --int8` of a trained run: calibrated on the run's training images, its top-1
/// measured on the whole test set by ablate's own evaluation of the QDQ graph (what the
/// reference's int8 logits give), kept in <out>.json and the file's metadata, byte for byte the
/// same file again; and each bad input one line, exit 2, nothing written.
#[test]
fn an_int8_export_measures_its_cost_and_refuses_bad_input() {
    let root = scratch("int8");
    let run = root.join("run");
    train_tiny(&run, &[]);
    let run_s = run.to_str().unwrap();
    let out = root.join("m-int8.onnx");
    let reference = root.join("ref.safetensors");
    let export = |out: &Path| {
        ablate(&[
            "export",
            run_s,
            "--int8",
            "--calibration-images",
            "32",
            "--out",
            out.to_str().unwrap(),
            "--reference",
            reference.to_str().unwrap(),
            "--reference-images",
            "40",
        ])
    };
    let o = export(&out);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("int8 QDQ"), "{text}");
    assert!(
        text.contains("calibration 32 of 64 train images (synthetic) drawn by seed 3; activation ranges min-max"),
        "{text}"
    );
    assert!(text.contains("test top-1 (40 images): float "), "{text}");

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("m-int8.json")).unwrap()).unwrap();
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(report["float_test_top1"], summary["deploy_test_top1"]);
    assert_eq!(report["test_images"], 40);
    assert_eq!(report["calibration"]["images"], 32);
    assert_eq!(report["calibration"]["rule"], "min-max");
    let (r, _) = load_safetensors(&reference, &Device::Cpu).unwrap();
    let labels = r["test.labels"].to_vec1::<u32>().unwrap();
    let top1 = |key: &str| {
        let p = r[key].argmax(1).unwrap().to_vec1::<u32>().unwrap();
        100.0 * p.iter().zip(&labels).filter(|(p, l)| p == l).count() as f64 / 40.0
    };
    assert_eq!(
        report["int8_test_top1"].as_f64().unwrap(),
        top1("test.logits")
    );
    assert_eq!(
        report["float_test_top1"].as_f64().unwrap(),
        top1("test.float_logits")
    );
    assert!(
        max_abs_diff(&r["test.logits"], &r["test.float_logits"]) > 0.0,
        "the int8 logits are not the float ones"
    );
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(report["onnx_bytes"], bytes.len());
    let text = String::from_utf8_lossy(&bytes);
    for key in [
        "quantization",
        "calibration",
        "float_test_top1",
        "int8_test_top1",
        "min-max",
    ] {
        assert!(text.contains(key), "metadata lacks {key}");
    }
    let float = root.join("m.onnx");
    let o = ablate(&["export", run_s, "--out", float.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let float_bytes = std::fs::read(&float).unwrap().len();
    assert!(
        bytes.len() < float_bytes,
        "{} vs {float_bytes}",
        bytes.len()
    );
    // Same run, same seed: the same file.
    let again = root.join("again.onnx");
    assert!(export(&again).status.success());
    assert_eq!(std::fs::read(&again).unwrap(), bytes);

    // Bad input: nothing is written.
    let before = listing(&root);
    let t = root.join("never.onnx");
    let t = t.to_str().unwrap();
    let o = ablate(&["export", "condensenext", "--int8", "--out", t]);
    assert_usage_error(
        &o,
        &["key `--int8`", "`condensenext` is a preset or model file"],
    );
    let o = ablate(&["export", run_s, "--int8", "--opset", "12", "--out", t]);
    assert_usage_error(
        &o,
        &[
            "key `--opset`",
            "--int8 needs operator set 13 or later",
            "got 12",
        ],
    );
    let o = ablate(&[
        "export",
        run_s,
        "--int8",
        "--calibration-images",
        "0",
        "--out",
        t,
    ]);
    assert_usage_error(&o, &["key `--calibration-images`", "positive"]);
    let json = root.join("m.json");
    let o = ablate(&["export", run_s, "--int8", "--out", json.to_str().unwrap()]);
    assert_usage_error(&o, &["key `--out`", "ends in .json"]);
    let own = run.join("summary.onnx");
    let o = ablate(&["export", run_s, "--int8", "--out", own.to_str().unwrap()]);
    assert_usage_error(&o, &["is the run dir's own summary.json"]);
    let o = ablate(&["export", run_s, "--calibration-images", "8", "--out", t]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "--calibration-images needs --int8"
    );
    assert_eq!(listing(&root), before, "nothing half-written");
    std::fs::remove_dir_all(root).unwrap();
}

/// A CIFAR-10 run whose data is not where --data-dir points: refused (one line, exit 2,
/// nothing written) instead of downloading or failing half-way. The CIFAR-10 files here are
/// sparse files of the official sizes (all-zero images of class 0), enough to train on.
#[test]
fn an_int8_export_without_the_runs_dataset_is_refused() {
    let root = scratch("int8-no-data");
    let data = root.join("data");
    let folder = data.join(ablate::data::CIFAR10_DIR);
    std::fs::create_dir_all(&folder).unwrap();
    let record = ablate::data::RECORD_BYTES as u64;
    for f in ablate::data::TRAIN_FILES
        .iter()
        .chain([&ablate::data::TEST_FILE])
    {
        std::fs::File::create(folder.join(f))
            .unwrap()
            .set_len(10_000 * record)
            .unwrap();
    }
    let run = root.join("run");
    let o = ablate(&[
        "train",
        "--model",
        "condensenext",
        "--set",
        "stages=[1,1,1]",
        "--dataset",
        "cifar10",
        "--data-dir",
        data.to_str().unwrap(),
        "--subset",
        "32",
        "--test-subset",
        "16",
        "--batch",
        "16",
        "--epochs",
        "1",
        "--out",
        run.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = root.join("m-int8.onnx");
    let export = |data_dir: &Path| {
        ablate(&[
            "export",
            run.to_str().unwrap(),
            "--int8",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let elsewhere = root.join("elsewhere");
    let o = export(&elsewhere);
    assert_usage_error(
        &o,
        &[
            "--int8 calibrates on the run's training images",
            "is not in",
            "elsewhere/cifar-10-batches-bin/",
        ],
    );
    assert!(!out.exists() && !root.join("m-int8.json").exists());
    let o = export(&data);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("calibration 32 of 32 train images (cifar10)"),
        "{}",
        stdout(&o)
    );
    std::fs::remove_dir_all(root).unwrap();
}
