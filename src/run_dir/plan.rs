//! `plan.json`: the runs an experiment planned (id, include label, axis values), written by the
//! scheduler when it starts a session and read by the report.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::io::write_atomic;

/// The plan file in an experiment's results dir.
pub const PLAN_FILE: &str = "plan.json";

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
    /// The experiment file it was planned from.
    pub file: std::path::PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub retries: u32,
    pub runs: Vec<PlanEntry>,
}

impl Plan {
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
