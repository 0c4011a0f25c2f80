//! A driver's GPS through its socket: a burst of positions is folded into the
//! latest (one call to core-svc in flight at a time), the driver's own frames still
//! come, and a refused position still gets its error frame.

use crate::support::edge::spawn_edge;
use crate::support::*;
use logi::auth::Role;
use serde_json::{Value, json};

fn position(lat: f64) -> String {
    json!({"type": "location_update", "current_latitude": lat.to_string(), "current_longitude": "-122.4194"})
        .to_string()
}

async fn a_burst_of_positions_is_folded_into_the_latest(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let edge = spawn_edge(core.addr, &[]).await;
    let mut service = core.as_(Role::Service, "backend").await;
    service.driver_online("45", "car", PICKUP.0, PICKUP.1).await;
    let trip = service.book("12", "car").await.unwrap().id;
    service.accept(trip, "45").await.unwrap();
    let mut rider = edge
        .connect("/regular_user/ws/bookings/", &token(Role::User, "12"))
        .await;
    rider.take(2).await; // the snapshot: accepted, and the OTP
    let mut driver = edge
        .connect("/driver/ws/available_bookings/", &token(Role::Driver, "45"))
        .await;
    driver.next().await; // the snapshot: its accepted booking

    let sent = 300;
    let last = (37.0 + f64::from(sent) / 1000.0).to_string();
    for i in 1..=sent {
        driver.send(&position(37.0 + f64::from(i) / 1000.0)).await;
    }
    // The rider's positions end at the last one sent, with fewer calls than pings.
    let mut received = 0;
    loop {
        let frame: Value = rider.next().await;
        assert_eq!(frame["type"], "location_update", "{frame}");
        received += 1;
        if frame["current_latitude"].as_str() == Some(last.as_str()) {
            break;
        }
    }
    assert!(
        received < sent,
        "{received} of {sent} positions were sent on one by one"
    );
    rider.assert_quiet().await;
    // The driver's own frames still come.
    service.complete(trip, "45").await.unwrap_err(); // not started: refused, no frame
    let cancel = logi::pb::CancelBookingRequest {
        booking_id: trip,
        cancelled_by: logi::pb::Canceller::User as i32,
        reason: String::new(),
    };
    service.bookings.cancel_booking(cancel).await.unwrap();
    assert_eq!(driver.next().await["message"]["status"], "cancelled");
    edge.stop().await;
    core.stop().await;
}

async fn a_refused_position_still_gets_its_error_frame(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let edge = spawn_edge(core.addr, &[]).await;
    // Never registered with SetDriverStatus.
    let mut driver = edge
        .connect("/driver/ws/bookings/", &token(Role::Driver, "99"))
        .await;
    driver.send(&position(37.0)).await;
    assert_eq!(
        driver.next().await,
        json!({"type": "error", "message": "location_update refused: driver 99 is not registered: call SetDriverStatus first"})
    );
    driver.send(&position(37.1)).await;
    driver.send(&position(37.2)).await;
    let errors: Vec<Value> = driver.take(1).await;
    assert_eq!(errors[0]["type"], "error");
    edge.stop().await;
    core.stop().await;
}

crate::on_every_store!(
    a_burst_of_positions_is_folded_into_the_latest,
    a_refused_position_still_gets_its_error_frame,
);
