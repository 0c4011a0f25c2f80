//! The edge's attachments to core-svc: every app of an edge is served over one
//! `Attach` stream (here `--attachments 1`, through a relay that counts the edge's
//! connections and can cut them), and neither a broken stream nor a core-svc
//! restart shows in any app's frames.

use crate::support::edge::{Edge, Ws, spawn_edge};
use crate::support::proxy::spawn_proxy;
use crate::support::*;
use futures::future::join_all;
use logi::auth::Role;
use serde_json::{Value, json};

const RIDERS: u32 = 50;
/// Apps per rider: two of each dialect.
const APPS: usize = 4;

fn rider_id(i: u32) -> String {
    (101 + i).to_string()
}

fn driver_id(i: u32) -> String {
    (501 + i).to_string()
}

fn dialect_of(app: usize) -> &'static str {
    if app.is_multiple_of(2) {
        "/regular_user/ws/bookings/"
    } else {
        "/ws"
    }
}

/// Every rider's apps, by rider: `APPS` each, alternating dialects.
async fn connect_riders(edge: &Edge) -> Vec<Vec<Ws>> {
    let mut riders = Vec::new();
    for i in 0..RIDERS {
        let token = token(Role::User, &rider_id(i));
        let mut apps = Vec::new();
        for app in 0..APPS {
            apps.push(edge.connect(dialect_of(app), &token).await);
        }
        riders.push(apps);
    }
    riders
}

/// The status frame of booking `id` in the dialect of `app`.
fn status(app: usize, rider: &str, id: u64, channels: &str, logi: &str) -> Value {
    if app.is_multiple_of(2) {
        json!({"type": "booking_status_update", "message": {
            "status": channels, "booking_id": id, "pickup_location": "123 Main St",
            "phone_number": "+1234567890", "dropoff_location": "456 Elm St"}})
    } else {
        json!({"user_id": rider, "type": "status_update",
               "payload": {"booking_id": id.to_string(), "status": logi}})
    }
}

/// The frame of booking `id` cancelled by its rider, in the dialect of `app`.
fn cancelled(app: usize, rider: &str, id: u64) -> Value {
    if app.is_multiple_of(2) {
        json!({"type": "booking_status_update", "message": {
            "status": "cancelled", "booking_id": id,
            "message": "Booking has been cancelled by the user."}})
    } else {
        status(app, rider, id, "", "Cancelled")
    }
}

/// Nothing more arrives on any app.
async fn all_quiet(riders: &mut [Vec<Ws>]) {
    join_all(riders.iter_mut().flatten().map(Ws::assert_quiet)).await;
}

async fn two_hundred_apps_on_fifty_topics_share_one_attachment(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let relay = spawn_proxy(core.addr).await;
    let edge = spawn_edge(relay.addr, &["--attachments", "1"]).await;
    let mut service = core.as_(Role::Service, "backend").await;
    let mut riders = connect_riders(&edge).await;

    let mut ids = Vec::new();
    for i in 0..RIDERS {
        ids.push(service.book(&rider_id(i), "car").await.unwrap().id);
    }
    for (i, id) in ids.iter().enumerate() {
        service.cancel(*id, "changed plans").await.unwrap();
        let rider = rider_id(i as u32);
        for (app, ws) in riders[i].iter_mut().enumerate() {
            assert_eq!(
                ws.take(2).await,
                [
                    status(app, &rider, *id, "pending", "Pending"),
                    cancelled(app, &rider, *id),
                ],
                "rider {rider}, app {app}"
            );
        }
    }
    all_quiet(&mut riders).await;
    assert_eq!(
        relay.connections(),
        1,
        "one connection to core-svc carried all 200 apps"
    );
    edge.stop().await;
    core.stop().await;
}

/// For each of the first `n` riders, its booking, accepted by driver i.
async fn trips(service: &mut Client, n: u32) -> Vec<u64> {
    let mut ids = Vec::new();
    for i in 0..n {
        service
            .driver_online(&driver_id(i), "car", PICKUP.0, PICKUP.1)
            .await;
        let id = service.book(&rider_id(i), "car").await.unwrap().id;
        service.accept(id, driver_id(i)).await.unwrap();
        ids.push(id);
    }
    ids
}

/// Each app's snapshot of an accepted booking.
async fn snapshots(riders: &mut [Vec<Ws>]) {
    for apps in riders {
        for (app, ws) in apps.iter_mut().enumerate() {
            let types: Vec<Value> = if app.is_multiple_of(2) {
                ws.take(2).await
            } else {
                ws.take(3).await
            }
            .into_iter()
            .map(|f| f["type"].clone())
            .collect();
            let expected = if app.is_multiple_of(2) {
                json!(["booking_status_update", "send_otp_update"])
            } else {
                json!(["booking_accepted", "status_update", "booking_otp"])
            };
            assert_eq!(Value::from(types), expected);
        }
    }
}

async fn a_core_restart_mid_trip_shows_in_no_app_of_two_hundred(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let addr = core.addr;
    let edge = spawn_edge(addr, &["--attachments", "1"]).await;
    let mut service = core.as_(Role::Service, "backend").await;
    let ids = trips(&mut service, RIDERS).await;
    let mut riders = connect_riders(&edge).await;
    snapshots(&mut riders).await;

    core.stop().await;
    let core = spawn_core_on(&addr.to_string(), &db, &[]).await;
    let mut service = core.as_(Role::Service, "backend").await;
    for (i, id) in ids.iter().enumerate() {
        let otp = service.get(*id).await.unwrap().otp;
        service.verify(*id, driver_id(i as u32), otp).await.unwrap();
        service.complete(*id, driver_id(i as u32)).await.unwrap();
    }
    for (i, id) in ids.iter().enumerate() {
        let rider = rider_id(i as u32);
        for (app, ws) in riders[i].iter_mut().enumerate() {
            let frames = ws.take(2).await;
            let statuses: Vec<&Value> = frames
                .iter()
                .map(|f| {
                    assert_eq!(f["type"], status(app, &rider, *id, "", "")["type"]);
                    if app.is_multiple_of(2) {
                        assert_eq!(f["message"]["booking_id"], *id);
                        &f["message"]["status"]
                    } else {
                        assert_eq!(f["payload"]["booking_id"], id.to_string());
                        &f["payload"]["status"]
                    }
                })
                .collect();
            let expected = if app.is_multiple_of(2) {
                [json!("on_trip"), json!("completed")]
            } else {
                [json!("In Transit"), json!("Completed")]
            };
            assert_eq!(
                statuses,
                expected.iter().collect::<Vec<_>>(),
                "rider {rider}, app {app}"
            );
        }
    }
    all_quiet(&mut riders).await;
    edge.stop().await;
    core.stop().await;
}

async fn a_broken_attachment_is_attached_again_unseen_by_the_apps(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let relay = spawn_proxy(core.addr).await;
    let edge = spawn_edge(relay.addr, &["--attachments", "1"]).await;
    let mut service = core.as_(Role::Service, "backend").await;
    service.driver_online("45", "car", PICKUP.0, PICKUP.1).await;
    let id = service.book("12", "car").await.unwrap().id;
    service.accept(id, "45").await.unwrap();
    let mut rider = edge
        .connect("/regular_user/ws/bookings/", &token(Role::User, "12"))
        .await;
    assert_eq!(rider.take(2).await[1]["type"], "send_otp_update");

    // The stream breaks; what is committed meanwhile comes after it is back.
    relay.cut();
    let otp = service.get(id).await.unwrap().otp;
    service.verify(id, "45", otp).await.unwrap();
    assert_eq!(rider.next().await["message"]["status"], "on_trip");
    // Positions flow again on the new stream.
    service.move_driver("45", 37.78, -122.41).await.unwrap();
    assert_eq!(
        rider.next().await,
        json!({"type": "location_update", "driver_id": 45, "current_latitude": "37.78",
               "current_longitude": "-122.41", "status": "on_trip"})
    );
    relay.cut();
    service.complete(id, "45").await.unwrap();
    assert_eq!(rider.next().await["message"]["status"], "completed");
    rider.assert_quiet().await;
    assert!(relay.connections() >= 3, "attached again after each cut");
    edge.stop().await;
    core.stop().await;
}

async fn drivers_positions_go_up_the_same_connection(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let relay = spawn_proxy(core.addr).await;
    let edge = spawn_edge(relay.addr, &["--attachments", "1"]).await;
    let mut service = core.as_(Role::Service, "backend").await;
    const TRIPS: u32 = 20;
    trips(&mut service, TRIPS).await;
    let mut riders = Vec::new();
    let mut drivers = Vec::new();
    for i in 0..TRIPS {
        let mut rider = edge
            .connect(
                "/regular_user/ws/bookings/",
                &token(Role::User, &rider_id(i)),
            )
            .await;
        rider.take(2).await; // the snapshot: accepted, and the OTP
        riders.push(rider);
        let mut driver = edge
            .connect("/driver/ws/bookings/", &token(Role::Driver, &driver_id(i)))
            .await;
        driver.next().await; // the snapshot: its accepted booking
        drivers.push(driver);
    }
    for (i, driver) in drivers.iter_mut().enumerate() {
        let lat = 37.0 + i as f64 / 1000.0;
        driver
            .send(&json!({"type": "location_update", "current_latitude": lat, "current_longitude": -122.4}).to_string())
            .await;
    }
    for (i, rider) in riders.iter_mut().enumerate() {
        let lat = 37.0 + i as f64 / 1000.0;
        assert_eq!(
            rider.next().await,
            json!({"type": "location_update", "driver_id": 501 + i, "current_latitude": lat.to_string(),
                   "current_longitude": "-122.4", "status": "accepted"})
        );
    }
    assert_eq!(
        relay.connections(),
        1,
        "positions went up the attachment's connection, not a call each"
    );
    edge.stop().await;
    core.stop().await;
}

crate::on_every_store!(
    two_hundred_apps_on_fifty_topics_share_one_attachment,
    a_core_restart_mid_trip_shows_in_no_app_of_two_hundred,
    a_broken_attachment_is_attached_again_unseen_by_the_apps,
    drivers_positions_go_up_the_same_connection,
);
