//! The `faaswap` command line: argument definitions and the one-off commands that use the
//! engine directly (`run`, `generate`, `inspect`, `profile`, `synth`).

mod bench;
mod device_check;
mod infer;
mod openai_bench;
mod profile;
mod replay;
mod serve;
mod simulate;
mod synth;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::engine::EngineError;

#[derive(Debug, Parser)]
#[command(name = "faaswap", version, about = "Serverless GPU inference runtime with model swapping")]
pub struct Cli {
    /// Worker threads for CPU execution (default: one per core).
    #[arg(long, global = true, env = "FAASWAP_THREADS")]
    pub threads: Option<usize>,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start-up: the size of the serve variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the inference server (KServe v2 HTTP API, management API, metrics).
    Serve(crate::config::ServeArgs),
    /// Replay requests against a running server's infer endpoint and report throughput and
    /// latency percentiles.
    Bench(bench::BenchArgs),
    /// A bare actix-web route with a fixed answer: the baseline for `bench`.
    #[command(hide = true)]
    BareServer(bench::BareArgs),
    /// Run a model package once on the CPU and print its outputs as KServe v2 JSON.
    Run(RunArgs),
    /// Generate tokens with a decoder package (GPT-2, the Llama family) and print
    /// {"token_ids": [...], "first_token_ms", "decode_ms_per_token"}.
    Generate(GenerateArgs),
    /// Print a package's config, packed layout and outputs as JSON.
    Inspect(InspectArgs),
    /// Measure a package's CPU latency and throughput per batch size.
    Profile(profile::ProfileArgs),
    /// Write a synthetic model package with random weights.
    Synth(synth::SynthArgs),
    /// Run scheduling policies over a simulated node in virtual time (deterministic, seeded)
    /// and report SLO compliance, latency, swaps and device load.
    Simulate(simulate::SimulateArgs),
    /// Check the engine on a device against the fixtures and the CPU engine, and measure swap-in
    /// bandwidth and cold and warm latency per model package (see scripts/gpu-check.sh).
    DeviceCheck(device_check::DeviceCheckArgs),
    /// Make a new random API token: prints it once with the `[[tokens]]` entry (its SHA-256)
    /// for the config file.
    Token(TokenArgs),
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// A name for logs.
    #[arg(long, default_value = "token")]
    pub name: String,
    /// admin or invoke.
    #[arg(long, default_value = "invoke")]
    pub scope: String,
    /// invoke: the functions it may call (all when absent), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub functions: Vec<String>,
}

/// Token inputs: texts (needs the package's tokenizer) or explicit ids, one sequence per flag.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct InputArgs {
    /// Text input (repeat for a batch).
    #[arg(long = "text")]
    pub texts: Vec<String>,
    /// Token ids, comma-separated (repeat for a batch).
    #[arg(long = "input-ids", value_parser = parse_ids)]
    pub input_ids: Vec<TokenIds>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Model package folder (config.json + model.safetensors).
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub input: InputArgs,
    /// Second text of a pair (a passage for a reranker), one per `--text`.
    #[arg(long = "text-pair", requires = "texts")]
    pub text_pairs: Vec<String>,
    /// Token type ids, comma-separated, one list per `--input-ids` (default: all 0).
    #[arg(long = "token-type-ids", value_parser = parse_ids, requires = "input_ids")]
    pub token_type_ids: Vec<TokenIds>,
    /// Output tensors to return (default: sentence_embedding with pooling settings, else
    /// last_hidden_state or logits).
    #[arg(long = "output")]
    pub outputs: Vec<String>,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[arg(long)]
    pub model: PathBuf,
    /// Prompt token ids, comma-separated.
    #[arg(long = "input-ids", value_parser = parse_ids, conflicts_with = "text", required_unless_present = "text")]
    pub input_ids: Option<TokenIds>,
    /// Prompt text (needs the package's tokenizer).
    #[arg(long)]
    pub text: Option<String>,
    #[arg(long, default_value_t = 16)]
    pub max_new_tokens: usize,
    /// Sample with this temperature (greedy when absent or 0).
    #[arg(long)]
    pub temperature: Option<f32>,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long)]
    pub top_p: Option<f32>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Keep generating after the end-of-sequence token.
    #[arg(long)]
    pub ignore_eos: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A package folder, or an ONNX model (`model.onnx`, or a folder holding one).
    #[arg(long)]
    pub model: PathBuf,
    /// Also list every tensor's offset in the packed buffer.
    #[arg(long)]
    pub tensors: bool,
}

/// One sequence of token ids (a newtype, so clap keeps one flag's list as one value).
#[derive(Debug, Clone)]
pub struct TokenIds(pub Vec<u32>);

fn parse_ids(s: &str) -> Result<TokenIds, String> {
    let ids: Result<Vec<u32>, _> = s.split(',').map(|t| t.trim().parse::<u32>()).collect();
    match ids {
        Ok(ids) if !ids.is_empty() => Ok(TokenIds(ids)),
        _ => Err(format!("{s:?} is not a comma-separated list of token ids")),
    }
}

/// Errors of the command-line layer.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Usage(String),
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Start(#[from] crate::runtime::StartError),
    #[error(transparent)]
    Device(#[from] crate::gpu::DeviceError),
}

/// Runs one parsed command. The rayon pool is sized here, before any computation.
pub fn run(cli: Cli) -> Result<(), CliError> {
    if let Some(n) = cli.threads {
        if n == 0 {
            return Err(CliError::Usage("--threads must be at least 1".into()));
        }
        // Fails only if the pool was already built, which nothing before this does.
        let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
    }
    match cli.command {
        Command::Serve(a) => serve::run(a),
        Command::Bench(a) => bench::run(a),
        Command::BareServer(a) => bench::bare_server(a),
        Command::Run(a) => infer::run(a),
        Command::Generate(a) => infer::generate(a),
        Command::Inspect(a) => infer::inspect(a),
        Command::Profile(a) => profile::run(a),
        Command::Synth(a) => synth::run(a),
        Command::Simulate(a) => simulate::run(a),
        Command::Token(a) => token(a),
        Command::DeviceCheck(a) => device_check::run(a),
    }
}

/// Writes one JSON document and a newline to stdout.
fn print_json(value: &impl serde::Serialize) -> Result<(), CliError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value).map_err(std::io::Error::from)?;
    writeln!(out)?;
    Ok(())
}

fn token(a: TokenArgs) -> Result<(), CliError> {
    let functions = (!a.functions.is_empty()).then_some(a.functions);
    let (token, sha256) = crate::auth::new_token();
    let spec = crate::auth::TokenSpec { name: a.name, scope: a.scope, sha256, functions };
    crate::auth::TokenSet::new(std::slice::from_ref(&spec), &[]).map_err(CliError::Usage)?;
    let mut toml = format!("[[tokens]]\nname = {:?}\nscope = {:?}\n", spec.name, spec.scope);
    if let Some(f) = &spec.functions {
        toml += &format!("functions = {f:?}\n");
    }
    toml += &format!("sha256 = {:?}\n", spec.sha256);
    print_json(&serde_json::json!({ "token": token, "sha256": spec.sha256, "config": toml }))
}
