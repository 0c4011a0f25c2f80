//! `logi`: the operator's command.
//!
//! - `logi up` runs the whole system on this machine in development mode: core-svc
//!   on the embedded SQLite database under `data/` and ws-edge in front of it, each
//!   on its own port and talking over gRPC exactly as in production, with a JWT
//!   secret generated and kept in `data/jwt-secret` unless `LOGI_JWT_SECRET` is set;
//!   it prints the URLs and ready-to-use tokens.
//! - `logi token --role driver --sub 45 --ttl 1h` prints a token signed with the
//!   configured secret (`LOGI_JWT_SECRET`, else `data/jwt-secret`).

mod bench;
mod secret;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use logi::auth::{Role, Signer};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "logi",
    version,
    about = "Logi realtime: run the system, mint tokens"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole system in development mode (embedded database, generated secret).
    Up(Up),
    /// Print a token signed with the configured HS256 secret.
    Token(Token),
    /// Load scenarios against the real release binaries (see BENCHMARKS.md).
    Bench(bench::Bench),
}

#[derive(clap::Args)]
struct Up {
    /// Folder for the database and the generated secret.
    #[arg(long, env = "LOGI_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Address core-svc serves gRPC on.
    #[arg(long, env = "LOGI_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    grpc_addr: std::net::SocketAddr,
    /// Address ws-edge serves WebSockets on.
    #[arg(long, env = "LOGI_WS_ADDR", default_value = "127.0.0.1:8080")]
    ws_addr: std::net::SocketAddr,
    /// HS256 secret; generated under the data folder when unset.
    #[arg(long, env = "LOGI_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// How long the printed demo tokens stay valid.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    token_ttl: Duration,
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
            .and_then(|rt| rt.block_on(run_up(up))),
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

async fn run_up(up: Up) -> anyhow::Result<()> {
    logi::logging::init();
    let secret = match up.jwt_secret {
        Some(s) => s,
        None => secret::read_or_create(&up.data_dir)?,
    };
    let database = up.data_dir.join("logi.db");
    let core_config = <core_svc::Config as Parser>::try_parse_from([
        "core-svc".to_owned(),
        "--grpc-addr".into(),
        up.grpc_addr.to_string(),
        "--database".into(),
        database.to_string_lossy().into_owned(),
        "--jwt-secret".into(),
        secret.clone(),
    ])?;
    core_config.validate().map_err(anyhow::Error::msg)?;
    let core_listener = tokio::net::TcpListener::bind(up.grpc_addr)
        .await
        .with_context(|| format!("cannot listen on {} (LOGI_GRPC_ADDR)", up.grpc_addr))?;
    let edge_config = <ws_edge::Config as Parser>::try_parse_from([
        "ws-edge".to_owned(),
        "--listen".into(),
        up.ws_addr.to_string(),
        "--core-url".into(),
        format!("http://{}", core_listener.local_addr()?),
        "--jwt-secret".into(),
        secret.clone(),
    ])?;
    edge_config.validate().map_err(anyhow::Error::msg)?;
    let edge_listener = tokio::net::TcpListener::bind(up.ws_addr)
        .await
        .with_context(|| format!("cannot listen on {} (LOGI_WS_ADDR)", up.ws_addr))?;
    let signer = Signer::hs256(secret.as_bytes())?;
    let grpc = core_listener.local_addr()?.to_string();
    let ws = edge_listener.local_addr()?.to_string();
    print_banner(&grpc, &ws, &signer, up.token_ttl)?;

    let shutdown = CancellationToken::new();
    tokio::spawn(logi::shutdown::on_signal(shutdown.clone()));
    // If either stops on its own, stop the other too.
    let core = async {
        let result = core_svc::run(core_config, core_listener, shutdown.clone()).await;
        shutdown.cancel();
        result.context("core-svc")
    };
    let edge = async {
        let result = ws_edge::run(edge_config, edge_listener, shutdown.clone()).await;
        shutdown.cancel();
        result.context("ws-edge")
    };
    let (core, edge) = tokio::join!(core, edge);
    core.and(edge)
}

fn print_banner(grpc: &str, ws: &str, signer: &Signer, ttl: Duration) -> anyhow::Result<()> {
    let ttl_text = humantime::format_duration(ttl);
    let ws_host = ws.replace("0.0.0.0", "localhost");
    let rider = signer.mint("12", Role::User, ttl)?;
    let driver = signer.mint("45", Role::Driver, ttl)?;
    let admin = signer.mint("ops", Role::Admin, ttl)?;
    let service = signer.mint("backend", Role::Service, ttl)?;
    println!();
    println!("Logi realtime is up (development mode). Ctrl-C stops it.");
    println!();
    println!("  core-svc gRPC   {grpc}   (grpcurl -plaintext {grpc} list)");
    println!("  ws-edge         ws://{ws_host}   (/healthz, /readyz)");
    println!();
    println!("Tokens, valid for {ttl_text}:");
    println!("  export RIDER_TOKEN={rider}   # user 12");
    println!("  export DRIVER_TOKEN={driver}   # driver 45");
    println!("  export ADMIN_TOKEN={admin}   # admin ops");
    println!("  export SERVICE_TOKEN={service}   # service backend");
    println!();
    println!("Connect:");
    println!("  rider   ws://{ws_host}/regular_user/ws/bookings/?token=$RIDER_TOKEN");
    println!("  driver  ws://{ws_host}/driver/ws/available_bookings/?token=$DRIVER_TOKEN");
    println!("  any     ws://{ws_host}/ws?token=$ADMIN_TOKEN   (logi dialect)");
    println!();
    println!("More tokens: logi token --role driver --sub 46 --ttl 1h");
    println!();
    Ok(())
}
