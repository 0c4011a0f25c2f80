//! The booking lifecycle through core-svc's real gRPC API, with the events every
//! topic receives.

use crate::support::*;
use logi::auth::Role;
use logi::pb;
use tonic::Code;

async fn a_whole_trip_as_rider_driver_and_admin_see_it(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let mut rider = core.as_(Role::User, "12").await;
    let mut driver = core.as_(Role::Driver, "45").await;
    let mut admin = core.as_(Role::Admin, "ops").await;

    let mut rider_events = rider.subscribe(&["user_12_bookings"]).await;
    let mut driver_events = driver
        .subscribe(&["driver_45_available_bookings", "driver_45_bookings"])
        .await;
    let mut admin_events = admin.subscribe(&["admins"]).await;

    driver
        .driver_online("45", "car", PICKUP.0 + 0.001, PICKUP.1)
        .await;
    assert_eq!(
        admin_events.take(1).await,
        ["admins driver_status 45 available"]
    );

    let booking = rider.book("12", "car").await.unwrap();
    let id = booking.id;
    assert_eq!(booking.status, pb::BookingStatus::Pending as i32);
    assert_eq!(booking.user_id, "12");
    assert!(
        booking.price_estimate > 2.5,
        "base fare plus distance: {}",
        booking.price_estimate
    );
    assert_eq!(
        rider_events.take(1).await,
        [format!(
            "user_12_bookings booking_changed #{id} unspecified->pending"
        )]
    );
    assert_eq!(
        admin_events.take(1).await,
        [format!("admins booking_changed #{id} unspecified->pending")]
    );
    let offer = driver_events.next().await;
    assert_eq!(
        summary(&offer),
        format!("driver_45_available_bookings booking_offered #{id}")
    );
    let pb::event::Kind::BookingOffered(o) = offer.kind.unwrap() else {
        unreachable!()
    };
    assert!(
        (o.distance_m - 111.0).abs() < 2.0,
        "driver is ~111 m from the pickup: {}",
        o.distance_m
    );
    assert_eq!(o.booking.unwrap().pickup.unwrap().address, "123 Main St");

    let accepted = driver.accept(id, "45").await.unwrap();
    assert_eq!(
        (accepted.status, accepted.driver_id.as_str()),
        (pb::BookingStatus::Accepted as i32, "45")
    );
    assert_eq!(accepted.otp, "", "the driver never sees the OTP");
    assert_eq!(
        rider_events.take(2).await,
        [
            format!("user_12_bookings booking_changed #{id} pending->accepted"),
            format!("user_12_bookings otp_issued #{id}")
        ]
    );
    assert_eq!(
        driver_events.take(2).await,
        [
            format!("driver_45_bookings booking_changed #{id} pending->accepted"),
            format!("driver_45_available_bookings offer_closed #{id} accepted")
        ]
    );
    assert_eq!(
        admin_events.take(2).await,
        [
            format!("admins booking_changed #{id} pending->accepted"),
            "admins driver_status 45 on_trip".to_string()
        ]
    );

    // The rider reads the OTP from GetBooking as well as from its topic.
    let otp = rider.get(id).await.unwrap().otp;
    assert_eq!(otp.len(), 6);

    // While the trip is accepted and on trip, the driver's positions reach the rider.
    assert_eq!(
        driver.move_driver("45", 37.7950, -122.3940).await.unwrap(),
        id
    );
    assert_eq!(
        rider_events.take(1).await,
        [format!(
            "user_12_bookings driver_location #{id} accepted 37.795,-122.394"
        )]
    );

    let wrong = if otp == "000000" { "111111" } else { "000000" };
    let err = driver
        .bookings
        .verify_otp(pb::VerifyOtpRequest {
            booking_id: id,
            driver_id: "45".into(),
            otp: wrong.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (
            Code::InvalidArgument,
            format!("wrong OTP for booking {id}: 4 tries left").as_str()
        )
    );
    let started = driver
        .bookings
        .verify_otp(pb::VerifyOtpRequest {
            booking_id: id,
            driver_id: "45".into(),
            otp,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(started.status, pb::BookingStatus::OnTrip as i32);
    assert!(started.pickup_time.is_some());
    assert_eq!(
        rider_events.take(1).await,
        [format!(
            "user_12_bookings booking_changed #{id} accepted->on_trip"
        )]
    );
    assert_eq!(
        driver_events.take(1).await,
        [format!(
            "driver_45_bookings booking_changed #{id} accepted->on_trip"
        )]
    );
    assert_eq!(
        admin_events.take(1).await,
        [format!("admins booking_changed #{id} accepted->on_trip")]
    );

    driver.move_driver("45", 37.7900, -122.4000).await.unwrap();
    assert_eq!(
        rider_events.take(1).await,
        [format!(
            "user_12_bookings driver_location #{id} on_trip 37.79,-122.4"
        )]
    );

    let done = driver.complete(id, "45").await.unwrap();
    assert_eq!(done.status, pb::BookingStatus::Completed as i32);
    assert!(done.dropoff_time.is_some());
    assert_eq!(
        rider_events.take(1).await,
        [format!(
            "user_12_bookings booking_changed #{id} on_trip->completed"
        )]
    );
    assert_eq!(
        driver_events.take(1).await,
        [format!(
            "driver_45_bookings booking_changed #{id} on_trip->completed"
        )]
    );
    assert_eq!(
        admin_events.take(2).await,
        [
            format!("admins booking_changed #{id} on_trip->completed"),
            "admins driver_status 45 available".to_string()
        ]
    );

    // After the trip, positions no longer go to the rider.
    assert_eq!(
        driver.move_driver("45", 37.7800, -122.4100).await.unwrap(),
        0
    );
    rider_events.assert_quiet().await;
    driver_events.assert_quiet().await;
    admin_events.assert_quiet().await;

    // Shutdown ends open streams cleanly with UNAVAILABLE.
    core.stop().await;
    assert_eq!(rider_events.end().await.code(), Code::Unavailable);
}

async fn cancels_by_the_rider_and_by_the_driver(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let mut rider = core.as_(Role::User, "12").await;
    let mut driver = core.as_(Role::Driver, "45").await;
    let mut rider_events = rider.subscribe(&["user_12_bookings"]).await;
    let mut driver_events = driver
        .subscribe(&["driver_45_available_bookings", "driver_45_bookings"])
        .await;
    driver.driver_online("45", "car", PICKUP.0, PICKUP.1).await;

    // The rider cancels a pending booking: the offered driver hears the offer is gone.
    let first = rider.book("12", "car").await.unwrap().id;
    let cancel = pb::CancelBookingRequest {
        booking_id: first,
        cancelled_by: pb::Canceller::User as i32,
        reason: "plans changed".into(),
    };
    let cancelled = rider
        .bookings
        .cancel_booking(cancel)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.status, pb::BookingStatus::Cancelled as i32);
    assert_eq!(
        (cancelled.cancelled_by, cancelled.cancel_reason.as_str()),
        (pb::Canceller::User as i32, "plans changed")
    );
    assert_eq!(
        rider_events.take(2).await,
        [
            format!("user_12_bookings booking_changed #{first} unspecified->pending"),
            format!("user_12_bookings booking_changed #{first} pending->cancelled")
        ]
    );
    assert_eq!(
        driver_events.take(2).await,
        [
            format!("driver_45_available_bookings booking_offered #{first}"),
            format!("driver_45_available_bookings offer_closed #{first} cancelled")
        ]
    );

    // The driver cancels one it accepted: the rider hears it and the driver is free again.
    let second = rider.book("12", "car").await.unwrap().id;
    driver.accept(second, String::new()).await.unwrap();
    rider_events.take(3).await;
    driver_events.take(3).await;
    let cancel = pb::CancelBookingRequest {
        booking_id: second,
        cancelled_by: pb::Canceller::Driver as i32,
        reason: "flat tyre".into(),
    };
    let cancelled = driver
        .bookings
        .cancel_booking(cancel)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.cancelled_by, pb::Canceller::Driver as i32);
    let seen = rider_events.next().await;
    let pb::event::Kind::BookingChanged(c) = seen.kind.unwrap() else {
        panic!()
    };
    let b = c.booking.unwrap();
    assert_eq!(
        (b.status, b.cancelled_by, b.cancel_reason.as_str()),
        (
            pb::BookingStatus::Cancelled as i32,
            pb::Canceller::Driver as i32,
            "flat tyre"
        )
    );
    assert_eq!(
        driver_events.take(1).await,
        [format!(
            "driver_45_bookings booking_changed #{second} accepted->cancelled"
        )]
    );

    // Free again: the next booking is offered to the same driver.
    let third = rider.book("12", "car").await.unwrap().id;
    assert_eq!(
        driver_events.take(1).await,
        [format!(
            "driver_45_available_bookings booking_offered #{third}"
        )]
    );

    // A trip in progress cannot be cancelled.
    driver.accept(third, "45").await.unwrap();
    let otp = rider.get(third).await.unwrap().otp;
    driver
        .bookings
        .verify_otp(pb::VerifyOtpRequest {
            booking_id: third,
            driver_id: "45".into(),
            otp,
        })
        .await
        .unwrap();
    let cancel = pb::CancelBookingRequest {
        booking_id: third,
        cancelled_by: pb::Canceller::User as i32,
        reason: String::new(),
    };
    let err = rider.bookings.cancel_booking(cancel).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        err.message(),
        format!(
            "booking {third} is on_trip: a trip in progress cannot be cancelled, only completed"
        )
    );
    core.stop().await;
}

crate::on_every_store!(
    a_whole_trip_as_rider_driver_and_admin_see_it,
    cancels_by_the_rider_and_by_the_driver,
);
