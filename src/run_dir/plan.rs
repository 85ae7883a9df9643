//! `plan.json`: the runs an experiment planned (id, include label, axis values), written by the
//! scheduler when it starts a session and read by the report.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::io::write_atomic;

/// The plan file in an experiment's results dir.
pub const PLAN_FILE: &str = "plan.json";
/// The text of the experiment file as last planned, beside the plan.
pub const EXPERIMENT_FILE: &str = "experiment.toml";

/// One planned run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanEntry {
    /// The run id: its run dir's name.
    pub id: String,
    /// The `label` of the `[[include]]` point it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The axis values that make this run, `(key, value as TOML)`, in axis order.
    #[serde(default)]
    pub point: Vec<(String, String)>,
}

/// Every planned run of an experiment, in plan order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub name: String,
    /// The experiment file it was planned from, as given.
    pub file: PathBuf,
    /// `file` as a canonical path: the experiment's identity in its results dir (the same file
    /// edited is the same experiment, another file of the same name is not). Absent in plans
    /// written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub retries: u32,
    pub runs: Vec<PlanEntry>,
}

/// An experiment's results dir holds the plan of another experiment file with the same name:
/// planning into it would hide the other's runs from every report.
#[derive(Debug, thiserror::Error)]
#[error(
    "{}: holds the runs of experiment `{name}` planned from {}, and {} has the same name; give \
     one of them another `name` (or use another --results); if it is the same file moved, \
     delete {} to adopt its runs",
    dir.display(),
    theirs.display(),
    ours.display(),
    dir.join(PLAN_FILE).display()
)]
pub struct OtherExperiment {
    pub dir: PathBuf,
    pub name: String,
    /// The file the plan in `dir` came from.
    pub theirs: PathBuf,
    /// The file being planned.
    pub ours: PathBuf,
}

impl Plan {
    /// Refuses to replace the plan in the results dir `root` with `self` when that plan came
    /// from another experiment file than `self`, whose text is `text`. A plan written before
    /// `source` was recorded counts as the same experiment when its `file` resolves to `self`'s
    /// source or the [`EXPERIMENT_FILE`] beside it is `text`. No readable plan, nothing to
    /// keep apart.
    pub fn check_replaces(&self, root: &Path, text: &[u8]) -> Result<(), OtherExperiment> {
        let Ok(earlier) = Self::read(root) else {
            return Ok(());
        };
        let ours = self.source.as_ref().unwrap_or(&self.file);
        let same = match &earlier.source {
            Some(theirs) => theirs == ours,
            None => {
                std::fs::canonicalize(&earlier.file).is_ok_and(|f| &f == ours)
                    || std::fs::read(root.join(EXPERIMENT_FILE)).is_ok_and(|t| t == text)
            }
        };
        if same {
            return Ok(());
        }
        Err(OtherExperiment {
            dir: root.to_path_buf(),
            name: earlier.name,
            theirs: earlier.source.unwrap_or(earlier.file),
            ours: ours.clone(),
        })
    }

    /// Writes the plan into the experiment's results dir `root`.
    pub fn write(&self, root: &Path) -> anyhow::Result<()> {
        write_atomic(
            &root.join(PLAN_FILE),
            serde_json::to_string_pretty(self)?.as_bytes(),
        )
    }

    /// The plan in the experiment's results dir `root`.
    pub fn read(root: &Path) -> anyhow::Result<Self> {
        let path = root.join(PLAN_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{}: not a plan", path.display()))
    }
}
