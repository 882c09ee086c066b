//! The result table: each figure next to its SPEC target and whether it passes.

use std::io::Write;

/// Whether a figure meets its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Meets the target.
    Pass,
    /// Misses the target but meets its floor.
    MissAboveFloor,
    /// Misses the target (and the floor, where SPEC names one).
    Miss,
    /// Informational: no target, or the comparison was not run.
    Info,
}

impl Verdict {
    /// The verdict for "lower is better" figures with a target and an optional floor.
    pub fn at_most(value: f64, target: f64, floor: Option<f64>) -> Self {
        if value.is_nan() {
            Verdict::Info
        } else if value <= target {
            Verdict::Pass
        } else if floor.is_some_and(|f| value <= f) {
            Verdict::MissAboveFloor
        } else {
            Verdict::Miss
        }
    }

    /// The verdict for "higher is better" figures with a target and an optional floor.
    pub fn at_least(value: f64, target: f64, floor: Option<f64>) -> Self {
        if value.is_nan() {
            Verdict::Info
        } else if value >= target {
            Verdict::Pass
        } else if floor.is_some_and(|f| value >= f) {
            Verdict::MissAboveFloor
        } else {
            Verdict::Miss
        }
    }

    fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::MissAboveFloor => "miss (floor met)",
            Verdict::Miss => "**miss**",
            Verdict::Info => "–",
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured.
    pub figure: String,
    /// The measured value, formatted.
    pub measured: String,
    /// The SPEC target, formatted.
    pub target: String,
    /// Pass or miss.
    pub verdict: Verdict,
}

/// Rows collected during a run.
#[derive(Debug, Default)]
pub struct Report {
    rows: Vec<Row>,
}

impl Report {
    /// Adds a row with a target.
    pub fn row(
        &mut self,
        figure: impl Into<String>,
        measured: impl Into<String>,
        target: impl Into<String>,
        verdict: Verdict,
    ) {
        self.rows.push(Row {
            figure: figure.into(),
            measured: measured.into(),
            target: target.into(),
            verdict,
        });
    }

    /// Adds an informational row.
    pub fn info(&mut self, figure: impl Into<String>, measured: impl Into<String>) {
        self.row(figure, measured, "–", Verdict::Info);
    }

    /// Writes the markdown table.
    pub fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(out, "| figure | measured | SPEC target | verdict |")?;
        writeln!(out, "|---|---:|---|---|")?;
        for r in &self.rows {
            writeln!(
                out,
                "| {} | {} | {} | {} |",
                r.figure,
                r.measured,
                r.target,
                r.verdict.label()
            )?;
        }
        Ok(())
    }
}
