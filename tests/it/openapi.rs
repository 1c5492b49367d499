//! The OpenAPI description at `/api/openapi.json`: every documented route exists on the
//! server, and schemathesis (from `.cache/test-venv`, installed by `scripts/test.sh`) sends
//! requests generated from it — none may get a 5xx.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::server::TestServer;

fn schemathesis() -> std::path::PathBuf {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/test-venv/bin/schemathesis");
    assert!(bin.exists(), "{} is missing: run scripts/test.sh (it installs schemathesis)", bin.display());
    bin
}

#[test]
fn the_description_matches_the_routes_and_generated_requests_get_no_5xx() {
    let repo = crate::server::repository();
    let state = tempfile::tempdir().unwrap();
    let server = TestServer::start(state.path(), repo.path(), |a| a.max_body = Some("1MiB".into()));
    for (name, model) in [("bert", "tiny_bert"), ("gpt2", "tiny_gpt2")] {
        assert_eq!(server.post("/api/v1/functions", &json!({"name": name, "model": model})).0, 201);
    }
    let (status, doc) = server.get("/api/openapi.json");
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let paths = doc["paths"].as_object().unwrap();
    for want in [
        "/v2/models/{name}/infer",
        "/api/v1/functions",
        "/api/v1/events",
        "/api/v1/functions/{name}/ws",
        "/metrics",
        "/v1/models",
        "/v1/completions",
        "/v1/chat/completions",
    ] {
        assert!(paths.contains_key(want), "{want} is documented");
    }
    // Every documented operation reaches a handler (never the router's 404 `not_found`).
    for (path, ops) in paths {
        let concrete = path.replace("{name}", "bert").replace("{id}", "cpu:0");
        for method in ops.as_object().unwrap().keys() {
            if method == "delete" {
                continue; // checked by schemathesis below; keep "bert" deployed meanwhile
            }
            let (status, body) = server.request(&method.to_uppercase(), &concrete, Some(&json!({})));
            let code = body.get("code").and_then(Value::as_str).unwrap_or_default();
            assert!(!(status == 404 && code == "not_found"), "{method} {path} is documented but not routed");
            assert!(status < 500, "{method} {path}: {status} {body}");
        }
    }
    // Coverage and fuzzing phases: schemathesis 4.32's `examples` phase stops with an internal
    // hypothesis error ("Inconsistent results") while building the load endpoint's examples —
    // a failure of the tool, not a response of the server.
    let out = Command::new(schemathesis())
        .args(["run", &format!("{}/api/openapi.json", server.url)])
        .args(["--checks", "not_a_server_error", "--max-examples", "30", "--phases", "coverage,fuzzing"])
        .args(["--workers", "2", "--seed", "7", "--suppress-health-check", "all"])
        .env("NO_COLOR", "1")
        // It keeps a cache of findings in its working directory: not in the repository.
        .current_dir(state.path())
        .output()
        .expect("schemathesis runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "schemathesis found failures:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    println!("{}", stdout.lines().rev().take(12).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n"));
    assert_eq!(server.get("/v2/health/live").0, 200, "the server survived");
    server.stop();
}
