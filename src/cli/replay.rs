//! `faaswap bench --scenario`: deploys a scenario's functions from their profiles on a server
//! running `sim` devices, replays the scenario's workload over HTTP in real time (optionally
//! sped up), and reports the same figures as `faaswap simulate` — with a note on how far they
//! land from `simulate` on the same seed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::bench::BenchArgs;
use super::CliError;
use crate::policy::{estimate, PolicyKind};
use crate::simulator::report::Counts;
use crate::simulator::{self, workload, Report, RunReport, Scenario, SimOptions};

/// One answered request: its function, latency in scenario ms (infinite when refused), and
/// where and how long it ran.
struct Outcome {
    function: usize,
    latency_ms: f64,
    device: Option<String>,
    swap: Option<String>,
    busy_ms: f64,
    error: bool,
}

pub fn run(a: &BenchArgs, scenario_spec: &str) -> Result<(), CliError> {
    let usage = |m: String| CliError::Usage(m);
    let mut scenario = Scenario::load(scenario_spec).map_err(|e| usage(e.to_string()))?;
    if let Some(d) = a.duration_s {
        if !(d > 0.0 && d.is_finite()) {
            return Err(usage("--duration-s must be positive".into()));
        }
        scenario.workload.duration_s = d;
    }
    let n = a.functions;
    if n == 0 || n > 100_000 {
        return Err(usage("--functions must be 1 to 100000".into()));
    }
    if !(a.time_scale > 0.0 && a.time_scale.is_finite()) {
        return Err(usage("--time-scale must be positive".into()));
    }
    let base = a.url.trim_end_matches('/').to_string();
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(120)).build();
    let server: Value = agent
        .get(&format!("{base}/api/v1/scheduler"))
        .call()
        .map_err(|e| usage(format!("{base}: {e}")))?
        .into_json()
        .map_err(|e| usage(format!("{base}/api/v1/scheduler: {e}")))?;
    let policy: PolicyKind = server["policy"].as_str().unwrap_or("faaswap").parse().map_err(usage)?;
    let shed = server["shed"].as_bool().unwrap_or(false);
    let server_scale = server["sim_time_scale"].as_f64();
    if server_scale.is_some_and(|s| (s - a.time_scale).abs() > 1e-9) {
        eprintln!(
            "warning: the server's --sim-time-scale is {} but --time-scale is {}: modelled device times and the replay clock disagree",
            server_scale.unwrap_or(1.0),
            a.time_scale
        );
    }
    deploy(&agent, &base, &scenario, n)?;
    let trace = match &a.trace {
        Some(path) => workload::load_csv(path, &scenario, n).map_err(|e| usage(e.to_string()))?,
        None => workload::generate(&scenario, n, a.seed),
    };
    eprintln!(
        "replaying {} requests of {n} functions over {:.0} s ({}× time scale, policy {policy})",
        trace.len(),
        scenario.workload.duration_s * a.time_scale,
        a.time_scale
    );
    let started = Instant::now();
    let outcomes = replay(&base, &scenario, &trace, a.time_scale, a.concurrency.max(1));
    let wall_ms = started.elapsed().as_secs_f64() * 1e3;
    let mut latencies = vec![Vec::new(); n];
    let mut counts = Counts { requests: trace.len(), ..Counts::default() };
    let mut errors = 0;
    let mut busy: Vec<(String, f64)> = Vec::new();
    for o in &outcomes {
        latencies[o.function].push(o.latency_ms);
        if !o.latency_ms.is_finite() {
            counts.dropped += 1;
        }
        errors += usize::from(o.error);
        match o.swap.as_deref() {
            Some("host") => counts.swaps_host += 1,
            Some(s) if s.starts_with("peer") => counts.swaps_peer += 1,
            _ => {}
        }
        if let Some(d) = &o.device {
            match busy.iter_mut().find(|(id, _)| id == d) {
                Some(b) => b.1 += o.busy_ms,
                None => busy.push((d.clone(), o.busy_ms)),
            }
        }
    }
    busy.sort_by(|x, y| x.0.cmp(&y.0));
    let gpu_busy = busy.iter().map(|(_, ms)| ms / wall_ms).collect();
    let mut measured = RunReport::from_latencies(&scenario, policy.name(), &latencies, counts, gpu_busy);
    measured.source = Some("http".into());
    let simulated = simulator::run(&scenario, SimOptions { policy, functions: n, seed: a.seed, shed }, &trace);
    let fmt = |x: Option<f64>| x.map_or("-".into(), |v| format!("{v:.1}"));
    let note = format!(
        "measured over HTTP vs simulate on the same seed and trace: compliant {:.4} vs {:.4} ({:+.4}); \
         p50 {} vs {} ms; p98 {} vs {} ms; dropped {} vs {}; host swaps {} vs {}; {} requests failed \
         otherwise (counted as dropped). Latencies are client-side, scaled back by 1/{}; device busy \
         time from each response's swap and execution times.",
        measured.compliant_fraction,
        simulated.compliant_fraction,
        measured.compliant_fraction - simulated.compliant_fraction,
        fmt(measured.p50_ms),
        fmt(simulated.p50_ms),
        fmt(measured.p98_ms),
        fmt(simulated.p98_ms),
        measured.dropped,
        simulated.dropped,
        measured.swaps_host,
        simulated.swaps_host,
        errors,
        a.time_scale
    );
    let report = Report {
        scenario: scenario.name.clone(),
        seed: a.seed,
        batched_exec_model: estimate::BATCH_MODEL.to_string(),
        shed,
        runs: vec![measured, simulated],
        note: Some(note.clone()),
    };
    print!("{}", report.table(true));
    println!("{note}");
    if let Some(path) = &a.output {
        std::fs::write(path, serde_json::to_string_pretty(&report).map_err(std::io::Error::from)? + "\n")?;
    }
    Ok(())
}

/// Creates every function of the scenario from its profile (an existing one is kept).
fn deploy(agent: &ureq::Agent, base: &str, s: &Scenario, n: usize) -> Result<(), CliError> {
    for i in 0..n {
        let m = s.model_of(i);
        let body = json!({
            "name": s.function_name(i),
            "profile": {"weight_bytes": m.bytes, "exec_ms": m.exec_ms, "class": m.class},
            "settings": {"slo_ms": m.deadline_ms, "slo_percentile": m.percentile, "max_batch": s.max_batch},
        });
        match agent.post(&format!("{base}/api/v1/functions")).send_json(body) {
            Ok(_) | Err(ureq::Error::Status(409, _)) => {}
            Err(ureq::Error::Status(code, r)) => {
                let text = r.into_string().unwrap_or_default();
                return Err(CliError::Usage(format!("deploying {}: {code} {text}", s.function_name(i))));
            }
            Err(e) => return Err(CliError::Usage(format!("deploying {}: {e}", s.function_name(i)))),
        }
    }
    Ok(())
}

/// Sends each arrival at its (scaled) time from a pool of client threads; latency runs from
/// the scheduled arrival, so a late send counts against the server, as it would in production.
#[allow(clippy::disallowed_methods)] // the dispatcher waits for each arrival's wall-clock time
fn replay(base: &str, s: &Scenario, trace: &[simulator::Arrival], scale: f64, clients: usize) -> Vec<Outcome> {
    let names: Vec<String> =
        (0..trace.iter().map(|a| a.function + 1).max().unwrap_or(0)).map(|i| s.function_name(i)).collect();
    let (tx, rx) = mpsc::channel::<(usize, Instant)>();
    let rx = Arc::new(Mutex::new(rx));
    let body =
        json!({"inputs": [{"name": "input_ids", "shape": [1, 1], "datatype": "INT64", "data": [1]}]}).to_string();
    let done = AtomicUsize::new(0);
    let start = Instant::now() + Duration::from_millis(200);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                let rx = rx.clone();
                let (names, body, done) = (&names, &body, &done);
                scope.spawn(move || {
                    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(300)).build();
                    let mut out = Vec::new();
                    loop {
                        let next = rx.lock().map(|r| r.recv());
                        let Ok(Ok((i, due))) = next else { break };
                        let f = trace[i].function;
                        let url = format!("{base}/v2/models/{}/infer", names[f]);
                        let resp = agent.post(&url).set("Content-Type", "application/json").send_string(body);
                        let latency_ms = due.elapsed().as_secs_f64() * 1e3 / scale;
                        out.push(outcome(f, latency_ms, resp));
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    out
                })
            })
            .collect();
        for (i, a) in trace.iter().enumerate() {
            let due = start + Duration::from_secs_f64(a.time_ms * scale / 1e3);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if tx.send((i, due)).is_err() {
                break;
            }
        }
        drop(tx);
        workers.into_iter().flat_map(|w| w.join().expect("replay client does not panic")).collect()
    })
}

fn outcome(function: usize, latency_ms: f64, resp: Result<ureq::Response, ureq::Error>) -> Outcome {
    let refused = Outcome { function, latency_ms: f64::INFINITY, device: None, swap: None, busy_ms: 0.0, error: false };
    match resp {
        Ok(r) => {
            let v: Value = r.into_json().unwrap_or(Value::Null);
            let p = &v["parameters"];
            let swap_ms = p["swap_ms"].as_f64().unwrap_or(0.0);
            let exec_ms = p["execute_ms"].as_f64().unwrap_or(0.0);
            Outcome {
                function,
                latency_ms,
                device: p["device"].as_str().map(String::from),
                swap: p["swap_source"].as_str().map(String::from),
                busy_ms: swap_ms.max(exec_ms),
                error: false,
            }
        }
        // Shed or unplaced: a miss the server chose, not a failure.
        Err(ureq::Error::Status(503, _)) => refused,
        Err(_) => Outcome { error: true, ..refused },
    }
}
