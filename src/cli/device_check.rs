//! `faaswap device-check`: runs the engine on one device (a GPU with `--devices cuda`) and
//! checks it against the reference fixtures and against the CPU engine, then measures, per
//! model package, the raw copy of its weights, faaswap's swap-in, and cold and warm latency.
//! `scripts/gpu-check.sh` runs it on the GPU machine beside PyTorch; CI runs it on `cpu`.
//! The report goes to stdout as JSON, the human-readable table to stderr.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use serde::Serialize;
use serde_json::Value;

use super::CliError;
use crate::engine::{GenerateOptions, Model, OutputKind, SamplingParams, TokenBatch};
use crate::gpu::{BuildOptions, Device, DevicePlan, Job};
use crate::policy::{Extent, SwapSource};
use crate::request::{Generation, Work};

#[derive(Debug, Args)]
pub struct DeviceCheckArgs {
    /// The device to check (`cuda`, `cpu`, ...); the first one of the plan is used.
    #[arg(long, default_value = "cuda")]
    pub devices: String,
    /// Weight pool (default: what `serve` would reserve).
    #[arg(long, value_parser = crate::gpu::parse_bytes)]
    pub device_memory: Option<u64>,
    /// Activation workspace (as `serve --workspace`).
    #[arg(long, value_parser = crate::gpu::parse_bytes, default_value_t = crate::gpu::DEFAULT_WORKSPACE)]
    pub workspace: u64,
    /// A folder holding `tiny_bert/`, `tiny_gpt2/` and the Llama-family fixtures with their
    /// `reference.json`.
    #[arg(long)]
    pub fixtures: Option<PathBuf>,
    /// Model packages to compare with the CPU engine and to time (repeatable).
    #[arg(long = "model")]
    pub models: Vec<PathBuf>,
    #[arg(long, default_value_t = 128)]
    pub seq_len: usize,
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Warm runs per model (the median is reported).
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// Cold runs (swap-in + forward) per model.
    #[arg(long, default_value_t = 5)]
    pub cold_iters: usize,
    /// How the models' products over half weights are computed: `f32` or `native` (the CPU
    /// side of the comparison computes the same way).
    #[arg(long, default_value = "f32", value_parser = |s: &str| crate::engine::Compute::parse(s).ok_or_else(|| format!("{s:?} is not f32 or native")))]
    pub compute: crate::engine::Compute,
    /// A decoder's timed output: `last` (each sequence's last position: the time to its first
    /// token) or `all` (every position's logits, read back).
    #[arg(long, default_value = "last", value_parser = ["last", "all"])]
    pub logits: String,
}

#[derive(Debug, Serialize)]
struct FixtureCheck {
    case: String,
    max_abs_diff: f64,
    tolerance: f64,
    ok: bool,
}

impl FixtureCheck {
    fn new(case: String, max_abs_diff: f64, tolerance: f64) -> Self {
        Self { case, max_abs_diff, tolerance, ok: max_abs_diff <= tolerance }
    }
}

#[derive(Debug, Serialize)]
struct ModelReport {
    model: String,
    /// The output timed.
    output: &'static str,
    weight_bytes: u64,
    /// Host weights page-locked (`None`: not a CUDA device).
    pinned: Option<bool>,
    pin_ms: f64,
    /// One plain copy of the same bytes from the same host memory.
    raw_copy_ms: Option<f64>,
    swap_ms: f64,
    swap_gb_per_s: f64,
    cold_ms: f64,
    warm_ms: f64,
    /// Against the CPU engine on the same input.
    max_abs_diff_vs_cpu: f64,
    max_abs_output: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    device: String,
    seq_len: usize,
    batch: usize,
    fixtures: Vec<FixtureCheck>,
    models: Vec<ModelReport>,
}

pub fn run(a: DeviceCheckArgs) -> Result<(), CliError> {
    let plan = DevicePlan::parse(&a.devices, a.device_memory)?;
    if plan.kind == crate::gpu::DeviceKind::Sim {
        return Err(CliError::Usage(
            "device-check needs a device that computes (cuda or cpu); sim devices only model time".into(),
        ));
    }
    // One device is checked: only it is created.
    let plan = DevicePlan { count: 1, ..plan };
    let opts = BuildOptions { page_bytes: 2 << 20, host_link: None, sim_time_scale: 0.0, workspace_bytes: a.workspace };
    let mut devices = plan.build(&opts)?;
    let device = devices.first_mut().ok_or_else(|| CliError::Usage("no device".into()))?;
    let device_id = device.info().id.clone();
    eprintln!("device-check on {device_id}");

    let mut fixtures = Vec::new();
    if let Some(dir) = &a.fixtures {
        fixtures.extend(check_bert_fixture(device.as_mut(), &dir.join("tiny_bert"))?);
        // The decoders' references share one form: last-position logits and greedy generations.
        for name in DECODER_FIXTURES {
            fixtures.extend(check_decoder_fixture(device.as_mut(), &dir.join(name), name)?);
        }
    }
    let mut models = Vec::new();
    for dir in &a.models {
        models.push(measure(device.as_mut(), dir, &a)?);
    }
    print_table(&device_id, &fixtures, &models);
    let report = Report { device: device_id, seq_len: a.seq_len, batch: a.batch, fixtures, models };
    super::print_json(&report)?;
    let failed: Vec<&str> = report.fixtures.iter().filter(|f| !f.ok).map(|f| f.case.as_str()).collect();
    if !failed.is_empty() {
        return Err(CliError::Usage(format!("fixture checks failed: {}", failed.join(", "))));
    }
    Ok(())
}

/// A package loaded and made ready for swaps as a deploy would (page-locked on CUDA).
struct Loaded {
    model: Arc<Model>,
    pinned: Option<bool>,
    pin_ms: f64,
}

fn load(dir: &Path, compute: crate::engine::Compute) -> Result<Loaded, CliError> {
    let model = Arc::new(Model::load(dir)?.with_compute(compute));
    let t0 = Instant::now();
    let pinned = crate::gpu::cuda::prepare_host(&model);
    Ok(Loaded { model, pinned, pin_ms: t0.elapsed().as_secs_f64() * 1e3 })
}

fn weight_bytes(model: &Model) -> u64 {
    std::mem::size_of_val(model.weights()) as u64
}

/// The model's place in the pool: the start of it.
fn extent(model: &Model, device: &dyn Device) -> Extent {
    Extent { first: 0, pages: weight_bytes(model).div_ceil(device.info().page_bytes) as usize }
}

fn job(model: &Arc<Model>, batch: TokenBatch, outputs: Vec<OutputKind>, swap: bool, device: &dyn Device) -> Job {
    let work = Work {
        model: Some(model.clone()),
        bytes: weight_bytes(model),
        exec_ms: None,
        batch,
        outputs,
        generation: None,
    };
    Job { work, extent: extent(model, device), swap: swap.then_some(SwapSource::Host), source_extent: None }
}

fn max_diff(a: &[f32], b: &[f32]) -> f64 {
    f64::from(crate::engine::max_abs_diff(a, b))
}

fn reference(dir: &Path) -> Result<Value, CliError> {
    let path = dir.join("reference.json");
    let text = std::fs::read_to_string(&path).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))
}

/// A reference file's value at `key` that is missing or of the wrong kind is an error, never an
/// empty list or a default that would let a check pass unseen.
fn bad(key: &str) -> CliError {
    CliError::Usage(format!("reference.json: {key} is missing or malformed"))
}

/// A (nested) list of numbers, flattened.
fn floats(v: &Value, key: &str) -> Result<Vec<f32>, CliError> {
    match v {
        Value::Array(items) => items.iter().map(|x| floats(x, key)).collect::<Result<Vec<_>, _>>().map(|v| v.concat()),
        Value::Number(n) => Ok(vec![n.as_f64().ok_or_else(|| bad(key))? as f32]),
        _ => Err(bad(key)),
    }
}

fn ids(v: &Value, key: &str) -> Result<Vec<u32>, CliError> {
    let list = v.as_array().ok_or_else(|| bad(key))?;
    list.iter().map(|x| x.as_u64().and_then(|x| u32::try_from(x).ok()).ok_or_else(|| bad(key))).collect()
}

fn number(v: &Value, key: &str) -> Result<f64, CliError> {
    v.as_f64().ok_or_else(|| bad(key))
}

/// A non-empty list.
fn list<'a>(v: &'a Value, key: &str) -> Result<&'a [Value], CliError> {
    v.as_array().filter(|l| !l.is_empty()).map(Vec::as_slice).ok_or_else(|| bad(key))
}

fn check_bert_fixture(device: &mut dyn Device, dir: &Path) -> Result<Vec<FixtureCheck>, CliError> {
    let r = reference(dir)?;
    let model = load(dir, crate::engine::Compute::F32)?.model;
    let tol = number(&r["tolerance"]["last_hidden_state_max_abs"], "tolerance.last_hidden_state_max_abs")?;
    let mut checks = Vec::new();
    for (i, case) in list(&r["cases"], "cases")?.iter().enumerate() {
        let batch = TokenBatch::from_sequences(&[ids(&case["input_ids"], "cases[].input_ids")?])?;
        let out = device.run(&job(&model, batch, vec![OutputKind::LastHiddenState], i == 0, device))?;
        let d = max_diff(&out.outputs[0].data, &floats(&case["last_hidden_state"], "cases[].last_hidden_state")?);
        checks.push(FixtureCheck::new(format!("tiny_bert case {i}"), d, tol));
    }
    Ok(checks)
}

/// GPT-2 and the Llama family (`tiny_qwen2` is stored in BF16: its widened products are the
/// reference's F32 arithmetic).
const DECODER_FIXTURES: [&str; 5] = ["tiny_gpt2", "tiny_llama", "tiny_qwen2", "tiny_qwen3", "tiny_mistral"];

fn check_decoder_fixture(device: &mut dyn Device, dir: &Path, name: &str) -> Result<Vec<FixtureCheck>, CliError> {
    let r = reference(dir)?;
    let model = load(dir, crate::engine::Compute::F32)?.model;
    let tol = number(&r["tolerance"]["last_position_logits_max_abs"], "tolerance.last_position_logits_max_abs")?;
    let vocab = model.spec.arch.vocab_size();
    let mut checks = Vec::new();
    for (i, case) in list(&r["cases"], "cases")?.iter().enumerate() {
        let batch = TokenBatch::from_sequences(&[ids(&case["input_ids"], "cases[].input_ids")?])?;
        // Every other case asks for the last position only: that program computes one row.
        let kind = if i % 2 == 0 { OutputKind::Logits } else { OutputKind::LastLogits };
        let out = device.run(&job(&model, batch, vec![kind], i == 0, device))?;
        let logits = &out.outputs[0].data;
        let want = floats(&case["last_position_logits"], "cases[].last_position_logits")?;
        let d = max_diff(&logits[logits.len() - vocab..], &want);
        checks.push(FixtureCheck::new(format!("{name} case {i}"), d, tol));
    }
    for (i, g) in list(&r["generation"], "generation")?.iter().enumerate() {
        let prompt = ids(&g["prompt_ids"], "generation[].prompt_ids")?;
        let want = ids(&g["new_token_ids"], "generation[].new_token_ids")?;
        let options =
            GenerateOptions { max_new_tokens: want.len(), sampling: SamplingParams::default(), stop_at_eos: false };
        let (tokens, _keep) = tokio::sync::mpsc::unbounded_channel();
        let mut j = job(&model, TokenBatch::from_sequences(std::slice::from_ref(&prompt))?, Vec::new(), false, device);
        j.work.generation = Some(Generation {
            prompt,
            options,
            stop: Vec::new(),
            received: Instant::now(),
            tokens,
            cancel: Arc::new(AtomicBool::new(false)),
        });
        let got = device.run(&j)?.generated.map(|g| g.token_ids).unwrap_or_default();
        // Token ids must match exactly: any difference counts as 1 against a tolerance of 0.
        let d = if got == want { 0.0 } else { 1.0 };
        checks.push(FixtureCheck::new(format!("{name} greedy generation {i}"), d, 0.0));
    }
    Ok(checks)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

fn measure(device: &mut dyn Device, dir: &Path, a: &DeviceCheckArgs) -> Result<ModelReport, CliError> {
    let Loaded { model, pinned, pin_ms } = load(dir, a.compute)?;
    let vocab = model.spec.arch.vocab_size() as u32;
    let seq_len = a.seq_len.min(model.spec.arch.max_positions());
    let seqs: Vec<Vec<u32>> =
        (0..a.batch).map(|b| (0..seq_len).map(|t| ((t * 31 + b * 7 + 1) as u32) % vocab).collect()).collect();
    let batch = TokenBatch::from_sequences(&seqs)?;
    let last = a.logits == "last" && model.spec.outputs().contains(&OutputKind::LastLogits);
    let outputs = if last { vec![OutputKind::LastLogits] } else { model.spec.default_outputs() };
    let bytes = weight_bytes(&model);
    let extent = extent(&model, device);
    let raw = (0..3).map(|_| device.raw_copy_ms(&model, extent)).collect::<Result<Vec<_>, _>>()?;
    let raw_copy_ms = raw.iter().copied().collect::<Option<Vec<f64>>>().map(median);
    let mut cold = Vec::new();
    let mut swaps = Vec::new();
    let mut result = None;
    for _ in 0..a.cold_iters.max(1) {
        // Each run's output is freed before the next is allocated, as a server's would be: a
        // kept output makes the next read-back land in fresh pages (15 ms of page faults for
        // GPT-2's 26 MB of logits on the H200 machine).
        drop(result.take());
        let t0 = Instant::now();
        let r = device.run(&job(&model, batch.clone(), outputs.clone(), true, device))?;
        cold.push(t0.elapsed().as_secs_f64() * 1e3);
        swaps.push(r.swap_ms);
        result = Some(r);
    }
    let mut warm = Vec::new();
    for _ in 0..a.iters.max(1) {
        let t0 = Instant::now();
        device.run(&job(&model, batch.clone(), outputs.clone(), false, device))?;
        warm.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let got = result.expect("at least one cold run").outputs;
    let want = model.infer(&batch, &outputs)?;
    let swap_ms = median(swaps);
    Ok(ModelReport {
        model: dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned()),
        output: outputs[0].name(),
        weight_bytes: bytes,
        pinned,
        pin_ms,
        raw_copy_ms,
        swap_ms,
        swap_gb_per_s: bytes as f64 / swap_ms / 1e6,
        cold_ms: median(cold),
        warm_ms: median(warm),
        max_abs_diff_vs_cpu: max_diff(&got[0].data, &want[0].data),
        max_abs_output: want[0].data.iter().map(|v| f64::from(v.abs())).fold(0.0, f64::max),
    })
}

fn print_table(device: &str, fixtures: &[FixtureCheck], models: &[ModelReport]) {
    for f in fixtures {
        eprintln!(
            "{:<34} max |diff| {:>10.3e} (tolerance {:.0e}) {}",
            f.case,
            f.max_abs_diff,
            f.tolerance,
            if f.ok { "ok" } else { "FAILED" }
        );
    }
    if models.is_empty() {
        return;
    }
    eprintln!(
        "| model ({device}) | weights MB | raw copy ms | swap ms | swap rate / raw rate | swap GB/s | warm ms | cold ms | cold / max(raw, warm) | max |diff| vs CPU |"
    );
    eprintln!("|---|---|---|---|---|---|---|---|---|---|");
    for m in models {
        let raw = m.raw_copy_ms.map_or("-".into(), |r| format!("{r:.2}"));
        let ratio = m.raw_copy_ms.map_or("-".into(), |r| format!("{:.3}", r / m.swap_ms));
        let bound = m.raw_copy_ms.unwrap_or(0.0).max(m.warm_ms);
        eprintln!(
            "| {} | {:.1} | {raw} | {:.2} | {ratio} | {:.1} | {:.2} | {:.2} | {:.3} | {:.2e} |",
            m.model,
            m.weight_bytes as f64 / 1e6,
            m.swap_ms,
            m.swap_gb_per_s,
            m.warm_ms,
            m.cold_ms,
            m.cold_ms / bound,
            m.max_abs_diff_vs_cpu
        );
    }
}
