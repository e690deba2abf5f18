//! The benchmarks' results as Markdown tables, and the numbers in them.

use std::fmt;
use std::time::Duration;

/// A Markdown table whose first column labels the row (left-aligned) and whose other columns hold
/// numbers (right-aligned). `print!("{table}")` writes the header, the alignment line and one line
/// per row, each ending in a newline.
#[derive(Debug, Clone)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headings and no rows yet.
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Self {
        Self {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row, one cell per column, already formatted.
    ///
    /// # Panics
    /// When the row does not have one cell per column: a bug in the benchmark.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) -> &mut Self {
        let cells: Vec<String> = cells.into_iter().map(Into::into).collect();
        assert_eq!(
            cells.len(),
            self.header.len(),
            "a row of {cells:?} under {:?}",
            self.header
        );
        self.rows.push(cells);
        self
    }
}

fn line(
    f: &mut fmt::Formatter<'_>,
    cells: impl IntoIterator<Item = impl fmt::Display>,
) -> fmt::Result {
    for cell in cells {
        write!(f, "| {cell} ")?;
    }
    writeln!(f, "|")
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        line(f, &self.header)?;
        for i in 0..self.header.len() {
            f.write_str(if i == 0 { "|---" } else { "|---:" })?;
        }
        writeln!(f, "|")?;
        for row in &self.rows {
            line(f, row)?;
        }
        Ok(())
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The nearest-rank percentile `p` (0 to 100; 100 is the maximum) of `latencies`, in
/// milliseconds; NaN when there are none.
pub fn percentile_ms(latencies: &[Duration], p: f64) -> f64 {
    let mut sorted = latencies.to_vec();
    sorted.sort_unstable();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.clamp(1, sorted.len().max(1)) - 1)
        .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_is_markdown_with_the_numbers_right_aligned() {
        let mut table = Table::new(["run", "events", "p50 ms"]);
        table.row([
            "one writer".to_owned(),
            thousands(10_000),
            format!("{:.2}", 0.126),
        ]);
        assert_eq!(
            table.to_string(),
            "| run | events | p50 ms |\n|---|---:|---:|\n| one writer | 10,000 | 0.13 |\n"
        );
    }

    #[test]
    #[should_panic(expected = "a row of")]
    fn a_row_with_a_missing_cell_is_refused() {
        Table::new(["a", "b"]).row(["only a"]);
    }

    #[test]
    fn thousands_are_grouped_by_commas() {
        let cases = [
            (0, "0"),
            (999, "999"),
            (1_000, "1,000"),
            (1_234_567, "1,234,567"),
        ];
        for (n, text) in cases {
            assert_eq!(thousands(n), text);
        }
    }

    #[test]
    fn percentiles_are_nearest_rank_and_100_is_the_maximum() {
        let ms: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&ms, 50.0), 50.0);
        assert_eq!(percentile_ms(&ms, 99.0), 99.0);
        assert_eq!(percentile_ms(&ms, 100.0), 100.0);
        assert_eq!(percentile_ms(&ms, 0.0), 1.0);
        assert!(percentile_ms(&[], 50.0).is_nan());
    }
}
