//! Compatibility with an existing client: Triton's Python HTTP client, unmodified, doing
//! health, metadata, repository load/unload, infer (binary and JSON tensors) and statistics
//! against the real server. `scripts/test.sh` installs `tritonclient[http]` into
//! `.cache/test-venv`; `FAASWAP_TEST_PYTHON` may point at another interpreter that has it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{copy_dir, fixtures};
use crate::server::{repository, TestServer};

fn python() -> PathBuf {
    let p = std::env::var_os("FAASWAP_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/test-venv/bin/python"));
    assert!(
        p.exists(),
        "no Python with tritonclient at {}: run scripts/test.sh (or set FAASWAP_TEST_PYTHON)",
        p.display()
    );
    p
}

#[test]
fn tritonclient_speaks_to_faaswap() {
    let python = python();
    let state = tempfile::tempdir().unwrap();
    let repo = repository();
    for name in ["tiny_bert_cls", "tiny_bert_qa"] {
        copy_dir(&fixtures().join(name), &repo.path().join(name));
    }
    let s = TestServer::start(state.path(), repo.path(), |_| {});
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/triton/check_tritonclient.py");
    let out = Command::new(python).arg(script).arg(&s.url).arg(fixtures()).output().unwrap();
    assert!(
        out.status.success(),
        "tritonclient checks failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("all checks passed"));
}
