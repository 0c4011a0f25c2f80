//! Several core-svc replicas on one PostgreSQL database, telling each other their
//! commits and drivers' positions over NATS: whichever replica a call goes to and
//! whichever one a subscriber reads from, every event arrives, once, in order.

use logi::auth::Role;
use logi::pb;
use serde_json::json;

use crate::support::edge::spawn_edge;
use crate::support::proxy::spawn_proxy;
use crate::support::*;

/// Two replicas of one cluster, or None when PostgreSQL or NATS is not configured.
async fn two_replicas(extra: &[&str]) -> Option<(Db, Core, Core)> {
    let (db, nats) = Db::cluster().await?;
    let mut flags = vec!["--nats-url", nats.as_str()];
    flags.extend_from_slice(extra);
    let one = spawn_core(&db, &flags).await;
    let two = spawn_core(&db, &flags).await;
    Some((db, one, two))
}

#[tokio::test]
async fn a_trip_made_through_two_replicas_reaches_subscribers_of_both() {
    let Some((_db, one, two)) = two_replicas(&[]).await else {
        return;
    };
    // The rider and the driver read from replica two, the admins from one.
    let mut rider = two.as_(Role::User, "12").await;
    let mut driver = two.as_(Role::Driver, "45").await;
    let mut rider_events = rider.subscribe(&["user_12_bookings"]).await;
    let mut driver_events = driver
        .subscribe(&["driver_45_available_bookings", "driver_45_bookings"])
        .await;
    let mut admin_events = one
        .as_(Role::Admin, "ops")
        .await
        .subscribe(&["admins"])
        .await;

    // The driver comes online through replica one, which also finds it for the
    // booking made there: its position reached one's spatial index.
    let mut service_one = one.as_(Role::Service, "backend").await;
    service_one
        .driver_online("45", "car", PICKUP.0 + 0.001, PICKUP.1)
        .await;
    assert_eq!(
        admin_events.take(1).await,
        ["admins driver_status 45 available"]
    );
    let id = service_one.book("12", "car").await.unwrap().id;
    assert_eq!(
        rider_events.take(1).await,
        [format!(
            "user_12_bookings booking_changed #{id} unspecified->pending"
        )]
    );
    assert_eq!(
        driver_events.take(1).await,
        [format!(
            "driver_45_available_bookings booking_offered #{id}"
        )]
    );
    assert_eq!(
        admin_events.take(1).await,
        [format!("admins booking_changed #{id} unspecified->pending")]
    );

    // Accepted through replica two.
    let accepted = driver.accept(id, "45").await.unwrap();
    assert_eq!(accepted.status, pb::BookingStatus::Accepted as i32);
    let rider_saw = rider_events.take(2).await;
    assert_eq!(
        rider_saw,
        [
            format!("user_12_bookings booking_changed #{id} pending->accepted"),
            format!("user_12_bookings otp_issued #{id}"),
        ]
    );
    assert_eq!(
        admin_events.take(2).await,
        [
            format!("admins booking_changed #{id} pending->accepted"),
            "admins driver_status 45 on_trip".to_owned(),
        ]
    );

    // A position sent to replica one reaches the rider on replica two. First
    // replica one learns of the trip from two's commit: then the rider may ask
    // it where the driver is.
    let mut rider_one = one.as_(Role::User, "12").await;
    let asked = pb::GetDriverLocationRequest {
        driver_id: "45".into(),
    };
    tokio::time::timeout(PATIENCE, async {
        while rider_one
            .locations
            .get_driver_location(asked.clone())
            .await
            .is_err()
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("replica one hears of the accept");
    let mut driver_one = one.as_(Role::Driver, "45").await;
    let on_trip = driver_one
        .move_driver("45", PICKUP.0, PICKUP.1)
        .await
        .unwrap();
    assert_eq!(
        on_trip, id,
        "replica one knows the trip replica two accepted"
    );
    let position = rider_events.next().await;
    assert_eq!(
        summary(&position),
        format!("user_12_bookings driver_location #{id} accepted 37.7955,-122.3937")
    );

    rider_events.assert_quiet().await;
    admin_events.assert_quiet().await;
    one.stop().await;
    two.stop().await;
}

#[tokio::test]
async fn of_fifty_accepts_spread_over_two_replicas_exactly_one_wins() {
    let Some((_db, one, two)) = two_replicas(&["--dispatch-drivers", "50"]).await else {
        return;
    };
    let mut service = one.as_(Role::Service, "backend").await;
    for d in 0..50 {
        service
            .driver_online(
                &format!("d{d}"),
                "car",
                PICKUP.0 + 0.0001 * f64::from(d),
                PICKUP.1,
            )
            .await;
    }
    let id = service.book("12", "car").await.unwrap().id;
    let replicas = (&one, &two);
    let outcomes = futures::future::join_all((0..50).map(|d| async move {
        let replica = if d % 2 == 0 { replicas.0 } else { replicas.1 };
        let mut driver = replica.as_(Role::Driver, &format!("d{d}")).await;
        driver
            .accept(id, &format!("d{d}"))
            .await
            .map(|b| b.driver_id)
    }))
    .await;
    let winners: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    for lost in outcomes.iter().filter_map(|o| o.as_ref().err()) {
        assert_eq!(lost.code(), tonic::Code::FailedPrecondition, "{lost:?}");
    }
    let booking = two
        .as_(Role::Service, "backend")
        .await
        .get(id)
        .await
        .unwrap();
    assert_eq!(&booking.driver_id, winners[0]);
    one.stop().await;
    two.stop().await;
}

#[tokio::test]
async fn a_replica_cut_off_from_the_database_leaves_its_pending_bookings_to_another_and_recovers() {
    let Some((db, nats)) = Db::cluster().await else {
        return;
    };
    let flags = [
        "--nats-url",
        nats.as_str(),
        "--dispatch-lease",
        "1s",
        "--offer-timeout",
        "4s",
    ];
    // Replica one reaches the database through a relay that can go down.
    let authority = "127.0.0.1:5432";
    assert!(db.location().contains(authority), "{}", db.location());
    let relay = spawn_proxy(authority.parse().unwrap()).await;
    let through_relay = Db::alias(
        &db,
        &db.location().replace(authority, &relay.addr.to_string()),
    );
    let one = spawn_core(&through_relay, &flags).await;
    let mut service = one.as_(Role::Service, "backend").await;
    let id = service.book("12", "car").await.unwrap().id;
    // One leases it (its first round comes within a third of the lease) before
    // replica two starts.
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let two = spawn_core(&db, &flags).await;
    let mut rider = two.as_(Role::User, "12").await;
    let mut events = rider.subscribe(&["user_12_bookings"]).await;

    relay.down();
    // One can no longer renew; two takes the booking over and expires it on time.
    let expired = tokio::time::timeout(std::time::Duration::from_secs(8), events.next())
        .await
        .expect("the booking expires through replica two");
    assert_eq!(
        summary(&expired),
        format!("user_12_bookings booking_changed #{id} pending->expired")
    );
    // Meanwhile replica one says NOT_SERVING, and a write to it changes nothing.
    until_serving(&one, false).await;
    let refused = service.book("12", "car").await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    relay.up();
    until_serving(&one, true).await;
    let booking = two
        .as_(Role::Service, "backend")
        .await
        .get(id)
        .await
        .unwrap();
    assert_eq!(booking.status, pb::BookingStatus::Expired as i32);
    // Replica one, back, finds it settled: expired once.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    events.assert_quiet().await;
    // And takes writes again.
    let later = service.book("12", "car").await.unwrap().id;
    assert_eq!(
        events.take(1).await,
        [format!(
            "user_12_bookings booking_changed #{later} unspecified->pending"
        )]
    );
    one.stop().await;
    two.stop().await;
}

/// The server-wide health of `core`.
async fn serving(core: &Core) -> bool {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut health = HealthClient::new(core.channel().await);
    let reply = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    reply.status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
}

/// Waits until `core`'s health says `want`.
async fn until_serving(core: &Core, want: bool) {
    tokio::time::timeout(PATIENCE, async {
        while serving(core).await != want {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("health never said serving = {want}"));
}

#[tokio::test]
async fn a_replica_cut_off_from_nats_refuses_writes_then_catches_up_from_the_database() {
    let Some((db, nats)) = Db::cluster().await else {
        return;
    };
    let authority = nats.trim_start_matches("nats://");
    let relay = spawn_proxy(authority.parse().unwrap()).await;
    let relayed = format!("nats://{}", relay.addr);
    let one = spawn_core(&db, &["--nats-url", &relayed]).await;
    let two = spawn_core(&db, &["--nats-url", &nats]).await;
    let mut rider = one.as_(Role::User, "12").await;
    let mut events = rider.subscribe(&["user_12_bookings"]).await;
    let mut rider_two = two.as_(Role::User, "12").await;
    let id = rider_two.book("12", "car").await.unwrap().id;
    assert_eq!(
        events.take(1).await,
        [format!(
            "user_12_bookings booking_changed #{id} unspecified->pending"
        )]
    );

    relay.down();
    until_serving(&one, false).await;
    let refused = rider.book("12", "car").await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("NATS"), "{}", refused.message());
    // Meanwhile the rider cancels through replica two; one cannot hear of it.
    rider_two.cancel(id, "changed my mind").await.unwrap();

    relay.up();
    until_serving(&one, true).await;
    // Back, replica one reads what it missed from the database: once.
    assert_eq!(
        events.take(1).await,
        [format!(
            "user_12_bookings booking_changed #{id} pending->cancelled"
        )]
    );
    let again = rider.book("12", "car").await.unwrap().id;
    assert_eq!(
        events.take(1).await,
        [format!(
            "user_12_bookings booking_changed #{again} unspecified->pending"
        )]
    );
    events.assert_quiet().await;
    one.stop().await;
    two.stop().await;
}

#[tokio::test]
async fn apps_on_two_edges_of_two_replicas_see_every_frame_once_in_both_dialects() {
    let Some((_db, one, two)) = two_replicas(&[]).await else {
        return;
    };
    let (edge_a, edge_b) = (
        spawn_edge(one.addr, &[]).await,
        spawn_edge(two.addr, &[]).await,
    );
    let mut admin_a = edge_a.connect("/ws", &token(Role::Admin, "ops")).await;
    let mut admin_b = edge_b.connect("/ws", &token(Role::Admin, "ops")).await;
    let mut rider = edge_a.connect("/ws", &token(Role::User, "12")).await;
    let mut rider_channels = edge_b
        .connect("/regular_user/ws/bookings/", &token(Role::User, "12"))
        .await;
    let mut driver = edge_b.connect("/ws", &token(Role::Driver, "45")).await;

    let mut service_one = one.as_(Role::Service, "backend").await;
    service_one
        .driver_online("45", "car", PICKUP.0, PICKUP.1)
        .await;
    let online = json!({"user_id": "", "type": "driver_status_update", "payload": {"driver_id": "45", "status": "Available"}});
    assert_eq!(admin_a.next().await, online);
    assert_eq!(admin_b.next().await, online);

    // Booked through replica one.
    let booking = service_one.book("12", "car").await.unwrap();
    let id = booking.id.to_string();
    let status = |s: &str| json!({"booking_id": id, "status": s});
    assert_eq!(
        driver.next().await,
        json!({"user_id": "45", "type": "new_booking_request", "payload": {
            "booking_id": id, "user_id": "12",
            "pickup_location": {"type": "Point", "coordinates": [PICKUP.1, PICKUP.0]},
            "dropoff_location": {"type": "Point", "coordinates": [-122.4193, 37.7793]},
            "vehicle_type": "car", "price_estimate": booking.price_estimate}})
    );
    assert_eq!(
        rider.next().await,
        json!({"user_id": "12", "type": "status_update", "payload": status("Pending")})
    );
    let pending = json!({"status": "pending", "booking_id": booking.id, "pickup_location": "123 Main St",
        "phone_number": "+1234567890", "dropoff_location": "456 Elm St"});
    assert_eq!(
        rider_channels.next().await,
        json!({"type": "booking_status_update", "message": pending})
    );
    for admin in [&mut admin_a, &mut admin_b] {
        assert_eq!(
            admin.next().await,
            json!({"user_id": "", "type": "status_update", "payload": status("Pending")})
        );
    }

    // Accepted through replica two.
    let mut service_two = two.as_(Role::Service, "backend").await;
    service_two.accept(booking.id, "45").await.unwrap();
    let otp = service_two.get(booking.id).await.unwrap().otp;
    assert_eq!(
        rider.take(3).await,
        [
            json!({"user_id": "12", "type": "booking_accepted", "payload": {"booking_id": id, "driver_id": "45"}}),
            json!({"user_id": "12", "type": "status_update", "payload": status("Accepted")}),
            json!({"user_id": "12", "type": "booking_otp", "payload": {"booking_id": id, "otp": otp}}),
        ]
    );
    let accepted = json!({"status": "accepted", "booking_id": booking.id, "pickup_location": "123 Main St",
        "phone_number": "+1234567890", "dropoff_location": "456 Elm St"});
    assert_eq!(
        rider_channels.take(2).await,
        [
            json!({"type": "booking_status_update", "message": accepted}),
            json!({"type": "send_otp_update", "otp": otp, "booking_id": booking.id}),
        ]
    );
    assert_eq!(
        driver.next().await,
        json!({"user_id": "45", "type": "status_update", "payload": status("Accepted")})
    );
    for admin in [&mut admin_a, &mut admin_b] {
        assert_eq!(
            admin.take(2).await,
            [
                json!({"user_id": "", "type": "status_update", "payload": status("Accepted")}),
                json!({"user_id": "", "type": "driver_status_update", "payload": {"driver_id": "45", "status": "On Trip"}}),
            ]
        );
    }

    // The driver's position, up edge B to replica two, reaches the rider on edge A
    // (replica one) and on edge B. Replica one knows the trip: the rider on edge A
    // got its frames from one's hub above.
    let ping =
        r#"{"type": "driver_location", "payload": {"latitude": 37.7749, "longitude": -122.4194}}"#;
    let location = json!({"user_id": "12", "type": "driver_location", "payload": {"booking_id": id, "latitude": 37.7749, "longitude": -122.4194}});
    driver.send(ping).await;
    assert_eq!(rider.next().await, location);
    assert_eq!(
        rider_channels.next().await,
        json!({"type": "location_update", "driver_id": 45, "current_latitude": "37.7749",
               "current_longitude": "-122.4194", "status": "accepted"})
    );

    for ws in [
        &mut rider,
        &mut rider_channels,
        &mut driver,
        &mut admin_a,
        &mut admin_b,
    ] {
        ws.assert_quiet().await;
    }
    edge_a.stop().await;
    edge_b.stop().await;
    one.stop().await;
    two.stop().await;
}

#[tokio::test]
async fn a_driver_is_seen_by_every_replica_and_goes_silent_once() {
    let Some((_db, one, two)) = two_replicas(&["--driver-stale-after", "1s"]).await else {
        return;
    };
    let mut admins = two
        .as_(Role::Admin, "ops")
        .await
        .subscribe(&["admins"])
        .await;
    let mut driver_one = one.as_(Role::Driver, "45").await;
    driver_one
        .driver_online("45", "car", PICKUP.0, PICKUP.1)
        .await;
    assert_eq!(admins.take(1).await, ["admins driver_status 45 available"]);

    // Pinging replica one only, for twice the limit: replica two hears the
    // positions too, so neither takes the driver for silent.
    let pinging = tokio::spawn({
        let mut driver = driver_one.clone();
        async move {
            for _ in 0..8 {
                driver.move_driver("45", PICKUP.0, PICKUP.1).await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        }
    });
    let early = tokio::time::timeout(std::time::Duration::from_secs(2), admins.0.message()).await;
    assert!(early.is_err(), "nothing while the driver pings: {early:?}");
    pinging.await.unwrap();

    // Silent now: both replicas sweep, and the admins hear it once.
    assert_eq!(admins.take(1).await, ["admins driver_status 45 offline"]);
    let again = tokio::time::timeout(std::time::Duration::from_secs(2), admins.0.message()).await;
    assert!(again.is_err(), "once: {again:?}");
    // A position through replica two brings it back, once.
    two.as_(Role::Driver, "45")
        .await
        .move_driver("45", PICKUP.0, PICKUP.1)
        .await
        .unwrap();
    assert_eq!(admins.take(1).await, ["admins driver_status 45 available"]);
    admins.assert_quiet().await;
    one.stop().await;
    two.stop().await;
}
