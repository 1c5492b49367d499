//! The admin UI in a real browser: `tests/browser/admin.mjs` drives Debian's chromium through
//! playwright-core against the real server (devices shown, deploys through the form, invoke,
//! the swap-in in the event feed and the memory map, an SLO edit, a streamed generation with
//! the reference tokens) and saves a screenshot to `target/browser-artifacts/admin.png`.
//! The server has an admin token, which the page asks for. `scripts/test.sh` installs chromium and `tests/browser/node_modules`; `CHROMIUM` may point
//! at another chromium binary.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::server::{repository, TestServer};

/// The script waits at most 15 s per step; this bounds a browser that hangs altogether.
const LIMIT: Duration = Duration::from_secs(180);
const TOKEN: &str = "browser-test-admin-token-01";

#[test]
fn admin_ui_in_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        root.join("tests/browser/node_modules/playwright-core").exists(),
        "tests/browser/node_modules is missing: run scripts/test.sh (it runs npm ci --prefix tests/browser)"
    );
    let artifacts = root.join("target/browser-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("admin.png");
    let _ = std::fs::remove_file(&screenshot);
    let (out_path, err_path) = (artifacts.join("admin.stdout.log"), artifacts.join("admin.stderr.log"));

    let state = tempfile::tempdir().unwrap();
    let repo = repository(); // tiny_bert and tiny_gpt2
                             // With an admin token configured: the page must ask for it and send it on every call.
    let server = TestServer::start(state.path(), repo.path(), |a| a.admin_token = Some(TOKEN.into()));

    // Output goes to files rather than pipes: nothing to drain while waiting with a limit.
    let mut child = Command::new("node")
        .current_dir(root)
        .arg("tests/browser/admin.mjs")
        .arg(&server.url)
        .arg(&screenshot)
        .env("FAASWAP_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .expect("node runs (install Node.js 20 or later)");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::park_timeout(Duration::from_millis(100));
    };
    server.stop();

    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    println!("{stdout}");
    let Some(status) = status else {
        panic!("the browser test ran past {LIMIT:?} and was killed:\n{stdout}\n{stderr}");
    };
    assert!(status.success(), "the browser test failed ({status}):\n{stdout}\n{stderr}");
    assert!(stdout.contains("PASS: admin UI"), "no PASS line:\n{stdout}\n{stderr}");
    assert!(screenshot.exists(), "no screenshot at {}", screenshot.display());
}
