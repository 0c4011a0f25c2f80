//! `logi bench`: load scenarios that drive the real release binaries over the real
//! protocols, on loopback only, each run bounded in time.
//!
//! # Shape
//! - [`system`]: starts core-svc and ws-edge as child processes (their own `/proc`
//!   entries, so their CPU and memory are measured apart from the load), with a
//!   temporary database and a fresh secret, and stops them at the end.
//! - [`procfs`]: CPU seconds and resident memory of a process, from `/proc`.
//! - [`report`]: the printed table, the JSON result and the SVG chart of a run.
//! - [`socket`]: WebSocket clients spread over loopback source addresses, and the
//!   open-file limit.
//! - [`fixture`]: trips set up through the gRPC API (drivers online, bookings
//!   accepted) for scenarios to run on.
//! - one module per scenario: [`fanout`] (location fan-out, with `--sweep`),
//!   [`lifecycle`], [`storm`] (connect storm), [`connections`] (idle clients and memory).
//!
//! Latencies are measured from each message's INTENDED send time on an open-loop
//! schedule, so a stalled system shows up as latency instead of as fewer messages
//! (no coordinated omission), and are recorded in HdrHistograms.

pub mod connections;
pub mod fanout;
pub mod fixture;
pub mod lifecycle;
pub mod procfs;
pub mod report;
pub mod socket;
pub mod storm;
pub mod system;

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Args)]
pub struct Bench {
    #[command(subcommand)]
    pub scenario: Scenario,
    /// Where JSON results and SVG charts are written.
    #[arg(long, global = true, default_value = "bench-results")]
    pub out_dir: PathBuf,
    /// ws-edge processes to start (sharing the load round-robin).
    #[arg(long, global = true, default_value_t = 1)]
    pub edges: usize,
}

#[derive(Subcommand)]
pub enum Scenario {
    /// GPS pings from drivers on trips to their riders' sockets: latency, loss, CPU.
    LocationFanout(fanout::Args),
    /// Bookings through create → accept → verify OTP → complete, observed over WebSockets.
    Lifecycle(lifecycle::Args),
    /// WebSocket handshakes per second, JWT verification included.
    ConnectStorm(storm::Args),
    /// N idle clients of every kind: memory per connected client.
    Connections(connections::Args),
}

/// Runs a scenario.
///
/// # Errors
/// When the system cannot be started or the scenario fails to run.
pub async fn run(bench: Bench) -> anyhow::Result<()> {
    std::fs::create_dir_all(&bench.out_dir)?;
    match bench.scenario {
        Scenario::LocationFanout(a) => fanout::run(a, bench.edges, &bench.out_dir).await,
        Scenario::Lifecycle(a) => lifecycle::run(a, bench.edges, &bench.out_dir).await,
        Scenario::ConnectStorm(a) => storm::run(a, bench.edges, &bench.out_dir).await,
        Scenario::Connections(a) => connections::run(a, bench.edges, &bench.out_dir).await,
    }
}
