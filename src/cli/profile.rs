//! `faaswap profile`: CPU latency and throughput of one package per batch size, end to end
//! from text (tokenize, forward, pool) when texts are given, as a user's request would run.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use serde::Serialize;

use super::{print_json, CliError};
use crate::engine::{Model, TokenBatch, Workspace};

#[derive(Debug, Args)]
pub struct ProfileArgs {
    #[arg(long)]
    pub model: PathBuf,
    /// Batch sizes to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    pub batch_sizes: Vec<usize>,
    /// Texts to cycle through when building batches (default: random token ids).
    #[arg(long = "text")]
    pub texts: Vec<String>,
    /// Read texts from a file, one per line.
    #[arg(long)]
    pub texts_file: Option<PathBuf>,
    /// Sequence length of random-id inputs.
    #[arg(long, default_value_t = 16)]
    pub seq_len: usize,
    #[arg(long, default_value_t = 30)]
    pub iters: usize,
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
}

#[derive(Debug, Serialize)]
struct BatchResult {
    batch: usize,
    iters: usize,
    mean_ms: f64,
    p50_ms: f64,
    p90_ms: f64,
    min_ms: f64,
    items_per_s: f64,
}

pub fn run(a: ProfileArgs) -> Result<(), CliError> {
    if a.iters == 0 || a.batch_sizes.contains(&0) {
        return Err(CliError::Usage("--iters and every batch size must be at least 1".into()));
    }
    let model = Model::load(&a.model)?;
    let mut texts = a.texts;
    if let Some(path) = &a.texts_file {
        let body = std::fs::read_to_string(path)?;
        texts.extend(body.lines().filter(|l| !l.trim().is_empty()).map(str::to_string));
    }
    let defaults = model.spec.default_outputs();
    let mut results = Vec::new();
    for &b in &a.batch_sizes {
        let batch_texts: Vec<String> = texts.iter().cycle().take(b).cloned().collect();
        let vocab = model.spec.arch.vocab_size() as u64;
        let random_ids: Vec<Vec<u32>> = (0..b)
            .map(|i| (0..a.seq_len as u64).map(|j| ((i as u64 * 7919 + j * 104_729) % vocab) as u32).collect())
            .collect();
        // One workspace for all runs, as a device keeps one: sized for the longest input.
        let max_len = model.spec.summary().max_input_tokens;
        let mut ws = Workspace::new(model.spec.workspace_elems(b, max_len, max_len));
        let mut once = || -> Result<(), CliError> {
            let ids = if texts.is_empty() { random_ids.clone() } else { model.spec.tokenize(&batch_texts)? };
            let batch = TokenBatch::from_sequences(&ids)?;
            model.spec.infer(&model.resident(), &batch, &defaults, &mut ws)?;
            Ok(())
        };
        for _ in 0..a.warmup {
            once()?;
        }
        let mut ms = Vec::with_capacity(a.iters);
        for _ in 0..a.iters {
            let t = Instant::now();
            once()?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let mean = ms.iter().sum::<f64>() / ms.len() as f64;
        ms.sort_by(f64::total_cmp);
        let pct = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
        results.push(BatchResult {
            batch: b,
            iters: a.iters,
            mean_ms: mean,
            p50_ms: pct(0.5),
            p90_ms: pct(0.9),
            min_ms: ms[0],
            items_per_s: b as f64 / (mean / 1e3),
        });
    }
    print_json(&serde_json::json!({
        "model": a.model.display().to_string(),
        "outputs": defaults.iter().map(|o| o.name()).collect::<Vec<_>>(),
        "threads": rayon::current_num_threads(),
        "inputs": if texts.is_empty() { "random_ids" } else { "texts" },
        "results": results,
    }))
}
