//! Small text-formatting helpers for command output.

use crate::table::Table;

/// `65812394` -> `65,812,394`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// How `count` and `bench` print: a table as aligned text, Markdown or CSV, or the command's
/// own JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Md,
    Csv,
    Json,
}

impl OutputFormat {
    /// `tables` rendered one after another (CSV: the first only, a CSV file holds one table);
    /// `None` for JSON, which each command writes itself.
    pub fn render(self, tables: &[Table]) -> Option<String> {
        let each = |f: fn(&Table) -> String| tables.iter().map(f).collect::<Vec<_>>().join("\n");
        match self {
            Self::Table => Some(each(Table::text)),
            Self::Md => Some(each(Table::markdown)),
            Self::Csv => Some(tables.first().map(Table::csv).unwrap_or_default()),
            Self::Json => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(65_812_394), "65,812,394");
    }
}
