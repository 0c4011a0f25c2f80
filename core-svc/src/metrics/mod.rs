//! core-svc's metrics, served in the Prometheus text format on `--metrics-addr`.
//!
//! # Shape
//! - [`Metrics`]: a handle per label set, made once at start and shared through
//!   the state (`Core`, `Live`, the dispatcher), not a global.
//! - [`rpc`]: the tower layer around the gRPC server that counts every call by
//!   method and code and times it: ONE place for every service.
//! - [`Drivers`]: drivers by status, read from the registry at each scrape.
//! - [`serve`]: the small HTTP server of `/metrics`.
//!
//! Dispatch outcomes are counted from what each commit published (one place for
//! every path that offers, accepts, cancels or expires a booking); the stores
//! report their commits through [`crate::store::CommitSink::measured`].

pub mod rpc;
mod serve;

use std::sync::Arc;
use std::time::Duration;

use logi::metrics::handles;
use logi::pb::{self, event::Kind};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub use serve::serve;

use crate::drivers::Registry as DriverRegistry;
use crate::store::Effects;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StreamLabel {
    stream: &'static str,
}

/// What dispatch did with a booking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatch {
    /// Offered to one driver.
    Offered,
    /// A later round found more drivers to offer it to.
    Widened,
    Accepted,
    Expired,
    Cancelled,
}

/// A stream cut off for falling behind (RESOURCE_EXHAUSTED).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lagged {
    /// A `Subscribe` stream, past `--subscriber-queue`.
    Subscribe,
    /// An edge's `Attach` stream, past `--attachment-queue`.
    Attach,
}

pub struct Metrics {
    pub rpcs: rpc::Rpcs,
    dispatch: [Counter; 5],
    time_to_accept: Histogram,
    otp_failures: Counter,
    otp_lockouts: Counter,
    writes: Counter,
    failed_commits: Counter,
    batch: Histogram,
    commit: Histogram,
    lagged: [Counter; 2],
    attach_queued: Histogram,
}

impl Default for Metrics {
    /// Metrics on a registry of their own, for tests that do not scrape.
    fn default() -> Self {
        Self::new(&mut Registry::default())
    }
}

impl Metrics {
    /// Registers core-svc's metrics on `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let dispatch = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "logi_dispatch",
            "Dispatch outcomes: offered (per driver offered), widened (a later round found drivers), accepted, expired, cancelled",
            dispatch.clone(),
        );
        let time_to_accept = Histogram::new(exponential_buckets(1.0, 2.0, 9));
        registry.register(
            "logi_dispatch_time_to_accept_seconds",
            "From a booking's creation to its accept",
            time_to_accept.clone(),
        );
        let otp_failures = Counter::default();
        registry.register(
            "logi_otp_failures",
            "Wrong OTPs given to VerifyOtp",
            otp_failures.clone(),
        );
        let otp_lockouts = Counter::default();
        registry.register(
            "logi_otp_lockouts",
            "Bookings whose OTP was locked by its last wrong try (the rider must get a new one)",
            otp_lockouts.clone(),
        );
        let writes = Counter::default();
        registry.register(
            "logi_store_writes",
            "Writes committed to the database",
            writes.clone(),
        );
        let failed_commits = Counter::default();
        registry.register(
            "logi_store_commit_failures",
            "Commits the database refused (every write of the batch answered UNAVAILABLE)",
            failed_commits.clone(),
        );
        let batch = Histogram::new(exponential_buckets(1.0, 2.0, 9));
        registry.register(
            "logi_store_batch_writes",
            "Writes per commit (SQLite commits those queued together; PostgreSQL one at a time)",
            batch.clone(),
        );
        let commit = Histogram::new(exponential_buckets(0.0001, 2.5, 12));
        registry.register(
            "logi_store_commit_seconds",
            "How long the database took to commit (for SQLite, the fsync of a batch)",
            commit.clone(),
        );
        let lagged = Family::<StreamLabel, Counter>::default();
        registry.register(
            "logi_streams_lagged",
            "Event streams ended with RESOURCE_EXHAUSTED for falling behind, by stream (subscribe, attach)",
            lagged.clone(),
        );
        let attach_queued = Histogram::new(exponential_buckets(1.0, 4.0, 9));
        registry.register(
            "logi_attach_queued_events",
            "Events waiting for an edge's attachment (queued or held while topics start), sampled as it sends: how far behind the edge is",
            attach_queued.clone(),
        );
        Self {
            rpcs: rpc::Rpcs::new(registry),
            dispatch: handles(
                &dispatch,
                ["offered", "widened", "accepted", "expired", "cancelled"]
                    .map(|outcome| OutcomeLabel { outcome }),
            ),
            time_to_accept,
            otp_failures,
            otp_lockouts,
            writes,
            failed_commits,
            batch,
            commit,
            lagged: handles(
                &lagged,
                ["subscribe", "attach"].map(|stream| StreamLabel { stream }),
            ),
            attach_queued,
        }
    }

    pub fn dispatch(&self, outcome: Dispatch) {
        self.dispatch[outcome as usize].inc();
    }

    /// A wrong OTP; `locked`: it was the last try.
    pub fn wrong_otp(&self, locked: bool) {
        self.otp_failures.inc();
        if locked {
            self.otp_lockouts.inc();
        }
    }

    pub fn lagged(&self, stream: Lagged) {
        self.lagged[stream as usize].inc();
    }

    /// Events an attachment had waiting as it sent a batch.
    pub fn attach_queued(&self, events: usize) {
        self.attach_queued.observe(events as f64);
    }

    /// A commit of `writes` writes that took `took`; `ok`: it succeeded.
    pub fn committed(&self, writes: usize, took: Duration, ok: bool) {
        if ok {
            self.writes.inc_by(writes as u64);
            self.batch.observe(writes as f64);
        } else {
            self.failed_commits.inc();
        }
        self.commit.observe(took.as_secs_f64());
    }

    /// Counts the dispatch outcomes of a commit: each offer (one per driver); a
    /// widening (offers in a commit that created no booking: a later round's);
    /// and each booking's accept, expiry or cancel as the `admins` topic tells it
    /// (every booking change goes there once).
    pub fn published(&self, effects: &Effects) {
        let mut offered = false;
        for event in &effects.events {
            match &event.kind {
                Some(Kind::BookingOffered(_)) => {
                    offered = true;
                    self.dispatch(Dispatch::Offered);
                }
                Some(Kind::BookingChanged(changed)) if event.topic == logi::topic::ADMINS => {
                    self.booking_changed(changed);
                }
                _ => {}
            }
        }
        if offered && effects.created.is_empty() {
            self.dispatch(Dispatch::Widened);
        }
    }

    fn booking_changed(&self, changed: &pb::BookingChanged) {
        let Some(booking) = &changed.booking else {
            return;
        };
        match pb::BookingStatus::try_from(booking.status) {
            Ok(pb::BookingStatus::Accepted) => {
                self.dispatch(Dispatch::Accepted);
                if let (Some(created), Some(updated)) = (booking.created_at, booking.updated_at) {
                    let secs = (updated.seconds - created.seconds) as f64
                        + f64::from(updated.nanos - created.nanos) / 1e9;
                    self.time_to_accept.observe(secs.max(0.0));
                }
            }
            Ok(pb::BookingStatus::Expired) => self.dispatch(Dispatch::Expired),
            Ok(pb::BookingStatus::Cancelled) => self.dispatch(Dispatch::Cancelled),
            _ => {}
        }
    }
}

/// Drivers by status, counted in the registry at each scrape.
#[derive(Debug)]
pub struct Drivers(pub Arc<DriverRegistry>);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

impl Collector for Drivers {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counts = self.0.counts();
        let mut family = encoder.encode_descriptor(
            "logi_drivers",
            "Drivers known now, by status (unseen: available but silent, out of dispatch)",
            None,
            MetricType::Gauge,
        )?;
        for (status, n) in [
            ("available", counts.available),
            ("on_trip", counts.on_trip),
            ("offline", counts.offline),
            ("unseen", counts.unseen),
        ] {
            let label = StatusLabel { status };
            ConstGauge::new(n as i64).encode(family.encode_family(&label)?)?;
        }
        Ok(())
    }
}
