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
