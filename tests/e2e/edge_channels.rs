//! A whole trip and the cancel paths through ws-edge in the channels dialect, with
//! real WebSocket clients: the exact frames of `spec/channels-dialect.md`.

use crate::support::edge::spawn_edge;
use crate::support::*;
use logi::auth::Role;
use logi::pb;
use serde_json::json;

fn at(t: Option<prost_types::Timestamp>) -> String {
    let secs = t.unwrap().seconds;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

async fn a_whole_trip_in_channels_frames(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let edge = spawn_edge(core.addr, &[]).await;
    let mut service = core.as_(Role::Service, "backend").await;
    service
        .driver_online("45", "car", PICKUP.0 + 0.001, PICKUP.1)
        .await;

    let mut rider = edge
        .connect("/regular_user/ws/bookings/", &token(Role::User, "12"))
        .await;
    let mut available = edge
        .connect("/driver/ws/available_bookings/", &token(Role::Driver, "45"))
        .await;
    let mut confirmed = edge
        .connect("/driver/ws/bookings/", &token(Role::Driver, "45"))
        .await;

    let booking = service.book("12", "car").await.unwrap();
    let id = booking.id;
    assert_eq!(
        rider.next().await,
        json!({"type": "booking_status_update", "message": {
            "status": "pending", "booking_id": id, "pickup_location": "123 Main St",
            "phone_number": "+1234567890", "dropoff_location": "456 Elm St"}})
    );
    assert_eq!(
        available.next().await,
        json!({"type": "available_booking_update", "message": {
            "status": "pending", "booking_id": id, "pickup_location": "123 Main St",
            "phone_number": "+1234567890", "dropoff_location": "456 Elm St"}})
    );

    service.accept(id, "45").await.unwrap();
    let otp = service.get(id).await.unwrap().otp;
    let accepted = json!({"status": "accepted", "booking_id": id, "pickup_location": "123 Main St",
        "phone_number": "+1234567890", "dropoff_location": "456 Elm St"});
    assert_eq!(
        rider.take(2).await,
        [
            json!({"type": "booking_status_update", "message": accepted}),
            json!({"type": "send_otp_update", "otp": otp, "booking_id": id}),
        ]
    );
    assert_eq!(
        available.next().await,
        json!({"type": "available_booking_update", "message": accepted})
    );
    assert_eq!(
        confirmed.next().await,
        json!({"type": "booking_status_update", "message": accepted})
    );

    // The driver's position, pushed up its own socket, reaches the rider.
    available.send(r#"{"type": "location_update", "current_latitude": "37.7749", "current_longitude": "-122.4194"}"#).await;
    assert_eq!(
        rider.next().await,
        json!({"type": "location_update", "driver_id": 45, "current_latitude": "37.7749",
               "current_longitude": "-122.4194", "status": "accepted"})
    );

    let started = service
        .bookings
        .verify_otp(pb::VerifyOtpRequest {
            booking_id: id,
            driver_id: "45".into(),
            otp,
        })
        .await
        .unwrap()
        .into_inner();
    let pickup_time = at(started.pickup_time);
    assert_eq!(
        rider.next().await,
        json!({"type": "booking_status_update", "message": {"status": "on_trip", "booking_id": id,
               "pickup_time": pickup_time, "message": "OTP Verified. Trip has started."}})
    );
    assert_eq!(
        available.next().await,
        json!({"type": "available_booking_update", "message": {"status": "on_trip", "booking_id": id, "pickup_time": pickup_time}})
    );
    assert_eq!(
        confirmed.next().await,
        json!({"type": "booking_status_update", "message": {"status": "on_trip", "booking_id": id,
               "pickup_time": pickup_time, "message": "OTP Verified. Trip has started."}})
    );

    confirmed.send(r#"{"type": "location_update", "current_latitude": 37.78, "current_longitude": -122.41}"#).await;
    assert_eq!(
        rider.next().await,
        json!({"type": "location_update", "driver_id": 45, "current_latitude": "37.78",
               "current_longitude": "-122.41", "status": "on_trip"})
    );

    let done = service.complete(id, "45").await.unwrap();
    let completed =
        json!({"status": "completed", "booking_id": id, "dropoff_time": at(done.dropoff_time)});
    assert_eq!(
        rider.next().await,
        json!({"type": "booking_status_update", "message": completed})
    );
    assert_eq!(
        available.next().await,
        json!({"type": "available_booking_update", "message": completed})
    );
    assert_eq!(
        confirmed.next().await,
        json!({"type": "booking_status_update", "message": completed})
    );
    rider.assert_quiet().await;
    available.assert_quiet().await;
    edge.stop().await;
    core.stop().await;
}

async fn cancels_in_channels_frames(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let edge = spawn_edge(core.addr, &[]).await;
    let mut service = core.as_(Role::Service, "backend").await;
    service.driver_online("45", "car", PICKUP.0, PICKUP.1).await;
    service.driver_online("46", "car", PICKUP.0, PICKUP.1).await;
    let mut rider = edge
        .connect("/regular_user/ws/bookings/", &token(Role::User, "12"))
        .await;
    let mut first = edge
        .connect("/driver/ws/available_bookings/", &token(Role::Driver, "45"))
        .await;
    let mut second = edge
        .connect("/driver/ws/available_bookings/", &token(Role::Driver, "46"))
        .await;

    // The rider cancels a pending booking: both offered drivers are told.
    let id = service.book("12", "car").await.unwrap().id;
    rider.next().await;
    first.next().await;
    second.next().await;
    let cancel = pb::CancelBookingRequest {
        booking_id: id,
        cancelled_by: pb::Canceller::User as i32,
        reason: String::new(),
    };
    service.bookings.cancel_booking(cancel).await.unwrap();
    assert_eq!(
        rider.next().await,
        json!({"type": "booking_status_update", "message": {"status": "cancelled", "booking_id": id,
               "message": "Booking has been cancelled by the user."}})
    );
    let closed = json!({"type": "available_booking_closed", "message": {"booking_id": id, "reason": "cancelled"}});
    assert_eq!(first.next().await, closed);
    assert_eq!(second.next().await, closed);

    // One driver takes the next one; the other is told it was taken.
    let id = service.book("12", "car").await.unwrap().id;
    rider.next().await;
    first.next().await;
    second.next().await;
    service.accept(id, "45").await.unwrap();
    assert_eq!(
        second.next().await,
        json!({"type": "available_booking_closed", "message": {"booking_id": id, "reason": "taken"}})
    );
    assert_eq!(first.next().await["message"]["status"], "accepted");
    rider.take(2).await;

    // The driver cancels it: the rider reads the document's words.
    let cancel = pb::CancelBookingRequest {
        booking_id: id,
        cancelled_by: pb::Canceller::Driver as i32,
        reason: "flat tyre".into(),
    };
    service.bookings.cancel_booking(cancel).await.unwrap();
    assert_eq!(
        rider.next().await,
        json!({"type": "booking_status_update", "message": {"status": "cancelled", "booking_id": id,
               "message": "Booking has been cancelled by the driver."}})
    );
    assert_eq!(
        first.next().await,
        json!({"type": "available_booking_update", "message": {"status": "cancelled", "booking_id": id,
               "message": "Booking has been cancelled by the driver."}})
    );
    second.assert_quiet().await;
    edge.stop().await;
    core.stop().await;
}

crate::on_every_store!(a_whole_trip_in_channels_frames, cancels_in_channels_frames,);
