//! The steps of the state transitions ([`crate::store::transitions`]) in SQLite,
//! each a statement on the write transaction. Every step is done by the time it
//! returns (its future is ready): the writer thread runs a transition with
//! `block_on`.

use std::future::{Future, ready};
use std::time::SystemTime;

use logi::id::Id;
use rusqlite::{Connection, OptionalExtension, params};

use super::rows;
use crate::error::Error;
use crate::fanout::Outgoing;
use crate::model::{
    ActiveTrip, Booking, BookingId, BookingStatus, Driver, DriverStatus, Location, NewBooking,
    Offer, RequestKey, to_millis,
};
use crate::store::transitions::{Move, Steps};
use crate::store::{Effects, log};

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

    fn append_now(&mut self, out: Outgoing) -> Result<(), Error> {
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
            let (event, payload) = log::payload(kind);
            insert.execute(params![name, seq, self.now_ms(), payload])?;
            let event = log::stamped(event, &name, self.epoch, seq, self.now_ms());
            self.fx.events.push(event);
        }
        Ok(())
    }

    pub fn read_booking(&self, id: BookingId) -> Result<Booking, Error> {
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

    fn read_driver(&self, id: &Id) -> Result<Option<Driver>, Error> {
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

    fn move_now(&self, id: BookingId, from: BookingStatus, to: Move<'_>) -> Result<bool, Error> {
        let (set, extra) = to.sets();
        let sql = format!(
            "UPDATE bookings SET status = ?1, updated_at = ?2{set} WHERE id = ?3 AND status = ?4"
        );
        let (to_s, now, id_i, from_s) = (to.to().as_str(), self.now_ms(), id as i64, from.as_str());
        let mut args: Vec<&dyn rusqlite::ToSql> = vec![&to_s, &now, &id_i, &from_s];
        args.extend(extra.iter().flatten().map(|e| e as &dyn rusqlite::ToSql));
        Ok(self.tx.prepare_cached(&sql)?.execute(args.as_slice())? == 1)
    }

    fn insert_booking_now(&self, new: &NewBooking) -> Result<Booking, Error> {
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
        self.read_booking(self.tx.last_insert_rowid() as u64)
    }

    fn insert_offers_now(&self, id: BookingId, offers: &[Offer]) -> Result<Vec<Offer>, Error> {
        let mut insert = self.tx.prepare_cached(
            "INSERT OR IGNORE INTO offers (booking_id, driver_id, state, distance_m, offered_at)
             VALUES (?1, ?2, 'open', ?3, ?4)",
        )?;
        let mut fresh = Vec::with_capacity(offers.len());
        for o in offers {
            if insert.execute(params![
                id as i64,
                o.driver_id.as_str(),
                o.distance_m,
                self.now_ms()
            ])? == 1
            {
                fresh.push(o.clone());
            }
        }
        Ok(fresh)
    }

    fn close_offers_now(
        &self,
        id: BookingId,
        state: &str,
        winner: Option<&Id>,
    ) -> Result<Vec<Id>, Error> {
        let mut stmt = self.tx.prepare_cached(
            "UPDATE offers SET state = CASE WHEN driver_id = ?1 THEN 'accepted' ELSE ?2 END, closed_at = ?3
             WHERE booking_id = ?4 AND state = 'open' RETURNING driver_id",
        )?;
        let winner = winner.map(Id::as_str);
        let drivers = stmt
            .query_map(params![winner, state, self.now_ms(), id as i64], |r| {
                rows::id(r, 0)
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(drivers)
    }

    fn withdraw_offers_now(&self, driver: &Id) -> Result<Vec<BookingId>, Error> {
        let bookings: Vec<i64> = self
            .tx
            .prepare_cached(
                "UPDATE offers SET state = 'withdrawn', closed_at = ?1
                 WHERE driver_id = ?2 AND state = 'open' RETURNING booking_id",
            )?
            .query_map(params![self.now_ms(), driver.as_str()], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(bookings.into_iter().map(|id| id as u64).collect())
    }

    fn execute(&self, sql: &str, args: impl rusqlite::Params) -> Result<(), Error> {
        self.tx.prepare_cached(sql)?.execute(args)?;
        Ok(())
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
}

/// What a step gives back, computed before it returns.
type Done<T> = std::future::Ready<Result<T, Error>>;

impl Steps for Tx<'_> {
    fn now(&self) -> SystemTime {
        self.now
    }

    fn effects(&mut self) -> &mut Effects {
        &mut self.fx
    }

    fn append(&mut self, out: Outgoing) -> impl Future<Output = Result<(), Error>> + Send {
        ready(self.append_now(out))
    }

    fn booking(&mut self, id: BookingId) -> impl Future<Output = Result<Booking, Error>> + Send {
        ready(self.read_booking(id))
    }

    /// The writer thread is the only writer: a row read is a row kept.
    fn lock_booking(
        &mut self,
        id: BookingId,
    ) -> impl Future<Output = Result<Booking, Error>> + Send {
        ready(self.read_booking(id))
    }

    fn driver(&mut self, id: &Id) -> impl Future<Output = Result<Option<Driver>, Error>> + Send {
        ready(self.read_driver(id))
    }

    fn unseen(&mut self, id: &Id) -> impl Future<Output = Result<bool, Error>> + Send {
        let found: Done<bool> = ready(
            self.tx
                .prepare_cached("SELECT unseen FROM drivers WHERE id = ?1")
                .and_then(|mut s| s.query_row([id.as_str()], |r| r.get(0)))
                .map_err(Error::from),
        );
        found
    }

    fn set_unseen(
        &mut self,
        id: &Id,
        unseen: bool,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        ready(self.execute(
            "UPDATE drivers SET unseen = ?2 WHERE id = ?1",
            params![id.as_str(), unseen],
        ))
    }

    fn save_driver(
        &mut self,
        id: &Id,
        status: DriverStatus,
        vehicle_type: &str,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        ready(self.execute(
            "INSERT INTO drivers (id, status, vehicle_type, updated_at, version) VALUES (?1, ?2, ?3, ?4, 1)
             ON CONFLICT (id) DO UPDATE SET status = ?2, vehicle_type = ?3, updated_at = ?4,
                 version = version + 1",
            params![id.as_str(), status.as_str(), vehicle_type, self.now_ms()],
        ))
    }

    fn bump_driver_version(&mut self, id: &Id) -> impl Future<Output = Result<(), Error>> + Send {
        ready(self.execute(
            "UPDATE drivers SET version = version + 1 WHERE id = ?1",
            [id.as_str()],
        ))
    }

    fn move_booking(
        &mut self,
        id: BookingId,
        from: BookingStatus,
        to: Move<'_>,
    ) -> impl Future<Output = Result<bool, Error>> + Send {
        ready(self.move_now(id, from, to))
    }

    fn count_wrong_otp(&mut self, id: BookingId) -> impl Future<Output = Result<(), Error>> + Send {
        ready(self.execute(
            "UPDATE bookings SET otp_failures = otp_failures + 1 WHERE id = ?1",
            [id as i64],
        ))
    }

    fn set_otp(
        &mut self,
        id: BookingId,
        otp: &str,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        ready(self.execute(
            "UPDATE bookings SET otp = ?1, otp_failures = 0 WHERE id = ?2 AND status = 'accepted'",
            params![otp, id as i64],
        ))
    }

    fn insert_booking(
        &mut self,
        new: &NewBooking,
    ) -> impl Future<Output = Result<Booking, Error>> + Send {
        ready(self.insert_booking_now(new))
    }

    fn requested(
        &mut self,
        key: &RequestKey,
        since: SystemTime,
    ) -> impl Future<Output = Result<Option<BookingId>, Error>> + Send {
        let found: Done<Option<BookingId>> = ready(
            self.tx
                .prepare_cached(
                    "SELECT booking_id FROM booking_requests
                     WHERE principal = ?1 AND request_id = ?2 AND created_at >= ?3",
                )
                .and_then(|mut s| {
                    s.query_row(
                        params![key.principal, key.request_id, to_millis(since)],
                        |r| r.get::<_, i64>(0),
                    )
                    .optional()
                })
                .map(|id| id.map(|id| id as u64))
                .map_err(Error::from),
        );
        found
    }

    fn remember_request(
        &mut self,
        key: &RequestKey,
        id: BookingId,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        ready(self.execute(
            "INSERT INTO booking_requests (principal, request_id, booking_id, created_at)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (principal, request_id)
             DO UPDATE SET booking_id = ?3, created_at = ?4",
            params![key.principal, key.request_id, id as i64, self.now_ms()],
        ))
    }

    fn offer_state(
        &mut self,
        id: BookingId,
        driver: &Id,
    ) -> impl Future<Output = Result<Option<String>, Error>> + Send {
        let found: Done<Option<String>> = ready(
            self.tx
                .prepare_cached("SELECT state FROM offers WHERE booking_id = ?1 AND driver_id = ?2")
                .and_then(|mut s| {
                    s.query_row(params![id as i64, driver.as_str()], |r| r.get(0))
                        .optional()
                })
                .map_err(Error::from),
        );
        found
    }

    fn insert_offers(
        &mut self,
        id: BookingId,
        offers: &[Offer],
    ) -> impl Future<Output = Result<Vec<Offer>, Error>> + Send {
        ready(self.insert_offers_now(id, offers))
    }

    fn close_offers(
        &mut self,
        id: BookingId,
        state: &'static str,
        winner: Option<&Id>,
    ) -> impl Future<Output = Result<Vec<Id>, Error>> + Send {
        ready(self.close_offers_now(id, state, winner))
    }

    fn withdraw_offers(
        &mut self,
        driver: &Id,
    ) -> impl Future<Output = Result<Vec<BookingId>, Error>> + Send {
        ready(self.withdraw_offers_now(driver))
    }
}
