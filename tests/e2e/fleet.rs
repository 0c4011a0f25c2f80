//! The `fleet` topic: on gRPC, a Snapshot of every driver then a DriverPosition per
//! position; on `/ws?fleet=1`, an operations console sees the same as one
//! `fleet_snapshot`, then a `driver_position` per position, with the driver's
//! status and trip as they stand. Only admins (and services) may read it.

use crate::support::edge::spawn_edge;
use crate::support::*;
use logi::auth::Role;
use logi::pb;
use serde_json::json;
use tonic::Code;

async fn the_fleet_topic_over_grpc(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let mut service = core.as_(Role::Service, "backend").await;
    service.driver_online("45", "car", PICKUP.0, PICKUP.1).await;
    service
        .locations
        .set_driver_status(pb::SetDriverStatusRequest {
            driver_id: "46".into(),
            status: pb::DriverStatus::Available as i32,
            vehicle_type: "bike".into(),
        })
        .await
        .unwrap();

    let mut admin = core.as_(Role::Admin, "ops").await;
    let request = pb::SubscribeRequest {
        topics: vec!["fleet".into()],
        snapshots: true,
        ..Default::default()
    };
    let mut events = Events(admin.events.subscribe(request).await.unwrap().into_inner());
    assert_eq!(
        events.take(1).await,
        [format!(
            "fleet snapshot drivers [\"45 available car {},{}\", \"46 available bike -\"]",
            PICKUP.0, PICKUP.1
        )]
    );
    service.move_driver("46", 37.78, -122.41).await.unwrap();
    assert_eq!(
        events.take(1).await,
        ["fleet driver_position 46 available bike 37.78,-122.41"]
    );

    let mut rider = core.as_(Role::User, "12").await;
    let refused = rider
        .events
        .subscribe(pb::SubscribeRequest {
            topics: vec!["fleet".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    core.stop().await;
}

async fn an_admin_watches_every_driver_move(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let edge = spawn_edge(core.addr, &[]).await;
    let mut service = core.as_(Role::Service, "backend").await;
    service.driver_online("45", "car", PICKUP.0, PICKUP.1).await;
    service.driver_online("46", "bike", 37.78, -122.41).await;

    let mut console = edge
        .connect_with("/ws", &token(Role::Admin, "ops"), "&fleet=1")
        .await;
    let driver = |id: &str, status: &str, vehicle: &str, at: (f64, f64), booking: &str| {
        json!({"driver_id": id, "status": status, "vehicle_type": vehicle,
               "latitude": at.0, "longitude": at.1, "booking_id": booking})
    };
    assert_eq!(
        console.next().await,
        json!({"user_id": "", "type": "fleet_snapshot", "payload": {"drivers": [
            driver("45", "Available", "car", PICKUP, ""),
            driver("46", "Available", "bike", (37.78, -122.41), ""),
        ], "bookings": []}})
    );

    // A third driver registers, then reports a position. Its status comes on
    // `admins`, its position on `fleet`: two topics, in no set order between them.
    service.driver_online("47", "van", 37.79, -122.40).await;
    let mut two = console.take(2).await;
    two.sort_by_key(|f| f["type"].as_str().map(str::to_owned));
    assert_eq!(
        two,
        [
            json!({"user_id": "", "type": "driver_position", "payload": driver("47", "Available", "van", (37.79, -122.40), "")}),
            json!({"user_id": "", "type": "driver_status_update", "payload": {"driver_id": "47", "status": "Available"}}),
        ]
    );

    // On a trip, its positions say so, with the booking.
    let booking = service.book("12", "car").await.unwrap().id;
    service.accept(booking, "45").await.unwrap();
    console.take(3).await; // Pending, Accepted, On Trip
    let mut phone = edge.connect("/ws", &token(Role::Driver, "45")).await;
    phone.next().await; // its accepted booking
    phone
        .send(r#"{"type": "driver_location", "payload": {"latitude": 37.7751, "longitude": -122.4183}}"#)
        .await;
    assert_eq!(
        console.next().await,
        json!({"user_id": "", "type": "driver_position", "payload":
               driver("45", "On Trip", "car", (37.7751, -122.4183), &booking.to_string())})
    );
    console.assert_quiet().await;

    // A console without fleet=1 hears no positions.
    let mut plain = edge.connect("/ws", &token(Role::Admin, "ops")).await;
    service.move_driver("46", 37.781, -122.411).await.unwrap();
    assert_eq!(
        console.next().await,
        json!({"user_id": "", "type": "driver_position", "payload": driver("46", "Available", "bike", (37.781, -122.411), "")})
    );
    plain.assert_quiet().await;

    // A console connecting now also gets the bookings in progress, oldest first;
    // ended ones are not listed.
    let done = service.book("13", "bike").await.unwrap().id;
    service.cancel(done, "changed my mind").await.unwrap();
    let waiting = service.book("14", "van").await.unwrap().id;
    let mut late = edge
        .connect_with("/ws", &token(Role::Admin, "ops"), "&fleet=1")
        .await;
    let snapshot = late.next().await;
    assert_eq!(
        snapshot["payload"]["bookings"],
        json!([
            {"booking_id": booking.to_string(), "status": "Accepted"},
            {"booking_id": waiting.to_string(), "status": "Pending"},
        ])
    );
    assert_eq!(snapshot["payload"]["drivers"].as_array().unwrap().len(), 3);
    edge.stop().await;
    core.stop().await;
}

async fn a_fleet_of_thousands_fits_its_snapshot(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let edge = spawn_edge(core.addr, &[]).await;
    let service = core.as_(Role::Service, "backend").await;
    // More drivers than one 64 KiB frame can list (about 100 bytes each).
    const DRIVERS: usize = 2000;
    for chunk in (0..DRIVERS).collect::<Vec<_>>().chunks(100) {
        let online = chunk.iter().map(|i| {
            let mut service = service.clone();
            async move {
                service
                    .locations
                    .set_driver_status(pb::SetDriverStatusRequest {
                        driver_id: format!("d{i}"),
                        status: pb::DriverStatus::Available as i32,
                        vehicle_type: "car".into(),
                    })
                    .await
                    .unwrap();
            }
        });
        futures::future::join_all(online).await;
    }
    let mut console = edge
        .connect_with("/ws", &token(Role::Admin, "ops"), "&fleet=1")
        .await;
    let snapshot = console.next().await;
    assert_eq!(snapshot["type"], "fleet_snapshot");
    assert_eq!(
        snapshot["payload"]["drivers"].as_array().unwrap().len(),
        DRIVERS
    );
    // The console stays connected and live.
    let mut service = service;
    service.move_driver("d7", 37.78, -122.41).await.unwrap();
    assert_eq!(console.next().await["payload"]["driver_id"], "d7");
    edge.stop().await;
    core.stop().await;
}

async fn only_admins_may_watch_the_fleet(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let edge = spawn_edge(core.addr, &[]).await;
    for (path, role) in [("/ws", Role::Driver), ("/ws", Role::User)] {
        let url = format!("{}&fleet=1", edge.url(path, &token(role, "45")));
        let (status, body) = edge.refused(&url).await;
        assert_eq!(status, 403);
        assert_eq!(
            body,
            format!(
                "fleet=1 is for admin tokens on /ws: this is a {} token\n",
                role.as_str()
            )
        );
    }
    let url = format!(
        "{}&fleet=1",
        edge.url("/regular_user/ws/bookings/", &token(Role::User, "12"))
    );
    assert_eq!(edge.refused(&url).await.0, 403);
    edge.stop().await;
    core.stop().await;
}

crate::on_every_store!(
    the_fleet_topic_over_grpc,
    an_admin_watches_every_driver_move,
    a_fleet_of_thousands_fits_its_snapshot,
    only_admins_may_watch_the_fleet,
);
