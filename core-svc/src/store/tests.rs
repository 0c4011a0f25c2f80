//! The store tests, run on every store: each test body takes a [`Fixture`] and
//! [`on_every_store!`] makes one `#[tokio::test]` of it per store. The PostgreSQL
//! ones need a server: `LOGI_TEST_POSTGRES_URL` (a URL of a user that may create
//! databases, e.g. `postgres://postgres@127.0.0.1:5432/postgres`); without it they
//! pass without running. Each runs in a scratch database of its own.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use logi::id::Id;
use logi::pb::event::Kind;
use logi::topic::Topic;
use tempfile::TempDir;

use super::postgres::Postgres;
use super::postgres::scratch::ScratchDatabase;
use super::sqlite::Sqlite;
use super::*;
use crate::hub::EPHEMERAL_SPAN;
use crate::model::{GeoPoint, Offer, Place};

/// Where the tests of PostgreSQL find a server.
pub const POSTGRES_URL: &str = "LOGI_TEST_POSTGRES_URL";

#[derive(Default)]
pub struct Recorder(Mutex<Vec<Effects>>);

impl CommitSink for Recorder {
    fn committed(&self, effects: &Effects) {
        self.0.lock().unwrap().push(effects.clone());
    }
}

impl Recorder {
    /// The events committed since the last take: topic and kind.
    pub fn take(&self) -> Vec<(String, &'static str)> {
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
                    Kind::DriverPosition(_) => "driver_position",
                };
                (e.topic, kind)
            })
            .collect()
    }
}

/// A store on a database of its own, and what it committed.
pub struct Fixture {
    pub store: Arc<dyn Store>,
    pub rec: Arc<Recorder>,
    pub place: Database,
}

/// Where a fixture's database is.
pub enum Database {
    Sqlite(TempDir),
    Postgres(ScratchDatabase),
}

impl Fixture {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let place = Database::Sqlite(dir);
        let (store, rec) = Self::open_sqlite(&place);
        Self { store, rec, place }
    }

    /// `None` when no server was named in [`POSTGRES_URL`].
    pub async fn postgres() -> Option<Self> {
        let admin = std::env::var(POSTGRES_URL).ok()?;
        let db = ScratchDatabase::create(&admin).await.unwrap();
        let place = Database::Postgres(db);
        let (store, rec) = Self::open_postgres(&place).await;
        Some(Self { store, rec, place })
    }

    fn open_sqlite(place: &Database) -> (Arc<dyn Store>, Arc<Recorder>) {
        let Database::Sqlite(dir) = place else {
            unreachable!()
        };
        let rec = Arc::new(Recorder::default());
        let sink = rec.clone();
        let store = Sqlite::open(&dir.path().join("db/logi.db"), move |_| sink).unwrap();
        (Arc::new(store), rec)
    }

    async fn open_postgres(place: &Database) -> (Arc<dyn Store>, Arc<Recorder>) {
        let Database::Postgres(db) = place else {
            unreachable!()
        };
        let rec = Arc::new(Recorder::default());
        let sink = rec.clone();
        let store = Postgres::open(db.url(), move |_| sink).await.unwrap();
        (Arc::new(store), rec)
    }

    /// Another store on the same database, as another replica would open it.
    pub async fn another(&self) -> (Arc<dyn Store>, Arc<Recorder>) {
        match &self.place {
            Database::Sqlite(_) => Self::open_sqlite(&self.place),
            Database::Postgres(_) => Self::open_postgres(&self.place).await,
        }
    }

    /// The store closed and the database opened again, as after a restart.
    pub async fn reopen(self) -> Self {
        let Self { store, place, .. } = self;
        drop(store);
        let (store, rec) = match &place {
            Database::Sqlite(_) => Self::open_sqlite(&place),
            Database::Postgres(_) => Self::open_postgres(&place).await,
        };
        Self { store, rec, place }
    }
}

/// One `#[tokio::test]` per store for each test body named.
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Fixture::sqlite()).await
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(fx) = super::Fixture::postgres().await {
                        super::$name(fx).await
                    }
                }
            )*
        }
    };
}

on_every_store!(
    a_whole_lifecycle_commits_state_and_events_together,
    five_wrong_otps_lock_until_a_new_one_is_issued,
    cancel_frees_the_driver_and_closes_open_offers,
    rejected_transitions_change_nothing,
    a_reopened_database_keeps_everything,
    retention_removes_old_events_and_remembers_where_it_cut,
    pages_of_bookings_newest_first,
    writes_committed_together_keep_their_own_outcomes_and_order,
    snapshots_show_open_offers_bookings_in_progress_and_recent_ends,
    accepting_one_booking_closes_the_drivers_other_offers,
    each_pending_booking_is_leased_to_one_replica_until_its_lease_lapses,
    topic_states_are_read_in_the_order_asked,
);

async fn topic_states_are_read_in_the_order_asked(fx: Fixture) {
    let store = fx.store.clone();
    store.create_booking(new_booking(), vec![]).await.unwrap();
    store.create_booking(new_booking(), vec![]).await.unwrap();
    let names = ["user_12_bookings", "nobody_reads_this", "admins"];
    let states = store
        .topic_states(names.iter().map(|n| n.to_string()).collect())
        .await
        .unwrap();
    let mut one_by_one = Vec::new();
    for name in names {
        one_by_one.push(store.topic_state(name.into()).await.unwrap());
    }
    assert_eq!(states, one_by_one);
    assert_eq!(states[0].last_seq, 2);
    assert_eq!(states[1], TopicState::default());
}

async fn each_pending_booking_is_leased_to_one_replica_until_its_lease_lapses(fx: Fixture) {
    let (one, two) = (fx.store.clone(), fx.another().await.0);
    let long = Duration::from_secs(60);
    let first = one.create_booking(new_booking(), vec![]).await.unwrap().id;
    let second = one.create_booking(new_booking(), vec![]).await.unwrap().id;
    let ids = |leased: Vec<PendingBooking>| -> Vec<u64> {
        let mut ids: Vec<u64> = leased.iter().map(|p| p.id).collect();
        ids.sort();
        ids
    };
    assert_eq!(
        ids(one.lease_pending(1, long).await.unwrap()),
        [first, second]
    );
    assert!(
        two.lease_pending(2, long).await.unwrap().is_empty(),
        "held by one"
    );
    assert_eq!(
        ids(one.lease_pending(1, long).await.unwrap()),
        [first, second],
        "renewed"
    );

    // A booking that stops being pending leaves the leases.
    one.expire(first).await.unwrap();
    assert_eq!(ids(one.lease_pending(1, long).await.unwrap()), [second]);

    // Replica one goes quiet: once its lease lapses, two takes the booking.
    assert_eq!(
        ids(one
            .lease_pending(1, Duration::from_millis(1))
            .await
            .unwrap()),
        [second]
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(ids(two.lease_pending(2, long).await.unwrap()), [second]);
    assert!(
        one.lease_pending(1, long).await.unwrap().is_empty(),
        "one lost it"
    );

    // Given up at shutdown: taken at once.
    two.release_leases(2).await.unwrap();
    assert_eq!(ids(one.lease_pending(1, long).await.unwrap()), [second]);
}

pub fn id(s: &str) -> Id {
    Id::new(s).unwrap()
}

pub fn new_booking() -> NewBooking {
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

pub fn offer(d: &str) -> Offer {
    Offer {
        driver_id: id(d),
        distance_m: 100.0,
    }
}

/// Driver `d` online with a car.
pub async fn online(store: &Arc<dyn Store>, d: &str) {
    store
        .set_driver_status(id(d), DriverStatus::Available, Some("car".into()))
        .await
        .unwrap();
}

/// A new booking, offered to driver 45.
pub async fn offered_to_45(store: &Arc<dyn Store>) -> Booking {
    store
        .create_booking(new_booking(), vec![offer("45")])
        .await
        .unwrap()
}

fn t(topic: &str, kind: &'static str) -> (String, &'static str) {
    (topic.to_owned(), kind)
}

async fn a_whole_lifecycle_commits_state_and_events_together(fx: Fixture) {
    let Fixture { store, rec, .. } = &fx;
    for d in ["45", "46"] {
        online(store, d).await;
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

async fn five_wrong_otps_lock_until_a_new_one_is_issued(fx: Fixture) {
    let store = &fx.store;
    online(store, "45").await;
    let b = offered_to_45(store).await;
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

async fn cancel_frees_the_driver_and_closes_open_offers(fx: Fixture) {
    let Fixture { store, rec, .. } = &fx;
    online(store, "45").await;
    let pending = offered_to_45(store).await;
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

    let b = offered_to_45(store).await;
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

async fn rejected_transitions_change_nothing(fx: Fixture) {
    let Fixture { store, rec, .. } = &fx;
    online(store, "45").await;
    online(store, "47").await;
    let b = offered_to_45(store).await;
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

async fn a_reopened_database_keeps_everything(fx: Fixture) {
    let store = &fx.store;
    let epoch = store.epoch();
    store
        .set_driver_status(id("45"), DriverStatus::Available, Some("van".into()))
        .await
        .unwrap();
    let b = offered_to_45(store).await;
    store.accept(b.id, id("45")).await.unwrap();

    let fx = fx.reopen().await;
    let store = &fx.store;
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

async fn retention_removes_old_events_and_remembers_where_it_cut(fx: Fixture) {
    let store = &fx.store;
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

async fn pages_of_bookings_newest_first(fx: Fixture) {
    let store = &fx.store;
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

async fn writes_committed_together_keep_their_own_outcomes_and_order(fx: Fixture) {
    let Fixture { store, rec, .. } = &fx;
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

async fn snapshots_show_open_offers_bookings_in_progress_and_recent_ends(fx: Fixture) {
    let store = &fx.store;
    for d in ["45", "46", "47"] {
        online(store, d).await;
    }
    let taken = offered_to_45(store).await;
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

async fn accepting_one_booking_closes_the_drivers_other_offers(fx: Fixture) {
    let Fixture { store, rec, .. } = &fx;
    for d in ["45", "46"] {
        online(store, d).await;
    }
    let first = offered_to_45(store).await;
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
