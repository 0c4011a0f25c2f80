//! Reads, as functions over a connection or a read-only transaction.

use std::collections::HashMap;
use std::time::SystemTime;

use deadpool_postgres::GenericClient;
use logi::id::Id;
use logi::pb;
use logi::topic::Topic;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::rows;
use crate::error::Error;
use crate::model::{Booking, BookingId, Driver, GeoPoint, from_millis, to_millis};
use crate::store::lease;
use crate::store::{
    BOOKING_COLUMNS, BookingQuery, DriverRecord, FLEET_SNAPSHOT_BOOKINGS, PendingBooking,
    SNAPSHOT_ENDED_WITHIN, SNAPSHOT_LIMIT, TopicSnapshot, TopicState, log, records,
};

async fn query(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, Error> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.query(&stmt, params).await?)
}

fn bookings_of(rows: &[Row]) -> Result<Vec<Booking>, Error> {
    rows.iter().map(rows::booking).collect()
}

pub async fn booking(c: &impl GenericClient, id: BookingId) -> Result<Booking, Error> {
    let sql = format!("SELECT {BOOKING_COLUMNS} FROM bookings WHERE id = $1");
    let rows = query(c, &sql, &[&(id as i64)]).await?;
    rows.first()
        .map(rows::booking)
        .unwrap_or(Err(Error::BookingNotFound(id)))
}

pub async fn offered_to(c: &impl GenericClient, id: BookingId, driver: &Id) -> Result<bool, Error> {
    let rows = query(
        c,
        "SELECT 1 FROM offers WHERE booking_id = $1 AND driver_id = $2",
        &[&(id as i64), &driver.as_str()],
    )
    .await?;
    Ok(!rows.is_empty())
}

/// A page of bookings, newest first, and the id to continue before.
pub async fn bookings(
    c: &impl GenericClient,
    q: &BookingQuery,
) -> Result<(Vec<Booking>, Option<BookingId>), Error> {
    let user = q.user_id.as_ref().map(Id::to_string);
    let driver = q.driver_id.as_ref().map(Id::to_string);
    let statuses: Vec<&str> = q.statuses.iter().map(|s| s.as_str()).collect();
    let before = q.before.map(|b| b as i64);
    let limit = q.limit as i64 + 1;
    // One statement per combination of filters, each planned for its own index.
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    let mut conditions = String::new();
    let mut add = |condition: &str, param| {
        params.push(param);
        conditions += &format!(" AND {condition}${}", params.len());
    };
    if let Some(user) = &user {
        add("user_id = ", user);
    }
    if let Some(driver) = &driver {
        add("driver_id = ", driver);
    }
    if let Some(before) = &before {
        add("id < ", before);
    }
    if !statuses.is_empty() {
        add("status = ANY(", &statuses);
        conditions += ")";
    }
    params.push(&limit);
    let sql = format!(
        "SELECT {BOOKING_COLUMNS} FROM bookings WHERE TRUE{conditions} ORDER BY id DESC LIMIT ${}",
        params.len()
    );
    let rows = query(c, &sql, &params).await?;
    Ok(records::page(bookings_of(&rows)?, q.limit))
}

/// Every registered driver with its active trip and last saved position.
pub async fn drivers(c: &impl GenericClient) -> Result<Vec<DriverRecord>, Error> {
    let mut trips = HashMap::new();
    let rows = query(
        c,
        "SELECT driver_id, id, user_id, status FROM bookings WHERE status IN ('accepted', 'on_trip')",
        &[],
    )
    .await?;
    for row in &rows {
        trips.insert(rows::id(row, 0)?, rows::trip(row, 1)?);
    }
    let rows = query(
        c,
        "SELECT id, status, vehicle_type, lat, lon, heading, speed_mps, seen_at, unseen, version FROM drivers",
        &[],
    )
    .await?;
    rows.iter()
        .map(|r| {
            let id = rows::id(r, 0)?;
            let location = records::location(
                r.try_get(3)?,
                r.try_get(4)?,
                r.try_get(5)?,
                r.try_get(6)?,
                r.try_get::<_, Option<i64>>(7)?.map(from_millis),
            );
            Ok(DriverRecord {
                driver: Driver {
                    active: trips.get(&id).cloned(),
                    id,
                    status: rows::driver_status(r, 1)?,
                    vehicle_type: r.try_get(2)?,
                    version: r.try_get::<_, i64>(9)? as u64,
                },
                location,
                unseen: r.try_get(8)?,
            })
        })
        .collect()
}

/// Every pending booking with the drivers it was offered to.
/// Leases pending bookings to `owner` (see `Store::lease_pending`) and returns
/// them. Each statement is atomic on its own; lease times are by the database's
/// clock, so the replicas' clocks need not agree.
pub async fn lease_pending(
    c: &impl GenericClient,
    owner: u64,
    lease: std::time::Duration,
) -> Result<Vec<PendingBooking>, Error> {
    let now: i64 = query(
        c,
        "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
        &[],
    )
    .await?[0]
        .try_get(0)?;
    let (owner, until) = (owner as i64, now + lease.as_millis() as i64);
    query(c, lease::FORGET_SETTLED, &[&owner]).await?;
    // A booking nobody holds is inserted; one held by a replica whose lease
    // lapsed, or by this one, is updated. Two replicas taking the same booking
    // at once: the second waits for the first's row, then finds it held.
    query(c, &lease::take("$1", "$2", "$3"), &[&owner, &until, &now]).await?;
    let rows = query(
        c,
        "SELECT b.id, b.pickup_lat, b.pickup_lon, b.vehicle_type, b.created_at,
                ARRAY(SELECT driver_id FROM offers o WHERE o.booking_id = b.id)
         FROM bookings b WHERE b.status = 'pending'
         AND b.id IN (SELECT booking_id FROM dispatch_leases WHERE owner = $1)",
        &[&owner],
    )
    .await?;
    rows.iter()
        .map(|r| {
            Ok(PendingBooking {
                id: r.try_get::<_, i64>(0)? as u64,
                pickup: GeoPoint {
                    lat: r.try_get(1)?,
                    lon: r.try_get(2)?,
                },
                vehicle_type: r.try_get(3)?,
                created_at: from_millis(r.try_get(4)?),
                offered: r
                    .try_get::<_, Vec<String>>(5)?
                    .into_iter()
                    .map(|d| Id::new(d).map_err(|e| Error::storage(e.to_string())))
                    .collect::<Result<_, _>>()?,
            })
        })
        .collect()
}

pub async fn topic_state(c: &impl GenericClient, topic: &str) -> Result<TopicState, Error> {
    let rows = query(
        c,
        "SELECT last_seq, pruned_seq FROM topics WHERE name = $1",
        &[&topic],
    )
    .await?;
    let Some(row) = rows.first() else {
        return Ok(TopicState::default());
    };
    Ok(TopicState {
        last_seq: row.try_get::<_, i64>(0)? as u64,
        pruned_seq: row.try_get::<_, i64>(1)? as u64,
    })
}

/// The bounds of each of `topics`, in their order, in one query (a sequenced
/// hub reads the heads of every topic that gains its first subscriber, thousands
/// at once in a reconnect storm).
pub async fn topic_states(
    c: &impl GenericClient,
    topics: &[String],
) -> Result<Vec<TopicState>, Error> {
    let rows = query(
        c,
        "SELECT name, last_seq, pruned_seq FROM topics WHERE name = ANY($1)",
        &[&topics],
    )
    .await?;
    let mut found = HashMap::with_capacity(rows.len());
    for row in &rows {
        let state = TopicState {
            last_seq: row.try_get::<_, i64>(1)? as u64,
            pruned_seq: row.try_get::<_, i64>(2)? as u64,
        };
        found.insert(row.try_get::<_, String>(0)?, state);
    }
    Ok(topics
        .iter()
        .map(|t| found.get(t).copied().unwrap_or_default())
        .collect())
}

/// What an app reading `topic` is shown on connecting, oldest first.
pub async fn snapshot(
    c: &impl GenericClient,
    topic: &Topic,
    now: SystemTime,
) -> Result<TopicSnapshot, Error> {
    let limit = SNAPSHOT_LIMIT as i64;
    let mut snap = TopicSnapshot::default();
    match topic {
        Topic::UserBookings(user) => {
            let since = to_millis(now.checked_sub(SNAPSHOT_ENDED_WITHIN).unwrap_or(now));
            let sql = format!(
                "SELECT {BOOKING_COLUMNS} FROM bookings WHERE user_id = $1
                 AND (status IN ('pending', 'accepted', 'on_trip') OR updated_at >= $2)
                 ORDER BY id DESC LIMIT $3"
            );
            let rows = query(c, &sql, &[&user.as_str(), &since, &limit]).await?;
            snap.bookings = bookings_of(&rows)?;
        }
        Topic::DriverBookings(driver) => {
            let sql = format!(
                "SELECT {BOOKING_COLUMNS} FROM bookings WHERE driver_id = $1 AND status IN ('accepted', 'on_trip')
                 ORDER BY id DESC LIMIT $2"
            );
            let rows = query(c, &sql, &[&driver.as_str(), &limit]).await?;
            snap.bookings = bookings_of(&rows)?;
        }
        Topic::DriverAvailable(driver) => {
            // The offer's distance after the booking's columns.
            let sql = format!(
                "SELECT {BOOKING_COLUMNS}, (SELECT distance_m FROM offers o WHERE o.booking_id = bookings.id AND o.driver_id = $1)
                 FROM bookings WHERE status = 'pending'
                 AND id IN (SELECT booking_id FROM offers WHERE driver_id = $1 AND state = 'open')
                 ORDER BY id DESC LIMIT $2"
            );
            let distance = BOOKING_COLUMNS.split(',').count();
            let rows = query(c, &sql, &[&driver.as_str(), &limit]).await?;
            snap.offers = rows
                .iter()
                .map(|r| Ok((rows::booking(r)?, r.try_get::<_, f64>(distance)?)))
                .collect::<Result<_, Error>>()?;
        }
        // The fleet's drivers come from the registry (api::events), not the store.
        Topic::Fleet => {
            let sql = format!(
                "SELECT {BOOKING_COLUMNS} FROM bookings WHERE status IN ('pending', 'accepted', 'on_trip')
                 ORDER BY id DESC LIMIT $1"
            );
            let rows = query(c, &sql, &[&(FLEET_SNAPSHOT_BOOKINGS as i64)]).await?;
            snap.bookings = bookings_of(&rows)?;
        }
        Topic::Admins => {}
    }
    snap.bookings.reverse();
    snap.offers.reverse();
    Ok(snap)
}

/// Up to `limit` durable events of `topic` after sequence number `after_seq`.
pub async fn events_after(
    c: &impl GenericClient,
    epoch: u64,
    topic: &str,
    after_seq: u64,
    limit: usize,
) -> Result<Vec<pb::Event>, Error> {
    let rows = query(
        c,
        "SELECT seq, occurred_at, payload FROM events WHERE topic = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        &[&topic, &(after_seq as i64), &(limit as i64)],
    )
    .await?;
    rows.iter()
        .map(|r| {
            let payload: &[u8] = r.try_get(2)?;
            log::replayed(topic, epoch, r.try_get(0)?, r.try_get(1)?, payload)
        })
        .collect()
}
