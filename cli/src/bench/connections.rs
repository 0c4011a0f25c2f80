//! `connections`: N idle clients of every kind (riders and drivers in both
//! dialects, admins) held open; reports each server process's resident memory and
//! the memory per connected client.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use logi::auth::Role;
use serde_json::json;

use super::report;
use super::socket::{self, Ws};
use super::system::System;

#[derive(clap::Args)]
pub struct Args {
    /// Clients to hold open.
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// How long to hold them before measuring.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    hold: Duration,
}

/// Client `n`'s route and token: a mix of every kind of app.
fn kind(system: &System, n: usize) -> (String, &'static str) {
    let (path, role, sub) = match n % 20 {
        0..=7 => ("/regular_user/ws/bookings/", Role::User, format!("u{n}")),
        8..=11 => ("/ws", Role::User, format!("u{n}")),
        12..=15 => (
            "/driver/ws/available_bookings/",
            Role::Driver,
            format!("d{n}"),
        ),
        16..=18 => ("/ws", Role::Driver, format!("d{n}")),
        _ => ("/ws", Role::Admin, format!("a{n}")),
    };
    (
        format!("{path}?token={}", system.token(role, &sub)),
        role.as_str(),
    )
}

/// Runs the scenario.
///
/// # Errors
/// When the system cannot be started or a client cannot connect.
pub async fn run(args: Args, edges: usize, out: &Path) -> anyhow::Result<()> {
    let limit = socket::raise_fd_limit();
    let system = System::start(edges, &[], &[])?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = system.usage()?;
    eprintln!(
        "connecting {} clients (open-file limit {limit})…",
        args.clients
    );
    let connected: Vec<anyhow::Result<Ws>> = futures::stream::iter(0..args.clients)
        .map(|n| {
            let (path, _) = kind(&system, n);
            let edge = system.edge(n);
            async move { socket::connect(edge, &path, n).await }
        })
        .buffer_unordered(128)
        .collect()
        .await;
    let failed = connected.iter().filter(|c| c.is_err()).count();
    if let Some(Err(e)) = connected.iter().find(|c| c.is_err()) {
        eprintln!("  first failure: {e:#}");
    }
    let mut sockets: Vec<Ws> = connected.into_iter().filter_map(Result::ok).collect();
    let held = sockets.len();
    // Read what each got (its snapshot, pings) so none is closed as a slow reader.
    let readers: Vec<_> = sockets
        .drain(..)
        .map(|mut ws| tokio::spawn(async move { while ws.next().await.is_some() {} }))
        .collect();
    tokio::time::sleep(args.hold).await;
    let loaded = system.usage()?;
    // Divide by the clients still connected when memory is read, not those that once were.
    let live = readers.iter().filter(|r| !r.is_finished()).count();
    let single_edge = system.edges.len() == 1;
    let rows: Vec<Vec<String>> = system
        .procs()
        .zip(idle.iter().zip(&loaded))
        .enumerate()
        .map(|(i, (p, (idle, loaded)))| {
            let delta = loaded.rss_bytes.saturating_sub(idle.rss_bytes) as f64;
            // core-svc serves every client; an edge all of them only when it is alone
            // (several edges share the port and the kernel picks, so theirs is not known).
            let per = if i == 0 || single_edge {
                format!("{:.2}", delta / live.max(1) as f64 / 1024.0)
            } else {
                "-".into()
            };
            vec![
                p.name.clone(),
                format!("{:.1}", idle.rss_bytes as f64 / 1048576.0),
                format!("{:.1}", loaded.rss_bytes as f64 / 1048576.0),
                per,
            ]
        })
        .collect();
    let total_delta: u64 = idle
        .iter()
        .zip(&loaded)
        .map(|(i, l)| l.rss_bytes.saturating_sub(i.rss_bytes))
        .sum();
    let per_client_kib = total_delta as f64 / live.max(1) as f64 / 1024.0;
    report::table(
        &format!(
            "connections: {held} connected ({failed} failed), {live} still open when measured, {} edge(s)",
            system.edges.len()
        ),
        &[
            "process",
            "idle RSS MiB",
            "loaded RSS MiB",
            "KiB per client",
        ],
        &rows,
    );
    println!(
        "memory per connected client, all servers (resident, kernel socket buffers not included): {per_client_kib:.2} KiB"
    );
    let result = json!({
        "scenario": "connections",
        "clients": args.clients,
        "held": held,
        "open_when_measured": live,
        "failed": failed,
        "edges": system.edges.len(),
        "processes": system.procs().zip(idle.iter().zip(&loaded)).map(|(p, (i, l))| json!({
            "name": p.name, "idle_rss_bytes": i.rss_bytes, "loaded_rss_bytes": l.rss_bytes,
        })).collect::<Vec<_>>(),
        "kib_per_client": (per_client_kib * 100.0).round() / 100.0,
    });
    println!(
        "wrote {}",
        report::write_json(out, "connections", &result)?.display()
    );
    for r in readers {
        r.abort();
    }
    Ok(())
}
