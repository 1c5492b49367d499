//! Generation and the event feed over real WebSockets against the real server: tokens
//! against the tiny GPT-2 reference and `faaswap generate`, several requests per socket,
//! errors, cancellation that frees the device, and the feed's snapshot and events.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use crate::cli::faaswap_json;
use crate::common::*;
use crate::server::TestServer;

pub type Socket = WebSocket<MaybeTlsStream<TcpStream>>;

pub fn connect(server: &TestServer, path: &str) -> Socket {
    let url = format!("{}{path}", server.url.replacen("http://", "ws://", 1));
    let (socket, _) = tungstenite::connect(url).expect("WebSocket handshake");
    if let MaybeTlsStream::Plain(s) = socket.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    }
    socket
}

/// The next JSON message; `None` once the server has closed the socket.
pub fn next(socket: &mut Socket) -> Option<Value> {
    loop {
        match socket.read() {
            Ok(Message::Text(t)) => return Some(serde_json::from_str(t.as_str()).expect("messages are JSON")),
            Ok(Message::Close(_)) => return None,
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => return None,
            Err(e) => panic!("reading the socket: {e}"),
        }
    }
}

/// Events of the feed until `done` says enough, within 20 s.
pub fn events_until(feed: &mut Socket, mut done: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while !done(&seen) {
        assert!(Instant::now() < deadline, "events so far: {seen:#?}");
        seen.push(next(feed).expect("the feed stays open"));
    }
    seen
}

/// Sends one request and collects its streamed tokens and the final message.
fn generate(socket: &mut Socket, request: &Value) -> (Vec<Value>, Value) {
    socket.send(Message::text(request.to_string())).unwrap();
    let mut tokens = Vec::new();
    loop {
        let m = next(socket).expect("the server answers before closing");
        if m["type"] == "token" {
            tokens.push(m);
        } else {
            return (tokens, m);
        }
    }
}

fn deploy(server: &TestServer, name: &str, model: &str) {
    let (status, v) = server.post("/api/v1/functions", &json!({"name": name, "model": model}));
    assert_eq!(status, 201, "{v}");
}

#[test]
fn streamed_greedy_tokens_match_the_tiny_gpt2_reference() {
    let repo = crate::server::repository();
    let state = tempfile::tempdir().unwrap();
    let server = TestServer::start(state.path(), repo.path(), |_| {});
    deploy(&server, "gpt2", "tiny_gpt2");
    let reference = read_json(&tiny_gpt2().join("reference.json"));
    let mut socket = connect(&server, "/api/v1/functions/gpt2/ws");
    // Both reference prompts over one socket, in turn.
    for (k, case) in reference["generation"].as_array().unwrap().iter().enumerate() {
        let want = ids(&case["new_token_ids"]);
        let request = json!({"input_ids": case["prompt_ids"], "max_new_tokens": case["max_new_tokens"]});
        let (tokens, done) = generate(&mut socket, &request);
        let streamed: Vec<u32> = tokens.iter().map(|t| t["id"].as_u64().unwrap() as u32).collect();
        assert_eq!(streamed, want, "prompt {k}: streamed tokens");
        for (i, t) in tokens.iter().enumerate() {
            assert_eq!(t["index"], i, "index counts from 0");
            assert!(t["text"].is_null(), "tiny_gpt2 has no tokenizer");
        }
        assert_eq!(done["type"], "done", "{done}");
        assert_eq!(ids(&done["token_ids"]), want, "done lists the new tokens only");
        assert_eq!(done["finish_reason"], "length");
        assert_eq!(done["device"], "cpu:0");
        let t = &done["timings"];
        let (first, total) = (t["first_token_ms"].as_f64().unwrap(), t["total_ms"].as_f64().unwrap());
        assert!(first > 0.0 && first <= total, "{t}");
        assert!(t["queue_ms"].as_f64().unwrap() >= 0.0 && t["swap_ms"].as_f64().unwrap() >= 0.0, "{t}");
        // The first request swapped the model in; the second found it resident.
        assert_eq!(done["swap_source"], if k == 0 { json!("host") } else { Value::Null }, "{done}");
    }
    socket.close(None).unwrap();
    assert!(server.metric("faaswap_generated_tokens_total{function=\"gpt2\"}") >= 32.0);
    server.stop();
}

#[test]
fn socket_output_equals_faaswap_generate_greedy_and_seeded() {
    let repo = tempfile::tempdir().unwrap();
    let package = repo.path().join("gpt2-tiny");
    synth_package("gpt2-tiny", 5, &package);
    let state = tempfile::tempdir().unwrap();
    let server = TestServer::start(state.path(), repo.path(), |a| a.device_memory = Some("256MiB".into()));
    deploy(&server, "g", "gpt2-tiny");
    let mut socket = connect(&server, "/api/v1/functions/g/ws");
    let dir = package.to_str().unwrap();
    let cli = |extra: &[&str]| {
        let mut args = vec!["generate", "--model", dir, "--input-ids", "11,22,33,44", "--max-new-tokens", "12"];
        args.extend_from_slice(extra);
        ids(&faaswap_json(&args)["token_ids"])
    };
    let (_, greedy) = generate(&mut socket, &json!({"input_ids": [11, 22, 33, 44], "max_new_tokens": 12}));
    assert_eq!(ids(&greedy["token_ids"]), cli(&[]), "greedy");
    let sampled =
        json!({"input_ids": [11, 22, 33, 44], "max_new_tokens": 12, "temperature": 0.9, "top_k": 40, "seed": 7});
    let (tokens, first) = generate(&mut socket, &sampled);
    let (_, second) = generate(&mut socket, &sampled);
    assert_eq!(tokens.len(), 12);
    assert_eq!(first["token_ids"], second["token_ids"], "a seed reproduces a sampled generation");
    assert_eq!(ids(&first["token_ids"]), cli(&["--temperature", "0.9", "--top-k", "40", "--seed", "7"]));
    assert_ne!(first["token_ids"], greedy["token_ids"], "temperature 0.9 samples");
    drop(socket);
    server.stop();
}

#[test]
fn bad_requests_get_an_error_message_and_a_clean_close() {
    let repo = crate::server::repository();
    let state = tempfile::tempdir().unwrap();
    let server = TestServer::start(state.path(), repo.path(), |_| {});
    deploy(&server, "gpt2", "tiny_gpt2");
    deploy(&server, "bert", "tiny_bert");
    let cases = [
        ("gpt2", "not json".to_string(), "bad_request"),
        ("gpt2", json!({"input_ids": [1], "max_new_tokens": 4, "colour": 1}).to_string(), "bad_request"),
        ("gpt2", json!({"input_ids": [1], "max_new_tokens": 500}).to_string(), "invalid_input"),
        ("gpt2", json!({"input_ids": [99999]}).to_string(), "invalid_input"),
        ("gpt2", json!({"text": "hello"}).to_string(), "no_tokenizer"),
        ("gpt2", json!({"input_ids": [1], "stop": "x"}).to_string(), "invalid_input"),
        ("bert", json!({"input_ids": [1, 2]}).to_string(), "invalid_input"),
    ];
    for (function, request, code) in cases {
        let mut socket = connect(&server, &format!("/api/v1/functions/{function}/ws"));
        socket.send(Message::text(request.clone())).unwrap();
        let m = next(&mut socket).expect("an error message");
        assert_eq!((m["type"].as_str(), m["code"].as_str()), (Some("error"), Some(code)), "{request}: {m}");
        assert!(m["error"].as_str().is_some_and(|e| !e.is_empty()));
        assert!(next(&mut socket).is_none(), "{request}: the server closes after an error");
    }
    let url = format!("{}/api/v1/functions/nope/ws", server.url.replacen("http://", "ws://", 1));
    match tungstenite::connect(url) {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 404),
        other => panic!("unknown function: {:?}", other.map(|_| ())),
    }
    // The server still generates after all that.
    let mut socket = connect(&server, "/api/v1/functions/gpt2/ws");
    let (tokens, done) = generate(&mut socket, &json!({"input_ids": [1, 2], "max_new_tokens": 3}));
    assert_eq!((tokens.len(), done["type"].as_str()), (3, Some("done")));
    drop(socket);
    server.stop();
}

#[test]
fn a_client_that_leaves_stops_its_generation_and_frees_the_device() {
    let repo = tempfile::tempdir().unwrap();
    synth_package("gpt2-tiny", 1, &repo.path().join("gpt2-tiny"));
    let state = tempfile::tempdir().unwrap();
    let server = TestServer::start(state.path(), repo.path(), |a| a.device_memory = Some("256MiB".into()));
    deploy(&server, "g", "gpt2-tiny");
    let mut events = connect(&server, "/api/v1/events");
    assert_eq!(next(&mut events).unwrap()["type"], "snapshot");
    let max = 1000;
    let mut socket = connect(&server, "/api/v1/functions/g/ws");
    socket
        .send(Message::text(json!({"input_ids": [5, 6], "max_new_tokens": max, "ignore_eos": true}).to_string()))
        .unwrap();
    for i in 0..3 {
        let m = next(&mut socket).unwrap();
        assert_eq!((m["type"].as_str(), m["index"].as_u64()), (Some("token"), Some(i)), "{m}");
    }
    // Leave without a close handshake: drop the connection.
    drop(socket);
    let is_stop = |e: &Value| e["type"] == "execute" && e["function"] == "g";
    let seen = events_until(&mut events, |seen| seen.iter().any(is_stop));
    let stopped = seen.into_iter().find(is_stop).unwrap();
    assert_eq!(stopped["cancelled"], true, "{stopped}");
    let generated = stopped["tokens"].as_u64().unwrap();
    assert!((3..max / 2).contains(&generated), "stopped early: {generated} of {max} tokens");
    // The device reports to the scheduler right after the event.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.get("/api/v1/devices").1[0]["busy"] != false {
        assert!(Instant::now() < deadline, "the device stays busy after the generation stopped");
        std::thread::park_timeout(Duration::from_millis(10));
    }
    // The device serves the next request, from the copy the cancelled one left.
    let mut again = connect(&server, "/api/v1/functions/g/ws");
    let (tokens, done) = generate(&mut again, &json!({"input_ids": [5, 6], "max_new_tokens": 2}));
    assert_eq!((tokens.len(), done["swap_source"].clone()), (2, Value::Null), "{done}");
    assert_eq!(server.metric("faaswap_requests_total{function=\"g\",outcome=\"cancelled\"}"), 1.0);
    drop((events, again));
    server.stop();
}

/// Requests sent while a generation runs wait their turn, a few of them: a client that floods
/// the socket used to be buffered without end; now the socket is closed with 1008 and a reason.
#[test]
fn a_client_that_floods_its_socket_is_closed_with_1008() {
    let repo = tempfile::tempdir().unwrap();
    synth_package("gpt2-tiny", 1, &repo.path().join("gpt2-tiny"));
    let state = tempfile::tempdir().unwrap();
    let server = TestServer::start(state.path(), repo.path(), |a| a.device_memory = Some("256MiB".into()));
    deploy(&server, "flood", "gpt2-tiny");
    let mut socket = connect(&server, "/api/v1/functions/flood/ws");
    let long = json!({"input_ids": [5, 6], "max_new_tokens": 1000, "ignore_eos": true}).to_string();
    socket.send(Message::text(long)).unwrap();
    assert_eq!(next(&mut socket).unwrap()["type"], "token", "the generation runs");
    let short = json!({"input_ids": [5], "max_new_tokens": 1}).to_string();
    for _ in 0..=faaswap::api::generate_ws::MAX_WAITING {
        socket.send(Message::text(short.clone())).unwrap();
    }
    let close = loop {
        match socket.read() {
            Ok(Message::Close(frame)) => break frame.expect("a close frame with a reason"),
            Ok(_) => {}
            Err(e) => panic!("closed without a close frame: {e}"),
        }
    };
    assert_eq!(close.code, tungstenite::protocol::frame::coding::CloseCode::Policy);
    assert!(close.reason.contains("requests waiting"), "{}", close.reason);
    // The device is free again and serves the next client.
    let mut again = connect(&server, "/api/v1/functions/flood/ws");
    let (tokens, done) = generate(&mut again, &json!({"input_ids": [5, 6], "max_new_tokens": 2}));
    assert_eq!((tokens.len(), done["type"].as_str()), (2, Some("done")));
    drop(again);
    server.stop();
}

#[test]
fn the_event_feed_starts_with_a_snapshot_and_reports_swaps_evictions_and_slo() {
    let repo = crate::server::repository();
    let state = tempfile::tempdir().unwrap();
    // Room for one of the two models at a time: every alternate request swaps and evicts.
    let server = TestServer::start(state.path(), repo.path(), |a| {
        a.device_memory = Some("1MiB".into());
        a.page_size = Some("64KiB".into());
    });
    deploy(&server, "bert", "tiny_bert");
    deploy(&server, "gpt2", "tiny_gpt2");
    let (_, first) = server.post(
        "/v2/models/bert/infer",
        &json!({"inputs": [{"name": "input_ids", "shape": [1, 3], "datatype": "INT64", "data": [1, 2, 3]}]}),
    );
    assert!(first["outputs"].is_array(), "{first}");
    let mut feed = connect(&server, "/api/v1/events");
    let snapshot = next(&mut feed).unwrap();
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["devices"][0]["id"], "cpu:0");
    assert_eq!(snapshot["devices"][0]["resident"][0]["function"], "bert", "late subscribers see residency");
    let names: Vec<&str> =
        snapshot["functions"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["bert", "gpt2"]);
    let (status, _) = server.post(
        "/v2/models/gpt2/infer",
        &json!({"inputs": [{"name": "input_ids", "shape": [1, 3], "datatype": "INT64", "data": [1, 2, 3]}]}),
    );
    assert_eq!(status, 200);
    deploy(&server, "bert2", "tiny_bert");
    let (status, _) = server.request("DELETE", "/api/v1/functions/bert2", None);
    assert_eq!(status, 200);
    // The first request's `execute` may reach the feed after its reply (the device reports it
    // after answering), so the one that counts is gpt2's.
    let seen = events_until(&mut feed, |seen| {
        ["evict", "swap_in", "deploy", "undeploy", "slo"].iter().all(|t| seen.iter().any(|e| e["type"] == *t))
            && seen.iter().any(|e| e["type"] == "execute" && e["function"] == "gpt2")
    });
    assert!(seen.iter().all(|e| e["ts_ms"].as_u64().is_some()), "{seen:?}");
    let find = |t: &str| seen.iter().find(|e| e["type"] == t).unwrap().clone();
    let evict = find("evict");
    assert_eq!((evict["device"].as_str(), evict["function"].as_str()), (Some("cpu:0"), Some("bert")), "{evict}");
    let swap = find("swap_in");
    assert_eq!((swap["function"].as_str(), swap["source"].as_str()), (Some("gpt2"), Some("host")), "{swap}");
    assert_eq!(swap["bytes"].as_u64().unwrap(), tiny_gpt2_bytes(&server));
    let exec = seen.iter().find(|e| e["type"] == "execute" && e["function"] == "gpt2").unwrap();
    assert_eq!((exec["device"].as_str(), exec["batch"].as_u64()), (Some("cpu:0"), Some(1)), "{exec}");
    assert!(exec["ms"].as_f64().unwrap() > 0.0, "{exec}");
    assert_eq!(find("deploy")["function"], "bert2");
    assert_eq!(find("undeploy")["function"], "bert2");
    let slo = find("slo");
    assert!(slo["compliant"].is_boolean() && slo["deadline_ms"].as_f64().is_some(), "{slo}");
    drop(feed);
    server.stop();
}

fn tiny_gpt2_bytes(server: &TestServer) -> u64 {
    server.get("/api/v1/functions/gpt2").1["weight_bytes"].as_u64().unwrap()
}

/// The WebSocket route serves the Llama family as it serves GPT-2: each fixture deployed from a
/// package copy (its generation config and tokenizer kept), its reference generations streamed
/// token by token with `ignore_eos`, and a text prompt answered with text pieces.
#[test]
fn llama_family_generations_stream_over_the_websocket() {
    let repo = tempfile::tempdir().unwrap();
    let names = ["tiny_llama", "tiny_qwen2", "tiny_qwen3", "tiny_mistral"];
    for name in names {
        copy_dir(&fixtures().join(name), &repo.path().join(name));
    }
    let state = tempfile::tempdir().unwrap();
    let server = TestServer::start(state.path(), repo.path(), |_| {});
    for name in names {
        deploy(&server, name, name);
        let reference = read_json(&fixtures().join(name).join("reference.json"));
        let mut socket = connect(&server, &format!("/api/v1/functions/{name}/ws"));
        for case in reference["generation"].as_array().unwrap() {
            let request = json!({"input_ids": case["prompt_ids"], "max_new_tokens": case["max_new_tokens"],
                                 "ignore_eos": true});
            let (tokens, done) = generate(&mut socket, &request);
            let streamed: Vec<u32> = tokens.iter().map(|t| t["id"].as_u64().unwrap() as u32).collect();
            assert_eq!(streamed, ids(&case["new_token_ids"]), "{name}");
            assert_eq!(done["finish_reason"], "length", "{done}");
        }
        let (tokens, done) =
            generate(&mut socket, &json!({"text": "Hello there!", "max_new_tokens": 4, "ignore_eos": true}));
        assert_eq!(tokens.len(), 4, "{name}: {done}");
        assert!(tokens.iter().all(|t| t["text"].is_string()), "{name}: a tokenizer gives text");
        socket.close(None).unwrap();
    }
    server.stop();
}
