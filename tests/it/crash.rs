//! Crash safety: the real `faaswap serve` binary is killed with SIGKILL at random moments while
//! a client deploys, undeploys and invokes; after each restart every acknowledged deploy is
//! back and exact, nothing unacknowledged or half-written is visible, and the store opens.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::common::*;

struct Server {
    child: Child,
    url: String,
}

fn start(state: &Path, repo: &Path) -> Server {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_faaswap"))
        .args(["serve", "--addr", &format!("127.0.0.1:{port}"), "--devices", "cpu:1", "--device-memory", "64MiB"])
        .arg("--state-dir")
        .arg(state)
        .arg("--model-repository")
        .arg(repo)
        .stdout(Stdio::null())
        .stderr(if std::env::var_os("CRASH_DEBUG").is_some() { Stdio::inherit() } else { Stdio::null() })
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if ureq::get(&format!("{url}/v2/health/ready")).timeout(Duration::from_secs(2)).call().is_ok() {
            return Server { child, url };
        }
        std::thread::park_timeout(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the server did not become ready");
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build()
}

/// What the client knows: deploys acknowledged (and not undeployed since), and names whose
/// last deploy or undeploy got no answer before the kill (either state is allowed).
#[derive(Default)]
struct Ledger {
    acked: BTreeSet<String>,
    uncertain: BTreeSet<String>,
    deploys_acked: usize,
}

fn bert_case() -> (Vec<u32>, Vec<f32>) {
    let r = read_json(&tiny_bert().join("reference.json"));
    let c = &r["cases"][0];
    (ids(&c["input_ids"]), flat_rows(&c["last_hidden_state"]))
}

fn check_exact(url: &str, name: &str, case: &(Vec<u32>, Vec<f32>)) {
    let body =
        json!({"inputs": [{"name": "input_ids", "shape": [1, case.0.len()], "datatype": "INT64", "data": case.0}]});
    let v: Value = agent()
        .post(&format!("{url}/v2/models/{name}/infer"))
        .send_string(&body.to_string())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .into_json()
        .unwrap();
    let diff = max_abs_diff(&floats(&v["outputs"][0]["data"]), &case.1);
    assert!(diff <= 1e-4, "{name}: output off by {diff}");
}

/// Random deploys, undeploys and invokes until the server stops answering.
fn client(url: &str, ledger: &Mutex<Ledger>, seed: u64, stop: &AtomicBool, case: &(Vec<u32>, Vec<f32>)) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let agent = agent();
    while !stop.load(Ordering::Relaxed) {
        let name = format!("f{}", rng.random_range(0..12));
        let op = rng.random_range(0..3);
        let known = ledger.lock().unwrap().acked.contains(&name);
        if op == 0 || (op == 2 && !known) {
            ledger.lock().unwrap().uncertain.insert(name.clone());
            let r =
                agent.post(&format!("{url}/api/v1/functions")).send_json(json!({"name": name, "model": "tiny_bert"}));
            let mut l = ledger.lock().unwrap();
            match r {
                Ok(_) => {
                    l.uncertain.remove(&name);
                    l.acked.insert(name);
                    l.deploys_acked += 1;
                }
                Err(ureq::Error::Status(409, _)) => {
                    l.uncertain.remove(&name);
                    l.acked.insert(name);
                }
                Err(ureq::Error::Status(code, r)) => panic!("deploy {name}: {code} {}", r.into_string().unwrap()),
                Err(_) => return,
            }
        } else if op == 1 && known {
            ledger.lock().unwrap().uncertain.insert(name.clone());
            let r = agent.delete(&format!("{url}/api/v1/functions/{name}")).call();
            let mut l = ledger.lock().unwrap();
            match r {
                Ok(_) => {
                    l.uncertain.remove(&name);
                    l.acked.remove(&name);
                }
                Err(ureq::Error::Status(code, r)) => panic!("undeploy {name}: {code} {}", r.into_string().unwrap()),
                Err(_) => return,
            }
        } else {
            let body = json!({"inputs": [{"name": "input_ids", "shape": [1, case.0.len()], "datatype": "INT64", "data": case.0}]});
            match agent.post(&format!("{url}/v2/models/{name}/infer")).send_string(&body.to_string()) {
                Ok(r) => {
                    let v: Value = r.into_json().unwrap();
                    let diff = max_abs_diff(&floats(&v["outputs"][0]["data"]), &case.1);
                    assert!(diff <= 1e-4, "{name}: output off by {diff}");
                }
                // Undeployed by this client a moment ago is not possible (one client), so a 404
                // can only be a deploy that is still uncertain.
                Err(ureq::Error::Status(404, _)) => assert!(!ledger.lock().unwrap().acked.contains(&name)),
                Err(ureq::Error::Status(code, r)) => panic!("infer {name}: {code} {}", r.into_string().unwrap()),
                Err(_) => return,
            }
        }
    }
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_deploy() {
    let state = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    copy_dir(&tiny_bert(), &repo.path().join("tiny_bert"));
    let case = bert_case();
    let ledger = Mutex::new(Ledger::default());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20261128);
    const KILLS: usize = 20;
    for round in 0..KILLS {
        let mut server = start(state.path(), repo.path());
        // After a restart: exactly the acknowledged functions (plus, possibly, uncertain ones)
        // are back, and each gives exact outputs.
        let list: Value = agent().get(&format!("{}/api/v1/functions", server.url)).call().unwrap().into_json().unwrap();
        let present: BTreeSet<String> =
            list.as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap().to_string()).collect();
        {
            let mut l = ledger.lock().unwrap();
            // An undeploy cut off by the kill may have landed: uncertain names may be absent.
            let missing: Vec<_> =
                l.acked.iter().filter(|n| !present.contains(*n) && !l.uncertain.contains(*n)).collect();
            assert!(missing.is_empty(), "round {round}: acknowledged deploys lost: {missing:?}");
            let unexpected: Vec<_> =
                present.iter().filter(|n| !l.acked.contains(*n) && !l.uncertain.contains(*n)).collect();
            assert!(unexpected.is_empty(), "round {round}: never acknowledged yet present: {unexpected:?}");
            // From here on, what is present is what is deployed.
            l.acked = present.clone();
            l.uncertain.clear();
        }
        for name in &present {
            check_exact(&server.url, name, &case);
        }
        // Every package copy on disk belongs to a present function (no half-written copies).
        let packages = std::fs::read_dir(state.path().join("packages")).map_or(0, |d| d.count());
        assert_eq!(packages, present.len(), "round {round}: package copies vs functions");
        let stop = AtomicBool::new(false);
        let kill_after = Duration::from_millis(rng.random_range(30..400));
        std::thread::scope(|s| {
            let (url, ledger, stop, case) = (&server.url, &ledger, &stop, &case);
            let worker = s.spawn(move || client(url, ledger, round as u64, stop, case));
            std::thread::park_timeout(kill_after);
            server.child.kill().unwrap(); // SIGKILL on Unix
            server.child.wait().unwrap();
            stop.store(true, Ordering::Relaxed);
            worker.join().unwrap();
        });
    }
    let l = ledger.lock().unwrap();
    eprintln!("{KILLS} kills, {} deploys acknowledged, 0 lost", l.deploys_acked);
    assert!(l.deploys_acked >= KILLS / 2, "the client got deploys through: {}", l.deploys_acked);
}
