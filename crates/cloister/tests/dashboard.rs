//! The dashboard in a real browser: runs the end-to-end tests in `dashboard/tests/` (Node's test
//! runner driving headless Chromium through playwright-core) against this build of the binary.
//! They need Node.js, the dashboard's npm packages and Chromium: `dashboard/install-browser.sh`
//! installs what is missing (`.ci/run` calls it).

use std::path::Path;
use std::process::Command;

#[test]
fn the_dashboard_works_in_a_real_browser() {
    let dashboard = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dashboard");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let ready =
        dashboard.join("node_modules/playwright-core").is_dir() && Path::new(&chromium).exists();
    assert!(
        ready,
        "the browser tests need the dashboard's npm packages and Chromium ({chromium}): run \
         dashboard/install-browser.sh (or .ci/run)"
    );
    let mut node = Command::new("node");
    node.arg("--test")
        .arg("tests/")
        .current_dir(&dashboard)
        .env("CLOISTER_BIN", env!("CARGO_BIN_EXE_cloister"))
        .env("CHROMIUM", &chromium);
    let status = node
        .status()
        .expect("node runs (install Node.js 20 or later)");
    assert!(
        status.success(),
        "the dashboard's browser tests failed (their output is above)"
    );
}
