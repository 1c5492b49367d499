//! API tokens against the real server: open health endpoints, 401 without or with an unknown
//! token, 403 with the wrong scope, invoke tokens limited to named functions, admin tokens
//! that may also invoke, WebSocket tokens in the query, and a protected `/metrics`.

use serde_json::{json, Value};

use crate::server::TestServer;

const ADMIN: &str = "admin-token-for-tests-0001";
const INVOKE: &str = "invoke-token-for-tests-0001";
const SHOP: &str = "shop-token-for-tests-00001";

fn call(
    server: &TestServer,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value, Option<String>) {
    let mut req = ureq::request(method, &format!("{}{path}", server.url));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let r = match body {
        Some(b) => req.send_string(&b.to_string()),
        None => req.call(),
    };
    let r = match r {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let (status, www) = (r.status(), r.header("WWW-Authenticate").map(str::to_string));
    let text = r.into_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)), www)
}

fn start(protect_metrics: bool) -> (TestServer, tempfile::TempDir, tempfile::TempDir) {
    let repo = crate::server::repository();
    let state = tempfile::tempdir().unwrap();
    let server = TestServer::start(state.path(), repo.path(), |a| {
        a.admin_token = Some(ADMIN.into());
        a.invoke_token = Some(INVOKE.into());
        a.protect_metrics = Some(protect_metrics);
        a.tokens = vec![faaswap::auth::TokenSpec {
            name: "shop".into(),
            scope: "invoke".into(),
            sha256: hex_digest(SHOP),
            functions: Some(vec!["bert".into()]),
        }];
    });
    (server, repo, state)
}

fn hex_digest(token: &str) -> String {
    hex::encode(faaswap::auth::digest(token))
}

fn infer_body() -> Value {
    json!({"inputs": [{"name": "input_ids", "shape": [1, 3], "datatype": "INT64", "data": [1, 2, 3]}]})
}

#[test]
fn scopes_guard_every_route() {
    let (server, _repo, _state) = start(false);
    for model in ["bert", "gpt2"] {
        let body = json!({"name": model, "model": format!("tiny_{model}")});
        assert_eq!(call(&server, "POST", "/api/v1/functions", Some(ADMIN), Some(&body)).0, 201);
    }
    // Open without a token.
    for path in ["/v2", "/v2/health/live", "/v2/health/ready", "/metrics", "/admin/"] {
        assert_eq!(call(&server, "GET", path, None, None).0, 200, "{path}");
    }
    // 401 without a token or with an unknown one, with a JSON body and a Bearer challenge.
    for token in [None, Some("not-a-token-of-this-server")] {
        let (status, v, www) = call(&server, "POST", "/v2/models/bert/infer", token, Some(&infer_body()));
        assert_eq!((status, v["code"].as_str(), www.as_deref()), (401, Some("unauthorized"), Some("Bearer")), "{v}");
        assert_eq!(call(&server, "GET", "/api/v1/functions", token, None).0, 401);
    }
    let infer = |token, model: &str| {
        call(&server, "POST", &format!("/v2/models/{model}/infer"), Some(token), Some(&infer_body())).0
    };
    // Invoke tokens invoke; the admin token may too; the shop token only its function.
    for token in [ADMIN, INVOKE] {
        assert_eq!((infer(token, "bert"), infer(token, "gpt2")), (200, 200), "{token}");
    }
    assert_eq!(infer(SHOP, "bert"), 200);
    let (status, v, _) = call(&server, "POST", "/v2/models/gpt2/infer", Some(SHOP), Some(&infer_body()));
    assert_eq!((status, v["code"].as_str()), (403, Some("forbidden")), "{v}");
    for path in ["/v2/models/bert", "/v2/models/bert/ready", "/v2/models/bert/stats"] {
        assert_eq!(call(&server, "GET", path, Some(SHOP), None).0, 200, "{path}");
        assert_eq!(call(&server, "GET", path, None, None).0, 401, "{path}");
    }
    assert_eq!(call(&server, "GET", "/v2/models/stats", Some(SHOP), None).0, 403, "all statistics need all functions");
    assert_eq!(call(&server, "GET", "/v2/models/stats", Some(INVOKE), None).0, 200);
    // Management needs admin.
    for (method, path) in [
        ("GET", "/api/v1/functions"),
        ("GET", "/api/v1/devices"),
        ("GET", "/api/v1/scheduler"),
        ("POST", "/v2/repository/index"),
        ("POST", "/v2/repository/models/tiny_bert/load"),
        ("DELETE", "/api/v1/functions/bert"),
    ] {
        let (status, v, _) = call(&server, method, path, Some(INVOKE), None);
        assert_eq!((status, v["code"].as_str()), (403, Some("forbidden")), "{method} {path}: {v}");
    }
    assert_eq!(call(&server, "GET", "/api/v1/devices", Some(ADMIN), None).0, 200);
    assert_eq!(call(&server, "GET", "/v2/models/bert", Some(ADMIN), None).0, 200, "nothing was undeployed");
    server.stop();
}

#[test]
fn websockets_take_the_token_in_the_query() {
    let (server, _repo, _state) = start(false);
    let body = json!({"name": "gpt2", "model": "tiny_gpt2"});
    assert_eq!(call(&server, "POST", "/api/v1/functions", Some(ADMIN), Some(&body)).0, 201);
    let ws = server.url.replacen("http://", "ws://", 1);
    let status = |path: &str| match tungstenite::connect(format!("{ws}{path}")) {
        Ok(_) => 101,
        Err(tungstenite::Error::Http(r)) => r.status().as_u16(),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(status("/api/v1/functions/gpt2/ws"), 401);
    assert_eq!(status(&format!("/api/v1/functions/gpt2/ws?token={SHOP}")), 403, "shop may call bert only");
    assert_eq!(status(&format!("/api/v1/events?token={INVOKE}")), 403, "the feed needs admin");
    assert_eq!(status(&format!("/api/v1/events?token={ADMIN}")), 101);
    // A query token works on WebSocket routes only.
    let (code, _, _) = call(&server, "GET", &format!("/api/v1/devices?token={ADMIN}"), None, None);
    assert_eq!(code, 401);
    let reference = crate::common::read_json(&crate::common::tiny_gpt2().join("reference.json"));
    let case = &reference["generation"][0];
    let mut socket = crate::ws::connect(&server, &format!("/api/v1/functions/gpt2/ws?token={INVOKE}"));
    socket
        .send(tungstenite::Message::text(json!({"input_ids": case["prompt_ids"], "max_new_tokens": 2}).to_string()))
        .unwrap();
    let first = crate::ws::next(&mut socket).unwrap();
    let want = case["new_token_ids"][0].as_u64();
    assert_eq!((first["type"].as_str(), first["id"].as_u64()), (Some("token"), want), "{first}");
    drop(socket);
    server.stop();
}

#[test]
fn metrics_can_be_protected() {
    let (server, _repo, _state) = start(true);
    assert_eq!(call(&server, "GET", "/metrics", None, None).0, 401);
    assert_eq!(call(&server, "GET", "/metrics", Some(INVOKE), None).0, 403);
    assert_eq!(call(&server, "GET", "/metrics", Some(ADMIN), None).0, 200);
    assert_eq!(call(&server, "GET", "/v2/health/ready", None, None).0, 200, "health stays open");
    server.stop();
}
