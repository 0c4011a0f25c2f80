//! A durable state transition with its event: one SQLite transaction (WAL,
//! synchronous = FULL) that changes a driver's status and appends the admins event,
//! committed and published before the call returns.

use std::sync::Arc;

use core_svc::model::DriverStatus;
use core_svc::store::sqlite::Sqlite;
use core_svc::store::{CommitSink, Effects, Store};
use criterion::{Criterion, criterion_group, criterion_main};
use logi::id::Id;

struct Discard;

impl CommitSink for Discard {
    fn committed(&self, _: &Effects) {}
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Sqlite::open(&dir.path().join("bench.db"), |_| {
        Arc::new(Discard) as Arc<dyn CommitSink>
    })
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let id = Id::new("45").unwrap();
    rt.block_on(store.set_driver_status(id.clone(), DriverStatus::Available, Some("car".into())))
        .unwrap();
    let mut online = false;
    c.bench_function("durable transition with its event (driver status)", |b| {
        b.iter(|| {
            online = !online;
            let status = if online {
                DriverStatus::Available
            } else {
                DriverStatus::Offline
            };
            rt.block_on(store.set_driver_status(id.clone(), status, None))
                .unwrap()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
