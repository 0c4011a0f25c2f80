//! A whole trip and a cancel through ws-edge in the logi dialect, seen by a rider,
//! a driver and an admin: the envelope of `spec/logi-dialect.txt`.

use crate::support::edge::spawn_edge;
use crate::support::*;
use logi::auth::Role;
use logi::pb;
use serde_json::json;

async fn a_whole_trip_and_a_cancel_in_logi_frames(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let edge = spawn_edge(core.addr, &[]).await;
    let mut service = core.as_(Role::Service, "backend").await;

    let mut admin = edge.connect("/ws", &token(Role::Admin, "ops")).await;
    service
        .driver_online("driver456", "car", PICKUP.0, PICKUP.1)
        .await;
    assert_eq!(
        admin.next().await,
        json!({"user_id": "", "type": "driver_status_update", "payload": {"driver_id": "driver456", "status": "Available"}})
    );
    let mut rider = edge.connect("/ws", &token(Role::User, "user123")).await;
    let mut driver = edge.connect("/ws", &token(Role::Driver, "driver456")).await;

    let booking = service.book("user123", "car").await.unwrap();
    let id = booking.id.to_string();
    assert_eq!(
        driver.next().await,
        json!({"user_id": "driver456", "type": "new_booking_request", "payload": {
            "booking_id": id, "user_id": "user123",
            "pickup_location": {"type": "Point", "coordinates": [PICKUP.1, PICKUP.0]},
            "dropoff_location": {"type": "Point", "coordinates": [-122.4193, 37.7793]},
            "vehicle_type": "car", "price_estimate": booking.price_estimate}})
    );
    let status = |s: &str| json!({"booking_id": id, "status": s});
    assert_eq!(
        rider.next().await,
        json!({"user_id": "user123", "type": "status_update", "payload": status("Pending")})
    );
    assert_eq!(
        admin.next().await,
        json!({"user_id": "", "type": "status_update", "payload": status("Pending")})
    );

    service.accept(booking.id, "driver456").await.unwrap();
    let otp = service.get(booking.id).await.unwrap().otp;
    assert_eq!(
        rider.take(3).await,
        [
            json!({"user_id": "user123", "type": "booking_accepted", "payload": {"booking_id": id, "driver_id": "driver456"}}),
            json!({"user_id": "user123", "type": "status_update", "payload": status("Accepted")}),
            json!({"user_id": "user123", "type": "booking_otp", "payload": {"booking_id": id, "otp": otp}}),
        ]
    );
    assert_eq!(
        driver.next().await,
        json!({"user_id": "driver456", "type": "status_update", "payload": status("Accepted")})
    );
    assert_eq!(
        admin.take(2).await,
        [
            json!({"user_id": "", "type": "status_update", "payload": status("Accepted")}),
            json!({"user_id": "", "type": "driver_status_update", "payload": {"driver_id": "driver456", "status": "On Trip"}}),
        ]
    );

    driver.send(r#"{"type": "driver_location", "payload": {"latitude": 37.7749, "longitude": -122.4194}}"#).await;
    assert_eq!(
        rider.next().await,
        json!({"user_id": "user123", "type": "driver_location", "payload": {"booking_id": id, "latitude": 37.7749, "longitude": -122.4194}})
    );

    service
        .bookings
        .verify_otp(pb::VerifyOtpRequest {
            booking_id: booking.id,
            driver_id: "driver456".into(),
            otp,
        })
        .await
        .unwrap();
    assert_eq!(
        rider.next().await,
        json!({"user_id": "user123", "type": "status_update", "payload": status("In Transit")})
    );
    assert_eq!(
        driver.next().await,
        json!({"user_id": "driver456", "type": "status_update", "payload": status("In Transit")})
    );
    assert_eq!(
        admin.next().await,
        json!({"user_id": "", "type": "status_update", "payload": status("In Transit")})
    );

    service.complete(booking.id, "driver456").await.unwrap();
    assert_eq!(
        rider.next().await,
        json!({"user_id": "user123", "type": "status_update", "payload": status("Completed")})
    );
    assert_eq!(
        driver.next().await,
        json!({"user_id": "driver456", "type": "status_update", "payload": status("Completed")})
    );
    assert_eq!(
        admin.take(2).await,
        [
            json!({"user_id": "", "type": "status_update", "payload": status("Completed")}),
            json!({"user_id": "", "type": "driver_status_update", "payload": {"driver_id": "driver456", "status": "Available"}}),
        ]
    );

    // A cancel by the rider: the offered driver is told the request is gone.
    service
        .move_driver("driver456", PICKUP.0, PICKUP.1)
        .await
        .unwrap();
    let second = service.book("user123", "car").await.unwrap().id;
    let sid = second.to_string();
    driver.next().await;
    rider.next().await;
    admin.next().await;
    let cancel = pb::CancelBookingRequest {
        booking_id: second,
        cancelled_by: pb::Canceller::User as i32,
        reason: String::new(),
    };
    service.bookings.cancel_booking(cancel).await.unwrap();
    let cancelled = json!({"booking_id": sid, "status": "Cancelled"});
    assert_eq!(
        rider.next().await,
        json!({"user_id": "user123", "type": "status_update", "payload": cancelled})
    );
    assert_eq!(
        admin.next().await,
        json!({"user_id": "", "type": "status_update", "payload": cancelled})
    );
    assert_eq!(
        driver.next().await,
        json!({"user_id": "driver456", "type": "booking_request_closed", "payload": {"booking_id": sid, "reason": "cancelled"}})
    );
    for ws in [&mut rider, &mut driver, &mut admin] {
        ws.assert_quiet().await;
    }
    edge.stop().await;
    core.stop().await;
}

async fn a_reconnecting_app_is_brought_up_to_date(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let edge = spawn_edge(core.addr, &[]).await;
    let mut service = core.as_(Role::Service, "backend").await;
    service.driver_online("45", "car", PICKUP.0, PICKUP.1).await;
    let id = service.book("12", "car").await.unwrap().id;
    service.accept(id, "45").await.unwrap();
    let otp = service.get(id).await.unwrap().otp;

    // Connecting after the fact, each app first gets the state of its bookings in progress.
    let mut rider = edge
        .connect("/regular_user/ws/bookings/", &token(Role::User, "12"))
        .await;
    assert_eq!(
        rider.take(2).await,
        [
            json!({"type": "booking_status_update", "message": {"status": "accepted", "booking_id": id,
                   "pickup_location": "123 Main St", "phone_number": "+1234567890", "dropoff_location": "456 Elm St"}}),
            json!({"type": "send_otp_update", "otp": otp, "booking_id": id}),
        ]
    );
    let mut driver = edge.connect("/ws", &token(Role::Driver, "45")).await;
    assert_eq!(
        driver.next().await,
        json!({"user_id": "45", "type": "status_update", "payload": {"booking_id": id.to_string(), "status": "Accepted"}})
    );
    // A driver never gets the OTP, even in a snapshot.
    driver.assert_quiet().await;
    rider.assert_quiet().await;
    edge.stop().await;
    core.stop().await;
}

crate::on_every_store!(
    a_whole_trip_and_a_cancel_in_logi_frames,
    a_reconnecting_app_is_brought_up_to_date,
);
