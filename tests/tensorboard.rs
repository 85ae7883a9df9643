//! TensorBoard event files end to end, read back with the crate's own reader (the real reader,
//! TensorBoard itself, checks them in `tests/tensorboard/check.sh`): every epoch once across
//! an interruption and an epoch lost between its checkpoint and its events, values equal to
//! `metrics.csv` and `summary.json`, the live fractions equal to the checkpoint's masks, an
//! unwritable folder as a warning, `--no-tensorboard`, and `ablate report` writing the files
//! of runs trained without them, the same as training writes.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ablate::io::load_safetensors;
use ablate::run_dir::{read_metrics, read_status, RunStatus};
use ablate::tensorboard::event::{ReadData, ReadEvent};
use ablate::tensorboard::hparams::SESSION_START_TAG;
use ablate::tensorboard::record::{frame, records};
use ablate::tensorboard::scalars::{EPOCH_SCALARS, FINAL_SCALARS, LIVE_GROUP_INPUTS};
use ablate::tensorboard::{event_files, Event, EXPERIMENT_FILE};
use candle_core::Device;
use common::{scratch, stderr, stdout};

/// One thread per run (two tests run at a time on this 2-core machine).
fn ablate(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ablate"));
    c.args(args)
        .env("RAYON_NUM_THREADS", "1")
        .env("ABLATE_CACHE_DIR", common::CACHE)
        .env_remove("ABLATE_NO_TENSORBOARD");
    c
}

fn run(args: &[&str]) -> Output {
    ablate(args).output().unwrap()
}

fn assert_ok(o: &Output) {
    assert!(o.status.success(), "exit {:?}\n{}", o.status, stderr(o));
}

/// A small CondenseNet: its learned group convs drop inputs at t = 1/6, 2/6, 3/6.
fn tiny(epochs: &str, out: &Path) -> Vec<String> {
    [
        "train",
        "--model",
        "condensenet-86",
        "--set",
        "stages=[1,1,1]",
        "--dataset",
        "synthetic",
        "--subset",
        "96",
        "--test-subset",
        "32",
        "--batch",
        "32",
        "--epochs",
        epochs,
        "--out",
        out.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Every event of every file of `folder`, by file; each file starts with its version and
/// reads to its end.
fn events(folder: &Path) -> Vec<Vec<ReadEvent>> {
    event_files(folder)
        .unwrap()
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            let events: Vec<ReadEvent> = records(&bytes)
                .map(|r| Event::decode(r.unwrap()).unwrap())
                .collect();
            assert_eq!(
                events[0].file_version.as_deref(),
                Some("brain.Event:2"),
                "{path:?}"
            );
            events
        })
        .collect()
}

/// `(tag, step) -> data` of the folder; a `(tag, step)` held twice fails.
fn values(folder: &Path) -> BTreeMap<(String, i64), ReadData> {
    let mut out = BTreeMap::new();
    for e in events(folder).into_iter().flatten() {
        for v in e.values {
            let key = (v.tag, e.step);
            assert!(
                out.insert(key.clone(), v.data).is_none(),
                "{key:?} written twice"
            );
        }
    }
    out
}

fn scalar(values: &BTreeMap<(String, i64), ReadData>, tag: &str, step: i64) -> f32 {
    match values.get(&(tag.to_string(), step)) {
        Some(ReadData::Scalar(v)) => *v,
        other => panic!("{tag} at {step}: {other:?}"),
    }
}

/// Every scalar of every epoch equals its `metrics.csv` column (as float32), epochs 1..=n,
/// and the end-of-run values equal `summary.json`.
fn assert_match_the_run(dir: &Path, epochs: usize) {
    let v = values(&dir.join("tensorboard"));
    let records = read_metrics(&dir.join("metrics.csv")).unwrap();
    assert_eq!(records.len(), epochs);
    for r in &records {
        for s in &EPOCH_SCALARS {
            let got = scalar(&v, s.tag, r.epoch as i64);
            assert_eq!(got, (s.value)(r) as f32, "{} at epoch {}", s.tag, r.epoch);
        }
    }
    let steps: Vec<i64> = v
        .keys()
        .filter(|(t, _)| t == "test/top1")
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(steps, (1..=epochs as i64).collect::<Vec<_>>());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    for f in &FINAL_SCALARS {
        let want = summary.pointer(f.pointer).unwrap().as_f64().unwrap() as f32;
        assert_eq!(scalar(&v, f.tag, epochs as i64), want, "{}", f.tag);
    }
}

/// Live fraction of the learned group convs' inputs in the checkpoint: the masks' density.
fn checkpoint_live_inputs(dir: &Path) -> f32 {
    let (tensors, _) = load_safetensors(&dir.join("checkpoint.safetensors"), &Device::Cpu).unwrap();
    let (mut live, mut all) = (0usize, 0usize);
    for (name, t) in tensors {
        if name.ends_with(".conv.mask") && !name.starts_with("momentum.") {
            let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            live += v.iter().filter(|&&x| x != 0.0).count();
            all += v.len();
        }
    }
    assert!(all > 0);
    (live as f64 / all as f64) as f32
}

/// Interrupted by SIGTERM after its second epoch, the epoch-2 event then cut from the file
/// (as a kill between the checkpoint and the event write leaves it), and resumed: each epoch
/// once, in two files, equal to `metrics.csv`; the live fractions follow the schedule and end
/// at the trained checkpoint's masks.
#[test]
fn a_resumed_run_writes_every_epoch_once() {
    let dir = scratch("resume");
    let args = tiny("6", &dir);
    let mut child = ablate(&strs(&args))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !read_status(&dir).is_some_and(|s| s.epochs_done >= 2) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "ended before the signal"
        );
        assert!(start.elapsed() < Duration::from_secs(300), "too slow");
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();
    let status = read_status(&dir).unwrap();
    assert_eq!(status.status, RunStatus::Interrupted, "{status:?}");
    let done = status.epochs_done;
    assert!(done < 6, "stopped too late");

    // Drop the last epoch's event: it was checkpointed, but its event never written.
    let folder = dir.join("tensorboard");
    let files = event_files(&folder).unwrap();
    assert_eq!(files.len(), 1);
    let bytes = std::fs::read(&files[0]).unwrap();
    let mut kept = Vec::new();
    for r in records(&bytes) {
        let r = r.unwrap();
        if Event::decode(r).unwrap().step != done as i64 {
            kept.extend(frame(r));
        }
    }
    assert!(kept.len() < bytes.len());
    std::fs::write(&files[0], &kept).unwrap();

    let mut resume = args.clone();
    resume.push("--resume".into());
    let o = run(&strs(&resume));
    assert_ok(&o);
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
    assert_eq!(event_files(&folder).unwrap().len(), 2, "a new file");
    // The new file starts with the lost epoch.
    let second = &events(&folder)[1];
    assert_eq!(second[1].step, done as i64);
    assert_match_the_run(&dir, 6);

    let v = values(&folder);
    let live: Vec<f32> = (1..=6).map(|e| scalar(&v, LIVE_GROUP_INPUTS, e)).collect();
    assert_eq!(
        live,
        [1.0, 0.75, 0.5, 0.25, 0.25, 0.25],
        "drops at t = 1/6, 2/6, 3/6"
    );
    assert_eq!(live[5], checkpoint_live_inputs(&dir));
    let changed: Vec<i64> = v
        .keys()
        .filter(|(t, _)| t == "pruning/structure")
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(changed, [2, 3, 4]);
    assert!(
        !v.keys().any(|(t, _)| t == SESSION_START_TAG),
        "no experiment, no session"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A folder that cannot be made (a file in its place) is one warning, on stderr and in the
/// log, and the run is done; `--no-tensorboard` and its variable write no folder.
#[test]
fn an_unwritable_folder_is_a_warning_and_the_flag_turns_it_off() {
    let dir = scratch("blocked");
    std::fs::write(dir.join("tensorboard"), "in the way").unwrap();
    let o = run(&strs(&tiny("2", &dir)));
    assert_ok(&o);
    let err = stderr(&o);
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "the first write, then silence: {err}");
    assert!(warnings[0].starts_with("warning: tensorboard: "), "{err}");
    assert!(warnings[0].contains("goes on"), "{err}");
    assert_eq!(read_status(&dir).unwrap().status, RunStatus::Done);
    let log = std::fs::read_to_string(dir.join("train.log")).unwrap();
    assert!(log.contains("warning: tensorboard:"), "{log}");
    assert_eq!(
        std::fs::read_to_string(dir.join("tensorboard")).unwrap(),
        "in the way"
    );
    // The warning's way on works for a standalone run, done: once the folder can be made,
    // `train --resume` writes the steps it lacks (was: promised, and nothing did it).
    assert!(warnings[0].contains("--resume"), "{err}");
    std::fs::remove_file(dir.join("tensorboard")).unwrap();
    let mut again = tiny("2", &dir);
    again.push("--resume".into());
    let o = run(&strs(&again));
    assert_ok(&o);
    assert!(stdout(&o).contains("TensorBoard values"), "{}", stdout(&o));
    assert!(
        std::fs::read_dir(dir.join("tensorboard"))
            .unwrap()
            .any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("events.out.tfevents")),
        "event files written"
    );

    let off = scratch("off");
    let mut args = tiny("1", &off);
    args.push("--no-tensorboard".into());
    assert_ok(&run(&strs(&args)));
    assert!(!off.join("tensorboard").exists());
    let env = scratch("env");
    let o = ablate(&strs(&tiny("1", &env)))
        .env("ABLATE_NO_TENSORBOARD", "1")
        .output()
        .unwrap();
    assert_ok(&o);
    assert!(!env.join("tensorboard").exists());
    for d in [dir, off, env] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

fn experiment(dir: &Path) -> PathBuf {
    let file = dir.join("grid.toml");
    std::fs::write(
        &file,
        "name = \"grid\"\nseeds = [0]\n[base]\npreset = \"condensenext\"\n\
         model.stages = [1, 1, 1]\ntrain.epochs = 2\ntrain.batch = 32\n\
         data.dataset = \"synthetic\"\ndata.train_size = 64\ndata.test_size = 32\n\
         [sweep]\n\"model.activation\" = [\"relu\", \"relu6\"]\n",
    )
    .unwrap();
    file
}

/// Runs trained with `--no-tensorboard` (as before event files existed) get them from
/// `ablate report`: the same values training writes (the timing columns aside, which differ
/// between two trainings), each run's axis values as its session, the experiment's grid; a
/// second report writes nothing.
#[test]
fn report_writes_the_files_of_runs_trained_without_them() {
    let dir = scratch("report");
    let file = experiment(&dir);
    let f = file.to_str().unwrap();
    let (old, new) = (dir.join("old"), dir.join("new"));
    let (o, n) = (old.to_str().unwrap(), new.to_str().unwrap());
    let reports = dir.join("reports");
    let r = reports.to_str().unwrap();
    // One CPU slot: no calibration of the time model to choose the slots.
    let cpu = ["--devices", "cpu"];
    assert_ok(&run(&[
        &["run", f, "--results", o, "--reports", r, "--no-tensorboard"][..],
        &cpu,
    ]
    .concat()));
    assert_ok(&run(&[
        &["run", f, "--results", n, "--reports", r][..],
        &cpu,
    ]
    .concat()));
    assert!(!old.join("grid").join(EXPERIMENT_FILE).exists());
    assert!(new.join("grid").join(EXPERIMENT_FILE).is_file());
    let ids: Vec<String> = std::fs::read_dir(new.join("grid"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("config.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(ids.len(), 2);
    for id in &ids {
        assert!(!old.join("grid").join(id).join("tensorboard").exists());
    }

    let out = run(&["report", "--results", o, "--out", r]);
    assert_ok(&out);
    assert!(
        common::stdout(&out).contains("event files written for 2 runs"),
        "{}",
        common::stdout(&out)
    );
    assert!(old.join("grid").join(EXPERIMENT_FILE).is_file());
    let timing =
        |t: &str| t.starts_with("time/") || t.ends_with("seconds") || t.ends_with("second");
    for id in &ids {
        let (a, b) = (old.join("grid").join(id), new.join("grid").join(id));
        assert_match_the_run(&a, 2);
        let strip = |m: BTreeMap<(String, i64), ReadData>| -> Vec<_> {
            m.into_iter().filter(|((t, _), _)| !timing(t)).collect()
        };
        let (va, vb) = (
            strip(values(&a.join("tensorboard"))),
            strip(values(&b.join("tensorboard"))),
        );
        // The session start's content holds its start time; compare its presence only.
        let keys = |v: &Vec<((String, i64), ReadData)>| {
            v.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>()
        };
        assert_eq!(keys(&va), keys(&vb), "{id}");
        let scalars = |v: &Vec<((String, i64), ReadData)>| {
            v.iter()
                .filter(|(_, d)| !matches!(d, ReadData::Other))
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(scalars(&va), scalars(&vb), "{id}");
        assert!(va.iter().any(|((t, _), _)| t == SESSION_START_TAG));
    }
    let files = |root: &Path| -> usize {
        ids.iter()
            .map(|id| {
                event_files(&root.join("grid").join(id).join("tensorboard"))
                    .unwrap()
                    .len()
            })
            .sum()
    };
    let before = files(&old);
    let record = old.join("grid").join(EXPERIMENT_FILE);
    let (record_bytes, record_inode) = (
        std::fs::read(&record).unwrap(),
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&record).unwrap()),
    );
    let again = run(&["report", "--results", o, "--out", r]);
    assert_ok(&again);
    assert!(!common::stdout(&again).contains("event files written"));
    assert_eq!(files(&old), before, "nothing new, no new file");
    // The experiment's record says what it said: not rewritten (was: new bytes each report).
    assert_eq!(std::fs::read(&record).unwrap(), record_bytes);
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&record).unwrap()),
        record_inode
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
