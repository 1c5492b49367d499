//! Hostile and odd request data against the real server: whatever a request carries, it gets a
//! clear 4xx (or, for a bug it meets, a 500 of its own) and no device, function or other
//! request suffers. Each case here was a way to fault a device, poison a function, or use
//! unbounded memory or time before it was fixed.

use serde_json::{json, Value};

use crate::server::TestServer;

fn tokens(ids: &[i64], mask: Option<&[i64]>, shape: [usize; 2]) -> Value {
    let mut inputs = vec![json!({"name": "input_ids", "shape": shape, "datatype": "INT64", "data": ids})];
    if let Some(m) = mask {
        inputs.push(json!({"name": "attention_mask", "shape": shape, "datatype": "INT64", "data": m}));
    }
    json!({ "inputs": inputs })
}

fn two_cpus() -> (TestServer, tempfile::TempDir, tempfile::TempDir) {
    let repo = crate::server::repository();
    let state = tempfile::tempdir().unwrap();
    let server = TestServer::start(state.path(), repo.path(), |a| a.devices = Some("cpu:2".into()));
    for (name, model) in [("bert", "tiny_bert"), ("gpt2", "tiny_gpt2")] {
        assert_eq!(server.post("/api/v1/functions", &json!({"name": name, "model": model})).0, 201);
    }
    (server, repo, state)
}

fn all_healthy(server: &TestServer) -> bool {
    let (_, devices) = server.get("/api/v1/devices");
    devices.as_array().unwrap().iter().all(|d| d["healthy"] == true)
}

/// An all-zero attention mask used to panic the BERT engine, which marked the device unhealthy
/// and evicted everything on it — and, retried, the other device too.
#[test]
fn an_all_zero_mask_is_refused_and_harms_no_device() {
    let (server, _repo, _state) = two_cpus();
    for _ in 0..3 {
        let (status, v) = server.post("/v2/models/bert/infer", &tokens(&[5, 6, 7, 8], Some(&[0, 0, 1, 1]), [2, 2]));
        assert_eq!((status, v["code"].as_str()), (400, Some("invalid_input")), "{v}");
        assert!(v["error"].as_str().unwrap().contains("sequence 0"), "{v}");
    }
    let (status, v) = server.post("/v2/models/bert/infer", &tokens(&[5, 6], Some(&[0, 0]), [1, 2]));
    assert_eq!((status, v["code"].as_str()), (400, Some("invalid_input")), "{v}");
    assert!(all_healthy(&server));
    assert_eq!(server.post("/v2/models/bert/infer", &tokens(&[5, 6], None, [1, 2])).0, 200);
    server.stop();
}

/// Left padding (`[[0, 1, 1]]`), the usual way to batch prompts for a decoder, used to answer
/// every GPT-2 logit as `null` (NaN).
#[test]
fn a_left_padded_decoder_batch_answers_finite_logits() {
    let (server, _repo, _state) = two_cpus();
    let (status, v) =
        server.post("/v2/models/gpt2/infer", &tokens(&[0, 5, 6, 7, 8, 9], Some(&[0, 1, 1, 1, 1, 1]), [2, 3]));
    assert_eq!(status, 200, "{v}");
    let data = v["outputs"][0]["data"].as_array().unwrap();
    assert!(!data.is_empty() && data.iter().all(Value::is_f64), "every logit is a number");
    // The fully visible sequence answers as it does alone.
    let (_, alone) = server.post("/v2/models/gpt2/infer", &tokens(&[7, 8, 9], None, [1, 3]));
    let alone = alone["outputs"][0]["data"].as_array().unwrap();
    assert_eq!(&data[data.len() / 2..], &alone[..]);
    assert!(all_healthy(&server));
    server.stop();
}

/// A client's own deadline (`Faaswap-Deadline-Ms`) used to count against the function's SLO:
/// enough impossible deadlines spent its miss budget, and once evicted it was never copied in
/// again — every later request was a 503 until a restart.
#[test]
fn a_clients_impossible_deadline_cannot_poison_a_function() {
    let repo = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    // One device whose pool holds one of the two models.
    let server = TestServer::start(state.path(), repo.path(), |a| {
        a.devices = Some("sim:1".into());
        a.device_memory = Some("128MiB".into());
    });
    for name in ["victim", "other"] {
        let f = json!({"name": name, "profile": {"weight_bytes": 96_000_000u64, "exec_ms": 2.0}});
        assert_eq!(server.post("/api/v1/functions", &f).0, 201);
    }
    let body = tokens(&[1], None, [1, 1]).to_string();
    let infer = |name: &str, deadline: Option<&str>| {
        let headers: Vec<(&str, &str)> = deadline.map(|d| ("Faaswap-Deadline-Ms", d)).into_iter().collect();
        let (status, r) = server.post_raw(&format!("/v2/models/{name}/infer"), body.as_bytes(), &headers);
        (status, r.into_string().unwrap())
    };
    assert_eq!(infer("victim", None).0, 200);
    for _ in 0..40 {
        let (status, text) = infer("victim", Some("0.000001"));
        assert_eq!(status, 503, "{text}");
        assert!(text.contains("deadline_unmeetable"), "{text}");
    }
    // The other function takes the pool; the victim must come back for its own requests.
    assert_eq!(infer("other", None).0, 200);
    for _ in 0..3 {
        let (status, text) = infer("victim", None);
        assert_eq!(status, 200, "{text}");
    }
    let (_, f) = server.get("/api/v1/functions/victim");
    assert_eq!(f["slo"]["compliant"], true, "the client's misses are not the function's: {f}");
    server.stop();
}
