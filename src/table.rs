//! A table of cells with a title and notes, the one table type every command prints or
//! writes: aligned plain text for a terminal, Markdown, CSV and LaTeX. `count`, `bench` and
//! `report` build a [`Table`] and render it; none formats a table by hand.

use std::fmt::Write;

/// A file format a table is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Md,
    Csv,
    Tex,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Self::Md => "md",
            Self::Csv => "csv",
            Self::Tex => "tex",
        }
    }
}

/// Rows of cells under column headers. Every row has as many cells as there are columns
/// ([`Table::push`] pads or refuses); the first column is a name, the others values.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    /// Printed above the table; empty for none.
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Sentences printed under the table (not in CSV).
    pub notes: Vec<String>,
}

impl Table {
    /// An empty table with these columns.
    pub fn new(title: impl Into<String>, columns: &[&str]) -> Self {
        Self {
            title: title.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            ..Self::default()
        }
    }

    /// Appends a row, padded with empty cells to the table's width.
    ///
    /// # Panics
    /// When the row has more cells than the table has columns (a bug in the caller).
    pub fn push(&mut self, mut row: Vec<String>) {
        assert!(
            row.len() <= self.columns.len(),
            "a row of {} cells in a table of {} columns",
            row.len(),
            self.columns.len()
        );
        row.resize(self.columns.len(), String::new());
        self.rows.push(row);
    }

    /// Adds a note printed under the table.
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    /// For a terminal: the title, then the header and rows with the first column left-aligned
    /// and the others right-aligned, two spaces apart, then the notes.
    pub fn text(&self) -> String {
        let mut lines = vec![self.columns.clone()];
        lines.extend(self.rows.iter().cloned());
        let width: Vec<usize> = (0..self.columns.len())
            .map(|c| {
                lines
                    .iter()
                    .map(|r| r[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut s = String::new();
        if !self.title.is_empty() {
            let _ = writeln!(
                s,
                "{}
",
                self.title
            );
        }
        for row in &lines {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(c, cell)| match c {
                    0 => format!("{cell:<w$}", w = width[c]),
                    _ => format!("{cell:>w$}", w = width[c]),
                })
                .collect();
            let _ = writeln!(s, "{}", cells.join("  ").trim_end());
        }
        for note in &self.notes {
            let _ = write!(s, "\n{note}\n");
        }
        s
    }

    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Md => self.markdown(),
            Format::Csv => self.csv(),
            Format::Tex => self.latex(),
        }
    }

    /// GitHub Markdown under a `###` title: the first column left-aligned, the others right.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        if !self.title.is_empty() {
            let _ = writeln!(s, "### {}\n", self.title);
        }
        let _ = writeln!(s, "| {} |", self.columns.join(" | "));
        let rule: Vec<&str> = (0..self.columns.len())
            .map(|c| if c == 0 { ":--" } else { "--:" })
            .collect();
        let _ = writeln!(s, "| {} |", rule.join(" | "));
        for row in &self.rows {
            let cells: Vec<String> = row.iter().map(|c| c.replace('|', "\\|")).collect();
            let _ = writeln!(s, "| {} |", cells.join(" | "));
        }
        for note in &self.notes {
            let _ = write!(s, "\n{note}\n");
        }
        s
    }

    /// A header line and one line per row; title and notes left out.
    pub fn csv(&self) -> String {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(&self.columns).expect("writing to memory");
        for row in &self.rows {
            w.write_record(row).expect("writing to memory");
        }
        String::from_utf8(w.into_inner().expect("writing to memory")).expect("UTF-8 cells")
    }

    pub fn latex(&self) -> String {
        let esc = |c: &str| {
            c.replace('\\', "\\textbackslash{}")
                .replace('&', "\\&")
                .replace('%', "\\%")
                .replace('_', "\\_")
                .replace('#', "\\#")
                .replace('$', "\\$")
                .replace('±', "$\\pm$")
                .replace('Δ', "$\\Delta$")
        };
        let mut s = String::from("\\begin{table}[t]\n\\centering\n");
        let _ = writeln!(s, "\\caption{{{}}}", esc(&self.title));
        let _ = writeln!(
            s,
            "\\begin{{tabular}}{{l{}}}",
            "r".repeat(self.columns.len() - 1)
        );
        s += "\\hline\n";
        let _ = writeln!(
            s,
            "{} \\\\",
            self.columns
                .iter()
                .map(|c| esc(c))
                .collect::<Vec<_>>()
                .join(" & ")
        );
        s += "\\hline\n";
        for row in &self.rows {
            let _ = writeln!(
                s,
                "{} \\\\",
                row.iter().map(|c| esc(c)).collect::<Vec<_>>().join(" & ")
            );
        }
        s += "\\hline\n\\end{tabular}\n";
        for note in &self.notes {
            let _ = writeln!(s, "\\par\\smallskip\\footnotesize {}", esc(note));
        }
        s += "\\end{table}\n";
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        let mut t = Table::new("Sizes", &["model", "MB"]);
        t.push(vec!["condensenext".into(), "1.87".into()]);
        t.push(vec!["a, \"b\"".into(), "16.79".into()]);
        t.push(vec!["short".into()]);
        t.note("decimal megabytes")
    }

    #[test]
    fn text_aligns_names_left_and_values_right() {
        assert_eq!(
            sample().text(),
            "Sizes\n\nmodel            MB\ncondensenext   1.87\na, \"b\"        16.79\nshort\n\ndecimal megabytes\n"
        );
    }

    #[test]
    fn csv_quotes_and_has_no_title_or_notes() {
        assert_eq!(
            sample().csv(),
            "model,MB\ncondensenext,1.87\n\"a, \"\"b\"\"\",16.79\nshort,\n"
        );
    }

    #[test]
    fn markdown_escapes_pipes_and_aligns_numbers_right() {
        let mut t = Table::new("", &["a", "b"]);
        t.push(vec!["x|y".into(), "1".into()]);
        assert_eq!(t.markdown(), "| a | b |\n| :-- | --: |\n| x\\|y | 1 |\n");
    }

    #[test]
    #[should_panic(expected = "a row of 3 cells in a table of 2 columns")]
    fn a_row_wider_than_the_table_is_a_bug() {
        Table::new("", &["a", "b"]).push(vec![String::new(); 3]);
    }
}
