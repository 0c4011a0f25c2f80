//! `logi bench`: each scenario, small and short, against the real server binaries
//! (the debug builds beside `logi`, which `cargo test --workspace` builds), checked
//! through the JSON result it writes.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Runs `logi bench ARGS` writing into `out`; returns the JSON result `name`.
fn bench(out: &Path, args: &[&str], name: &str) -> Value {
    let logi = Path::new(env!("CARGO_BIN_EXE_logi"));
    for server in ["core-svc", "ws-edge"] {
        let path = logi.with_file_name(server);
        assert!(
            path.exists(),
            "{} is missing: run the tests with `cargo test --workspace`, which builds it",
            path.display()
        );
    }
    let output = Command::new(logi)
        .arg("bench")
        .args(["--timeout", "120s", "--out-dir"])
        .arg(out)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "logi bench {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(out.join(format!("{name}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn connections_holds_every_client_and_reports_memory() {
    let out = tempfile::tempdir().unwrap();
    let result = bench(
        out.path(),
        &["connections", "--clients", "60", "--hold", "500ms"],
        "connections",
    );
    assert_eq!(result["held"], 60);
    assert_eq!(result["failed"], 0);
    assert_eq!(result["open_when_measured"], 60);
    assert_eq!(result["load_processes"], 1);
    let processes = result["processes"].as_array().unwrap();
    assert_eq!(processes.len(), 2, "core-svc and one edge");
    assert!(
        processes
            .iter()
            .all(|p| p["loaded_rss_bytes"].as_u64() > Some(0))
    );
}

#[test]
fn location_fanout_delivers_every_ping_once_over_both_paths() {
    for path in [
        &["--path", "grpc"][..],
        &["--path", "ws", "--dialect", "logi"],
    ] {
        let out = tempfile::tempdir().unwrap();
        let mut args = vec![
            "location-fanout",
            "--trips",
            "4",
            "--rate",
            "40",
            "--duration",
            "1s",
        ];
        args.extend_from_slice(path);
        let result = bench(out.path(), &args, "location-fanout");
        let phase = &result["phases"][0];
        assert!(phase["sent"].as_u64() > Some(0), "{phase}");
        assert_eq!(phase["delivered"], phase["sent"], "{path:?}: {phase}");
        assert_eq!(phase["lost"], 0);
        assert_eq!(phase["duplicated"], 0);
        assert!(out.path().join("location-fanout.svg").exists());
    }
}

#[test]
fn lifecycle_and_connect_storm_complete_without_failures() {
    let out = tempfile::tempdir().unwrap();
    let lifecycle = bench(
        out.path(),
        &["lifecycle", "--concurrency", "2", "--duration", "1s"],
        "lifecycle",
    );
    assert!(lifecycle["completed"].as_u64() > Some(0), "{lifecycle}");
    assert_eq!(lifecycle["failed"], 0);
    assert_eq!(lifecycle["observed_incompletely"], 0);
    let storm = bench(
        out.path(),
        &["connect-storm", "--concurrency", "2", "--duration", "1s"],
        "connect-storm",
    );
    assert!(storm["handshakes"].as_u64() > Some(0), "{storm}");
    assert_eq!(storm["failed"], 0);
}
