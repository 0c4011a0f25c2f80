//! core-svc's limits and its shutdown as a balancer sees them: Subscribe streams per
//! principal, and health going NOT_SERVING for the whole server at once.

use crate::support::*;
use logi::auth::Role;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

async fn a_principal_may_hold_only_so_many_streams_services_are_not_counted(db: Db) {
    let core = spawn_core(&db, &["--max-streams-per-principal", "2"]).await;
    let mut rider = core.as_(Role::User, "12").await;
    let first = rider.subscribe(&["user_12_bookings"]).await;
    let _second = rider.subscribe(&["user_12_bookings"]).await;
    let req = logi::pb::SubscribeRequest {
        topics: vec!["user_12_bookings".into()],
        ..Default::default()
    };
    let refused = rider.events.subscribe(req.clone()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        refused.message(),
        "user 12 already has 2 streams open: close one before subscribing again"
    );
    // Another principal is not affected; a closed stream gives its place back.
    let mut other = core.as_(Role::User, "13").await;
    let _theirs = other.subscribe(&["user_13_bookings"]).await;
    drop(first);
    let again = async {
        loop {
            if rider.events.subscribe(req.clone()).await.is_ok() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(PATIENCE, again).await.unwrap();
    // An edge carries every app's stream on one service token.
    let mut edge = core.as_(Role::Service, "ws-edge").await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(edge.subscribe(&["user_12_bookings"]).await);
    }
    core.stop().await;
}

async fn shutdown_marks_the_whole_server_not_serving_first(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let mut health = HealthClient::new(core.channel().await);
    let mut watches = Vec::new();
    for service in ["", "logi.v1.BookingService", "logi.v1.EventService"] {
        let req = HealthCheckRequest {
            service: service.into(),
        };
        let mut watch = health.watch(req).await.unwrap().into_inner();
        let first = watch.message().await.unwrap().unwrap();
        assert_eq!(first.status, ServingStatus::Serving as i32, "{service:?}");
        watches.push((service, watch));
    }
    let stopped = tokio::spawn(core.stop());
    for (service, mut watch) in watches {
        let next = tokio::time::timeout(PATIENCE, watch.message())
            .await
            .expect("an update at shutdown")
            .unwrap()
            .unwrap();
        assert_eq!(next.status, ServingStatus::NotServing as i32, "{service:?}");
    }
    stopped.await.unwrap();
}

crate::on_every_store!(
    a_principal_may_hold_only_so_many_streams_services_are_not_counted,
    shutdown_marks_the_whole_server_not_serving_first,
);
