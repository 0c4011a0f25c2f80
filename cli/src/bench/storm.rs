//! `connect-storm`: WebSocket handshakes per second, each with JWT verification
//! (and the edge's subscribe and snapshot, as for any app connecting).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use logi::auth::Role;
use serde_json::json;
use tokio::time::Instant;

use super::report;
use super::socket;
use super::system::System;

#[derive(clap::Args)]
pub struct Args {
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Distinct riders whose tokens are used (minted up front).
    #[arg(long, default_value_t = 1000)]
    users: usize,
}

/// Runs the scenario.
///
/// # Errors
/// When the system cannot be started.
pub async fn run(args: Args, edges: usize, out: &Path) -> anyhow::Result<()> {
    socket::raise_fd_limit();
    let system = System::start(edges, &[], &[]).await?;
    let tokens: Arc<Vec<String>> = Arc::new(
        (0..args.users)
            .map(|i| system.token(Role::User, &format!("u{i}")))
            .collect(),
    );
    let edge_addrs: Arc<Vec<_>> = Arc::new(system.edges.iter().map(|e| e.addr).collect());
    let counter = Arc::new(AtomicU64::new(0));
    let before = system.usage()?;
    let start = Instant::now();
    let deadline = start + args.duration;
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (tokens, edges, counter) = (tokens.clone(), edge_addrs.clone(), counter.clone());
        workers.push(tokio::spawn(async move {
            let mut latency = report::histogram();
            let mut failed: BTreeMap<String, u64> = BTreeMap::new();
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed) as usize;
                let path = format!(
                    "/regular_user/ws/bookings/?token={}",
                    tokens[n % tokens.len()]
                );
                let t = Instant::now();
                match socket::connect(edges[n % edges.len()], &path, n).await {
                    Ok(mut ws) => {
                        latency.saturating_record(t.elapsed().as_micros().max(1) as u64);
                        let _ = ws.close(None).await;
                    }
                    Err(e) => *failed.entry(refusal(&e)).or_default() += 1,
                }
            }
            (latency, failed)
        }));
    }
    let mut latency: Histogram<u64> = report::histogram();
    let mut refused: BTreeMap<String, u64> = BTreeMap::new();
    for w in workers {
        let (l, f) = w.await?;
        latency.add(&l)?;
        for (why, n) in f {
            *refused.entry(why).or_default() += n;
        }
    }
    let failed: u64 = refused.values().sum();
    let elapsed = start.elapsed().as_secs_f64();
    let after = system.usage()?;
    let cpu: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| a.cpu_secs - b.cpu_secs)
        .collect();
    let per_sec = latency.len() as f64 / elapsed;
    let result = json!({
        "scenario": "connect-storm",
        "concurrency": args.concurrency,
        "edges": system.edges.len(),
        "duration_secs": elapsed,
        "handshakes": latency.len(),
        "failed": failed,
        "refused_by_status": refused,
        "handshakes_per_sec": per_sec.round(),
        "latency": report::percentiles(&latency),
        "cpu_secs": {"core_svc": cpu[0], "ws_edge": cpu[1..].iter().sum::<f64>()},
    });
    let l = &result["latency"];
    report::table(
        &format!(
            "connect-storm (closed loop): {} in flight, {} edge(s)",
            args.concurrency,
            system.edges.len()
        ),
        &[
            "handshakes",
            "failed",
            "per sec",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "core cpu s",
            "edge cpu s",
        ],
        &[vec![
            latency.len().to_string(),
            failed.to_string(),
            format!("{}", result["handshakes_per_sec"]),
            l["p50_ms"].to_string(),
            l["p90_ms"].to_string(),
            l["p99_ms"].to_string(),
            l["max_ms"].to_string(),
            format!("{:.2}", cpu[0]),
            format!("{:.2}", cpu[1..].iter().sum::<f64>()),
        ]],
    );
    for (why, n) in &refused {
        println!("  refused: {n} × {why}");
    }
    println!(
        "wrote {}",
        report::write_json(out, "connect-storm", &result)?.display()
    );
    Ok(())
}

/// How a handshake failed, as counted: the HTTP status the edge answered, or the
/// kind of error when there was none.
fn refusal(e: &anyhow::Error) -> String {
    use tokio_tungstenite::tungstenite::Error;
    match e.downcast_ref::<Error>() {
        Some(Error::Http(response)) => format!("HTTP {}", response.status().as_u16()),
        Some(Error::Io(io)) => format!("io: {:?}", io.kind()),
        Some(other) => format!("websocket: {other}"),
        None => match e.downcast_ref::<std::io::Error>() {
            Some(io) => format!("io: {:?}", io.kind()),
            None => e.to_string(),
        },
    }
}
