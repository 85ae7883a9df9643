//! The experiment file: parsed with the location of every key and value, so each later error
//! can say `file:line:column: key ...`.
//!
//! ```toml
//! name = "ablations"            # default: the file stem
//! retries = 1                   # failed runs are retried this many times
//! seeds = [0, 1, 2]             # the train.seed axis
//!
//! [base]                        # every run starts here
//! preset = "condensenet-86"     # a preset, or a model TOML file relative to this file
//! train.epochs = 200
//!
//! [sweep]                       # a grid: every combination of the values
//! "model.p" = [2, 4]
//!
//! [[zip]]                       # axes that move together (equal lengths)
//! "model.activation" = ["relu", "relu6"]
//! "model.loss" = ["ce", "focal"]
//!
//! [[include]]                   # an explicit extra point (base + these keys)
//! label = "dsc"
//! "model.spatial_conv" = "dsc"
//!
//! [[exclude]]                   # drop grid points matching all of these keys
//! "model.p" = 2
//! "model.loss" = "focal"
//! ```

use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::config::ConfigError;

/// One `key = value` leaf, with nested tables flattened to a dotted key.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub value: toml::Value,
    /// Byte range of the key in the file.
    pub key_span: Range<usize>,
    /// Byte range of the value in the file.
    pub value_span: Range<usize>,
}

/// A sweep axis: a key and its values, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub key: String,
    pub values: Vec<Spanned<toml::Value>>,
    pub key_span: Range<usize>,
}

/// An explicit point (`[[include]]` / `[[exclude]]`).
#[derive(Debug, Clone, PartialEq)]
pub struct PointSpec {
    pub label: Option<String>,
    pub entries: Vec<Entry>,
    pub span: Range<usize>,
}

/// An experiment file as written, keys located.
#[derive(Debug, Clone)]
pub struct ExperimentFile {
    pub path: PathBuf,
    pub text: String,
    pub name: Option<Spanned<String>>,
    pub description: Option<String>,
    pub retries: Option<Spanned<i64>>,
    pub seeds: Option<Axis>,
    pub base: Vec<Entry>,
    /// `None` when the file has no `[sweep]` table.
    pub sweep: Option<(Vec<Axis>, Range<usize>)>,
    pub zips: Vec<(Vec<Axis>, Range<usize>)>,
    pub include: Vec<PointSpec>,
    pub exclude: Vec<PointSpec>,
}

const TOP_KEYS: &str = "name, description, retries, seeds, base, sweep, zip, include, exclude";

impl ExperimentFile {
    /// Reads and parses `path`; every error names the file, line, column and key.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, text)
    }

    pub fn parse(path: &Path, text: String) -> Result<Self, ConfigError> {
        let root = DeTable::parse(&text).map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |s| locate(&text, s.start));
            ConfigError::Parse {
                file: path.to_path_buf(),
                line,
                column,
                message: e.message().replace('\n', " ").trim().to_string(),
            }
        })?;
        let mut file = Self {
            path: path.to_path_buf(),
            text: text.clone(),
            name: None,
            description: None,
            retries: None,
            seeds: None,
            base: Vec::new(),
            sweep: None,
            zips: Vec::new(),
            include: Vec::new(),
            exclude: Vec::new(),
        };
        for (key, value) in in_file_order(root.get_ref()) {
            let span = value.span();
            match key.get_ref().as_ref() {
                "name" => file.name = Some(Spanned::new(span, file.string(value, "name")?)),
                "description" => file.description = Some(file.string(value, "description")?),
                "retries" => match value.get_ref() {
                    DeValue::Integer(_) => {
                        let n = file.leaf(value, "retries")?.as_integer().unwrap_or(-1);
                        if n < 0 {
                            return Err(file.error(
                                span.start,
                                "retries",
                                "must be an integer >= 0",
                            ));
                        }
                        file.retries = Some(Spanned::new(span, n));
                    }
                    _ => return Err(file.error(span.start, "retries", "must be an integer >= 0")),
                },
                "seeds" => {
                    file.seeds = Some(file.axis("train.seed", key.span(), value, "seeds")?);
                }
                "base" => {
                    let table = file.table(value, "base")?;
                    let mut base = Vec::new();
                    file.flatten("", table, &mut |e| {
                        base.push(e);
                        Ok(())
                    })?;
                    file.base = base;
                }
                "sweep" => {
                    let table = file.table(value, "sweep")?;
                    let axes = file.axes(table, "sweep")?;
                    file.sweep = Some((axes, span));
                }
                "zip" => {
                    for t in file.tables(value, "zip")? {
                        let axes = file.axes(t.get_ref(), "zip")?;
                        if axes.is_empty() {
                            return Err(file.error(
                                t.span().start,
                                "zip",
                                "a [[zip]] group has no axes",
                            ));
                        }
                        file.zips.push((axes, t.span()));
                    }
                }
                section @ ("include" | "exclude") => {
                    let mut points = Vec::new();
                    for t in file.tables(value, section)? {
                        points.push(file.point(t, section == "include")?);
                    }
                    if section == "include" {
                        file.check_labels(&points)?;
                        file.include = points;
                    } else {
                        file.exclude = points;
                    }
                }
                other => {
                    return Err(file.error(
                        key.span().start,
                        other,
                        &format!("unknown key (expected one of: {TOP_KEYS})"),
                    ))
                }
            }
        }
        Ok(file)
    }

    /// The experiment's name: `name`, else the file stem.
    pub fn experiment_name(&self) -> Result<String, ConfigError> {
        let (name, at) = match &self.name {
            Some(n) => (n.get_ref().clone(), n.span().start),
            None => (
                self.path
                    .file_stem()
                    .map_or_else(String::new, |s| s.to_string_lossy().into_owned()),
                0,
            ),
        };
        let ok = !name.is_empty()
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !ok {
            return Err(self.error(
                at,
                "name",
                &format!("`{name}` is not a usable folder name (letters, digits, - _ . only)"),
            ));
        }
        Ok(name)
    }

    /// An error at byte `at`, about `key`.
    pub fn error(&self, at: usize, key: &str, message: &str) -> ConfigError {
        let (line, column) = locate(&self.text, at);
        ConfigError::Parse {
            file: self.path.clone(),
            line,
            column,
            message: format!("key `{key}`: {message}"),
        }
    }

    /// The value at `value`'s span as a plain TOML value. The file parsed, so this fails only
    /// on what TOML's values cannot hold: an integer outside the 64-bit signed range.
    fn leaf(&self, value: &Spanned<DeValue>, key: &str) -> Result<toml::Value, ConfigError> {
        let source = &self.text[value.span()];
        toml::from_str::<toml::Table>(&format!("v = {source}"))
            .ok()
            .and_then(|mut table| table.remove("v"))
            .ok_or_else(|| {
                self.error(
                    value.span().start,
                    key,
                    &format!(
                        "`{}` is out of range: integers must lie in {}..={}",
                        source.trim(),
                        i64::MIN,
                        i64::MAX
                    ),
                )
            })
    }

    fn string(&self, value: &Spanned<DeValue>, key: &str) -> Result<String, ConfigError> {
        match self.leaf(value, key)? {
            toml::Value::String(s) => Ok(s),
            _ => Err(self.error(value.span().start, key, "must be a string")),
        }
    }

    fn table<'a, 'i>(
        &self,
        value: &'a Spanned<DeValue<'i>>,
        key: &str,
    ) -> Result<&'a DeTable<'i>, ConfigError> {
        match value.get_ref() {
            DeValue::Table(t) => Ok(t),
            _ => Err(self.error(value.span().start, key, "must be a table")),
        }
    }

    /// `[[key]]` or `key = [{...}, ...]`.
    fn tables<'a, 'i>(
        &self,
        value: &'a Spanned<DeValue<'i>>,
        key: &str,
    ) -> Result<Vec<Spanned<&'a DeTable<'i>>>, ConfigError> {
        let DeValue::Array(items) = value.get_ref() else {
            return Err(self.error(
                value.span().start,
                key,
                &format!("must be an array of tables ([[{key}]])"),
            ));
        };
        items
            .iter()
            .map(|item| match item.get_ref() {
                DeValue::Table(t) => Ok(Spanned::new(item.span(), t)),
                _ => Err(self.error(item.span().start, key, "each item must be a table")),
            })
            .collect()
    }

    /// Calls `each` for every leaf of `table`, nested tables flattened to dotted keys.
    fn flatten(
        &self,
        prefix: &str,
        table: &DeTable,
        each: &mut dyn FnMut(Entry) -> Result<(), ConfigError>,
    ) -> Result<(), ConfigError> {
        for (key, value) in in_file_order(table) {
            let dotted = if prefix.is_empty() {
                key.get_ref().to_string()
            } else {
                format!("{prefix}.{}", key.get_ref())
            };
            match value.get_ref() {
                DeValue::Table(t) => self.flatten(&dotted, t, each)?,
                _ => each(Entry {
                    value: self.leaf(value, &dotted)?,
                    key: dotted,
                    key_span: key.span(),
                    value_span: value.span(),
                })?,
            }
        }
        Ok(())
    }

    /// The axes of a `[sweep]` or `[[zip]]` table: every leaf must be a non-empty array.
    fn axes(&self, table: &DeTable, section: &str) -> Result<Vec<Axis>, ConfigError> {
        let mut leaves = Vec::new();
        self.flatten("", table, &mut |e| {
            leaves.push(e);
            Ok(())
        })?;
        if leaves.is_empty() && section == "sweep" {
            return Err(ConfigError::Parse {
                file: self.path.clone(),
                line: locate(&self.text, self.text.find("[sweep]").unwrap_or(0)).0,
                column: 1,
                message: "[sweep] is empty: give at least one axis, e.g. \"model.p\" = [2, 4], or remove the table".into(),
            });
        }
        leaves
            .into_iter()
            .map(|e| self.axis_values(e, section))
            .collect()
    }

    fn axis(
        &self,
        key: &str,
        key_span: Range<usize>,
        value: &Spanned<DeValue>,
        shown: &str,
    ) -> Result<Axis, ConfigError> {
        self.axis_values(
            Entry {
                key: key.into(),
                value: self.leaf(value, key)?,
                key_span: key_span.clone(),
                value_span: value.span(),
            },
            shown,
        )
        .map_err(|e| match e {
            ConfigError::Parse {
                file,
                line,
                column,
                message,
            } => ConfigError::Parse {
                file,
                line,
                column,
                message: message.replacen(&format!("`{key}`"), &format!("`{shown}`"), 1),
            },
            other => other,
        })
    }

    fn axis_values(&self, entry: Entry, section: &str) -> Result<Axis, ConfigError> {
        let toml::Value::Array(values) = &entry.value else {
            return Err(self.error(
                entry.value_span.start,
                &entry.key,
                &format!("a {section} axis takes a list of values, e.g. [1, 2]"),
            ));
        };
        if values.is_empty() {
            return Err(self.error(
                entry.value_span.start,
                &entry.key,
                "the axis has no values (an empty sweep); give at least one",
            ));
        }
        // Spans of the elements: re-parse the array to locate each one.
        let spans = element_spans(&self.text, entry.value_span.clone());
        let values = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let span = spans.get(i).cloned().unwrap_or(entry.value_span.clone());
                Spanned::new(span, v.clone())
            })
            .collect();
        Ok(Axis {
            key: entry.key,
            values,
            key_span: entry.key_span,
        })
    }

    /// Include labels name report groups: two points with one label would be averaged as if
    /// they were seeds of one configuration.
    fn check_labels(&self, points: &[PointSpec]) -> Result<(), ConfigError> {
        for (i, p) in points.iter().enumerate() {
            let Some(label) = &p.label else { continue };
            if let Some(first) = points[..i].iter().find(|q| q.label.as_ref() == Some(label)) {
                let (line, _) = locate(&self.text, first.span.start);
                return Err(self.error(
                    p.span.start,
                    "label",
                    &format!(
                        "`{label}` already names the [[include]] point at line {line}; \
                         give each point its own label"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn point(&self, table: Spanned<&DeTable>, include: bool) -> Result<PointSpec, ConfigError> {
        let mut label = None;
        let mut entries = Vec::new();
        self.flatten("", table.get_ref(), &mut |e| {
            if e.key == "label" {
                match (&e.value, include) {
                    (toml::Value::String(s), true) => label = Some(s.clone()),
                    (_, true) => {
                        return Err(self.error(e.value_span.start, "label", "must be a string"))
                    }
                    (_, false) => {
                        return Err(self.error(
                            e.key_span.start,
                            "label",
                            "only [[include]] points have labels",
                        ))
                    }
                }
            } else {
                entries.push(e);
            }
            Ok(())
        })?;
        if entries.is_empty() && !include {
            return Err(self.error(
                table.span().start,
                "exclude",
                "an [[exclude]] point needs at least one key",
            ));
        }
        Ok(PointSpec {
            label,
            entries,
            span: table.span(),
        })
    }
}

/// A table's entries in the order they appear in the file.
fn in_file_order<'a, 'i>(
    table: &'a DeTable<'i>,
) -> Vec<(
    &'a Spanned<toml::de::DeString<'i>>,
    &'a Spanned<DeValue<'i>>,
)> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    entries
}

/// Spans of the elements of the array at `span`.
fn element_spans(text: &str, span: Range<usize>) -> Vec<Range<usize>> {
    match DeValue::parse(&text[span.clone()]) {
        Ok(v) => match v.get_ref() {
            DeValue::Array(items) => items
                .iter()
                .map(|i| i.span().start + span.start..i.span().end + span.start)
                .collect(),
            _ => Vec::new(),
        },
        Err(_) => Vec::new(),
    }
}

/// 1-based line and column of byte `offset` in `text`.
pub fn locate(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}
