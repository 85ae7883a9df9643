//! A rendered table: a title, column headers, rows of cells and notes, written as Markdown, CSV
//! or LaTeX.

use std::fmt::Write;

/// Output format of a table.
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

#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Sentences printed under the table (Markdown and LaTeX only).
    pub notes: Vec<String>,
}

impl Table {
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Md => self.markdown(),
            Format::Csv => self.csv(),
            Format::Tex => self.latex(),
        }
    }

    pub fn markdown(&self) -> String {
        let mut s = format!("### {}\n\n", self.title);
        let _ = writeln!(s, "| {} |", self.columns.join(" | "));
        let _ = writeln!(
            s,
            "|{}|",
            self.columns
                .iter()
                .map(|_| "---")
                .collect::<Vec<_>>()
                .join("|")
        );
        for row in &self.rows {
            let cells: Vec<String> = row.iter().map(|c| c.replace('|', "\\|")).collect();
            let _ = writeln!(s, "| {} |", cells.join(" | "));
        }
        for note in &self.notes {
            let _ = write!(s, "\n{note}\n");
        }
        s
    }

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
