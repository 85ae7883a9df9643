//! Experiment files: the grid they expand to, run identity, and the precise errors of bad
//! files (`ablate plan` / `ablate run` exit 2 and write nothing).

mod common;
use common::{ablate, scratch};

use std::path::Path;
use std::process::Command;

use ablate::experiment::{Experiment, ExperimentFile};

fn experiment(text: &str) -> Result<Experiment, String> {
    let file = ExperimentFile::parse(Path::new("exp.toml"), text.to_string())
        .map_err(|e| e.to_string())?;
    Experiment::from_file(&file).map_err(|e| e.to_string())
}

const BASE: &str = r#"
[base]
preset = "condensenext"
model.stages = [1, 1, 1]
train.epochs = 2
data.dataset = "synthetic"
"#;

fn points(exp: &Experiment) -> Vec<String> {
    exp.runs.iter().map(|r| r.describe()).collect()
}

#[test]
fn grid_zip_exclude_include_and_seeds() {
    let exp = experiment(&format!(
        r#"name = "g"
seeds = [0, 1]
{BASE}
[sweep]
"model.activation" = ["relu", "relu6"]
[[zip]]
"model.loss" = ["ce", "focal"]
"model.dropout" = [0.0, 0.1]
[[exclude]]
"model.activation" = "relu"
"model.loss" = "focal"
[[include]]
label = "p2"
"model.p" = 2
[[include]]
"model.p" = 1
"train.seed" = 5
"#
    ))
    .unwrap();
    assert_eq!(exp.name, "g");
    assert_eq!(
        points(&exp),
        [
            r#"model.activation="relu" model.loss="ce" model.dropout=0.0 train.seed=0"#,
            r#"model.activation="relu" model.loss="ce" model.dropout=0.0 train.seed=1"#,
            r#"model.activation="relu6" model.loss="ce" model.dropout=0.0 train.seed=0"#,
            r#"model.activation="relu6" model.loss="ce" model.dropout=0.0 train.seed=1"#,
            r#"model.activation="relu6" model.loss="focal" model.dropout=0.1 train.seed=0"#,
            r#"model.activation="relu6" model.loss="focal" model.dropout=0.1 train.seed=1"#,
            r#"[p2] model.p=2 train.seed=0"#,
            r#"[p2] model.p=2 train.seed=1"#,
            r#"model.p=1 train.seed=5"#,
        ]
    );
    // The values reach the resolved configs, base keys included.
    let last = &exp.runs[8].config;
    assert_eq!(
        (last.model.p, last.train.seed, last.train.epochs),
        (1, 5, 2)
    );
    assert_eq!(last.model.stages, [1, 1, 1]);
    let focal = &exp.runs[4].config;
    assert_eq!(focal.model.dropout, 0.1);
    assert_eq!(
        focal.model_name,
        r#"condensenext [stages=[1, 1, 1], activation="relu6", loss="focal", dropout=0.1]"#
    );
    // Ids are distinct, 12 hex digits.
    let mut ids: Vec<&str> = exp.runs.iter().map(|r| r.id.as_str()).collect();
    assert!(ids
        .iter()
        .all(|i| i.len() == 12 && i.chars().all(|c| c.is_ascii_hexdigit())));
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 9);
}

#[test]
fn the_id_is_the_resolved_config_not_the_spelling() {
    // The same run written two ways, in two experiments, has one id; any change makes another.
    let a = experiment(&format!("{BASE}\n[sweep]\n\"model.p\" = [2]\n")).unwrap();
    let b = experiment(
        "[base]\npreset = \"condensenext\"\n\"model.p\" = 2\n\"data.dataset\" = \"synthetic\"\n[base.model]\nstages = [1, 1, 1]\n[base.train]\nepochs = 2\n",
    )
    .unwrap();
    assert_eq!(b.runs.len(), 1);
    assert_eq!(a.runs[0].config.train, b.runs[0].config.train);
    assert_eq!(a.runs[0].config.model, b.runs[0].config.model);
    // model_name differs in the order of the overrides, so compare ids of equal configs only.
    let mut c = b.runs[0].config.clone();
    c.model_name = a.runs[0].config.model_name.clone();
    assert_eq!(ablate::experiment::RunId::of(&c), a.runs[0].id);
    c.train.lr = 0.05;
    assert_ne!(ablate::experiment::RunId::of(&c), a.runs[0].id);
}

#[test]
fn seeds_multiply_include_points_and_a_preset_axis_switches_models() {
    let exp = experiment(
        "seeds = [0, 1]\n[base]\npreset = \"condensenet-86\"\n[[include]]\nlabel = \"base\"\n[[include]]\n\"model.activation\" = \"relu6\"\n",
    )
    .unwrap();
    assert_eq!(exp.runs.len(), 4, "{:?}", points(&exp));
    let exp = experiment("[base]\npreset = \"condensenet-86\"\n[sweep]\npreset = [\"condensenet-86\", \"condensenext\"]\n").unwrap();
    assert_eq!(exp.runs[0].config.model_name, "condensenet-86");
    assert_eq!(exp.runs[1].config.model_name, "condensenext");
    assert_eq!(exp.runs[1].config.model.stages, [4, 4, 4]);
}

#[test]
fn every_shipped_experiment_plans() {
    for (file, runs) in [
        ("baseline_vs_cnx.toml", 2),
        ("ablations.toml", 11),
        ("quickstart.toml", 4),
        ("paper_check.toml", 6),
        ("ci.toml", 4),
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("experiments")
            .join(file);
        let exp = Experiment::load(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(exp.runs.len(), runs, "{file}");
    }
    let table = Experiment::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/baseline_vs_cnx.toml"),
    )
    .unwrap();
    for run in &table.runs {
        assert_eq!(run.config.train.epochs, 200);
        assert_eq!(
            run.config.data.dataset,
            ablate::config::DatasetKind::Cifar10
        );
    }
}

/// Every bad file: exit 2, one error line naming the file, line, column and key, and the
/// results dir (holding an earlier experiment's file) untouched.
#[test]
fn bad_files_give_precise_errors_and_touch_nothing() {
    let dir = scratch("bad");
    let results = dir.join("results");
    std::fs::create_dir_all(results.join("x")).unwrap();
    std::fs::write(results.join("x/keep.txt"), "earlier results").unwrap();
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "huge_epochs",
            "[base]\npreset = \"condensenext\"\ntrain.epochs = 99999999999999999999\n",
            &["huge_epochs.toml:3:16", "key `train.epochs`", "out of range"],
        ),
        (
            "huge_seed",
            "seeds = [0, 18446744073709551615]\n[base]\npreset = \"condensenext\"\n",
            &["huge_seed.toml:1:9", "out of range"],
        ),
        (
            "huge_axis_value",
            "[base]\npreset = \"condensenext\"\n[sweep]\n\"model.p\" = [2, 99999999999999999999]\n",
            &["huge_axis_value.toml:4:", "key `model.p`", "out of range"],
        ),
        (
            "huge_retries",
            "retries = 99999999999999999999\n[base]\npreset = \"condensenext\"\n",
            &["huge_retries.toml:1:11", "key `retries`", "out of range"],
        ),
        (
            "base_key_invalid",
            "[base]\npreset = \"condensenext\"\nmodel.p = 40\n[sweep]\n\"model.activation\" = [\"relu\", \"relu6\"]\n",
            &["base_key_invalid.toml:3:11", "key `p`", "p <= cardinality"],
        ),
        (
            "duplicate_seed",
            "seeds = [0, 0]\n[base]\npreset = \"condensenext\"\n[[include]]\nlabel = \"a\"\n\"model.p\" = 2\n",
            &["duplicate_seed.toml:1:13", "key `seeds`", "seed 0 is listed twice"],
        ),
        (
            "exclude_off_axis",
            "[base]\npreset = \"condensenext\"\n[sweep]\n\"model.p\" = [2, 4]\n[[exclude]]\n\"model.p\" = 3\n",
            &["exclude_off_axis.toml:6:13", "key `model.p`", "excludes nothing"],
        ),
        (
            "duplicate_label",
            "[base]\npreset = \"condensenext\"\n[[include]]\nlabel = \"a\"\n\"model.p\" = 2\n\
             [[include]]\nlabel = \"a\"\n\"model.p\" = 8\n",
            &["duplicate_label.toml:6:", "key `label`", "`a` already names", "line 3"],
        ),
        (
            "malformed",
            "seeds = [0, 1\n[base]\npreset = \"condensenext\"\n",
            &["malformed.toml:2:1", "missing comma"],
        ),
        (
            "unknown_axis",
            "[base]\npreset = \"condensenext\"\n[sweep]\n\"model.widht\" = [1, 2]\n",
            &["unknown_axis.toml:4:", "key `model.widht`", "unknown model key `widht`"],
        ),
        (
            "unknown_section",
            "[base]\npreset = \"condensenext\"\n[sweep]\n\"optim.lr\" = [1, 2]\n",
            &["unknown_section.toml:4:", "key `optim.lr`", "unknown section"],
        ),
        (
            "wrong_type",
            "[base]\npreset = \"condensenext\"\n[sweep]\n\"train.epochs\" = [2, \"ten\"]\n",
            &["wrong_type.toml:4:22", "key `train.epochs`", "\"ten\"", "expected an integer like"],
        ),
        (
            "wrong_enum",
            "[base]\npreset = \"condensenext\"\n[sweep]\n\"model.activation\" = [\"relu\", \"gelu\"]\n",
            &["wrong_enum.toml:4:", "key `model.activation`", "gelu"],
        ),
        (
            "empty_axis",
            "[base]\npreset = \"condensenext\"\n[sweep]\n\"model.p\" = []\n",
            &["empty_axis.toml:4:", "key `model.p`", "empty sweep"],
        ),
        (
            "empty_sweep",
            "[base]\npreset = \"condensenext\"\n[sweep]\n",
            &["empty_sweep.toml:3:", "[sweep] is empty"],
        ),
        (
            "not_a_list",
            "[base]\npreset = \"condensenext\"\n[sweep]\n\"model.p\" = 2\n",
            &["not_a_list.toml:4:", "key `model.p`", "list of values"],
        ),
        (
            "zip_lengths",
            "[base]\npreset = \"condensenext\"\n[[zip]]\n\"model.p\" = [1, 2]\n\"train.seed\" = [1, 2, 3]\n",
            &["zip_lengths.toml:5:", "key `train.seed`", "equal lengths"],
        ),
        (
            "invalid_run",
            "[base]\npreset = \"condensenext\"\n[sweep]\n\"model.dropout\" = [0.1, 1.5]\n",
            &["invalid_run.toml:4:", "model.dropout=1.5", "key `dropout`"],
        ),
        (
            "no_model",
            "[sweep]\n\"model.p\" = [4]\n",
            &["no_model.toml:1:1", "base.preset", "missing"],
        ),
        (
            "unknown_top_key",
            "[base]\npreset = \"condensenext\"\n[sweeps]\n",
            &["unknown_top_key.toml:3:", "key `sweeps`", "unknown key"],
        ),
        (
            "exclude_not_axis",
            "[base]\npreset = \"condensenext\"\n[sweep]\n\"model.p\" = [1, 2]\n[[exclude]]\n\"model.loss\" = \"ce\"\n",
            &["exclude_not_axis.toml:6:", "key `model.loss`", "not an axis"],
        ),
    ];
    for (name, text, needles) in cases {
        let file = dir.join(format!("{name}.toml"));
        std::fs::write(&file, text).unwrap();
        for command in ["plan", "run"] {
            let o = ablate(&[
                command,
                file.to_str().unwrap(),
                "--results",
                results.to_str().unwrap(),
            ]);
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "{name} ({command}): {err}");
            assert_eq!(err.lines().count(), 1, "{name}: one line expected: {err}");
            for n in *needles {
                assert!(err.contains(n), "{name}: {n:?} missing from: {err}");
            }
        }
    }
    let mut left: Vec<String> = walk(&results);
    left.sort();
    assert_eq!(
        left,
        ["x/keep.txt"],
        "a bad file wrote into the results dir"
    );
    assert_eq!(
        std::fs::read_to_string(results.join("x/keep.txt")).unwrap(),
        "earlier results"
    );
}

fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out
}

/// `ablate plan` estimates a quickstart run (condensenext as specified, 6 epochs of 320
/// synthetic images) within a factor of 2 of the time `ablate run` then takes for it, and
/// reads the calibration from its cache the second time.
#[test]
fn the_plan_estimates_a_quickstart_run_within_a_factor_of_two() {
    let dir = scratch("estimate");
    let file = dir.join("one.toml");
    std::fs::write(
        &file,
        r#"name = "one"
seeds = [0]
[base]
preset = "condensenext"
train.epochs = 6
train.batch = 32
data.dataset = "synthetic"
data.train_size = 320
data.test_size = 200
"#,
    )
    .unwrap();
    let (results, cache) = (dir.join("results"), dir.join("cache"));
    let plan = || {
        let o = Command::new(env!("CARGO_BIN_EXE_ablate"))
            .args(["plan", file.to_str().unwrap(), "--results"])
            .arg(&results)
            .args(["--devices", "cpu"])
            .env("ABLATE_CACHE_DIR", &cache)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (out, err) = plan();
    assert!(err.contains("calibrating this machine's kernels"), "{err}");
    // The run's line: id, status, epochs, estimate (`NN s` or `N min`), run.
    let line = out
        .lines()
        .find(|l| l.ends_with("train.seed=0"))
        .unwrap_or_else(|| panic!("{out}"));
    let cells: Vec<&str> = line.split_whitespace().collect();
    let estimate = match cells[4] {
        "s" => cells[3].parse::<f64>().unwrap(),
        "min" => 60.0 * cells[3].parse::<f64>().unwrap(),
        _ => panic!("no estimate in {line:?}"),
    };
    assert!(out.contains("1 runs to train, about"), "{out}");
    // Cached, unless other processes loaded the machine while it calibrated (then measured
    // again); the estimate is the same model either way.
    let (again, err) = plan();
    if out.contains(", cached in ") {
        assert!(!err.contains("calibrating"), "cached: {err}");
        assert!(again.contains(line), "{again}");
    }

    let start = std::time::Instant::now();
    let o = ablate(&[
        "run",
        file.to_str().unwrap(),
        "--results",
        results.to_str().unwrap(),
        "--devices",
        "cpu",
        "--reports",
        dir.join("reports").to_str().unwrap(),
    ]);
    let real = start.elapsed().as_secs_f64();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        (0.5..=2.0).contains(&(estimate / real)),
        "estimated {estimate} s, took {real:.1} s"
    );
    // Done runs cost nothing more.
    assert!(plan().0.contains("0 runs to train"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Two experiment files with the same `name` into one results root: the second is refused
/// (exit 2, one line naming both files) and the first's plan and runs stay as they were; the
/// same file edited, or given by another path, is still the same experiment, and so is one
/// whose plan was written before plans recorded their file's canonical path.
#[test]
fn another_file_with_the_same_name_is_refused() {
    let dir = scratch("samename");
    let experiment = |sub: &str, seeds: &str| {
        let file = dir.join(sub).join("exp.toml");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(
            &file,
            format!(
                "name = \"same\"\nseeds = {seeds}\n[base]\npreset = \"condensenext\"\n\
                 model.stages = [1, 1, 1]\ntrain.epochs = 1\ntrain.batch = 32\n\
                 data.dataset = \"synthetic\"\ndata.train_size = 64\ndata.test_size = 32\n"
            ),
        )
        .unwrap();
        file
    };
    let (first, second) = (experiment("a", "[0]"), experiment("b", "[1]"));
    let results = dir.join("results");
    let run = |file: &Path, cwd: &Path| {
        Command::new(env!("CARGO_BIN_EXE_ablate"))
            .arg("run")
            .arg(file)
            .arg("--results")
            .arg(&results)
            .arg("--reports")
            .arg(dir.join("reports"))
            // One thread per run: the quickstart estimate test times a run beside this one.
            .args(["--devices", "cpu:2"])
            .current_dir(cwd)
            .output()
            .unwrap()
    };
    let ok = |o: &std::process::Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    ok(&run(&first, &dir));
    let plan = results.join("same/plan.json");
    let planned = std::fs::read(&plan).unwrap();
    let refused = |o: &std::process::Output, theirs: &Path| {
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        let canonical = |p: &Path| std::fs::canonicalize(p).unwrap().display().to_string();
        for needle in [
            canonical(theirs),
            canonical(&second),
            "same name".to_string(),
        ] {
            assert!(err.contains(&needle), "{needle:?} missing: {err}");
        }
    };
    refused(&run(&second, &dir), &first);
    assert_eq!(std::fs::read(&plan).unwrap(), planned, "plan.json replaced");
    let rows = ablate::report::load_experiment(&results.join("same")).unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].status.is_done(), "{rows:?}");

    // The same file edited (a second seed), and given by a relative path from elsewhere.
    experiment("a", "[0, 2]");
    ok(&run(Path::new("exp.toml"), &dir.join("a")));
    let rows = ablate::report::load_experiment(&results.join("same")).unwrap();
    assert_eq!(rows.len(), 2);

    // A plan written before `source` was recorded: its `file` (here relative to the results'
    // parent) or the experiment.toml beside it tell.
    let mut old: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    old.as_object_mut().unwrap().remove("source").unwrap();
    old["file"] = "a/exp.toml".into();
    std::fs::write(&plan, old.to_string()).unwrap();
    let planned = std::fs::read(&plan).unwrap();
    let o = run(&second, &dir);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("a/exp.toml"));
    assert_eq!(std::fs::read(&plan).unwrap(), planned, "plan.json replaced");
    ok(&run(&first, &dir));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The calibration is read wherever it can be and made only when something is left to price:
/// a cache whose lock cannot be taken (here a directory in its place, as a read-only dir does
/// for a user) is still read (was: ignored, and every plan calibrated), and `plan` of a
/// finished experiment calibrates nothing (was: 8-22 s to print "0 runs").
#[test]
fn the_calibration_is_read_where_it_can_be_and_made_only_when_needed() {
    let (dir, file) = common::tiny_experiment("calibration-reads");
    let results = dir.join("results");
    let plan = |cache: &Path| {
        Command::new(env!("CARGO_BIN_EXE_ablate"))
            .args(["plan"])
            .arg(&file)
            .arg("--results")
            .arg(&results)
            .env("ABLATE_CACHE_DIR", cache)
            .output()
            .unwrap()
    };
    // The tests' own cache gets a calibration (made now if it has none yet).
    let shared = Path::new(common::CACHE);
    let o = plan(shared);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let locked = dir.join("locked-cache");
    std::fs::create_dir_all(locked.join("calibration.lock")).unwrap();
    std::fs::copy(
        shared.join("calibration.json"),
        locked.join("calibration.json"),
    )
    .unwrap();
    let o = plan(&locked);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("calibrating"), "{err}");
    assert!(out.contains("cached in"), "{out}");
    // Finished: nothing to price, nothing calibrated or cached.
    let done = Command::new(env!("CARGO_BIN_EXE_ablate"))
        .args(["run"])
        .arg(&file)
        .arg("--results")
        .arg(&results)
        .arg("--reports")
        .arg(dir.join("reports"))
        .env("ABLATE_CACHE_DIR", shared)
        .output()
        .unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let empty = dir.join("empty-cache");
    std::fs::create_dir_all(&empty).unwrap();
    let o = plan(&empty);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("calibrating"), "{err}");
    assert!(!empty.join("calibration.json").exists());
}

/// `ablate plan --seeds-for DELTA` on a small trained experiment (two models on the built-in
/// digits, three shared seeds): the variant's line has the design and the seeds per arm that the report's
/// `Comparison` computes from the same runs; no finished run, or a DELTA that is not above 0,
/// is a usage error.
#[test]
fn plan_seeds_for_prices_the_seeds_a_difference_needs() {
    use ablate::report::{aggregate::aggregate, compare::Comparison, load::load_experiment};
    let dir = scratch("seeds-for");
    let file = dir.join("seeds.toml");
    std::fs::write(
        &file,
        r#"name = "seeds"
seeds = [0, 1, 2]
[base]
preset = "condensenext"
model.stages = [1, 1, 1]
train.epochs = 1
train.batch = 32
data.dataset = "digits"
data.train_size = 64
[[include]]
label = "baseline"
[[include]]
label = "condensenet"
preset = "condensenet-86"
"#,
    )
    .unwrap();
    let (results, cache) = (dir.join("results"), dir.join("cache"));
    let plan = |delta: &str| {
        Command::new(env!("CARGO_BIN_EXE_ablate"))
            .args(["plan", file.to_str().unwrap(), "--results"])
            .arg(&results)
            .args(["--devices", "cpu", "--seeds-for", delta])
            .env("ABLATE_CACHE_DIR", &cache)
            .output()
            .unwrap()
    };
    // Nothing has run: nothing to plan from.
    let o = plan("1");
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("no runs"));

    let o = Command::new(env!("CARGO_BIN_EXE_ablate"))
        .args(["run", file.to_str().unwrap(), "--results"])
        .arg(&results)
        .arg("--reports")
        .arg(dir.join("reports"))
        .args(["--devices", "cpu"])
        .env("ABLATE_CACHE_DIR", &cache)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    for bad in ["0", "-1", "nan", "x"] {
        let o = plan(bad);
        assert_eq!(o.status.code(), Some(2), "--seeds-for {bad}");
    }
    let o = plan("1.5");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let groups = aggregate(&load_experiment(&results.join("seeds")).unwrap()).unwrap();
    let base = groups.iter().find(|g| g.group == "baseline").unwrap();
    let variant = groups.iter().find(|g| g.group == "condensenet").unwrap();
    let c = Comparison::new(variant, base, "final_top1");
    let line = out
        .lines()
        .find(|l| l.starts_with("condensenet "))
        .unwrap_or_else(|| panic!("no line for the variant:\n{out}"));
    assert!(
        line.contains("paired"),
        "same seeds on the same data: {line}"
    );
    // The two models' seeds spread (2.0 pp here), so a number of seeds is planned.
    assert!(c.std.is_some_and(|s| s > 0.0), "{c:?}");
    let want = match c.seeds_for(1.5) {
        Ok(Some(n)) => n.to_string(),
        Ok(None) => ">100000".into(),
        Err(why) => why.into(),
    };
    assert!(line.contains(&want), "{want} in {line}\n{out}");
    assert!(out.contains("runs to add"), "{out}");
}
