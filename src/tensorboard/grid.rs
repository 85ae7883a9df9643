//! An experiment's grid as the HParams dashboard shows it: one hyperparameter per key the plan
//! sets (its axes, zip groups, seeds and include points), plus `label` when include points are
//! labelled, each typed from every value the plan gives it; and each run's values.

use super::hparams::{DataType, HParamInfo, HParamValue};
use crate::run_dir::{Plan, PlanEntry};

/// The hyperparameter holding an include point's `label`.
pub const LABEL: &str = "label";

/// The columns of an experiment's table.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    columns: Vec<Column>,
}

#[derive(Debug, Clone, PartialEq)]
struct Column {
    key: String,
    data_type: DataType,
    /// Every value the plan gives the key, in plan order, without repeats.
    domain: Vec<HParamValue>,
}

/// A value of a plan as TOML text (`"relu6"`, `2`, `0.1`, `true`, `[1, 2]`), parsed; `None`
/// when it is not TOML (plan.json edited by hand): then it is taken as text.
fn parse(text: &str) -> Option<toml::Value> {
    let table: toml::Table = format!("v = {text}").parse().ok()?;
    table.get("v").cloned()
}

/// `text` as a value of a column of type `data_type`: a string as itself, any other value as
/// its TOML text.
fn typed(text: &str, data_type: DataType) -> HParamValue {
    match (parse(text), data_type) {
        (Some(toml::Value::Integer(v)), DataType::Float64) => HParamValue::Number(v as f64),
        (Some(toml::Value::Float(v)), DataType::Float64) => HParamValue::Number(v),
        (Some(toml::Value::Boolean(v)), DataType::Bool) => HParamValue::Bool(v),
        (Some(toml::Value::String(s)), _) => HParamValue::Text(s),
        _ => HParamValue::Text(text.to_string()),
    }
}

/// The type every one of `texts` fits: numbers, bools, else text.
fn data_type<'a>(mut texts: impl Iterator<Item = &'a str>) -> DataType {
    let kinds: Vec<Option<toml::Value>> = texts.by_ref().map(parse).collect();
    let all = |f: fn(&toml::Value) -> bool| kinds.iter().all(|k| k.as_ref().is_some_and(f));
    if all(|v| matches!(v, toml::Value::Integer(_) | toml::Value::Float(_))) {
        DataType::Float64
    } else if all(|v| matches!(v, toml::Value::Boolean(_))) {
        DataType::Bool
    } else {
        DataType::String
    }
}

impl Grid {
    /// The grid of `plan`: its keys in the order they first appear.
    pub fn of(plan: &Plan) -> Self {
        let mut keys: Vec<&str> = Vec::new();
        if plan.runs.iter().any(|r| r.label.is_some()) {
            keys.push(LABEL);
        }
        for (key, _) in plan.runs.iter().flat_map(|r| &r.point) {
            if !keys.contains(&key.as_str()) {
                keys.push(key);
            }
        }
        let columns = keys
            .into_iter()
            .map(|key| {
                let texts: Vec<String> = plan.runs.iter().filter_map(|r| text_of(r, key)).collect();
                let data_type = if key == LABEL {
                    DataType::String
                } else {
                    data_type(texts.iter().map(String::as_str))
                };
                let mut domain: Vec<HParamValue> = Vec::new();
                for t in &texts {
                    let v = typed_in(t, key, data_type);
                    if !domain.contains(&v) {
                        domain.push(v);
                    }
                }
                Column {
                    key: key.to_string(),
                    data_type,
                    domain,
                }
            })
            .collect();
        Self { columns }
    }

    /// The hyperparameters of the experiment record.
    pub fn infos(&self) -> Vec<HParamInfo> {
        self.columns
            .iter()
            .map(|c| HParamInfo {
                name: c.key.clone(),
                description: if c.key == LABEL {
                    "the label of the run's [[include]] point".into()
                } else {
                    format!("`{}` as the experiment file sets it for the run", c.key)
                },
                data_type: c.data_type,
                domain: c.domain.clone(),
            })
            .collect()
    }

    /// The values of `run` (an entry of the plan this grid is of), in column order; a key the
    /// run's point does not set has no value (the run has the base config's).
    pub fn values(&self, run: &PlanEntry) -> Vec<(String, HParamValue)> {
        self.columns
            .iter()
            .filter_map(|c| {
                let text = text_of(run, &c.key)?;
                Some((c.key.clone(), typed_in(&text, &c.key, c.data_type)))
            })
            .collect()
    }
}

/// The value `run` gives `key` as the plan writes it (TOML text; the label as a TOML string).
fn text_of(run: &PlanEntry, key: &str) -> Option<String> {
    if key == LABEL {
        return run
            .label
            .as_ref()
            .map(|l| toml::Value::String(l.clone()).to_string());
    }
    run.point
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

fn typed_in(text: &str, key: &str, data_type: DataType) -> HParamValue {
    if key == LABEL {
        return typed(text, DataType::String);
    }
    typed(text, data_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, label: Option<&str>, point: &[(&str, &str)]) -> PlanEntry {
        PlanEntry {
            id: id.into(),
            label: label.map(str::to_string),
            point: point
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn plan(runs: Vec<PlanEntry>) -> Plan {
        Plan {
            name: "x".into(),
            file: "x.toml".into(),
            source: None,
            description: None,
            retries: 1,
            runs,
        }
    }

    #[test]
    fn a_sweep_is_typed_per_key() {
        let p = plan(vec![
            entry(
                "a",
                None,
                &[
                    ("preset", "\"condensenet-86\""),
                    ("model.p", "1"),
                    ("train.seed", "0"),
                ],
            ),
            entry(
                "b",
                None,
                &[
                    ("preset", "\"condensenext\""),
                    ("model.p", "2.5"),
                    ("train.seed", "0"),
                ],
            ),
        ]);
        let g = Grid::of(&p);
        let infos = g.infos();
        let names: Vec<&str> = infos.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["preset", "model.p", "train.seed"]);
        assert_eq!(infos[0].data_type, DataType::String);
        assert_eq!(
            infos[0].domain,
            [
                HParamValue::Text("condensenet-86".into()),
                HParamValue::Text("condensenext".into())
            ]
        );
        assert_eq!(infos[1].data_type, DataType::Float64);
        assert_eq!(infos[2].domain, [HParamValue::Number(0.0)], "one value");
        assert_eq!(
            g.values(&p.runs[1]),
            [
                ("preset".into(), HParamValue::Text("condensenext".into())),
                ("model.p".into(), HParamValue::Number(2.5)),
                ("train.seed".into(), HParamValue::Number(0.0)),
            ]
        );
    }

    /// Include points: a label column, keys only some runs set, a key with numbers and
    /// strings (`cardinality = "W"` beside `2`) as text.
    #[test]
    fn include_points_have_labels_and_mixed_keys_are_text() {
        let p = plan(vec![
            entry("a", Some("baseline"), &[]),
            entry(
                "b",
                Some("learned-dsc p=2"),
                &[("model.cardinality", "\"W\""), ("model.p", "2")],
            ),
            entry("c", Some("cardinality 2"), &[("model.cardinality", "2")]),
            entry("d", Some("relu6 on"), &[("model.relu6", "true")]),
        ]);
        let g = Grid::of(&p);
        let infos = g.infos();
        let names: Vec<&str> = infos.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(
            names,
            [LABEL, "model.cardinality", "model.p", "model.relu6"]
        );
        assert_eq!(infos[1].data_type, DataType::String);
        assert_eq!(
            infos[1].domain,
            [HParamValue::Text("W".into()), HParamValue::Text("2".into())]
        );
        assert_eq!(infos[3].data_type, DataType::Bool);
        assert_eq!(
            g.values(&p.runs[0]),
            [(LABEL.into(), HParamValue::Text("baseline".into()))]
        );
        assert_eq!(
            g.values(&p.runs[2]),
            [
                (LABEL.into(), HParamValue::Text("cardinality 2".into())),
                ("model.cardinality".into(), HParamValue::Text("2".into())),
            ]
        );
        assert_eq!(g.values(&p.runs[3])[1].1, HParamValue::Bool(true));
    }
}
