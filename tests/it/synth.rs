//! Synthetic packages: written streaming, loadable, runnable, reproducible from the seed.

use faaswap::engine::{Dtype, Model, TokenBatch};

use crate::cli::faaswap_json;
use crate::common::max_abs_diff;

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
        out
    };
    let a = Model::load(&write("a", "11", "f32")).unwrap();
    let b = Model::load(&write("b", "11", "f32")).unwrap();
    let c = Model::load(&write("c", "12", "f32")).unwrap();
    let h_dir = write("h", "11", "f16");
    assert_eq!(a.weights(), b.weights());
    assert_ne!(a.weights(), c.weights());
    // Widened to F32 at load, the F16 package holds the rounded F32 values exactly.
    let wide = Model::load_as(&h_dir, Some(Dtype::F32)).unwrap();
    let rounded: Vec<f32> = a.weights().iter().map(|&x| half::f16::from_f32(x).to_f32()).collect();
    assert_eq!(wide.weights(), &rounded[..]);
    // Kept in F16 (the default for an F16 package), it takes half the bytes and answers the same.
    let h = Model::load(&h_dir).unwrap();
    assert_eq!(h.spec.layout.matrix_dtype(), Dtype::F16);
    let ratio = h.spec.layout.total_bytes() as f64 / a.spec.layout.total_bytes() as f64;
    assert!((0.49..=0.51).contains(&ratio), "F16 bytes are {ratio} of F32");
    let batch = TokenBatch::from_sequences(&[vec![7, 8, 9], vec![1, 2]]).unwrap();
    let kind = [faaswap::engine::OutputKind::LastHiddenState];
    let (x, y) = (h.infer(&batch, &kind).unwrap(), wide.infer(&batch, &kind).unwrap());
    assert!(max_abs_diff(&x[0].data, &y[0].data) <= 1e-5);
}

#[test]
fn synth_lists_presets() {
    let list = faaswap_json(&["synth", "--list"]);
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    for want in ["bert-base", "bert-large", "gpt2", "gpt2-medium", "gpt2-large"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
}
