//! Generated malformed experiment and model files (random keys and types, huge and negative
//! numbers, truncations, deleted and repeated lines) fed to `ablate plan`, `run` and `count`:
//! every one is accepted or refused with exit 2 and one line on stderr, never a panic or an
//! abort, and a refused `run` leaves the results dir byte for byte as it was.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ablate::rng::Rng;

const EXPERIMENT: &str = r#"name = "fz"
seeds = [0, 1]
retries = 1
[base]
preset = "condensenext"
model.stages = [1, 1, 1]
train.epochs = 1
data.dataset = "synthetic"
[sweep]
"model.p" = [2, 4]
[[include]]
label = "x"
"model.activation" = "relu"
[[exclude]]
"model.p" = 2
"train.seed" = 1
"#;

const MODEL: &str = "preset = \"condensenext\"\np = 2\nstages = [1, 1, 1]\ngrowth = [8, 8, 8]\n";

/// Values of every TOML type, and numbers at and beyond the edges.
const TOKENS: &[&str] = &[
    "99999999999999999999",
    "18446744073709551615",
    "9223372036854775807",
    "-9223372036854775808",
    "4611686018427387904",
    "-1",
    "0",
    "3.5",
    "-0.0",
    "1e308",
    "nan",
    "inf",
    "\"\"",
    "\"x\"",
    "\"relu6\"",
    "[]",
    "[1, \"a\"]",
    "[[1]]",
    "[0, 0]",
    "[4611686018427387904, 8, 8]",
    "[99999999999999999999]",
    "true",
    "{ a = 1 }",
    "1979-05-27",
];

const KEYS: &[&str] = &[
    "name",
    "seeds",
    "retries",
    "model.p",
    "model.stages",
    "model.growth",
    "model.bottleneck",
    "model.classes",
    "model.cardinality",
    "model.dropout",
    "train.epochs",
    "train.seed",
    "train.batch",
    "train.lr",
    "data.train_size",
    "label",
    "preset",
    "p",
    "stages",
    "growth",
    "bottleneck",
    "classes",
    "spatial_groups",
    "head_keep",
    "nonsense",
    "\"model.p\"",
];

const HEADERS: &[&str] = &[
    "[base]",
    "[sweep]",
    "[[zip]]",
    "[[include]]",
    "[[exclude]]",
    "[x]",
];

fn pick<'a>(rng: &mut Rng, items: &[&'a str]) -> &'a str {
    items[(rng.next_u64() % items.len() as u64) as usize]
}

/// One random change to `text`.
fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    if lines.is_empty() {
        return format!("{} = {}\n", pick(rng, KEYS), pick(rng, TOKENS));
    }
    let at = (rng.next_u64() % lines.len() as u64) as usize;
    match rng.next_u64() % 6 {
        // Truncate anywhere.
        0 => {
            let cut = (rng.next_u64() % text.len() as u64) as usize;
            return text[..cut].to_string();
        }
        // A value of another type or size.
        1 => {
            if let Some((key, _)) = lines[at].split_once('=') {
                lines[at] = format!("{key}= {}", pick(rng, TOKENS));
            }
        }
        // A new key, real or not, with any value.
        2 => lines.insert(at, format!("{} = {}", pick(rng, KEYS), pick(rng, TOKENS))),
        // A section header anywhere.
        3 => lines.insert(at, pick(rng, HEADERS).to_string()),
        4 => {
            lines.remove(at);
        }
        _ => {
            let line = lines[at].clone();
            lines.insert(at, line);
        }
    }
    lines.join("\n") + "\n"
}

fn ablate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ablate"))
        .args(args)
        .env_remove("RAYON_NUM_THREADS")
        // Never the user's calibration cache (a calibration under the tests' load spoils it).
        .env(
            "ABLATE_CACHE_DIR",
            concat!(env!("CARGO_TARGET_TMPDIR"), "/ablate-cache"),
        )
        .output()
        .unwrap()
}

/// Accepted, or a usage error of one line: never a panic (101) or an abort.
fn assert_accepted_or_refused(o: &Output, case: &str) -> bool {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{case}\n{err}");
    match o.status.code() {
        Some(0) => true,
        Some(2) => {
            assert_eq!(err.lines().count(), 1, "{case}\n{err}");
            assert!(err.starts_with("error: "), "{case}\n{err}");
            false
        }
        other => panic!("{case}\nexit {other:?}\n{err}"),
    }
}

/// Every file under `root` with its bytes, sorted.
fn snapshot(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.push((path, bytes));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn generated_malformed_files_never_panic() {
    let dir = std::env::temp_dir().join(format!("ablate-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let results = dir.join("results");
    std::fs::create_dir_all(results.join("fz")).unwrap();
    std::fs::write(results.join("fz/earlier.txt"), "earlier results").unwrap();
    let before = snapshot(&results);
    let mut rng = Rng::new(20261130);
    let (mut refused, mut cases) = (0, 0);
    for i in 0..240 {
        let mut text = EXPERIMENT.to_string();
        for _ in 0..1 + rng.next_u64() % 3 {
            text = mutate(&mut rng, &text);
        }
        let file = dir.join(format!("exp{i}.toml"));
        std::fs::write(&file, &text).unwrap();
        let case = format!("case {i}:\n{text}");
        let f = file.to_str().unwrap();
        cases += 1;
        if !assert_accepted_or_refused(&ablate(&["plan", f, "--no-estimate"]), &case) {
            refused += 1;
            // What plan refuses, run refuses too, touching nothing.
            let o = ablate(&["run", f, "--results", results.to_str().unwrap()]);
            assert!(
                !assert_accepted_or_refused(&o, &case),
                "{case}: run accepted it"
            );
            assert!(snapshot(&results) == before, "{case}: results changed");
        }
    }
    for i in 0..120 {
        let mut text = MODEL.to_string();
        for _ in 0..1 + rng.next_u64() % 3 {
            text = mutate(&mut rng, &text);
        }
        let file = dir.join(format!("model{i}.toml"));
        std::fs::write(&file, &text).unwrap();
        cases += 1;
        let o = ablate(&["count", file.to_str().unwrap()]);
        if !assert_accepted_or_refused(&o, &format!("model case {i}:\n{text}")) {
            refused += 1;
        }
    }
    // The generator must mostly make bad files, or the test proves little.
    assert!(refused * 2 > cases, "only {refused} of {cases} refused");
    std::fs::remove_dir_all(&dir).unwrap();
}
