//! Reads, as functions over a connection: the read pool runs most of them, the
//! writer thread those that must agree exactly with what was published.

use std::collections::HashMap;
use std::time::SystemTime;

use logi::id::Id;
use logi::pb;
use logi::topic::Topic;
use rusqlite::{Connection, OptionalExtension, params};

use super::rows;
use crate::error::Error;
use crate::model::{ActiveTrip, Booking, BookingId, Driver, GeoPoint, from_millis, to_millis};
use crate::store::{
    BookingQuery, DriverRecord, FLEET_SNAPSHOT_BOOKINGS, PendingBooking, SNAPSHOT_ENDED_WITHIN,
    SNAPSHOT_LIMIT, TopicSnapshot, TopicState, log, records,
};

pub fn booking(conn: &Connection, id: BookingId) -> Result<Booking, Error> {
    let sql = format!(
        "SELECT {} FROM bookings WHERE id = ?1",
        rows::BOOKING_COLUMNS
    );
    conn.prepare_cached(&sql)?
        .query_row([id as i64], rows::booking)
        .optional()?
        .ok_or(Error::BookingNotFound(id))
}

pub fn offered_to(conn: &Connection, id: BookingId, driver: &Id) -> Result<bool, Error> {
    let found = conn
        .prepare_cached("SELECT 1 FROM offers WHERE booking_id = ?1 AND driver_id = ?2")?
        .exists(params![id as i64, driver.as_str()])?;
    Ok(found)
}

/// A page of bookings, newest first, and the id to continue before.
pub fn bookings(
    conn: &Connection,
    q: &BookingQuery,
) -> Result<(Vec<Booking>, Option<BookingId>), Error> {
    let mut sql = format!("SELECT {} FROM bookings WHERE 1 = 1", rows::BOOKING_COLUMNS);
    let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
    if let Some(user) = &q.user_id {
        args.push(Box::new(user.to_string()));
        sql += &format!(" AND user_id = ?{}", args.len());
    }
    if let Some(driver) = &q.driver_id {
        args.push(Box::new(driver.to_string()));
        sql += &format!(" AND driver_id = ?{}", args.len());
    }
    if !q.statuses.is_empty() {
        let names: Vec<String> = q
            .statuses
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        sql += &format!(" AND status IN ({})", names.join(", "));
    }
    if let Some(before) = q.before {
        args.push(Box::new(before as i64));
        sql += &format!(" AND id < ?{}", args.len());
    }
    args.push(Box::new(q.limit as i64 + 1));
    sql += &format!(" ORDER BY id DESC LIMIT ?{}", args.len());
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args.iter()), rows::booking)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(records::page(rows, q.limit))
}

/// Every registered driver with its active trip and last saved position.
pub fn drivers(conn: &Connection) -> Result<Vec<DriverRecord>, Error> {
    let mut trips = HashMap::new();
    let mut stmt = conn.prepare(
        "SELECT driver_id, id, user_id, status FROM bookings WHERE status IN ('accepted', 'on_trip')",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            rows::id(r, 0)?,
            ActiveTrip {
                booking_id: r.get::<_, i64>(1)? as u64,
                user_id: rows::id(r, 2)?,
                status: rows::booking_status(r, 3)?,
            },
        ))
    })?;
    for row in rows {
        let (driver, trip) = row?;
        trips.insert(driver, trip);
    }
    let mut stmt = conn.prepare(
        "SELECT id, status, vehicle_type, lat, lon, heading, speed_mps, seen_at, unseen, version FROM drivers",
    )?;
    let drivers = stmt
        .query_map([], |r| {
            let id = rows::id(r, 0)?;
            let location = records::location(
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get::<_, Option<i64>>(7)?.map(from_millis),
            );
            Ok(DriverRecord {
                driver: Driver {
                    active: trips.get(&id).cloned(),
                    id,
                    status: rows::driver_status(r, 1)?,
                    vehicle_type: r.get(2)?,
                    version: r.get::<_, i64>(9)? as u64,
                },
                location,
                unseen: r.get(8)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(drivers)
}

/// The pending bookings leased to `owner`, with the drivers each was offered to.
pub fn leased(conn: &Connection, owner: i64) -> Result<Vec<PendingBooking>, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, pickup_lat, pickup_lon, vehicle_type, created_at FROM bookings WHERE status = 'pending'
         AND id IN (SELECT booking_id FROM dispatch_leases WHERE owner = ?1)",
    )?;
    let mut pending = stmt
        .query_map([owner], |r| {
            Ok(PendingBooking {
                id: r.get::<_, i64>(0)? as u64,
                pickup: GeoPoint {
                    lat: r.get(1)?,
                    lon: r.get(2)?,
                },
                vehicle_type: r.get(3)?,
                created_at: from_millis(r.get(4)?),
                offered: Vec::new(),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut offers = conn.prepare_cached("SELECT driver_id FROM offers WHERE booking_id = ?1")?;
    for p in &mut pending {
        p.offered = offers
            .query_map([p.id as i64], |r| rows::id(r, 0))?
            .collect::<Result<_, _>>()?;
    }
    Ok(pending)
}

pub fn topic_state(conn: &Connection, topic: &str) -> Result<TopicState, Error> {
    let state = conn
        .prepare_cached("SELECT last_seq, pruned_seq FROM topics WHERE name = ?1")?
        .query_row([topic], |r| {
            Ok(TopicState {
                last_seq: r.get::<_, i64>(0)? as u64,
                pruned_seq: r.get::<_, i64>(1)? as u64,
            })
        })
        .optional()?;
    Ok(state.unwrap_or_default())
}

/// What an app reading `topic` is shown on connecting, oldest first.
pub fn snapshot(conn: &Connection, topic: &Topic, now: SystemTime) -> Result<TopicSnapshot, Error> {
    let limit = SNAPSHOT_LIMIT as i64;
    let mut snap = TopicSnapshot::default();
    match topic {
        Topic::UserBookings(user) => {
            let since = to_millis(now.checked_sub(SNAPSHOT_ENDED_WITHIN).unwrap_or(now));
            let sql = format!(
                "SELECT {} FROM bookings WHERE user_id = ?1
                 AND (status IN ('pending', 'accepted', 'on_trip') OR updated_at >= ?2)
                 ORDER BY id DESC LIMIT ?3",
                rows::BOOKING_COLUMNS
            );
            snap.bookings = conn
                .prepare_cached(&sql)?
                .query_map(params![user.as_str(), since, limit], rows::booking)?
                .collect::<Result<_, _>>()?;
        }
        Topic::DriverBookings(driver) => {
            let sql = format!(
                "SELECT {} FROM bookings WHERE driver_id = ?1 AND status IN ('accepted', 'on_trip')
                 ORDER BY id DESC LIMIT ?2",
                rows::BOOKING_COLUMNS
            );
            snap.bookings = conn
                .prepare_cached(&sql)?
                .query_map(params![driver.as_str(), limit], rows::booking)?
                .collect::<Result<_, _>>()?;
        }
        Topic::DriverAvailable(driver) => {
            // The offer's distance after the booking's columns.
            let sql = format!(
                "SELECT {}, (SELECT distance_m FROM offers o WHERE o.booking_id = bookings.id AND o.driver_id = ?1)
                 FROM bookings WHERE status = 'pending'
                 AND id IN (SELECT booking_id FROM offers WHERE driver_id = ?1 AND state = 'open')
                 ORDER BY id DESC LIMIT ?2",
                rows::BOOKING_COLUMNS
            );
            let distance = rows::BOOKING_COLUMNS.split(',').count();
            snap.offers = conn
                .prepare_cached(&sql)?
                .query_map(params![driver.as_str(), limit], |r| {
                    Ok((rows::booking(r)?, r.get::<_, f64>(distance)?))
                })?
                .collect::<Result<_, _>>()?;
        }
        // The fleet's drivers come from the registry (api::events), not the store.
        Topic::Fleet => {
            let sql = format!(
                "SELECT {} FROM bookings WHERE status IN ('pending', 'accepted', 'on_trip')
                 ORDER BY id DESC LIMIT ?1",
                rows::BOOKING_COLUMNS
            );
            snap.bookings = conn
                .prepare_cached(&sql)?
                .query_map(params![FLEET_SNAPSHOT_BOOKINGS as i64], rows::booking)?
                .collect::<Result<_, _>>()?;
        }
        Topic::Admins => {}
    }
    snap.bookings.reverse();
    snap.offers.reverse();
    Ok(snap)
}

/// Up to `limit` durable events of `topic` after sequence number `after_seq`.
pub fn events_after(
    conn: &Connection,
    epoch: u64,
    topic: &str,
    after_seq: u64,
    limit: usize,
) -> Result<Vec<pb::Event>, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, occurred_at, payload FROM events WHERE topic = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![topic, after_seq as i64, limit as i64], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, Vec<u8>>(2)?,
        ))
    })?;
    let mut events = Vec::new();
    for row in rows {
        let (seq, at, payload) = row?;
        events.push(log::replayed(topic, epoch, seq, at, &payload)?);
    }
    Ok(events)
}
