//! `logi bench`: load scenarios that drive the real release binaries over the real
//! protocols, on loopback only, each run bounded in time.
//!
//! # Shape
//! - [`system`]: starts core-svc and ws-edge as child processes (their own `/proc`
//!   entries, so their CPU and memory are measured apart from the load), with a
//!   temporary database and a fresh secret, and stops them at the end.
//! - [`procfs`]: CPU seconds and resident memory of a process, from `/proc` (the
//!   `logi` library's, which the metrics of both binaries read too).
//! - [`report`]: the printed table, the JSON result and the SVG chart of a run.
//! - [`socket`]: WebSocket clients spread over loopback source addresses, and the
//!   open-file limit.
//! - [`holder`]: the load processes that hold `connections`' clients, as many as
//!   the open-file limit calls for.
//! - [`fixture`]: trips set up through the gRPC API (drivers online, bookings
//!   accepted) for scenarios to run on.
//! - [`floor`]: the minimal one-process relay `location-fanout --floor` measures
//!   beside the system.
//! - one module per scenario: [`fanout`] (location fan-out, with `--sweep`),
//!   [`lifecycle`], [`admins`] (admin consoles), [`storm`] (connect storm),
//!   [`connections`] (idle clients and memory).
//!
//! Fan-out latencies are measured from each ping's INTENDED send time on an
//! open-loop schedule, so a stalled system shows up as latency instead of as fewer
//! messages (no coordinated omission). `lifecycle` and `connect-storm` are
//! closed-loop (a fixed number in flight): their latencies are service times.
//! Everything is recorded in HdrHistograms; the tool's own CPU is reported beside
//! the servers', since it shares the machine with them.

pub mod admins;
pub mod connections;
pub mod fanout;
pub mod fixture;
pub mod floor;
pub mod holder;
pub mod lifecycle;
pub use logi::procfs;
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
    /// ws-edge processes to start (on one port, SO_REUSEPORT).
    #[arg(long, global = true, default_value_t = 1)]
    pub edges: usize,
    /// The database: sqlite (a temporary file) or postgres (a scratch database on
    /// --postgres-url, dropped after the run).
    #[arg(long, global = true, default_value = "sqlite", value_parser = ["sqlite", "postgres"])]
    pub store: String,
    /// A PostgreSQL server that may create databases, for --store postgres.
    #[arg(
        long,
        global = true,
        env = "LOGI_TEST_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub postgres_url: String,
    /// core-svc replicas, on one PostgreSQL database, talking over NATS; the
    /// edges attach to all of them and the load's calls are spread over them.
    #[arg(long, global = true, default_value_t = 1)]
    pub replicas: usize,
    /// NATS, for --replicas above 1.
    #[arg(
        long,
        global = true,
        env = "LOGI_TEST_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// The edges attach to the last replica only and the load's calls go to the
    /// first: every event crosses from one replica to another.
    #[arg(long, global = true)]
    pub cross_replica: bool,
    /// The whole run, set-up included, stops by itself after this.
    #[arg(long, global = true, default_value = "30m", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
}

#[derive(Subcommand)]
pub enum Scenario {
    /// GPS pings from drivers on trips to their riders' sockets: latency, loss, CPU.
    LocationFanout(fanout::Args),
    /// Bookings through create → accept → verify OTP → complete, observed over WebSockets.
    Lifecycle(lifecycle::Args),
    /// Admin consoles on `/ws` while drivers change status: frames per CPU-second.
    AdminFanout(admins::Args),
    /// WebSocket handshakes per second, JWT verification included.
    ConnectStorm(storm::Args),
    /// N idle clients of every kind: memory per connected client.
    Connections(connections::Args),
    /// A load process of `connections` (started by it, not by hand).
    #[command(hide = true)]
    Hold(holder::Args),
    /// The one-process floor relay of `location-fanout --floor` (started by it).
    #[command(hide = true)]
    Floor(floor::Args),
}

/// Runs a scenario.
///
/// # Errors
/// When the system cannot be started or the scenario fails to run.
pub async fn run(bench: Bench) -> anyhow::Result<()> {
    std::fs::create_dir_all(&bench.out_dir)?;
    socket::raise_fd_limit();
    system::lay_out(system::Layout {
        postgres: (bench.store == "postgres").then(|| bench.postgres_url.clone()),
        replicas: bench.replicas,
        nats: bench.nats_url.clone(),
        cross: bench.cross_replica,
    })?;
    let (edges, out) = (bench.edges, bench.out_dir.as_path());
    let work = async {
        match bench.scenario {
            Scenario::LocationFanout(a) => fanout::run(a, edges, out).await,
            Scenario::Lifecycle(a) => lifecycle::run(a, edges, out).await,
            Scenario::AdminFanout(a) => admins::run(a, edges, out).await,
            Scenario::ConnectStorm(a) => storm::run(a, edges, out).await,
            Scenario::Connections(a) => connections::run(a, edges, out).await,
            Scenario::Hold(a) => holder::run(a).await,
            Scenario::Floor(a) => floor::run(a).await,
        }
    };
    // Dropping the run (timeout, Ctrl-C) drops its System: the servers are stopped.
    tokio::select! {
        result = tokio::time::timeout(bench.timeout, work) => {
            result.map_err(|_| anyhow::anyhow!("the run took longer than --timeout {}", humantime::format_duration(bench.timeout)))?
        }
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
    }
}
