//! What the `logi` command's tests share: the binary with a data folder of its
//! own, and stopping it as a user would.

use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_logi");

/// `logi` with `data` as its data folder and no `LOGI_*` of the caller's.
pub fn logi(data: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("LOGI_")) {
        cmd.env_remove(key);
    }
    cmd.env("LOGI_DATA_DIR", data);
    cmd
}

/// Ctrl-C, as a terminal sends it.
pub fn interrupt(child: &Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The child's exit, failing the test unless it comes `within`.
pub fn wait(child: &mut Child, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "logi did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}
