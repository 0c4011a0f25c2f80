//! `logi`: the operator's command.
//!
//! - `logi up` runs the whole system on this machine in development mode: core-svc
//!   on the embedded SQLite database under `data/`, with a JWT secret generated
//!   and kept in `data/jwt-secret` unless `LOGI_JWT_SECRET` is set, and prints
//!   ready-to-use tokens.
//! - `logi token --role driver --sub 45 --ttl 1h` prints a token signed with the
//!   configured secret (`LOGI_JWT_SECRET`, else `data/jwt-secret`).

mod secret;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
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
}

#[derive(clap::Args)]
struct Up {
    /// Folder for the database and the generated secret.
    #[arg(long, env = "LOGI_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Address core-svc serves gRPC on.
    #[arg(long, env = "LOGI_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    grpc_addr: std::net::SocketAddr,
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
    let signer = Signer::hs256(secret.as_bytes())
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
    let args = [
        "core-svc".to_owned(),
        "--grpc-addr".into(),
        up.grpc_addr.to_string(),
        "--database".into(),
        database.to_string_lossy().into_owned(),
        "--jwt-secret".into(),
        secret.clone(),
    ];
    let config = <core_svc::Config as Parser>::try_parse_from(args)?;
    if let Err(e) = config.validate() {
        bail!("{e}");
    }
    let listener = tokio::net::TcpListener::bind(up.grpc_addr)
        .await
        .with_context(|| format!("cannot listen on {} (LOGI_GRPC_ADDR)", up.grpc_addr))?;
    let signer = Signer::hs256(secret.as_bytes());
    print_banner(&up.grpc_addr.to_string(), &signer, up.token_ttl)?;

    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    core_svc::run(config, listener, shutdown).await?;
    Ok(())
}

fn print_banner(grpc: &str, signer: &Signer, ttl: Duration) -> anyhow::Result<()> {
    let ttl_text = humantime::format_duration(ttl);
    println!();
    println!("Logi realtime is up (development mode). Ctrl-C stops it.");
    println!();
    println!("  core-svc gRPC   {grpc}   (plaintext; grpcurl -plaintext {grpc} list)");
    println!();
    println!("Tokens, valid for {ttl_text}:");
    for (label, role, sub) in [
        ("RIDER_TOKEN", Role::User, "12"),
        ("DRIVER_TOKEN", Role::Driver, "45"),
        ("ADMIN_TOKEN", Role::Admin, "ops"),
        ("SERVICE_TOKEN", Role::Service, "backend"),
    ] {
        println!(
            "  export {label}={}   # {} {sub}",
            signer.mint(sub, role, ttl)?,
            role.as_str()
        );
    }
    println!();
    println!("More: logi token --role driver --sub 46 --ttl 1h");
    println!();
    Ok(())
}
