//! `lifecycle`: concurrent bookings through create → accept → verify OTP →
//! complete, each rider watching over a WebSocket. Reports completed lifecycles per
//! second, RPC latency percentiles, and whether every observer saw every transition.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use hdrhistogram::Histogram;
use logi::auth::Role;
use logi::client::Clients;
use logi::pb;
use serde_json::json;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::fixture;
use super::report;
use super::system::System;

/// How long observers may trail the last completion before what is missing counts.
const DRAIN: Duration = Duration::from_secs(3);
/// What an observer must see of a booking: pending, accepted, OTP, on_trip, completed.
const ALL_SEEN: u8 = 0b1_1111;

#[derive(clap::Args)]
pub struct Args {
    /// Bookings in flight at once (one rider and one driver each).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
}

const CALLS: [&str; 5] = [
    "CreateBooking",
    "AcceptBooking",
    "GetBooking",
    "VerifyOtp",
    "CompleteTrip",
];

/// Which transitions of each booking the riders' sockets showed.
type Seen = Arc<Mutex<HashMap<u64, u8>>>;

fn bit(frame: &str) -> Option<(u64, u8)> {
    let id = |key: &str| -> Option<u64> {
        let rest = frame.split_once(key)?.1;
        rest.split([',', '}']).next()?.trim().parse().ok()
    };
    let booking = id(r#""booking_id":"#)?;
    if frame.contains(r#""type":"send_otp_update""#) {
        return Some((booking, 0b0_0100));
    }
    let status = frame.split_once(r#""status":""#)?.1.split('"').next()?;
    let b = match status {
        "pending" => 0b0_0001,
        "accepted" => 0b0_0010,
        "on_trip" => 0b0_1000,
        "completed" => 0b1_0000,
        _ => return None,
    };
    Some((booking, b))
}

async fn watch(system: &System, rider: &str, seen: Seen) -> anyhow::Result<()> {
    let url = format!(
        "ws://{}/regular_user/ws/bookings/?token={}",
        system.edge(),
        system.token(Role::User, rider)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    tokio::spawn(async move {
        while let Some(Ok(message)) = ws.next().await {
            if let Message::Text(text) = message
                && let Some((booking, b)) = bit(&text)
            {
                *seen
                    .lock()
                    .expect("not poisoned")
                    .entry(booking)
                    .or_default() |= b;
            }
        }
    });
    Ok(())
}

/// One booking through create → accept → read the OTP → verify → complete, each
/// call timed into `latency`. On failure: the booking to clean up, if one exists.
async fn one_lifecycle(
    c: &mut Clients,
    i: usize,
    latency: &mut [Histogram<u64>],
) -> Result<u64, Option<u64>> {
    let driver = format!("d{i}");
    let at = fixture::place(i);
    let place = |dlat: f64| {
        Some(pb::Place {
            latitude: at.0 + dlat,
            longitude: at.1,
            address: "bench".into(),
        })
    };
    let mut timed = |call: usize, since: Instant| {
        latency[call].saturating_record(since.elapsed().as_micros().max(1) as u64);
    };
    let t = Instant::now();
    let create = pb::CreateBookingRequest {
        user_id: format!("r{i}"),
        pickup: place(0.0),
        dropoff: place(0.01),
        vehicle_type: "car".into(),
        ..Default::default()
    };
    let id = c
        .bookings
        .create_booking(create)
        .await
        .map_err(|_| None)?
        .into_inner()
        .id;
    timed(0, t);
    let t = Instant::now();
    let accept = pb::AcceptBookingRequest {
        booking_id: id,
        driver_id: driver.clone(),
    };
    c.bookings
        .accept_booking(accept)
        .await
        .map_err(|_| Some(id))?;
    timed(1, t);
    let t = Instant::now();
    let otp = c
        .bookings
        .get_booking(pb::GetBookingRequest { booking_id: id })
        .await
        .map_err(|_| Some(id))?
        .into_inner()
        .otp;
    timed(2, t);
    let t = Instant::now();
    let verify = pb::VerifyOtpRequest {
        booking_id: id,
        driver_id: driver.clone(),
        otp,
    };
    c.bookings.verify_otp(verify).await.map_err(|_| Some(id))?;
    timed(3, t);
    let t = Instant::now();
    c.bookings
        .complete_trip(pb::CompleteTripRequest {
            booking_id: id,
            driver_id: driver,
        })
        .await
        .map_err(|_| Some(id))?;
    timed(4, t);
    Ok(id)
}

/// After a failed step: cancel its booking (freeing the driver, where it is not yet
/// on trip) and back off, so one failure does not turn into a tight loop.
async fn recover(c: &mut Clients, booking: Option<u64>) {
    if let Some(id) = booking {
        let cancel = pb::CancelBookingRequest {
            booking_id: id,
            cancelled_by: pb::Canceller::User as i32,
            reason: "bench".into(),
        };
        let _ = c.bookings.cancel_booking(cancel).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Runs the scenario.
///
/// # Errors
/// When the system cannot be started or set up.
pub async fn run(args: Args, edges: usize, out: &Path) -> anyhow::Result<()> {
    let system = System::start(edges, &[], &[]).await?;
    let seen: Seen = Arc::default();
    // Drivers online, each far from the others; no bookings yet.
    let setup = fixture::service(&system).await?;
    for i in 0..args.concurrency {
        let mut c = setup.clone();
        let at = fixture::place(i);
        let status = pb::SetDriverStatusRequest {
            driver_id: format!("d{i}"),
            status: pb::DriverStatus::Available as i32,
            vehicle_type: "car".into(),
        };
        c.locations.set_driver_status(status).await?;
        let ping = pb::UpdateDriverLocationRequest {
            driver_id: format!("d{i}"),
            latitude: at.0,
            longitude: at.1,
            heading: 0.0,
            speed_mps: 0.0,
        };
        c.locations.update_driver_location(ping).await?;
        watch(&system, &format!("r{i}"), seen.clone()).await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let before = system.usage()?;
    let start = Instant::now();
    let deadline = start + args.duration;
    let mut workers = Vec::new();
    for i in 0..args.concurrency {
        let mut c = fixture::service_of(&system, i).await?;
        workers.push(tokio::spawn(async move {
            let mut latency: Vec<Histogram<u64>> =
                CALLS.iter().map(|_| report::histogram()).collect();
            let mut done: Vec<u64> = Vec::new();
            let mut failures = 0u64;
            while Instant::now() < deadline {
                match one_lifecycle(&mut c, i, &mut latency).await {
                    Ok(id) => done.push(id),
                    Err(booking) => {
                        failures += 1;
                        recover(&mut c, booking).await;
                    }
                }
            }
            (latency, done, failures)
        }));
    }
    let mut latency: Vec<Histogram<u64>> = CALLS.iter().map(|_| report::histogram()).collect();
    let (mut done, mut failures) = (Vec::new(), 0u64);
    for w in workers {
        let (l, d, f) = w.await?;
        for (all, one) in latency.iter_mut().zip(&l) {
            all.add(one)?;
        }
        done.extend(d);
        failures += f;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let after = system.usage()?;
    let drain_until = Instant::now() + DRAIN;
    let missing = loop {
        let missing = {
            let seen = seen.lock().expect("not poisoned");
            done.iter()
                .filter(|id| seen.get(id).copied().unwrap_or(0) != ALL_SEEN)
                .count()
        };
        if missing == 0 || Instant::now() >= drain_until {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let cpu: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| a.cpu_secs - b.cpu_secs)
        .collect();
    let per_sec = done.len() as f64 / elapsed;
    let calls: serde_json::Map<String, serde_json::Value> = CALLS
        .iter()
        .zip(&latency)
        .map(|(n, h)| (n.to_string(), report::percentiles(h)))
        .collect();
    let result = json!({
        "scenario": "lifecycle",
        "concurrency": args.concurrency,
        "edges": system.edges.len(),
        "duration_secs": elapsed,
        "completed": done.len(),
        "lifecycles_per_sec": (per_sec * 10.0).round() / 10.0,
        "failed": failures,
        "observed_incompletely": missing,
        "rpc_latency": calls,
        "cpu_secs": {"core_svc": cpu[0], "ws_edge": cpu[1..].iter().sum::<f64>()},
    });
    let rows: Vec<Vec<String>> = CALLS
        .iter()
        .map(|n| {
            let p = &result["rpc_latency"][n];
            vec![
                n.to_string(),
                p["count"].to_string(),
                p["p50_ms"].to_string(),
                p["p90_ms"].to_string(),
                p["p99_ms"].to_string(),
                p["p99_9_ms"].to_string(),
                p["max_ms"].to_string(),
            ]
        })
        .collect();
    report::table(
        &format!(
            "lifecycle (closed loop): {} in flight, {} completed in {elapsed:.1} s = {:.1}/s, {failures} failed, {missing} not fully observed",
            args.concurrency,
            done.len(),
            per_sec
        ),
        &[
            "call", "count", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms",
        ],
        &rows,
    );
    println!(
        "server CPU: core-svc {:.2} s, ws-edge {:.2} s",
        cpu[0],
        cpu[1..].iter().sum::<f64>()
    );
    let json_path = report::write_json(out, "lifecycle", &result)?;
    println!("wrote {}", json_path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_mark_their_transition() {
        assert_eq!(
            bit(r#"{"type":"send_otp_update","otp":"123456","booking_id":7}"#),
            Some((7, 0b0_0100))
        );
        let on_trip = r#"{"type":"booking_status_update","message":{"status":"on_trip","booking_id":7,"pickup_time":"x"}}"#;
        assert_eq!(bit(on_trip), Some((7, 0b0_1000)));
        assert_eq!(bit(r#"{"type":"location_update","driver_id":45}"#), None);
    }
}
