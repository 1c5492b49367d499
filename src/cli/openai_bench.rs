//! `faaswap bench --openai`: streamed chats against the OpenAI-compatible API by clients that
//! each wait for their answer before sending again, timing what a chat's user sees — the first
//! token (the stream's first event: a stream starts with its first token) and the gaps between
//! the streamed pieces of text after it (a piece is a token's text, unless a token ended inside
//! a character and its text came with the next).

use std::io::BufRead;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::bench::BenchArgs;
use super::{print_json, CliError};

/// One streamed chat.
struct Timed {
    first_ms: f64,
    gaps_ms: Vec<f64>,
    tokens: u64,
}

pub fn run(a: &BenchArgs) -> Result<(), CliError> {
    let function = a.function.as_deref().unwrap_or_default();
    let url = format!("{}/v1/chat/completions", a.url.trim_end_matches('/'));
    let body = json!({
        "model": function,
        "messages": [{"role": "user", "content": a.prompt}],
        "max_tokens": a.max_tokens,
        "temperature": 0,
        "stream": true,
        "stream_options": {"include_usage": true},
    })
    .to_string();
    let auth = a.token.as_ref().map(|t| format!("Bearer {t}"));
    let chat = |agent: &ureq::Agent| chat(agent, &url, auth.as_deref(), &body);
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(600)).build();
    for _ in 0..a.warmup {
        chat(&agent).map_err(|e| CliError::Usage(format!("warm-up request failed: {e}")))?;
    }
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let per_client: Vec<(Vec<Timed>, usize)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..a.concurrency)
            .map(|_| {
                s.spawn(|| {
                    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(600)).build();
                    let (mut done, mut errors) = (Vec::new(), 0);
                    while next.fetch_add(1, Ordering::Relaxed) < a.requests {
                        match chat(&agent) {
                            Ok(t) => done.push(t),
                            Err(_) => errors += 1,
                        }
                    }
                    (done, errors)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("bench client does not panic")).collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let errors: usize = per_client.iter().map(|(_, e)| e).sum();
    let done: Vec<Timed> = per_client.into_iter().flat_map(|(d, _)| d).collect();
    let tokens: u64 = done.iter().map(|t| t.tokens).sum();
    let first: Vec<f64> = done.iter().map(|t| t.first_ms).collect();
    let gaps: Vec<f64> = done.iter().flat_map(|t| t.gaps_ms.iter().copied()).collect();
    print_json(&json!({
        "url": url,
        "function": function,
        "requests": a.requests,
        "concurrency": a.concurrency,
        "max_tokens": a.max_tokens,
        "ok": done.len(),
        "errors": errors,
        "seconds": seconds,
        "completion_tokens": tokens,
        "tokens_per_s": tokens as f64 / seconds,
        "ttft_ms": summary(first),
        "inter_token_ms": summary(gaps),
    }))
}

fn summary(mut ms: Vec<f64>) -> Value {
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| ms.get(((ms.len().max(1) - 1) as f64 * p).round() as usize).copied().unwrap_or(f64::NAN);
    json!({"mean": ms.iter().sum::<f64>() / ms.len().max(1) as f64, "p50": pct(0.5), "p99": pct(0.99)})
}

/// Sends one streamed chat and times its events.
fn chat(agent: &ureq::Agent, url: &str, auth: Option<&str>, body: &str) -> Result<Timed, String> {
    let sent = Instant::now();
    let mut req = agent.post(url).set("Content-Type", "application/json");
    if let Some(auth) = auth {
        req = req.set("Authorization", auth);
    }
    let response = req.send_string(body).map_err(|e| e.to_string())?;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (mut first_ms, mut last_piece, mut gaps_ms, mut tokens) = (None, None, Vec::new(), 0);
    for line in std::io::BufReader::new(response.into_reader()).lines() {
        let line = line.map_err(|e| e.to_string())?;
        let Some(data) = line.strip_prefix("data: ") else { continue };
        let now = Instant::now();
        first_ms.get_or_insert_with(|| ms(now - sent));
        if data == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(data).map_err(|e| e.to_string())?;
        if let Some(error) = chunk.get("error") {
            return Err(error.to_string());
        }
        if let Some(n) = chunk["usage"]["completion_tokens"].as_u64() {
            tokens = n;
        }
        if chunk["choices"][0]["delta"]["content"].as_str().is_some_and(|c| !c.is_empty()) {
            if let Some(last) = last_piece.replace(now) {
                gaps_ms.push(ms(now - last));
            }
        }
    }
    let first_ms = first_ms.ok_or("the stream had no events")?;
    Ok(Timed { first_ms, gaps_ms, tokens })
}
