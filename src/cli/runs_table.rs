//! The per-run table that `ablate plan` and `ablate status` print: a line per run with its id,
//! status and epochs, then the command's own columns, then the run's description. Columns have
//! fixed widths, two spaces apart, so that each line prints as soon as its run is read.

use std::path::{Path, PathBuf};

use crate::experiment::{Experiment, PlannedRun};
use crate::run_dir::{read_status, StatusRecord, STATUS_FILE};

/// A run of an experiment and what its run dir says about it.
pub struct RunRow<'a> {
    pub run: &'a PlannedRun,
    pub dir: PathBuf,
    /// Its `status.json`; `None` when there is none or it cannot be read.
    pub status: Option<StatusRecord>,
}

impl<'a> RunRow<'a> {
    /// Reads `run`'s dir under `results`.
    pub fn read(exp: &Experiment, results: &Path, run: &'a PlannedRun) -> Self {
        let dir = exp.run_dir(results, run);
        let status = read_status(&dir);
        Self { run, dir, status }
    }

    /// A `status.json` is there but cannot be read.
    pub fn damaged(&self) -> bool {
        self.status.is_none() && self.dir.join(STATUS_FILE).exists()
    }

    /// Epochs done so far: 0 without a status.
    pub fn epochs_done(&self) -> usize {
        self.status.as_ref().map_or(0, |s| s.epochs_done)
    }

    /// The epochs the run's config trains.
    pub fn epochs(&self) -> usize {
        self.run.config.train.epochs
    }
}

/// A column of the table after `epochs`.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub title: &'static str,
    pub width: usize,
    /// Right-aligned (numbers); left otherwise.
    pub right: bool,
}

impl Column {
    pub const fn left(title: &'static str, width: usize) -> Self {
        Self {
            title,
            width,
            right: false,
        }
    }

    pub const fn right(title: &'static str, width: usize) -> Self {
        Self {
            title,
            width,
            right: true,
        }
    }
}

/// The table's layout: `id`, `status`, `epochs`, the command's columns, `run`.
pub struct RunsTable {
    columns: Vec<Column>,
}

impl RunsTable {
    /// `epochs` is `epochs_width` wide; `more` come after it.
    pub fn new(epochs_width: usize, more: &[Column]) -> Self {
        let mut columns = vec![
            Column::left("id", 12),
            Column::left("status", 11),
            Column::left("epochs", epochs_width),
        ];
        columns.extend_from_slice(more);
        Self { columns }
    }

    /// The header line.
    pub fn header(&self) -> String {
        let titles: Vec<&str> = self.columns.iter().map(|c| c.title).collect();
        self.join(&titles, "run")
    }

    /// `row`'s line: its `status` and `epochs` as the command shows them, then `more`, one cell
    /// per column the command added.
    pub fn line(&self, row: &RunRow, status: &str, epochs: &str, more: &[String]) -> String {
        debug_assert_eq!(more.len() + 3, self.columns.len());
        let mut cells = vec![row.run.id.as_str(), status, epochs];
        cells.extend(more.iter().map(String::as_str));
        self.join(&cells, &row.run.describe())
    }

    fn join(&self, cells: &[&str], last: &str) -> String {
        let mut line = String::new();
        for (cell, c) in cells.iter().zip(&self.columns) {
            let w = c.width;
            line += &if c.right {
                format!("{cell:>w$}  ")
            } else {
                format!("{cell:<w$}  ")
            };
        }
        line + last
    }
}
