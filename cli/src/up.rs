//! `logi up`: the whole system on this machine, in development mode.
//!
//! Alone it runs one core-svc on the embedded SQLite database under the data
//! folder and one ws-edge in front of it. With `--cluster N` it runs N core-svc
//! replicas on one PostgreSQL database (created if missing), telling each other
//! their commits over NATS, and two ws-edges sharing the WebSocket port
//! (SO_REUSEPORT), each attached to every replica. Either way every process
//! talks over its real port exactly as in production, a JWT secret is generated
//! and kept under the data folder unless `LOGI_JWT_SECRET` is set, the URLs and
//! ready-to-use tokens are printed, and Ctrl-C (or any of them stopping) stops
//! them all. With `--simulate` it then runs `logi simulate` against the system in
//! this process; Ctrl-C stops the simulation first (its drivers go offline),
//! then the system.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use futures::future::join_all;
use logi::auth::{Role, Signer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{secret, simulate};

/// Edges in front of a cluster: enough that losing one shows, few enough for a laptop.
const CLUSTER_EDGES: usize = 2;

#[derive(clap::Args)]
pub struct Up {
    /// Folder for the database and the generated secret.
    #[arg(long, env = "LOGI_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Address core-svc serves gRPC on; with --cluster, replica i serves on this
    /// port + i.
    #[arg(long, env = "LOGI_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    grpc_addr: SocketAddr,
    /// Address core-svc serves Prometheus metrics on, or `off`; with --cluster,
    /// replica i serves on this port + i.
    #[arg(long, env = "LOGI_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    metrics_addr: String,
    /// Address ws-edge serves WebSockets on (shared by the edges of a cluster).
    #[arg(long, env = "LOGI_WS_ADDR", default_value = "127.0.0.1:8080")]
    ws_addr: SocketAddr,
    /// HS256 secret; generated under the data folder when unset.
    #[arg(long, env = "LOGI_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// How long the printed demo tokens stay valid.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    token_ttl: Duration,
    /// Run this many core-svc replicas on PostgreSQL and NATS, behind two ws-edges,
    /// instead of one core-svc on SQLite.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=16))]
    cluster: Option<u16>,
    /// The PostgreSQL database the replicas share (--cluster); created if missing.
    #[arg(
        long,
        env = "LOGI_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/logi"
    )]
    postgres_url: String,
    /// The NATS server the replicas talk through (--cluster).
    #[arg(long, env = "LOGI_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Also run a simulated fleet and riders against the system (`logi simulate`
    /// with its defaults); logs default to warnings, so its summary line shows.
    #[arg(long)]
    simulate: bool,
    /// Drivers of the simulation (--simulate).
    #[arg(long, value_name = "N", requires = "simulate", default_value_t = 200)]
    simulate_drivers: u16,
    /// Riders of the simulation (--simulate).
    #[arg(long, value_name = "N", requires = "simulate", default_value_t = 50)]
    simulate_riders: u16,
    /// Bookings per second of the simulation (--simulate).
    #[arg(long, value_name = "R", requires = "simulate", default_value_t = 1.0)]
    simulate_rate: f64,
}

/// Just `logi simulate`'s flags, to build its configuration from.
#[derive(Parser)]
struct SimulateOnly {
    #[command(flatten)]
    args: simulate::Args,
}

/// A process of the system, ready to run.
enum Part {
    Core(core_svc::Config, core_svc::server::Listeners),
    Edge(ws_edge::Config, TcpListener),
}

pub async fn run(up: Up) -> anyhow::Result<()> {
    if up.simulate {
        // Info lines for every call of the fleet would bury its summary line.
        logi::logging::init_at("warn");
    } else {
        logi::logging::init();
    }
    let secret = match &up.jwt_secret {
        Some(s) => s.clone(),
        None => secret::read_or_create(&up.data_dir)?,
    };
    let replicas = usize::from(up.cluster.unwrap_or(1));
    let database = match up.cluster {
        None => up.data_dir.join("logi.db").to_string_lossy().into_owned(),
        Some(_) => {
            if core_svc::store::postgres::admin::create_if_missing(&up.postgres_url).await? {
                println!(
                    "Created the database of {}",
                    core_svc::store::postgres::without_password(&up.postgres_url)
                );
            }
            up.postgres_url.clone()
        }
    };
    let metrics_base: Option<SocketAddr> = if up.metrics_addr.eq_ignore_ascii_case("off") {
        None
    } else {
        Some(up.metrics_addr.parse().map_err(|_| {
            anyhow::anyhow!(
                "LOGI_METRICS_ADDR {:?} is not an address: write host:port (127.0.0.1:9464), or off",
                up.metrics_addr
            )
        })?)
    };
    let mut parts = Vec::new();
    let mut grpc = Vec::new();
    let mut metrics = Vec::new();
    for i in 0..replicas {
        let mut addr = up.grpc_addr;
        if addr.port() != 0 {
            addr.set_port(addr.port() + i as u16);
        }
        let metrics_addr = metrics_base.map_or_else(
            || "off".to_owned(),
            |mut m| {
                if m.port() != 0 {
                    m.set_port(m.port() + i as u16);
                }
                m.to_string()
            },
        );
        let mut args = vec![
            "core-svc".to_owned(),
            "--grpc-addr".into(),
            addr.to_string(),
            "--metrics-addr".into(),
            metrics_addr,
            "--database".into(),
            database.clone(),
            "--jwt-secret".into(),
            secret.clone(),
        ];
        if up.cluster.is_some() {
            args.extend(["--nats-url".into(), up.nats_url.clone()]);
        }
        let config = <core_svc::Config as Parser>::try_parse_from(args)?;
        config.validate().map_err(anyhow::Error::msg)?;
        let listeners = core_svc::server::Listeners::bind(&config).await?;
        grpc.push(listeners.grpc.local_addr()?);
        if let Some(m) = &listeners.metrics {
            metrics.push(m.local_addr()?);
        }
        parts.push(Part::Core(config, listeners));
    }
    let core_urls: Vec<String> = grpc.iter().map(|a| format!("http://{a}")).collect();
    let edges = if up.cluster.is_some() {
        CLUSTER_EDGES
    } else {
        1
    };
    // Every edge attaches to every replica (an attachment starts on replica i mod
    // n), and each edge's list starts elsewhere, so that the edges' first choices
    // (recover-mode apps) are spread too.
    let attachments = replicas.max(2).to_string();
    let mut ws = up.ws_addr;
    for e in 0..edges {
        let mut list = core_urls.clone();
        list.rotate_left(e % replicas);
        let config = <ws_edge::Config as Parser>::try_parse_from([
            "ws-edge".to_owned(),
            "--listen".into(),
            ws.to_string(),
            "--core-url".into(),
            list.join(","),
            "--attachments".into(),
            attachments.clone(),
            "--jwt-secret".into(),
            secret.clone(),
        ])?;
        config.validate().map_err(anyhow::Error::msg)?;
        let listener = ws_edge::server::bind(ws, edges > 1, config.socket_send_buffer())
            .with_context(|| format!("cannot listen on {ws} (LOGI_WS_ADDR)"))?;
        // A port of 0 is drawn by the first edge; the others share it.
        ws = listener.local_addr()?;
        parts.push(Part::Edge(config, listener));
    }
    let signer = Signer::hs256(secret.as_bytes())?;
    let addrs = Addrs {
        grpc,
        metrics,
        edges,
        ws: ws.to_string(),
    };
    print_banner(&addrs, &signer, up.token_ttl)?;

    let simulation = if up.simulate {
        let ws_url = format!("ws://{}", ws.to_string().replace("0.0.0.0", "127.0.0.1"));
        let SimulateOnly { args } = SimulateOnly::try_parse_from([
            "simulate".to_owned(),
            "--grpc-url".into(),
            core_urls[0].replace("0.0.0.0", "127.0.0.1"),
            "--ws-url".into(),
            ws_url,
            "--jwt-secret".into(),
            secret.clone(),
            "--drivers".into(),
            up.simulate_drivers.to_string(),
            "--riders".into(),
            up.simulate_riders.to_string(),
            "--rate".into(),
            up.simulate_rate.to_string(),
        ])?;
        Some(args)
    } else {
        None
    };

    // Ctrl-C stops the simulation first, so its drivers can still go offline.
    let signal = CancellationToken::new();
    tokio::spawn(logi::shutdown::on_signal(signal.clone()));
    let shutdown = CancellationToken::new();
    let simulating = {
        let (signal, shutdown) = (signal.clone(), shutdown.clone());
        async move {
            if let Some(args) = simulation
                && let Err(e) = simulate::run(args, signal.clone()).await
            {
                // The system stays up: it is what the user started.
                eprintln!("logi: simulate: {e:#}");
            }
            signal.cancelled().await;
            shutdown.cancel();
        }
    };
    let running = parts.into_iter().map(|part| {
        let (shutdown, signal) = (shutdown.clone(), signal.clone());
        async move {
            let result = match part {
                Part::Core(config, listeners) => core_svc::run(config, listeners, shutdown.clone())
                    .await
                    .context("core-svc"),
                Part::Edge(config, listener) => ws_edge::run(config, listener, shutdown.clone())
                    .await
                    .context("ws-edge"),
            };
            // If one stops on its own, the others (and the simulation) stop too.
            signal.cancel();
            shutdown.cancel();
            result
        }
    });
    let (results, ()) = tokio::join!(join_all(running), simulating);
    results.into_iter().collect()
}

/// Where the parts of the system are, for the banner.
struct Addrs {
    grpc: Vec<SocketAddr>,
    /// The replicas' metrics (none with `--metrics-addr off`).
    metrics: Vec<SocketAddr>,
    edges: usize,
    ws: String,
}

fn print_banner(addrs: &Addrs, signer: &Signer, ttl: Duration) -> anyhow::Result<()> {
    let (grpc, edges) = (&addrs.grpc, addrs.edges);
    let ttl_text = humantime::format_duration(ttl);
    let ws_host = addrs.ws.replace("0.0.0.0", "localhost");
    let rider = signer.mint("12", Role::User, ttl)?;
    let driver = signer.mint("45", Role::Driver, ttl)?;
    let admin = signer.mint("ops", Role::Admin, ttl)?;
    let service = signer.mint("backend", Role::Service, ttl)?;
    println!();
    if grpc.len() == 1 && edges == 1 {
        println!("Logi realtime is up (development mode). Ctrl-C stops it.");
    } else {
        println!(
            "Logi realtime is up as a cluster: {} core-svc replicas, {edges} ws-edges on one port. Ctrl-C stops them.",
            grpc.len()
        );
    }
    println!();
    for addr in grpc {
        println!("  core-svc gRPC   {addr}   (grpcurl -plaintext {addr} list)");
    }
    println!("  ws-edge         ws://{ws_host}   (/healthz, /readyz)");
    for addr in &addrs.metrics {
        println!("  core-svc metrics  http://{addr}/metrics");
    }
    if edges > 1 {
        // They share the port: a scrape reaches whichever takes the connection.
        println!("  ws-edge metrics   http://{ws_host}/metrics   (one of the {edges} edges)");
    } else {
        println!("  ws-edge metrics   http://{ws_host}/metrics");
    }
    println!();
    println!("  operations page   http://{ws_host}/ops/#token={admin}");
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
