//! What survives: restarts on the same database, resume cursors, expiry and
//! widening of pending bookings, and the standard services grpcurl relies on.

use crate::support::*;
use logi::auth::Role;
use logi::pb;
use tokio_stream::StreamExt;
use tonic::Code;

async fn a_restart_on_the_same_database_keeps_bookings_drivers_and_history(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let mut service = core.as_(Role::Service, "backend").await;
    service.driver_online("45", "van", PICKUP.0, PICKUP.1).await;
    let id = service.book("12", "van").await.unwrap().id;
    service.accept(id, "45").await.unwrap();
    let first = service.get(id).await.unwrap();
    core.stop().await;

    let core = spawn_core(&db, &[]).await;
    let mut service = core.as_(Role::Service, "backend").await;
    let again = service.get(id).await.unwrap();
    assert_eq!(
        again, first,
        "the booking, OTP included, is exactly as it was"
    );
    // The driver is still on that trip.
    let offline = pb::SetDriverStatusRequest {
        driver_id: "45".into(),
        status: pb::DriverStatus::Offline as i32,
        vehicle_type: String::new(),
    };
    assert_eq!(
        service
            .locations
            .set_driver_status(offline)
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition
    );
    // Its position is sent to the rider again as soon as it reports one.
    let mut history = service.subscribe(&["user_12_bookings"]).await;
    assert_eq!(service.move_driver("45", 37.79, -122.40).await.unwrap(), id);
    assert_eq!(
        history.take(1).await,
        [format!(
            "user_12_bookings driver_location #{id} accepted 37.79,-122.4"
        )]
    );
    // The whole durable history is there, in order.
    let epoch = epoch(&mut service).await;
    let mut replay = service
        .subscribe_from(
            &["user_12_bookings"],
            &[("user_12_bookings", pb::Cursor { epoch, offset: 0 })],
        )
        .await;
    assert_eq!(
        replay.take(3).await,
        [
            format!("user_12_bookings booking_changed #{id} unspecified->pending"),
            format!("user_12_bookings booking_changed #{id} pending->accepted"),
            format!("user_12_bookings otp_issued #{id}"),
        ]
    );
    core.stop().await;
}

/// The event log's epoch, read from the marker answered to a cursor of epoch 0.
async fn epoch(client: &mut Client) -> u64 {
    let mut probe = client
        .subscribe_from(
            &["admins"],
            &[(
                "admins",
                pb::Cursor {
                    epoch: 0,
                    offset: 0,
                },
            )],
        )
        .await;
    probe.next().await.cursor.unwrap().epoch
}

async fn resuming_from_a_cursor_replays_exactly_the_missed_events_then_goes_live(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let mut rider = core.as_(Role::User, "12").await;
    let mut driver = core.as_(Role::Driver, "45").await;
    driver.driver_online("45", "car", PICKUP.0, PICKUP.1).await;

    let mut events = rider.subscribe(&["user_12_bookings"]).await;
    let a = rider.book("12", "car").await.unwrap().id;
    let seen = events.next().await;
    let cursor = seen.cursor.unwrap();
    assert_eq!(
        summary(&seen),
        format!("user_12_bookings booking_changed #{a} unspecified->pending")
    );
    drop(events); // the app goes away

    // What it missed: an accept (two events), a cancel, and a new booking.
    driver.accept(a, "45").await.unwrap();
    driver.move_driver("45", 37.79, -122.40).await.unwrap(); // ephemeral: not replayed
    let cancel = pb::CancelBookingRequest {
        booking_id: a,
        cancelled_by: pb::Canceller::User as i32,
        reason: String::new(),
    };
    rider.bookings.cancel_booking(cancel).await.unwrap();
    let b = rider.book("12", "car").await.unwrap().id;

    let mut resumed = rider
        .subscribe_from(&["user_12_bookings"], &[("user_12_bookings", cursor)])
        .await;
    let replayed: Vec<pb::Event> = vec![
        resumed.next().await,
        resumed.next().await,
        resumed.next().await,
        resumed.next().await,
    ];
    assert_eq!(
        replayed.iter().map(summary).collect::<Vec<_>>(),
        [
            format!("user_12_bookings booking_changed #{a} pending->accepted"),
            format!("user_12_bookings otp_issued #{a}"),
            format!("user_12_bookings booking_changed #{a} accepted->cancelled"),
            format!("user_12_bookings booking_changed #{b} unspecified->pending"),
        ]
    );
    let offsets: Vec<u64> = replayed.iter().map(|e| e.cursor.unwrap().offset).collect();
    assert!(
        offsets.windows(2).all(|w| w[0] < w[1]) && offsets[0] > cursor.offset,
        "{offsets:?}"
    );
    // Then live, with nothing repeated at the seam.
    let c = rider.book("12", "car").await.unwrap().id;
    assert_eq!(
        resumed.take(1).await,
        [format!(
            "user_12_bookings booking_changed #{c} unspecified->pending"
        )]
    );
    resumed.assert_quiet().await;

    // A cursor from another history is answered with an explicit marker, then live.
    let stale = pb::Cursor {
        epoch: cursor.epoch + 1,
        offset: cursor.offset,
    };
    let mut other = rider
        .subscribe_from(&["user_12_bookings"], &[("user_12_bookings", stale)])
        .await;
    let marker = other.next().await;
    assert_eq!(
        summary(&marker),
        "user_12_bookings resync_required epoch_changed"
    );
    assert_eq!(marker.cursor.unwrap().epoch, cursor.epoch);
    let ahead = pb::Cursor {
        epoch: cursor.epoch,
        offset: u64::MAX,
    };
    let mut far = rider
        .subscribe_from(&["user_12_bookings"], &[("user_12_bookings", ahead)])
        .await;
    assert_eq!(
        far.take(1).await,
        ["user_12_bookings resync_required cursor_ahead"]
    );
    let d = rider.book("12", "car").await.unwrap().id;
    assert_eq!(
        other.take(1).await,
        [format!(
            "user_12_bookings booking_changed #{d} unspecified->pending"
        )]
    );
    core.stop().await;
}

async fn positions_keep_increasing_offsets_past_a_resumed_cursor(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let mut service = core.as_(Role::Service, "backend").await;
    service.driver_online("45", "car", PICKUP.0, PICKUP.1).await;
    let id = service.book("12", "car").await.unwrap().id;
    service.accept(id, "45").await.unwrap();
    let mut events = service.subscribe(&["user_12_bookings"]).await;
    for i in 0..3 {
        service
            .move_driver("45", 37.79 + f64::from(i) * 0.001, -122.40)
            .await
            .unwrap();
    }
    let mut last = 0;
    for _ in 0..3 {
        last = events.next().await.cursor.unwrap().offset;
    }
    let cursor = pb::Cursor {
        epoch: epoch(&mut service).await,
        offset: last,
    };
    drop(events);
    core.stop().await;

    // After a restart the first position a resumed subscriber gets is still newer.
    let core = spawn_core(&db, &[]).await;
    let mut service = core.as_(Role::Service, "backend").await;
    let mut events = service
        .subscribe_from(&["user_12_bookings"], &[("user_12_bookings", cursor)])
        .await;
    service.move_driver("45", 37.80, -122.40).await.unwrap();
    let next = events.next().await;
    assert_eq!(
        summary(&next),
        format!("user_12_bookings driver_location #{id} accepted 37.8,-122.4")
    );
    assert!(
        next.cursor.unwrap().offset > last,
        "{} <= {last}",
        next.cursor.unwrap().offset
    );
    core.stop().await;
}

async fn unaccepted_bookings_widen_their_search_then_expire(db: Db) {
    let flags = [
        "--dispatch-radius-m",
        "1000",
        "--dispatch-max-radius-m",
        "4000",
        "--dispatch-widen-every",
        "150ms",
        "--offer-timeout",
        "1s",
    ];
    let core = spawn_core(&db, &flags).await;
    let mut rider = core.as_(Role::User, "12").await;
    let mut near = core.as_(Role::Driver, "near").await;
    let mut far = core.as_(Role::Driver, "far").await;
    near.driver_online("near", "car", PICKUP.0 + 0.005, PICKUP.1)
        .await; // ~560 m
    far.driver_online("far", "car", PICKUP.0 + 0.025, PICKUP.1)
        .await; // ~2.8 km
    let mut near_events = near.subscribe(&["driver_near_available_bookings"]).await;
    let mut far_events = far.subscribe(&["driver_far_available_bookings"]).await;
    let mut rider_events = rider.subscribe(&["user_12_bookings"]).await;

    let id = rider.book("12", "car").await.unwrap().id;
    assert_eq!(
        near_events.take(1).await,
        [format!(
            "driver_near_available_bookings booking_offered #{id}"
        )]
    );
    // Out of the first radius; offered once the search has widened to 4 km.
    assert_eq!(
        far_events.take(1).await,
        [format!(
            "driver_far_available_bookings booking_offered #{id}"
        )]
    );
    // Nobody accepts: the booking expires and both offers close.
    assert_eq!(
        rider_events.take(2).await,
        [
            format!("user_12_bookings booking_changed #{id} unspecified->pending"),
            format!("user_12_bookings booking_changed #{id} pending->expired")
        ]
    );
    assert_eq!(
        near_events.take(1).await,
        [format!(
            "driver_near_available_bookings offer_closed #{id} expired"
        )]
    );
    assert_eq!(
        far_events.take(1).await,
        [format!(
            "driver_far_available_bookings offer_closed #{id} expired"
        )]
    );
    let err = near.accept(id, "near").await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (
            Code::FailedPrecondition,
            format!("booking {id} is expired: only a pending booking can be accepted").as_str()
        )
    );
    core.stop().await;
}

async fn a_gps_feed_streams_positions_and_stops_at_the_first_bad_one(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let mut driver = core.as_(Role::Driver, "45").await;
    driver.driver_online("45", "car", PICKUP.0, PICKUP.1).await;
    let point = |lat: f64| pb::UpdateDriverLocationRequest {
        driver_id: "45".into(),
        latitude: lat,
        longitude: -122.4,
        heading: 0.0,
        speed_mps: 1.0,
    };
    let feed = tokio_stream::iter((0..20).map(move |i| point(37.7 + f64::from(i) * 0.001)));
    let applied = driver
        .locations
        .stream_driver_locations(feed)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(applied.accepted, 20);
    let loc = driver
        .locations
        .get_driver_location(pb::GetDriverLocationRequest {
            driver_id: "45".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!((loc.latitude - 37.719).abs() < 1e-9, "{}", loc.latitude);

    let bad = tokio_stream::iter(vec![point(37.0), point(95.0), point(38.0)]);
    let err = driver
        .locations
        .stream_driver_locations(bad)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "location.latitude must be a number from -90 to 90, got 95 (after 1 positions applied)"
    );
    let loc = driver
        .locations
        .get_driver_location(pb::GetDriverLocationRequest {
            driver_id: "45".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(loc.latitude, 37.0);
    core.stop().await;
}

#[tokio::test]
async fn health_and_both_reflection_versions_answer_without_a_token() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    use tonic_reflection::pb::{v1, v1alpha};

    let db = Db::sqlite();
    let core = spawn_core(&db, &[]).await;
    let channel = core.channel().await;
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "logi.v1.BookingService", "logi.v1.EventService"] {
        let reply = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.status, ServingStatus::Serving as i32, "{service:?}");
    }

    let mut v1 = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let list = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut answers = v1
        .server_reflection_info(tokio_stream::once(list))
        .await
        .unwrap()
        .into_inner();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(services)) =
        answers.next().await.unwrap().unwrap().message_response
    else {
        panic!()
    };
    let mut names: Vec<String> = services.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
            "logi.v1.BookingService",
            "logi.v1.EventService",
            "logi.v1.LocationService",
        ]
    );

    let mut alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    for symbol in ["grpc.health.v1.Health", "logi.v1.BookingService"] {
        let ask = v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                    symbol.into(),
                ),
            ),
        };
        let mut answers = alpha
            .server_reflection_info(tokio_stream::once(ask))
            .await
            .unwrap()
            .into_inner();
        let answer = answers
            .next()
            .await
            .unwrap()
            .unwrap()
            .message_response
            .unwrap();
        assert!(
            matches!(answer, v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(ref f) if !f.file_descriptor_proto.is_empty()),
            "{symbol}: {answer:?}"
        );
    }
    core.stop().await;
}

async fn a_stream_head_lets_a_subscriber_resume_before_its_first_event(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let mut rider = core.as_(Role::User, "12").await;
    let first = rider.book("12", "car").await.unwrap().id;

    let req = pb::SubscribeRequest {
        topics: vec!["user_12_bookings".into()],
        resume: Default::default(),
        heads: true,
        snapshots: false,
    };
    let mut stream = Events(rider.events.subscribe(req).await.unwrap().into_inner());
    let head = stream.next().await;
    assert_eq!(summary(&head), "user_12_bookings stream_head");
    assert_eq!(
        head.cursor.unwrap().offset,
        EVENTS_SO_FAR * logi_offset_span(),
        "the head is the last event written"
    );
    drop(stream); // gone before anything else happened

    let second = rider.book("12", "car").await.unwrap().id;
    let mut resumed = rider
        .subscribe_from(
            &["user_12_bookings"],
            &[("user_12_bookings", head.cursor.unwrap())],
        )
        .await;
    assert_eq!(
        resumed.take(1).await,
        [format!(
            "user_12_bookings booking_changed #{second} unspecified->pending"
        )]
    );
    resumed.assert_quiet().await;
    assert_ne!(first, second);
    core.stop().await;
}

/// Durable events on the rider's topic after one booking: its creation.
const EVENTS_SO_FAR: u64 = 1;

fn logi_offset_span() -> u64 {
    core_svc::hub::EPHEMERAL_SPAN
}

crate::on_every_store!(
    a_restart_on_the_same_database_keeps_bookings_drivers_and_history,
    resuming_from_a_cursor_replays_exactly_the_missed_events_then_goes_live,
    positions_keep_increasing_offsets_past_a_resumed_cursor,
    unaccepted_bookings_widen_their_search_then_expire,
    a_gps_feed_streams_positions_and_stops_at_the_first_bad_one,
    a_stream_head_lets_a_subscriber_resume_before_its_first_event,
);
