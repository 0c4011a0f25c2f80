//! The state transitions, written once for every store: the checks and their
//! messages, the conditional moves, and the events each change appends, in order.
//!
//! A store provides the [`Steps`] in its own SQL, inside one write transaction. The
//! steps are futures so that a networked store can await its database; SQLite's
//! are ready at once (its writer thread runs them with `block_on`).

use std::future::Future;
use std::time::SystemTime;

use logi::id::Id;
use logi::pb::offer_closed::Reason;

use crate::error::Error;
use crate::fanout::{self, Outgoing};
use crate::lifecycle::{self, Action};
use crate::model::{
    Booking, BookingId, BookingStatus, Canceller, Driver, DriverStatus, NewBooking, Offer,
    RequestKey,
};
use crate::otp;
use crate::store::{Effects, PendingBooking, REQUEST_ID_WINDOW};

/// How a transition moves a booking, and what it sets beside the status.
#[derive(Debug, Clone, Copy)]
pub enum Move<'a> {
    /// Assigns the driver and issues the OTP (wrong tries reset).
    Accept {
        driver: &'a Id,
        otp: &'a str,
    },
    /// Sets the pickup time and clears the OTP.
    Start,
    /// Sets the dropoff time.
    Complete,
    /// Records who cancelled and why, and clears the OTP.
    Cancel {
        by: Canceller,
        reason: &'a str,
    },
    Expire,
}

impl<'a> Move<'a> {
    /// What the move sets beside the status and `updated_at`, in SQL where `?2` is
    /// the time and `?5`, `?6` are the values returned with it.
    pub fn sets(self) -> (&'static str, [Option<&'a str>; 2]) {
        match self {
            Self::Accept { driver, otp } => (
                ", driver_id = ?5, otp = ?6, otp_failures = 0",
                [Some(driver.as_str()), Some(otp)],
            ),
            Self::Start => (", pickup_time = ?2, otp = NULL", [None, None]),
            Self::Complete => (", dropoff_time = ?2", [None, None]),
            Self::Cancel { by, reason } => (
                ", cancelled_by = ?5, cancel_reason = ?6, otp = NULL",
                [Some(by.as_str()), Some(reason)],
            ),
            Self::Expire => ("", [None, None]),
        }
    }

    pub fn to(self) -> BookingStatus {
        match self {
            Self::Accept { .. } => BookingStatus::Accepted,
            Self::Start => BookingStatus::OnTrip,
            Self::Complete => BookingStatus::Completed,
            Self::Cancel { .. } => BookingStatus::Cancelled,
            Self::Expire => BookingStatus::Expired,
        }
    }
}

/// The state an offer is left in when it closes for `reason`.
fn closed_state(reason: Reason) -> &'static str {
    match reason {
        Reason::Cancelled => "cancelled",
        Reason::Expired => "expired",
        _ => "taken",
    }
}

/// What a transition does to the database, one step at a time, inside the
/// transaction it runs in. Rows a step reads to decide on are locked by it until
/// the commit, where the database has row locks.
pub trait Steps {
    /// The transaction's clock: every time it writes is this one.
    fn now(&self) -> SystemTime;

    fn effects(&mut self) -> &mut Effects;

    /// Appends events to their topics' logs, with the next sequence numbers, and
    /// to [`Effects::events`] in this order.
    fn append(&mut self, out: Outgoing) -> impl Future<Output = Result<(), Error>> + Send;

    /// # Errors
    /// [`Error::BookingNotFound`].
    fn booking(&mut self, id: BookingId) -> impl Future<Output = Result<Booking, Error>> + Send;

    /// [`Steps::booking`], locked against concurrent transitions of it.
    fn lock_booking(
        &mut self,
        id: BookingId,
    ) -> impl Future<Output = Result<Booking, Error>> + Send;

    /// The driver with its active trip, locked against concurrent changes.
    fn driver(&mut self, id: &Id) -> impl Future<Output = Result<Option<Driver>, Error>> + Send;

    /// Whether the driver was marked unseen.
    fn unseen(&mut self, id: &Id) -> impl Future<Output = Result<bool, Error>> + Send;

    fn set_unseen(
        &mut self,
        id: &Id,
        unseen: bool,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Registers the driver or changes it, counting the change in its version.
    fn save_driver(
        &mut self,
        id: &Id,
        status: DriverStatus,
        vehicle_type: &str,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Counts a change to the driver's active trip in its version.
    fn bump_driver_version(&mut self, id: &Id) -> impl Future<Output = Result<(), Error>> + Send;

    /// Moves the booking to `to.to()` only if it is still in `from`; whether it did.
    fn move_booking(
        &mut self,
        id: BookingId,
        from: BookingStatus,
        to: Move<'_>,
    ) -> impl Future<Output = Result<bool, Error>> + Send;

    fn count_wrong_otp(&mut self, id: BookingId) -> impl Future<Output = Result<(), Error>> + Send;

    /// A new OTP for an accepted booking, its wrong tries reset.
    fn set_otp(
        &mut self,
        id: BookingId,
        otp: &str,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    fn insert_booking(
        &mut self,
        new: &NewBooking,
    ) -> impl Future<Output = Result<Booking, Error>> + Send;

    /// The booking made by a request with this key since `since`.
    fn requested(
        &mut self,
        key: &RequestKey,
        since: SystemTime,
    ) -> impl Future<Output = Result<Option<BookingId>, Error>> + Send;

    fn remember_request(
        &mut self,
        key: &RequestKey,
        id: BookingId,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Locks the offers an accept of `id` by `driver` will close (the booking's,
    /// and the driver's open ones elsewhere) in one order, the same for every
    /// transaction, so that two accepts closing each other's offers wait for
    /// each other instead of deadlocking. A store with one writer locks nothing.
    fn lock_offers(
        &mut self,
        id: BookingId,
        driver: &Id,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        let _ = (id, driver);
        std::future::ready(Ok(()))
    }

    /// The state of the booking's offer to the driver, if it was offered.
    fn offer_state(
        &mut self,
        id: BookingId,
        driver: &Id,
    ) -> impl Future<Output = Result<Option<String>, Error>> + Send;

    /// Opens the offers not made before; returns those, in the order given.
    fn insert_offers(
        &mut self,
        id: BookingId,
        offers: &[Offer],
    ) -> impl Future<Output = Result<Vec<Offer>, Error>> + Send;

    /// Closes the booking's open offers in `state`, the winner's as accepted;
    /// returns the drivers they were open to.
    fn close_offers(
        &mut self,
        id: BookingId,
        state: &'static str,
        winner: Option<&Id>,
    ) -> impl Future<Output = Result<Vec<Id>, Error>> + Send;

    /// Withdraws the driver's open offers; returns their bookings.
    fn withdraw_offers(
        &mut self,
        driver: &Id,
    ) -> impl Future<Output = Result<Vec<BookingId>, Error>> + Send;
}

pub async fn create_booking<S: Steps>(
    s: &mut S,
    new: &NewBooking,
    offers: &[Offer],
) -> Result<Booking, Error> {
    if let Some(key) = &new.request {
        let since = s
            .now()
            .checked_sub(REQUEST_ID_WINDOW)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        if let Some(id) = s.requested(key, since).await? {
            let earlier = s.booking(id).await?;
            if !new.same_as(&earlier) {
                return Err(Error::invalid(format!(
                    "request_id {:?} was used for booking {} with other details: send a new request_id for a new booking",
                    key.request_id, earlier.id
                )));
            }
            return Ok(earlier);
        }
    }
    let booking = s.insert_booking(new).await?;
    if let Some(key) = &new.request {
        s.remember_request(key, booking.id).await?;
    }
    s.append(fanout::booking_changed(&booking, None)).await?;
    offer(s, &booking, offers).await?;
    s.effects().created.push(PendingBooking {
        id: booking.id,
        pickup: booking.pickup.point,
        vehicle_type: booking.vehicle_type.clone(),
        created_at: booking.created_at,
        offered: offers.iter().map(|o| o.driver_id.clone()).collect(),
    });
    Ok(booking)
}

pub async fn add_offers<S: Steps>(s: &mut S, id: BookingId, offers: &[Offer]) -> Result<(), Error> {
    let booking = s.lock_booking(id).await?;
    if booking.status != BookingStatus::Pending {
        return Err(Error::WrongStatus {
            booking: id,
            status: booking.status,
            what: "only a pending booking is offered",
        });
    }
    offer(s, &booking, offers).await
}

pub async fn accept<S: Steps>(s: &mut S, id: BookingId, driver: &Id) -> Result<Booking, Error> {
    let before = s.lock_booking(id).await?;
    lifecycle::next(&before, Action::Accept { driver })?;
    // The driver before its offer: a change that withdraws the offer holds the
    // driver first, so the offer read next is the one that change left.
    let current = s.driver(driver).await?;
    s.lock_offers(id, driver).await?;
    if s.offer_state(id, driver).await?.as_deref() != Some("open") {
        return Err(Error::precondition(format!(
            "booking {id} was not offered to driver {driver}"
        )));
    }
    let current = current.ok_or_else(|| Error::DriverNotFound(driver.to_string()))?;
    if let Some(trip) = &current.active {
        return Err(Error::precondition(format!(
            "driver {driver} is already on booking {}: complete or cancel it first",
            trip.booking_id
        )));
    }
    if current.status != DriverStatus::Available {
        return Err(Error::precondition(format!(
            "driver {driver} is {}: set DRIVER_STATUS_AVAILABLE to accept bookings",
            current.status.as_str()
        )));
    }
    let otp = otp::generate();
    move_booking(s, id, before.status, Move::Accept { driver, otp: &otp }).await?;
    let booking = s.booking(id).await?;
    s.append(fanout::booking_changed(&booking, Some(before.status)))
        .await?;
    s.append(fanout::otp_issued(&booking, &otp)).await?;
    close_offers(s, &booking, Reason::Taken, Some(driver)).await?;
    set_driver(s, driver, DriverStatus::OnTrip, None).await?;
    // Its other offers cannot be accepted now: they close for this driver.
    withdraw_offers(s, driver, Reason::DriverBusy).await?;
    Ok(booking)
}

/// Ok(Err(_)) is a wrong try, counted: the caller must still commit it.
pub async fn verify_otp<S: Steps>(
    s: &mut S,
    id: BookingId,
    driver: &Id,
    guess: &str,
) -> Result<Result<Booking, Error>, Error> {
    let before = s.lock_booking(id).await?;
    lifecycle::next(&before, Action::VerifyOtp { driver })?;
    let expected = before.otp.clone().unwrap_or_default();
    match otp::check(&expected, guess, before.otp_failures) {
        otp::Check::Locked => Err(Error::OtpLocked(id)),
        otp::Check::Wrong { left } => {
            s.count_wrong_otp(id).await?;
            Ok(Err(Error::WrongOtp { booking: id, left }))
        }
        otp::Check::Correct => {
            move_booking(s, id, before.status, Move::Start).await?;
            let booking = s.booking(id).await?;
            s.append(fanout::booking_changed(&booking, Some(before.status)))
                .await?;
            // The driver's active trip changed status; positions now say on_trip.
            s.bump_driver_version(driver).await?;
            let after = s
                .driver(driver)
                .await?
                .ok_or_else(|| Error::DriverNotFound(driver.to_string()))?;
            s.effects().drivers.push(after);
            Ok(Ok(booking))
        }
    }
}

pub async fn issue_otp<S: Steps>(s: &mut S, id: BookingId) -> Result<Booking, Error> {
    let before = s.lock_booking(id).await?;
    lifecycle::next(&before, Action::IssueOtp)?;
    let otp = otp::generate();
    s.set_otp(id, &otp).await?;
    let booking = s.booking(id).await?;
    s.append(fanout::otp_issued(&booking, &otp)).await?;
    Ok(booking)
}

pub async fn complete<S: Steps>(s: &mut S, id: BookingId, driver: &Id) -> Result<Booking, Error> {
    let before = s.lock_booking(id).await?;
    lifecycle::next(&before, Action::Complete { driver })?;
    move_booking(s, id, before.status, Move::Complete).await?;
    let booking = s.booking(id).await?;
    s.append(fanout::booking_changed(&booking, Some(before.status)))
        .await?;
    set_driver(s, driver, DriverStatus::Available, None).await?;
    Ok(booking)
}

pub async fn cancel<S: Steps>(
    s: &mut S,
    id: BookingId,
    by: Canceller,
    driver: Option<&Id>,
    reason: &str,
) -> Result<Booking, Error> {
    let before = s.lock_booking(id).await?;
    lifecycle::next(&before, Action::Cancel { by, driver })?;
    move_booking(s, id, before.status, Move::Cancel { by, reason }).await?;
    let booking = s.booking(id).await?;
    s.append(fanout::booking_changed(&booking, Some(before.status)))
        .await?;
    close_offers(s, &booking, Reason::Cancelled, None).await?;
    if let Some(assigned) = &before.driver_id {
        set_driver(s, assigned, DriverStatus::Available, None).await?;
    }
    Ok(booking)
}

pub async fn expire<S: Steps>(s: &mut S, id: BookingId) -> Result<Booking, Error> {
    let before = s.lock_booking(id).await?;
    lifecycle::next(&before, Action::Expire)?;
    move_booking(s, id, before.status, Move::Expire).await?;
    let booking = s.booking(id).await?;
    s.append(fanout::booking_changed(&booking, Some(before.status)))
        .await?;
    close_offers(s, &booking, Reason::Expired, None).await?;
    Ok(booking)
}

pub async fn set_driver_status<S: Steps>(
    s: &mut S,
    id: &Id,
    status: DriverStatus,
    vehicle_type: Option<&str>,
) -> Result<Driver, Error> {
    if let Some(current) = s.driver(id).await?
        && let Some(trip) = &current.active
    {
        return Err(Error::precondition(format!(
            "driver {id} is on booking {} ({}): complete or cancel it first",
            trip.booking_id,
            trip.status.as_str()
        )));
    }
    let driver = set_driver(s, id, status, vehicle_type).await?;
    if status == DriverStatus::Offline {
        withdraw_offers(s, id, Reason::DriverOffline).await?;
    }
    Ok(driver)
}

/// Marks an available driver unseen (out of dispatch, its open offers closed) or
/// seen again; the admins hear of each change. Returns whether anything changed.
pub async fn set_driver_unseen<S: Steps>(s: &mut S, id: &Id, unseen: bool) -> Result<bool, Error> {
    let Some(driver) = s.driver(id).await? else {
        return Ok(false);
    };
    let was = s.unseen(id).await?;
    if was == unseen || (unseen && driver.status != DriverStatus::Available) {
        return Ok(false);
    }
    s.set_unseen(id, unseen).await?;
    if driver.status == DriverStatus::Available {
        s.append(fanout::driver_unseen(id, unseen, &driver.vehicle_type))
            .await?;
    }
    if unseen {
        withdraw_offers(s, id, Reason::DriverOffline).await?;
    }
    Ok(true)
}

/// The conditional move that makes transitions first-wins.
async fn move_booking<S: Steps>(
    s: &mut S,
    id: BookingId,
    from: BookingStatus,
    to: Move<'_>,
) -> Result<(), Error> {
    if !s.move_booking(id, from, to).await? {
        return Err(Error::Taken(id));
    }
    if from == BookingStatus::Pending {
        s.effects().settled.push(id);
    }
    Ok(())
}

/// Sets a driver's status and records the change for admins and the registry.
async fn set_driver<S: Steps>(
    s: &mut S,
    id: &Id,
    status: DriverStatus,
    vehicle_type: Option<&str>,
) -> Result<Driver, Error> {
    let before = s.driver(id).await?;
    let vehicle_type = vehicle_type
        .map(str::to_owned)
        .or_else(|| before.as_ref().map(|d| d.vehicle_type.clone()))
        .ok_or_else(|| Error::invalid(format!("driver {id} is new: vehicle_type is required")))?;
    s.save_driver(id, status, &vehicle_type).await?;
    let after = s.driver(id).await?.expect("just written");
    let changed = before
        .as_ref()
        .is_none_or(|b| b.status != status || b.vehicle_type != after.vehicle_type);
    if changed {
        s.append(fanout::driver_status(
            id,
            before.as_ref().map(|d| d.status),
            status,
            &after.vehicle_type,
        ))
        .await?;
    }
    s.effects().drivers.push(after.clone());
    Ok(after)
}

/// Offers the booking to the drivers it was not offered to yet, and tells them.
async fn offer<S: Steps>(s: &mut S, booking: &Booking, offers: &[Offer]) -> Result<(), Error> {
    let fresh = s.insert_offers(booking.id, offers).await?;
    s.append(fanout::offered(booking, &fresh)).await
}

/// Closes the booking's open offers and tells the drivers they were open to.
async fn close_offers<S: Steps>(
    s: &mut S,
    booking: &Booking,
    reason: Reason,
    winner: Option<&Id>,
) -> Result<(), Error> {
    let mut drivers = s
        .close_offers(booking.id, closed_state(reason), winner)
        .await?;
    drivers.sort();
    s.append(fanout::offers_closed(booking, &drivers, reason))
        .await
}

/// Closes the open offers to a driver who went offline or took another booking;
/// the bookings stay offered to the others.
async fn withdraw_offers<S: Steps>(s: &mut S, driver: &Id, reason: Reason) -> Result<(), Error> {
    let mut bookings = s.withdraw_offers(driver).await?;
    bookings.sort_unstable();
    for id in bookings {
        let booking = s.booking(id).await?;
        s.append(fanout::offers_closed(
            &booking,
            std::slice::from_ref(driver),
            reason,
        ))
        .await?;
    }
    Ok(())
}
