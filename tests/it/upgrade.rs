//! State across releases and damage: the state directory the last release wrote (committed
//! under `tests/state/`) restores exactly; a record that cannot be read, a record the store
//! lost, and a package copy that changed on disk are each reported and hide nothing else; the
//! name of such a function stays taken, and its package copy stays, until an operator deletes it.

use std::path::Path;

use serde_json::{json, Value};

use crate::common::{copy_dir, Binary};
use crate::server::TestServer;

fn committed_state(name: &str) -> tempfile::TempDir {
    let state = tempfile::tempdir().unwrap();
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/state").join(name), state.path());
    state
}

fn functions(server: &TestServer) -> Vec<Value> {
    let (status, v) = server.get("/api/v1/functions");
    assert_eq!(status, 200, "{v}");
    v.as_array().unwrap().clone()
}

fn find<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter().find(|f| f["name"] == name).unwrap_or_else(|| panic!("{name} is not listed: {list:#?}"))
}

/// Opens the stopped server's store (once its last thread lets go of the lock) and changes it
/// the way a damaged disk or a lost log would.
#[allow(clippy::disallowed_methods)] // the test plays the part of the damage
fn damage(state: &Path, f: impl FnOnce(&sled::Tree)) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let db = loop {
        match sled::open(state.join("db")) {
            Ok(db) => break db,
            Err(e) if std::time::Instant::now() < deadline => {
                assert!(e.to_string().contains("lock"), "{e}");
                std::thread::park_timeout(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("{e}"),
        }
    };
    let tree = db.open_tree("functions").unwrap();
    f(&tree);
    db.flush().unwrap();
}

#[test]
fn the_state_the_last_release_wrote_restores_exactly() {
    let repo = tempfile::tempdir().unwrap();
    let state = committed_state("v1-cpu");
    let server = TestServer::start(state.path(), repo.path(), |_| {});
    let list = functions(&server);
    assert_eq!(list.len(), 2, "{list:#?}");
    let encoder = find(&list, "encoder");
    assert_eq!(encoder["state"], "ready");
    assert_eq!(encoder["model"], "bert-nano");
    // The view names the dtype the weights are held in; records of format 1 name none, so the
    // package's is kept (gpt2-nano was written in BF16: held in BF16 now, widened before).
    assert_eq!(
        encoder["settings"],
        json!({"slo_ms": 250.0, "slo_percentile": 0.95, "max_batch": 4, "dtype": "f32", "compute": "f32"})
    );
    assert_eq!(encoder["digest"], "b0054e28f8eab47cbedfc0866bc18d1f540192d972c114bf1a98057f0e40502d");
    assert_eq!(
        find(&list, "gpt2-nano")["settings"],
        json!({"slo_ms": 1000.0, "slo_percentile": 0.98, "max_batch": 8, "dtype": "bf16", "compute": "f32"})
    );
    // The same outputs, bit for bit, as the release that wrote the state answered.
    let want = crate::common::read_json(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/state/v1-cpu-outputs.json"));
    for name in ["encoder", "gpt2-nano"] {
        let (status, got) = server.post(&format!("/v2/models/{name}/infer"), &want[name]["request"]);
        assert_eq!(status, 200, "{got}");
        assert_eq!(got["outputs"], want[name]["outputs"], "{name}");
    }
    // Records are rewritten in the current format and copies marked; a restart restores the same.
    server.stop();
    for dir in ["encoder-b0054e28f8eab47c", "gpt2-nano-810bab136442674f"] {
        assert!(state.path().join("packages").join(dir).join(".faaswap-record.json").is_file(), "{dir}");
    }
    let server = TestServer::start(state.path(), repo.path(), |_| {});
    assert_eq!(functions(&server), list);
    server.stop();

    // A function deployed from a profile alone (sim devices).
    let state = committed_state("v1-sim");
    let server = TestServer::start(state.path(), repo.path(), |a| a.devices = Some("sim:2x1GiB".into()));
    let list = functions(&server);
    let f = find(&list, "resnet-like");
    assert_eq!(f["profile"], json!({"weight_bytes": 102400000, "exec_ms": 7.5, "class": "heavy"}));
    assert_eq!(f["settings"], json!({"slo_ms": 80.0, "slo_percentile": 0.98, "max_batch": 2}));
    let body = json!({"inputs": [{"name": "input_ids", "shape": [1, 1], "datatype": "INT64", "data": [1]}]});
    assert_eq!(server.post("/v2/models/resnet-like/infer", &body).0, 200);
    server.stop();
}

/// Format-2 records, as the release before half weights (`3cd7009`) wrote them: no `dtype` or
/// `compute` in the settings. They restore with the package's dtype (the BF16 encoder, which
/// that release widened to F32, is now held in BF16: half its bytes) and F32 compute, answering
/// what that release answered.
#[test]
fn the_format_2_state_of_the_release_before_half_weights_restores() {
    let repo = tempfile::tempdir().unwrap();
    let state = committed_state("v2-cpu");
    let server = TestServer::start(state.path(), repo.path(), |_| {});
    let list = functions(&server);
    assert_eq!(list.len(), 2, "{list:#?}");
    let encoder = find(&list, "encoder");
    assert_eq!(encoder["state"], "ready");
    assert_eq!(encoder["digest"], "b12ed3dbfed057e3b66fe9c9e6a72537653deb56467b9c10cf9da436649c1ea9");
    assert_eq!(
        encoder["settings"],
        json!({"slo_ms": 250.0, "slo_percentile": 0.95, "max_batch": 4, "dtype": "bf16", "compute": "f32"})
    );
    // That release held it in 210,176 bytes (widened to F32).
    let bytes = encoder["weight_bytes"].as_u64().unwrap();
    assert!(bytes * 2 < 210_176 + 8192, "held half: {bytes} bytes");
    let gpt2 = find(&list, "gpt2-nano");
    assert_eq!(gpt2["settings"]["dtype"], "f32");
    assert_eq!(gpt2["weight_bytes"], 243_200);
    let want = crate::common::read_json(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/state/v2-cpu-outputs.json"));
    for name in ["encoder", "gpt2-nano"] {
        let (status, got) = server.post(&format!("/v2/models/{name}/infer"), &want[name]["request"]);
        assert_eq!(status, 200, "{got}");
        assert_eq!(got["outputs"], want[name]["outputs"], "{name}");
    }
    server.stop();
    let server = TestServer::start(state.path(), repo.path(), |_| {});
    assert_eq!(functions(&server), list);
    server.stop();
}

fn deploy_two(state: &Path, repo: &Path) {
    let server = TestServer::start(state, repo, |_| {});
    for (name, model) in [("bert", "tiny_bert"), ("gpt2", "tiny_gpt2")] {
        assert_eq!(server.post("/api/v1/functions", &json!({"name": name, "model": model})).0, 201);
    }
    server.stop();
}

fn ids(n: usize) -> Value {
    json!({"inputs": [{"name": "input_ids", "shape": [1, n], "datatype": "INT64", "data": vec![5; n]}]})
}

/// Used to be: one unreadable record restored none of the functions, `/v2/health/ready` said
/// ready, and a new deploy under the unreadable name overwrote it.
#[test]
fn an_unreadable_record_is_reported_keeps_its_name_and_hides_nothing() {
    let repo = crate::server::repository();
    let state = tempfile::tempdir().unwrap();
    deploy_two(state.path(), repo.path());
    // As a newer release (or a damaged disk) would leave it.
    damage(state.path(), |t| {
        t.insert("bert", b"\xfaFSW\x07{\"from\": \"the future\"}".to_vec()).unwrap();
    });
    {
        // Gauges are process-wide and this process runs servers side by side: read this one
        // from a server process of its own.
        let (state, repo) = (state.path().to_str().unwrap(), repo.path().to_str().unwrap());
        let bin = Binary::serve(&["--state-dir", state, "--model-repository", repo, "--devices", "cpu"]);
        let metrics = ureq::get(&format!("{}/metrics", bin.url)).call().unwrap().into_string().unwrap();
        assert!(metrics.lines().any(|l| l == "faaswap_state_records_unreadable 1"), "{metrics}");
    }
    let server = TestServer::start(state.path(), repo.path(), |_| {});
    assert_eq!(server.post("/v2/models/gpt2/infer", &ids(3)).0, 200, "the other function is served");
    let list = functions(&server);
    let bert = find(&list, "bert");
    assert_eq!(
        (bert["state"].as_str(), bert["unavailable"]["kind"].as_str()),
        (Some("unavailable"), Some("unreadable_record"))
    );
    assert!(bert["unavailable"]["reason"].as_str().unwrap().contains("format 7"), "{bert}");
    assert_eq!(server.get("/api/v1/functions/bert").1, *bert);
    let (status, v) = server.post("/v2/models/bert/infer", &ids(3));
    assert_eq!((status, v["code"].as_str()), (503, Some("function_unavailable")), "{v}");
    // Its name is not reused, and its package copy stays.
    let (status, v) = server.post("/api/v1/functions", &json!({"name": "bert", "model": "tiny_gpt2"}));
    assert_eq!((status, v["code"].as_str()), (409, Some("function_unavailable")), "{v}");
    assert_eq!(server.post("/v2/repository/models/tiny_bert/load", &json!({})).0, 200, "another name is fine");
    let copies = |prefix: &str| {
        std::fs::read_dir(state.path().join("packages"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with(prefix))
            .count()
    };
    assert_eq!(copies("bert-"), 1);
    // An operator deletes it; then the name is free.
    assert_eq!(server.request("DELETE", "/api/v1/functions/bert", None).0, 200);
    assert_eq!(copies("bert-"), 0);
    assert_eq!(server.post("/api/v1/functions", &json!({"name": "bert", "model": "tiny_bert"})).0, 201);
    assert_eq!(server.post("/v2/models/bert/infer", &ids(3)).0, 200);
    server.stop();
}

/// Used to be: a truncated store log lost a record, and the start-up deleted the package copy
/// of the function it lost.
#[test]
fn a_lost_record_keeps_its_package_copy_and_is_reported() {
    let repo = crate::server::repository();
    let state = tempfile::tempdir().unwrap();
    deploy_two(state.path(), repo.path());
    damage(state.path(), |t| {
        t.remove("gpt2").unwrap();
    });
    let server = TestServer::start(state.path(), repo.path(), |_| {});
    let list = functions(&server);
    assert_eq!(find(&list, "gpt2")["unavailable"]["kind"], "record_lost", "{list:#?}");
    assert_eq!(find(&list, "bert")["state"], "ready");
    server.stop();
    let kept = std::fs::read_dir(state.path().join("packages"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("gpt2-"))
        .count();
    assert_eq!(kept, 1, "the copy of the function whose record was lost stays");
}

/// A package copy that changed on disk is never served: re-imported when the repository holds
/// the same package, reported otherwise.
#[test]
fn a_package_copy_that_changed_is_never_served() {
    let repo = crate::server::repository();
    let state = tempfile::tempdir().unwrap();
    deploy_two(state.path(), repo.path());
    let server = TestServer::start(state.path(), repo.path(), |_| {});
    let (_, want) = server.post("/v2/models/bert/infer", &ids(4));
    server.stop();
    let copy = std::fs::read_dir(state.path().join("packages"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("bert-"))
        .unwrap();
    let weights = copy.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&weights, &bytes).unwrap();
    // The repository still holds the package: the copy is replaced and served as before.
    let server = TestServer::start(state.path(), repo.path(), |_| {});
    let (status, got) = server.post("/v2/models/bert/infer", &ids(4));
    assert_eq!((status, &got["outputs"]), (200, &want["outputs"]));
    server.stop();
    // Changed again, and the repository no longer has it: not served, reported.
    std::fs::write(&weights, &bytes).unwrap();
    std::fs::remove_dir_all(repo.path().join("tiny_bert")).unwrap();
    let server = TestServer::start(state.path(), repo.path(), |_| {});
    let list = functions(&server);
    let bert = find(&list, "bert");
    assert_eq!(bert["unavailable"]["kind"], "package_changed", "{bert}");
    assert_eq!(server.post("/v2/models/bert/infer", &ids(4)).0, 503);
    assert_eq!(server.post("/v2/models/gpt2/infer", &ids(4)).0, 200);
    server.stop();
}
