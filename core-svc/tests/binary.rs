//! The real core-svc binary: configuration errors and signals.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_core-svc");

fn core_svc() -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("LOGI_")) {
        cmd.env_remove(key);
    }
    // Not the default port: tests run side by side.
    cmd.env("LOGI_METRICS_ADDR", "127.0.0.1:0");
    cmd
}

#[test]
fn without_a_key_it_refuses_to_start_with_one_line_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let out = core_svc()
        .arg("--database")
        .arg(dir.path().join("logi.db"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr,
        "core-svc: no JWT key: set LOGI_JWT_SECRET (HS256 secret) or LOGI_JWT_PUBLIC_KEY (PEM file)\n"
    );
    assert!(
        !dir.path().join("logi.db").exists(),
        "nothing is created before the configuration is valid"
    );
}

#[test]
fn bad_values_are_named() {
    let out = core_svc()
        .env("LOGI_JWT_SECRET", "0123456789abcdef0123456789abcdef")
        .env("LOGI_OFFER_TIMEOUT", "soon")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("--offer-timeout") && stderr.contains("soon"),
        "{stderr}"
    );
}

#[test]
fn sigterm_stops_it_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = core_svc()
        .env("LOGI_JWT_SECRET", "0123456789abcdef0123456789abcdef")
        .env("LOGI_DATABASE", dir.path().join("sub/logi.db"))
        .env("LOGI_GRPC_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("core-svc ready"));
    assert!(ready.is_some(), "core-svc never said it was ready");
    assert!(
        dir.path().join("sub/logi.db").exists(),
        "the database and its folder are created"
    );

    let kill = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "core-svc did not stop within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l.contains("core-svc stopped")),
        "{rest:?}"
    );
}

/// Starts core-svc with these variables and returns its exit code and the line
/// it wrote on standard error.
fn refused_with(vars: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = core_svc();
    cmd.env("LOGI_JWT_SECRET", "0123456789abcdef0123456789abcdef")
        .env("LOGI_GRPC_ADDR", "127.0.0.1:0");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (out.status.code(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn an_unreachable_postgresql_is_named_in_one_line_and_the_exit_is_not_zero() {
    let (code, stderr) = refused_with(&[(
        "LOGI_DATABASE",
        "postgres://postgres:secret@127.0.0.1:1/logi",
    )]);
    assert_eq!(code, Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(
            "core-svc: cannot connect to PostgreSQL at postgres://postgres@127.0.0.1:1/logi"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("secret"), "{stderr}");
}

#[tokio::test]
async fn an_unreachable_nats_is_named_in_one_line_and_the_exit_is_not_zero() {
    // The database must answer for NATS to be tried: a scratch one on the cluster
    // tests' server.
    let Ok(admin) = std::env::var("LOGI_TEST_POSTGRES_URL") else {
        return;
    };
    let db = core_svc::store::postgres::scratch::ScratchDatabase::create(&admin)
        .await
        .unwrap();
    let (code, stderr) = refused_with(&[
        ("LOGI_DATABASE", db.url()),
        ("LOGI_NATS_URL", "nats://127.0.0.1:1"),
    ]);
    assert_eq!(code, Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("core-svc: cannot connect to NATS at nats://127.0.0.1:1"),
        "{stderr}"
    );
}

#[test]
fn a_bad_or_taken_metrics_address_is_named_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("logi.db");
    let db = db.to_str().unwrap();
    let (code, stderr) = refused_with(&[("LOGI_DATABASE", db), ("LOGI_METRICS_ADDR", "9464")]);
    assert_eq!(code, Some(2));
    assert_eq!(
        stderr,
        "core-svc: LOGI_METRICS_ADDR \"9464\" is not an address: write host:port (127.0.0.1:9464), or off\n"
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, stderr) = refused_with(&[("LOGI_DATABASE", db), ("LOGI_METRICS_ADDR", &addr)]);
    assert_eq!(code, Some(2));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "core-svc: cannot serve metrics on {addr} (LOGI_METRICS_ADDR): "
        )),
        "{stderr}"
    );
}

#[test]
fn metrics_off_serves_none() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = core_svc()
        .env("LOGI_JWT_SECRET", "0123456789abcdef0123456789abcdef")
        .env("LOGI_DATABASE", dir.path().join("logi.db"))
        .env("LOGI_GRPC_ADDR", "127.0.0.1:0")
        .env("LOGI_METRICS_ADDR", "off")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ready = BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("core-svc ready"));
    let _ = child.kill();
    let _ = child.wait();
    let ready = ready.expect("core-svc never said it was ready");
    assert!(ready.contains("metrics=off"), "{ready}");
}
