//! The storage interface and its implementations: embedded SQLite in [`sqlite`],
//! PostgreSQL (shared by several replicas) in [`postgres`].
//!
//! Each mutating method is ONE transaction: it checks the transition, changes the
//! state with a conditional update, and appends the events the change causes
//! ([`crate::fanout`]). A crash therefore never leaves a change without its events
//! or events without their change. After the commit the store hands the
//! [`Effects`] to its [`CommitSink`].
//!
//! # Layout
//! - [`transitions`]: the transitions, written once over the steps each store
//!   gives in its own SQL.
//! - `log`: durable events as subscribers see them.
//! - `records`: what both stores make of rows once read.

mod lease;
mod log;
pub mod postgres;
mod records;
pub mod sqlite;
pub mod transitions;

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use logi::id::Id;
use logi::pb;
use logi::topic::Topic;

use crate::error::Error;
use crate::model::{
    Booking, BookingId, BookingStatus, Canceller, Driver, DriverStatus, GeoPoint, Location,
    NewBooking, Offer,
};

/// What a committed transaction changed, for the live side.
#[derive(Debug, Default, Clone)]
pub struct Effects {
    /// The events appended, with topic, cursor and time filled in.
    pub events: Vec<pb::Event>,
    /// Drivers whose status, vehicle type or active trip changed, as they are now.
    pub drivers: Vec<Driver>,
    /// Bookings created pending, for dispatch to follow.
    pub created: Vec<PendingBooking>,
    /// Bookings that stopped being pending (accepted, cancelled, expired).
    pub settled: Vec<BookingId>,
}

/// Receives the effects of every commit before the caller hears of it. SQLite
/// commits one at a time and calls it in commit order; PostgreSQL commits
/// concurrently, so two transactions may reach it in either order (events carry
/// their sequence numbers and drivers their [`Driver::version`] to order them).
pub trait CommitSink: Send + Sync + 'static {
    fn committed(&self, effects: &Effects);

    /// Whether a commit made now could be made live; a store asks before it
    /// starts a write, and the write is refused with this error otherwise.
    ///
    /// # Errors
    /// [`Error::Unavailable`] saying why (a cluster replica cut off from the others).
    fn writable(&self) -> Result<(), Error> {
        Ok(())
    }

    /// How a commit went, for the metrics: `writes` committed together, `took`
    /// by the commit itself, `ok` when it succeeded.
    fn measured(&self, writes: usize, took: std::time::Duration, ok: bool) {
        let _ = (writes, took, ok);
    }
}

/// A filter and page of ListBookings.
#[derive(Debug, Clone, Default)]
pub struct BookingQuery {
    pub user_id: Option<Id>,
    pub driver_id: Option<Id>,
    pub statuses: Vec<BookingStatus>,
    /// Only bookings with a smaller id (the page token).
    pub before: Option<BookingId>,
    pub limit: usize,
}

/// A driver as saved: its state, last position and whether it was unseen.
#[derive(Debug, Clone, PartialEq)]
pub struct DriverRecord {
    pub driver: Driver,
    pub location: Option<Location>,
    pub unseen: bool,
}

/// A pending booking as the dispatcher needs it after a restart.
#[derive(Debug, Clone)]
pub struct PendingBooking {
    pub id: BookingId,
    pub pickup: GeoPoint,
    pub vehicle_type: String,
    pub created_at: SystemTime,
    pub offered: Vec<Id>,
}

/// A topic's durable history bounds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicState {
    /// The last durable sequence number appended; 0 if none.
    pub last_seq: u64,
    /// Events up to and including this sequence number were removed by retention.
    pub pruned_seq: u64,
}

/// The columns of a booking, in the order each store's `rows::booking` reads them.
pub(crate) const BOOKING_COLUMNS: &str = "id, user_id, driver_id, status, pickup_lat, pickup_lon, pickup_address, \
     dropoff_lat, dropoff_lon, dropoff_address, vehicle_type, price_estimate, distance_m, phone_number, otp, \
     otp_failures, cancelled_by, cancel_reason, pickup_time, dropoff_time, created_at, updated_at";

/// How long a CreateBooking request id is remembered.
pub const REQUEST_ID_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Bookings, and offers, a snapshot holds at most (the newest).
pub const SNAPSHOT_LIMIT: usize = 50;
/// Bookings in progress the `fleet` snapshot holds at most (the newest): what an
/// operations console lists on connecting.
pub const FLEET_SNAPSHOT_BOOKINGS: usize = 500;
/// A rider's snapshot also shows the bookings that ended this recently, so an app
/// that was offline while its trip completed or was cancelled learns of it.
pub const SNAPSHOT_ENDED_WITHIN: Duration = Duration::from_secs(3600);

/// What an app reading a topic is shown on connecting (see `pb::Snapshot`),
/// oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopicSnapshot {
    pub bookings: Vec<Booking>,
    /// Open offers, with the distance from the driver to the pickup.
    pub offers: Vec<(Booking, f64)>,
}

/// Every method returns [`Error::Storage`] when the database fails and
/// [`Error::Unavailable`] when the store is overloaded or shutting down, besides the
/// domain errors named.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The epoch of this event log.
    fn epoch(&self) -> u64;

    /// Creates a pending booking offered to `offers`; a repeat of a request id
    /// within [`REQUEST_ID_WINDOW`] returns the booking it made, changing nothing.
    /// # Errors
    /// [`Error::InvalidArgument`] when the request id was used for other details.
    async fn create_booking(&self, new: NewBooking, offers: Vec<Offer>) -> Result<Booking, Error>;

    /// Offers a still pending booking to more drivers.
    /// # Errors
    /// [`Error::WrongStatus`] once the booking is no longer pending.
    async fn add_offers(&self, id: BookingId, offers: Vec<Offer>) -> Result<(), Error>;

    /// First-wins accept by an offered driver; issues the OTP.
    /// # Errors
    /// [`Error::Taken`], [`Error::WrongStatus`], [`Error::BookingNotFound`],
    /// [`Error::DriverNotFound`], [`Error::FailedPrecondition`] (not offered, driver busy).
    async fn accept(&self, id: BookingId, driver: Id) -> Result<Booking, Error>;

    /// Checks the OTP; a wrong one is counted (and committed) before the error.
    /// # Errors
    /// [`Error::WrongOtp`], [`Error::OtpLocked`], and the lifecycle's errors.
    async fn verify_otp(&self, id: BookingId, driver: Id, otp: String) -> Result<Booking, Error>;

    /// Draws a new OTP for an accepted booking and resets the wrong tries.
    async fn issue_otp(&self, id: BookingId) -> Result<Booking, Error>;

    async fn complete(&self, id: BookingId, driver: Id) -> Result<Booking, Error>;

    /// `driver` is the acting driver when a driver cancels.
    async fn cancel(
        &self,
        id: BookingId,
        by: Canceller,
        driver: Option<Id>,
        reason: String,
    ) -> Result<Booking, Error>;

    /// Expires a booking nobody accepted.
    async fn expire(&self, id: BookingId) -> Result<Booking, Error>;

    /// Registers a driver or changes its status and vehicle type.
    /// # Errors
    /// [`Error::InvalidArgument`] when a new driver has no vehicle type,
    /// [`Error::FailedPrecondition`] when the driver is on a trip.
    async fn set_driver_status(
        &self,
        id: Id,
        status: DriverStatus,
        vehicle_type: Option<String>,
    ) -> Result<Driver, Error>;

    async fn booking(&self, id: BookingId) -> Result<Booking, Error>;

    /// Whether `id` was ever offered to `driver`.
    async fn offered_to(&self, id: BookingId, driver: Id) -> Result<bool, Error>;

    /// A page of bookings, newest first, and the id to continue before, if any.
    async fn bookings(
        &self,
        query: BookingQuery,
    ) -> Result<(Vec<Booking>, Option<BookingId>), Error>;

    /// Every registered driver with its last saved position, for the registry at
    /// start-up.
    async fn drivers(&self) -> Result<Vec<DriverRecord>, Error>;

    /// Marks an available driver unseen, or seen again; whether anything changed.
    async fn set_driver_unseen(&self, id: Id, unseen: bool) -> Result<bool, Error>;

    /// Records drivers' last positions.
    async fn save_positions(&self, positions: Vec<(Id, Location)>) -> Result<(), Error>;

    /// Leases to `owner` for `lease` every pending booking that is its already or
    /// whose lease lapsed (its replica died, or nobody took it yet), and returns
    /// them: the bookings whose dispatch this replica drives now. A lease held by
    /// another replica is left alone, so each pending booking is driven by one.
    async fn lease_pending(
        &self,
        owner: u64,
        lease: Duration,
    ) -> Result<Vec<PendingBooking>, Error>;

    /// Whether the database answers now, for health.
    ///
    /// # Errors
    /// [`Error::Unavailable`] saying what is wrong.
    async fn ping(&self) -> Result<(), Error> {
        Ok(())
    }

    /// Gives up `owner`'s leases (at shutdown), so another replica takes them at once.
    async fn release_leases(&self, owner: u64) -> Result<(), Error>;

    async fn topic_state(&self, topic: String) -> Result<TopicState, Error>;

    /// The bounds of each of `topics`, in their order.
    async fn topic_states(&self, topics: Vec<String>) -> Result<Vec<TopicState>, Error> {
        let mut states = Vec::with_capacity(topics.len());
        for topic in topics {
            states.push(self.topic_state(topic).await?);
        }
        Ok(states)
    }

    /// The topic's bounds and its snapshot, read together: the snapshot is the state
    /// right after the last durable event, no earlier and no later.
    async fn topic_snapshot(&self, topic: Topic) -> Result<(TopicState, TopicSnapshot), Error>;

    /// Up to `limit` durable events of `topic` after sequence number `after_seq`.
    async fn events_after(
        &self,
        topic: String,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<pb::Event>, Error>;

    /// Removes durable events that occurred before `before`, and request ids past
    /// their window; returns how many events.
    async fn prune(&self, before: SystemTime) -> Result<u64, Error>;
}

#[cfg(test)]
pub(crate) mod tests;
