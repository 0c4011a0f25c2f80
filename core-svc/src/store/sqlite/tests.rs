use std::sync::Mutex;
use std::time::Duration;

use logi::pb::event::Kind;

use super::*;
use crate::hub::EPHEMERAL_SPAN;
use crate::model::{BookingStatus, GeoPoint, Place};
use crate::store::Effects;

#[derive(Default)]
struct Recorder(Mutex<Vec<Effects>>);

impl CommitSink for Recorder {
    fn committed(&self, effects: &Effects) {
        self.0.lock().unwrap().push(effects.clone());
    }
}

impl Recorder {
    fn take(&self) -> Vec<(String, &'static str)> {
        let all = std::mem::take(&mut *self.0.lock().unwrap());
        all.into_iter()
            .flat_map(|fx| fx.events)
            .map(|e| {
                let kind = match e.kind.unwrap() {
                    Kind::BookingChanged(_) => "booking_changed",
                    Kind::OtpIssued(_) => "otp_issued",
                    Kind::BookingOffered(_) => "booking_offered",
                    Kind::OfferClosed(_) => "offer_closed",
                    Kind::DriverLocation(_) => "driver_location",
                    Kind::DriverStatus(_) => "driver_status",
                    Kind::ResyncRequired(_) => "resync_required",
                    Kind::StreamHead(_) => "stream_head",
                    Kind::Snapshot(_) => "snapshot",
                };
                (e.topic, kind)
            })
            .collect()
    }
}

fn open(path: &Path) -> (Sqlite, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    let sink = rec.clone();
    (Sqlite::open(path, move |_| sink).unwrap(), rec)
}

fn id(s: &str) -> Id {
    Id::new(s).unwrap()
}

fn new_booking() -> NewBooking {
    let place = |lat| Place {
        point: GeoPoint { lat, lon: 0.0 },
        address: format!("{lat} Main St"),
    };
    NewBooking {
        user_id: id("12"),
        pickup: place(1.0),
        dropoff: place(1.1),
        vehicle_type: "car".into(),
        phone_number: "+1234567890".into(),
        price_estimate: 15.84,
        distance_m: 11_119.5,
        request: None,
    }
}

fn offer(d: &str) -> Offer {
    Offer {
        driver_id: id(d),
        distance_m: 100.0,
    }
}

/// Driver `d` online with a car.
async fn online(store: &Sqlite, d: &str) {
    store
        .set_driver_status(id(d), DriverStatus::Available, Some("car".into()))
        .await
        .unwrap();
}

/// A new booking, offered to driver 45.
async fn offered_to_45(store: &Sqlite) -> Booking {
    store
        .create_booking(new_booking(), vec![offer("45")])
        .await
        .unwrap()
}

fn t(topic: &str, kind: &'static str) -> (String, &'static str) {
    (topic.to_owned(), kind)
}

#[tokio::test]
async fn a_whole_lifecycle_commits_state_and_events_together() {
    let dir = tempfile::tempdir().unwrap();
    let (store, rec) = open(&dir.path().join("db/logi.db"));
    for d in ["45", "46"] {
        online(&store, d).await;
    }
    rec.take();

    let b = store
        .create_booking(new_booking(), vec![offer("45"), offer("46")])
        .await
        .unwrap();
    assert_eq!(b.status, BookingStatus::Pending);
    assert_eq!(
        rec.take(),
        [
            t("user_12_bookings", "booking_changed"),
            t("admins", "booking_changed"),
            t("driver_45_available_bookings", "booking_offered"),
            t("driver_46_available_bookings", "booking_offered"),
        ]
    );

    let accepted = store.accept(b.id, id("45")).await.unwrap();
    assert_eq!(
        (accepted.status, accepted.driver_id.clone()),
        (BookingStatus::Accepted, Some(id("45")))
    );
    assert_eq!(
        rec.take(),
        [
            t("user_12_bookings", "booking_changed"),
            t("driver_45_bookings", "booking_changed"),
            t("admins", "booking_changed"),
            t("user_12_bookings", "otp_issued"),
            t("driver_45_available_bookings", "offer_closed"),
            t("driver_46_available_bookings", "offer_closed"),
            t("admins", "driver_status"),
        ]
    );
    assert_eq!(
        store.accept(b.id, id("46")).await.unwrap_err(),
        Error::Taken(b.id)
    );

    let otp = accepted.otp.clone().unwrap();
    let wrong = if otp == "000000" { "111111" } else { "000000" };
    assert_eq!(
        store
            .verify_otp(b.id, id("45"), wrong.into())
            .await
            .unwrap_err(),
        Error::WrongOtp {
            booking: b.id,
            left: 4
        }
    );
    assert_eq!(
        store.booking(b.id).await.unwrap().otp_failures,
        1,
        "a wrong try is committed"
    );
    let on_trip = store.verify_otp(b.id, id("45"), otp).await.unwrap();
    assert_eq!(on_trip.status, BookingStatus::OnTrip);
    assert!(on_trip.pickup_time.is_some());
    rec.take();

    let done = store.complete(b.id, id("45")).await.unwrap();
    assert_eq!(done.status, BookingStatus::Completed);
    assert_eq!(
        rec.take(),
        [
            t("user_12_bookings", "booking_changed"),
            t("driver_45_bookings", "booking_changed"),
            t("admins", "booking_changed"),
            t("admins", "driver_status"),
        ]
    );
    let drivers = store.drivers().await.unwrap();
    assert!(
        drivers
            .iter()
            .all(|d| d.driver.status == DriverStatus::Available && d.driver.active.is_none())
    );

    // The user topic's history is the five durable events, in order.
    let history = store
        .events_after("user_12_bookings".into(), 0, 100)
        .await
        .unwrap();
    let offsets: Vec<u64> = history.iter().map(|e| e.cursor.unwrap().offset).collect();
    assert_eq!(
        offsets,
        (1..=5).map(|s| s * EPHEMERAL_SPAN).collect::<Vec<_>>()
    );
    assert_eq!(
        store
            .events_after("user_12_bookings".into(), 3, 100)
            .await
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn five_wrong_otps_lock_until_a_new_one_is_issued() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(&dir.path().join("logi.db"));
    online(&store, "45").await;
    let b = offered_to_45(&store).await;
    let otp = store.accept(b.id, id("45")).await.unwrap().otp.unwrap();
    let wrong = if otp == "000000" { "111111" } else { "000000" };
    for left in (0..5).rev() {
        assert_eq!(
            store
                .verify_otp(b.id, id("45"), wrong.into())
                .await
                .unwrap_err(),
            Error::WrongOtp {
                booking: b.id,
                left
            }
        );
    }
    assert_eq!(
        store
            .verify_otp(b.id, id("45"), otp.clone())
            .await
            .unwrap_err(),
        Error::OtpLocked(b.id)
    );
    let fresh = store.issue_otp(b.id).await.unwrap();
    let new_otp = fresh.otp.unwrap();
    assert_eq!(fresh.otp_failures, 0);
    assert_eq!(
        store
            .verify_otp(b.id, id("45"), new_otp)
            .await
            .unwrap()
            .status,
        BookingStatus::OnTrip
    );
}

#[tokio::test]
async fn cancel_frees_the_driver_and_closes_open_offers() {
    let dir = tempfile::tempdir().unwrap();
    let (store, rec) = open(&dir.path().join("logi.db"));
    online(&store, "45").await;
    let pending = offered_to_45(&store).await;
    rec.take();
    let c = store
        .cancel(pending.id, Canceller::User, None, "changed my mind".into())
        .await
        .unwrap();
    assert_eq!(
        (c.status, c.cancelled_by, c.cancel_reason.as_str()),
        (
            BookingStatus::Cancelled,
            Some(Canceller::User),
            "changed my mind"
        )
    );
    assert_eq!(
        rec.take(),
        [
            t("user_12_bookings", "booking_changed"),
            t("admins", "booking_changed"),
            t("driver_45_available_bookings", "offer_closed")
        ]
    );

    let b = offered_to_45(&store).await;
    store.accept(b.id, id("45")).await.unwrap();
    rec.take();
    let c = store
        .cancel(b.id, Canceller::Driver, Some(id("45")), String::new())
        .await
        .unwrap();
    assert_eq!(c.cancelled_by, Some(Canceller::Driver));
    assert_eq!(
        rec.take(),
        [
            t("user_12_bookings", "booking_changed"),
            t("driver_45_bookings", "booking_changed"),
            t("admins", "booking_changed"),
            t("admins", "driver_status"),
        ]
    );
    let d = store.drivers().await.unwrap().pop().unwrap();
    assert_eq!(
        (d.driver.status, d.driver.active),
        (DriverStatus::Available, None)
    );
}

#[tokio::test]
async fn rejected_transitions_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, rec) = open(&dir.path().join("logi.db"));
    online(&store, "45").await;
    online(&store, "47").await;
    let b = offered_to_45(&store).await;
    rec.take();
    let err = store.accept(b.id, id("47")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("booking {} was not offered to driver 47", b.id)
    );
    assert_eq!(
        store
            .complete(b.id, id("45"))
            .await
            .unwrap_err()
            .to_string(),
        format!(
            "booking {} is pending: only a booking on trip can be completed",
            b.id
        )
    );
    assert_eq!(
        store.accept(999, id("45")).await.unwrap_err(),
        Error::BookingNotFound(999)
    );
    assert!(rec.take().is_empty());
    assert_eq!(
        store.booking(b.id).await.unwrap().status,
        BookingStatus::Pending
    );
    assert_eq!(
        store
            .topic_state("user_12_bookings".into())
            .await
            .unwrap()
            .last_seq,
        1
    );
}

#[tokio::test]
async fn a_reopened_database_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logi.db");
    let (store, _) = open(&path);
    let epoch = store.epoch();
    store
        .set_driver_status(id("45"), DriverStatus::Available, Some("van".into()))
        .await
        .unwrap();
    let b = offered_to_45(&store).await;
    store.accept(b.id, id("45")).await.unwrap();
    drop(store);

    let (store, _) = open(&path);
    assert_eq!(store.epoch(), epoch);
    assert_eq!(
        store.booking(b.id).await.unwrap().status,
        BookingStatus::Accepted
    );
    let d = store.drivers().await.unwrap().pop().unwrap();
    assert_eq!(
        (
            d.driver.status,
            d.driver.vehicle_type.as_str(),
            d.driver.active.map(|a| a.booking_id)
        ),
        (DriverStatus::OnTrip, "van", Some(b.id))
    );
    assert_eq!(
        store
            .topic_state("user_12_bookings".into())
            .await
            .unwrap()
            .last_seq,
        3
    );
}

#[tokio::test]
async fn retention_removes_old_events_and_remembers_where_it_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(&dir.path().join("logi.db"));
    store.create_booking(new_booking(), vec![]).await.unwrap();
    store.create_booking(new_booking(), vec![]).await.unwrap();
    assert_eq!(
        store
            .prune(SystemTime::now() + Duration::from_secs(1))
            .await
            .unwrap(),
        4
    );
    assert_eq!(
        store.topic_state("user_12_bookings".into()).await.unwrap(),
        TopicState {
            last_seq: 2,
            pruned_seq: 2
        }
    );
    assert!(
        store
            .events_after("user_12_bookings".into(), 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn pages_of_bookings_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(&dir.path().join("logi.db"));
    for _ in 0..5 {
        store.create_booking(new_booking(), vec![]).await.unwrap();
    }
    let q = |before| BookingQuery {
        user_id: Some(id("12")),
        before,
        limit: 2,
        ..Default::default()
    };
    let (page, next) = store.bookings(q(None)).await.unwrap();
    assert_eq!(page.iter().map(|b| b.id).collect::<Vec<_>>(), [5, 4]);
    let (page, next) = store.bookings(q(next)).await.unwrap();
    assert_eq!(page.iter().map(|b| b.id).collect::<Vec<_>>(), [3, 2]);
    let (page, next) = store.bookings(q(next)).await.unwrap();
    assert_eq!(
        (page.iter().map(|b| b.id).collect::<Vec<_>>(), next),
        (vec![1], None)
    );
    let none = BookingQuery {
        user_id: Some(id("13")),
        limit: 10,
        ..Default::default()
    };
    assert!(store.bookings(none).await.unwrap().0.is_empty());
}

#[tokio::test]
async fn writes_committed_together_keep_their_own_outcomes_and_order() {
    let dir = tempfile::tempdir().unwrap();
    let (store, rec) = open(&dir.path().join("logi.db"));
    // Many writes at once: they are grouped into shared transactions. Every other one
    // fails (no such booking) and must change nothing, the others must all land.
    let mut calls = Vec::new();
    for i in 0..40 {
        let store = store.clone();
        calls.push(tokio::spawn(async move {
            if i % 2 == 0 {
                store
                    .create_booking(new_booking(), vec![])
                    .await
                    .map(|b| b.id)
            } else {
                store.accept(10_000 + i, id("45")).await.map(|b| b.id)
            }
        }));
    }
    let mut created = Vec::new();
    for (i, call) in calls.into_iter().enumerate() {
        match call.await.unwrap() {
            Ok(booking) => created.push(booking),
            Err(e) => assert_eq!((i % 2, e), (1, Error::BookingNotFound(10_000 + i as u64))),
        }
    }
    assert_eq!(created.len(), 20);
    // Each created booking told its rider and the admins once, in offset order.
    let events = rec.take();
    assert_eq!(events.len(), 40);
    let history = store
        .events_after("user_12_bookings".into(), 0, 100)
        .await
        .unwrap();
    let offsets: Vec<u64> = history
        .iter()
        .map(|e| e.cursor.unwrap().offset / EPHEMERAL_SPAN)
        .collect();
    assert_eq!(offsets, (1..=20).collect::<Vec<_>>());
}

#[tokio::test]
async fn snapshots_show_open_offers_bookings_in_progress_and_recent_ends() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _rec) = open(&dir.path().join("logi.db"));
    for d in ["45", "46", "47"] {
        online(&store, d).await;
    }
    let taken = offered_to_45(&store).await;
    let open = store
        .create_booking(new_booking(), vec![offer("45"), offer("46"), offer("47")])
        .await
        .unwrap();
    store.accept(taken.id, id("45")).await.unwrap();
    let done = store
        .create_booking(new_booking(), vec![offer("46")])
        .await
        .unwrap();
    store.accept(done.id, id("46")).await.unwrap();
    store
        .cancel(done.id, Canceller::User, None, String::new())
        .await
        .unwrap();

    let user = Topic::UserBookings(id("12"));
    let (state, snap) = store.topic_snapshot(user.clone()).await.unwrap();
    assert_eq!(state, store.topic_state(user.to_string()).await.unwrap());
    let shown: Vec<(BookingId, BookingStatus)> =
        snap.bookings.iter().map(|b| (b.id, b.status)).collect();
    assert_eq!(
        shown,
        [
            (taken.id, BookingStatus::Accepted),
            (open.id, BookingStatus::Pending),
            (done.id, BookingStatus::Cancelled),
        ],
        "oldest first, the cancelled one too: it ended just now"
    );
    assert!(
        snap.bookings[0].otp.is_some(),
        "the rider's accepted booking keeps its OTP"
    );

    // Driver 47 was offered `open` and took nothing: the offer is still open to it.
    // Driver 45 took `taken`, which closed its offer of `open`.
    let (_, offers) = store
        .topic_snapshot(Topic::DriverAvailable(id("47")))
        .await
        .unwrap();
    let open_offers: Vec<(BookingId, f64)> =
        offers.offers.iter().map(|(b, d)| (b.id, *d)).collect();
    assert_eq!(open_offers, [(open.id, 100.0)]);
    assert!(offers.bookings.is_empty());
    let (_, busy) = store
        .topic_snapshot(Topic::DriverAvailable(id("45")))
        .await
        .unwrap();
    assert!(busy.offers.is_empty());
    let (_, mine) = store
        .topic_snapshot(Topic::DriverBookings(id("45")))
        .await
        .unwrap();
    assert_eq!(
        mine.bookings.iter().map(|b| b.id).collect::<Vec<_>>(),
        [taken.id]
    );
    let (_, admins) = store.topic_snapshot(Topic::Admins).await.unwrap();
    assert_eq!(admins, TopicSnapshot::default());
}

#[tokio::test]
async fn a_full_disk_answers_unavailable_changes_nothing_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _rec) = open(&dir.path().join("logi.db"));
    online(&store, "45").await;
    let before = offered_to_45(&store).await;
    // The database may not grow past its current size: SQLite answers SQLITE_FULL,
    // as it does when the disk itself is full.
    let pages: i64 = store
        .0
        .writer
        .write(|t| {
            let n: i64 = t.tx.query_row("PRAGMA page_count", [], |r| r.get(0))?;
            t.tx.query_row(&format!("PRAGMA max_page_count = {n}"), [], |r| {
                r.get::<_, i64>(0)
            })?;
            Ok(n)
        })
        .await
        .unwrap();
    let mut refused = None;
    for _ in 0..200 {
        match store.create_booking(new_booking(), vec![offer("45")]).await {
            Ok(_) => {}
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let refused = refused.expect("the database filled up");
    assert_eq!(
        refused.code(),
        tonic::Code::Unavailable,
        "{}",
        crate::error::chain(&refused)
    );
    assert_eq!(refused.to_string(), crate::error::DISK_FULL);
    // Many at once, committed together: every caller of the batch hears UNAVAILABLE,
    // those whose write was never run too.
    let many = futures::future::join_all(
        (0..32).map(|_| store.create_booking(new_booking(), vec![offer("45")])),
    )
    .await;
    for answer in many {
        let e = answer.unwrap_err();
        assert_eq!(
            e.code(),
            tonic::Code::Unavailable,
            "{}",
            crate::error::chain(&e)
        );
    }
    let (page, _) = store
        .bookings(BookingQuery {
            user_id: Some(id("12")),
            limit: 500,
            ..Default::default()
        })
        .await
        .unwrap();
    let newest = page[0].id;

    // Space again: writes go on, and the refused one left nothing behind.
    store
        .0
        .writer
        .write(move |t| {
            t.tx.query_row(
                &format!("PRAGMA max_page_count = {}", pages * 1000),
                [],
                |r| r.get::<_, i64>(0),
            )?;
            Ok(())
        })
        .await
        .unwrap();
    let after = store
        .create_booking(new_booking(), vec![offer("45")])
        .await
        .unwrap();
    assert_eq!(
        after.id,
        newest + 1,
        "no booking half-written by the refused call"
    );
    assert!(after.id > before.id);
    assert_eq!(
        store.booking(before.id).await.unwrap().status,
        BookingStatus::Pending
    );
}

#[tokio::test]
async fn accepting_one_booking_closes_the_drivers_other_offers() {
    let dir = tempfile::tempdir().unwrap();
    let (store, rec) = open(&dir.path().join("logi.db"));
    for d in ["45", "46"] {
        online(&store, d).await;
    }
    let first = offered_to_45(&store).await;
    let second = store
        .create_booking(new_booking(), vec![offer("45"), offer("46")])
        .await
        .unwrap();
    rec.take();
    store.accept(first.id, id("45")).await.unwrap();
    let closed: Vec<(String, &str)> = rec
        .take()
        .into_iter()
        .filter(|(_, kind)| *kind == "offer_closed")
        .collect();
    assert_eq!(
        closed,
        [
            t("driver_45_available_bookings", "offer_closed"), // its own: accepted
            t("driver_45_available_bookings", "offer_closed"), // the other: busy
        ]
    );
    // The other booking is still offered to 46, who may take it; 45 may not.
    assert!(store.accept(second.id, id("45")).await.is_err());
    store.accept(second.id, id("46")).await.unwrap();
}
