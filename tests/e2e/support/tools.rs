//! Programs a test runs that are not Rust crates (grpcurl; node, chromium and
//! playwright-core for the browser test): each is installed by a script under
//! `.ci/tools/`, into `target/tools/` of the checkout with a link in
//! `target/tools/bin/`, or system-wide, and found there or on PATH.
//!
//! A missing tool fails the test when `LOGI_TEST_TOOLS=1` (`.ci/run` sets it),
//! naming the script to run; otherwise the test says so in one line and passes,
//! as the PostgreSQL runs do without their server.

use std::path::{Path, PathBuf};

/// Set to `1`, a missing tool is a failure rather than a skip.
pub const REQUIRED: &str = "LOGI_TEST_TOOLS";

/// `name` in `target/tools/bin/` or on PATH.
fn locate(name: &str) -> Option<PathBuf> {
    let installed = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/tools/bin")
        .join(name);
    std::iter::once(installed)
        .chain(
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(|dir| dir.join(name)),
        )
        .find(|path| path.is_file())
}

/// Fails `test`, or says in one line that it was skipped, for want of `names`.
fn missing(test: &str, names: &[&str], script: &str) {
    let names = names.join(", ");
    if std::env::var(REQUIRED).is_ok_and(|v| v == "1") {
        panic!(
            "{test} needs {names}: run `{script}` ({REQUIRED}=1 makes a missing tool a failure)"
        );
    }
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "note: {test} was skipped: it needs {names}, which `{script}` installs"
    );
}

/// The tool's path, or None (said in one line) when `test` is to be skipped.
pub fn find(name: &str, test: &str) -> Option<PathBuf> {
    let found = locate(name);
    if found.is_none() {
        missing(test, &[name], &format!(".ci/tools/{name}"));
    }
    found
}

/// What the browser test drives, all installed by `.ci/tools/chromium`.
pub struct Browser {
    pub node: PathBuf,
    /// Debian's chromium (playwright's own browser download is never used).
    pub chromium: PathBuf,
    /// The playwright-core package's folder.
    pub playwright_core: PathBuf,
}

/// The browser tools, or None (said in one line) when `test` is to be skipped.
pub fn browser(test: &str) -> Option<Browser> {
    let node = locate("node");
    let chromium = locate("chromium");
    // target/tools/bin/playwright-core links to the package's cli.js.
    let playwright_core = locate("playwright-core")
        .and_then(|cli| cli.canonicalize().ok())
        .and_then(|cli| cli.parent().map(Path::to_path_buf));
    match (node, chromium, playwright_core) {
        (Some(node), Some(chromium), Some(playwright_core)) => Some(Browser {
            node,
            chromium,
            playwright_core,
        }),
        (node, chromium, playwright_core) => {
            let names: Vec<&str> = [
                node.is_none().then_some("node"),
                chromium.is_none().then_some("chromium"),
                playwright_core.is_none().then_some("playwright-core"),
            ]
            .into_iter()
            .flatten()
            .collect();
            missing(test, &names, ".ci/tools/chromium");
            None
        }
    }
}
