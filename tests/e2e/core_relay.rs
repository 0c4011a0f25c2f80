//! LocationService.RelayDriverLocations from a plain tonic client, as ws-edge uses
//! it: many drivers' positions on one stream, each batch answered with its
//! refusals, the stream going on past them; `service` tokens only.

use crate::support::*;
use logi::auth::Role;
use logi::pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

fn at(driver: &str, latitude: f64) -> pb::UpdateDriverLocationRequest {
    pb::UpdateDriverLocationRequest {
        driver_id: driver.into(),
        latitude,
        longitude: -122.4,
        heading: 0.0,
        speed_mps: 0.0,
    }
}

async fn each_batch_is_answered_with_its_refusals_and_the_stream_goes_on(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let mut service = core.as_(Role::Service, "edge").await;
    service.driver_online("45", "car", PICKUP.0, PICKUP.1).await;
    let trip = service.book("12", "car").await.unwrap().id;
    service.accept(trip, "45").await.unwrap();
    let mut rider = service.subscribe(&["user_12_bookings"]).await;

    let (tx, rx) = mpsc::channel(4);
    let mut answers = service
        .locations
        .relay_driver_locations(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let batch = vec![
        at("45", 37.70),
        at("99", 37.0),
        at("45", 91.0),
        at("45", 37.71),
    ];
    tx.send(pb::LocationBatch { positions: batch })
        .await
        .unwrap();
    let answer = answers.message().await.unwrap().unwrap();
    let refused: Vec<(u32, i32)> = answer.refused.iter().map(|r| (r.index, r.code)).collect();
    assert_eq!(
        refused,
        [
            (1, Code::NotFound as i32),
            (2, Code::InvalidArgument as i32)
        ]
    );
    assert_eq!(
        answer.refused[0].message,
        "driver 99 is not registered: call SetDriverStatus first"
    );
    // The good ones were applied, in order.
    for lat in [37.70, 37.71] {
        match rider.next().await.kind {
            Some(pb::event::Kind::DriverLocation(l)) => {
                assert_eq!(l.location.unwrap().latitude, lat);
            }
            other => panic!("expected a position, got {other:?}"),
        }
    }
    // The stream goes on.
    tx.send(pb::LocationBatch {
        positions: vec![at("45", 37.72)],
    })
    .await
    .unwrap();
    assert!(answers.message().await.unwrap().unwrap().refused.is_empty());

    // A batch over the limit ends it.
    let big = (0..1025).map(|_| at("45", 37.7)).collect();
    tx.send(pb::LocationBatch { positions: big }).await.unwrap();
    let status = answers.message().await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "a batch holds at most 1024 positions, this one 1025"
    );
    core.stop().await;
}

async fn only_service_tokens_may_relay(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let mut driver = core.as_(Role::Driver, "45").await;
    let (_tx, rx) = mpsc::channel::<pb::LocationBatch>(1);
    let status = driver
        .locations
        .relay_driver_locations(ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        status.message(),
        "RelayDriverLocations is for ws-edge, with a service token: drivers use UpdateDriverLocation or StreamDriverLocations"
    );
    core.stop().await;
}

crate::on_every_store!(
    each_batch_is_answered_with_its_refusals_and_the_stream_goes_on,
    only_service_tokens_may_relay,
);
