//! Logging set-up shared by the binaries: `tracing` to stderr, filtered by
//! `RUST_LOG` (default `info`, or a quieter one a command chooses), coloured
//! only on a terminal.

use std::io::IsTerminal;

/// Installs the global subscriber; call once from `main`.
pub fn init() {
    init_at("info");
}

/// Installs the global subscriber with `default` as the filter when `RUST_LOG`
/// is unset; call once from `main`.
pub fn init_at(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
