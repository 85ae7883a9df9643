//! Reports from fixture run dirs in the layout `ablate run` writes: a group of three seeds, a
//! group with a failed run, a partial run and a missing one. Checks the numbers in the tables
//! (means, stds, n/N, deltas, the paper's values), not only that files exist.

mod common;
use common::scratch;

use std::path::{Path, PathBuf};

use ablate::config::{
    preset, Activation, DataConfig, DatasetKind, ModelSpec, RunConfig, TrainConfig,
};
use ablate::cost::Cost;
use ablate::report::{aggregate, load_experiment, tables, write_report, Format, Metric};
use ablate::run_dir::{
    write_metrics, write_summary, EpochRecord, FormCounts, PruningEvent, RunStatus, Summary,
};

struct Fixture<'a> {
    id: &'a str,
    label: &'a str,
    model: &'a str,
    seed: u64,
    status: &'a str,
    /// (test top-1, epoch seconds) per recorded epoch.
    epochs: &'a [(f64, f64)],
    /// deploy FLOPs and params (paper convention); a summary is written when set.
    counts: Option<(u64, u64)>,
    /// The preset with this activation instead of its own.
    activation: Option<Activation>,
}

/// `f`'s run dir; its config trains on `data` for `epochs` (the metrics hold its 2 recorded
/// epochs).
fn write_run(exp: &Path, f: &Fixture, data: &DataConfig, epochs: usize) {
    let dir = exp.join(f.id);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = RunConfig {
        model_name: f.model.into(),
        model: ModelSpec {
            activation: f.activation.unwrap_or(preset(f.model).unwrap().activation),
            ..preset(f.model).unwrap()
        },
        train: TrainConfig {
            epochs,
            seed: f.seed,
            ..TrainConfig::default()
        },
        data: data.clone(),
    };
    std::fs::write(dir.join("config.toml"), cfg.to_toml()).unwrap();
    let status = serde_json::json!({
        "status": f.status, "epochs_done": f.epochs.len(), "epochs": 2, "attempts": 1,
        "device": "cpu", "host": "fixture", "git_commit": "abc", "updated": 1.0, "history": []
    });
    std::fs::write(dir.join("status.json"), status.to_string()).unwrap();
    let records: Vec<EpochRecord> = f
        .epochs
        .iter()
        .enumerate()
        .map(|(i, &(top1, seconds))| EpochRecord {
            epoch: i + 1,
            train_loss: 1.0,
            train_top1: 50.0,
            test_loss: 1.0,
            test_top1: top1,
            lr: 0.1,
            epoch_seconds: seconds,
            data_seconds: 0.0,
            compute_seconds: seconds,
            eval_seconds: 1.0,
            images_per_second: 50_000.0 / seconds,
        })
        .collect();
    write_metrics(&dir.join("metrics.csv"), &records).unwrap();
    if let Some((flops, params)) = f.counts {
        let counts = FormCounts {
            paper: Cost::new(flops, params),
            executed: Cost::new(flops, params),
        };
        let last = records.last().unwrap().clone();
        let summary = Summary {
            model: f.model.into(),
            status: RunStatus::Done,
            device: "cpu".into(),
            epochs: 2,
            best_test_top1: last.test_top1,
            best_epoch: last.epoch,
            deploy_test_top1: last.test_top1 - 0.5,
            deploy_test_loss: 1.0,
            deploy_agreement: 1.0,
            training_form_test_top1: last.test_top1,
            train_seconds: records.iter().map(|r| r.epoch_seconds).sum(),
            median_epoch_seconds: last.epoch_seconds,
            median_images_per_second: last.images_per_second,
            deploy: counts.clone(),
            training: counts,
            deploy_bytes: params * 4 + 1000,
            checkpoint_bytes: 16_787_200,
            train_images: 5000,
            test_images: 1000,
            last,
            schedule: vec![
                PruningEvent {
                    progress: 0.25,
                    epoch: 0.5,
                    structure: "learned-group 3/4 live".into(),
                },
                PruningEvent {
                    progress: 0.5,
                    epoch: 1.0,
                    structure: "learned-dsc converted".into(),
                },
            ],
            peak_rss_training_bytes: 400 << 20,
            peak_rss_bytes: 420 << 20,
        };
        write_summary(&dir, &summary).unwrap();
    }
}

/// The fixture experiment in a scratch dir of its own (`name`: tests run in parallel), its runs
/// configured as the paper trained (CIFAR-10, 200 epochs).
fn fixture(name: &str) -> PathBuf {
    fixture_trained(name, &DataConfig::default(), 200)
}

/// The fixture experiment with runs configured to train on `data` for `epochs`.
fn fixture_trained(name: &str, data: &DataConfig, epochs: usize) -> PathBuf {
    let exp = scratch(name).join("ablations");
    std::fs::create_dir_all(&exp).unwrap();
    let base = Some((65_812_394, 516_202));
    let runs = [
        Fixture {
            id: "b0",
            label: "baseline",
            model: "condensenet-86",
            seed: 0,
            status: "done",
            epochs: &[(80.0, 100.0), (90.0, 110.0)],
            counts: base,
            activation: None,
        },
        Fixture {
            id: "b1",
            label: "baseline",
            model: "condensenet-86",
            seed: 1,
            status: "done",
            epochs: &[(93.0, 120.0), (92.0, 100.0)],
            counts: base,
            activation: None,
        },
        Fixture {
            id: "b2",
            label: "baseline",
            model: "condensenet-86",
            seed: 2,
            status: "done",
            epochs: &[(85.0, 90.0), (94.0, 130.0)],
            counts: base,
            activation: None,
        },
        Fixture {
            id: "r0",
            label: "relu6",
            model: "condensenet-86",
            seed: 0,
            status: "done",
            epochs: &[(70.0, 50.0), (88.0, 50.0)],
            counts: Some((60_000_000, 500_000)),
            activation: Some(Activation::Relu6),
        },
        Fixture {
            id: "r1",
            label: "relu6",
            model: "condensenet-86",
            seed: 1,
            status: "failed",
            epochs: &[(60.0, 50.0)],
            counts: None,
            activation: Some(Activation::Relu6),
        },
        Fixture {
            id: "p0",
            label: "partial",
            model: "condensenext",
            seed: 0,
            status: "running",
            epochs: &[(40.0, 10.0)],
            counts: None,
            activation: None,
        },
    ];
    let mut plan_runs = Vec::new();
    for f in &runs {
        write_run(&exp, f, data, epochs);
        plan_runs.push(serde_json::json!({"id": f.id, "label": f.label, "point": [["train.seed", f.seed.to_string()]]}));
    }
    // Planned but never started: no run dir.
    plan_runs
        .push(serde_json::json!({"id": "m0", "label": "partial", "point": [["train.seed", "1"]]}));
    let plan =
        serde_json::json!({"name": "ablations", "file": "x.toml", "retries": 1, "runs": plan_runs});
    std::fs::write(exp.join("plan.json"), plan.to_string()).unwrap();
    exp
}

#[test]
fn groups_aggregate_seeds_with_counts_means_and_stds() {
    let exp = fixture("groups");
    let rows = load_experiment(&exp).unwrap();
    assert_eq!(rows.len(), 7);
    assert_eq!(rows[6].status, "missing");
    assert_eq!(
        rows[5].final_top1,
        Some(40.0),
        "a partial run keeps its metrics"
    );
    let groups = aggregate(&rows).unwrap();
    let names: Vec<&str> = groups.iter().map(|g| g.group.as_str()).collect();
    assert_eq!(names, ["baseline", "relu6", "partial"]);
    let (b, r, p) = (&groups[0], &groups[1], &groups[2]);
    assert_eq!(
        (b.n, b.total, r.n, r.total, p.n, p.total),
        (3, 3, 1, 2, 0, 2)
    );
    // Final top-1 90, 92, 94: mean 92, sample std 2.
    let f = b.stat("final_top1");
    assert!((f.mean.unwrap() - 92.0).abs() < 1e-12 && (f.std.unwrap() - 2.0).abs() < 1e-12);
    // Best top-1 90, 93, 94.
    assert!((b.stat("best_top1").mean.unwrap() - 277.0 / 3.0).abs() < 1e-12);
    // Median epoch seconds 105, 110, 110 -> mean 108.33.
    assert!((b.stat("epoch_seconds").mean.unwrap() - 325.0 / 3.0).abs() < 1e-9);
    // Total training seconds 210, 220, 220.
    assert!((b.stat("train_seconds").mean.unwrap() - 650.0 / 3.0).abs() < 1e-9);
    // The failed run does not enter the relu6 means; one value has no std.
    assert_eq!(r.stat("final_top1").mean, Some(88.0));
    assert_eq!(r.stat("final_top1").std, None);
    assert_eq!(p.stat("final_top1").mean, None);
    assert_eq!(b.device, "cpu @ fixture");
}

#[test]
fn tables_show_the_numbers_and_the_papers_values() {
    let exp = fixture("tables");
    let groups = aggregate(&load_experiment(&exp).unwrap()).unwrap();
    let t1 = tables::table1(&groups, Metric::Final);
    let col =
        |t: &ablate::report::Table, name: &str| t.columns.iter().position(|c| c == name).unwrap();
    let base = &t1.rows[0];
    assert_eq!(base[col(&t1, "model")], "baseline");
    assert_eq!(base[col(&t1, "n/N")], "3/3");
    assert_eq!(base[col(&t1, "top-1 (%)")], "92.00 ± 2.00");
    assert_eq!(base[col(&t1, "FLOPs (M)")], "65.81 ± 0.00");
    assert_eq!(base[col(&t1, "paper FLOPs (M)")], "65.81");
    assert_eq!(base[col(&t1, "Δ FLOPs (M)")], "+0.00");
    assert_eq!(base[col(&t1, "paper top-1 (%)")], "94.24");
    assert_eq!(base[col(&t1, "Δ top-1 (pp)")], "-2.24");
    assert_eq!(base[col(&t1, "Δ size vs checkpoint (MB)")], "+0.09");
    assert_eq!(t1.rows[1][col(&t1, "n/N")], "1/2");
    let cnx = &t1.rows[2];
    assert_eq!(cnx[col(&t1, "model")], "partial");
    assert_eq!(cnx[col(&t1, "n/N")], "0/2");
    assert_eq!(cnx[col(&t1, "top-1 (%)")], "-");
    assert_eq!(cnx[col(&t1, "paper FLOPs (M)")], "23.80");
    assert_eq!(cnx[col(&t1, "paper params (M)")], "0.16");
    assert_eq!(
        cnx[col(&t1, "Δ FLOPs (M)")],
        "-",
        "no finished run, no difference"
    );
    // The claimed CondenseNeXt counts are in the table's reference values, with the reason.
    assert!(t1
        .notes
        .iter()
        .any(|n| n.contains("23.80M") && n.contains("cannot be reproduced")));

    let t2 = tables::table2(&groups);
    assert_eq!(
        t2.rows[0][col(&t2, "total training time (HH:MM:SS)")],
        "00:03:37"
    );
    assert_eq!(t2.rows[0][col(&t2, "time per epoch (s)")], "108.3 ± 2.9");
    assert_eq!(t2.rows[0][col(&t2, "device")], "cpu @ fixture");
    // Per image: relu6 trains 1000 images/s, the baseline's seeds a median of 477.3, 458.3 and
    // 470.1 (50,000 images at 100 and 110 s, ...): 1000 / 468.57 = 2.13x.
    let speedup = "speed-up vs baseline (per image)";
    assert_eq!(t2.rows[0][col(&t2, speedup)], "1.00x");
    assert_eq!(t2.rows[1][col(&t2, speedup)], "2.13x");
    assert_eq!(
        t2.rows[0][col(&t2, "trained on")],
        "cifar10, 50000 img x 200 ep"
    );
    assert_eq!(t2.rows[1][col(&t2, "CIFAR-10 epoch (s)")], "50");
    // The paper's pair: its times, device and 53.79 / 19.42 = 2.77x.
    assert_eq!(t2.rows[0][col(&t2, "paper total")], "02:59:19");
    assert_eq!(t2.rows[0][col(&t2, "paper per epoch (s)")], "53.79");
    assert_eq!(t2.rows[0][col(&t2, "paper speed-up")], "1.00x");
    assert_eq!(t2.rows[0][col(&t2, "paper device")], "Tesla V100");
    assert_eq!(t2.rows[2][col(&t2, "paper total")], "01:04:48");
    assert_eq!(t2.rows[2][col(&t2, "paper per epoch (s)")], "19.42");
    assert_eq!(t2.rows[2][col(&t2, "paper speed-up")], "2.77x");
    assert_eq!(t2.rows[2][col(&t2, speedup)], "-", "no finished run");

    let ab = tables::ablation(&groups, Metric::Final);
    assert!(ab.title.ends_with("baseline"));
    let relu6 = &ab.rows[1];
    assert_eq!(relu6[col(&ab, "Δ top-1 (pp)")], "-4.00");
    assert_eq!(relu6[col(&ab, "Δ FLOPs")], "-8.8%");
    // Time per image: 468.57 / 1000 - 1.
    assert_eq!(relu6[col(&ab, "Δ time per image")], "-53.1%");
    // The row is the baseline with ReLU6: the paper's claim sits beside it.
    assert_eq!(relu6[col(&ab, "paper's change")], "ReLU6");
    assert_eq!(relu6[col(&ab, "paper Δ top-1 (pp)")], "+0.577");
    assert_eq!(relu6[col(&ab, "paper Δ FLOPs")], "-");
    assert_eq!(ab.rows[0][col(&ab, "paper's change")], "-", "the baseline");
    assert_eq!(ab.rows[2][col(&ab, "paper's change")], "-", "many changes");
    let best = tables::ablation(&groups, Metric::Best);
    assert_eq!(
        best.rows[1][col(&best, "Δ top-1 (pp)")],
        format!("{:+.2}", 88.0 - 277.0 / 3.0)
    );
}

/// Rows not trained as the paper trained get no paper top-1 beside them, in Table I and in the
/// ablation table: the cell says what differs. The counts are compared whatever the data.
#[test]
fn the_papers_top1_stands_only_beside_rows_trained_as_the_paper_trained() {
    let col =
        |t: &ablate::report::Table, name: &str| t.columns.iter().position(|c| c == name).unwrap();
    for (name, data, epochs, trained, why) in [
        (
            "digits",
            DataConfig {
                dataset: DatasetKind::Digits,
                train_size: Some(640),
                test_size: None,
            },
            6,
            "digits, 640 img x 6 ep",
            "n/c: digits, not cifar10",
        ),
        (
            "subset",
            DataConfig {
                train_size: Some(5_000),
                ..DataConfig::default()
            },
            200,
            "cifar10, 5000 img x 200 ep",
            "n/c: 5000 of 50000 images",
        ),
        (
            "short",
            DataConfig::default(),
            6,
            "cifar10, 50000 img x 6 ep",
            "n/c: 6 of 200 epochs",
        ),
    ] {
        let exp = fixture_trained(&format!("unlike-{name}"), &data, epochs);
        let groups = aggregate(&load_experiment(&exp).unwrap()).unwrap();
        let t1 = tables::table1(&groups, Metric::Final);
        let base = &t1.rows[0];
        assert_eq!(base[col(&t1, "trained on")], trained);
        assert_eq!(base[col(&t1, "paper top-1 (%)")], why);
        assert_eq!(base[col(&t1, "Δ top-1 (pp)")], "n/c");
        assert_eq!(base[col(&t1, "top-1 (%)")], "92.00 ± 2.00");
        assert_eq!(base[col(&t1, "paper FLOPs (M)")], "65.81");
        assert_eq!(base[col(&t1, "Δ FLOPs (M)")], "+0.00");
        assert!(!t1.title.contains("CIFAR-10"), "{}", t1.title);
        let t2 = tables::table2(&groups);
        assert_eq!(t2.rows[0][col(&t2, "trained on")], trained);
        let ab = tables::ablation(&groups, Metric::Final);
        assert_eq!(ab.rows[1][col(&ab, "paper's change")], "ReLU6");
        assert_eq!(ab.rows[1][col(&ab, "paper Δ top-1 (pp)")], why);
    }
}

#[test]
fn files_in_every_format_and_a_combined_report() {
    let exp = fixture("files");
    let out = exp.parent().unwrap().join("reports");
    let written = write_report(
        &exp,
        &out,
        &[Format::Md, Format::Csv, Format::Tex],
        Metric::Final,
    )
    .unwrap();
    // 3 tables x 3 formats, report.md, 2 figures and 6 runs' curves as SVG and PNG.
    assert_eq!(written.len(), 10 + 2 * 2 + 6 * 2, "{written:?}");
    for png in written
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
    {
        let bytes = std::fs::read(png).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", png.display());
    }
    let svg = std::fs::read_to_string(out.join("accuracy_vs_flops.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("relu6") && svg.contains("baseline"));
    assert!(
        out.join("curves-p0.png").is_file(),
        "a partial run has curves"
    );
    assert!(!out.join("curves-m0.png").exists());
    // A done run's curves mark its pruning events, listed under the figure.
    let curves = std::fs::read_to_string(out.join("curves-b0.svg")).unwrap();
    assert!(curves.contains("pruning") && curves.contains("conversion"));
    let md = std::fs::read_to_string(out.join("ablations/report.md"))
        .or_else(|_| std::fs::read_to_string(out.join("report.md")))
        .unwrap();
    assert!(
        md.contains("0.50: learned-group 3/4 live, 1.00: learned-dsc converted"),
        "{md}"
    );
    let csv = std::fs::read_to_string(out.join("table1.csv")).unwrap();
    let mut r = csv::Reader::from_reader(csv.as_bytes());
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(&rows[0][7], "92.00 ± 2.00");
    let tex = std::fs::read_to_string(out.join("table1.tex")).unwrap();
    assert!(
        tex.contains("92.00 $\\pm$ 2.00") && tex.contains("\\begin{tabular}"),
        "{tex}"
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("4 of 7 planned runs are done"), "{report}");
    assert!(
        report.contains("| m0 | partial | 1 | missing |"),
        "{report}"
    );
}

/// A garbage row appended to `metrics.csv`, a `summary.json` that is not JSON and a deleted
/// `metrics.csv` each mark their run `damaged` with the file named, and the run leaves every
/// mean: nothing is averaged from garbage.
#[test]
fn damaged_runs_are_flagged_and_left_out_of_the_means() {
    let exp = fixture("damaged");
    let metrics = exp.join("b0/metrics.csv");
    let mut text = std::fs::read_to_string(&metrics).unwrap();
    text += "3,abc,1,2,3,4,5,6,7,8,9\n";
    std::fs::write(&metrics, text).unwrap();
    std::fs::write(exp.join("b1/summary.json"), "{not json").unwrap();
    std::fs::remove_file(exp.join("r0/metrics.csv")).unwrap();
    let rows = load_experiment(&exp).unwrap();
    for (i, file) in [
        (0, "b0/metrics.csv"),
        (1, "b1/summary.json"),
        (3, "r0/metrics.csv"),
    ] {
        assert_eq!(rows[i].status, "damaged", "{}", rows[i].id);
        let problem = rows[i].problem.as_deref().unwrap();
        assert!(problem.contains(file), "{problem}");
    }
    assert_eq!(rows[2].status, "done");
    assert!(rows[2].problem.is_none());
    let groups = aggregate(&rows).unwrap();
    let (b, r) = (&groups[0], &groups[1]);
    // Only b2 (final top-1 94) is left of the baseline; relu6 has no done run left.
    assert_eq!((b.n, b.total, r.n, r.total), (1, 3, 0, 2));
    assert_eq!(b.stat("final_top1").mean, Some(94.0));
    assert_eq!(r.stat("final_top1").mean, None);
    let out = exp.join("report");
    write_report(&exp, &out, &[Format::Md], Metric::Final).unwrap();
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("Damaged runs"), "{report}");
    assert!(report.contains("b1/summary.json"), "{report}");
}

/// A top-1 that is no percentage (250, -5) in `metrics.csv` or `summary.json` marks its run
/// damaged, with the file and the column named, as a NaN does (was: reported as 250.00%).
#[test]
fn a_top1_outside_0_to_100_marks_the_run_damaged() {
    let exp = fixture("percent");
    let replace_last_top1 = |id: &str, value: &str| {
        let path = exp.join(id).join("metrics.csv");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        let last = lines.last_mut().unwrap();
        let mut cells: Vec<&str> = last.split(',').collect();
        cells[4] = value; // epoch, train_loss, train_top1, test_loss, test_top1, ...
        *last = cells.join(",");
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    };
    replace_last_top1("b0", "250");
    replace_last_top1("b1", "-5");
    let summary = exp.join("b2/summary.json");
    let mut s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    s["deploy_test_top1"] = serde_json::json!(101.5);
    std::fs::write(&summary, s.to_string()).unwrap();
    let rows = load_experiment(&exp).unwrap();
    for (i, file, what) in [
        (0, "b0/metrics.csv", "`test_top1` is 250"),
        (1, "b1/metrics.csv", "`test_top1` is -5"),
        (2, "b2/summary.json", "`deploy_test_top1` is 101.5"),
    ] {
        assert_eq!(rows[i].status, "damaged", "{}", rows[i].id);
        let problem = rows[i].problem.as_deref().unwrap();
        assert!(
            problem.contains(file) && problem.contains(what),
            "{problem}"
        );
    }
    assert_eq!(rows[3].status, "done", "r0 is untouched");
}

/// A healthy run's files pass the checks: nothing in the fixture is flagged.
#[test]
fn healthy_runs_are_not_flagged() {
    let rows = load_experiment(&fixture("healthy")).unwrap();
    assert!(rows.iter().all(|r| r.problem.is_none()), "{rows:?}");
}

/// Three `ablate report` at once into one output dir all succeed, and leave no temp file.
#[test]
fn concurrent_reports_into_one_dir_all_succeed() {
    let exp = fixture("concurrent");
    let results = exp.parent().unwrap().to_path_buf();
    let out = results.join("reports");
    let children: Vec<_> = (0..3)
        .map(|_| {
            std::process::Command::new(env!("CARGO_BIN_EXE_ablate"))
                .args(["report", "--results"])
                .arg(&results)
                .arg("--out")
                .arg(&out)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let leftovers: Vec<String> = std::fs::read_dir(out.join("ablations"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(out.join("ablations/report.md").is_file());
}

/// The cell of `table` in `row` under the column named `col`.
fn cell(table: &ablate::report::Table, row: usize, col: &str) -> String {
    let c = table.columns.iter().position(|x| x == col).unwrap();
    table.rows[row][c].clone()
}

/// The ablation table's 95% interval and Welch p-value against the baseline, for a fixture
/// with known seeds (values from scipy's `ttest_ind(equal_var=False)` and `t.ppf`); with one
/// finished seed it says that no interval can be given.
#[test]
fn the_ablation_table_says_which_differences_are_real() {
    let exp = fixture("welch");
    let table = tables::ablation(
        &aggregate(&load_experiment(&exp).unwrap()).unwrap(),
        Metric::Final,
    );
    // relu6 has one finished seed (r1 failed).
    assert_eq!(
        cell(&table, 1, "95% CI (pp)"),
        "needs 2+ seeds each (1 vs 3)"
    );
    assert_eq!(cell(&table, 0, "95% CI (pp)"), "-", "the baseline row");
    // r1 finished at 98: relu6 = [88, 98] against the baseline's [90, 92, 94].
    write_run(
        &exp,
        &Fixture {
            id: "r1",
            label: "relu6",
            model: "condensenet-86",
            seed: 1,
            status: "done",
            epochs: &[(60.0, 50.0), (98.0, 50.0)],
            counts: Some((60_000_000, 500_000)),
            activation: Some(Activation::Relu6),
        },
        &DataConfig::default(),
        200,
    );
    let table = tables::ablation(
        &aggregate(&load_experiment(&exp).unwrap()).unwrap(),
        Metric::Final,
    );
    assert_eq!(cell(&table, 1, "Δ top-1 (pp)"), "+1.00");
    assert_eq!(cell(&table, 1, "95% CI (pp)"), "[-50.95, +52.95] n.s.");
    assert_eq!(
        cell(&table, 1, "test"),
        "Welch",
        "seeds 0, 1 against 0, 1, 2"
    );
    assert_eq!(cell(&table, 1, "p"), "0.875");
    // One test in the table: Holm leaves it as it is; the partial row has none.
    assert_eq!(cell(&table, 1, "p (Holm)"), "0.875");
    assert_eq!(cell(&table, 2, "p (Holm)"), "-");
    // statsmodels: pooled std 4.39697 x TTestIndPower().solve_power(nobs1=2, ratio=1.5,
    // power=0.8) = 17.0826; the fewest n with TTestIndPower().power(1 / 4.39697, n) >= 0.8: 305.
    assert_eq!(cell(&table, 1, "detectable Δ (pp)"), "17.08");
    assert_eq!(cell(&table, 1, "seeds/arm for Δ"), "305");
    assert_eq!(cell(&table, 0, "seeds/arm for Δ"), "-", "the baseline row");
}

/// Seeds that all land on the same top-1 on both sides (common: 64 test images move top-1 in
/// 1.5625 pp steps) give no test, never `p = 0.000` and a zero-width "significant" interval;
/// with one side constant the test is still defined (scipy's `ttest_ind([58, 61], [50, 50,
/// 50], equal_var=False)`: p 0.0997, interval [-9.559, 28.559]).
#[test]
fn no_spread_on_either_side_gives_no_test() {
    let exp = fixture("nospread");
    let finish = |id: &str, label: &str, seed: u64, top1: f64| {
        write_run(
            &exp,
            &Fixture {
                id,
                label,
                model: "condensenet-86",
                seed,
                status: "done",
                epochs: &[(40.0, 50.0), (top1, 50.0)],
                counts: Some((60_000_000, 500_000)),
                activation: (label == "relu6").then_some(Activation::Relu6),
            },
            &DataConfig::default(),
            200,
        )
    };
    for (id, seed) in [("b0", 0), ("b1", 1), ("b2", 2)] {
        finish(id, "baseline", seed, 50.0);
    }
    finish("r0", "relu6", 0, 60.0);
    finish("r1", "relu6", 1, 60.0);
    let table = || {
        tables::ablation(
            &aggregate(&load_experiment(&exp).unwrap()).unwrap(),
            Metric::Final,
        )
    };
    let t = table();
    assert_eq!(cell(&t, 1, "Δ top-1 (pp)"), "+10.00");
    assert_eq!(cell(&t, 1, "95% CI (pp)"), "no test: neither group varies");
    assert_eq!(cell(&t, 1, "p"), "-");
    assert_eq!(cell(&t, 1, "p (Holm)"), "-");
    // No spread: nothing to plan with.
    assert_eq!(cell(&t, 1, "detectable Δ (pp)"), "-");
    assert_eq!(cell(&t, 1, "seeds/arm for Δ"), "-");
    finish("r0", "relu6", 0, 58.0);
    finish("r1", "relu6", 1, 61.0);
    let t = table();
    assert_eq!(cell(&t, 1, "Δ top-1 (pp)"), "+9.50");
    assert_eq!(cell(&t, 1, "95% CI (pp)"), "[-9.56, +28.56] n.s.");
    assert_eq!(cell(&t, 1, "p"), "0.100");
    // statsmodels: pooled std 1.22474 x solve_power(nobs1=2, ratio=1.5) = 4.7582; 9.5 pp is
    // 7.76 standard deviations, which 2 seeds an arm detect.
    assert_eq!(cell(&t, 1, "detectable Δ (pp)"), "4.76");
    assert_eq!(cell(&t, 1, "seeds/arm for Δ"), "2");
}

/// A `summary.json` of an older layout, without fields the report does not use
/// (`training_form_test_top1`, `deploy_test_loss`, ...), is read: the run keeps counting.
#[test]
fn summaries_without_the_fields_the_report_does_not_use_count() {
    let exp = fixture("oldsummary");
    let path = exp.join("b0/summary.json");
    let mut summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let fields = summary.as_object_mut().unwrap();
    for unused in [
        "training_form_test_top1",
        "deploy_test_loss",
        "deploy_agreement",
        "training",
        "train_images",
        "test_images",
        "schedule",
    ] {
        fields.remove(unused).unwrap();
    }
    std::fs::write(&path, summary.to_string()).unwrap();
    let rows = load_experiment(&exp).unwrap();
    assert_eq!(rows[0].status, "done", "{:?}", rows[0].problem);
    assert!(rows[0].problem.is_none());
    assert_eq!(rows[0].deploy_top1, Some(89.5));
    assert_eq!(rows[0].flops_paper, Some(65_812_394.0));
    let groups = aggregate(&rows).unwrap();
    assert_eq!((groups[0].n, groups[0].total), (3, 3));
}

/// One run's `config.toml` missing a key, with an unknown key, or garbage flags that run
/// damaged (the file named) and the report of the others is still written.
#[test]
fn a_bad_config_damages_its_run_not_the_report() {
    let exp = fixture("badconfig");
    let edit = |id: &str, f: &dyn Fn(String) -> String| {
        let path = exp.join(id).join("config.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, f(text)).unwrap();
    };
    edit("b0", &|t| {
        t.lines()
            .filter(|l| !l.starts_with("model_name"))
            .collect::<Vec<_>>()
            .join("\n")
    });
    edit("b1", &|t| format!("colour = \"blue\"\n{t}"));
    edit("r0", &|_| "\u{0}\u{1}garbage [[".into());
    let rows = load_experiment(&exp).unwrap();
    for i in [0, 1, 3] {
        assert_eq!(rows[i].status, "damaged", "{}", rows[i].id);
        let problem = rows[i].problem.as_deref().unwrap();
        assert!(
            problem.contains(&format!("{}/config.toml", rows[i].id)),
            "{problem}"
        );
    }
    assert!(rows[0].problem.as_deref().unwrap().contains("model_name"));
    assert!(rows[1].problem.as_deref().unwrap().contains("colour"));
    assert_eq!(rows[2].status, "done");
    let out = exp.join("report");
    write_report(&exp, &out, &[Format::Md], Metric::Final).unwrap();
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("Damaged runs"), "{report}");
    assert!(report.contains("b1/config.toml"), "{report}");
}

/// A report is written whole or not at all: one that fails leaves the earlier report as it
/// was (was: half new, half old on a full disk) and no partial folder beside it; one that
/// succeeds replaces the folder, leaving nothing of the old one.
#[test]
fn a_report_replaces_the_old_one_whole_or_not_at_all() {
    let exp = fixture("whole");
    let out = exp.parent().unwrap().join("reports/ablations");
    write_report(&exp, &out, &[Format::Md, Format::Csv], Metric::Final).unwrap();
    std::fs::write(out.join("stale.txt"), "from an older report").unwrap();
    let snapshot = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    };
    let before = snapshot(&out);
    // The experiment's plan becomes unreadable: the report fails, the old one stays.
    let plan = std::fs::read(exp.join("plan.json")).unwrap();
    std::fs::write(exp.join("plan.json"), "{\"t").unwrap();
    assert!(write_report(&exp, &out, &[Format::Md, Format::Csv], Metric::Final).is_err());
    assert_eq!(snapshot(&out), before);
    let beside: Vec<String> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(beside, ["ablations"], "no partial folder left");
    // Readable again: the new report replaces the folder whole.
    std::fs::write(exp.join("plan.json"), plan).unwrap();
    let written = write_report(&exp, &out, &[Format::Md], Metric::Final).unwrap();
    assert!(written.iter().all(|p| p.starts_with(&out) && p.exists()));
    assert!(!out.join("stale.txt").exists());
    assert!(
        !out.join("table1.csv").exists(),
        "only what this report wrote"
    );
    assert!(out.join("report.md").is_file());
}

/// One experiment whose files cannot be read (`plan.json` holding `{"t`) is named and skipped;
/// the others are reported and the command succeeds (was: exit 1, nothing written).
#[test]
fn one_unreadable_experiment_stops_no_other() {
    let exp = fixture("skip");
    let results = exp.parent().unwrap().to_path_buf();
    let broken = results.join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("plan.json"), "{\"t").unwrap();
    let out = results.parent().unwrap().join("skip-reports");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ablate"))
        .args(["report", "--no-tensorboard", "--results"])
        .arg(&results)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("broken") && err.contains("skipped"), "{err}");
    assert!(out.join("ablations/report.md").is_file());
    assert!(!out.join("broken").exists());
}
