//! Synthetic packages: written streaming, loadable, runnable, reproducible from the seed.

use faaswap::engine::{Model, TokenBatch};

use crate::cli::faaswap_json;

#[test]
fn synth_presets_load_and_run() {
    for (preset, output) in [
        ("bert-tiny", "last_hidden_state"),
        ("gpt2-tiny", "logits"),
        ("bert-nano", "last_hidden_state"),
        ("gpt2-nano", "logits"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join(preset);
        let report = faaswap_json(&["synth", "--preset", preset, "--seed", "3", "--out", out.to_str().unwrap()]);
        let size = std::fs::metadata(out.join("model.safetensors")).unwrap().len();
        assert_eq!(report["file_bytes"].as_u64().unwrap(), size);
        assert!(!out.join("model.safetensors.tmp").exists());
        let run = faaswap_json(&["run", "--model", out.to_str().unwrap(), "--input-ids", "1,2,3"]);
        assert_eq!(run["outputs"][0]["name"], output);
        let model = Model::load(&out).unwrap();
        assert_eq!(model.spec.summary().tensors, model.spec.layout.tensors.len());
        let packed: usize = model.spec.layout.tensors.iter().map(|t| t.span.len).sum();
        assert_eq!(report["parameters"].as_u64().unwrap() as usize, packed);
    }
}

#[test]
fn same_seed_same_weights_and_f16_is_the_rounded_f32() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, seed: &str, dtype: &str| {
        let out = dir.path().join(name);
        faaswap_json(&[
            "synth",
            "--preset",
            "bert-tiny",
            "--seed",
            seed,
            "--dtype",
            dtype,
            "--out",
            out.to_str().unwrap(),
        ]);
        Model::load(&out).unwrap()
    };
    let a = write("a", "11", "f32");
    let b = write("b", "11", "f32");
    let c = write("c", "12", "f32");
    let h = write("h", "11", "f16");
    assert_eq!(a.weights(), b.weights());
    assert_ne!(a.weights(), c.weights());
    let rounded: Vec<f32> = a.weights().iter().map(|&x| half::f16::from_f32(x).to_f32()).collect();
    assert_eq!(h.weights(), &rounded[..]);
    let batch = TokenBatch::from_sequences(&[vec![7, 8, 9]]).unwrap();
    assert!(a.infer(&batch, &[faaswap::engine::OutputKind::LastHiddenState]).is_ok());
}

#[test]
fn synth_lists_presets() {
    let list = faaswap_json(&["synth", "--list"]);
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    for want in ["bert-base", "bert-large", "gpt2", "gpt2-medium", "gpt2-large"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
}
