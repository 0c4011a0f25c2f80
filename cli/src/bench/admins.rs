//! `admin-fanout`: A admin consoles on `/ws` (all reading `admins`) while drivers
//! change status at an aggregate open-loop rate; every change is one
//! `driver_status_update` frame to every console.
//!
//! Change k is due at start + k/rate and goes to driver k mod D, whose changes
//! alternate Offline and Available (one task per driver, so a driver's changes
//! are made in order). A console's n-th frame about driver j is that driver's
//! n-th change, so its latency is measured from that change's intended time.
//! Delivered = frames that arrived within 3 s of the last change; lost = A × changes
//! made − delivered; frames past a console's count are duplicates.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use hdrhistogram::Histogram;
use logi::auth::Role;
use logi::pb;
use serde_json::json;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::fixture;
use super::procfs;
use super::report;
use super::socket;
use super::system::System;

/// How long delivery may trail the last change before what is missing counts as lost.
const DRAIN: Duration = Duration::from_secs(3);

#[derive(clap::Args)]
pub struct Args {
    /// Admin consoles connected.
    #[arg(long, default_value_t = 2000)]
    admins: usize,
    /// Drivers whose status changes.
    #[arg(long, default_value_t = 100)]
    drivers: usize,
    /// Aggregate status changes per second.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// How long changes are made.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
}

/// What every console saw.
struct Seen {
    start: Instant,
    rate: f64,
    drivers: usize,
    /// Per console, per driver: frames so far.
    counts: Vec<Vec<u32>>,
    latency: Histogram<u64>,
    delivered: u64,
    duplicates: u64,
    /// Changes each driver will make in the run.
    planned: Vec<u32>,
}

impl Seen {
    fn record(&mut self, console: usize, driver: usize, at: Instant) {
        let n = &mut self.counts[console][driver];
        if *n >= self.planned[driver] {
            self.duplicates += 1;
            return;
        }
        let k = driver as u64 + u64::from(*n) * self.drivers as u64;
        *n += 1;
        self.delivered += 1;
        let due = self.start + Duration::from_secs_f64(k as f64 / self.rate);
        self.latency
            .saturating_record(at.saturating_duration_since(due).as_micros().max(1) as u64);
    }
}

/// The driver number of a `driver_status_update` frame (drivers are `a-d{j}`).
fn driver_of(frame: &str) -> Option<usize> {
    if !frame.contains(r#""type":"driver_status_update""#) {
        return None;
    }
    let rest = frame.split_once(r#""driver_id":"a-d"#)?.1;
    rest.split('"').next()?.parse().ok()
}

/// Runs the scenario.
///
/// # Errors
/// When the system cannot be started or set up.
pub async fn run(args: Args, edges: usize, out: &Path) -> anyhow::Result<()> {
    // No driver goes stale during the run: every frame is one of the load's changes.
    let system = System::start_with(edges, &[], &[], &[("LOGI_DRIVER_STALE_AFTER", "1h")]).await?;
    let clients = fixture::service(&system).await?;
    let status = |j: usize, available: bool| pb::SetDriverStatusRequest {
        driver_id: format!("a-d{j}"),
        status: if available {
            pb::DriverStatus::Available
        } else {
            pb::DriverStatus::Offline
        } as i32,
        vehicle_type: "car".into(),
    };
    for j in 0..args.drivers {
        clients
            .clone()
            .locations
            .set_driver_status(status(j, true))
            .await?;
    }
    let total = (args.rate * args.duration.as_secs_f64()).round() as u64;
    let planned: Vec<u32> = (0..args.drivers)
        .map(|j| total.saturating_sub(j as u64).div_ceil(args.drivers as u64) as u32)
        .collect();
    let start = Instant::now() + Duration::from_secs(1);
    let seen = Arc::new(Mutex::new(Seen {
        start,
        rate: args.rate,
        drivers: args.drivers,
        counts: vec![vec![0; args.drivers]; args.admins],
        latency: report::histogram(),
        delivered: 0,
        duplicates: 0,
        planned: planned.clone(),
    }));
    eprintln!("connecting {} admin consoles…", args.admins);
    let edge = system.edge();
    let consoles = futures::stream::iter(0..args.admins)
        .map(|i| {
            let path = format!(
                "/ws?token={}",
                system.token(Role::Admin, &format!("ops{i}"))
            );
            async move { socket::connect(edge, &path, i).await.map(|ws| (i, ws)) }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    for console in consoles {
        let (i, mut ws) = console?;
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(Ok(message)) = ws.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let now = Instant::now();
                if let Some(driver) = driver_of(&text) {
                    seen.lock().expect("not poisoned").record(i, driver, now);
                }
            }
        });
    }
    tokio::time::sleep_until(start - Duration::from_millis(500)).await;
    eprintln!(
        "{} status changes/s for {}…",
        args.rate,
        humantime::format_duration(args.duration)
    );
    let before = system.usage()?;
    let tool_before = procfs::usage(std::process::id())?;
    let changers: Vec<_> = (0..args.drivers)
        .map(|j| {
            let mut c = clients.clone();
            let changes = planned[j];
            let (rate, drivers) = (args.rate, args.drivers);
            tokio::spawn(async move {
                let mut failed = 0u32;
                for n in 0..changes {
                    let k = j as u64 + u64::from(n) * drivers as u64;
                    tokio::time::sleep_until(start + Duration::from_secs_f64(k as f64 / rate))
                        .await;
                    // Starting Available: the first change takes the driver offline.
                    if c.locations
                        .set_driver_status(status(j, n % 2 == 1))
                        .await
                        .is_err()
                    {
                        failed += 1;
                    }
                }
                failed
            })
        })
        .collect();
    let mut failed = 0u64;
    for c in changers {
        failed += u64::from(c.await?);
    }
    let made = total - failed;
    let expected = made * args.admins as u64;
    let sent_done = Instant::now();
    while Instant::now() < sent_done + DRAIN
        && seen.lock().expect("not poisoned").delivered < expected
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = system.usage()?;
    let tool = procfs::usage(std::process::id())?.cpu_secs - tool_before.cpu_secs;
    let cpu = report::cpu_spent(&before, &after);
    let seen = seen.lock().expect("not poisoned");
    let per_cpu = report::per_cpu_sec(seen.delivered, &cpu);
    let result = json!({
        "scenario": "admin-fanout",
        "admins": args.admins,
        "drivers": args.drivers,
        "rate": args.rate,
        "edges": system.edges.len(),
        "duration_secs": args.duration.as_secs_f64(),
        "changes": made,
        "changes_failed": failed,
        "delivered": seen.delivered,
        "lost": expected - seen.delivered.min(expected),
        "duplicated": seen.duplicates,
        "latency": report::percentiles(&seen.latency),
        "cpu_secs": report::cpu_json(&cpu, tool),
        "delivered_per_server_cpu_sec": per_cpu,
    });
    let l = &result["latency"];
    report::table(
        &format!(
            "admin-fanout: {} consoles, {} changes/s over {} drivers, {} edge(s)",
            args.admins,
            args.rate,
            args.drivers,
            system.edges.len()
        ),
        &[
            "changes",
            "failed",
            "delivered",
            "lost",
            "dup",
            "p50 ms",
            "p99 ms",
            "max ms",
            "core cpu s",
            "edge cpu s",
            "tool cpu s",
            "frames/cpu-s",
        ],
        &[vec![
            made.to_string(),
            failed.to_string(),
            seen.delivered.to_string(),
            result["lost"].to_string(),
            seen.duplicates.to_string(),
            l["p50_ms"].to_string(),
            l["p99_ms"].to_string(),
            l["max_ms"].to_string(),
            format!("{:.2}", cpu[0]),
            format!("{:.2}", cpu[1..].iter().sum::<f64>()),
            format!("{tool:.2}"),
            per_cpu.to_string(),
        ]],
    );
    println!(
        "wrote {}",
        report::write_json(out, "admin-fanout", &result)?.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_names_its_driver() {
        let frame = r#"{"user_id":"","type":"driver_status_update","payload":{"driver_id":"a-d17","status":"Offline"}}"#;
        assert_eq!(driver_of(frame), Some(17));
        assert_eq!(driver_of(r#"{"type":"status_update"}"#), None);
    }

    #[test]
    fn the_nth_frame_of_a_driver_is_its_nth_change() {
        let start = Instant::now();
        let mut seen = Seen {
            start,
            rate: 100.0,
            drivers: 2,
            counts: vec![vec![0; 2]],
            latency: report::histogram(),
            delivered: 0,
            duplicates: 0,
            planned: vec![1, 1],
        };
        // Driver 1's first change is k = 1, due at 10 ms.
        seen.record(0, 1, start + Duration::from_millis(15));
        seen.record(0, 1, start + Duration::from_millis(16));
        assert_eq!((seen.delivered, seen.duplicates), (1, 1));
        let ms = seen.latency.value_at_quantile(1.0) as f64 / 1000.0;
        assert!((ms - 5.0).abs() < 0.1, "{ms}");
    }
}
