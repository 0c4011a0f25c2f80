//! `location-fanout`: M active trips; drivers push GPS at an aggregate open-loop
//! rate, over gRPC `StreamDriverLocations` or their own WebSockets; riders receive
//! `location_update` (channels) or `driver_location` (logi) frames.
//!
//! Each ping carries its sequence number in the longitude (base + seq × 1e-7°), so a
//! rider's frame says which ping it is; ping k of a phase is due at start + k/rate,
//! and its latency is measured from that intended time. `--sweep` steps through
//! rates and reports the highest whose p99 stays under the bound with nothing lost,
//! then measures at half that rate.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use logi::auth::Role;
use logi::pb;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::fixture::{self, Trip};
use super::procfs;
use super::report::{self, Series};
use super::system::System;

/// One ping's step in longitude: the sequence number's unit.
const STEP: f64 = 1e-7;
/// gRPC client streams the pings are spread over.
const GRPC_STREAMS: usize = 4;
/// How long delivery may trail the last send before what is missing counts as lost.
const DRAIN: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PingPath {
    Grpc,
    Ws,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Dialect {
    Channels,
    Logi,
}

#[derive(clap::Args)]
pub struct Args {
    /// Active trips (driver and rider pairs).
    #[arg(long, default_value_t = 1000)]
    trips: usize,
    /// Aggregate pings per second over all drivers.
    #[arg(long, default_value_t = 5000.0)]
    rate: f64,
    /// How long each rate is offered.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// How drivers send their pings.
    #[arg(long, value_enum, default_value = "grpc")]
    path: PingPath,
    /// The riders' dialect.
    #[arg(long, value_enum, default_value = "channels")]
    dialect: Dialect,
    /// Step through --rates and find the highest sustainable one.
    #[arg(long)]
    sweep: bool,
    /// Rates for --sweep, pings per second.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,2000,5000,10000,20000,40000"
    )]
    rates: Vec<f64>,
    /// Sustainable means p99 at most this, and nothing lost.
    #[arg(long, default_value_t = 20.0)]
    p99_bound_ms: f64,
    /// Run against the one-process floor relay instead of the system (pings over
    /// the drivers' sockets, riders in the channels dialect).
    #[arg(long)]
    floor: bool,
}

/// What the riders saw in the current phase.
struct Phase {
    seq_base: u64,
    start: Instant,
    rate: f64,
    trips: usize,
    latency: Histogram<u64>,
    seen: Vec<u64>,
    unique: u64,
    duplicates: u64,
}

impl Phase {
    fn new(seq_base: u64, start: Instant, rate: f64, trips: usize, total: u64) -> Self {
        Self {
            seq_base,
            start,
            rate,
            trips,
            latency: report::histogram(),
            seen: vec![0; (total as usize).div_ceil(64)],
            unique: 0,
            duplicates: 0,
        }
    }

    fn record(&mut self, trip: usize, seq: u64, at: Instant) {
        let Some(step) = seq.checked_sub(self.seq_base) else {
            return;
        }; // an earlier phase's
        let k = step * self.trips as u64 + trip as u64;
        let Some(word) = self.seen.get_mut((k / 64) as usize) else {
            return;
        };
        let bit = 1u64 << (k % 64);
        if *word & bit != 0 {
            self.duplicates += 1;
            return;
        }
        *word |= bit;
        self.unique += 1;
        let intended = self.start + Duration::from_secs_f64(k as f64 / self.rate);
        self.latency
            .saturating_record(at.saturating_duration_since(intended).as_micros().max(1) as u64);
    }
}

type Shared = Arc<Mutex<Option<Phase>>>;

/// The sequence number a rider frame carries, for trip base longitude `base`.
fn sequence(frame: &str, dialect: Dialect, base: f64) -> Option<u64> {
    let lon: f64 = match dialect {
        Dialect::Channels => {
            let rest = frame.split_once(r#""current_longitude":""#)?.1;
            rest.split('"').next()?.parse().ok()?
        }
        Dialect::Logi => {
            if !frame.contains(r#""type":"driver_location""#) {
                return None; // a booking frame's pickup longitude is no sequence number
            }
            let rest = frame.split_once(r#""longitude":"#)?.1;
            rest.split(['}', ',']).next()?.trim().parse().ok()?
        }
    };
    let seq = ((lon - base) / STEP).round();
    (seq >= 0.0).then_some(seq as u64)
}

async fn connect_riders(
    system: &System,
    trips: &[Trip],
    dialect: Dialect,
    phase: Shared,
    frames: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let path = match dialect {
        Dialect::Channels => "/regular_user/ws/bookings/",
        Dialect::Logi => "/ws",
    };
    let sockets = futures::stream::iter(trips.iter().map(|t| {
        // `pair` is for the floor relay; the edge ignores it.
        let url = format!(
            "ws://{}{path}?token={}&pair={}",
            system.edge(),
            system.token(Role::User, &t.rider),
            t.index
        );
        async move {
            tokio_tungstenite::connect_async(url)
                .await
                .map(|(ws, _)| (t.index, t.at.1, ws))
        }
    }))
    .buffer_unordered(64)
    .collect::<Vec<_>>()
    .await;
    for socket in sockets {
        let (trip, base, mut ws) = socket?;
        let (phase, frames) = (phase.clone(), frames.clone());
        tokio::spawn(async move {
            while let Some(Ok(message)) = ws.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let now = Instant::now();
                frames.fetch_add(1, Ordering::Relaxed);
                if let Some(seq) = sequence(&text, dialect, base)
                    && let Some(p) = phase.lock().expect("not poisoned").as_mut()
                {
                    p.record(trip, seq, now);
                }
            }
        });
    }
    Ok(())
}

/// Where pings go: gRPC streams or the drivers' own sockets.
enum Senders {
    Grpc(Vec<mpsc::Sender<pb::UpdateDriverLocationRequest>>),
    Ws(Vec<mpsc::UnboundedSender<String>>),
}

async fn senders(
    system: &System,
    trips: &[Trip],
    path: PingPath,
    dialect: Dialect,
) -> anyhow::Result<Senders> {
    match path {
        PingPath::Grpc => {
            let mut streams = Vec::new();
            for _ in 0..GRPC_STREAMS {
                let mut clients = fixture::service(system).await?;
                // Bounded: if core-svc falls behind, the sender waits, and the wait
                // shows up as latency from the intended send time.
                let (tx, rx) = mpsc::channel(8192);
                tokio::spawn(async move {
                    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
                    // Ends when the run does (its sender dropped, or the servers stopping).
                    let _ = clients.locations.stream_driver_locations(stream).await;
                });
                streams.push(tx);
            }
            Ok(Senders::Grpc(streams))
        }
        PingPath::Ws => {
            let route = match dialect {
                Dialect::Channels => "/driver/ws/bookings/",
                Dialect::Logi => "/ws",
            };
            let mut sinks = Vec::new();
            for t in trips {
                let url = format!(
                    "ws://{}{route}?token={}&pair={}",
                    system.edge(),
                    system.token(Role::Driver, &t.driver),
                    t.index
                );
                let (ws, _) = tokio_tungstenite::connect_async(url).await?;
                let (mut sink, mut stream) = ws.split();
                // Unbounded only between this loop and the socket it owns; the
                // schedule bounds what is queued (one phase's pings at most).
                let (tx, mut rx) = mpsc::unbounded_channel::<String>();
                tokio::spawn(async move {
                    while let Some(text) = rx.recv().await {
                        if sink.send(Message::Text(text.into())).await.is_err() {
                            return;
                        }
                    }
                });
                tokio::spawn(async move { while stream.next().await.is_some() {} });
                sinks.push(tx);
            }
            Ok(Senders::Ws(sinks))
        }
    }
}

impl Senders {
    /// Queues one ping; false if it could not be handed on within a second (the
    /// stream or socket is gone or stuck): counted as not sent, not as lost.
    async fn send(&self, trip: &Trip, seq: u64, dialect: Dialect) -> bool {
        let (lat, lon) = (trip.at.0, trip.at.1 + seq as f64 * STEP);
        match self {
            Senders::Grpc(streams) => {
                let ping = pb::UpdateDriverLocationRequest {
                    driver_id: trip.driver.clone(),
                    latitude: lat,
                    longitude: lon,
                    heading: 0.0,
                    speed_mps: 8.0,
                };
                streams[trip.index % streams.len()]
                    .send_timeout(ping, Duration::from_secs(1))
                    .await
                    .is_ok()
            }
            Senders::Ws(sinks) => {
                let frame = match dialect {
                    Dialect::Channels => format!(
                        r#"{{"type":"location_update","current_latitude":"{lat}","current_longitude":"{lon}"}}"#
                    ),
                    Dialect::Logi => {
                        format!(
                            r#"{{"type":"driver_location","payload":{{"latitude":{lat},"longitude":{lon}}}}}"#
                        )
                    }
                };
                sinks[trip.index].send(frame).is_ok()
            }
        }
    }
}

/// One rate for one duration; returns its result row.
#[allow(clippy::too_many_arguments)]
async fn phase(
    system: &System,
    trips: &[Trip],
    senders: &Senders,
    shared: &Shared,
    frames: &AtomicU64,
    args: &Args,
    rate: f64,
    seq_base: u64,
) -> anyhow::Result<Value> {
    quiet(frames).await;
    let total = (rate * args.duration.as_secs_f64()).round() as u64;
    let start = Instant::now() + Duration::from_millis(50);
    *shared.lock().expect("not poisoned") =
        Some(Phase::new(seq_base, start, rate, trips.len(), total));
    let before = system.usage()?;
    let tool_before = procfs::usage(std::process::id())?;
    let (mut k, mut not_sent) = (0u64, 0u64);
    while k < total {
        let now = Instant::now();
        while k < total && start + Duration::from_secs_f64(k as f64 / rate) <= now {
            let trip = &trips[(k % trips.len() as u64) as usize];
            if !senders
                .send(trip, seq_base + k / trips.len() as u64, args.dialect)
                .await
            {
                not_sent += 1;
            }
            k += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let sent = total - not_sent;
    let sent_done = Instant::now();
    while Instant::now() < sent_done + DRAIN {
        if shared
            .lock()
            .expect("not poisoned")
            .as_ref()
            .is_some_and(|p| p.unique >= sent)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = system.usage()?;
    let tool = procfs::usage(std::process::id())?.cpu_secs - tool_before.cpu_secs;
    let p = shared
        .lock()
        .expect("not poisoned")
        .take()
        .expect("set above");
    let cpu = report::cpu_spent(&before, &after);
    Ok(json!({
        "offered_rate": rate,
        "sent": sent,
        "not_sent": not_sent,
        "delivered": p.unique,
        "lost": sent - p.unique.min(sent),
        "duplicated": p.duplicates,
        "latency": report::percentiles(&p.latency),
        "cpu_secs": report::cpu_json(&cpu, tool),
        "delivered_per_server_cpu_sec": report::per_cpu_sec(p.unique, &cpu),
    }))
}

/// Waits until no rider frame has arrived for half a second (at most 10 s), so a
/// phase does not start while the last one's backlog still loads the servers.
async fn quiet(frames: &AtomicU64) {
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = frames.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(500)).await;
        if frames.load(Ordering::Relaxed) == seen || Instant::now() >= give_up {
            return;
        }
    }
}

/// The columns of the printed table, one per field of [`row`].
const HEADERS: [&str; 15] = [
    "rate/s",
    "sent",
    "not sent",
    "delivered",
    "lost",
    "dup",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "p99.9 ms",
    "max ms",
    "core cpu s",
    "edge cpu s",
    "tool cpu s",
    "frames/cpu-s",
];

fn row(r: &Value) -> Vec<String> {
    let l = &r["latency"];
    vec![
        format!("{}", r["offered_rate"]),
        format!("{}", r["sent"]),
        format!("{}", r["not_sent"]),
        format!("{}", r["delivered"]),
        format!("{}", r["lost"]),
        format!("{}", r["duplicated"]),
        format!("{}", l["p50_ms"]),
        format!("{}", l["p90_ms"]),
        format!("{}", l["p99_ms"]),
        format!("{}", l["p99_9_ms"]),
        format!("{}", l["max_ms"]),
        format!("{:.2}", r["cpu_secs"]["core_svc"].as_f64().unwrap_or(0.0)),
        format!("{:.2}", r["cpu_secs"]["ws_edge"].as_f64().unwrap_or(0.0)),
        format!("{:.2}", r["cpu_secs"]["load_tool"].as_f64().unwrap_or(0.0)),
        format!("{}", r["delivered_per_server_cpu_sec"]),
    ]
}

/// Runs the scenario.
///
/// # Errors
/// When the system cannot be started or set up.
pub async fn run(args: Args, edges: usize, out: &Path) -> anyhow::Result<()> {
    if args.floor && (args.path != PingPath::Ws || args.dialect != Dialect::Channels) {
        anyhow::bail!(
            "--floor relays pings over the drivers' sockets to channels riders: add --path ws"
        );
    }
    let (system, trips) = if args.floor {
        (System::floor()?, fixture::unregistered(args.trips))
    } else {
        let system = System::start(edges, &[], &[]).await?;
        eprintln!("setting up {} trips…", args.trips);
        let trips = fixture::trips(&system, args.trips, true).await?;
        (system, trips)
    };
    let shared: Shared = Arc::new(Mutex::new(None));
    let frames = Arc::new(AtomicU64::new(0));
    connect_riders(
        &system,
        &trips,
        args.dialect,
        shared.clone(),
        frames.clone(),
    )
    .await?;
    let senders = senders(&system, &trips, args.path, args.dialect).await?;
    // Let the snapshots and connections settle before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let rates = if args.sweep {
        args.rates.clone()
    } else {
        vec![args.rate]
    };
    let mut results = Vec::new();
    let mut seq_base = 0u64;
    for rate in rates {
        eprintln!(
            "offering {rate} pings/s for {}…",
            humantime::format_duration(args.duration)
        );
        let r = phase(
            &system, &trips, &senders, &shared, &frames, &args, rate, seq_base,
        )
        .await?;
        let offered = r["sent"].as_u64().unwrap_or(0) + r["not_sent"].as_u64().unwrap_or(0);
        seq_base += offered / trips.len() as u64 + 2;
        results.push(r);
    }
    let sustainable = |r: &Value| {
        r["lost"] == 0
            && r["duplicated"] == 0
            && r["latency"]["p99_ms"].as_f64().unwrap_or(f64::MAX) <= args.p99_bound_ms
    };
    let best = results
        .iter()
        .filter(|r| sustainable(r))
        .filter_map(|r| r["offered_rate"].as_f64())
        .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))));
    let mut half = Value::Null;
    if args.sweep
        && let Some(best) = best
    {
        eprintln!(
            "offering half the highest sustainable rate, {}…",
            best / 2.0
        );
        half = phase(
            &system,
            &trips,
            &senders,
            &shared,
            &frames,
            &args,
            best / 2.0,
            seq_base,
        )
        .await?;
    }

    let mut rows: Vec<Vec<String>> = results.iter().map(row).collect();
    if !half.is_null() {
        rows.push(row(&half));
    }
    let title = if args.floor {
        format!(
            "location-fanout: {} trips against the FLOOR relay (its CPU in the core column)",
            args.trips
        )
    } else {
        format!(
            "location-fanout: {} trips, pings over {:?}, riders in {:?}, {} edge(s)",
            args.trips,
            args.path,
            args.dialect,
            system.edges.len()
        )
    };
    report::table(&title, &HEADERS, &rows);
    if args.sweep {
        match best {
            Some(b) => println!(
                "highest sustainable rate (p99 <= {} ms, nothing lost): {b} pings/s",
                args.p99_bound_ms
            ),
            None => println!(
                "no rate was sustainable (p99 <= {} ms, nothing lost)",
                args.p99_bound_ms
            ),
        }
    }
    let result = json!({
        "scenario": "location-fanout",
        "system": if args.floor { "floor" } else { "logi" },
        "trips": args.trips,
        "path": format!("{:?}", args.path),
        "dialect": format!("{:?}", args.dialect),
        "edges": system.edges.len(),
        "duration_secs": args.duration.as_secs_f64(),
        "p99_bound_ms": args.p99_bound_ms,
        "phases": results,
        "highest_sustainable_rate": best,
        "at_half_the_highest": half,
    });
    let name = match (args.sweep, args.floor) {
        (true, false) => "location-fanout-sweep",
        (false, false) => "location-fanout",
        (true, true) => "location-fanout-floor-sweep",
        (false, true) => "location-fanout-floor",
    };
    let json_path = report::write_json(out, name, &result)?;
    let phases: Vec<&Value> = result["phases"].as_array().into_iter().flatten().collect();
    let series = ["p50_ms", "p90_ms", "p99_ms", "p99_9_ms", "max_ms"]
        .iter()
        .map(|k| Series {
            name: k.trim_end_matches("_ms").replace('_', ".").to_owned(),
            points: phases
                .iter()
                .map(|p| {
                    (
                        p["offered_rate"].as_f64().unwrap_or(0.0),
                        p["latency"][k].as_f64().unwrap_or(0.0),
                    )
                })
                .collect(),
        })
        .collect::<Vec<_>>();
    let svg = report::svg_chart(
        "location fan-out: latency by offered rate",
        "offered pings per second",
        "latency, ms (log)",
        &series,
    );
    let svg_path = report::write_svg(out, name, &svg)?;
    println!("wrote {} and {}", json_path.display(), svg_path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_a_header_per_column() {
        let r = json!({"offered_rate": 1.0, "sent": 1, "not_sent": 0, "delivered": 1, "lost": 0, "duplicated": 0,
            "latency": {}, "cpu_secs": {}, "delivered_per_server_cpu_sec": 1.0});
        assert_eq!(row(&r).len(), HEADERS.len());
    }

    #[test]
    fn sequence_numbers_survive_both_dialects() {
        let base = -169.9;
        let lon = base + 12_345.0 * STEP;
        let channels = format!(
            r#"{{"type":"location_update","driver_id":45,"current_latitude":"-50","current_longitude":"{lon}","status":"on_trip"}}"#
        );
        assert_eq!(sequence(&channels, Dialect::Channels, base), Some(12_345));
        let logi = format!(
            r#"{{"user_id":"r1","type":"driver_location","payload":{{"booking_id":"1","latitude":-50.0,"longitude":{lon}}}}}"#
        );
        assert_eq!(sequence(&logi, Dialect::Logi, base), Some(12_345));
        assert_eq!(
            sequence(
                r#"{"type":"booking_status_update"}"#,
                Dialect::Channels,
                base
            ),
            None
        );
    }

    #[test]
    fn a_phase_counts_each_ping_once_and_times_it_from_its_due_time() {
        let start = Instant::now();
        let mut p = Phase::new(100, start, 1000.0, 2, 10);
        p.record(1, 100, start + Duration::from_millis(3)); // k = 1, due at 1 ms
        p.record(1, 100, start + Duration::from_millis(4));
        p.record(0, 99, start); // an earlier phase's
        assert_eq!((p.unique, p.duplicates), (1, 1));
        let ms = p.latency.value_at_quantile(1.0) as f64 / 1000.0;
        assert!((ms - 2.0).abs() < 0.1, "{ms}");
    }
}
