//! The state transitions, each run inside one write transaction.

use std::time::SystemTime;

use logi::id::Id;
use logi::pb::{self, offer_closed::Reason};
use prost::Message;
use rusqlite::{Connection, OptionalExtension, params};

use super::rows;
use crate::error::Error;
use crate::fanout::{self, Outgoing};
use crate::hub::EPHEMERAL_SPAN;
use crate::lifecycle::{self, Action};
use crate::model::{
    ActiveTrip, Booking, BookingId, BookingStatus, Canceller, Driver, DriverStatus, Location,
    NewBooking, Offer, RequestKey, from_millis, timestamp, to_millis,
};
use crate::otp;
use crate::store::{Effects, PendingBooking, REQUEST_ID_WINDOW};

/// One write transaction in progress and the effects it has gathered.
pub struct Tx<'a> {
    /// The job's savepoint within the batch transaction.
    pub tx: &'a Connection,
    pub epoch: u64,
    pub now: SystemTime,
    pub fx: Effects,
}

impl Tx<'_> {
    fn now_ms(&self) -> i64 {
        to_millis(self.now)
    }

    /// Appends events to their topics' logs.
    fn append(&mut self, out: Outgoing) -> Result<(), Error> {
        let mut next_seq = self.tx.prepare_cached(
            "INSERT INTO topics (name, last_seq) VALUES (?1, 1)
             ON CONFLICT (name) DO UPDATE SET last_seq = last_seq + 1 RETURNING last_seq",
        )?;
        let mut insert = self.tx.prepare_cached(
            "INSERT INTO events (topic, seq, occurred_at, payload) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for (topic, kind) in out {
            let name = topic.to_string();
            let seq: i64 = next_seq.query_row([&name], |r| r.get(0))?;
            let mut event = pb::Event {
                kind: Some(kind),
                ..Default::default()
            };
            insert.execute(params![name, seq, self.now_ms(), event.encode_to_vec()])?;
            event.topic = name;
            event.cursor = Some(pb::Cursor {
                epoch: self.epoch,
                offset: seq as u64 * EPHEMERAL_SPAN,
            });
            // Millisecond precision, as stored: a live event and its replay read the same.
            event.occurred_at = Some(timestamp(from_millis(self.now_ms())));
            self.fx.events.push(event);
        }
        Ok(())
    }

    pub fn booking(&self, id: BookingId) -> Result<Booking, Error> {
        let sql = format!(
            "SELECT {} FROM bookings WHERE id = ?1",
            rows::BOOKING_COLUMNS
        );
        self.tx
            .prepare_cached(&sql)?
            .query_row([id as i64], rows::booking)
            .optional()?
            .ok_or(Error::BookingNotFound(id))
    }

    fn driver(&self, id: &Id) -> Result<Option<Driver>, Error> {
        let found = self
            .tx
            .prepare_cached("SELECT status, vehicle_type, version FROM drivers WHERE id = ?1")?
            .query_row([id.as_str()], |r| {
                Ok((
                    rows::driver_status(r, 0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)? as u64,
                ))
            })
            .optional()?;
        let Some((status, vehicle_type, version)) = found else {
            return Ok(None);
        };
        let active = self
            .tx
            .prepare_cached(
                "SELECT id, user_id, status FROM bookings
                 WHERE driver_id = ?1 AND status IN ('accepted', 'on_trip') ORDER BY id DESC LIMIT 1",
            )?
            .query_row([id.as_str()], |r| {
                Ok(ActiveTrip {
                    booking_id: r.get::<_, i64>(0)? as u64,
                    user_id: rows::id(r, 1)?,
                    status: rows::booking_status(r, 2)?,
                })
            })
            .optional()?;
        Ok(Some(Driver {
            id: id.clone(),
            status,
            vehicle_type,
            active,
            version,
        }))
    }

    /// Moves a booking from `from` to `to` with extra assignments, only if it is
    /// still in `from`: the conditional update that makes transitions first-wins.
    fn move_booking(
        &mut self,
        id: BookingId,
        from: BookingStatus,
        to: BookingStatus,
        set: &str,
        extra: &[&dyn rusqlite::ToSql],
    ) -> Result<(), Error> {
        let sql = format!(
            "UPDATE bookings SET status = ?1, updated_at = ?2{set} WHERE id = ?3 AND status = ?4",
            set = if set.is_empty() {
                String::new()
            } else {
                format!(", {set}")
            }
        );
        let (to_s, now, id_i, from_s) = (to.as_str(), self.now_ms(), id as i64, from.as_str());
        let mut args: Vec<&dyn rusqlite::ToSql> = vec![&to_s, &now, &id_i, &from_s];
        args.extend_from_slice(extra);
        if self.tx.prepare_cached(&sql)?.execute(args.as_slice())? != 1 {
            return Err(Error::Taken(id));
        }
        if from == BookingStatus::Pending {
            self.fx.settled.push(id);
        }
        Ok(())
    }

    /// Sets a driver's status and records the change for admins and the registry.
    fn set_driver(
        &mut self,
        id: &Id,
        status: DriverStatus,
        vehicle_type: Option<&str>,
    ) -> Result<Driver, Error> {
        let before = self.driver(id)?;
        let vehicle_type = vehicle_type
            .map(str::to_owned)
            .or_else(|| before.as_ref().map(|d| d.vehicle_type.clone()))
            .ok_or_else(|| {
                Error::invalid(format!("driver {id} is new: vehicle_type is required"))
            })?;
        self.tx
            .prepare_cached(
                "INSERT INTO drivers (id, status, vehicle_type, updated_at, version) VALUES (?1, ?2, ?3, ?4, 1)
             ON CONFLICT (id) DO UPDATE SET status = ?2, vehicle_type = ?3, updated_at = ?4,
                 version = version + 1",
            )?
            .execute(params![
                id.as_str(),
                status.as_str(),
                vehicle_type,
                self.now_ms()
            ])?;
        let after = self.driver(id)?.expect("just written");
        let prev_status = before.as_ref().map(|d| d.status);
        let changed = before
            .as_ref()
            .is_none_or(|b| b.status != status || b.vehicle_type != after.vehicle_type);
        if changed {
            self.append(fanout::driver_status(
                id,
                prev_status,
                status,
                &after.vehicle_type,
            ))?;
        }
        self.fx.drivers.push(after.clone());
        Ok(after)
    }

    /// Closes the open offers of a booking; returns the drivers they were open to.
    fn close_offers(
        &self,
        id: BookingId,
        reason: Reason,
        winner: Option<&Id>,
    ) -> Result<Vec<Id>, Error> {
        let state = match reason {
            Reason::Cancelled => "cancelled",
            Reason::Expired => "expired",
            _ => "taken",
        };
        let mut stmt = self.tx.prepare_cached(
            "UPDATE offers SET state = CASE WHEN driver_id = ?1 THEN 'accepted' ELSE ?2 END, closed_at = ?3
             WHERE booking_id = ?4 AND state = 'open' RETURNING driver_id",
        )?;
        let winner = winner.map(Id::as_str);
        let mut drivers = stmt
            .query_map(params![winner, state, self.now_ms(), id as i64], |r| {
                rows::id(r, 0)
            })?
            .collect::<Result<Vec<_>, _>>()?;
        drivers.sort();
        Ok(drivers)
    }

    fn insert_offers(&mut self, booking: &Booking, offers: &[Offer]) -> Result<(), Error> {
        let mut insert = self.tx.prepare_cached(
            "INSERT OR IGNORE INTO offers (booking_id, driver_id, state, distance_m, offered_at)
             VALUES (?1, ?2, 'open', ?3, ?4)",
        )?;
        let mut fresh = Vec::with_capacity(offers.len());
        for o in offers {
            if insert.execute(params![
                booking.id as i64,
                o.driver_id.as_str(),
                o.distance_m,
                self.now_ms()
            ])? == 1
            {
                fresh.push(o.clone());
            }
        }
        drop(insert);
        self.append(fanout::offered(booking, &fresh))
    }

    pub fn create_booking(&mut self, new: &NewBooking, offers: &[Offer]) -> Result<Booking, Error> {
        if let Some(key) = &new.request
            && let Some(earlier) = self.requested(key)?
        {
            if !new.same_as(&earlier) {
                return Err(Error::invalid(format!(
                    "request_id {:?} was used for booking {} with other details: send a new request_id for a new booking",
                    key.request_id, earlier.id
                )));
            }
            return Ok(earlier);
        }
        self.tx.prepare_cached("INSERT INTO bookings (user_id, status, pickup_lat, pickup_lon, pickup_address, dropoff_lat,
                dropoff_lon, dropoff_address, vehicle_type, price_estimate, distance_m, phone_number,
                created_at, updated_at)
             VALUES (?1, 'pending', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12)")?.execute(params![
                new.user_id.as_str(),
                new.pickup.point.lat,
                new.pickup.point.lon,
                new.pickup.address,
                new.dropoff.point.lat,
                new.dropoff.point.lon,
                new.dropoff.address,
                new.vehicle_type,
                new.price_estimate,
                new.distance_m,
                new.phone_number,
                self.now_ms(),
            ])?;
        let booking = self.booking(self.tx.last_insert_rowid() as u64)?;
        if let Some(key) = &new.request {
            self.tx
                .prepare_cached(
                    "INSERT INTO booking_requests (principal, request_id, booking_id, created_at)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (principal, request_id)
                     DO UPDATE SET booking_id = ?3, created_at = ?4",
                )?
                .execute(params![
                    key.principal,
                    key.request_id,
                    booking.id as i64,
                    self.now_ms()
                ])?;
        }
        self.append(fanout::booking_changed(&booking, None))?;
        self.insert_offers(&booking, offers)?;
        self.fx.created.push(PendingBooking {
            id: booking.id,
            pickup: booking.pickup.point,
            vehicle_type: booking.vehicle_type.clone(),
            created_at: booking.created_at,
            offered: offers.iter().map(|o| o.driver_id.clone()).collect(),
        });
        Ok(booking)
    }

    /// The booking an earlier request with this key made, within the window.
    fn requested(&self, key: &RequestKey) -> Result<Option<Booking>, Error> {
        let since = to_millis(
            self.now
                .checked_sub(REQUEST_ID_WINDOW)
                .unwrap_or(SystemTime::UNIX_EPOCH),
        );
        let id: Option<i64> = self
            .tx
            .prepare_cached(
                "SELECT booking_id FROM booking_requests
                 WHERE principal = ?1 AND request_id = ?2 AND created_at >= ?3",
            )?
            .query_row(params![key.principal, key.request_id, since], |r| r.get(0))
            .optional()?;
        id.map(|id| self.booking(id as u64)).transpose()
    }

    pub fn add_offers(&mut self, id: BookingId, offers: &[Offer]) -> Result<(), Error> {
        let booking = self.booking(id)?;
        if booking.status != BookingStatus::Pending {
            return Err(Error::WrongStatus {
                booking: id,
                status: booking.status,
                what: "only a pending booking is offered",
            });
        }
        self.insert_offers(&booking, offers)
    }

    pub fn accept(&mut self, id: BookingId, driver: &Id) -> Result<Booking, Error> {
        let before = self.booking(id)?;
        lifecycle::next(&before, Action::Accept { driver })?;
        let offered: Option<String> = self
            .tx
            .prepare_cached("SELECT state FROM offers WHERE booking_id = ?1 AND driver_id = ?2")?
            .query_row(params![id as i64, driver.as_str()], |r| r.get(0))
            .optional()?;
        if offered.as_deref() != Some("open") {
            return Err(Error::precondition(format!(
                "booking {id} was not offered to driver {driver}"
            )));
        }
        let current = self
            .driver(driver)?
            .ok_or_else(|| Error::DriverNotFound(driver.to_string()))?;
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
        self.move_booking(
            id,
            BookingStatus::Pending,
            BookingStatus::Accepted,
            "driver_id = ?5, otp = ?6, otp_failures = 0",
            &[&driver.as_str(), &otp],
        )?;
        let booking = self.booking(id)?;
        self.append(fanout::booking_changed(&booking, Some(before.status)))?;
        self.append(fanout::otp_issued(&booking, &otp))?;
        let offered = self.close_offers(id, Reason::Taken, Some(driver))?;
        self.append(fanout::offers_closed(&booking, &offered, Reason::Taken))?;
        self.set_driver(driver, DriverStatus::OnTrip, None)?;
        // Its other offers cannot be accepted now: they close for this driver.
        self.withdraw_offers(driver, Reason::DriverBusy)?;
        Ok(booking)
    }

    /// Ok(Err(_)) is a wrong try that must still be committed.
    pub fn verify_otp(
        &mut self,
        id: BookingId,
        driver: &Id,
        guess: &str,
    ) -> Result<Result<Booking, Error>, Error> {
        let before = self.booking(id)?;
        lifecycle::next(&before, Action::VerifyOtp { driver })?;
        let expected = before.otp.clone().unwrap_or_default();
        match otp::check(&expected, guess, before.otp_failures) {
            otp::Check::Locked => Err(Error::OtpLocked(id)),
            otp::Check::Wrong { left } => {
                self.tx
                    .prepare_cached(
                        "UPDATE bookings SET otp_failures = otp_failures + 1 WHERE id = ?1",
                    )?
                    .execute([id as i64])?;
                Ok(Err(Error::WrongOtp { booking: id, left }))
            }
            otp::Check::Correct => {
                self.move_booking(
                    id,
                    BookingStatus::Accepted,
                    BookingStatus::OnTrip,
                    "pickup_time = ?2, otp = NULL",
                    &[],
                )?;
                let booking = self.booking(id)?;
                self.append(fanout::booking_changed(&booking, Some(before.status)))?;
                // The driver's active trip changed status; positions now say on_trip.
                self.tx
                    .prepare_cached("UPDATE drivers SET version = version + 1 WHERE id = ?1")?
                    .execute([driver.as_str()])?;
                self.fx.drivers.push(
                    self.driver(driver)?
                        .ok_or_else(|| Error::DriverNotFound(driver.to_string()))?,
                );
                Ok(Ok(booking))
            }
        }
    }

    pub fn issue_otp(&mut self, id: BookingId) -> Result<Booking, Error> {
        let before = self.booking(id)?;
        lifecycle::next(&before, Action::IssueOtp)?;
        let otp = otp::generate();
        self.tx.prepare_cached("UPDATE bookings SET otp = ?1, otp_failures = 0 WHERE id = ?2 AND status = 'accepted'")?.execute(params![otp, id as i64])?;
        let booking = self.booking(id)?;
        self.append(fanout::otp_issued(&booking, &otp))?;
        Ok(booking)
    }

    pub fn complete(&mut self, id: BookingId, driver: &Id) -> Result<Booking, Error> {
        let before = self.booking(id)?;
        lifecycle::next(&before, Action::Complete { driver })?;
        self.move_booking(
            id,
            BookingStatus::OnTrip,
            BookingStatus::Completed,
            "dropoff_time = ?2",
            &[],
        )?;
        let booking = self.booking(id)?;
        self.append(fanout::booking_changed(&booking, Some(before.status)))?;
        self.set_driver(driver, DriverStatus::Available, None)?;
        Ok(booking)
    }

    pub fn cancel(
        &mut self,
        id: BookingId,
        by: Canceller,
        driver: Option<&Id>,
        reason: &str,
    ) -> Result<Booking, Error> {
        let before = self.booking(id)?;
        lifecycle::next(&before, Action::Cancel { by, driver })?;
        self.move_booking(
            id,
            before.status,
            BookingStatus::Cancelled,
            "cancelled_by = ?5, cancel_reason = ?6, otp = NULL",
            &[&by.as_str(), &reason],
        )?;
        let booking = self.booking(id)?;
        self.append(fanout::booking_changed(&booking, Some(before.status)))?;
        let offered = self.close_offers(id, Reason::Cancelled, None)?;
        self.append(fanout::offers_closed(&booking, &offered, Reason::Cancelled))?;
        if let Some(assigned) = &before.driver_id {
            self.set_driver(assigned, DriverStatus::Available, None)?;
        }
        Ok(booking)
    }

    pub fn expire(&mut self, id: BookingId) -> Result<Booking, Error> {
        let before = self.booking(id)?;
        lifecycle::next(&before, Action::Expire)?;
        self.move_booking(id, BookingStatus::Pending, BookingStatus::Expired, "", &[])?;
        let booking = self.booking(id)?;
        self.append(fanout::booking_changed(&booking, Some(before.status)))?;
        let offered = self.close_offers(id, Reason::Expired, None)?;
        self.append(fanout::offers_closed(&booking, &offered, Reason::Expired))?;
        Ok(booking)
    }

    pub fn set_driver_status(
        &mut self,
        id: &Id,
        status: DriverStatus,
        vehicle_type: Option<&str>,
    ) -> Result<Driver, Error> {
        if let Some(current) = self.driver(id)?
            && let Some(trip) = &current.active
        {
            return Err(Error::precondition(format!(
                "driver {id} is on booking {} ({}): complete or cancel it first",
                trip.booking_id,
                trip.status.as_str()
            )));
        }
        let driver = self.set_driver(id, status, vehicle_type)?;
        if status == DriverStatus::Offline {
            self.withdraw_offers(id, Reason::DriverOffline)?;
        }
        Ok(driver)
    }

    /// Marks an available driver unseen (out of dispatch, its open offers closed) or
    /// seen again; the admins hear of each change. Returns whether anything changed.
    pub fn set_driver_unseen(&mut self, id: &Id, unseen: bool) -> Result<bool, Error> {
        let Some(driver) = self.driver(id)? else {
            return Ok(false);
        };
        let was: bool = self
            .tx
            .prepare_cached("SELECT unseen FROM drivers WHERE id = ?1")?
            .query_row([id.as_str()], |r| r.get(0))?;
        if was == unseen || (unseen && driver.status != DriverStatus::Available) {
            return Ok(false);
        }
        self.tx
            .prepare_cached("UPDATE drivers SET unseen = ?2 WHERE id = ?1")?
            .execute(params![id.as_str(), unseen])?;
        if driver.status == DriverStatus::Available {
            self.append(fanout::driver_unseen(id, unseen, &driver.vehicle_type))?;
        }
        if unseen {
            self.withdraw_offers(id, Reason::DriverOffline)?;
        }
        Ok(true)
    }

    /// Records drivers' last positions (written behind, a batch at a time).
    pub fn save_positions(&mut self, positions: &[(Id, Location)]) -> Result<(), Error> {
        let mut stmt = self.tx.prepare_cached(
            "UPDATE drivers SET lat = ?2, lon = ?3, heading = ?4, speed_mps = ?5, seen_at = ?6 WHERE id = ?1",
        )?;
        for (id, l) in positions {
            stmt.execute(params![
                id.as_str(),
                l.point.lat,
                l.point.lon,
                l.heading,
                l.speed_mps,
                to_millis(l.at)
            ])?;
        }
        Ok(())
    }

    /// Closes the open offers to a driver who went offline or took another
    /// booking; the bookings stay offered to the others.
    fn withdraw_offers(&mut self, driver: &Id, reason: Reason) -> Result<(), Error> {
        let bookings: Vec<i64> = self
            .tx
            .prepare_cached(
                "UPDATE offers SET state = 'withdrawn', closed_at = ?1
                 WHERE driver_id = ?2 AND state = 'open' RETURNING booking_id",
            )?
            .query_map(params![self.now_ms(), driver.as_str()], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for id in bookings {
            let booking = self.booking(id as u64)?;
            self.append(fanout::offers_closed(
                &booking,
                std::slice::from_ref(driver),
                reason,
            ))?;
        }
        Ok(())
    }
}
