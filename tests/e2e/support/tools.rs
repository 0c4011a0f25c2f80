//! Programs a test runs that are not Rust crates (grpcurl): each is installed by
//! its script `.ci/tools/{name}` into `target/tools/bin/` of the checkout, or is on
//! PATH.
//!
//! A missing tool fails the test when `LOGI_TEST_TOOLS=1` (`.ci/run` sets it),
//! naming the script to run; otherwise the test says so in one line and passes,
//! as the PostgreSQL runs do without their server.

use std::path::{Path, PathBuf};

/// Set to `1`, a missing tool is a failure rather than a skip.
pub const REQUIRED: &str = "LOGI_TEST_TOOLS";

/// The tool's path, or None (said in one line) when `test` is to be skipped.
pub fn find(name: &str, test: &str) -> Option<PathBuf> {
    let installed = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/tools/bin")
        .join(name);
    let found = std::iter::once(installed)
        .chain(
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(|dir| dir.join(name)),
        )
        .find(|path| path.is_file());
    if found.is_none() {
        let script = format!(".ci/tools/{name}");
        if std::env::var(REQUIRED).is_ok_and(|v| v == "1") {
            panic!(
                "{test} needs {name}: run `{script}` ({REQUIRED}=1 makes a missing tool a failure)"
            );
        }
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "note: {test} was skipped: it needs {name}, which `{script}` installs"
        );
    }
    found
}
