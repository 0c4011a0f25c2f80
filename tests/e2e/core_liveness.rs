//! Drivers who go silent leave dispatch and come back with their next position;
//! positions outlive a core-svc restart.

use crate::support::*;
use logi::auth::Role;

async fn a_silent_driver_leaves_dispatch_and_its_next_position_brings_it_back(db: Db) {
    let core = spawn_core(&db, &["--driver-stale-after", "1s"]).await;
    let mut service = core.as_(Role::Service, "backend").await;
    let mut admins = service.subscribe(&["admins"]).await;
    let mut offers = service.subscribe(&["driver_45_available_bookings"]).await;
    service.driver_online("45", "car", PICKUP.0, PICKUP.1).await;
    assert_eq!(admins.take(1).await, ["admins driver_status 45 available"]);

    // No position for more than a second: out of dispatch, and the admins hear it.
    assert_eq!(admins.take(1).await, ["admins driver_status 45 offline"]);
    let missed = service.book("12", "car").await.unwrap();
    admins.take(1).await; // the booking
    offers.assert_quiet().await;

    // Its next position brings it back.
    service.move_driver("45", PICKUP.0, PICKUP.1).await.unwrap();
    assert_eq!(admins.take(1).await, ["admins driver_status 45 available"]);
    let offered = service.book("13", "car").await.unwrap();
    assert_eq!(
        offers.take(1).await,
        [format!(
            "driver_45_available_bookings booking_offered #{}",
            offered.id
        )]
    );
    assert_ne!(missed.id, offered.id);
    core.stop().await;
}

async fn after_a_restart_drivers_are_found_where_they_last_were(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let mut service = core.as_(Role::Service, "backend").await;
    service.driver_online("45", "car", PICKUP.0, PICKUP.1).await;
    core.stop().await;

    let core = spawn_core(&db, &[]).await;
    let mut service = core.as_(Role::Service, "backend").await;
    let mut offers = service.subscribe(&["driver_45_available_bookings"]).await;
    let booking = service.book("12", "car").await.unwrap();
    assert_eq!(
        offers.take(1).await,
        [format!(
            "driver_45_available_bookings booking_offered #{}",
            booking.id
        )],
        "offered without a new position"
    );
    let found = service
        .locations
        .get_driver_location(logi::pb::GetDriverLocationRequest {
            driver_id: "45".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((found.latitude, found.longitude), PICKUP);
    core.stop().await;
}

crate::on_every_store!(
    a_silent_driver_leaves_dispatch_and_its_next_position_brings_it_back,
    after_a_restart_drivers_are_found_where_they_last_were,
);
