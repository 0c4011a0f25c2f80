//! First-wins accepts, the OTP limit, error codes and role rules, through core-svc's
//! real gRPC API.

fn denied<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> Code {
    r.unwrap_err().code()
}

use crate::support::*;
use logi::auth::Role;
use logi::pb;
use tonic::Code;

async fn of_fifty_concurrent_accepts_exactly_one_wins(db: Db) {
    let core = spawn_core(&db, &["--dispatch-drivers", "50"]).await;
    let mut service = core.as_(Role::Service, "dispatch").await;
    for i in 0..50 {
        service
            .driver_online(
                &format!("d{i}"),
                "car",
                PICKUP.0 + 0.0001 * i as f64,
                PICKUP.1,
            )
            .await;
    }
    let id = service.book("12", "car").await.unwrap().id;

    let mut attempts = Vec::new();
    for i in 0..50 {
        let mut driver = core.as_(Role::Driver, &format!("d{i}")).await;
        attempts.push(tokio::spawn(async move {
            driver
                .bookings
                .accept_booking(pb::AcceptBookingRequest {
                    booking_id: id,
                    driver_id: format!("d{i}"),
                })
                .await
        }));
    }
    let mut winners = Vec::new();
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(b) => winners.push(b.into_inner().driver_id),
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition);
                assert_eq!(
                    status.message(),
                    format!("booking {id} was already taken by another driver")
                );
            }
        }
    }
    assert_eq!(winners.len(), 1, "exactly one accept succeeds");
    let booking = service.get(id).await.unwrap();
    assert_eq!(booking.driver_id, winners[0]);
    // Nothing half-written: only the winner went on a trip.
    let nearby = service
        .locations
        .find_nearby_drivers(pb::FindNearbyDriversRequest {
            latitude: PICKUP.0,
            longitude: PICKUP.1,
            radius_m: 5_000.0,
            vehicle_type: "car".into(),
            limit: 100,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(nearby.drivers.len(), 49);
    assert!(
        nearby
            .drivers
            .iter()
            .all(|d| d.location.as_ref().unwrap().driver_id != winners[0])
    );
    core.stop().await;
}

async fn five_wrong_otps_then_exhausted_until_the_rider_gets_a_new_one(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let mut rider = core.as_(Role::User, "12").await;
    let mut driver = core.as_(Role::Driver, "45").await;
    driver.driver_online("45", "car", PICKUP.0, PICKUP.1).await;
    let id = rider.book("12", "car").await.unwrap().id;
    driver.accept(id, "45").await.unwrap();
    let otp = rider.get(id).await.unwrap().otp;
    let wrong = if otp == "000000" { "111111" } else { "000000" };
    let verify = |otp: &str| pb::VerifyOtpRequest {
        booking_id: id,
        driver_id: "45".into(),
        otp: otp.into(),
    };

    let malformed = driver
        .bookings
        .verify_otp(verify("12ab56"))
        .await
        .unwrap_err();
    assert_eq!(
        (malformed.code(), malformed.message()),
        (Code::InvalidArgument, "otp must be exactly 6 digits")
    );
    for left in (0..5).rev() {
        let err = driver.bookings.verify_otp(verify(wrong)).await.unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (
                Code::InvalidArgument,
                format!("wrong OTP for booking {id}: {left} tries left").as_str()
            )
        );
    }
    let locked = driver.bookings.verify_otp(verify(&otp)).await.unwrap_err();
    assert_eq!(locked.code(), Code::ResourceExhausted);
    assert!(
        locked.message().contains("IssueOtp"),
        "{}",
        locked.message()
    );

    // Drivers cannot reset the count; the rider can.
    let denied = driver
        .bookings
        .issue_otp(pb::IssueOtpRequest { booking_id: id })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let mut events = rider.subscribe(&["user_12_bookings"]).await;
    let fresh = rider
        .bookings
        .issue_otp(pb::IssueOtpRequest { booking_id: id })
        .await
        .unwrap()
        .into_inner();
    let pb::event::Kind::OtpIssued(sent) = events.next().await.kind.unwrap() else {
        panic!("expected otp_issued")
    };
    assert_eq!(sent.otp, fresh.otp);
    let started = driver
        .bookings
        .verify_otp(verify(&fresh.otp))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(started.status, pb::BookingStatus::OnTrip as i32);
    core.stop().await;
}

async fn every_error_code_with_a_message_a_person_can_act_on(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let channel = core.channel().await;

    // UNAUTHENTICATED: no token, garbage, a foreign signature, an expired token.
    let mut anonymous = Client::with_header(channel.clone(), None);
    let err = anonymous.book("12", "car").await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (
            Code::Unauthenticated,
            "no token: send `authorization: Bearer <JWT>`"
        )
    );
    let mut garbage = Client::with_header(channel.clone(), Some("Bearer nope".into()));
    assert_eq!(
        garbage.book("12", "car").await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let foreign = logi::auth::Signer::hs256(b"another-secret-another-secret-0000")
        .unwrap()
        .mint("12", Role::User, std::time::Duration::from_secs(60))
        .unwrap();
    let err = Client::new(channel.clone(), &foreign)
        .book("12", "car")
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::Unauthenticated, "the token's signature is not valid")
    );
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": "12", "role": "user", "exp": 1_000_000_000u64}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap();
    let err = Client::new(channel.clone(), &expired)
        .book("12", "car")
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::Unauthenticated, "the token has expired")
    );

    let mut rider = core.as_(Role::User, "12").await;
    let mut service = core.as_(Role::Service, "backend").await;

    // INVALID_ARGUMENT names the field.
    let mut req = booking_request("12", "car");
    req.pickup.as_mut().unwrap().latitude = 91.0;
    let err = rider.bookings.create_booking(req).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (
            Code::InvalidArgument,
            "pickup.latitude must be a number from -90 to 90, got 91"
        )
    );
    let mut req = booking_request("12", "car");
    req.dropoff.as_mut().unwrap().longitude = f64::NAN;
    assert_eq!(
        rider.bookings.create_booking(req).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let err = rider.book("12", "boat").await.unwrap_err();
    assert_eq!(
        err.message(),
        "unknown vehicle_type \"boat\": one of bike, car, truck, van"
    );
    let mut req = booking_request("12", "car");
    req.dropoff = None;
    assert_eq!(
        rider
            .bookings
            .create_booking(req)
            .await
            .unwrap_err()
            .message(),
        "dropoff is required"
    );
    let err = service.move_driver("45", 0.0, 200.0).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = service
        .bookings
        .get_booking(pb::GetBookingRequest { booking_id: 0 })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "booking_id is required")
    );
    let err = service
        .bookings
        .list_bookings(pb::ListBookingsRequest {
            page_token: "xyz".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = service
        .events
        .subscribe(pb::SubscribeRequest {
            topics: vec!["everything".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("unknown topic \"everything\""),
        "{}",
        err.message()
    );
    let status = pb::SetDriverStatusRequest {
        driver_id: "45".into(),
        status: pb::DriverStatus::OnTrip as i32,
        vehicle_type: "car".into(),
    };
    assert_eq!(
        service
            .locations
            .set_driver_status(status)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let new_without_vehicle = pb::SetDriverStatusRequest {
        driver_id: "46".into(),
        status: pb::DriverStatus::Available as i32,
        vehicle_type: String::new(),
    };
    let err = service
        .locations
        .set_driver_status(new_without_vehicle)
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (
            Code::InvalidArgument,
            "driver 46 is new: vehicle_type is required"
        )
    );

    // NOT_FOUND.
    let err = service
        .bookings
        .get_booking(pb::GetBookingRequest { booking_id: 999 })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::NotFound, "booking 999 does not exist")
    );
    let err = service.move_driver("ghost", 1.0, 1.0).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (
            Code::NotFound,
            "driver ghost is not registered: call SetDriverStatus first"
        )
    );

    // FAILED_PRECONDITION names the current status.
    service.driver_online("45", "car", PICKUP.0, PICKUP.1).await;
    let id = rider.book("12", "car").await.unwrap().id;
    let err = service.complete(id, "45").await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (
            Code::FailedPrecondition,
            format!("booking {id} is pending: only a booking on trip can be completed").as_str()
        )
    );
    service.driver_online("47", "car", 0.0, 0.0).await;
    let err = service.accept(id, "47").await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (
            Code::FailedPrecondition,
            format!("booking {id} was not offered to driver 47").as_str()
        )
    );
    service.accept(id, "45").await.unwrap();
    let busy = pb::SetDriverStatusRequest {
        driver_id: "45".into(),
        status: pb::DriverStatus::Offline as i32,
        vehicle_type: String::new(),
    };
    let err = service.locations.set_driver_status(busy).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (
            Code::FailedPrecondition,
            format!("driver 45 is on booking {id} (accepted): complete or cancel it first")
                .as_str()
        )
    );
    core.stop().await;
}

async fn roles_see_and_do_only_their_own(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let mut rider = core.as_(Role::User, "12").await;
    let mut other_rider = core.as_(Role::User, "13").await;
    let mut driver = core.as_(Role::Driver, "45").await;
    let mut other_driver = core.as_(Role::Driver, "46").await;
    driver.driver_online("45", "car", PICKUP.0, PICKUP.1).await;
    other_driver.driver_online("46", "car", 10.0, 10.0).await;

    // Riders book only for themselves and see only their own bookings.
    assert_eq!(
        denied(rider.book("13", "car").await),
        Code::PermissionDenied
    );
    let id = rider.book("12", "car").await.unwrap().id;
    let mine_by_default = rider
        .bookings
        .list_bookings(pb::ListBookingsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        mine_by_default
            .bookings
            .iter()
            .map(|b| b.id)
            .collect::<Vec<_>>(),
        [id]
    );
    assert_eq!(
        denied(
            other_rider
                .bookings
                .get_booking(pb::GetBookingRequest { booking_id: id })
                .await
        ),
        Code::NotFound
    );
    let theirs = pb::ListBookingsRequest {
        user_id: "12".into(),
        ..Default::default()
    };
    assert_eq!(
        denied(other_rider.bookings.list_bookings(theirs).await),
        Code::PermissionDenied
    );
    let cancel = pb::CancelBookingRequest {
        booking_id: id,
        cancelled_by: pb::Canceller::User as i32,
        reason: String::new(),
    };
    assert_eq!(
        denied(other_rider.bookings.cancel_booking(cancel.clone()).await),
        Code::NotFound
    );
    let as_driver = pb::CancelBookingRequest {
        cancelled_by: pb::Canceller::Driver as i32,
        ..cancel
    };
    assert_eq!(
        denied(rider.bookings.cancel_booking(as_driver).await),
        Code::PermissionDenied
    );
    assert_eq!(
        denied(rider.move_driver("45", 1.0, 1.0).await),
        Code::PermissionDenied
    );
    let nearby = pb::FindNearbyDriversRequest {
        latitude: 1.0,
        longitude: 1.0,
        radius_m: 0.0,
        vehicle_type: "car".into(),
        limit: 0,
    };
    assert_eq!(
        denied(rider.locations.find_nearby_drivers(nearby).await),
        Code::PermissionDenied
    );

    // Drivers act only as themselves; an offered driver may read the booking.
    assert_eq!(
        denied(other_driver.move_driver("45", 1.0, 1.0).await),
        Code::PermissionDenied
    );
    let steal = pb::AcceptBookingRequest {
        booking_id: id,
        driver_id: "45".into(),
    };
    assert_eq!(
        denied(other_driver.bookings.accept_booking(steal).await),
        Code::PermissionDenied
    );
    assert_eq!(
        denied(
            other_driver
                .bookings
                .get_booking(pb::GetBookingRequest { booking_id: id })
                .await
        ),
        Code::NotFound
    );
    let seen = driver.get(id).await.unwrap();
    assert_eq!(seen.id, id);
    assert_eq!(
        denied(driver.book("12", "car").await),
        Code::PermissionDenied
    );

    // Topics: each principal reads only its own.
    let sub = |topic: &str| pb::SubscribeRequest {
        topics: vec![topic.into()],
        ..Default::default()
    };
    assert_eq!(
        denied(other_rider.events.subscribe(sub("user_12_bookings")).await),
        Code::PermissionDenied
    );
    assert_eq!(
        denied(
            other_driver
                .events
                .subscribe(sub("driver_45_available_bookings"))
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        denied(driver.events.subscribe(sub("admins")).await),
        Code::PermissionDenied
    );

    // During a trip the rider may locate its driver, other riders may not.
    driver.accept(id, "45").await.unwrap();
    let loc = rider
        .locations
        .get_driver_location(pb::GetDriverLocationRequest {
            driver_id: "45".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((loc.latitude, loc.longitude), PICKUP);
    let err = other_rider
        .locations
        .get_driver_location(pb::GetDriverLocationRequest {
            driver_id: "45".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // The OTP is the rider's alone.
    assert_eq!(driver.get(id).await.unwrap().otp, "");
    assert_eq!(rider.get(id).await.unwrap().otp.len(), 6);
    core.stop().await;
}

async fn offline_drivers_lose_their_offers_and_strangers_learn_nothing(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let mut service = core.as_(Role::Service, "backend").await;
    let mut driver = core.as_(Role::Driver, "45").await;
    let mut stranger = core.as_(Role::Driver, "99").await;
    driver.driver_online("45", "car", PICKUP.0, PICKUP.1).await;
    stranger.driver_online("99", "car", 0.0, 0.0).await;
    let mut offers = driver.subscribe(&["driver_45_available_bookings"]).await;
    let id = service.book("12", "car").await.unwrap().id;
    assert_eq!(
        offers.take(1).await,
        [format!(
            "driver_45_available_bookings booking_offered #{id}"
        )]
    );

    // A driver the booking is not offered to hears NOT_FOUND, as for no booking at all.
    let err = stranger.accept(id, "99").await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (
            Code::NotFound,
            format!("booking {id} does not exist").as_str()
        )
    );
    let verify = pb::VerifyOtpRequest {
        booking_id: id,
        driver_id: "99".into(),
        otp: "123456".into(),
    };
    assert_eq!(
        stranger
            .bookings
            .verify_otp(verify)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    // Going offline withdraws the open offer; accepting it afterwards is refused.
    let offline = pb::SetDriverStatusRequest {
        driver_id: "45".into(),
        status: pb::DriverStatus::Offline as i32,
        vehicle_type: String::new(),
    };
    driver.locations.set_driver_status(offline).await.unwrap();
    assert_eq!(
        offers.take(1).await,
        [format!(
            "driver_45_available_bookings offer_closed #{id} driver_offline"
        )]
    );
    let err = driver.accept(id, "45").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    // Back online, a new booking is offered again; a service accepting for the driver
    // is not handed the OTP, and a repeated accept says it is a repeat.
    let online = pb::SetDriverStatusRequest {
        driver_id: "45".into(),
        status: pb::DriverStatus::Available as i32,
        vehicle_type: String::new(),
    };
    driver.locations.set_driver_status(online).await.unwrap();
    let next = service.book("12", "car").await.unwrap().id;
    assert_eq!(
        offers.take(1).await,
        [format!(
            "driver_45_available_bookings booking_offered #{next}"
        )]
    );
    let accept = pb::AcceptBookingRequest {
        booking_id: next,
        driver_id: "45".into(),
    };
    let accepted = service
        .bookings
        .accept_booking(accept.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (accepted.status, accepted.otp.as_str()),
        (pb::BookingStatus::Accepted as i32, "")
    );
    let again = service.bookings.accept_booking(accept).await.unwrap_err();
    assert_eq!(
        again.message(),
        format!("booking {next} was already accepted by driver 45: this accept is a repeat")
    );
    assert_eq!(service.get(next).await.unwrap().otp.len(), 6);
    core.stop().await;
}

crate::on_every_store!(
    of_fifty_concurrent_accepts_exactly_one_wins,
    five_wrong_otps_then_exhausted_until_the_rider_gets_a_new_one,
    every_error_code_with_a_message_a_person_can_act_on,
    roles_see_and_do_only_their_own,
    offline_drivers_lose_their_offers_and_strangers_learn_nothing,
);
