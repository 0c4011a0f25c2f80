//! Reconnects lose nothing: the snapshot an app gets on connecting (bookings that
//! ended while it was away, open offers), and the opt-in resume of `?recover=1` /
//! `?since=<cursor>`, across a core-svc restart too.

use crate::support::edge::{Ws, spawn_edge};
use crate::support::*;
use logi::auth::Role;
use logi::pb;
use serde_json::{Value, json};
use ws_edge::dialect::channels_time;

const RIDER: &str = "/regular_user/ws/bookings/";
const OFFERS: &str = "/driver/ws/available_bookings/";

fn completed(b: &pb::Booking) -> Value {
    json!({"type": "booking_status_update", "message": {"status": "completed", "booking_id": b.id,
           "dropoff_time": channels_time(b.dropoff_time.as_ref())}})
}

fn offered(id: u64, status: &str) -> Value {
    json!({"type": "available_booking_update", "message": {"status": status, "booking_id": id,
           "pickup_location": "123 Main St", "phone_number": "+1234567890", "dropoff_location": "456 Elm St"}})
}

/// The frame without its cursor, and the cursor.
fn uncursored(mut frame: Value) -> (Value, String) {
    let cursor = frame
        .as_object_mut()
        .and_then(|f| f.remove("cursor"))
        .and_then(|c| c.as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no cursor in {frame}"));
    (frame, cursor)
}

async fn take_cursored(ws: &mut Ws, n: usize) -> (Vec<Value>, String) {
    let mut frames = Vec::new();
    let mut last = String::new();
    for _ in 0..n {
        let (frame, cursor) = uncursored(ws.next().await);
        frames.push(frame);
        last = cursor;
    }
    (frames, last)
}

async fn a_rider_offline_while_its_trips_end_learns_it_on_reconnect(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let edge = spawn_edge(core.addr, &[]).await;
    let mut service = core.as_(Role::Service, "backend").await;
    service.driver_online("45", "car", PICKUP.0, PICKUP.1).await;

    let rider = edge.connect(RIDER, &token(Role::User, "12")).await;
    rider.close().await;
    // While the phone is off: one trip completes, the next is cancelled.
    let trip = service.book("12", "car").await.unwrap().id;
    service.accept(trip, "45").await.unwrap();
    let otp = service.get(trip).await.unwrap().otp;
    service.verify(trip, "45", otp).await.unwrap();
    let done = service.complete(trip, "45").await.unwrap();
    let dropped = service.book("12", "car").await.unwrap().id;
    service.cancel(dropped, "plans changed").await.unwrap();

    let mut rider = edge.connect(RIDER, &token(Role::User, "12")).await;
    assert_eq!(
        rider.take(2).await,
        [
            completed(&done),
            json!({"type": "booking_status_update", "message": {"status": "cancelled", "booking_id": dropped,
                   "message": "Booking has been cancelled by the user."}}),
        ]
    );
    rider.assert_quiet().await;
    edge.stop().await;
    core.stop().await;
}

async fn a_driver_reconnecting_inside_the_offer_window_sees_the_offer(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let edge = spawn_edge(core.addr, &[]).await;
    let mut service = core.as_(Role::Service, "backend").await;
    service.driver_online("45", "car", PICKUP.0, PICKUP.1).await;

    let mut driver = edge.connect(OFFERS, &token(Role::Driver, "45")).await;
    let first = service.book("12", "car").await.unwrap();
    assert_eq!(driver.next().await, offered(first.id, "pending"));
    driver.close().await;
    let second = service.book("13", "car").await.unwrap();

    // Both offers are still open: the reconnecting driver sees both, oldest first.
    let mut driver = edge.connect(OFFERS, &token(Role::Driver, "45")).await;
    assert_eq!(
        driver.take(2).await,
        [offered(first.id, "pending"), offered(second.id, "pending")]
    );
    driver.assert_quiet().await;
    // And in the logi dialect.
    let mut logi = edge.connect("/ws", &token(Role::Driver, "45")).await;
    let requests: Vec<Value> = logi
        .take(2)
        .await
        .into_iter()
        .map(|f| f["type"].clone())
        .collect();
    assert_eq!(requests, ["new_booking_request", "new_booking_request"]);
    // Once it accepts one, its other offers close for it ("busy": it cannot take
    // two), and the accepted booking shows as its own.
    service.accept(first.id, "45").await.unwrap();
    assert_eq!(
        logi.take(2).await,
        [
            json!({"user_id": "45", "type": "status_update", "payload": {"booking_id": first.id.to_string(), "status": "Accepted"}}),
            json!({"user_id": "45", "type": "booking_request_closed", "payload": {"booking_id": second.id.to_string(), "reason": "busy"}}),
        ]
    );
    let mut later = edge.connect(OFFERS, &token(Role::Driver, "45")).await;
    assert_eq!(later.take(1).await, [offered(first.id, "accepted")]);
    later.assert_quiet().await;
    edge.stop().await;
    core.stop().await;
}

async fn an_app_resuming_with_since_gets_exactly_what_it_missed_across_a_core_restart(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let addr = core.addr.to_string();
    let edge = spawn_edge(core.addr, &[]).await;
    let mut service = core.as_(Role::Service, "backend").await;
    service.driver_online("45", "car", PICKUP.0, PICKUP.1).await;
    let rider_token = token(Role::User, "12");

    let mut rider = edge.connect_with(RIDER, &rider_token, "&recover=1").await;
    let id = service.book("12", "car").await.unwrap().id;
    let (pending, cursor) = take_cursored(&mut rider, 1).await;
    assert_eq!(pending[0]["message"]["status"], "pending");
    rider.close().await;

    // Missed while away, with core-svc restarted in between.
    service.accept(id, "45").await.unwrap();
    let otp = service.get(id).await.unwrap().otp;
    core.stop().await;
    let core = spawn_core_on(&addr, &db, &[]).await;
    let mut service = core.as_(Role::Service, "backend").await;
    let started = service.verify(id, "45", otp.clone()).await.unwrap();

    let since = format!("&since={cursor}");
    let mut rider = edge.connect_with(RIDER, &rider_token, &since).await;
    let (missed, cursor) = take_cursored(&mut rider, 3).await;
    assert_eq!(
        missed,
        [
            json!({"type": "booking_status_update", "message": {"status": "accepted", "booking_id": id,
                   "pickup_location": "123 Main St", "phone_number": "+1234567890", "dropoff_location": "456 Elm St"}}),
            json!({"type": "send_otp_update", "otp": otp, "booking_id": id}),
            json!({"type": "booking_status_update", "message": {"status": "on_trip", "booking_id": id,
                   "pickup_time": channels_time(started.pickup_time.as_ref()), "message": "OTP Verified. Trip has started."}}),
        ],
        "exactly the missed frames, in order: no snapshot, no repeat of the pending one"
    );
    rider.assert_quiet().await;
    // Then live, with cursors that go on from there.
    let done = service.complete(id, "45").await.unwrap();
    let (frame, next) = uncursored(rider.next().await);
    assert_eq!(frame, completed(&done));
    assert_ne!(next, cursor);
    rider.assert_quiet().await;

    // The last cursor again: nothing is missed, nothing repeated.
    rider.close().await;
    let since = format!("&since={next}");
    let mut rider = edge.connect_with(RIDER, &rider_token, &since).await;
    rider.assert_quiet().await;
    edge.stop().await;
    core.stop().await;
}

async fn a_cursor_that_cannot_be_honoured_gets_resync_then_the_snapshot(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let edge = spawn_edge(core.addr, &[]).await;
    let mut service = core.as_(Role::Service, "backend").await;
    service.driver_online("45", "car", PICKUP.0, PICKUP.1).await;
    let id = service.book("13", "car").await.unwrap().id;
    let driver_token = token(Role::Driver, "45");
    let connect = |since: &str| {
        let query = format!("&since={since}");
        let (edge, token) = (&edge, &driver_token);
        async move { edge.connect_with(OFFERS, token, &query).await }
    };

    // Not a cursor at all: the edge says so, then shows the state.
    let mut driver = connect("garbage").await;
    let (resync, first_cursor) = uncursored(driver.next().await);
    assert_eq!(
        resync,
        json!({"type": "resync", "reason": "invalid_cursor",
               "message": "the cursor is not one this route hands out: reconnect without since"})
    );
    let (snapshot, cursor) = uncursored(driver.next().await);
    assert_eq!(snapshot, offered(id, "pending"));
    driver.assert_quiet().await;
    // The resync's cursor is from before the snapshot: an app cut off right after
    // it, resuming from the last cursor it got, is shown the snapshot again.
    let epoch = cursor.split('.').next().unwrap().to_owned();
    assert_eq!(first_cursor, format!("{epoch}.-.-"));
    let mut again = connect(&first_cursor).await;
    assert_eq!(uncursored(again.next().await).0, offered(id, "pending"));
    again.assert_quiet().await;

    // A cursor of another database (another epoch): core-svc refuses it per topic.
    let foreign = "7.1000000000.1000000000";
    let mut driver = connect(foreign).await;
    let mut frames = Vec::new();
    for _ in 0..3 {
        frames.push(uncursored(driver.next().await).0);
    }
    let resync = json!({"type": "resync", "reason": "epoch_changed",
                        "message": format!("cursor epoch 7 is not this event log's epoch {epoch}")});
    assert_eq!(frames, [resync.clone(), offered(id, "pending"), resync]);
    driver.assert_quiet().await;

    // The cursor handed out after the resync resumes cleanly.
    let mut driver = connect(&cursor).await;
    driver.assert_quiet().await;
    edge.stop().await;
    core.stop().await;
}

async fn without_recover_frames_carry_no_cursor_and_logi_resync_keeps_the_envelope(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let edge = spawn_edge(core.addr, &[]).await;
    let mut service = core.as_(Role::Service, "backend").await;
    service.driver_online("45", "car", PICKUP.0, PICKUP.1).await;
    let mut plain = edge.connect(RIDER, &token(Role::User, "12")).await;
    let id = service.book("12", "car").await.unwrap().id;
    assert!(plain.next().await.get("cursor").is_none());

    let mut rider = edge
        .connect_with("/ws", &token(Role::User, "12"), "&since=1.2")
        .await;
    let (resync, _) = uncursored(rider.next().await);
    assert_eq!(
        resync,
        json!({"user_id": "12", "type": "resync", "payload": {"reason": "epoch_changed",
               "message": resync["payload"]["message"]}})
    );
    let (status, _) = uncursored(rider.next().await);
    assert_eq!(
        status,
        json!({"user_id": "12", "type": "status_update", "payload": {"booking_id": id.to_string(), "status": "Pending"}})
    );
    rider.assert_quiet().await;
    edge.stop().await;
    core.stop().await;
}

crate::on_every_store!(
    a_rider_offline_while_its_trips_end_learns_it_on_reconnect,
    a_driver_reconnecting_inside_the_offer_window_sees_the_offer,
    an_app_resuming_with_since_gets_exactly_what_it_missed_across_a_core_restart,
    a_cursor_that_cannot_be_honoured_gets_resync_then_the_snapshot,
    without_recover_frames_carry_no_cursor_and_logi_resync_keeps_the_envelope,
);
