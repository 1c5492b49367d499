//! Correctness under swap pressure: many functions, each a distinct seeded nano model with its
//! own reference outputs (computed on the host, outside the server), on `cpu` devices whose
//! pools hold a small fraction of them, driven by concurrent clients. Every response must equal
//! its own model's reference bit for bit; nothing may crash; after undeploying everything, no
//! page may stay in use.
//!
//! CI runs a short soak. The long one, with its figures printed:
//! `FAASWAP_SOAK_FUNCTIONS=400 FAASWAP_SOAK_SECS=300 FAASWAP_SOAK_CLIENTS=16 cargo test --release --test it soak -- --nocapture`

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use faaswap::engine::{Model, OutputKind, TokenBatch};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::common::{floats, synth_package};
use crate::server::TestServer;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One function's inputs and the outputs its own model gives on the host.
struct Reference {
    name: String,
    cases: Vec<(Vec<u32>, Vec<f32>)>,
}

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    swaps: AtomicU64,
    wrong: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
}

#[test]
fn every_output_is_exact_under_swap_pressure() {
    let functions = env("FAASWAP_SOAK_FUNCTIONS", 120) as usize;
    let secs = env("FAASWAP_SOAK_SECS", 15);
    let clients = env("FAASWAP_SOAK_CLIENTS", 6);
    let repo = tempfile::tempdir().unwrap();
    let mut references = Vec::with_capacity(functions);
    for i in 0..functions {
        let (preset, output) =
            if i % 2 == 0 { ("bert-nano", OutputKind::LastHiddenState) } else { ("gpt2-nano", OutputKind::Logits) };
        let name = format!("f{i:03}");
        let dir = repo.path().join(&name);
        synth_package(preset, 1000 + i as u64, &dir);
        let model = Model::load(&dir).unwrap();
        let cases = (0..3)
            .map(|k| {
                let ids: Vec<u32> = (0..(3 + 5 * k)).map(|t| ((i * 37 + k * 11 + t * 7) % 1000) as u32).collect();
                let out =
                    model.infer(&TokenBatch::from_sequences(std::slice::from_ref(&ids)).unwrap(), &[output]).unwrap();
                (ids, out[0].data.clone())
            })
            .collect();
        references.push(Reference { name, cases });
    }
    let state = tempfile::tempdir().unwrap();
    // A nano model packs into 4 pages of 64 KiB; each pool holds 12 of them.
    let server = TestServer::start(state.path(), repo.path(), |a| {
        a.devices = Some("cpu:2".into());
        a.device_memory = Some("3MiB".into());
        a.page_size = Some("64KiB".into());
        a.workspace = Some("16MiB".into());
    });
    for r in &references {
        let (status, body) = server.post("/api/v1/functions", &json!({"name": r.name, "model": r.name}));
        assert_eq!(status, 201, "{body}");
    }
    let (_, devices) = server.get("/api/v1/devices");
    let start_used: Vec<u64> = devices.as_array().unwrap().iter().map(|d| d["used_bytes"].as_u64().unwrap()).collect();
    assert_eq!(start_used, vec![0, 0], "nothing is resident before the first request");

    let counts = Counts::default();
    let deadline = Instant::now() + Duration::from_secs(secs);
    std::thread::scope(|scope| {
        for c in 0..clients {
            let (server, references, counts) = (&server, &references, &counts);
            scope.spawn(move || {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(c);
                let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build();
                while Instant::now() < deadline {
                    let r = &references[rng.random_range(0..references.len())];
                    let (ids, want) = &r.cases[rng.random_range(0..r.cases.len())];
                    let body = json!({"inputs": [{"name": "input_ids", "shape": [1, ids.len()], "datatype": "INT64", "data": ids}]});
                    let url = format!("{}/v2/models/{}/infer", server.url, r.name);
                    counts.requests.fetch_add(1, Ordering::Relaxed);
                    let v: Value = match agent.post(&url).send_string(&body.to_string()) {
                        Ok(resp) => resp.into_json().unwrap(),
                        Err(ureq::Error::Status(429 | 503, _)) => {
                            counts.refused.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        Err(e) => {
                            eprintln!("{}: {e}", r.name);
                            counts.failed.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    };
                    if v["parameters"]["swapped_bytes"].as_u64().unwrap_or(0) > 0 {
                        counts.swaps.fetch_add(1, Ordering::Relaxed);
                    }
                    let got: Vec<f32> = floats(&v["outputs"][0]["data"]);
                    if got.len() != want.len() || got.iter().zip(want).any(|(a, b)| a.to_bits() != b.to_bits()) {
                        eprintln!("{}: wrong output for {ids:?}", r.name);
                        counts.wrong.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let (requests, swaps, wrong, refused, failed) =
        (load(&counts.requests), load(&counts.swaps), load(&counts.wrong), load(&counts.refused), load(&counts.failed));
    println!(
        "soak: {functions} functions, {clients} clients, {secs} s: {requests} requests, {swaps} swaps, \
         {wrong} wrong outputs, {refused} refused (429/503), {failed} failed"
    );
    assert_eq!(server.get("/v2/health/live").0, 200, "the server is up");
    assert_eq!((wrong, failed), (0, 0), "every response exact, none failed");
    let served = requests - refused;
    assert!(served >= 100 && swaps * 2 >= served, "most requests swap: {swaps} swaps of {served} served");
    assert!(refused * 20 <= requests, "refusals stay rare at this load: {refused} of {requests}");
    // Undeploy everything: every page returns to the pools.
    for r in &references {
        assert_eq!(server.request("DELETE", &format!("/api/v1/functions/{}", r.name), None).0, 200);
    }
    let (_, devices) = server.get("/api/v1/devices");
    for d in devices.as_array().unwrap() {
        assert_eq!(d["used_bytes"], 0, "leaked pages: {d}");
        assert_eq!(d["resident"], json!([]), "{d}");
    }
    server.stop();
}
