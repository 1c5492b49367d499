//! `faaswap bench`: a closed-loop HTTP load generator for one function's infer endpoint
//! (KServe v2 JSON) — or, with `--openai`, streamed chats (`openai_bench`), or with `--scenario`,
//! a replay of a simulator scenario (`replay`) — and `faaswap bare-server`, a bare actix-web
//! route answering the same URL with a fixed body — the baseline that isolates faaswap's own
//! overhead.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::{print_json, CliError, TokenIds};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Server base URL.
    #[arg(long, visible_alias = "target", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Function to invoke (closed-loop mode).
    #[arg(long, required_unless_present = "scenario")]
    pub function: Option<String>,
    /// Replay this simulator scenario (`paper-node` or a TOML file) against a server running
    /// `sim` devices, deploying its functions from their profiles.
    #[arg(long, conflicts_with = "function")]
    pub scenario: Option<String>,
    /// Scenario mode: functions to deploy and replay.
    #[arg(long, default_value_t = 40)]
    pub functions: usize,
    /// Scenario mode: the workload's seed (as `simulate --seed`).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Scenario mode: wall time per scenario time (0.1 replays 10× faster); start the server
    /// with the same `--sim-time-scale`.
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// Scenario mode: replay only this many seconds of the workload.
    #[arg(long)]
    pub duration_s: Option<f64>,
    /// Scenario mode: replay a CSV trace (`time_ms,function`) instead.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Scenario mode: write the JSON report here.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Token ids of every request.
    #[arg(long = "input-ids", value_parser = super::parse_ids, default_value = "101,7592,2088,102")]
    pub input_ids: TokenIds,
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
    /// Clients sending at once (closed loop: each waits for its answer before sending again;
    /// scenario mode: the client threads that send the arrivals).
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Requests sent first and not measured.
    #[arg(long, default_value_t = 200)]
    pub warmup: usize,
    /// API token sent as `Authorization: Bearer` (closed-loop mode).
    #[arg(long, env = "FAASWAP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Send streamed chats to `/v1/chat/completions` (greedy) and report the time to the first
    /// token and between streamed pieces.
    #[arg(long, conflicts_with = "scenario")]
    pub openai: bool,
    /// `--openai`: the user message of every chat.
    #[arg(long, default_value = "Write a short story about a robot who learns to paint.")]
    pub prompt: String,
    /// `--openai`: tokens each chat generates at most.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
}

pub fn run(a: BenchArgs) -> Result<(), CliError> {
    if a.concurrency == 0 || a.requests == 0 {
        return Err(CliError::Usage("--requests and --concurrency must be at least 1".into()));
    }
    if let Some(s) = &a.scenario {
        return super::replay::run(&a, s);
    }
    if a.openai {
        return super::openai_bench::run(&a);
    }
    let function = a.function.as_deref().unwrap_or_default();
    let url = format!("{}/v2/models/{}/infer", a.url.trim_end_matches('/'), function);
    let ids = &a.input_ids.0;
    let body = json!({"inputs": [{"name": "input_ids", "shape": [1, ids.len()], "datatype": "INT64", "data": ids}]})
        .to_string();
    let auth = a.token.as_ref().map(|t| format!("Bearer {t}"));
    let send = |agent: &ureq::Agent| -> Result<(), String> {
        let mut req = agent.post(&url).set("Content-Type", "application/json");
        if let Some(auth) = &auth {
            req = req.set("Authorization", auth);
        }
        req.send_string(&body).map_err(|e| e.to_string())?.into_string().map(|_| ()).map_err(|e| e.to_string())
    };
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build();
    for _ in 0..a.warmup {
        send(&agent).map_err(|e| CliError::Usage(format!("warm-up request failed: {e}")))?;
    }
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let per_client: Vec<(Vec<f64>, usize)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..a.concurrency)
            .map(|_| {
                s.spawn(|| {
                    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build();
                    let (mut lat, mut errors) = (Vec::new(), 0);
                    while next.fetch_add(1, Ordering::Relaxed) < a.requests {
                        let t = Instant::now();
                        match send(&agent) {
                            Ok(()) => lat.push(t.elapsed().as_secs_f64() * 1e3),
                            Err(_) => errors += 1,
                        }
                    }
                    (lat, errors)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("bench client does not panic")).collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let errors: usize = per_client.iter().map(|(_, e)| e).sum();
    let mut lat: Vec<f64> = per_client.into_iter().flat_map(|(l, _)| l).collect();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat.get(((lat.len().max(1) - 1) as f64 * p).round() as usize).copied().unwrap_or(f64::NAN);
    print_json(&json!({
        "url": url,
        "requests": a.requests,
        "concurrency": a.concurrency,
        "ok": lat.len(),
        "errors": errors,
        "seconds": seconds,
        "throughput_rps": lat.len() as f64 / seconds,
        "mean_ms": lat.iter().sum::<f64>() / lat.len().max(1) as f64,
        "p50_ms": pct(0.5),
        "p90_ms": pct(0.9),
        "p99_ms": pct(0.99),
    }))
}

#[derive(Debug, Args)]
pub struct BareArgs {
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub addr: String,
    /// HTTP worker threads (as `serve --http-workers`) [default: one per core].
    #[arg(long, env = "FAASWAP_HTTP_WORKERS")]
    pub http_workers: Option<usize>,
}

/// Answers `POST /v2/models/{name}/infer` with a fixed KServe-shaped body after reading the
/// request: the least an HTTP inference endpoint can do.
pub fn bare_server(a: BareArgs) -> Result<(), CliError> {
    let reply = json!({"model_name": "bare", "model_version": "1", "outputs": [
        {"name": "last_hidden_state", "datatype": "FP32", "shape": [1, 1, 1], "data": [0.0]}]})
    .to_string();
    let workers = a.http_workers.unwrap_or_else(crate::config::default_workers).max(1);
    eprintln!("bare actix-web route on http://{}/v2/models/{{name}}/infer ({workers} workers)", a.addr);
    actix_rt::System::new().block_on(async move {
        HttpServer::new(move || {
            let reply = reply.clone();
            App::new().route(
                "/v2/models/{name}/infer",
                web::post().to(move |_body: web::Bytes| {
                    let reply = reply.clone();
                    async move { HttpResponse::Ok().content_type("application/json").body(reply) }
                }),
            )
        })
        .workers(workers)
        .bind(&a.addr)?
        .run()
        .await
    })?;
    Ok(())
}
