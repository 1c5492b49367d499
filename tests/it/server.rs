//! The real server on an ephemeral port with a real sled store in a temporary folder, spoken
//! to over real HTTP: deploys, swapping under memory pressure with exact outputs, restarts,
//! the KServe and management APIs, and their errors.

use std::net::TcpListener;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use faaswap::config::ServeArgs;
use serde_json::{json, Value};

use crate::common::*;

pub struct TestServer {
    pub url: String,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    /// Starts `faaswap serve` in this process on 127.0.0.1:0.
    pub fn start(state: &Path, repo: &Path, extra: impl FnOnce(&mut ServeArgs)) -> Self {
        let mut args = ServeArgs {
            state_dir: Some(state.to_path_buf()),
            model_repository: Some(repo.to_path_buf()),
            devices: Some("cpu:1".into()),
            device_memory: Some("64MiB".into()),
            ..ServeArgs::default()
        };
        extra(&mut args);
        let config = args.resolve().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let server = faaswap::server::start(config, listener).expect("server starts");
                tx.send(server.handle()).unwrap();
                server.await.unwrap();
            });
        });
        let handle = rx.recv().unwrap();
        let server = Self { url, handle, thread: Some(thread) };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.get("/v2/health/ready").0 == 200 {
                return;
            }
            std::thread::park_timeout(Duration::from_millis(20));
        }
        panic!("server did not become ready");
    }

    /// Stops the server and waits until its store is closed.
    pub fn stop(mut self) {
        actix_rt::System::new().block_on(self.handle.stop(true));
        self.thread.take().unwrap().join().unwrap();
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        response(ureq::get(&format!("{}{path}", self.url)).call())
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        response(ureq::post(&format!("{}{path}", self.url)).send_string(&body.to_string()))
    }

    pub fn post_raw(&self, path: &str, body: &[u8], headers: &[(&str, &str)]) -> (u16, ureq::Response) {
        let mut req = ureq::post(&format!("{}{path}", self.url));
        for (k, v) in headers {
            req = req.set(k, v);
        }
        match req.send_bytes(body) {
            Ok(r) => (r.status(), r),
            Err(ureq::Error::Status(code, r)) => (code, r),
            Err(e) => panic!("transport error: {e}"),
        }
    }

    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let req = ureq::request(method, &format!("{}{path}", self.url));
        response(match body {
            Some(b) => req.send_string(&b.to_string()),
            None => req.call(),
        })
    }

    pub fn metric(&self, name_and_labels: &str) -> f64 {
        let text = ureq::get(&format!("{}/metrics", self.url)).call().unwrap().into_string().unwrap();
        text.lines()
            .filter(|l| l.starts_with(name_and_labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            actix_rt::System::new().block_on(self.handle.stop(false));
            let _ = t.join();
        }
    }
}

fn response(r: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    let r = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = r.status();
    let text = r.into_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// A model repository holding the two tiny fixtures.
pub fn repository() -> tempfile::TempDir {
    let repo = tempfile::tempdir().unwrap();
    for (name, src) in [("tiny_bert", tiny_bert()), ("tiny_gpt2", tiny_gpt2())] {
        copy_dir(&src, &repo.path().join(name));
    }
    repo
}

fn ids_input(ids: &[u32]) -> Value {
    json!({"inputs": [{"name": "input_ids", "shape": [1, ids.len()], "datatype": "INT64", "data": ids}]})
}

fn bert_cases() -> Vec<(Vec<u32>, Vec<f32>)> {
    let r = read_json(&tiny_bert().join("reference.json"));
    r["cases"].as_array().unwrap().iter().map(|c| (ids(&c["input_ids"]), flat_rows(&c["last_hidden_state"]))).collect()
}

fn gpt2_cases() -> Vec<(Vec<u32>, Vec<f32>)> {
    let r = read_json(&tiny_gpt2().join("reference.json"));
    r["cases"].as_array().unwrap().iter().map(|c| (ids(&c["input_ids"]), floats(&c["last_position_logits"]))).collect()
}

fn check_bert(v: &Value, want: &[f32]) {
    let out = &v["outputs"][0];
    assert_eq!(out["name"], "last_hidden_state", "{v}");
    let diff = max_abs_diff(&floats(&out["data"]), want);
    assert!(diff <= 1e-4, "BERT output off by {diff}");
}

fn check_gpt2(v: &Value, want: &[f32]) {
    let out = &v["outputs"][0];
    assert_eq!(out["name"], "logits", "{v}");
    let data = floats(&out["data"]);
    let diff = max_abs_diff(&data[data.len() - 512..], want);
    assert!(diff <= 1e-4, "GPT-2 logits off by {diff}");
}

fn deploy_fixtures(s: &TestServer) {
    for name in ["tiny_bert", "tiny_gpt2"] {
        let (status, body) = s.post(&format!("/v2/repository/models/{name}/load"), &json!({}));
        assert_eq!(status, 200, "{body}");
    }
}

#[test]
fn swapping_under_memory_pressure_keeps_every_output_exact() {
    let state = tempfile::tempdir().unwrap();
    let repo = repository();
    // One device whose pool holds one tiny model but not both: alternating requests swap.
    let s = TestServer::start(state.path(), repo.path(), |a| {
        a.device_memory = Some("768KiB".into());
        a.page_size = Some("64KiB".into());
        a.host_link = Some("2GB/s".into());
    });
    deploy_fixtures(&s);
    let (bert, gpt2) = (bert_cases(), gpt2_cases());
    // The two packed models take 10 and 9 pages of 64 KiB; the pool has 12: every request
    // finds the other model resident and must evict it and swap its own in.
    for round in 0..3 {
        for i in 0..4 {
            let (_, v) = s.post("/v2/models/tiny_bert/infer", &ids_input(&bert[i].0));
            check_bert(&v, &bert[i].1);
            assert!(v["parameters"]["swapped_bytes"].as_u64().unwrap() > 0, "round {round}, BERT case {i} swaps in");
            let (_, v) = s.post("/v2/models/tiny_gpt2/infer", &ids_input(&gpt2[i].0));
            check_gpt2(&v, &gpt2[i].1);
            assert!(v["parameters"]["swapped_bytes"].as_u64().unwrap() > 0, "round {round}, GPT-2 case {i} swaps in");
        }
    }
    // Metrics are process-wide (other tests' servers add to them): lower bounds only.
    assert!(s.metric("faaswap_swaps_total{source=\"host\"}") >= 24.0);
    assert!(s.metric("faaswap_evictions_total{reason=\"reload_cost\"}") >= 23.0);
    let (_, devices) = s.get("/api/v1/devices");
    assert_eq!(devices[0]["id"], "cpu:0");
    assert_eq!(devices[0]["kind"], "cpu");
    assert!(devices[0]["used_bytes"].as_u64().unwrap() <= devices[0]["capacity_bytes"].as_u64().unwrap());
}

#[test]
fn concurrent_clients_on_two_devices_get_exact_outputs() {
    let state = tempfile::tempdir().unwrap();
    let repo = repository();
    let s = TestServer::start(state.path(), repo.path(), |a| {
        a.devices = Some("cpu:2".into());
        a.device_memory = Some("768KiB".into());
        a.page_size = Some("64KiB".into());
    });
    deploy_fixtures(&s);
    let (bert, gpt2) = (bert_cases(), gpt2_cases());
    std::thread::scope(|scope| {
        for t in 0..4 {
            let (s, bert, gpt2) = (&s, &bert, &gpt2);
            scope.spawn(move || {
                for i in 0..6 {
                    let k = (t + i) % 4;
                    if (t + i) % 2 == 0 {
                        check_bert(&s.post("/v2/models/tiny_bert/infer", &ids_input(&bert[k].0)).1, &bert[k].1);
                    } else {
                        check_gpt2(&s.post("/v2/models/tiny_gpt2/infer", &ids_input(&gpt2[k].0)).1, &gpt2[k].1);
                    }
                }
            });
        }
    });
    let (_, stats) = s.get("/v2/models/tiny_bert/stats");
    assert_eq!(stats["model_stats"][0]["inference_stats"]["success"]["count"], 12);
}

#[test]
fn deploys_survive_a_restart() {
    let state = tempfile::tempdir().unwrap();
    let repo = repository();
    let settings = json!({"slo_ms": 250.0, "slo_percentile": 0.95, "max_batch": 4, "dtype": "f32", "compute": "f32"});
    {
        let s = TestServer::start(state.path(), repo.path(), |_| {});
        let (status, body) =
            s.post("/api/v1/functions", &json!({"name": "enc", "model": "tiny_bert", "settings": settings}));
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["settings"], settings);
        s.stop();
    }
    // The repository copy may go away: the store holds its own.
    std::fs::remove_dir_all(repo.path().join("tiny_bert")).unwrap();
    let s = TestServer::start(state.path(), repo.path(), |_| {});
    let (status, f) = s.get("/api/v1/functions/enc");
    assert_eq!(status, 200, "{f}");
    assert_eq!(f["settings"], settings);
    let (ids, want) = &bert_cases()[2];
    let (status, v) = s.post("/v2/models/enc/infer", &ids_input(ids));
    assert_eq!(status, 200, "{v}");
    check_bert(&v, want);
    let (status, _) = s.request("DELETE", "/api/v1/functions/enc", None);
    assert_eq!(status, 200);
    s.stop();
    let s = TestServer::start(state.path(), repo.path(), |_| {});
    assert_eq!(s.get("/api/v1/functions/enc").0, 404, "a deleted function stays deleted");
    let packages: Vec<_> = std::fs::read_dir(state.path().join("packages")).unwrap().collect();
    assert!(packages.is_empty(), "its package copy is gone");
}

#[test]
fn kserve_metadata_repository_and_stats() {
    let state = tempfile::tempdir().unwrap();
    let repo = repository();
    let s = TestServer::start(state.path(), repo.path(), |_| {});
    let (_, meta) = s.get("/v2");
    assert!(meta["extensions"].as_array().unwrap().contains(&json!("model_repository")));
    assert_eq!(s.get("/v2/health/live").0, 200);
    let (_, index) = s.post("/v2/repository/index", &json!({}));
    assert_eq!(
        index,
        json!([
            {"name": "tiny_bert", "version": "1", "state": "UNAVAILABLE", "reason": "not loaded"},
            {"name": "tiny_gpt2", "version": "1", "state": "UNAVAILABLE", "reason": "not loaded"},
        ])
    );
    // Nothing deploys on first use.
    assert_eq!(s.post("/v2/models/tiny_bert/infer", &ids_input(&[1, 2])).0, 404);
    let config = json!({"slo_ms": 50.0}).to_string();
    let (status, _) = s.post("/v2/repository/models/tiny_bert/load", &json!({"parameters": {"config": config}}));
    assert_eq!(status, 200);
    assert_eq!(s.post("/v2/repository/models/tiny_bert/load", &json!({})).0, 200, "loading twice is fine");
    let (_, f) = s.get("/api/v1/functions/tiny_bert");
    assert_eq!(f["settings"]["slo_ms"], 50.0);
    let (_, model) = s.get("/v2/models/tiny_bert");
    assert_eq!(model["name"], "tiny_bert");
    assert!(model["inputs"].as_array().unwrap().iter().any(|i| i["name"] == "attention_mask"));
    assert_eq!(model["outputs"][0]["name"], "last_hidden_state");
    assert_eq!(s.get("/v2/models/tiny_bert/ready").0, 200);
    // attention_mask and token_type_ids are optional; a padded batch masks its padding.
    let body = json!({"inputs": [
        {"name": "input_ids", "shape": [2, 3], "datatype": "INT64", "data": [[5, 6, 7], [8, 9, 0]]},
        {"name": "attention_mask", "shape": [2, 3], "datatype": "INT64", "data": [[1, 1, 1], [1, 1, 0]]},
    ], "outputs": [{"name": "last_hidden_state"}], "id": "req-1"});
    let (status, v) = s.post("/v2/models/tiny_bert/infer", &body);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["id"], "req-1");
    assert_eq!(v["outputs"][0]["shape"], json!([2, 3, 64]));
    let (_, stats) = s.get("/v2/models/tiny_bert/stats");
    assert_eq!(stats["model_stats"][0]["inference_stats"]["success"]["count"], 1);
    let (_, index) = s.post("/v2/repository/index", &json!({"ready": true}));
    assert_eq!(index.as_array().unwrap().len(), 1);
    assert_eq!(
        s.post("/v2/repository/models/tiny_bert/unload", &json!({"parameters": {"unload_dependents": false}})).0,
        200
    );
    assert_eq!(s.get("/v2/models/tiny_bert/ready").0, 404);
}

#[test]
fn binary_tensor_extension_round_trip() {
    let state = tempfile::tempdir().unwrap();
    let repo = repository();
    let s = TestServer::start(state.path(), repo.path(), |_| {});
    deploy_fixtures(&s);
    let (ids, want) = &gpt2_cases()[1];
    let head = json!({
        "inputs": [{"name": "input_ids", "shape": [1, ids.len()], "datatype": "INT64", "parameters": {"binary_data_size": ids.len() * 8}}],
        "outputs": [{"name": "logits", "parameters": {"binary_data": true}}],
    })
    .to_string();
    let mut body = head.clone().into_bytes();
    for &id in ids {
        body.extend((id as i64).to_le_bytes());
    }
    let len = head.len().to_string();
    let (status, resp) = s.post_raw("/v2/models/tiny_gpt2/infer", &body, &[("Inference-Header-Content-Length", &len)]);
    assert_eq!(status, 200);
    let json_len: usize = resp.header("Inference-Header-Content-Length").unwrap().parse().unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut bytes).unwrap();
    let header: Value = serde_json::from_slice(&bytes[..json_len]).unwrap();
    let out = &header["outputs"][0];
    assert_eq!(out["shape"], json!([1, ids.len(), 512]));
    let data: Vec<f32> = bytes[json_len..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(out["parameters"]["binary_data_size"].as_u64().unwrap() as usize, data.len() * 4);
    assert!(max_abs_diff(&data[data.len() - 512..], want) <= 1e-4);
}

#[test]
fn api_errors_have_stable_codes() {
    let state = tempfile::tempdir().unwrap();
    let repo = repository();
    let s = TestServer::start(state.path(), repo.path(), |a| {
        a.max_body = Some("64KiB".into());
        a.device_memory = Some("512KiB".into());
        a.page_size = Some("64KiB".into());
    });
    let code = |r: (u16, Value)| (r.0, r.1["code"].as_str().unwrap_or_default().to_string());
    let expect = |got: (u16, String), status: u16, c: &str| {
        assert_eq!((got.0, got.1.as_str()), (status, c));
    };
    expect(code(s.post("/v2/models/nope/infer", &ids_input(&[1]))), 404, "function_not_found");
    expect(code(s.post("/v2/repository/models/nope/load", &json!({}))), 404, "model_not_found");
    expect(code(s.post("/v2/repository/models/..%2Fetc/load", &json!({}))), 400, "invalid_name");
    expect(code(s.post("/api/v1/functions", &json!({"name": "-bad", "model": "tiny_bert"}))), 400, "invalid_name");
    expect(
        code(s.post("/api/v1/functions", &json!({"name": "x", "model": "tiny_bert", "settings": {"slo_ms": -1}}))),
        400,
        "invalid_settings",
    );
    // 512 KiB of pool cannot hold a 580 KB model.
    expect(code(s.post("/v2/repository/models/tiny_bert/load", &json!({}))), 422, "model_too_large");
    let small = TestServer::start(tempfile::tempdir().unwrap().path(), repo.path(), |a| {
        a.max_package = Some("256KiB".into());
    });
    expect(code(small.post("/v2/repository/models/tiny_bert/load", &json!({}))), 413, "package_too_large");
    small.stop();
    let s2 = TestServer::start(tempfile::tempdir().unwrap().path(), repo.path(), |a| {
        a.max_body = Some("64KiB".into());
        a.workspace = Some("16KiB".into());
    });
    expect(code(s2.post("/v2/repository/models/tiny_bert/load", &json!({}))), 200, "");
    expect(code(s2.post("/api/v1/functions", &json!({"name": "tiny_bert"}))), 409, "already_exists");
    let bad_input = json!({"inputs": [{"name": "pixels", "shape": [1], "datatype": "FP32", "data": [0.5]}]});
    expect(code(s2.post("/v2/models/tiny_bert/infer", &bad_input)), 400, "bad_request");
    expect(code(s2.post("/v2/models/tiny_bert/infer", &ids_input(&[1, 600]))), 400, "invalid_input");
    expect(code(s2.post("/v2/models/tiny_bert/infer", &ids_input(&vec![1; 129]))), 400, "invalid_input");
    // More sequences than the function's max_batch (8 by default).
    let nine = json!({"inputs": [{"name": "input_ids", "shape": [9, 1], "datatype": "INT64", "data": vec![1; 9]}]});
    let (status, body) = s2.post("/v2/models/tiny_bert/infer", &nine);
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_input")));
    assert!(body["error"].as_str().unwrap().contains("max_batch"), "{body}");
    // 100 tokens need more activation memory than the 16 KiB workspace; 2 tokens do not.
    expect(code(s2.post("/v2/models/tiny_bert/infer", &ids_input(&[1; 100]))), 400, "exceeds_workspace");
    expect(code(s2.post("/v2/models/tiny_bert/infer", &ids_input(&[1, 2]))), 200, "");
    let text = json!({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]});
    expect(code(s2.post("/v2/models/tiny_bert/infer", &text)), 400, "no_tokenizer");
    let wrong_output = json!({"inputs": ids_input(&[1])["inputs"], "outputs": [{"name": "logits"}]});
    expect(code(s2.post("/v2/models/tiny_bert/infer", &wrong_output)), 400, "unknown_output");
    let (status, resp) = s2.post_raw("/v2/models/tiny_bert/infer", b"{not json", &[]);
    assert_eq!(status, 400);
    assert_eq!(serde_json::from_str::<Value>(&resp.into_string().unwrap()).unwrap()["code"], "bad_request");
    let huge = vec![b' '; 100 << 10];
    let (status, resp) = s2.post_raw("/v2/models/tiny_bert/infer", &huge, &[]);
    assert_eq!(status, 413);
    assert_eq!(serde_json::from_str::<Value>(&resp.into_string().unwrap()).unwrap()["code"], "payload_too_large");
    expect(code(s2.get("/no/such/route")), 404, "not_found");
    expect(code(s2.request("DELETE", "/api/v1/functions/ghost", None)), 404, "function_not_found");
    expect(
        code(s2.request("PATCH", "/api/v1/functions/tiny_bert", Some(&json!({"settings": {"max_batch": 0}})))),
        400,
        "invalid_settings",
    );
}

#[test]
fn sim_devices_report_simulated_results() {
    let state = tempfile::tempdir().unwrap();
    let repo = repository();
    let s = TestServer::start(state.path(), repo.path(), |a| a.devices = Some("sim:2x1GiB".into()));
    deploy_fixtures(&s);
    let (status, v) = s.post("/v2/models/tiny_bert/infer", &ids_input(&[1, 2, 3]));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["simulated"], true);
    assert_eq!(v["parameters"]["device"], "sim:0");
    assert!(v["parameters"]["swap_ms"].as_f64().unwrap() > 0.0);
    let (_, devices) = s.get("/api/v1/devices");
    assert_eq!(devices.as_array().unwrap().len(), 2);
    assert_eq!(devices[1]["kind"], "sim");
    assert_eq!(devices[1]["capacity_bytes"], 1u64 << 30);
}

#[test]
fn synthetic_packages_serve_exact_outputs_and_track_their_slo() {
    let state = tempfile::tempdir().unwrap();
    let repo = repository();
    let package = repo.path().join("bert-mini");
    crate::cli::faaswap_json(&["synth", "--preset", "bert-mini", "--seed", "5", "--out", package.to_str().unwrap()]);
    let s = TestServer::start(state.path(), repo.path(), |a| {
        a.device_memory = Some("48MiB".into());
        a.page_size = Some("1MiB".into());
    });
    let settings = json!({"slo_ms": 60000.0, "slo_percentile": 0.9, "max_batch": 8});
    let (status, body) =
        s.post("/api/v1/functions", &json!({"name": "mini", "model": "bert-mini", "settings": settings}));
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["weight_bytes"].as_u64().unwrap() % 256, 0);
    let model = faaswap::engine::Model::load(&package).unwrap();
    let batch = faaswap::engine::TokenBatch::from_sequences(&[vec![101, 2000, 3000, 102]]).unwrap();
    let want = model.infer(&batch, &[faaswap::engine::OutputKind::LastHiddenState]).unwrap();
    for _ in 0..3 {
        let (status, v) = s.post("/v2/models/mini/infer", &ids_input(&[101, 2000, 3000, 102]));
        assert_eq!(status, 200, "{v}");
        assert!(max_abs_diff(&floats(&v["outputs"][0]["data"]), &want[0].data) <= 1e-6);
    }
    let (_, f) = s.get("/api/v1/functions/mini");
    assert_eq!(f["slo"]["compliant"], true, "{f}");
    assert_eq!(s.metric("faaswap_function_slo_compliant{function=\"mini\"}"), 1.0);
    assert_eq!(f["slo"]["window"], 3);
    assert_eq!(f["resident_on"], json!(["cpu:0"]));
    // A deadline no request can meet turns the function non-compliant.
    let strict = json!({"settings": {"slo_ms": 0.001, "slo_percentile": 0.9, "max_batch": 8}});
    let (status, f) = s.request("PATCH", "/api/v1/functions/mini", Some(&strict));
    assert_eq!(status, 200, "{f}");
    assert_eq!(f["slo"]["compliant"], false, "{f}");
    assert_eq!(s.metric("faaswap_function_slo_compliant{function=\"mini\"}"), 0.0);
    assert!(f["slo"]["observed_ms"].as_f64().unwrap() > 0.001);
    // Undeploying drops its residency: the pool is empty again.
    assert_eq!(s.request("DELETE", "/api/v1/functions/mini", None).0, 200);
    let (_, devices) = s.get("/api/v1/devices");
    assert_eq!(devices[0]["used_bytes"], 0);
    assert!(s.metric("faaswap_evictions_total{reason=\"undeploy\"}") >= 1.0);
}

#[test]
fn a_busy_devices_model_is_copied_to_an_idle_one_over_the_faster_peer_link() {
    let state = tempfile::tempdir().unwrap();
    let repo = repository();
    // The paper's node, with every modelled time stretched so that a job takes long enough
    // (tens of ms) for a second request to arrive while it runs.
    let s = TestServer::start(state.path(), repo.path(), |a| {
        a.devices = Some("sim:paper-node".into());
        a.sim_time_scale = Some(2000.0);
    });
    deploy_fixtures(&s);
    let (_, first) = s.post("/v2/models/tiny_bert/infer", &ids_input(&[1, 2]));
    assert_eq!(first["parameters"]["swap_source"], "host", "{first}");
    assert_eq!(first["parameters"]["device"], "sim:0");
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| s.post("/v2/models/tiny_bert/infer", &ids_input(&[1, 2])).1);
        let b = scope.spawn(|| s.post("/v2/models/tiny_bert/infer", &ids_input(&[3, 4])).1);
        (a.join().unwrap(), b.join().unwrap())
    });
    let mut sources: Vec<(String, Value)> = [a, b]
        .iter()
        .map(|v| (v["parameters"]["device"].as_str().unwrap().to_string(), v["parameters"]["swap_source"].clone()))
        .collect();
    sources.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(sources[0], ("sim:0".to_string(), Value::Null), "one runs where the model is");
    assert_eq!(sources[1].1, "peer:0", "the other copies it from sim:0: {sources:?}");
    assert!(s.metric("faaswap_swaps_total{source=\"peer\"}") >= 1.0);
    let (_, devices) = s.get("/api/v1/devices");
    assert_eq!(devices[0]["peer_links_bytes_per_s"][3], 48e9);
}

#[test]
fn only_version_one_exists() {
    let state = tempfile::tempdir().unwrap();
    let repo = repository();
    let s = TestServer::start(state.path(), repo.path(), |_| {});
    deploy_fixtures(&s);
    assert_eq!(s.get("/v2/models/tiny_bert/versions/1/ready").0, 200);
    assert_eq!(s.post("/v2/models/tiny_bert/versions/1/infer", &ids_input(&[1, 2])).0, 200);
    let (status, body) = s.post("/v2/models/tiny_bert/versions/2/infer", &ids_input(&[1, 2]));
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
}

#[test]
fn packages_that_lead_outside_the_repository_are_refused() {
    let state = tempfile::tempdir().unwrap();
    let repo = repository();
    let outside = tempfile::tempdir().unwrap();
    copy_dir(&tiny_bert(), &outside.path().join("pkg"));
    // A package folder that is a symlink out, and a package whose weights are one.
    std::os::unix::fs::symlink(outside.path().join("pkg"), repo.path().join("linked")).unwrap();
    let half = repo.path().join("half");
    std::fs::create_dir(&half).unwrap();
    std::fs::copy(tiny_bert().join("config.json"), half.join("config.json")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("pkg/model.safetensors"), half.join("model.safetensors")).unwrap();
    let s = TestServer::start(state.path(), repo.path(), |_| {});
    for name in ["linked", "half"] {
        let (status, v) = s.post(&format!("/v2/repository/models/{name}/load"), &json!({}));
        assert_eq!((status, v["code"].as_str()), (403, Some("outside_repository")), "{name}: {v}");
    }
    for name in ["..", "a/b", "%2e%2e"] {
        let (status, _) = s.post(&format!("/v2/repository/models/{name}/load"), &json!({}));
        assert!((400..500).contains(&status), "{name}: {status}");
    }
    assert_eq!(s.post("/v2/repository/models/tiny_bert/load", &json!({})).0, 200);
    let (_, list) = s.get("/api/v1/functions");
    assert_eq!(list.as_array().unwrap().len(), 1);
}
