//! Dispatch: who is offered a pending booking, and when it expires.
//!
//! CreateBooking offers a booking to the nearest [`DispatchConfig::drivers`]
//! available drivers of its vehicle type within [`DispatchConfig::radius_m`], in the
//! same transaction that creates it. Then the [`Dispatcher`] task wakes every
//! [`DispatchConfig::widen_every`]: it doubles the radius (up to
//! [`DispatchConfig::max_radius_m`]) and offers the booking to drivers found that were
//! not offered it yet, until someone accepts; after
//! [`DispatchConfig::offer_timeout`] it expires the booking. The schedule is a pure
//! [`Plan`]; the task only carries out its [`Step`]s.
//!
//! # Leases
//! Replicas of a cluster share the pending bookings, and each booking is driven
//! by one of them: the one holding its lease in the store. Every third of
//! [`DispatchConfig::lease`] the task renews its leases and takes those that
//! lapsed ([`Store::lease_pending`]): a replica that dies leaves its bookings to
//! another within one lease and a third. The plan keeps only leased bookings (a
//! booking it made a moment ago counts until the next round has seen it). At
//! shutdown the task gives its leases up, so another replica (or the same one,
//! restarted) takes them at once. A single node leases everything to itself.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use logi::id::Id;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::drivers::Registry;
use crate::error::Error;
use crate::model::{BookingId, GeoPoint, Offer};
use crate::store::{PendingBooking, Store};

/// How long shutdown waits to give the leases up.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq)]
pub struct DispatchConfig {
    /// Drivers offered a booking per round.
    pub drivers: usize,
    /// First search radius, metres.
    pub radius_m: f64,
    /// Widest search radius, metres.
    pub max_radius_m: f64,
    /// Time between rounds.
    pub widen_every: Duration,
    /// A booking nobody accepted by then expires.
    pub offer_timeout: Duration,
    /// How long a replica's hold on a booking's dispatch lasts unrenewed.
    pub lease: Duration,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            drivers: 5,
            radius_m: 3_000.0,
            max_radius_m: 12_000.0,
            widen_every: Duration::from_secs(20),
            offer_timeout: Duration::from_secs(120),
            lease: Duration::from_secs(10),
        }
    }
}

#[derive(Debug)]
struct Pending {
    pickup: GeoPoint,
    vehicle_type: String,
    offered: HashSet<Id>,
    radius_m: f64,
    next: Instant,
    expires: Instant,
    /// When the plan took it on.
    since: Instant,
}

/// What the dispatcher must do now.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Offer the booking to drivers within `radius_m` not in `offered`.
    Widen {
        id: BookingId,
        pickup: GeoPoint,
        vehicle_type: String,
        radius_m: f64,
        offered: HashSet<Id>,
    },
    Expire(BookingId),
}

/// The schedule of every pending booking.
#[derive(Debug)]
pub struct Plan {
    cfg: DispatchConfig,
    pending: HashMap<BookingId, Pending>,
    timers: BTreeSet<(Instant, BookingId)>,
}

impl Plan {
    pub fn new(cfg: DispatchConfig) -> Self {
        Self {
            cfg,
            pending: HashMap::new(),
            timers: BTreeSet::new(),
        }
    }

    /// Starts following a booking created `age` ago and already offered to `offered`.
    pub fn track(
        &mut self,
        id: BookingId,
        pickup: GeoPoint,
        vehicle_type: String,
        offered: impl IntoIterator<Item = Id>,
        age: Duration,
        now: Instant,
    ) {
        let cfg = &self.cfg;
        let expires = now + cfg.offer_timeout.saturating_sub(age);
        let next = (now + cfg.widen_every).min(expires);
        let radius_m = cfg.radius_m;
        self.forget(id);
        self.timers.insert((next, id));
        let offered = offered.into_iter().collect();
        self.pending.insert(
            id,
            Pending {
                pickup,
                vehicle_type,
                offered,
                radius_m,
                next,
                expires,
                since: now,
            },
        );
    }

    pub fn contains(&self, id: BookingId) -> bool {
        self.pending.contains_key(&id)
    }

    /// Forgets the bookings taken on before `before` that `leased` does not hold.
    pub fn keep_leased(&mut self, leased: &HashSet<BookingId>, before: Instant) {
        let gone: Vec<BookingId> = self
            .pending
            .iter()
            .filter(|(id, p)| p.since < before && !leased.contains(id))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.forget(id);
        }
    }

    pub fn forget(&mut self, id: BookingId) {
        if let Some(p) = self.pending.remove(&id) {
            self.timers.remove(&(p.next, id));
        }
    }

    /// Records offers made.
    pub fn offered(&mut self, id: BookingId, drivers: impl IntoIterator<Item = Id>) {
        if let Some(p) = self.pending.get_mut(&id) {
            p.offered.extend(drivers);
        }
    }

    /// Tries a booking again at `at` (after a storage failure).
    pub fn retry(&mut self, id: BookingId, at: Instant) {
        if let Some(p) = self.pending.get_mut(&id) {
            self.timers.remove(&(p.next, id));
            p.next = at;
            self.timers.insert((at, id));
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The steps due at `now`; widening ones are rescheduled.
    pub fn due(&mut self, now: Instant) -> Vec<Step> {
        let cfg = &self.cfg;
        let mut steps = Vec::new();
        while let Some(&(at, id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            let Some(p) = self.pending.get_mut(&id) else {
                continue;
            };
            if now >= p.expires {
                // Stays tracked (without a timer) until the expiry commits or is moot.
                steps.push(Step::Expire(id));
                continue;
            }
            p.radius_m = (p.radius_m * 2.0).min(cfg.max_radius_m);
            p.next = (now + cfg.widen_every).min(p.expires);
            self.timers.insert((p.next, id));
            steps.push(Step::Widen {
                id,
                pickup: p.pickup,
                vehicle_type: p.vehicle_type.clone(),
                radius_m: p.radius_m,
                offered: p.offered.clone(),
            });
        }
        steps
    }
}

/// The [`Plan`] shared by the commit sink, which tells it of bookings created and
/// settled as they commit (so a booking is followed even if the call that created
/// it was cancelled right after), and the [`Dispatcher`] task that carries it out.
#[derive(Debug)]
pub struct Schedule {
    plan: Mutex<Plan>,
    wake: Notify,
}

impl Schedule {
    pub fn new(cfg: DispatchConfig) -> Arc<Self> {
        Arc::new(Self {
            plan: Mutex::new(Plan::new(cfg)),
            wake: Notify::new(),
        })
    }

    fn plan(&self) -> std::sync::MutexGuard<'_, Plan> {
        self.plan.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows a pending booking created `age` ago.
    pub fn track(&self, p: &PendingBooking, age: Duration) {
        let offered = p.offered.iter().cloned();
        self.plan().track(
            p.id,
            p.pickup,
            p.vehicle_type.clone(),
            offered,
            age,
            Instant::now(),
        );
        self.wake.notify_one();
    }

    /// Stops following a booking that is no longer pending.
    pub fn settled(&self, id: BookingId) {
        self.plan().forget(id);
    }
}

/// Carries out the [`Schedule`] against the store and the driver registry.
pub struct Dispatcher {
    cfg: DispatchConfig,
    /// Whose leases this replica holds.
    replica: u64,
    schedule: Arc<Schedule>,
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
}

impl Dispatcher {
    pub fn new(
        cfg: DispatchConfig,
        replica: u64,
        schedule: Arc<Schedule>,
        store: Arc<dyn Store>,
        registry: Arc<Registry>,
    ) -> Arc<Self> {
        Arc::new(Self {
            cfg,
            replica,
            schedule,
            store,
            registry,
        })
    }

    fn plan(&self) -> std::sync::MutexGuard<'_, Plan> {
        self.schedule.plan()
    }

    /// The first round of offers for a new booking.
    pub fn initial_offers(&self, pickup: GeoPoint, vehicle_type: &str) -> Vec<Offer> {
        self.offers(pickup, vehicle_type, self.cfg.radius_m, &HashSet::new())
    }

    fn offers(
        &self,
        pickup: GeoPoint,
        vehicle_type: &str,
        radius_m: f64,
        skip: &HashSet<Id>,
    ) -> Vec<Offer> {
        self.registry
            .nearest(vehicle_type, pickup, radius_m, self.cfg.drivers, |id| {
                skip.contains(id)
            })
            .into_iter()
            .map(|n| Offer {
                driver_id: n.driver_id,
                distance_m: n.distance_m,
            })
            .collect()
    }

    /// Renews this replica's leases and takes the lapsed ones: the plan follows
    /// what it holds now. Returns how many bookings that is.
    ///
    /// # Errors
    /// Storage errors; the plan is then left as it was.
    pub async fn lease(&self) -> Result<usize, Error> {
        let asked = Instant::now();
        let leased = self
            .store
            .lease_pending(self.replica, self.cfg.lease)
            .await?;
        let wall = SystemTime::now();
        let held: HashSet<BookingId> = leased.iter().map(|p| p.id).collect();
        for p in &leased {
            if !self.plan().contains(p.id) {
                tracing::debug!(
                    booking = p.id,
                    "took over the dispatch of a pending booking"
                );
                self.schedule
                    .track(p, wall.duration_since(p.created_at).unwrap_or_default());
            }
        }
        self.plan().keep_leased(&held, asked);
        Ok(held.len())
    }

    /// Runs rounds until `shutdown`, then gives the leases up.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut leases = tokio::time::interval(self.cfg.lease / 3);
        leases.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.plan().next_deadline();
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.schedule.wake.notified() => continue,
                _ = leases.tick() => {
                    if let Err(e) = self.lease().await {
                        tracing::warn!(error = %e, "cannot renew dispatch leases; trying again");
                    }
                    continue;
                }
                () = sleep => {}
            }
            let steps = self.plan().due(Instant::now());
            for step in steps {
                self.carry_out(step).await;
            }
        }
        match tokio::time::timeout(RELEASE_TIMEOUT, self.store.release_leases(self.replica)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot give the dispatch leases up; they lapse by themselves")
            }
            Err(_) => tracing::warn!(
                "giving the dispatch leases up took too long; they lapse by themselves"
            ),
        }
    }

    async fn carry_out(&self, step: Step) {
        let (id, result) = match step {
            Step::Expire(id) => {
                let result = self.store.expire(id).await.map(|b| {
                    tracing::info!(booking = id, "expired: no driver accepted in time");
                    drop(b);
                });
                (id, result)
            }
            Step::Widen {
                id,
                pickup,
                vehicle_type,
                radius_m,
                offered,
            } => {
                let offers = self.offers(pickup, &vehicle_type, radius_m, &offered);
                if offers.is_empty() {
                    return;
                }
                let drivers: Vec<Id> = offers.iter().map(|o| o.driver_id.clone()).collect();
                let result = self.store.add_offers(id, offers).await;
                if result.is_ok() {
                    tracing::debug!(booking = id, radius_m, offered = drivers.len(), "widened");
                    self.plan().offered(id, drivers);
                    return;
                }
                (id, result)
            }
        };
        match result {
            Ok(())
            | Err(Error::WrongStatus { .. } | Error::Taken(_) | Error::BookingNotFound(_)) => {
                self.plan().forget(id)
            }
            Err(e) => {
                tracing::warn!(booking = id, error = %e, "dispatch step failed; retrying in 1s");
                self.plan()
                    .retry(id, Instant::now() + Duration::from_secs(1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> DispatchConfig {
        DispatchConfig {
            drivers: 5,
            radius_m: 1_000.0,
            max_radius_m: 3_000.0,
            widen_every: Duration::from_secs(20),
            offer_timeout: Duration::from_secs(60),
            lease: Duration::from_secs(10),
        }
    }

    fn radii(steps: &[Step]) -> Vec<f64> {
        steps
            .iter()
            .map(|s| match s {
                Step::Widen { radius_m, .. } => *radius_m,
                Step::Expire(_) => -1.0,
            })
            .collect()
    }

    #[test]
    fn widens_by_doubling_up_to_the_cap_then_expires() {
        let (cfg, t0) = (cfg(), Instant::now());
        let mut plan = Plan::new(cfg.clone());
        let at = GeoPoint { lat: 0.0, lon: 0.0 };
        plan.track(
            1,
            at,
            "car".into(),
            [Id::new("9").unwrap()],
            Duration::ZERO,
            t0,
        );
        assert!(plan.due(t0 + Duration::from_secs(19)).is_empty());
        let first = plan.due(t0 + Duration::from_secs(20));
        assert_eq!(radii(&first), [2_000.0]);
        let Step::Widen { offered, .. } = &first[0] else {
            unreachable!()
        };
        assert!(
            offered.contains(&Id::new("9").unwrap()),
            "already offered drivers are skipped"
        );
        assert_eq!(radii(&plan.due(t0 + Duration::from_secs(40))), [3_000.0]);
        assert_eq!(plan.next_deadline(), Some(t0 + Duration::from_secs(60)));
        assert_eq!(plan.due(t0 + Duration::from_secs(60)), [Step::Expire(1)]);
        assert_eq!(plan.next_deadline(), None);
        plan.forget(1);
        assert!(plan.is_empty());
    }

    #[test]
    fn a_booking_restored_after_a_restart_keeps_its_deadline() {
        let (cfg, t0) = (cfg(), Instant::now());
        let mut plan = Plan::new(cfg.clone());
        let at = GeoPoint { lat: 0.0, lon: 0.0 };
        plan.track(1, at, "car".into(), [], Duration::from_secs(50), t0);
        assert_eq!(plan.next_deadline(), Some(t0 + Duration::from_secs(10)));
        assert_eq!(plan.due(t0 + Duration::from_secs(10)), [Step::Expire(1)]);
        plan.track(2, at, "car".into(), [], Duration::from_secs(500), t0);
        assert_eq!(plan.due(t0), [Step::Expire(2)]);
    }

    #[test]
    fn accepted_bookings_are_forgotten_and_failures_retried() {
        let (cfg, t0) = (cfg(), Instant::now());
        let mut plan = Plan::new(cfg.clone());
        let at = GeoPoint { lat: 0.0, lon: 0.0 };
        plan.track(1, at, "car".into(), [], Duration::ZERO, t0);
        plan.track(2, at, "car".into(), [], Duration::ZERO, t0);
        plan.forget(1);
        plan.retry(2, t0 + Duration::from_secs(1));
        let steps = plan.due(t0 + Duration::from_secs(1));
        assert!(matches!(steps.as_slice(), [Step::Widen { id: 2, .. }]));
        assert_eq!(plan.len(), 1);
    }
}
