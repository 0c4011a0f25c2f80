//! What the run knows of each booking: the statuses RPC answers confirmed, what
//! its rider's socket showed (for `--check`), and the OTP the rider received,
//! which the driver reads from here as if told in person. Also the counters and
//! the unexpected failures.

use std::collections::HashMap;
use std::sync::Mutex;

use super::check::{self, Problem, Seen, Status, Trace};
use super::summary::{Stats, add};

/// Failures kept word for word; past this only counted.
const KEPT_FAILURES: usize = 200;

#[derive(Debug, Default)]
struct Record {
    /// The rider that created it in this run; bookings of earlier runs have none
    /// (their riders' snapshots and drivers' offers still mention them).
    rider: Option<String>,
    confirmed: Vec<Status>,
    seen: Vec<Seen>,
    otp: Option<String>,
}

#[derive(Debug, Default)]
pub struct Ledger {
    // A std mutex: held for a few pushes, never across an await.
    bookings: Mutex<HashMap<u64, Record>>,
    failures: Mutex<Vec<String>>,
    pub stats: Stats,
}

impl Ledger {
    fn with<T>(&self, id: u64, f: impl FnOnce(&mut Record) -> T) -> T {
        let mut bookings = self.bookings.lock().expect("not poisoned");
        f(bookings.entry(id).or_default())
    }

    /// `rider`'s CreateBooking answered with booking `id`.
    pub fn created(&self, id: u64, rider: &str) {
        self.with(id, |r| {
            r.rider = Some(rider.to_owned());
            r.confirmed.push(Status::Pending);
        });
        add(&self.stats.created);
    }

    /// An RPC answer confirmed that booking `id` moved to `status`.
    pub fn confirm(&self, id: u64, status: Status) {
        self.with(id, |r| r.confirmed.push(status));
    }

    /// The rider's socket showed `status` for booking `id`.
    pub fn seen(&self, id: u64, status: Status) {
        self.with(id, |r| r.seen.push(Seen::Status(status)));
    }

    /// The rider's socket brought the OTP of booking `id`.
    pub fn seen_otp(&self, id: u64, otp: String) {
        self.with(id, |r| {
            r.seen.push(Seen::Otp);
            r.otp = Some(otp);
        });
    }

    /// The OTP the rider of booking `id` received, once it has.
    pub fn otp(&self, id: u64) -> Option<String> {
        self.with(id, |r| r.otp.clone())
    }

    /// Counts an unexpected failure and keeps what it was.
    pub fn fail(&self, what: String) {
        tracing::warn!(failure = %what, "simulation");
        add(&self.stats.failures);
        let mut failures = self.failures.lock().expect("not poisoned");
        if failures.len() < KEPT_FAILURES {
            failures.push(what);
        }
    }

    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().expect("not poisoned").clone()
    }

    /// Whether every confirmed status of this run's bookings has reached its rider.
    pub fn all_delivered(&self) -> bool {
        let bookings = self.bookings.lock().expect("not poisoned");
        bookings.values().filter(|r| r.rider.is_some()).all(|r| {
            r.confirmed
                .iter()
                .all(|c| r.seen.contains(&Seen::Status(*c)))
        })
    }

    /// What `--check` finds wrong with this run's bookings, by booking id.
    pub fn problems(&self) -> Vec<Problem> {
        let bookings = self.bookings.lock().expect("not poisoned");
        let mut ours: Vec<(&u64, &Record)> =
            bookings.iter().filter(|(_, r)| r.rider.is_some()).collect();
        ours.sort_by_key(|(id, _)| **id);
        let traces: Vec<Trace<'_>> = ours
            .iter()
            .map(|(id, r)| Trace {
                booking: **id,
                rider: r.rider.as_deref().unwrap_or_default(),
                confirmed: &r.confirmed,
                seen: &r.seen,
            })
            .collect();
        check::check(&traces)
    }
}
