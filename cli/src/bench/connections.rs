//! `connections`: N idle clients of every kind (riders and drivers in both
//! dialects, admins) held open by as many load processes as the open-file limit
//! calls for (see [`super::holder`]); reports each server process's resident
//! memory and the memory per connected client.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::holder::Holder;
use super::report;
use super::socket;
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

/// Open files a load process keeps for itself beside its clients.
const SPARE_FILES: u64 = 500;
/// Clients per load process at most, even where more files are allowed.
const MAX_PER_PROCESS: usize = 18_000;

/// Runs the scenario.
///
/// # Errors
/// When the system cannot be started or a load process fails.
pub async fn run(args: Args, edges: usize, out: &Path) -> anyhow::Result<()> {
    let limit = socket::raise_fd_limit();
    let per_process = (limit.saturating_sub(SPARE_FILES) as usize).clamp(1, MAX_PER_PROCESS);
    let system = System::start(edges, &[], &[]).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = system.usage()?;
    let mut holders = (0..args.clients)
        .step_by(per_process)
        .map(|from| {
            let to = (from + per_process).min(args.clients);
            Holder::start(system.edge(), from..to, &system.secret)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    eprintln!(
        "connecting {} clients from {} load process(es) of at most {per_process} (open-file limit {limit})…",
        args.clients,
        holders.len()
    );
    let mut held = 0;
    let mut failed = 0;
    for holder in &mut holders {
        let ready = holder.ready().await?;
        held += ready.connected;
        failed += ready.failed;
        if let Some(e) = ready.first_failure {
            eprintln!("  first failure of clients {:?}: {e}", holder.clients);
        }
    }
    tokio::time::sleep(args.hold).await;
    let loaded = system.usage()?;
    // Divide by the clients still connected when memory is read, not those that once were.
    let mut live = 0;
    for holder in &mut holders {
        let (open, ended) = holder.open().await?;
        live += open;
        if ended != "-" {
            eprintln!(
                "  clients {:?} that ended before measuring: {ended}",
                holder.clients
            );
        }
    }
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
        "load_processes": holders.len(),
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
    drop(holders);
    Ok(())
}
