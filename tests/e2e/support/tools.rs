//! Tools a test needs beyond the Rust toolchain. Each is installed by a script of
//! its own under `.ci/tools/` (into `target/tools/` of the checkout, or
//! system-wide), and found there or on `PATH`.
//!
//! Without its tools a test passes at once after ONE line saying what was skipped
//! and which script installs it, so a plain `cargo test` on a fresh laptop stays
//! green; with `LOGI_TEST_TOOLS=1` (`.ci/run` sets it) it fails instead, naming
//! the script.

use std::path::{Path, PathBuf};

/// Set to `1`, a missing tool fails its test instead of skipping it.
pub const REQUIRE: &str = "LOGI_TEST_TOOLS";

/// Where the install scripts put what they install.
pub fn installed() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools")
}

/// The first of `names` on `PATH` or among `places`.
pub fn find(names: &[&str], places: &[PathBuf]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let on_path = std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .collect::<Vec<_>>();
    places
        .iter()
        .chain(&on_path)
        .find(|candidate| candidate.is_file())
        .cloned()
}

/// For a test that cannot run because `missing` is not installed: `None` after
/// one line on stderr, or a failure when [`REQUIRE`] is set.
pub fn unavailable<T>(test: &str, missing: &[&str], script: &str) -> Option<T> {
    let missing = missing.join(", ");
    if std::env::var(REQUIRE).as_deref() == Ok("1") {
        panic!("{test} needs {missing}, which is not installed: run {script} ({REQUIRE}=1 makes this a failure)");
    }
    use std::io::Write;
    // Past the test harness's capture of output, as the PostgreSQL runs' note.
    let _ = writeln!(
        std::io::stderr(),
        "note: skipped {test}: {missing} not installed; {script} installs it"
    );
    None
}

/// What the browser test drives: node, Debian's chromium and playwright-core.
pub struct Browser {
    pub node: PathBuf,
    pub chromium: PathBuf,
    pub playwright_core: PathBuf,
}

/// The browser tools, installed by `.ci/tools/chromium`.
pub fn browser(test: &str) -> Option<Browser> {
    let node = find(&["node"], &[]);
    let chromium = find(
        &["chromium", "chromium-browser"],
        &[PathBuf::from("/usr/bin/chromium")],
    );
    let playwright_core = installed().join("browser/node_modules/playwright-core");
    let playwright_core = playwright_core
        .join("package.json")
        .is_file()
        .then_some(playwright_core);
    match (node, chromium, playwright_core) {
        (Some(node), Some(chromium), Some(playwright_core)) => Some(Browser {
            node,
            chromium,
            playwright_core,
        }),
        (node, chromium, playwright) => {
            let missing = [
                node.is_none().then_some("node"),
                chromium.is_none().then_some("chromium"),
                playwright
                    .is_none()
                    .then_some("playwright-core (target/tools/browser)"),
            ];
            let missing: Vec<&str> = missing.into_iter().flatten().collect();
            unavailable(test, &missing, ".ci/tools/chromium")
        }
    }
}
