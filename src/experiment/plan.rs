//! From an experiment file to its runs: the grid of `[sweep]` axes, `[[zip]]` groups and seeds,
//! minus `[[exclude]]`, plus `[[include]]`; each point resolved to a complete, validated
//! [`RunConfig`] whose hash is its [`RunId`].

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::run_dir::{Plan, PlanEntry};

use super::file::{Axis, Entry, ExperimentFile, PointSpec};
use crate::config::{ConfigError, DataConfig, ModelSource, RunConfig, TrainConfig, MODEL_KEYS};

/// A run's identity: the first 12 hex digits of the MD5 of its resolved `config.toml`. Equal
/// configs have equal ids, in any experiment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RunId(String);

impl RunId {
    pub fn of(cfg: &RunConfig) -> Self {
        let hex = crate::io::md5_hex(cfg.to_toml().as_bytes());
        Self(hex[..12].to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One run of an experiment.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedRun {
    pub id: RunId,
    /// The `label` of the `[[include]]` point it came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The axis values that make this run, `key -> value as TOML`, in axis order.
    pub point: Vec<(String, String)>,
    #[serde(skip)]
    pub config: RunConfig,
}

impl PlannedRun {
    /// `[label] key=value ...` of the point, or `(base)` for none.
    pub fn describe(&self) -> String {
        describe(self.label.as_deref(), &self.point)
    }
}

fn describe(label: Option<&str>, point: &[(String, String)]) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(label) = label {
        parts.push(format!("[{label}]"));
    }
    parts.extend(point.iter().map(|(k, v)| format!("{k}={v}")));
    if parts.is_empty() {
        "(base)".into()
    } else {
        parts.join(" ")
    }
}

/// An experiment: its name and every run, in a stable order.
#[derive(Debug, Clone, Serialize)]
pub struct Experiment {
    pub name: String,
    pub file: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A failed run is retried this many times.
    pub retries: u32,
    pub runs: Vec<PlannedRun>,
}

impl Experiment {
    /// What `plan.json` records of this experiment (its one writer is [`Plan::write`]).
    pub fn plan(&self) -> Plan {
        Plan {
            name: self.name.clone(),
            file: self.file.clone(),
            source: std::fs::canonicalize(&self.file).ok(),
            description: self.description.clone(),
            retries: self.retries,
            runs: self
                .runs
                .iter()
                .map(|r| PlanEntry {
                    id: r.id.to_string(),
                    label: r.label.clone(),
                    point: r.point.clone(),
                })
                .collect(),
        }
    }

    /// Reads, expands and resolves `path`. Nothing is written.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = ExperimentFile::read(path)?;
        Self::from_file(&file)
    }

    pub fn from_file(file: &ExperimentFile) -> Result<Self, ConfigError> {
        let name = file.experiment_name()?;
        let retries = file.retries.as_ref().map_or(1, |r| *r.get_ref() as u32);
        let points = expand(file)?;
        let mut runs: Vec<PlannedRun> = Vec::with_capacity(points.len());
        let mut seen: HashMap<RunId, usize> = HashMap::new();
        for point in points {
            let config = resolve(file, &point)?;
            let id = RunId::of(&config);
            let run = PlannedRun {
                id: id.clone(),
                label: point.label.clone(),
                point: point.pairs(),
                config,
            };
            if let Some(&first) = seen.get(&id) {
                return Err(file.error(
                    point.at,
                    "include",
                    &format!(
                        "this point ({}) is the same run as point {} ({}); remove one",
                        run.describe(),
                        first + 1,
                        runs[first].describe()
                    ),
                ));
            }
            seen.insert(id, runs.len());
            runs.push(run);
        }
        Ok(Self {
            name,
            file: file.path.clone(),
            description: file.description.clone(),
            retries,
            runs,
        })
    }

    /// `<results>/<name>`.
    pub fn results_dir(&self, results: &Path) -> PathBuf {
        results.join(&self.name)
    }

    /// `<results>/<name>/<run id>`.
    pub fn run_dir(&self, results: &Path, run: &PlannedRun) -> PathBuf {
        self.results_dir(results).join(run.id.as_str())
    }
}

/// One value of one key, where the file gave it.
#[derive(Debug, Clone)]
struct Assignment {
    key: String,
    value: toml::Value,
    span: Range<usize>,
}

/// A point of the experiment before resolution.
#[derive(Debug, Clone)]
struct Point {
    label: Option<String>,
    assignments: Vec<Assignment>,
    /// Where errors about the point as a whole point.
    at: usize,
}

impl Point {
    /// `(key, value as TOML)` of each assignment.
    fn pairs(&self) -> Vec<(String, String)> {
        self.assignments
            .iter()
            .map(|a| (a.key.clone(), a.value.to_string()))
            .collect()
    }
}

/// One dimension of the grid: a sweep axis, a zip group or the seeds.
struct Dimension<'a> {
    axes: Vec<&'a Axis>,
    len: usize,
}

fn expand(file: &ExperimentFile) -> Result<Vec<Point>, ConfigError> {
    let mut dims: Vec<Dimension> = Vec::new();
    if let Some((axes, _)) = &file.sweep {
        dims.extend(axes.iter().map(|a| Dimension {
            axes: vec![a],
            len: a.values.len(),
        }));
    }
    for (axes, span) in &file.zips {
        let len = axes[0].values.len();
        if let Some(odd) = axes.iter().find(|a| a.values.len() != len) {
            return Err(file.error(
                odd.key_span.start,
                &odd.key,
                &format!(
                    "has {} values but `{}` in the same [[zip]] (line {}) has {len}; zipped axes move together and need equal lengths",
                    odd.values.len(),
                    axes[0].key,
                    super::file::locate(&file.text, span.start).0
                ),
            ));
        }
        dims.push(Dimension {
            axes: axes.iter().collect(),
            len,
        });
    }
    let grid_has_seed = dims
        .iter()
        .flat_map(|d| &d.axes)
        .any(|a| a.key == "train.seed");
    if let Some(seeds) = &file.seeds {
        // A set, not a scan of the ones before: 10^5 seeds were 5 x 10^9 comparisons.
        let mut listed = std::collections::HashSet::with_capacity(seeds.values.len());
        for v in &seeds.values {
            if !listed.insert(value_key(v.get_ref())) {
                return Err(file.error(
                    v.span().start,
                    "seeds",
                    &format!("seed {} is listed twice", v.get_ref()),
                ));
            }
        }
        if grid_has_seed {
            return Err(file.error(
                seeds.key_span.start,
                "seeds",
                "train.seed is also a [sweep] or [[zip]] axis; give the seeds once",
            ));
        }
        dims.push(Dimension {
            axes: vec![seeds],
            len: seeds.values.len(),
        });
    }
    // The same key in two axes is a mistake, not an override.
    let mut keys: HashMap<&str, &Axis> = HashMap::new();
    for axis in dims.iter().flat_map(|d| &d.axes) {
        if keys.insert(&axis.key, axis).is_some() {
            return Err(file.error(axis.key_span.start, &axis.key, "is an axis twice"));
        }
    }
    // Seeds alone make a grid of the base only when no [[include]] point exists; otherwise
    // they multiply the included points (an ablation of explicit points).
    let seeds_only = dims
        .iter()
        .all(|d| d.axes.iter().all(|a| a.key == "train.seed"));
    let mut points = Vec::new();
    if !dims.is_empty() && !(seeds_only && !file.include.is_empty()) {
        let total: usize = dims.iter().map(|d| d.len).product();
        for n in 0..total {
            // Mixed radix, first dimension slowest.
            let mut rest = n;
            let mut index = vec![0; dims.len()];
            for (d, dim) in dims.iter().enumerate().rev() {
                index[d] = rest % dim.len;
                rest /= dim.len;
            }
            let mut assignments = Vec::new();
            for (dim, &i) in dims.iter().zip(&index) {
                for axis in &dim.axes {
                    let v = &axis.values[i];
                    assignments.push(Assignment {
                        key: axis.key.clone(),
                        value: v.get_ref().clone(),
                        span: v.span(),
                    });
                }
            }
            points.push(Point {
                label: None,
                assignments,
                at: dims[0].axes[0].key_span.start,
            });
        }
    }
    for ex in &file.exclude {
        for e in &ex.entries {
            let Some(axis) = keys.get(e.key.as_str()) else {
                return Err(file.error(
                    e.key_span.start,
                    &e.key,
                    "is not an axis of [sweep], [[zip]] or seeds, so no grid point can match it",
                ));
            };
            if !axis
                .values
                .iter()
                .any(|v| same_value(v.get_ref(), &e.value))
            {
                let values: Vec<String> = axis
                    .values
                    .iter()
                    .map(|v| v.get_ref().to_string())
                    .collect();
                return Err(file.error(
                    e.value_span.start,
                    &e.key,
                    &format!(
                        "{} is not a value of its axis ({}), so this [[exclude]] point excludes nothing",
                        e.value,
                        values.join(", ")
                    ),
                ));
            }
        }
        points.retain(|p| !matches(p, ex));
    }
    if !file.exclude.is_empty() && points.is_empty() && file.include.is_empty() {
        return Err(file.error(
            file.exclude[0].span.start,
            "exclude",
            "excludes every point of the grid; the experiment has no runs",
        ));
    }
    for inc in &file.include {
        let base: Vec<Assignment> = inc.entries.iter().map(assignment).collect();
        let sets_seed = base.iter().any(|a| a.key == "train.seed");
        match (&file.seeds, sets_seed) {
            (Some(seeds), false) => {
                for v in &seeds.values {
                    let mut assignments = base.clone();
                    assignments.push(Assignment {
                        key: "train.seed".into(),
                        value: v.get_ref().clone(),
                        span: v.span(),
                    });
                    points.push(Point {
                        label: inc.label.clone(),
                        assignments,
                        at: inc.span.start,
                    });
                }
            }
            _ => points.push(Point {
                label: inc.label.clone(),
                assignments: base,
                at: inc.span.start,
            }),
        }
    }
    if points.is_empty() {
        if file.seeds.is_none() && file.sweep.is_none() && file.zips.is_empty() {
            // No axes at all: the base is the one run.
            points.push(Point {
                label: None,
                assignments: Vec::new(),
                at: 0,
            });
        }
    }
    Ok(points)
}

fn assignment(e: &Entry) -> Assignment {
    Assignment {
        key: e.key.clone(),
        value: e.value.clone(),
        span: e.value_span.clone(),
    }
}

/// True when `p` has every value of the exclude point.
fn matches(p: &Point, ex: &PointSpec) -> bool {
    ex.entries.iter().all(|e| {
        p.assignments
            .iter()
            .any(|a| a.key == e.key && same_value(&a.value, &e.value))
    })
}

/// A key equal for values [`same_value`] finds equal (2 and 2.0 alike).
fn value_key(v: &toml::Value) -> String {
    match v {
        toml::Value::Integer(i) => format!("i{i}"),
        toml::Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => format!("i{}", *f as i64),
        toml::Value::Float(f) => format!("f{}", f.to_bits()),
        other => format!("o{other}"),
    }
}

/// TOML equality, with 2 and 2.0 equal.
fn same_value(a: &toml::Value, b: &toml::Value) -> bool {
    match (a, b) {
        (toml::Value::Integer(i), toml::Value::Float(f))
        | (toml::Value::Float(f), toml::Value::Integer(i)) => *i as f64 == *f,
        _ => a == b,
    }
}

/// The run of `point`: the base's model source, the base's keys, then the point's keys.
fn resolve(file: &ExperimentFile, point: &Point) -> Result<RunConfig, ConfigError> {
    let base: Vec<Assignment> = file.base.iter().map(assignment).collect();
    let all: Vec<&Assignment> = base.iter().chain(&point.assignments).collect();
    let source = all
        .iter()
        .rev()
        .find(|a| a.key == "preset")
        .ok_or_else(|| {
            file.error(
                0,
                "base.preset",
                "missing: every run needs a model, e.g. [base] preset = \"condensenet-86\" (or a model TOML file)",
            )
        })?;
    let toml::Value::String(model_arg) = &source.value else {
        return Err(file.error(
            source.span.start,
            "preset",
            "must be a string: a preset name or a model TOML file",
        ));
    };
    let model_source = match ModelSource::parse(model_arg) {
        ModelSource::File(p) if p.is_relative() => ModelSource::File(
            file.path
                .parent()
                .map_or_else(|| p.clone(), |dir| dir.join(&p)),
        ),
        other => other,
    };
    let model = model_source
        .resolve(&[])
        .map_err(|e| file.error(source.span.start, "preset", &e.to_string()))?;
    let mut tree = toml::Value::try_from(RunConfig {
        model_name: model.name.clone(),
        model: model.spec,
        train: TrainConfig::default(),
        data: DataConfig::default(),
    })
    .expect("a run config always serialises");
    let mut overrides = Vec::new();
    for a in all.iter().filter(|a| a.key != "preset") {
        set_key(file, &mut tree, a)?;
        if let Some(k) = a.key.strip_prefix("model.") {
            // The last value of a key wins; the name shows each key once.
            overrides.retain(|(key, _): &(String, String)| key != k);
            overrides.push((k.to_string(), a.value.to_string()));
        }
    }
    let mut cfg: RunConfig = tree
        .try_into()
        .map_err(|e: toml::de::Error| file.error(point.at, "run", e.message()))?;
    if !overrides.is_empty() {
        let sets: Vec<String> = overrides.iter().map(|(k, v)| format!("{k}={v}")).collect();
        cfg.model_name = format!("{} [{}]", model.name, sets.join(", "));
    }
    cfg.validate().map_err(|e| {
        // At the line that set the offending key (a [base] key, a swept value), else at the
        // point.
        let at = match &e {
            ConfigError::Invalid { key, .. } => all
                .iter()
                .rev()
                .find(|a| a.key == *key || a.key.strip_prefix("model.") == Some(key))
                .map_or(point.at, |a| a.span.start),
            _ => point.at,
        };
        let (line, column) = super::file::locate(&file.text, at);
        ConfigError::Context {
            context: format!(
                "{}:{line}:{column}: run {}",
                file.path.display(),
                describe(point.label.as_deref(), &point.pairs())
            ),
            source: Box::new(e),
        }
    })?;
    Ok(cfg)
}

/// The keys of each section a point may set.
fn section_keys(section: &str) -> Option<Vec<&'static str>> {
    match section {
        "model" => Some(MODEL_KEYS.to_vec()),
        "train" => Some(vec![
            "epochs",
            "batch",
            "lr",
            "momentum",
            "nesterov",
            "weight_decay",
            "seed",
            "focal_beta",
            "focal_gamma",
        ]),
        "data" => Some(vec!["dataset", "train_size", "test_size"]),
        _ => None,
    }
}

/// Sets `a.key` in the config tree, checking the key exists and the section still reads
/// with the new value.
fn set_key(
    file: &ExperimentFile,
    tree: &mut toml::Value,
    a: &Assignment,
) -> Result<(), ConfigError> {
    let unknown = |msg: String| file.error(a.span.start, &a.key, &msg);
    let Some((section, key)) = a.key.split_once('.') else {
        return Err(unknown(
            "unknown key: expected `preset` or a dotted key model.*, train.* or data.*".into(),
        ));
    };
    let Some(keys) = section_keys(section) else {
        return Err(unknown(format!(
            "unknown section `{section}`: expected model.*, train.* or data.*"
        )));
    };
    if !keys.contains(&key) {
        return Err(unknown(format!(
            "unknown {section} key `{key}` (expected one of: {})",
            keys.join(", ")
        )));
    }
    let table = tree
        .get_mut(section)
        .and_then(|t| t.as_table_mut())
        .expect("every section is a table");
    let before = table.insert(key.to_string(), a.value.clone());
    let check = match section {
        "model" => toml::Value::Table(table.clone())
            .try_into::<crate::config::ModelSpec>()
            .map(drop),
        "train" => toml::Value::Table(table.clone())
            .try_into::<TrainConfig>()
            .map(drop),
        _ => toml::Value::Table(table.clone())
            .try_into::<DataConfig>()
            .map(drop),
    };
    if let Err(e) = check {
        let like = before.as_ref().map_or(String::new(), |v| {
            let kind = v.type_str();
            let a = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
                "an"
            } else {
                "a"
            };
            format!("; expected {a} {kind} like {v}")
        });
        match before {
            Some(v) => table.insert(key.to_string(), v),
            None => table.remove(key),
        };
        return Err(file.error(
            a.span.start,
            &a.key,
            &format!("{} (got {}{like})", e.message().trim(), a.value),
        ));
    }
    Ok(())
}
