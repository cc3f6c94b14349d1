//! Results: samples per row and column, reported as medians with Tally / peer ratios, as a
//! Markdown table.

use std::collections::BTreeMap;
use std::fmt::Write;

/// One row of a table: what is measured, in which unit, and the goal it is held to.
struct Row {
    label: String,
    unit: &'static str,
    goal: String,
    samples: BTreeMap<usize, Vec<f64>>,
}

pub struct Table {
    pub title: String,
    /// What the rows measure and how, printed under the table.
    pub note: String,
    columns: Vec<String>,
    rows: Vec<Row>,
    /// Columns whose ratio to the first one is reported.
    ratios: bool,
}

impl Table {
    /// A table whose first column is Tally and whose other columns are compared with it.
    pub fn compare(title: &str, columns: &[&str]) -> Table {
        Table { title: title.into(), note: String::new(), columns: own(columns), rows: Vec::new(), ratios: true }
    }

    /// A table of figures with no peer to compare them with.
    pub fn plain(title: &str, columns: &[&str]) -> Table {
        Table { title: title.into(), note: String::new(), columns: own(columns), rows: Vec::new(), ratios: false }
    }

    pub fn row(&mut self, label: &str, unit: &'static str, goal: &str) {
        self.rows.push(Row { label: label.into(), unit, goal: goal.into(), samples: BTreeMap::new() });
    }

    /// Adds a sample to a row declared with [`Table::row`] and a column named at creation.
    pub fn add(&mut self, label: &str, column: &str, value: f64) {
        let Some(column) = self.columns.iter().position(|c| c == column) else {
            panic!("table {:?} has no column {column:?}", self.title);
        };
        let Some(row) = self.rows.iter_mut().find(|r| r.label == label) else {
            panic!("table {:?} has no row {label:?}", self.title);
        };
        row.samples.entry(column).or_default().push(value);
    }

    pub fn markdown(&self) -> String {
        let mut out = format!("### {}\n\n| | ", self.title);
        out += &self.columns.join(" | ");
        let ratio_columns: Vec<usize> = if self.ratios { (1..self.columns.len()).collect() } else { Vec::new() };
        for &c in &ratio_columns {
            let _ = write!(out, " | {} / {}", self.columns[0], self.columns[c]);
        }
        out += " | goal |\n|---";
        for _ in 0..self.columns.len() + ratio_columns.len() + 1 {
            out += "|---";
        }
        out += "|\n";
        for row in &self.rows {
            let _ = write!(out, "| {} ({}) ", row.label, row.unit);
            let medians: Vec<Option<f64>> =
                (0..self.columns.len()).map(|c| row.samples.get(&c).and_then(|s| median(s))).collect();
            for value in &medians {
                let _ = write!(out, "| {} ", value.map_or("n/a".into(), format_value));
            }
            for &c in &ratio_columns {
                let ratio = match (medians[0], medians[c]) {
                    (Some(tally), Some(peer)) if peer != 0.0 => format!("{:.2}x", tally / peer),
                    _ => "n/a".into(),
                };
                let _ = write!(out, "| {ratio} ");
            }
            let _ = writeln!(out, "| {} |", row.goal);
        }
        if !self.note.is_empty() {
            let _ = write!(out, "\n{}\n", self.note.trim_end());
        }
        out
    }
}

fn own(columns: &[&str]) -> Vec<String> {
    columns.iter().map(|c| c.to_string()).collect()
}

pub fn median(samples: &[f64]) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 { sorted[mid] } else { (sorted[mid - 1] + sorted[mid]) / 2.0 })
}

/// The `q`-quantile (0..=1) of samples, nearest rank.
pub fn quantile(samples: &[f64], q: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or(f64::NAN)
}

/// Three significant figures, without exponent notation for the sizes seen here.
fn format_value(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 100.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else if magnitude >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}
