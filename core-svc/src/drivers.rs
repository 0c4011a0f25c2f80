//! The in-memory driver registry: status, vehicle type, latest position and active
//! trip of every known driver, plus one spatial index per vehicle type holding the
//! AVAILABLE drivers with a known, fresh position.
//!
//! Status, vehicle type and active trip mirror the database: the store's commit sink
//! applies them in commit order. Positions are kept here as they arrive and written
//! behind to the database a batch at a time ([`Registry::take_moved`]; a GPS ping is
//! not worth a disk write of its own), so a restart finds drivers where they were.
//! A driver whose positions stop for too long is marked unseen and leaves the index
//! until its next position ([`crate::liveness`]).
//! A std `Mutex` guards it: every critical section is short and never awaits.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::SystemTime;

use tokio::time::Instant;

use logi::id::Id;

use crate::error::Error;
use crate::geo::SpatialIndex;
use crate::model::{Driver, DriverStatus, GeoPoint, Location};

#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    drivers: HashMap<Id, Entry>,
    by_vehicle: HashMap<String, SpatialIndex<Id>>,
    /// Drivers whose position changed since the last [`Registry::take_moved`].
    moved: HashSet<Id>,
}

#[derive(Debug)]
struct Entry {
    driver: Driver,
    location: Option<Location>,
    /// When the last position came, on the monotonic clock: a step of the wall
    /// clock must not make every driver look silent at once.
    seen: Option<Instant>,
    /// Available, but silent for too long: out of dispatch until its next position.
    unseen: bool,
}

impl Entry {
    fn silent_since(&self, cutoff: Instant) -> bool {
        self.driver.status == DriverStatus::Available
            && !self.unseen
            && self.seen.is_some_and(|at| at < cutoff)
    }

    /// Where the entry sits in its vehicle type's index, if it is indexed.
    fn indexed_at(&self) -> Option<GeoPoint> {
        match (self.driver.status, self.location) {
            (DriverStatus::Available, Some(l)) if !self.unseen => Some(l.point),
            _ => None,
        }
    }
}

/// How many drivers are in each status; see [`Registry::counts`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StatusCounts {
    pub available: u64,
    pub on_trip: u64,
    pub offline: u64,
    pub unseen: u64,
}

/// What recording a position did.
#[derive(Debug, PartialEq)]
pub struct Recorded<R> {
    /// What the trip callback returned, if the driver is on a trip.
    pub during_trip: Option<R>,
    /// The driver was unseen and is back: the store should hear of it.
    pub back: bool,
}

/// A driver found near a point.
#[derive(Debug, Clone, PartialEq)]
pub struct Nearby {
    pub driver_id: Id,
    pub location: Location,
    pub distance_m: f64,
}

impl Inner {
    fn unindex(&mut self, id: &Id) {
        if let Some(entry) = self.drivers.get(id)
            && let Some(at) = entry.indexed_at()
            && let Some(index) = self.by_vehicle.get_mut(&entry.driver.vehicle_type)
        {
            index.remove(id, at);
        }
    }

    fn put(
        &mut self,
        driver: &Driver,
        location: Option<Location>,
        seen: Option<Instant>,
        unseen: bool,
    ) {
        self.unindex(&driver.id);
        let entry = Entry {
            driver: driver.clone(),
            location,
            seen,
            unseen,
        };
        self.drivers.insert(driver.id.clone(), entry);
        self.index(&driver.id);
    }

    fn index(&mut self, id: &Id) {
        if let Some(entry) = self.drivers.get(id)
            && let Some(at) = entry.indexed_at()
        {
            self.by_vehicle
                .entry(entry.driver.vehicle_type.clone())
                .or_default()
                .insert(id.clone(), at);
        }
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way
        // that matters more than stopping every RPC would, so keep going.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets a driver's status, vehicle type and active trip as committed, unless
    /// the registry already holds a newer version of them.
    pub fn apply(&self, driver: &Driver) {
        let mut inner = self.lock();
        if inner
            .drivers
            .get(&driver.id)
            .is_some_and(|e| e.driver.version > driver.version)
        {
            return;
        }
        let (location, seen, unseen) = inner
            .drivers
            .get(&driver.id)
            .map_or((None, None, false), |e| (e.location, e.seen, e.unseen));
        inner.put(driver, location, seen, unseen);
    }

    /// Drivers by status now, for the metrics: available (and seen lately), on a
    /// trip, offline, and available but silent (out of dispatch).
    pub fn counts(&self) -> StatusCounts {
        let inner = self.lock();
        let mut counts = StatusCounts::default();
        for entry in inner.drivers.values() {
            match entry.driver.status {
                DriverStatus::Available if entry.unseen => counts.unseen += 1,
                DriverStatus::Available => counts.available += 1,
                DriverStatus::OnTrip => counts.on_trip += 1,
                DriverStatus::Offline => counts.offline += 1,
            }
        }
        counts
    }

    /// Puts a driver back as the database saved it, at start-up: seen as long ago
    /// as its saved time says (never in the future).
    pub fn restore(&self, driver: &Driver, location: Option<Location>, unseen: bool) {
        let seen = location.map(|l| {
            let ago = SystemTime::now().duration_since(l.at).unwrap_or_default();
            Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
        });
        let mut inner = self.lock();
        // In a cluster a newer change may have come from another replica meanwhile.
        if inner
            .drivers
            .get(&driver.id)
            .is_some_and(|e| e.driver.version > driver.version)
        {
            return;
        }
        inner.put(driver, location, seen, unseen);
    }

    /// Available drivers, not yet unseen, whose last position came before `cutoff`.
    pub fn silent_since(&self, cutoff: Instant) -> Vec<Id> {
        self.lock()
            .drivers
            .values()
            .filter(|e| e.silent_since(cutoff))
            .map(|e| e.driver.id.clone())
            .collect()
    }

    /// Takes a driver out of dispatch if it is still silent since `cutoff` (a
    /// position may have come meanwhile); whether it was.
    pub fn mark_unseen(&self, id: &Id, cutoff: Instant) -> bool {
        let mut inner = self.lock();
        let silent = inner
            .drivers
            .get(id)
            .is_some_and(|e| e.silent_since(cutoff));
        if silent {
            inner.unindex(id);
            inner.drivers.get_mut(id).expect("checked above").unseen = true;
        }
        silent
    }

    /// The positions that changed since the last call, to be saved.
    pub fn take_moved(&self) -> Vec<(Id, Location)> {
        let mut inner = self.lock();
        let moved = std::mem::take(&mut inner.moved);
        moved
            .into_iter()
            .filter_map(|id| {
                let location = inner.drivers.get(&id)?.location?;
                Some((id, location))
            })
            .collect()
    }

    /// Records a position and, with `moved`, publishes what it means while still
    /// holding the registry: a trip that ends concurrently is applied either
    /// before the call (which then sees no trip) or after its publish, never in
    /// between, so what `moved` sends is in the order of the driver's changes.
    /// `save`: it was received here, and is saved behind
    /// ([`Registry::take_moved`]); another replica saves its own.
    ///
    /// # Errors
    /// [`Error::DriverNotFound`] for a driver not known here.
    pub fn record<R>(
        &self,
        id: &Id,
        location: Location,
        seen: Instant,
        save: bool,
        moved: impl FnOnce(&Driver) -> Option<R>,
    ) -> Result<Recorded<R>, Error> {
        let mut inner = self.lock();
        if !inner.drivers.contains_key(id) {
            return Err(Error::DriverNotFound(id.to_string()));
        }
        inner.unindex(id);
        let entry = inner.drivers.get_mut(id).expect("checked above");
        entry.location = Some(location);
        entry.seen = Some(seen);
        let back = std::mem::replace(&mut entry.unseen, false);
        let during_trip = moved(&entry.driver);
        inner.index(id);
        if save && !inner.moved.contains(id) {
            inner.moved.insert(id.clone());
        }
        Ok(Recorded { during_trip, back })
    }

    /// Every driver known, with its position and whether it is unseen, in no
    /// particular order.
    pub fn all(&self) -> Vec<(Driver, Option<Location>, bool)> {
        self.lock()
            .drivers
            .values()
            .map(|e| (e.driver.clone(), e.location, e.unseen))
            .collect()
    }

    pub fn get(&self, id: &Id) -> Option<(Driver, Option<Location>)> {
        self.lock()
            .drivers
            .get(id)
            .map(|e| (e.driver.clone(), e.location))
    }

    /// Available drivers of `vehicle_type` within `radius_m` of `center`, nearest
    /// first, skipping `exclude`.
    pub fn nearest(
        &self,
        vehicle_type: &str,
        center: GeoPoint,
        radius_m: f64,
        limit: usize,
        exclude: impl Fn(&Id) -> bool,
    ) -> Vec<Nearby> {
        let inner = self.lock();
        let Some(index) = inner.by_vehicle.get(vehicle_type) else {
            return Vec::new();
        };
        index
            .nearest(center, radius_m, limit, |id| exclude(id))
            .into_iter()
            .filter_map(|(id, distance_m)| {
                let location = inner.drivers.get(&id)?.location?;
                Some(Nearby {
                    driver_id: id,
                    location,
                    distance_m,
                })
            })
            .collect()
    }
}

#[cfg(test)]
impl Registry {
    /// The tests' shorthand: a position received here, `during_trip` run with the
    /// driver's trip if it has one.
    pub fn update_location<R>(
        &self,
        id: &Id,
        location: Location,
        seen: Instant,
        during_trip: impl FnOnce(&crate::model::ActiveTrip) -> R,
    ) -> Result<Recorded<R>, Error> {
        self.record(id, location, seen, true, |d| {
            d.active.as_ref().map(during_trip)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::model::{ActiveTrip, BookingStatus};

    fn driver(id: &str, status: DriverStatus, vehicle: &str) -> Driver {
        Driver {
            id: Id::new(id).unwrap(),
            status,
            vehicle_type: vehicle.into(),
            active: None,
            version: 0,
        }
    }

    fn at(lat: f64, lon: f64) -> Location {
        Location {
            point: GeoPoint { lat, lon },
            heading: 0.0,
            speed_mps: 0.0,
            at: SystemTime::UNIX_EPOCH,
        }
    }

    fn ids(found: Vec<Nearby>) -> Vec<String> {
        found.into_iter().map(|n| n.driver_id.to_string()).collect()
    }

    #[test]
    fn only_available_drivers_with_a_position_of_the_vehicle_type_are_found() {
        let r = Registry::default();
        let center = GeoPoint {
            lat: 10.0,
            lon: 10.0,
        };
        r.apply(&driver("1", DriverStatus::Available, "car"));
        r.apply(&driver("2", DriverStatus::Available, "car"));
        r.apply(&driver("3", DriverStatus::Offline, "car"));
        r.apply(&driver("4", DriverStatus::Available, "bike"));
        r.apply(&driver("5", DriverStatus::Available, "car")); // never reports a position
        for (id, lat) in [("1", 10.01), ("2", 10.001), ("3", 10.0), ("4", 10.0)] {
            r.update_location(&Id::new(id).unwrap(), at(lat, 10.0), Instant::now(), |_| ())
                .unwrap();
        }
        assert_eq!(
            ids(r.nearest("car", center, 5_000.0, 10, |_| false)),
            ["2", "1"]
        );

        // Going on a trip takes a driver out; coming back puts them in again.
        let mut busy = driver("2", DriverStatus::OnTrip, "car");
        busy.active = Some(ActiveTrip {
            booking_id: 1,
            user_id: Id::new("u").unwrap(),
            status: BookingStatus::Accepted,
        });
        r.apply(&busy);
        assert_eq!(ids(r.nearest("car", center, 5_000.0, 10, |_| false)), ["1"]);
        let trip = r
            .update_location(
                &Id::new("2").unwrap(),
                at(10.0005, 10.0),
                Instant::now(),
                ActiveTrip::clone,
            )
            .unwrap();
        assert_eq!(trip.during_trip.unwrap().booking_id, 1);
        r.apply(&driver("2", DriverStatus::Available, "car"));
        assert_eq!(
            ids(r.nearest("car", center, 5_000.0, 10, |_| false)),
            ["2", "1"]
        );

        // A moved driver is found where it is now, not where it was.
        r.update_location(
            &Id::new("1").unwrap(),
            at(11.0, 10.0),
            Instant::now(),
            |_| (),
        )
        .unwrap();
        assert_eq!(ids(r.nearest("car", center, 5_000.0, 10, |_| false)), ["2"]);

        // A changed vehicle type moves the driver to the other index.
        r.apply(&driver("2", DriverStatus::Available, "bike"));
        assert!(r.nearest("car", center, 5_000.0, 10, |_| false).is_empty());
        assert_eq!(
            ids(r.nearest("bike", center, 5_000.0, 10, |_| false)),
            ["4", "2"]
        );
    }

    #[test]
    fn a_change_that_arrives_after_a_newer_one_is_ignored() {
        let r = Registry::default();
        let versioned = |status, version| Driver {
            version,
            ..driver("1", status, "car")
        };
        r.apply(&versioned(DriverStatus::Available, 2));
        r.apply(&versioned(DriverStatus::Offline, 1));
        assert_eq!(
            r.get(&Id::new("1").unwrap()).unwrap().0.status,
            DriverStatus::Available
        );
        r.apply(&versioned(DriverStatus::Offline, 3));
        assert_eq!(
            r.get(&Id::new("1").unwrap()).unwrap().0.status,
            DriverStatus::Offline
        );
    }

    #[test]
    fn unknown_drivers_cannot_report_positions() {
        let err = Registry::default()
            .update_location(&Id::new("9").unwrap(), at(0.0, 0.0), Instant::now(), |_| ())
            .unwrap_err();
        assert_eq!(err, Error::DriverNotFound("9".into()));
    }

    #[test]
    fn a_silent_driver_leaves_dispatch_until_its_next_position() {
        let r = Registry::default();
        let center = GeoPoint {
            lat: 10.0,
            lon: 10.0,
        };
        let t0 = Instant::now();
        let later = |s| t0 + std::time::Duration::from_secs(s);
        r.apply(&driver("1", DriverStatus::Available, "car"));
        r.apply(&driver("2", DriverStatus::Available, "car"));
        let id = |s: &str| Id::new(s).unwrap();
        r.update_location(&id("1"), at(10.001, 10.0), t0, |_| ())
            .unwrap();
        r.update_location(&id("2"), at(10.002, 10.0), later(20), |_| ())
            .unwrap();
        assert_eq!(r.take_moved().len(), 2);
        assert!(r.take_moved().is_empty(), "taken once");

        // At 31 s with a 30 s limit, only driver 1 has been silent that long.
        let cutoff = later(1);
        assert_eq!(r.silent_since(cutoff), [id("1")]);
        assert!(r.mark_unseen(&id("1"), cutoff));
        assert!(!r.mark_unseen(&id("1"), cutoff), "once");
        assert_eq!(ids(r.nearest("car", center, 5_000.0, 10, |_| false)), ["2"]);
        // A status change keeps it unseen; its next position brings it back.
        r.apply(&driver("1", DriverStatus::Available, "car"));
        assert_eq!(ids(r.nearest("car", center, 5_000.0, 10, |_| false)), ["2"]);
        let back = r
            .update_location(&id("1"), at(10.001, 10.0), later(40), |_| ())
            .unwrap();
        assert!(back.back);
        assert_eq!(
            ids(r.nearest("car", center, 5_000.0, 10, |_| false)),
            ["1", "2"]
        );
        // A position that came after the sweep's cutoff keeps the driver in.
        assert!(!r.mark_unseen(&id("1"), later(40)));
    }

    #[test]
    fn a_restored_driver_was_seen_as_long_ago_as_saved() {
        let r = Registry::default();
        let saved = Location {
            at: SystemTime::now() - std::time::Duration::from_secs(100),
            ..at(10.0, 10.0)
        };
        r.restore(
            &driver("1", DriverStatus::Available, "car"),
            Some(saved),
            false,
        );
        let now = Instant::now();
        assert!(
            r.silent_since(now - std::time::Duration::from_secs(90))
                .len()
                == 1
        );
        assert!(
            r.silent_since(now - std::time::Duration::from_secs(110))
                .is_empty()
        );
    }
}
