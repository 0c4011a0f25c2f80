//! One edge, two core-svc replicas on one database (`--core-url a,b`): when the
//! replica the edge's streams are on stops or is cut off, they move to the other
//! and resume from their cursors, and no app sees it.
//!
//! These core-svc replicas run without NATS, so the one the edge moved to does not
//! hear what the other committed live: the changes after the failover are made
//! through it (anything committed elsewhere would still come, replayed from the
//! shared database on the next attach).

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::edge::{Edge, Ws, spawn_edge_on};
use crate::support::proxy::spawn_proxy;
use crate::support::*;
use logi::auth::Role;
use logi::pb;
use serde_json::{Value, json};
use ws_edge::dialect::channels_time;

const CHANNELS: &str = "/regular_user/ws/bookings/";
const LOGI: &str = "/ws";
const DRIVER: &str = "/driver/ws/bookings/";

/// How the replica the edge is on goes away.
#[derive(Clone, Copy, Debug)]
enum Failure {
    /// core-svc shuts down.
    Stop,
    /// The network path to it breaks and stays broken (new connections fail
    /// too); it carries on for others.
    Cut,
}

/// The frame without its cursor (a recover-mode app's durable frames carry one).
fn uncursored(mut frame: Value) -> Value {
    let durable = frame["type"] != "location_update";
    let cursor = frame.as_object_mut().and_then(|f| f.remove("cursor"));
    assert_eq!(cursor.is_some(), durable, "cursor of {frame}");
    frame
}

/// The rider's frames from the trip's start on, in the channels dialect.
fn channels_frames(started: &pb::Booking, done: &pb::Booking) -> Vec<Value> {
    let id = started.id;
    let at = |lat: &str, lon: &str| {
        json!({"type": "location_update", "driver_id": 45, "current_latitude": lat,
               "current_longitude": lon, "status": "on_trip"})
    };
    vec![
        json!({"type": "booking_status_update", "message": {"status": "on_trip", "booking_id": id,
               "pickup_time": channels_time(started.pickup_time.as_ref()),
               "message": "OTP Verified. Trip has started."}}),
        at("37.78", "-122.41"),
        at("37.77", "-122.42"),
        json!({"type": "booking_status_update", "message": {"status": "completed", "booking_id": id,
               "dropoff_time": channels_time(done.dropoff_time.as_ref())}}),
    ]
}

/// The same in the logi dialect.
fn logi_frames(id: u64) -> Vec<Value> {
    let frame =
        |kind: &str, payload: Value| json!({"user_id": "12", "type": kind, "payload": payload});
    let at = |lat: f64, lon: f64| {
        frame(
            "driver_location",
            json!({"booking_id": id.to_string(), "latitude": lat, "longitude": lon}),
        )
    };
    vec![
        frame(
            "status_update",
            json!({"booking_id": id.to_string(), "status": "In Transit"}),
        ),
        at(37.78, -122.41),
        at(37.77, -122.42),
        frame(
            "status_update",
            json!({"booking_id": id.to_string(), "status": "Completed"}),
        ),
    ]
}

/// The rider's apps: channels, logi, and channels in recover mode (a Subscribe
/// feed of its own rather than the attachment).
struct Rider {
    channels: Ws,
    logi: Ws,
    recovering: Ws,
}

impl Rider {
    async fn connect(edge: &Edge) -> Self {
        let token = token(Role::User, "12");
        Self {
            channels: edge.connect(CHANNELS, &token).await,
            logi: edge.connect(LOGI, &token).await,
            recovering: edge.connect_with(CHANNELS, &token, "&recover=1").await,
        }
    }

    /// The next frame of each app, the recover-mode one without its cursor.
    async fn next(&mut self) -> [Value; 3] {
        [
            self.channels.next().await,
            self.logi.next().await,
            uncursored(self.recovering.next().await),
        ]
    }

    async fn assert_quiet(&mut self) {
        self.channels.assert_quiet().await;
        self.logi.assert_quiet().await;
        self.recovering.assert_quiet().await;
    }
}

async fn the_replica_going_away_mid_trip(db: Db, failure: Failure) {
    let a = spawn_core(&db, &[]).await;
    let b = spawn_core(&db, &[]).await;
    let (to_a, to_b) = (spawn_proxy(a.addr).await, spawn_proxy(b.addr).await);
    // One attachment: it starts on the first replica, A.
    let edge = spawn_edge_on(&[to_a.addr, to_b.addr], &["--attachments", "1"]).await;
    let mut service = a.as_(Role::Service, "backend").await;
    service.driver_online("45", "car", PICKUP.0, PICKUP.1).await;
    let id = service.book("12", "car").await.unwrap().id;
    service.accept(id, "45").await.unwrap();
    let mut rider = Rider::connect(&edge).await;
    let [channels, logi, recovering] = [
        rider.channels.take(2).await,
        rider.logi.take(3).await,
        rider.recovering.take(2).await,
    ];
    assert_eq!(channels[1]["type"], "send_otp_update");
    assert_eq!(logi[2]["type"], "booking_otp");
    assert_eq!(uncursored(recovering[1].clone()), channels[1]);
    let mut driver = edge.connect(DRIVER, &token(Role::Driver, "45")).await;
    assert_eq!(driver.next().await["message"]["status"], "accepted");
    assert_eq!(
        (to_a.connections() > 0, to_b.connections()),
        (true, 0),
        "everything started on A"
    );

    let otp = service.get(id).await.unwrap().otp;
    drop(service);
    let a = match failure {
        Failure::Stop => {
            a.stop().await;
            None
        }
        Failure::Cut => {
            to_a.down();
            Some(a)
        }
    };

    // The rest of the trip goes through B.
    let mut service = b.as_(Role::Service, "backend").await;
    let started = service.verify(id, "45", otp).await.unwrap();
    let mut seen = vec![rider.next().await];
    service.move_driver("45", 37.78, -122.41).await.unwrap();
    seen.push(rider.next().await);
    // The driver's own position goes up its relay, which moved to B too.
    driver
        .send(r#"{"type": "location_update", "current_latitude": "37.77", "current_longitude": "-122.42"}"#)
        .await;
    seen.push(rider.next().await);
    let done = service.complete(id, "45").await.unwrap();
    seen.push(rider.next().await);

    // Every app got every frame once, in order, and is still open.
    let channels = channels_frames(&started, &done);
    let logi = logi_frames(id);
    for (i, [c, l, r]) in seen.into_iter().enumerate() {
        assert_eq!(c, channels[i], "channels app, frame {i}");
        assert_eq!(l, logi[i], "logi app, frame {i}");
        assert_eq!(r, channels[i], "recover-mode app, frame {i}");
    }
    rider.assert_quiet().await;
    assert!(to_b.connections() > 0, "the edge moved to B");
    edge.stop().await;
    if let Some(a) = a {
        a.stop().await;
    }
    b.stop().await;
}

async fn a_stopped_replica_goes_unnoticed_by_the_apps(db: Db) {
    the_replica_going_away_mid_trip(db, Failure::Stop).await;
}

async fn a_replica_cut_off_goes_unnoticed_by_the_apps(db: Db) {
    the_replica_going_away_mid_trip(db, Failure::Cut).await;
}

/// Waits until `/readyz` answers `status`.
async fn ready_becomes(edge: &Edge, status: u16) {
    let waited = tokio::time::timeout(PATIENCE, async {
        while edge.get("/readyz").await.0 != status {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "/readyz did not become {status}");
}

async fn ready_while_one_replica_answers(db: Db) {
    let a = spawn_core(&db, &[]).await;
    let b = spawn_core(&db, &[]).await;
    let a_addr: SocketAddr = a.addr;
    let edge = spawn_edge_on(&[a.addr, b.addr], &[]).await;
    ready_becomes(&edge, 200).await;

    // A goes: apps still connect, a recover-mode one (its own Subscribe, tried
    // on A first) too.
    a.stop().await;
    let rider = token(Role::User, "12");
    for query in ["", "&recover=1"] {
        edge.connect_with(CHANNELS, &rider, query)
            .await
            .close()
            .await;
    }
    ready_becomes(&edge, 200).await;

    // No replica answers: not ready, and apps are refused.
    b.stop().await;
    ready_becomes(&edge, 503).await;
    assert_eq!(
        edge.get("/readyz").await,
        (503, "core-svc is not reachable\n".into())
    );
    assert_eq!(edge.refused(&edge.url(CHANNELS, &rider)).await.0, 503);

    // One comes back: ready again, and apps are served.
    let a = spawn_core_on(&a_addr.to_string(), &db, &[]).await;
    ready_becomes(&edge, 200).await;
    assert_eq!(edge.get("/readyz").await, (200, "ready\n".into()));
    edge.connect(LOGI, &rider).await.close().await;
    edge.stop().await;
    a.stop().await;
}

async fn the_attachments_are_spread_over_the_replicas(db: Db) {
    let a = spawn_core(&db, &[]).await;
    let b = spawn_core(&db, &[]).await;
    let (to_a, to_b) = (spawn_proxy(a.addr).await, spawn_proxy(b.addr).await);
    let edge = spawn_edge_on(&[to_a.addr, to_b.addr], &["--attachments", "4"]).await;
    ready_becomes(&edge, 200).await;
    // Two attachments on each, a connection each, and maybe the health checks'
    // (the first replica to answer SERVING settles it, the other may be dropped).
    for (replica, proxy) in [("A", &to_a), ("B", &to_b)] {
        let n = proxy.connections();
        assert!((2..=3).contains(&n), "{n} connections to {replica}");
    }
    edge.stop().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_bad_entry_in_the_list_is_named_in_one_line() {
    let config = <ws_edge::Config as clap::Parser>::try_parse_from([
        "ws-edge",
        "--core-url",
        "http://127.0.0.1:50051,127.0.0.1:50052",
        "--jwt-secret",
        SECRET,
    ])
    .unwrap();
    let listener = ws_edge::server::bind("127.0.0.1:0".parse().unwrap(), false, None).unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let refused = ws_edge::run(config, listener, shutdown).await.unwrap_err();
    assert_eq!(
        refused.to_string(),
        r#"LOGI_CORE_URL "127.0.0.1:50052" must start with http:// or https://"#
    );
}

crate::on_every_store!(
    a_stopped_replica_goes_unnoticed_by_the_apps,
    a_replica_cut_off_goes_unnoticed_by_the_apps,
    ready_while_one_replica_answers,
    the_attachments_are_spread_over_the_replicas,
);
