//! Typed errors for model configuration: every one names the key (or file) and the rule.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown preset `{0}` (expected condensenet-<N> with N = 6L+2, condensenet-182, condensenet-86-dsc or condensenext)")]
    UnknownPreset(String),
    #[error("key `{key}`: {rule}")]
    Invalid { key: &'static str, rule: String },
    #[error("{}:{line}:{column}: {message}", file.display())]
    Parse {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Context {
        context: String,
        source: Box<ConfigError>,
    },
    #[error("--set {assignment}: {message}")]
    Override { assignment: String, message: String },
}

impl ConfigError {
    pub(crate) fn invalid(key: &'static str, rule: impl Into<String>) -> Self {
        Self::Invalid {
            key,
            rule: rule.into(),
        }
    }

    /// A TOML error located in `source`, as one line `file:line:col: message (key `k`)`.
    pub(crate) fn parse(file: impl Into<PathBuf>, source: &str, err: &toml::de::Error) -> Self {
        let (line, column, key) = match err.span() {
            Some(span) => {
                let before = &source[..span.start.min(source.len())];
                let line = before.matches('\n').count() + 1;
                let line_start = before.rfind('\n').map_or(0, |i| i + 1);
                let column = span.start - line_start + 1;
                let line_text = source[line_start..].lines().next().unwrap_or("");
                let key = line_text.split_once('=').map(|(k, _)| k.trim().to_string());
                (line, column, key)
            }
            None => (1, 1, None),
        };
        let mut message = err.message().replace('\n', " ").trim().to_string();
        if let Some(key) = key.filter(|k| !k.is_empty() && !message.contains(&format!("`{k}`"))) {
            message = format!("key `{key}`: {message}");
        }
        Self::Parse {
            file: file.into(),
            line,
            column,
            message,
        }
    }
}
