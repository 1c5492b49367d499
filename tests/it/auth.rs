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

/// One request written byte for byte on a TCP socket, so the path reaches the server exactly as
/// given (HTTP clients normalise dot segments and escapes). Returns the status and the body.
fn raw(server: &TestServer, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = server.url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status: {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or(String::new(), |(_, b)| b.to_string());
    (status, body)
}

/// The bypasses found by the adversarial pass: one escaped character of the path used to skip
/// every token check (the middleware classified the raw path, the router matched the decoded
/// one, and an unknown path was open).
#[test]
fn percent_encoded_paths_need_the_same_token_as_their_route() {
    let (server, _repo, _state) = start(true);
    let deploy = json!({"name": "bert", "model": "tiny_bert"}).to_string();
    let infer = infer_body().to_string();
    for (method, path, body) in [
        ("POST", "/%61pi/v1/functions", deploy.as_str()),
        ("GET", "/%61pi/v1/functions", ""),
        ("POST", "/v2/%72epository/models/tiny_bert/load", ""),
        ("POST", "/v2/%72epository/index", ""),
        ("POST", "/v2/%6dodels/bert/infer", infer.as_str()),
        ("GET", "/%6detrics", ""),
        ("GET", "/api/v1/%65vents", ""),
        ("GET", "/api/v1/functions/bert/%77s", ""),
        ("GET", "/api/v1/d%65vices", ""),
    ] {
        let (status, text) = raw(&server, method, path, None, body);
        assert_eq!(status, 401, "{method} {path}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text}"));
        assert_eq!(v["code"], "unauthorized", "{method} {path}");
        // An invoke token does not reach management through an escaped path either.
        assert_eq!(raw(&server, method, path, Some(INVOKE), body).0 / 100, 4, "{method} {path}");
    }
    assert_eq!(call(&server, "GET", "/api/v1/functions", Some(ADMIN), None).1, json!([]), "nothing was deployed");
    // The same escaped path with the right token is the route itself.
    let (status, text) = raw(&server, "POST", "/%61pi/v1/functions", Some(ADMIN), &deploy);
    assert_eq!(status, 201, "{text}");
    let (status, text) = raw(&server, "POST", "/v2/%6dodels/b%65rt/infer", Some(SHOP), &infer);
    assert_eq!(status, 200, "the shop token may call bert, however it is spelled: {text}");
    // Paths no route matches need admin: strangers are not told which paths exist.
    for path in ["/nothing", "/v2/models", "/api/v1", "/%2e%2e/etc/passwd", "/admin/../api/v1/functions"] {
        assert_eq!(raw(&server, "GET", path, None, "").0, 401, "{path}");
        assert_eq!(raw(&server, "GET", path, Some(INVOKE), "").0, 403, "{path}");
        let (status, text) = raw(&server, "GET", path, Some(ADMIN), "");
        assert_eq!((status, serde_json::from_str::<Value>(&text).unwrap()["code"].clone()), (404, json!("not_found")));
    }
    server.stop();
}

mod spelling {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    /// Every route once (management calls that would change state aim at names that do not
    /// exist, so every case sees the same server).
    fn routes() -> Vec<(&'static str, &'static str, String)> {
        let infer = infer_body().to_string();
        let bad_deploy = json!({"name": "x", "model": "nope"}).to_string();
        vec![
            ("GET", "/v2", String::new()),
            ("GET", "/v2/health/ready", String::new()),
            ("GET", "/metrics", String::new()),
            ("GET", "/admin/app.js", String::new()),
            ("GET", "/api/openapi.json", String::new()),
            ("GET", "/v2/models/stats", String::new()),
            ("GET", "/v2/models/bert", String::new()),
            ("GET", "/v2/models/gpt2/versions/1/ready", String::new()),
            ("POST", "/v2/models/bert/infer", infer.clone()),
            ("POST", "/v2/models/gpt2/versions/1/infer", infer),
            ("GET", "/v2/models/bert/stats", String::new()),
            ("POST", "/v2/repository/index", String::new()),
            ("POST", "/v2/repository/models/nope/load", String::new()),
            ("POST", "/v2/repository/models/nope/unload", String::new()),
            ("GET", "/api/v1/functions", String::new()),
            ("POST", "/api/v1/functions", bad_deploy),
            ("GET", "/api/v1/functions/bert", String::new()),
            ("DELETE", "/api/v1/functions/nope", String::new()),
            ("GET", "/api/v1/devices", String::new()),
            ("GET", "/api/v1/scheduler", String::new()),
            ("GET", "/api/v1/events", String::new()),
            ("GET", "/api/v1/functions/gpt2/ws", String::new()),
        ]
    }

    #[derive(Debug, Clone)]
    enum Edit {
        /// Percent-encode the byte at this position (upper- or lower-case hex).
        Escape(usize, bool),
        /// Flip the case of the letter at this position.
        Case(usize),
        /// Insert `/.` or `/x/..` at the slash at this position.
        Dot(usize, bool),
        /// Double the slash at this position.
        Slash(usize),
    }

    fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            (0..64usize, any::<bool>()).prop_map(|(i, u)| Edit::Escape(i, u)),
            (0..64usize).prop_map(Edit::Case),
            (0..64usize, any::<bool>()).prop_map(|(i, u)| Edit::Dot(i, u)),
            (0..64usize).prop_map(Edit::Slash),
        ]
    }

    /// Applies the edits to the path (positions taken modulo its length, as it grows).
    fn spell(path: &str, edits: &[Edit]) -> String {
        let mut p: Vec<String> = path.chars().map(|c| c.to_string()).collect();
        for e in edits {
            let n = p.len();
            match *e {
                Edit::Escape(i, upper) => {
                    let i = 1 + i % (n - 1);
                    if p[i].len() == 1 {
                        let b = p[i].as_bytes()[0];
                        p[i] = if upper { format!("%{b:02X}") } else { format!("%{b:02x}") };
                    }
                }
                Edit::Case(i) => {
                    let i = i % n;
                    let c = p[i].clone();
                    p[i] = if c == c.to_lowercase() { c.to_uppercase() } else { c.to_lowercase() };
                }
                // Earlier edits may have escaped every plain slash (after a dot segment took
                // the first place): then there is no slash to edit at.
                Edit::Dot(i, up) => {
                    let slashes: Vec<usize> = (0..n).filter(|&k| p[k] == "/").collect();
                    if let Some(&k) = slashes.get(i % slashes.len().max(1)) {
                        p.insert(k, if up { "/x/..".into() } else { "/.".into() });
                    }
                }
                Edit::Slash(i) => {
                    let slashes: Vec<usize> = (0..n).filter(|&k| p[k] == "/").collect();
                    if let Some(&k) = slashes.get(i % slashes.len().max(1)) {
                        p.insert(k, "/".into());
                    }
                }
            }
        }
        p.concat()
    }

    #[test]
    fn a_path_spelled_otherwise_never_gets_more_than_its_route() {
        let (server, _repo, _state) = start(true);
        for model in ["bert", "gpt2"] {
            let body = json!({"name": model, "model": format!("tiny_{model}")});
            assert_eq!(call(&server, "POST", "/api/v1/functions", Some(ADMIN), Some(&body)).0, 201);
        }
        let routes = routes();
        let tokens = [None, Some(SHOP), Some(INVOKE), Some(ADMIN)];
        // What each route answers each token when spelled plainly.
        let canonical: Vec<Vec<u16>> =
            routes.iter().map(|(m, p, b)| tokens.iter().map(|t| raw(&server, m, p, *t, b).0).collect()).collect();
        assert!(canonical.iter().any(|c| c[0] == 401) && canonical.iter().any(|c| c[1] == 403));
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(200));
        let strategy = (0..routes.len(), prop::collection::vec(edit(), 1..4));
        runner
            .run(&strategy, |(r, edits)| {
                let (method, path, body) = &routes[r];
                let spelled = spell(path, &edits);
                for (t, token) in tokens.iter().enumerate() {
                    let want = canonical[r][t];
                    let (got, text) = raw(&server, method, &spelled, *token, body);
                    // The route itself (the same answer), or no route or a refusal (a 4xx):
                    // never a success the route does not give this token, never a 5xx.
                    prop_assert!(got < 500, "{method} {spelled} (route {path}) with token {t}: {got}: {text}");
                    prop_assert!(
                        got >= 400 || got == want,
                        "{method} {spelled} (route {path}) with token {t}: {got} where the route says {want}: {text}"
                    );
                }
                Ok(())
            })
            .unwrap();
        server.stop();
    }
}
