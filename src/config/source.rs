//! Where a model comes from: a preset name or a model TOML file, plus `--set key=value` overrides.

use std::path::{Path, PathBuf};

use super::{preset, ConfigError, ModelPatch, ModelSpec, MODEL_KEYS};

/// A model argument as the user gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    Preset(String),
    /// A TOML file with an optional `preset = "..."` and any keys of [`ModelSpec`].
    File(PathBuf),
}

/// A validated model and the name it is reported under.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedModel {
    pub name: String,
    pub spec: ModelSpec,
}

impl ModelSource {
    /// A path ending in `.toml` (or naming an existing file) is a file; anything else a preset.
    pub fn parse(arg: &str) -> Self {
        if arg.ends_with(".toml") || Path::new(arg).is_file() {
            Self::File(PathBuf::from(arg))
        } else {
            Self::Preset(arg.to_string())
        }
    }

    /// The preset or file, then each `key=value` of `sets` in order, then validation.
    pub fn resolve(&self, sets: &[String]) -> Result<ResolvedModel, ConfigError> {
        let (mut name, mut spec) = match self {
            Self::Preset(name) => (name.clone(), preset(name)?),
            Self::File(file) => load_file(file)?,
        };
        for assignment in sets {
            parse_assignment(assignment)?.apply_to(&mut spec);
        }
        if !sets.is_empty() {
            name = format!("{name} [{}]", sets.join(", "));
        }
        spec.validate().map_err(|e| match self {
            Self::File(file) => ConfigError::Context {
                context: file.display().to_string(),
                source: Box::new(e),
            },
            Self::Preset(_) => e,
        })?;
        Ok(ResolvedModel { name, spec })
    }
}

fn load_file(file: &Path) -> Result<(String, ModelSpec), ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    let patch: ModelPatch =
        toml::from_str(&text).map_err(|e| ConfigError::parse(file, &text, &e))?;
    let mut spec = match &patch.preset {
        Some(name) => preset(name).map_err(|e| ConfigError::Parse {
            file: file.to_path_buf(),
            line: line_of_key(&text, "preset"),
            column: 1,
            message: format!("key `preset`: {e}"),
        })?,
        None => {
            // Without a preset the file is the whole model: a forgotten `preset` must not
            // silently become the default network.
            let given = patch.keys();
            let missing: Vec<&str> = MODEL_KEYS
                .iter()
                .copied()
                .filter(|k| !given.contains(k))
                .collect();
            if !missing.is_empty() {
                return Err(ConfigError::Parse {
                    file: file.to_path_buf(),
                    line: 1,
                    column: 1,
                    message: format!(
                        "key `preset`: missing; name a preset to start from (preset = \
                         \"condensenext\") or give every model key (missing: {})",
                        missing.join(", ")
                    ),
                });
            }
            ModelSpec::default()
        }
    };
    let stem = file.file_stem().map_or_else(
        || file.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    );
    patch.apply_to(&mut spec);
    Ok((stem, spec))
}

fn line_of_key(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| l.split_once('=').is_some_and(|(k, _)| k.trim() == key))
        .map_or(1, |i| i + 1)
}

/// `key=value` as one TOML assignment; a bare word value (`activation=relu6`) is taken as a string.
fn parse_assignment(assignment: &str) -> Result<ModelPatch, ConfigError> {
    let err = |message: String| ConfigError::Override {
        assignment: assignment.to_string(),
        message,
    };
    let (key, value) = assignment
        .split_once('=')
        .ok_or_else(|| err("expected key=value".into()))?;
    let (key, value) = (key.trim(), value.trim());
    if key == "preset" {
        return Err(err(
            "the preset is the model argument itself, not a key to set".into(),
        ));
    }
    let parse = |v: &str| toml::from_str::<ModelPatch>(&format!("{key} = {v}"));
    let patch = match parse(value) {
        Ok(p) => p,
        // Valid TOML of the wrong type or key: report it as written.
        Err(e) if toml::from_str::<toml::Table>(&format!("{key} = {value}")).is_ok() => {
            return Err(err(e.message().replace('\n', " ")));
        }
        // Numbers TOML cannot hold (beyond 64 bits) would otherwise read as a bare string.
        Err(_) if looks_numeric(value) => {
            return Err(err(format!(
                "`{value}` is out of range: integers must lie in {}..={}",
                i64::MIN,
                i64::MAX
            )));
        }
        // Not a TOML value: take it as a bare string.
        Err(_) => {
            let quoted = toml::Value::String(value.to_string()).to_string();
            parse(&quoted).map_err(|e| err(e.message().replace('\n', " ")))?
        }
    };
    if patch.keys().is_empty() {
        return Err(err(format!("`{key}` is not a model key")));
    }
    Ok(patch)
}

/// Whether `value` is made of numbers only (digits, signs, `_`, `.`, and array brackets and
/// commas), as `99999999999999999999` or `[4, 99999999999999999999]`.
fn looks_numeric(value: &str) -> bool {
    value.chars().any(|c| c.is_ascii_digit())
        && value
            .chars()
            .all(|c| c.is_ascii_digit() || "+-_.[], ".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Activation;

    #[test]
    fn overrides_apply_in_order() {
        let m = ModelSource::parse("condensenext")
            .resolve(&["p=2".into(), "activation=relu".into()])
            .unwrap();
        assert_eq!(m.spec.p, 2);
        assert_eq!(m.spec.activation, Activation::Relu);
        assert_eq!(m.name, "condensenext [p=2, activation=relu]");
    }

    #[test]
    fn bad_overrides_name_the_key() {
        let e = ModelSource::parse("condensenext")
            .resolve(&["q=2".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--set q=2") && e.contains("unknown field `q`"),
            "{e}"
        );
        let e = ModelSource::parse("condensenext")
            .resolve(&["p=two".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--set p=two") && e.contains("invalid type"),
            "{e}"
        );
        let e = ModelSource::parse("condensenext")
            .resolve(&["p=40".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("key `p`") && e.contains("cardinality"), "{e}");
    }
}
