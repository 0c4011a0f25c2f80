//! `logi simulate`: a moving demo fleet and riders booking, against a running
//! system and only through its public interfaces (gRPC for calls, WebSockets
//! for what apps see), so it doubles as a soak test.
//!
//! # Shape
//! - [`path`]: the area around `--center`, random places in it, routes along a
//!   street grid that vehicles advance along.
//! - [`frames`]: the frames apps read and send, in both dialects.
//! - [`fleet`]: what every app shares (the gRPC channel, the edge's URL, a signer
//!   for each app's own token) and who each app is.
//! - [`driver`], [`rider`]: one task per app, each holding its WebSocket.
//! - [`ledger`]: per booking, what RPC answers confirmed and what the rider's
//!   socket showed; the OTP the rider "tells" its driver; the counters.
//! - [`check`]: `--check`, a pure function over the ledger.
//! - [`rpc`]: every call bounded in time, and which failures are expected.
//! - [`summary`]: the live one-line summary.
//!
//! # A run
//! Drivers come online (half on `/driver/ws/available_bookings/`, half on
//! `/ws`) and riders connect (half on `/regular_user/ws/bookings/`, half on
//! `/ws`), at most [`SETUP_CONCURRENCY`] at a time. A scheduler then picks a
//! free rider `--rate` times a second to book. Stop (Ctrl-C, SIGTERM or
//! `--duration`) is bounded: no new bookings; drivers end what they have open
//! (a trip under way completes, one not started is cancelled) and go offline;
//! riders cancel what is still pending (within [`GRACE`]); riders' sockets get
//! [`DRAIN`] to show what the last calls did; then every socket is closed and
//! the final summary printed.
//!
//! Queues: the scheduler's word to a rider waits in a queue of one (a rider
//! told twice books once); free riders queue their index in a queue with room
//! for all of them. Nothing else queues inside the simulator.

mod check;
mod driver;
mod fleet;
mod frames;
mod ledger;
mod path;
mod rider;
mod rpc;
mod summary;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use logi::auth::Signer;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use self::driver::Driver;
use self::fleet::World;
use self::ledger::Ledger;
use self::path::{Area, Point};
use self::rider::{Queues, Rider};
use crate::secret;

/// Apps connecting at once while the fleet comes up.
pub const SETUP_CONCURRENCY: usize = 16;
/// How long drivers and riders get to end what they have open at stop.
pub const GRACE: Duration = Duration::from_secs(5);
/// How long riders' sockets get, after that, to show what the last calls did.
pub const DRAIN: Duration = Duration::from_secs(3);
/// Failures printed at the end (all are counted).
const PRINTED_FAILURES: usize = 20;

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Drivers in the fleet, each with its own WebSocket.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u16).range(1..=5000))]
    pub drivers: u16,
    /// Riders, each with its own WebSocket, booking one trip at a time.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=5000))]
    pub riders: u16,
    /// Bookings per second, over all riders.
    #[arg(long, default_value_t = 1.0, value_parser = rate)]
    pub rate: f64,
    /// core-svc's gRPC URL.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub grpc_url: String,
    /// ws-edge's WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:8080")]
    pub ws_url: String,
    /// Folder holding the secret `logi up` generated (unless LOGI_JWT_SECRET is set).
    #[arg(long, env = "LOGI_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    #[arg(long, env = "LOGI_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// The centre of the area, LAT,LON (San Francisco by default).
    #[arg(long, default_value = "37.7749,-122.4194", value_parser = center, allow_hyphen_values = true)]
    pub center: Point,
    /// The radius of the area in kilometres; trips are a sixth to a third of it.
    #[arg(long, default_value_t = 3.0, value_parser = radius)]
    pub radius_km: f64,
    /// How many times faster than street speeds (car 40 km/h, van 32, bike 22)
    /// vehicles move, so that trips complete within a minute.
    #[arg(long, default_value_t = 5.0, value_parser = speed)]
    pub speed: f64,
    /// Stop after this long (e.g. 60s, 10m); without it, run until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Seed of every random choice, to repeat a run's choices.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Exit non-zero, saying what went wrong per booking, if a rider missed a
    /// transition or a call failed unexpectedly.
    #[arg(long)]
    pub check: bool,
}

fn rate(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if r > 0.0 && r <= 1000.0 {
        Ok(r)
    } else {
        Err("must be above 0 and at most 1000 bookings a second".into())
    }
}

fn radius(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.1..=50.0).contains(&r) {
        Ok(r)
    } else {
        Err("must be from 0.1 to 50 km".into())
    }
}

fn speed(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.1..=100.0).contains(&r) {
        Ok(r)
    } else {
        Err("must be from 0.1 to 100 times street speed".into())
    }
}

fn center(s: &str) -> Result<Point, String> {
    let parse = |v: &str| v.trim().parse::<f64>().ok();
    let (lat, lon) = s
        .split_once(',')
        .and_then(|(a, b)| parse(a).zip(parse(b)))
        .ok_or_else(|| format!("{s:?} is not LAT,LON (e.g. 37.7749,-122.4194)"))?;
    if !(-85.0..=85.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
        return Err("latitude must be within ±85 and longitude within ±180".into());
    }
    Ok(Point { lat, lon })
}

/// Runs the simulation until `stop` (or `--duration`), then stops it cleanly.
///
/// # Errors
/// When the system cannot be reached or an app cannot be set up; with
/// `--check`, when a rider missed a transition or a call failed unexpectedly.
pub async fn run(args: Args, stop: CancellationToken) -> anyhow::Result<()> {
    let secret = match &args.jwt_secret {
        Some(s) => s.clone(),
        None => secret::read(&args.data_dir)?,
    };
    let channel = Channel::from_shared(args.grpc_url.clone())
        .with_context(|| format!("--grpc-url {:?} is not a URL", args.grpc_url))?
        .connect_timeout(rpc::TIMEOUT)
        .connect()
        .await
        .with_context(|| {
            format!(
                "cannot reach core-svc at {} (is `logi up` running?)",
                args.grpc_url
            )
        })?;
    let world = Arc::new(World {
        area: Area {
            center: args.center,
            radius_m: args.radius_km * 1000.0,
        },
        speedup: args.speed,
        ledger: Ledger::default(),
        channel,
        ws_url: args.ws_url.trim_end_matches('/').to_owned(),
        signer: Signer::hs256(secret.as_bytes())?,
        // Long enough for any run: an expiring token would close the sockets.
        token_ttl: args.duration.unwrap_or(Duration::ZERO) + Duration::from_secs(24 * 3600),
    });
    let (drivers, riders) = (usize::from(args.drivers), usize::from(args.riders));
    println!(
        "Simulating {drivers} drivers and {riders} riders within {} km of {},{} at {} bookings/s ({}x street speed). {}",
        args.radius_km,
        args.center.lat,
        args.center.lon,
        args.rate,
        args.speed,
        match args.duration {
            Some(d) => format!("Stops after {}.", humantime::format_duration(d)),
            None => "Ctrl-C stops it.".to_owned(),
        }
    );
    let mut seeds = StdRng::seed_from_u64(args.seed.unwrap_or_else(rand::random));
    let mut rng = || StdRng::seed_from_u64(seeds.random());
    let driver_rngs: Vec<StdRng> = (0..drivers).map(|_| rng()).collect();
    let rider_rngs: Vec<StdRng> = (0..riders).map(|_| rng()).collect();

    let setup = async {
        let fleet: Vec<Driver> = futures::stream::iter(driver_rngs.into_iter().enumerate())
            .map(|(i, r)| Driver::start(world.clone(), i, r))
            .buffer_unordered(SETUP_CONCURRENCY)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;
        let people: Vec<Rider> = futures::stream::iter(rider_rngs.into_iter().enumerate())
            .map(|(i, r)| Rider::start(world.clone(), i, r))
            .buffer_unordered(SETUP_CONCURRENCY)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;
        anyhow::Ok((fleet, people))
    };
    let (fleet, people) = tokio::select! {
        ready = setup => ready?,
        _ = stop.cancelled() => {
            // Drivers already online go unseen after core-svc's staleness limit.
            println!("Stopped while the fleet was coming up.");
            if args.check {
                bail!("--check: stopped before the fleet was up, so nothing was checked");
            }
            return Ok(());
        }
    };

    let acting = stop.child_token();
    let close = CancellationToken::new();
    let mut driver_tasks = JoinSet::new();
    for d in fleet {
        driver_tasks.spawn(d.run(acting.clone()));
    }
    let (free_tx, mut free_rx) = mpsc::channel(riders);
    let (cleaned_tx, mut cleaned_rx) = mpsc::channel::<()>(1);
    let mut book_txs = Vec::with_capacity(riders);
    let mut rider_tasks = JoinSet::new();
    for r in people {
        let (book_tx, book_rx) = mpsc::channel(1);
        book_txs.push(book_tx);
        let q = Queues {
            book: book_rx,
            free: free_tx.clone(),
            cleaned: cleaned_tx.clone(),
        };
        rider_tasks.spawn(r.run(q, acting.clone(), close.clone()));
    }
    drop((free_tx, cleaned_tx));

    let since = Instant::now();
    let scheduler = {
        let acting = acting.clone();
        let every = Duration::from_secs_f64(1.0 / args.rate);
        async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = acting.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                // No rider free: this booking is not made (every rider is busy).
                if let Ok(i) = free_rx.try_recv() {
                    let _ = book_txs[i].try_send(());
                }
            }
        }
    };
    let until = async {
        match args.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::join!(
        scheduler,
        summary::print_live(&world.ledger.stats, since, acting.clone()),
        async {
            tokio::select! {
                _ = until => acting.cancel(),
                _ = acting.cancelled() => {}
            }
        }
    );

    // Stop: drivers end their trips and go offline, riders cancel what is pending.
    let ended = tokio::time::timeout(GRACE, async {
        while driver_tasks.join_next().await.is_some() {}
        cleaned_rx.recv().await;
    })
    .await;
    if ended.is_err() {
        world.ledger.fail(format!(
            "drivers and riders did not end their bookings within {} s of stop",
            GRACE.as_secs()
        ));
        driver_tasks.abort_all();
    }
    let elapsed = since.elapsed();
    let _ = tokio::time::timeout(DRAIN, async {
        while !world.ledger.all_delivered() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    close.cancel();
    if tokio::time::timeout(Duration::from_secs(2), async {
        while rider_tasks.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        rider_tasks.abort_all();
    }

    summary::print_final(&world.ledger.stats, elapsed);
    let failures = world.ledger.failures();
    for f in failures.iter().take(PRINTED_FAILURES) {
        println!("  failed: {f}");
    }
    if failures.len() > PRINTED_FAILURES {
        println!("  ... and {} more", failures.len() - PRINTED_FAILURES);
    }
    if !args.check {
        return Ok(());
    }
    let problems = world.ledger.problems();
    for p in &problems {
        println!("  missed: {p}");
    }
    let failed = world
        .ledger
        .stats
        .failures
        .load(std::sync::atomic::Ordering::Relaxed);
    let created = world
        .ledger
        .stats
        .created
        .load(std::sync::atomic::Ordering::Relaxed);
    if created == 0 {
        bail!("--check: no booking was made, so nothing was checked (a longer --duration?)");
    }
    if !problems.is_empty() || failed > 0 {
        bail!(
            "--check: {} problems in riders' frames, {failed} unexpected failures",
            problems.len()
        );
    }
    println!(
        "check passed: every rider saw its bookings' transitions in order, and no call failed unexpectedly"
    );
    Ok(())
}
