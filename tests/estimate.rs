//! The plan's time model against what it claims: `ablate plan` of the 11-model ablation
//! answers in seconds from an empty cache (it trained each model for minutes before), and its
//! speeds lie within a factor of 2 of `ablate bench`'s measured ones for the quickstart
//! models. One test, so that nothing else in this binary runs beside it.

mod common;
use common::{scratch, stderr, stdout};

use std::process::Command;
use std::time::Instant;

#[test]
fn the_plan_answers_at_once_and_its_speeds_follow_the_bench() {
    let dir = scratch("estimate");
    let cache = dir.join("cache");
    let ablate = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ablate"))
            .args(args)
            .env("ABLATE_CACHE_DIR", &cache)
            .output()
            .unwrap()
    };
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/experiments/ablations.toml");
    let results = dir.join("results");
    let start = Instant::now();
    let o = ablate(&["plan", file, "--results", results.to_str().unwrap()]);
    let seconds = start.elapsed().as_secs_f64();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(seconds < 30.0, "plan took {seconds:.1} s:\n{out}");
    // Every run's row carries a duration (`3 min`, `46.2 h`, `2.1 days`: the unit depends on
    // the machine's speed) in its estimate column.
    let estimated = out
        .lines()
        .filter(|l| l.ends_with("train.seed=0"))
        .filter(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            cells.windows(2).any(|w| {
                w[0].parse::<f64>().is_ok_and(|v| v.is_finite() && v > 0.0)
                    && matches!(w[1], "s" | "min" | "h" | "days")
            })
        })
        .count();
    assert_eq!(estimated, 11, "{out}");
    assert!(!out.contains("inf") && !out.contains('?'), "{out}");
    assert!(out.contains("11 runs to train, about"), "{out}");

    // The quickstart's models at its batch: the time model's speed beside the measured one.
    let o = ablate(&[
        "bench",
        "--models",
        "condensenet-86,condensenext",
        "--batch",
        "32",
        "--steps",
        "1",
        "--latency-runs",
        "1",
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        let measured = row["train_images_per_s"].as_f64().unwrap();
        let estimate = row["estimate_images_per_s"].as_f64().unwrap();
        let ratio = estimate / measured;
        assert!(
            (0.5..=2.0).contains(&ratio),
            "{}: estimated {estimate:.1} img/s, measured {measured:.1}",
            row["model"]
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
