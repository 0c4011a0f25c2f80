//! `logi simulate --check` against the real system that `logi up` runs: trips
//! complete, every rider's socket shows each booking's transitions in order, no
//! call fails unexpectedly, and at the end the drivers are offline again.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::{interrupt, logi, wait};

/// `logi up` on free ports; its gRPC and WebSocket URLs, read from the banner.
fn up(
    data: &std::path::Path,
    extra: &[&str],
) -> (Child, String, String, impl Iterator<Item = String>) {
    let mut up = logi(data)
        .args([
            "up",
            "--grpc-addr",
            "127.0.0.1:0",
            "--ws-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(up.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok);
    let (mut grpc, mut ws) = (None, None);
    while grpc.is_none() || ws.is_none() {
        let line = lines.next().expect("the banner names both addresses");
        match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["core-svc", "gRPC", addr, ..] => grpc = Some(format!("http://{addr}")),
            ["ws-edge", url, ..] => ws = Some(url.to_string()),
            _ => {}
        }
    }
    (up, grpc.unwrap(), ws.unwrap(), lines)
}

/// The count before `name` in a summary line (`12 completed`, `failures 0`).
fn count(line: &str, name: &str) -> u64 {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| w.trim_end_matches(',') == name)
        .unwrap_or_else(|| panic!("no {name} in {line:?}"));
    let n = if name == "failures" || name == "drivers" {
        words[at + 1]
    } else {
        words[at - 1]
    };
    n.trim_end_matches(',').parse().unwrap()
}

#[test]
fn a_short_checked_run_completes_trips_and_misses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The banner is still being printed: its pipe stays open (a closed one would
    // make `logi up`'s next line fail).
    let (mut system, grpc, ws, _banner) = up(&data, &[]);
    let started = Instant::now();
    let run = logi(&data)
        .args(["simulate", "--grpc-url", &grpc, "--ws-url", &ws])
        .args(["--duration", "15s", "--check", "--seed", "11"])
        .args(["--drivers", "20", "--riders", "10", "--rate", "2"])
        .args(["--radius-km", "1", "--speed", "20"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(run.stdout).unwrap();
    assert!(
        run.status.success(),
        "simulate --check failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(15 + 12),
        "stopping is bounded"
    );
    let last = stdout
        .lines()
        .find(|l| l.starts_with("final: "))
        .unwrap_or_else(|| panic!("no final summary in:\n{stdout}"));
    assert!(count(last, "completed") > 0, "{last}");
    assert_eq!(count(last, "failures"), 0, "{last}");
    assert_eq!(
        count(last, "drivers"),
        0,
        "every driver went offline: {last}"
    );
    assert_eq!(count(last, "on"), 0, "no trip left under way: {last}");
    assert!(stdout.contains("check passed"), "{stdout}");

    interrupt(&system);
    assert_eq!(wait(&mut system, Duration::from_secs(15)).code(), Some(0));
}

#[test]
fn simulate_says_what_to_do_when_no_system_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = logi(dir.path())
        .env("LOGI_JWT_SECRET", "0123456789abcdef0123456789abcdef")
        .args([
            "simulate",
            "--grpc-url",
            "http://127.0.0.1:1",
            "--duration",
            "1s",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("cannot reach core-svc at http://127.0.0.1:1 (is `logi up` running?)"),
        "{stderr}"
    );
    let no_secret = logi(dir.path()).args(["simulate"]).output().unwrap();
    assert!(
        String::from_utf8(no_secret.stderr)
            .unwrap()
            .contains("LOGI_JWT_SECRET"),
    );
    let bad_center = logi(dir.path())
        .args(["simulate", "--center", "north"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8(bad_center.stderr)
            .unwrap()
            .contains("is not LAT,LON"),
    );
}

#[test]
fn up_simulate_runs_a_fleet_and_ctrl_c_takes_it_offline_before_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut system, _, _, mut lines) = up(
        &data,
        &[
            "--simulate",
            "--simulate-drivers",
            "8",
            "--simulate-riders",
            "4",
        ],
    );
    let first = lines
        .by_ref()
        .find(|l| l.contains(" bookings: "))
        .expect("a summary line");
    assert_eq!(count(&first, "drivers"), 8, "{first}");
    interrupt(&system);
    let last = lines
        .find(|l| l.starts_with("final: "))
        .expect("the final summary");
    assert_eq!(count(&last, "drivers"), 0, "{last}");
    assert_eq!(count(&last, "failures"), 0, "{last}");
    assert_eq!(wait(&mut system, Duration::from_secs(20)).code(), Some(0));
}
