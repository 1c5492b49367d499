//! What `faaswap simulate` (and `faaswap bench --scenario`) report: one row per policy and
//! function count, as a table, as JSON, and as a plot of compliance against function count.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use super::scenario::Scenario;
use super::SimError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub policy: String,
    pub functions: usize,
    /// Functions whose latency at their SLO percentile (dropped requests infinitely late) was
    /// within their deadline, over the whole run.
    pub compliant_fraction: f64,
    pub compliant_functions: usize,
    pub requests: usize,
    pub served: usize,
    pub dropped: usize,
    /// Latency percentiles of served requests, arrival to completion.
    pub p50_ms: Option<f64>,
    pub p98_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub swaps_host: usize,
    pub swaps_peer: usize,
    /// Fraction of the run each device was running a job.
    pub gpu_busy: Vec<f64>,
    pub capacity_bound_functions: usize,
    /// Per model: functions, compliant functions, and the model's p98 latency (ms, served).
    pub by_model: Vec<ModelRow>,
    /// Where the figures were measured when not in the simulator (`http` for `bench --scenario`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRow {
    pub model: String,
    pub functions: usize,
    pub compliant: usize,
    pub p98_ms: Option<f64>,
}

/// Request counts a run reports besides its latencies.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub requests: usize,
    pub dropped: usize,
    pub swaps_host: usize,
    pub swaps_peer: usize,
}

impl RunReport {
    /// The row of one run: `latencies[f]` holds function `f`'s request latencies (infinite for
    /// a dropped request); `gpu_busy` each device's busy fraction.
    pub fn from_latencies(
        scenario: &Scenario,
        policy: &str,
        latencies: &[Vec<f64>],
        counts: Counts,
        gpu_busy: Vec<f64>,
    ) -> Self {
        let functions = latencies.len();
        let mut compliant = 0;
        let mut served: Vec<f64> = Vec::new();
        let models = scenario.models.len();
        let mut by_model: Vec<(usize, usize, Vec<f64>)> = vec![(0, 0, Vec::new()); models];
        for (f, lat) in latencies.iter().enumerate() {
            let m = scenario.model_of(f);
            let mut v = lat.clone();
            v.sort_by(f64::total_cmp);
            let ok = percentile(&v, m.percentile).is_none_or(|p| p <= m.deadline_ms);
            compliant += usize::from(ok);
            let row = &mut by_model[f % models];
            row.0 += 1;
            row.1 += usize::from(ok);
            row.2.extend(lat.iter().copied().filter(|x| x.is_finite()));
            served.extend(lat.iter().copied().filter(|x| x.is_finite()));
        }
        served.sort_by(f64::total_cmp);
        let round = |x: Option<f64>| x.map(|x| (x * 1000.0).round() / 1000.0);
        RunReport {
            policy: policy.to_string(),
            functions,
            compliant_fraction: if functions == 0 { 1.0 } else { compliant as f64 / functions as f64 },
            compliant_functions: compliant,
            requests: counts.requests,
            served: served.len(),
            dropped: counts.dropped,
            p50_ms: round(percentile(&served, 0.50)),
            p98_ms: round(percentile(&served, 0.98)),
            p99_ms: round(percentile(&served, 0.99)),
            swaps_host: counts.swaps_host,
            swaps_peer: counts.swaps_peer,
            gpu_busy: gpu_busy.iter().map(|b| (b * 1e4).round() / 1e4).collect(),
            capacity_bound_functions: scenario.capacity_bound_functions(),
            source: None,
            by_model: by_model
                .into_iter()
                .enumerate()
                .map(|(i, (functions, compliant, mut v))| {
                    v.sort_by(f64::total_cmp);
                    ModelRow {
                        model: scenario.models[i].name.clone(),
                        functions,
                        compliant,
                        p98_ms: round(percentile(&v, 0.98)),
                    }
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    pub seed: u64,
    /// The execution-time model of a batch, for the policies that batch (faaswap).
    pub batched_exec_model: String,
    pub shed: bool,
    pub runs: Vec<RunReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

impl Report {
    /// The runs as a text table; `by_model` adds each run's per-model compliance.
    pub fn table(&self, by_model: bool) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<11} {:>9} {:>10} {:>9} {:>7} {:>8} {:>8} {:>8} {:>8} {:>7}  gpu busy",
            "policy", "functions", "compliant", "served", "dropped", "p50 ms", "p98 ms", "p99 ms", "host sw", "peer sw"
        );
        let ms = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.1}"));
        for r in &self.runs {
            let busy: Vec<String> = r.gpu_busy.iter().map(|b| format!("{:.0}%", b * 100.0)).collect();
            let _ = writeln!(
                out,
                "{:<11} {:>9} {:>10.4} {:>9} {:>7} {:>8} {:>8} {:>8} {:>8} {:>7}  {}",
                r.source.as_ref().map_or_else(|| r.policy.clone(), |s| format!("{} ({s})", r.policy)),
                r.functions,
                r.compliant_fraction,
                r.served,
                r.dropped,
                ms(r.p50_ms),
                ms(r.p98_ms),
                ms(r.p99_ms),
                r.swaps_host,
                r.swaps_peer,
                busy.join(" ")
            );
        }
        if by_model {
            for r in &self.runs {
                let rows: Vec<String> = r
                    .by_model
                    .iter()
                    .map(|m| format!("{} {}/{} p98 {}", m.model, m.compliant, m.functions, ms(m.p98_ms)))
                    .collect();
                let _ = writeln!(out, "  {} {}: {}", r.policy, r.functions, rows.join(", "));
            }
        }
        if let Some(r) = self.runs.first() {
            let _ = writeln!(
                out,
                "capacity bound: {} functions (every request only executing)",
                r.capacity_bound_functions
            );
        }
        out
    }

    /// Compliant fraction against function count, one line per policy.
    pub fn plot(&self, path: &Path) -> Result<(), SimError> {
        let err = |e: String| SimError::Plot(e);
        let mut policies: Vec<&str> = Vec::new();
        for r in &self.runs {
            if !policies.contains(&r.policy.as_str()) {
                policies.push(&r.policy);
            }
        }
        let (lo, hi) = self.runs.iter().fold((usize::MAX, 0), |(lo, hi), r| (lo.min(r.functions), hi.max(r.functions)));
        let (lo, hi) = if lo >= hi { (lo.saturating_sub(1), hi + 1) } else { (lo, hi) };
        let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("SLO compliance — {} (seed {})", self.scenario, self.seed), ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(lo as f64..hi as f64, 0.0..1.02)
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("functions")
            .y_desc("compliant fraction")
            .draw()
            .map_err(|e| err(e.to_string()))?;
        let colors = [RED, BLUE, GREEN, MAGENTA, CYAN, BLACK];
        for (k, p) in policies.iter().enumerate() {
            let color = colors[k % colors.len()];
            let points: Vec<(f64, f64)> = self
                .runs
                .iter()
                .filter(|r| r.policy == *p)
                .map(|r| (r.functions as f64, r.compliant_fraction))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(|e| err(e.to_string()))?
                .label(p.to_string())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            chart
                .draw_series(points.into_iter().map(|pt| Circle::new(pt, 4, color.filled())))
                .map_err(|e| err(e.to_string()))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(e.to_string()))?;
        root.present().map_err(|e| err(e.to_string()))?;
        Ok(())
    }
}
