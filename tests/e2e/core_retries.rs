//! Retries are safe: a CreateBooking repeated with its request_id (say, after its
//! answer was lost to a core-svc crash) gets the booking the first call made.

use crate::support::*;
use logi::auth::Role;

async fn a_repeated_request_id_gets_the_same_booking_across_a_restart(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let addr = core.addr.to_string();
    let mut rider = core.as_(Role::User, "12").await;
    let mut watcher = core.as_(Role::Admin, "ops").await;
    let mut events = watcher.subscribe(&["user_12_bookings"]).await;

    let request = || logi::pb::CreateBookingRequest {
        request_id: "3f1c9a7e-retry".into(),
        ..booking_request("12", "car")
    };
    let first = rider
        .bookings
        .create_booking(request())
        .await
        .unwrap()
        .into_inner();
    let again = rider
        .bookings
        .create_booking(request())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, first, "the same booking, as it is now");
    assert_eq!(
        events.take(1).await,
        [format!(
            "user_12_bookings booking_changed #{} unspecified->pending",
            first.id
        )]
    );
    events.assert_quiet().await;

    // The answer was lost to a crash: after the restart the retry still finds it.
    core.stop().await;
    let core = spawn_core_on(&addr, &db, &[]).await;
    let mut rider = core.as_(Role::User, "12").await;
    let retried = rider
        .bookings
        .create_booking(request())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried.id, first.id);

    // The same id with other details is a mistake, not a retry.
    let mut other = request();
    other.vehicle_type = "van".into();
    let refused = rider.bookings.create_booking(other).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        refused.message(),
        format!(
            "request_id \"3f1c9a7e-retry\" was used for booking {} with other details: send a new request_id for a new booking",
            first.id
        )
    );
    // Ids are the sender's own: another principal's same id is another request.
    let mut service = core.as_(Role::Service, "backend").await;
    let theirs = service
        .bookings
        .create_booking(request())
        .await
        .unwrap()
        .into_inner();
    assert_ne!(theirs.id, first.id);
    // Without a request id every call is a new booking.
    let a = rider.book("12", "car").await.unwrap();
    let b = rider.book("12", "car").await.unwrap();
    assert_ne!(a.id, b.id);
    let too_long = logi::pb::CreateBookingRequest {
        request_id: "x".repeat(65),
        ..booking_request("12", "car")
    };
    let refused = rider.bookings.create_booking(too_long).await.unwrap_err();
    assert_eq!(
        (refused.code(), refused.message()),
        (
            tonic::Code::InvalidArgument,
            "request_id may have at most 64 printable ASCII characters, no spaces"
        )
    );
    core.stop().await;
}

crate::on_every_store!(a_repeated_request_id_gets_the_same_booking_across_a_restart,);
