#![allow(dead_code)]
//! Helpers shared by the integration tests.

use ablate::analyze::{trace_costs, Analysis, Convention, Cost};
use ablate::config::{ModelSource, ResolvedModel};
use ablate::model::{Form, Network, StateTensor};
use ablate::rng::Rng;
use candle_core::{Device, Tensor};

pub fn model(name: &str) -> ResolvedModel {
    ModelSource::parse(name).resolve(&[]).unwrap()
}

/// Counts of a preset in one form and convention, traced from a real forward pass.
pub fn counts(name: &str, form: Form, convention: Convention) -> Cost {
    let mut net = Network::seeded(&model(name).spec, 0, &Device::Cpu).unwrap();
    let net = match form {
        Form::Training => net,
        Form::Deploy => {
            net.finish_pruning().unwrap();
            net.condense().unwrap()
        }
    };
    ablate::analyze::total(&trace_costs(&net).unwrap(), convention)
}

pub fn analysis(name: &str, form: Form) -> Analysis {
    let dir =
        std::env::temp_dir().join(format!("ablate-test-{}-{name}-{form}", std::process::id()));
    let a = Analysis::of(&model(name), form, 0, &dir).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    a
}

/// A tensor of `shape` with values uniform in [lo, hi) from `rng`.
pub fn uniform(rng: &mut Rng, shape: &[usize], lo: f64, hi: f64) -> Tensor {
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.uniform(lo, hi) as f32).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Gives every BN non-trivial parameters and running statistics, so that index-select and
/// the per-channel copies of conversion are really exercised.
pub fn randomize_norms(net: &Network, seed: u64) {
    let mut rng = Rng::new(seed);
    for (name, t) in net.state() {
        let v = match &t {
            StateTensor::Param(v) | StateTensor::RunningStat(v) if name.contains("bn.") => v,
            _ => continue,
        };
        let (lo, hi) = if name.ends_with("running_var") || name.ends_with(".weight") {
            (0.5, 1.5)
        } else {
            (-0.5, 0.5)
        };
        v.set(&uniform(&mut rng, v.dims(), lo, hi)).unwrap();
    }
}

/// `max |a - b| / max |b|`.
pub fn relative_error(a: &Tensor, b: &Tensor) -> f32 {
    let max_abs = |t: &Tensor| {
        t.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    max_abs(&(a - b).unwrap()) / max_abs(b)
}

/// A fresh, empty scratch dir for test `name` of this test binary (tests run in parallel, and
/// test binaries at once: the binary's name and the process id keep them apart).
pub fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ablate-{}-{}-{name}",
        env!("CARGO_CRATE_NAME"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The calibration cache of the tests' `ablate` processes (`ABLATE_CACHE_DIR`): never the
/// user's, which a calibration made while other tests load the machine would spoil.
pub const CACHE: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/ablate-cache");

/// Runs the `ablate` binary with `args` and waits for it.
pub fn ablate(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ablate"))
        .args(args)
        .env("ABLATE_CACHE_DIR", CACHE)
        .output()
        .unwrap()
}

pub fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit code 2, exactly one `error:` line on stderr containing every one of `needles`, and
/// nothing on stdout.
pub fn assert_usage_error(o: &std::process::Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    assert!(err.starts_with("error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} missing from: {err}");
    }
    assert!(o.stdout.is_empty(), "stdout: {}", stdout(o));
}

/// A fresh scratch dir with `tiny.toml`: two one-epoch CondenseNeXt runs on 64 synthetic
/// images.
pub fn tiny_experiment(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = scratch(name);
    let file = dir.join("tiny.toml");
    std::fs::write(
        &file,
        "name = \"tiny\"\nseeds = [0, 1]\n[base]\npreset = \"condensenext\"\n\
         model.stages = [1, 1, 1]\ntrain.epochs = 1\ntrain.batch = 32\n\
         data.dataset = \"synthetic\"\ndata.train_size = 64\ndata.test_size = 32\n",
    )
    .unwrap();
    (dir, file)
}
