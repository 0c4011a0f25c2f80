//! The real ws-edge binary refuses bad configuration with one line.

use std::process::Command;

fn ws_edge() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ws-edge"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("LOGI_")) {
        cmd.env_remove(key);
    }
    cmd
}

#[test]
fn without_a_key_it_refuses_to_start_with_one_line_naming_the_variable() {
    let out = ws_edge().output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "ws-edge: no JWT key: set LOGI_JWT_SECRET (HS256 secret) or LOGI_JWT_PUBLIC_KEY (PEM file)\n"
    );
}

#[test]
fn a_public_key_needs_a_service_token_for_core() {
    let key = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/ed25519.pub");
    let out = ws_edge().env("LOGI_JWT_PUBLIC_KEY", key).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "ws-edge: LOGI_CORE_TOKEN or LOGI_CORE_TOKEN_FILE is required with LOGI_JWT_PUBLIC_KEY: a service token for core-svc\n"
    );
}
