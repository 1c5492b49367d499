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

fn post(url: &str, body: &[u8]) -> (u16, Value) {
    let r = match ureq::post(url).timeout(std::time::Duration::from_secs(120)).send_bytes(body) {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{e}"),
    };
    let status = r.status();
    (status, serde_json::from_str(&r.into_string().unwrap()).unwrap_or(Value::Null))
}

/// A 20 MB text used to keep two HTTP workers busy for 35 s and take ~300 MB of memory per MB
/// of text in the tokenizer. It is cut to what the tokenizer can use first (64 bytes per
/// token of `max_seq_length`), with the same embedding as any long text.
#[test]
fn a_huge_text_is_cut_before_it_is_tokenized() {
    let repo = tempfile::tempdir().unwrap();
    crate::common::copy_dir(&crate::common::minilm(), &repo.path().join("minilm"));
    let state = tempfile::tempdir().unwrap();
    let server = crate::common::Binary::serve(&[
        "--devices",
        "cpu:1",
        "--state-dir",
        state.path().to_str().unwrap(),
        "--model-repository",
        repo.path().to_str().unwrap(),
    ]);
    assert_eq!(post(&format!("{}/v2/repository/models/minilm/load", server.url), b"").0, 200);
    let infer = format!("{}/v2/models/minilm/infer", server.url);
    let text = |t: &str| json!({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [t]}]});
    let words = "the quick brown fox jumps over the lazy dog; ".repeat((20 << 20) / 45);
    let (status, short) = post(&infer, text(&words[..100_000]).to_string().as_bytes());
    assert_eq!(status, 200, "{short}");
    let before = server.peak_rss();
    let (status, long) = post(&infer, text(&words).to_string().as_bytes());
    let after = server.peak_rss();
    assert_eq!(status, 200, "{long}");
    assert_eq!(long["outputs"], short["outputs"], "both are truncated to max_seq_length tokens alike");
    eprintln!("a {} MB text: peak memory {} → {} MiB", words.len() >> 20, before >> 20, after >> 20);
    assert!(after < before + (400 << 20), "peak memory {} → {} MiB", before >> 20, after >> 20);
}

/// A body of 60 MB of JSON used to be parsed into a tree of values before its shape was
/// checked. Values are now read against the shape as they come.
#[test]
fn a_huge_json_body_is_refused_as_it_is_read() {
    let state = tempfile::tempdir().unwrap();
    let server = crate::common::Binary::serve(&["--devices", "sim:1", "--state-dir", state.path().to_str().unwrap()]);
    let f = json!({"name": "p", "profile": {"weight_bytes": 1_000_000u64, "exec_ms": 1.0}});
    assert_eq!(post(&format!("{}/api/v1/functions", server.url), f.to_string().as_bytes()).0, 201);
    let mut body = br#"{"inputs":[{"name":"input_ids","shape":[1,4],"datatype":"INT64","data":["#.to_vec();
    body.extend("1,".repeat(30 << 20).as_bytes());
    body.extend(b"1]}]}");
    let before = server.peak_rss();
    let (status, v) = post(&format!("{}/v2/models/p/infer", server.url), &body);
    let after = server.peak_rss();
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("more values than the 4 the shape holds"), "{v}");
    eprintln!("a {} MB body: peak memory {} → {} MiB", body.len() >> 20, before >> 20, after >> 20);
    // The body itself is read whole (up to --max-body); no tree of 30 million values is built.
    assert!(after < before + (200 << 20), "peak memory {} → {} MiB", before >> 20, after >> 20);
}

/// One raw HTTP exchange; the socket is returned unread when `read` is false.
fn raw_request(url: &str, head: &str, body: &[u8], read: bool) -> (Option<String>, std::net::TcpStream) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(url.trim_start_matches("http://")).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    if !read {
        return (None, s);
    }
    s.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    (Some(String::from_utf8_lossy(&out).into_owned()), s)
}

/// Responses for clients that do not read them used to pile up without bound (12 stalled
/// clients × 581 MB of logits took 8 GB). Results waiting for their clients are bounded
/// (`--max-unsent`): past the bound a request is refused with 503 and Retry-After before it
/// runs, and a large response not read within `--send-timeout` lets go of its bytes.
#[test]
fn results_that_clients_do_not_read_are_bounded() {
    let repo = crate::server::repository();
    let state = tempfile::tempdir().unwrap();
    let server = TestServer::start(state.path(), repo.path(), |a| {
        a.max_unsent = Some("48MiB".into());
        a.send_timeout = Some(2.0);
    });
    let f = json!({"name": "gpt2", "model": "tiny_gpt2", "settings": {"max_batch": 128}});
    assert_eq!(server.post("/api/v1/functions", &f).0, 201);
    // 128 × 128 positions × 512 logits, binary: a 32 MiB response.
    let ids: Vec<i64> = (0..128 * 128).map(|i| i % 500).collect();
    let body = json!({"inputs": [{"name": "input_ids", "shape": [128, 128], "datatype": "INT64", "data": ids}],
                      "outputs": [{"name": "logits", "parameters": {"binary_data": true}}]})
    .to_string();
    let addr = server.url.trim_start_matches("http://");
    let head = format!(
        "POST /v2/models/gpt2/infer HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    // A client that sends its request and never reads the answer.
    let (_, stalled) = raw_request(&server.url, &head, body.as_bytes(), false);
    // Once its response has been computed (and held: 32 MiB), the next is refused before it
    // runs. Sent any earlier, the next could take the room first and the stalled one be refused.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, stats) = server.get("/v2/models/gpt2/stats");
        if stats["model_stats"][0]["inference_stats"]["success"]["count"].as_u64() == Some(1) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the stalled request never ran: {stats}");
        std::thread::park_timeout(std::time::Duration::from_millis(5));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let refused = loop {
        let (text, _) = raw_request(&server.url, &head, body.as_bytes(), true);
        let text = text.unwrap();
        if text.starts_with("HTTP/1.1 503") {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "never refused");
        std::thread::park_timeout(std::time::Duration::from_millis(50));
    };
    assert!(refused.contains("responses_backlogged"), "{refused}");
    assert!(refused.to_ascii_lowercase().contains("retry-after: 1"), "{refused}");
    // The stalled client keeps its socket open, but after the send timeout its response's
    // bytes are let go: requests are served again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (text, _) = raw_request(&server.url, &head, body.as_bytes(), true);
        if text.unwrap().starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still refused after the stalled response timed out");
        std::thread::park_timeout(std::time::Duration::from_millis(200));
    }
    drop(stalled);
    server.stop();
}

/// A body that arrives too slowly is a 408, not a worker held for good.
#[test]
fn a_body_that_does_not_arrive_in_time_is_a_408() {
    let repo = crate::server::repository();
    let state = tempfile::tempdir().unwrap();
    let server = TestServer::start(state.path(), repo.path(), |a| a.body_timeout = Some(1.0));
    let addr = server.url.trim_start_matches("http://");
    let head = format!("POST /v2/models/x/infer HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 100\r\n\r\n");
    assert_eq!(server.post("/api/v1/functions", &json!({"name": "x", "model": "tiny_bert"})).0, 201);
    let (text, _) = raw_request(&server.url, &head, b"{\"inputs\":", true);
    let text = text.unwrap();
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"code\":\"body_timeout\""), "{text}");
    server.stop();
}

/// The smaller findings of the adversarial pass, each once.
#[test]
fn odd_requests_get_clear_answers() {
    let repo = crate::server::repository();
    let state = tempfile::tempdir().unwrap();
    let server = TestServer::start(state.path(), repo.path(), |_| {});
    // Concurrent identical loads: idempotent, 200 to all (was 409 to all but one).
    let codes: Vec<u16> = std::thread::scope(|s| {
        let calls: Vec<_> =
            (0..6).map(|_| s.spawn(|| server.post("/v2/repository/models/tiny_bert/load", &json!({})).0)).collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    assert_eq!(codes, vec![200; 6]);
    // A function may not be named like a fixed route segment.
    let (status, v) = server.post("/api/v1/functions", &json!({"name": "stats", "model": "tiny_bert"}));
    assert_eq!((status, v["code"].as_str()), (400, Some("invalid_name")), "{v}");
    // An input given twice is refused, not silently replaced.
    let twice = json!({"inputs": [
        {"name": "input_ids", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]},
        {"name": "input_ids", "shape": [1, 2], "datatype": "INT64", "data": [3, 4]}]});
    let (status, v) = server.post("/v2/models/tiny_bert/infer", &twice);
    assert_eq!((status, v["code"].as_str()), (400, Some("bad_request")), "{v}");
    // Errors sent to invoke clients carry no server path.
    let text = json!({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]});
    let (status, v) = server.post("/v2/models/tiny_bert/infer", &text);
    assert_eq!((status, v["code"].as_str()), (400, Some("no_tokenizer")), "{v}");
    let msg = v["error"].as_str().unwrap();
    assert!(!msg.contains('/') && !msg.contains(state.path().to_str().unwrap()), "{msg}");
    // A WebSocket route without an upgrade answers JSON.
    for path in ["/api/v1/functions/tiny_bert/ws", "/api/v1/events"] {
        let (status, v) = server.get(path);
        assert_eq!((status, v["code"].as_str()), (400, Some("bad_request")), "{path}: {v}");
    }
    server.stop();
}
