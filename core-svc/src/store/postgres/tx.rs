//! The steps of the state transitions ([`crate::store::transitions`]) in
//! PostgreSQL, on one READ COMMITTED transaction.
//!
//! Rows a transition decides on are locked as it reads them (`FOR NO KEY
//! UPDATE`: exclusive among transitions, and out of the way of the foreign-key
//! checks of rows that refer to them, such as a new offer or lease), so
//! concurrent transitions of one booking or driver take turns; the conditional
//! updates stay conditional all the same. An accept locks the offers it will
//! close up front, in key order. Events are gathered while the
//! transaction runs and appended just before COMMIT, the topics locked in name
//! order: a topic's row lock (the `admins` topic is in almost every transaction)
//! is held only for the append and the commit, and two transactions never wait
//! for each other's topics the other way round.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::time::SystemTime;

use deadpool_postgres::Transaction;
use futures::future::try_join_all;
use logi::id::Id;
use tokio_postgres::types::ToSql;

use super::rows;
use crate::error::Error;
use crate::fanout::Outgoing;
use crate::model::{
    Booking, BookingId, BookingStatus, Driver, DriverStatus, Location, NewBooking, Offer,
    RequestKey, to_millis,
};
use crate::store::transitions::{Move, Steps};
use crate::store::{BOOKING_COLUMNS, Effects, log};

/// A statement's parameters.
type Params<'a> = Vec<&'a (dyn ToSql + Sync)>;

/// One write transaction in progress, the events it will append and the effects
/// it has gathered.
pub struct PgTx<'c> {
    tx: Transaction<'c>,
    epoch: u64,
    now: SystemTime,
    /// In the order the transition told them; appended by [`PgTx::commit`].
    queued: Outgoing,
    fx: Effects,
}

impl<'c> PgTx<'c> {
    pub fn new(tx: Transaction<'c>, epoch: u64) -> Self {
        Self {
            tx,
            epoch,
            now: SystemTime::now(),
            queued: Vec::new(),
            fx: Effects::default(),
        }
    }

    fn now_ms(&self) -> i64 {
        to_millis(self.now)
    }

    /// Runs a cached statement; how many rows it changed.
    async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, Error> {
        let stmt = self.tx.prepare_cached(sql).await?;
        Ok(self.tx.execute(&stmt, params).await?)
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, Error> {
        let stmt = self.tx.prepare_cached(sql).await?;
        Ok(self.tx.query(&stmt, params).await?)
    }

    /// Appends the queued events, then commits. The effects, their events stamped.
    ///
    /// # Errors
    /// The append's or the commit's error; a commit whose outcome is unknown (the
    /// connection failed during it) is [`Error::Unavailable`] saying so.
    pub async fn commit(mut self) -> Result<Effects, Error> {
        self.append_queued().await?;
        let Self { tx, fx, .. } = self;
        match tx.commit().await {
            Ok(()) => Ok(fx),
            // The server answered: it rolled back.
            Err(e) if e.as_db_error().is_some() => Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %crate::error::chain(&e), "COMMIT did not complete");
                Err(Error::Unavailable(
                    "core-svc lost its database connection while committing: the change may or may not \
                     have been made, read it back before retrying"
                        .into(),
                ))
            }
        }
    }

    /// Takes the next sequence numbers of each topic in one statement per topic,
    /// in name order and pipelined, then inserts the events in one statement.
    async fn append_queued(&mut self) -> Result<(), Error> {
        if self.queued.is_empty() {
            return Ok(());
        }
        let named: Vec<(String, _)> = std::mem::take(&mut self.queued)
            .into_iter()
            .map(|(topic, kind)| (topic.to_string(), kind))
            .collect();
        let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
        for (name, _) in &named {
            *counts.entry(name).or_default() += 1;
        }
        let take = self
            .tx
            .prepare_cached(
                "INSERT INTO topics (name, last_seq) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET last_seq = topics.last_seq + EXCLUDED.last_seq
                 RETURNING last_seq",
            )
            .await?;
        let params: Vec<[&(dyn ToSql + Sync); 2]> = counts
            .iter()
            .map(|(name, n)| [name as &(dyn ToSql + Sync), n as &(dyn ToSql + Sync)])
            .collect();
        let lasts = try_join_all(params.iter().map(|p| self.tx.query_one(&take, p))).await?;
        let mut next: BTreeMap<&str, i64> = BTreeMap::new();
        for ((name, n), row) in counts.iter().zip(lasts) {
            next.insert(name, row.try_get::<_, i64>(0)? - n + 1);
        }
        let (mut topics, mut seqs, mut payloads) = (Vec::new(), Vec::new(), Vec::new());
        let at = self.now_ms();
        for (name, kind) in &named {
            let seq = next.get_mut(name.as_str()).expect("counted");
            let (event, payload) = log::payload(kind.clone());
            self.fx
                .events
                .push(log::stamped(event, name, self.epoch, *seq, at));
            topics.push(name.as_str());
            seqs.push(*seq);
            payloads.push(payload);
            *seq += 1;
        }
        self.execute(
            "INSERT INTO events (topic, seq, occurred_at, payload)
             SELECT topic, seq, $3, payload FROM UNNEST($1::text[], $2::int8[], $4::bytea[])
                 AS e (topic, seq, payload)",
            &[&topics, &seqs, &at, &payloads],
        )
        .await?;
        Ok(())
    }

    async fn read_booking(&self, id: BookingId, lock: &str) -> Result<Booking, Error> {
        let sql = format!("SELECT {BOOKING_COLUMNS} FROM bookings WHERE id = $1{lock}");
        let rows = self.query(&sql, &[&(id as i64)]).await?;
        rows.first()
            .map(rows::booking)
            .unwrap_or(Err(Error::BookingNotFound(id)))
    }

    /// Records drivers' last positions (written behind, a batch at a time) in one
    /// statement, the last position of a driver named twice winning.
    pub async fn save_positions(&self, positions: &[(Id, Location)]) -> Result<(), Error> {
        let mut last: BTreeMap<&str, &Location> = BTreeMap::new();
        for (id, l) in positions {
            last.insert(id.as_str(), l);
        }
        // In id order, as every batch: two batches lock their rows the same way round.
        let ids: Vec<&str> = last.keys().copied().collect();
        let col = |f: fn(&Location) -> f64| last.values().map(|l| f(l)).collect::<Vec<f64>>();
        let (lat, lon) = (col(|l| l.point.lat), col(|l| l.point.lon));
        let (heading, speed) = (col(|l| l.heading), col(|l| l.speed_mps));
        let at: Vec<i64> = last.values().map(|l| to_millis(l.at)).collect();
        self.execute(
            "UPDATE drivers AS d SET lat = p.lat, lon = p.lon, heading = p.heading,
                 speed_mps = p.speed_mps, seen_at = p.seen_at
             FROM UNNEST($1::text[], $2::float8[], $3::float8[], $4::float8[], $5::float8[], $6::int8[])
                 AS p (id, lat, lon, heading, speed_mps, seen_at)
             WHERE d.id = p.id",
            &[&ids, &lat, &lon, &heading, &speed, &at],
        )
        .await?;
        Ok(())
    }

    /// Forgets request ids older than `since`.
    pub async fn forget_requests(&self, since: SystemTime) -> Result<(), Error> {
        self.execute(
            "DELETE FROM booking_requests WHERE created_at < $1",
            &[&to_millis(since)],
        )
        .await?;
        Ok(())
    }

    /// Removes up to `limit` events that occurred before `before`, remembering in
    /// each topic the last one removed; how many.
    pub async fn prune_batch(&self, before: SystemTime, limit: usize) -> Result<u64, Error> {
        let rows = self
            .query(
                "WITH gone AS (
                     DELETE FROM events WHERE (topic, seq) IN (
                         SELECT topic, seq FROM events WHERE occurred_at < $1 LIMIT $2)
                     RETURNING topic, seq),
                 marked AS (
                     UPDATE topics AS t SET pruned_seq = GREATEST(t.pruned_seq, g.seq)
                     FROM (SELECT topic, MAX(seq) AS seq FROM gone GROUP BY topic) AS g
                     WHERE t.name = g.topic)
                 SELECT COUNT(*) FROM gone",
                &[&to_millis(before), &(limit as i64)],
            )
            .await?;
        Ok(rows[0].try_get::<_, i64>(0)? as u64)
    }
}

impl Steps for PgTx<'_> {
    fn now(&self) -> SystemTime {
        self.now
    }

    fn effects(&mut self) -> &mut Effects {
        &mut self.fx
    }

    fn append(&mut self, out: Outgoing) -> impl Future<Output = Result<(), Error>> + Send {
        self.queued.extend(out);
        std::future::ready(Ok(()))
    }

    async fn booking(&mut self, id: BookingId) -> Result<Booking, Error> {
        self.read_booking(id, "").await
    }

    async fn lock_booking(&mut self, id: BookingId) -> Result<Booking, Error> {
        self.read_booking(id, " FOR NO KEY UPDATE").await
    }

    async fn driver(&mut self, id: &Id) -> Result<Option<Driver>, Error> {
        // Two statements, pipelined: the active trip is read by the second, whose
        // snapshot is taken once the first holds the driver's row, so it sees
        // every trip committed before that.
        let lock = self
            .tx
            .prepare_cached(
                "SELECT status, vehicle_type, version FROM drivers WHERE id = $1 FOR NO KEY UPDATE",
            )
            .await?;
        let trip = self
            .tx
            .prepare_cached(
                "SELECT id, user_id, status FROM bookings
                 WHERE driver_id = $1 AND status IN ('accepted', 'on_trip') ORDER BY id DESC LIMIT 1",
            )
            .await?;
        let param: [&(dyn ToSql + Sync); 1] = [&id.as_str()];
        let (found, active) = futures::try_join!(
            self.tx.query_opt(&lock, &param),
            self.tx.query_opt(&trip, &param),
        )?;
        let Some(row) = found else {
            return Ok(None);
        };
        Ok(Some(Driver {
            id: id.clone(),
            status: rows::driver_status(&row, 0)?,
            vehicle_type: row.try_get(1)?,
            version: row.try_get::<_, i64>(2)? as u64,
            active: active.map(|r| rows::trip(&r, 0)).transpose()?,
        }))
    }

    async fn unseen(&mut self, id: &Id) -> Result<bool, Error> {
        let rows = self
            .query("SELECT unseen FROM drivers WHERE id = $1", &[&id.as_str()])
            .await?;
        match rows.first() {
            Some(row) => Ok(row.try_get(0)?),
            None => Err(Error::DriverNotFound(id.to_string())),
        }
    }

    async fn set_unseen(&mut self, id: &Id, unseen: bool) -> Result<(), Error> {
        self.execute(
            "UPDATE drivers SET unseen = $2 WHERE id = $1",
            &[&id.as_str(), &unseen],
        )
        .await?;
        Ok(())
    }

    async fn save_driver(
        &mut self,
        id: &Id,
        status: DriverStatus,
        vehicle_type: &str,
    ) -> Result<(), Error> {
        self.execute(
            "INSERT INTO drivers (id, status, vehicle_type, updated_at, version) VALUES ($1, $2, $3, $4, 1)
             ON CONFLICT (id) DO UPDATE SET status = $2, vehicle_type = $3, updated_at = $4,
                 version = drivers.version + 1",
            &[&id.as_str(), &status.as_str(), &vehicle_type, &self.now_ms()],
        )
        .await?;
        Ok(())
    }

    async fn bump_driver_version(&mut self, id: &Id) -> Result<(), Error> {
        self.execute(
            "UPDATE drivers SET version = version + 1 WHERE id = $1",
            &[&id.as_str()],
        )
        .await?;
        Ok(())
    }

    async fn move_booking(
        &mut self,
        id: BookingId,
        from: BookingStatus,
        to: Move<'_>,
    ) -> Result<bool, Error> {
        let (set, extra) = to.sets();
        let set = set.replace('?', "$");
        let sql = format!(
            "UPDATE bookings SET status = $1, updated_at = $2{set} WHERE id = $3 AND status = $4"
        );
        let (to_s, now, id_i, from_s) = (to.to().as_str(), self.now_ms(), id as i64, from.as_str());
        let mut params: Params<'_> = vec![&to_s, &now, &id_i, &from_s];
        params.extend(extra.iter().flatten().map(|e| e as &(dyn ToSql + Sync)));
        Ok(self.execute(&sql, &params).await? == 1)
    }

    async fn count_wrong_otp(&mut self, id: BookingId) -> Result<(), Error> {
        self.execute(
            "UPDATE bookings SET otp_failures = otp_failures + 1 WHERE id = $1",
            &[&(id as i64)],
        )
        .await?;
        Ok(())
    }

    async fn set_otp(&mut self, id: BookingId, otp: &str) -> Result<(), Error> {
        self.execute(
            "UPDATE bookings SET otp = $1, otp_failures = 0 WHERE id = $2 AND status = 'accepted'",
            &[&otp, &(id as i64)],
        )
        .await?;
        Ok(())
    }

    async fn insert_booking(&mut self, new: &NewBooking) -> Result<Booking, Error> {
        let sql = format!(
            "INSERT INTO bookings (user_id, status, pickup_lat, pickup_lon, pickup_address, dropoff_lat,
                 dropoff_lon, dropoff_address, vehicle_type, price_estimate, distance_m, phone_number,
                 created_at, updated_at)
             VALUES ($1, 'pending', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)
             RETURNING {BOOKING_COLUMNS}"
        );
        let rows = self
            .query(
                &sql,
                &[
                    &new.user_id.as_str(),
                    &new.pickup.point.lat,
                    &new.pickup.point.lon,
                    &new.pickup.address,
                    &new.dropoff.point.lat,
                    &new.dropoff.point.lon,
                    &new.dropoff.address,
                    &new.vehicle_type,
                    &new.price_estimate,
                    &new.distance_m,
                    &new.phone_number,
                    &self.now_ms(),
                ],
            )
            .await?;
        rows::booking(&rows[0])
    }

    async fn requested(
        &mut self,
        key: &RequestKey,
        since: SystemTime,
    ) -> Result<Option<BookingId>, Error> {
        // A repeat sent while the first is still committing waits for it here, and
        // then finds its booking (the next statement sees what committed meanwhile).
        self.execute(
            "SELECT pg_advisory_xact_lock(1, hashtext($1::text || chr(10) || $2::text))",
            &[&key.principal, &key.request_id],
        )
        .await?;
        let rows = self
            .query(
                "SELECT booking_id FROM booking_requests
                 WHERE principal = $1 AND request_id = $2 AND created_at >= $3",
                &[&key.principal, &key.request_id, &to_millis(since)],
            )
            .await?;
        rows.first()
            .map(|r| Ok(r.try_get::<_, i64>(0)? as u64))
            .transpose()
    }

    async fn remember_request(&mut self, key: &RequestKey, id: BookingId) -> Result<(), Error> {
        self.execute(
            "INSERT INTO booking_requests (principal, request_id, booking_id, created_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (principal, request_id)
             DO UPDATE SET booking_id = $3, created_at = $4",
            &[
                &key.principal,
                &key.request_id,
                &(id as i64),
                &self.now_ms(),
            ],
        )
        .await?;
        Ok(())
    }

    async fn lock_offers(&mut self, id: BookingId, driver: &Id) -> Result<(), Error> {
        self.query(
            "SELECT 1 FROM offers WHERE booking_id = $1 OR (driver_id = $2 AND state = 'open')
             ORDER BY booking_id, driver_id FOR NO KEY UPDATE",
            &[&(id as i64), &driver.as_str()],
        )
        .await?;
        Ok(())
    }

    async fn offer_state(&mut self, id: BookingId, driver: &Id) -> Result<Option<String>, Error> {
        let rows = self
            .query(
                "SELECT state FROM offers WHERE booking_id = $1 AND driver_id = $2",
                &[&(id as i64), &driver.as_str()],
            )
            .await?;
        rows.first().map(|r| Ok(r.try_get(0)?)).transpose()
    }

    async fn insert_offers(
        &mut self,
        id: BookingId,
        offers: &[Offer],
    ) -> Result<Vec<Offer>, Error> {
        if offers.is_empty() {
            return Ok(Vec::new());
        }
        let drivers: Vec<&str> = offers.iter().map(|o| o.driver_id.as_str()).collect();
        let distances: Vec<f64> = offers.iter().map(|o| o.distance_m).collect();
        let rows = self
            .query(
                "INSERT INTO offers (booking_id, driver_id, state, distance_m, offered_at)
                 SELECT $1, driver_id, 'open', distance_m, $4
                 FROM UNNEST($2::text[], $3::float8[]) AS o (driver_id, distance_m)
                 ON CONFLICT (booking_id, driver_id) DO NOTHING RETURNING driver_id",
                &[&(id as i64), &drivers, &distances, &self.now_ms()],
            )
            .await?;
        let mut made = rows
            .iter()
            .map(|r| r.try_get::<_, String>(0))
            .collect::<Result<HashSet<_>, _>>()?;
        // In the order given, each driver once, as one insert after another would.
        Ok(offers
            .iter()
            .filter(|o| made.remove(o.driver_id.as_str()))
            .cloned()
            .collect())
    }

    async fn close_offers(
        &mut self,
        id: BookingId,
        state: &'static str,
        winner: Option<&Id>,
    ) -> Result<Vec<Id>, Error> {
        let rows = self
            .query(
                "UPDATE offers SET state = CASE WHEN driver_id = $1 THEN 'accepted' ELSE $2 END, closed_at = $3
                 WHERE booking_id = $4 AND state = 'open' RETURNING driver_id",
                &[&winner.map(Id::as_str), &state, &self.now_ms(), &(id as i64)],
            )
            .await?;
        rows.iter().map(|r| rows::id(r, 0)).collect()
    }

    async fn withdraw_offers(&mut self, driver: &Id) -> Result<Vec<BookingId>, Error> {
        let rows = self
            .query(
                "UPDATE offers SET state = 'withdrawn', closed_at = $1
                 WHERE driver_id = $2 AND state = 'open' RETURNING booking_id",
                &[&self.now_ms(), &driver.as_str()],
            )
            .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<_, i64>(0)? as u64))
            .collect()
    }
}
