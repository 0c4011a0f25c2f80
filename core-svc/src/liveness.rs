//! Drivers who go silent, and positions that outlive a restart.
//!
//! One task does two things on timers:
//! - every [`FLUSH_EVERY`] it writes the positions that changed to the database in
//!   one transaction (and once more at shutdown), so a restart finds each driver
//!   where it last was, with the time it was seen;
//! - every quarter of `stale_after` it sweeps for AVAILABLE drivers whose last
//!   position is older than `stale_after`: each is taken out of dispatch at once
//!   (the registry) and marked unseen in the store, which closes its open offers and
//!   tells the admins. Its next position brings it back ([`back`]).
//!
//! Silence is measured on the monotonic clock (a wall-clock step must not make
//! every driver look silent at once). Times come from the caller, so the sweep is
//! tested without waiting.

use std::sync::Arc;
use std::time::Duration;

use logi::id::Id;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::drivers::Registry;
use crate::store::Store;

/// How often changed positions are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);
/// The sweep never runs more often than this.
const MIN_SWEEP_EVERY: Duration = Duration::from_millis(250);

/// Marks drivers silent since `now - stale_after` unseen; how many were.
pub async fn sweep(
    registry: &Registry,
    store: &dyn Store,
    now: Instant,
    stale_after: Duration,
) -> usize {
    let Some(cutoff) = now.checked_sub(stale_after) else {
        return 0;
    };
    let mut marked = 0;
    for id in registry.silent_since(cutoff) {
        if !registry.mark_unseen(&id, cutoff) {
            continue; // A position came meanwhile.
        }
        match store.set_driver_unseen(id.clone(), true).await {
            Ok(true) => {
                tracing::info!(driver = %id, "driver unseen: out of dispatch until its next position");
                marked += 1;
            }
            // Its status changed meanwhile (a trip, offline): nothing to tell.
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(driver = %id, error = %e, "cannot mark a silent driver unseen")
            }
        }
    }
    marked
}

/// Tells the store a driver that was unseen is back (its position just came).
pub async fn back(store: &dyn Store, driver: &Id) {
    if let Err(e) = store.set_driver_unseen(driver.clone(), false).await {
        tracing::warn!(driver = %driver, error = %e, "cannot mark a driver seen again");
    }
}

/// Writes the positions that changed since the last flush.
pub async fn flush(registry: &Registry, store: &dyn Store) {
    let moved = registry.take_moved();
    if moved.is_empty() {
        return;
    }
    let n = moved.len();
    if let Err(e) = store.save_positions(moved).await {
        tracing::warn!(error = %e, drivers = n, "cannot save driver positions; the next flush tries again");
    }
}

/// Runs the sweep and the flush until `shutdown`, then flushes once more.
pub async fn run(
    registry: Arc<Registry>,
    store: Arc<dyn Store>,
    stale_after: Duration,
    shutdown: CancellationToken,
) {
    let mut sweeps = tokio::time::interval((stale_after / 4).max(MIN_SWEEP_EVERY));
    let mut flushes = tokio::time::interval(FLUSH_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                flush(&registry, store.as_ref()).await;
                return;
            }
            _ = sweeps.tick() => {
                sweep(&registry, store.as_ref(), Instant::now(), stale_after).await;
            }
            _ = flushes.tick() => flush(&registry, store.as_ref()).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use std::time::SystemTime;

    use logi::pb::{self, event::Kind};

    use super::*;
    use crate::model::{DriverStatus, GeoPoint, Location};
    use crate::store::sqlite::Sqlite;
    use crate::store::{CommitSink, Effects};

    /// The admins' driver events, as (driver, status, unseen).
    #[derive(Default)]
    struct Admins(Mutex<Vec<(String, i32, bool)>>);

    impl CommitSink for Admins {
        fn committed(&self, effects: &Effects) {
            for e in &effects.events {
                if let Some(Kind::DriverStatus(d)) = &e.kind {
                    let seen = (d.driver_id.clone(), d.status, d.unseen);
                    self.0.lock().unwrap().push(seen);
                }
            }
        }
    }

    fn id(s: &str) -> Id {
        Id::new(s).unwrap()
    }

    fn ping(lat: f64, at: SystemTime) -> Location {
        Location {
            point: GeoPoint { lat, lon: 0.0 },
            heading: 0.0,
            speed_mps: 0.0,
            at,
        }
    }

    #[tokio::test]
    async fn a_silent_driver_is_unseen_then_back_and_positions_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logi.db");
        let admins = Arc::new(Admins::default());
        let sink = admins.clone();
        let store = Sqlite::open(&path, move |_| sink as Arc<dyn CommitSink>).unwrap();
        let registry = Registry::default();
        for d in ["45", "46"] {
            let driver = store
                .set_driver_status(id(d), DriverStatus::Available, Some("car".into()))
                .await
                .unwrap();
            registry.apply(&driver);
        }
        admins.0.lock().unwrap().clear();
        let (t0, wall) = (Instant::now(), SystemTime::now());
        let after = Duration::from_secs(30);
        registry
            .update_location(&id("45"), ping(1.0, wall), t0, |_| ())
            .unwrap();
        registry
            .update_location(
                &id("46"),
                ping(2.0, wall),
                t0 + Duration::from_secs(20),
                |_| (),
            )
            .unwrap();

        assert_eq!(
            sweep(&registry, &store, t0 + Duration::from_secs(29), after).await,
            0
        );
        assert_eq!(
            sweep(&registry, &store, t0 + Duration::from_secs(31), after).await,
            1
        );
        assert_eq!(
            sweep(&registry, &store, t0 + Duration::from_secs(32), after).await,
            0,
            "once"
        );
        let offline = pb::DriverStatus::Offline as i32;
        let available = pb::DriverStatus::Available as i32;
        assert_eq!(
            *admins.0.lock().unwrap(),
            [("45".to_owned(), offline, true)]
        );
        let found = |r: &Registry| -> Vec<String> {
            r.nearest(
                "car",
                GeoPoint { lat: 1.2, lon: 0.0 },
                500_000.0,
                10,
                |_| false,
            )
            .into_iter()
            .map(|n| n.driver_id.to_string())
            .collect()
        };
        assert_eq!(found(&registry), ["46"]);

        // Back with its next position.
        let recorded = registry
            .update_location(
                &id("45"),
                ping(1.0, wall + Duration::from_secs(40)),
                t0 + Duration::from_secs(40),
                |_| (),
            )
            .unwrap();
        assert!(recorded.back);
        back(&store, &id("45")).await;
        assert_eq!(
            admins.0.lock().unwrap()[1],
            ("45".to_owned(), available, false)
        );

        // Saved behind, and found where they were after a restart.
        flush(&registry, &store).await;
        drop(store);
        let store = Sqlite::open(&path, |_| {
            Arc::new(Admins::default()) as Arc<dyn CommitSink>
        })
        .unwrap();
        let restored = Registry::default();
        let mut saved = store.drivers().await.unwrap();
        saved.sort_by(|a, b| a.driver.id.cmp(&b.driver.id));
        for s in &saved {
            restored.restore(&s.driver, s.location, s.unseen);
        }
        let seen: Vec<(f64, bool)> = saved
            .iter()
            .map(|s| (s.location.unwrap().point.lat, s.unseen))
            .collect();
        assert_eq!(seen, [(1.0, false), (2.0, false)]);
        assert_eq!(found(&restored), ["45", "46"]);
        let at = saved[0].location.unwrap().at;
        let millis = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_millis()
        };
        assert_eq!(
            millis(at),
            millis(wall + Duration::from_secs(40)),
            "seen when it was"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_task_saves_positions_by_its_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            Sqlite::open(&dir.path().join("logi.db"), |_| {
                Arc::new(Admins::default()) as Arc<dyn CommitSink>
            })
            .unwrap(),
        );
        let registry = Arc::new(Registry::default());
        tokio::time::resume();
        let driver = store
            .set_driver_status(id("45"), DriverStatus::Available, Some("car".into()))
            .await
            .unwrap();
        tokio::time::pause();
        registry.apply(&driver);
        registry
            .update_location(
                &id("45"),
                ping(1.0, SystemTime::now()),
                Instant::now(),
                |_| (),
            )
            .unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(
            registry.clone(),
            store.clone(),
            Duration::from_secs(3600),
            shutdown.clone(),
        ));
        // The first ticks come at once: the position is taken for saving.
        tokio::time::sleep(Duration::from_millis(1)).await;
        tokio::task::yield_now().await;
        shutdown.cancel();
        tokio::time::resume();
        task.await.unwrap();
        assert!(registry.take_moved().is_empty());
        let saved = store.drivers().await.unwrap();
        assert_eq!(saved[0].location.unwrap().point.lat, 1.0);
    }
}
