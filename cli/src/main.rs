//! `logi`: the operator's command.
//!
//! - `logi up` runs the whole system on this machine in development mode: core-svc
//!   on the embedded SQLite database under `data/` and ws-edge in front of it, each
//!   on its own port and talking over gRPC exactly as in production, with a JWT
//!   secret generated and kept in `data/jwt-secret` unless `LOGI_JWT_SECRET` is set;
//!   it prints the URLs and ready-to-use tokens. `logi up --cluster 3` runs three
//!   core-svc replicas on PostgreSQL and NATS instead, with two ws-edges sharing
//!   the WebSocket port.
//! - `logi token --role driver --sub 45 --ttl 1h` prints a token signed with the
//!   configured secret (`LOGI_JWT_SECRET`, else `data/jwt-secret`).
//! - `logi simulate` runs a moving demo fleet and riders booking against a running
//!   system (`logi up --simulate` starts both), through the public interfaces only;
//!   with `--check` it is a soak test.
//! - `logi bench` runs load scenarios against the release binaries.

mod bench;
mod secret;
mod simulate;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use logi::auth::{Role, Signer};

#[derive(Parser)]
#[command(
    name = "logi",
    version,
    about = "Logi realtime: run the system, mint tokens, simulate a fleet"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole system in development mode (embedded database, generated secret).
    Up(up::Up),
    /// Print a token signed with the configured HS256 secret.
    Token(Token),
    /// Load scenarios against the real release binaries (see BENCHMARKS.md).
    Bench(bench::Bench),
    /// A moving demo fleet and riders booking, against a running system.
    Simulate(simulate::Args),
}

#[derive(clap::Args)]
struct Token {
    /// user, driver, admin or service.
    #[arg(long)]
    role: String,
    /// The principal id (rider or driver id).
    #[arg(long)]
    sub: String,
    /// How long the token is valid, e.g. 1h, 30m, 7d.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Folder holding the secret `logi up` generated.
    #[arg(long, env = "LOGI_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    #[arg(long, env = "LOGI_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    #[arg(long, env = "LOGI_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    #[arg(long, env = "LOGI_JWT_AUDIENCE")]
    jwt_audience: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Token(t) => token(t),
        Command::Bench(b) => tokio::runtime::Runtime::new()
            .context("cannot start the runtime")
            .and_then(|rt| rt.block_on(bench::run(b))),
        Command::Up(up) => tokio::runtime::Runtime::new()
            .context("cannot start the runtime")
            .and_then(|rt| rt.block_on(up::run(up))),
        Command::Simulate(args) => tokio::runtime::Runtime::new()
            .context("cannot start the runtime")
            .and_then(|rt| {
                rt.block_on(async {
                    // Warnings only: info lines would bury the live summary.
                    logi::logging::init_at("warn");
                    let stop = tokio_util::sync::CancellationToken::new();
                    tokio::spawn(logi::shutdown::on_signal(stop.clone()));
                    simulate::run(args, stop).await
                })
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("logi: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn token(t: Token) -> anyhow::Result<()> {
    let role = Role::parse(&t.role).map_err(|e| anyhow::anyhow!("--role: {e}"))?;
    logi::id::validate(&t.sub).map_err(|e| anyhow::anyhow!("--sub {e}"))?;
    let secret = match t.jwt_secret {
        Some(s) => s,
        None => secret::read(&t.data_dir)?,
    };
    let signer = Signer::hs256(secret.as_bytes())?
        .issuer(t.jwt_issuer)
        .audience(t.jwt_audience);
    println!("{}", signer.mint(&t.sub, role, t.ttl)?);
    Ok(())
}
