//! Nearest-driver search, as dispatch runs it for every new booking: the 5 nearest
//! available drivers within 3 km, among 10k and 100k drivers spread over a city.

use std::hint::black_box;
use std::time::SystemTime;

use core_svc::drivers::Registry;
use core_svc::model::{Driver, DriverStatus, GeoPoint, Location};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use logi::id::Id;

/// A deterministic spread of points over ~40 × 40 km around San Francisco.
fn point(i: u64) -> GeoPoint {
    let x = (i.wrapping_mul(2_654_435_761) % 1_000_000) as f64 / 1_000_000.0;
    let y = (i.wrapping_mul(40_503) % 999_983) as f64 / 999_983.0;
    GeoPoint {
        lat: 37.6 + 0.36 * y,
        lon: -122.6 + 0.45 * x,
    }
}

fn registry(n: u64) -> Registry {
    let r = Registry::default();
    for i in 0..n {
        let id = Id::new(i.to_string()).unwrap();
        r.apply(&Driver {
            id: id.clone(),
            status: DriverStatus::Available,
            vehicle_type: "car".into(),
            active: None,
            version: 0,
        });
        let at = Location {
            point: point(i),
            heading: 0.0,
            speed_mps: 0.0,
            at: SystemTime::UNIX_EPOCH,
        };
        r.record(&id, at, tokio::time::Instant::now(), true, |_| None::<()>)
            .unwrap();
    }
    r
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("nearest 5 drivers within 3 km");
    for n in [10_000u64, 100_000] {
        let r = registry(n);
        let mut q = 0u64;
        group.bench_with_input(BenchmarkId::from_parameter(n), &r, |b, r| {
            b.iter(|| {
                q += 1;
                r.nearest("car", black_box(point(q * 7919)), 3_000.0, 5, |_| false)
            })
        });
    }
    group.finish();

    let r = registry(100_000);
    let mut i = 0u64;
    c.bench_function("driver position update, 100k drivers indexed", |b| {
        b.iter(|| {
            i += 1;
            let id = Id::new((i % 100_000).to_string()).unwrap();
            let at = Location {
                point: point(i * 31),
                heading: 0.0,
                speed_mps: 0.0,
                at: SystemTime::UNIX_EPOCH,
            };
            r.record(&id, at, tokio::time::Instant::now(), true, |_| None::<()>)
                .unwrap()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
