//! The `faaswap` binary: JSON on stdout, one-line errors on stderr with a non-zero exit.

use std::process::{Command, Output};

use serde_json::{json, Value};

use crate::common::*;

pub fn faaswap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_faaswap")).args(args).output().expect("runs the binary")
}

/// Runs and expects success with one JSON document on stdout.
pub fn faaswap_json(args: &[&str]) -> Value {
    let out = faaswap(args);
    assert!(out.status.success(), "faaswap {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON document")
}

/// Runs and expects failure: returns stderr, checking stdout is empty and stderr one line.
fn faaswap_error(args: &[&str]) -> String {
    let out = faaswap(args);
    assert!(!out.status.success(), "faaswap {args:?} should fail");
    assert!(out.stdout.is_empty(), "stdout carries only JSON: {:?}", String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "one-line error: {stderr:?}");
    stderr
}

#[test]
fn run_prints_kserve_outputs_for_bert() {
    let reference = read_json(&tiny_bert().join("reference.json"));
    let case = &reference["cases"][1];
    let ids: Vec<String> = crate::common::ids(&case["input_ids"]).iter().map(u32::to_string).collect();
    let v = faaswap_json(&["run", "--model", tiny_bert().to_str().unwrap(), "--input-ids", &ids.join(",")]);
    let out = &v["outputs"][0];
    assert_eq!(out["name"], "last_hidden_state");
    assert_eq!(out["datatype"], "FP32");
    assert_eq!(out["shape"], serde_json::json!([1, ids.len(), 64]));
    let diff = max_abs_diff(&floats(&out["data"]), &flat_rows(&case["last_hidden_state"]));
    assert!(diff <= 1e-4, "{diff}");
}

#[test]
fn run_gives_gpt2_logits_for_every_position_and_batches() {
    let model = tiny_gpt2();
    let v = faaswap_json(&["run", "--model", model.to_str().unwrap(), "--input-ids", "1,2,3", "--input-ids", "4,5"]);
    let out = &v["outputs"][0];
    assert_eq!(out["name"], "logits");
    assert_eq!(out["shape"], serde_json::json!([2, 3, 512]));
    assert_eq!(out["data"].as_array().unwrap().len(), 2 * 3 * 512);
}

#[test]
fn generate_prints_new_tokens_only() {
    let reference = read_json(&tiny_gpt2().join("reference.json"));
    let g = &reference["generation"][1];
    let prompt: Vec<String> = ids(&g["prompt_ids"]).iter().map(u32::to_string).collect();
    let v = faaswap_json(&[
        "generate",
        "--model",
        tiny_gpt2().to_str().unwrap(),
        "--input-ids",
        &prompt.join(","),
        "--max-new-tokens",
        "16",
    ]);
    assert_eq!(ids(&v["token_ids"]), ids(&g["new_token_ids"]));
    let sampled = |seed: &str| {
        faaswap_json(&[
            "generate",
            "--model",
            tiny_gpt2().to_str().unwrap(),
            "--input-ids",
            "1,2",
            "--max-new-tokens",
            "8",
            "--temperature",
            "1.2",
            "--top-k",
            "50",
            "--top-p",
            "0.9",
            "--seed",
            seed,
        ])
    };
    // The same tokens (the timings beside them differ from run to run).
    assert_eq!(sampled("9")["token_ids"], sampled("9")["token_ids"]);
    let timed = sampled("9");
    assert!(timed["first_token_ms"].as_f64().unwrap() > 0.0 && timed["decode_ms_per_token"].as_f64().unwrap() > 0.0);
    assert_eq!(timed["prompt_tokens"], 2);
}

#[test]
fn inspect_shows_layout() {
    let v = faaswap_json(&["inspect", "--model", tiny_gpt2().to_str().unwrap(), "--tensors"]);
    assert_eq!(v["model_type"], "gpt2");
    assert_eq!(v["layers"].as_array().unwrap().len(), 4);
    assert_eq!(v["tensors"][0]["name"], "wte.weight");
    assert_eq!(v["outputs"], serde_json::json!(["logits", "last_logits"]));
}

#[test]
fn errors_are_one_line_with_non_zero_exit() {
    let bert = tiny_bert();
    let bert = bert.to_str().unwrap();
    let err = faaswap_error(&["run", "--model", "/nonexistent", "--input-ids", "1"]);
    assert!(err.contains("/nonexistent"), "{err}");
    let err = faaswap_error(&["run", "--model", bert, "--input-ids", "1,9999"]);
    assert!(err.contains("9999"), "{err}");
    let err = faaswap_error(&["run", "--model", bert, "--text", "hello"]);
    assert!(err.contains("tokenizer"), "{err}");
    let err = faaswap_error(&["run", "--model", bert, "--input-ids", "1", "--output", "logits"]);
    assert!(err.contains("logits"), "{err}");
    let err = faaswap_error(&["generate", "--model", bert, "--input-ids", "1"]);
    assert!(err.contains("decoder"), "{err}");
    let err = faaswap_error(&["synth", "--preset", "nope", "--out", "/tmp/x"]);
    assert!(err.contains("bert-base"), "lists known presets: {err}");
    // Argument errors come from clap: non-zero exit and nothing on stdout.
    let out = faaswap(&["run", "--model", bert, "--input-ids", "1,x"]);
    assert!(!out.status.success() && out.stdout.is_empty());
    let out = faaswap(&["run", "--model", bert]);
    assert!(!out.status.success() && out.stdout.is_empty());
}

#[test]
fn device_check_on_the_cpu_meets_the_fixtures_and_reports_timings() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("bert-nano");
    faaswap_json(&["synth", "--preset", "bert-nano", "--out", pkg.to_str().unwrap()]);
    let decoder = dir.path().join("gpt2-nano");
    faaswap_json(&["synth", "--preset", "gpt2-nano", "--out", decoder.to_str().unwrap()]);
    let fixtures = fixtures();
    let report = faaswap_json(&[
        "device-check",
        "--devices",
        "cpu",
        "--fixtures",
        fixtures.to_str().unwrap(),
        "--model",
        pkg.to_str().unwrap(),
        "--model",
        decoder.to_str().unwrap(),
        "--seq-len",
        "16",
        "--iters",
        "2",
        "--cold-iters",
        "1",
    ]);
    assert_eq!(report["device"], "cpu:0");
    let checks = report["fixtures"].as_array().unwrap();
    assert_eq!(
        checks.len(),
        34,
        "4 BERT cases; 4 cases and 2 greedy generations of GPT-2 and each Llama-family fixture"
    );
    for name in ["tiny_llama", "tiny_qwen2", "tiny_qwen3", "tiny_mistral"] {
        assert!(checks.iter().any(|c| c["case"] == format!("{name} greedy generation 1")), "{name}");
    }
    for c in checks {
        assert_eq!(c["ok"], true, "{c}");
        assert!(c["max_abs_diff"].as_f64().unwrap() <= 1e-4, "{c}");
    }
    // A decoder is timed to its first token: the last position's logits.
    let outputs: Vec<&Value> = report["models"].as_array().unwrap().iter().map(|m| &m["output"]).collect();
    assert_eq!(outputs, [&json!("last_hidden_state"), &json!("last_logits")]);
    let m = &report["models"][0];
    assert_eq!(m["model"], "bert-nano");
    assert_eq!(m["max_abs_diff_vs_cpu"], 0.0, "the cpu device is the CPU engine");
    assert!(m["max_abs_output"].as_f64().unwrap() > 0.0);
    for key in ["raw_copy_ms", "swap_ms", "cold_ms", "warm_ms"] {
        assert!(m[key].as_f64().unwrap() > 0.0, "{key}: {m}");
    }
    assert_eq!(m["pinned"], serde_json::Value::Null, "no CUDA device: nothing is page-locked");
    let err = faaswap_error(&["device-check", "--devices", "sim:1"]);
    assert!(err.contains("sim devices only model time"), "{err}");
}

#[test]
fn cuda_without_the_driver_fails_naming_the_library_and_the_fix() {
    let dirs = faaswap::gpu::cuda::libs::search_dirs(&|k| std::env::var(k).ok());
    if let Some(found) = faaswap::gpu::cuda::libs::find(&faaswap::gpu::cuda::libs::LIBS[0], &dirs) {
        eprintln!("skipped: this machine has a CUDA driver ({})", found.display());
        return;
    }
    let err = faaswap_error(&["device-check", "--devices", "cuda"]);
    assert!(err.contains("libcuda.so.1") && err.contains("FAASWAP_CUDA_LIB_DIR"), "{err}");
    let state = tempfile::tempdir().unwrap();
    let out = faaswap(&["serve", "--devices", "cuda", "--state-dir", state.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("libcuda.so.1") && stderr.contains("--devices cpu"), "{stderr}");
}

/// `scripts/gpu-check.sh` stays runnable: its dry run (the CPU device, no PyTorch) goes through
/// the same steps — synthesis, device-check with the fixtures, the merged table.
#[test]
fn the_gpu_check_script_runs_dry_on_the_cpu() {
    let out = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let run = Command::new("bash")
        .arg(root.join("scripts/gpu-check.sh"))
        .arg(out.path())
        .env("FAASWAP_BIN", env!("CARGO_BIN_EXE_faaswap"))
        .env("FIXTURES", fixtures())
        .env("DEVICES", "cpu")
        .env("SKIP_TORCH", "1")
        .env("MODELS", "bert-nano gpt2-nano")
        .env("BF16_MODELS", "bert-nano")
        .output()
        .expect("runs bash");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    let table = std::fs::read_to_string(out.path().join("table.md")).unwrap();
    assert!(table.contains("fixture checks: 34/34 within tolerance"), "{table}");
    for model in ["| bert-nano |", "| gpt2-nano |", "| bert-nano-bf16 |"] {
        assert!(table.contains(model), "{model} row: {table}");
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("faaswap.json")).unwrap()).unwrap();
    assert_eq!(report["models"].as_array().unwrap().len(), 3);
    // The server check ran against a real server: every fixture case over HTTP, both packages.
    let serve: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("serve.json")).unwrap()).unwrap();
    let checks = serve["checks"].as_array().unwrap();
    let passed = |prefix: &str| checks.iter().filter(|c| c["check"].as_str().unwrap().starts_with(prefix)).count();
    assert_eq!((passed("tiny_bert case"), passed("tiny_gpt2 case")), (4, 4), "{serve}");
    assert!(checks.iter().all(|c| c["ok"] != false), "{serve}");
    for model in ["bert-nano", "gpt2-nano"] {
        assert!(serve["latency_ms"][model]["warm_http_median"].as_f64().unwrap() > 0.0, "{serve}");
    }
    assert!(table.contains("server checks (faaswap serve on cpu): "), "{table}");
}

/// A token with whitespace around it (a stray newline from a secrets file) is refused at
/// start-up instead of becoming a token nobody can present.
#[test]
fn serve_refuses_tokens_padded_with_whitespace() {
    let state = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_faaswap"))
        .args(["serve", "--addr", "127.0.0.1:0", "--devices", "sim:1", "--state-dir", state.path().to_str().unwrap()])
        .env("FAASWAP_ADMIN_TOKEN", "admin-token-0123456789\n")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server started with a padded token");
        }
        std::thread::park_timeout(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("FAASWAP_ADMIN_TOKEN") && stderr.contains("whitespace"), "{stderr}");
}

#[test]
fn inspect_reads_onnx_models_and_names_what_is_wrong_with_one() {
    let dir = fixtures().join("tiny_resnet_onnx");
    let reference = read_json(&dir.join("reference.json"));
    for model in [dir.clone(), dir.join("model.onnx")] {
        let v = faaswap_json(&["inspect", "--model", model.to_str().unwrap(), "--tensors"]);
        assert_eq!((v["format"].as_str(), v["opset"].as_i64()), (Some("onnx"), Some(17)));
        let ops: Vec<&String> = v["operators"].as_object().unwrap().keys().collect();
        let want: Vec<&str> = reference["operators"].as_array().unwrap().iter().map(|o| o.as_str().unwrap()).collect();
        assert_eq!(ops, want);
        assert_eq!(v["inputs"][0]["dims"], json!([null, 3, 32, 32]));
        assert_eq!(v["tensors"].as_array().unwrap().len() as u64, v["initializers"].as_u64().unwrap());
    }
    let bad = tempfile::tempdir().unwrap();
    let path = bad.path().join("model.onnx");
    std::fs::write(&path, b"\x08\x07\x12\x04junk\xff\xff").unwrap();
    let err = faaswap_error(&["inspect", "--model", path.to_str().unwrap()]);
    assert!(err.contains("invalid ONNX model") && err.contains("model.onnx"), "{err}");
}
