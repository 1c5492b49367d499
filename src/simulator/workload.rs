//! Arrivals: generated per function from the seed (Poisson within each rate period, the rate
//! redrawn uniformly every period), or replayed from a CSV trace (`time_ms,function`).

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp};

use super::scenario::Scenario;
use super::SimError;

/// One request: when (ms from the start) and for which function (index).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    pub time_ms: f64,
    pub function: usize,
}

/// The arrivals of functions `0..functions`, sorted by time. Each function draws from its own
/// stream of the seed, so function `i`'s arrivals are the same at every function count and
/// for every policy.
pub fn generate(s: &Scenario, functions: usize, seed: u64) -> Vec<Arrival> {
    let w = &s.workload;
    let horizon = w.duration_s * 1e3;
    let period = w.rate_period_s * 1e3;
    let mut out = Vec::new();
    for f in 0..functions {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(f as u64 + 1);
        let mut start = 0.0;
        while start < horizon {
            let end = (start + period).min(horizon);
            let per_min = if w.rate_max_per_min > w.rate_min_per_min {
                rng.random_range(w.rate_min_per_min..w.rate_max_per_min)
            } else {
                w.rate_min_per_min
            };
            let per_ms = per_min / 60_000.0;
            if per_ms > 0.0 {
                let gap = Exp::new(per_ms).expect("a positive rate");
                let mut t = start + gap.sample(&mut rng);
                while t < end {
                    out.push(Arrival { time_ms: t, function: f });
                    t += gap.sample(&mut rng);
                }
            }
            start = end;
        }
    }
    out.sort_by(|a, b| a.time_ms.total_cmp(&b.time_ms).then(a.function.cmp(&b.function)));
    out
}

/// A CSV trace: `time_ms,function` per line (a header line is allowed); the function is a
/// scenario function name (`f7-resnet152`) or index, below `functions`.
pub fn load_csv(path: &Path, s: &Scenario, functions: usize) -> Result<Vec<Arrival>, SimError> {
    let text = std::fs::read_to_string(path).map_err(|e| SimError::Trace(format!("{}: {e}", path.display())))?;
    let names: std::collections::HashMap<String, usize> = (0..functions).map(|i| (s.function_name(i), i)).collect();
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || (n == 0 && line.starts_with("time")) {
            continue;
        }
        let bad = |why: &str| SimError::Trace(format!("{} line {}: {why}: {line:?}", path.display(), n + 1));
        let (t, f) = line.split_once(',').ok_or_else(|| bad("expected time_ms,function"))?;
        let time_ms: f64 = t.trim().parse().map_err(|_| bad("time_ms is not a number"))?;
        if !time_ms.is_finite() || time_ms < 0.0 {
            return Err(bad("time_ms must be a non-negative number"));
        }
        let f = f.trim();
        let function = match names.get(f) {
            Some(&i) => i,
            None => match f.parse::<usize>() {
                Ok(i) if i < functions => i,
                _ => return Err(bad(&format!("unknown function (this run has {functions})"))),
            },
        };
        out.push(Arrival { time_ms, function });
    }
    out.sort_by(|a, b| a.time_ms.total_cmp(&b.time_ms).then(a.function.cmp(&b.function)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_rates_match_the_scenario_and_prefixes_agree() {
        let s = Scenario::paper_node();
        let a = generate(&s, 40, 7);
        // 40 functions × 31 min × 10/min ≈ 12,400 requests.
        let per_fn_min = a.len() as f64 / 40.0 / 31.0;
        assert!((9.0..11.0).contains(&per_fn_min), "{per_fn_min}");
        assert!(a.windows(2).all(|w| w[0].time_ms <= w[1].time_ms));
        let b = generate(&s, 20, 7);
        let prefix: Vec<_> = a.iter().filter(|x| x.function < 20).copied().collect();
        assert_eq!(prefix, b, "function i's arrivals do not depend on the function count");
        assert_ne!(generate(&s, 20, 8), b);
    }

    #[test]
    fn csv_traces_load_and_bad_lines_are_refused() {
        let s = Scenario::paper_node();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.csv");
        std::fs::write(&p, "time_ms,function\n5,f1-densenet201\n1.5,0\n").unwrap();
        let a = load_csv(&p, &s, 2).unwrap();
        assert_eq!(a, vec![Arrival { time_ms: 1.5, function: 0 }, Arrival { time_ms: 5.0, function: 1 }]);
        for bad in ["1,f9-x\n", "x,0\n", "-1,0\n", "5\n", "1,2\n"] {
            std::fs::write(&p, bad).unwrap();
            assert!(load_csv(&p, &s, 2).is_err(), "{bad}");
        }
    }
}
